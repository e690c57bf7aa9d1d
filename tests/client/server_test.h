/* server_test.h: what the client tests that run a real `sumzero start` share: a fresh data
 * directory per test, the server started through tests/harness/server.h with small
 * capacities, a client opened to it, and the server's /metrics read over HTTP.
 * Tests only; header-only. */
#ifndef SZ_TEST_CLIENT_SERVER_TEST_H
#define SZ_TEST_CLIENT_SERVER_TEST_H

#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sumzero.h"
#include "tests/harness/server.h"

/* Small capacities: the server reserves and zeroes them at start. */
#define TEST_SERVER_ARGS                                                                   \
    "--accounts-max", "10000", "--transfers-max", "200000", "--pending-max", "1000",       \
        "--history-max", "10000"

static inline uint64_t test_now_ns(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (uint64_t)time.tv_sec * 1000000000ull + (uint64_t)time.tv_nsec;
}

/* Polls a condition for up to 20 s (never a fixed sleep standing in for a wait). */
#define WAIT_FOR(condition)                                                               \
    do {                                                                                  \
        uint64_t wait_deadline_ns = test_now_ns() + 20000000000ull;                       \
        while (!(condition)) {                                                            \
            cr_assert(test_now_ns() < wait_deadline_ns, "timed out waiting for " #condition); \
            struct timespec pause = {0, 500000};                                          \
            nanosleep(&pause, NULL);                                                      \
        }                                                                                 \
    } while (0)

/* Every test's files live under one temporary directory, removed by test_cleanup()
 * (each Test's .fini, which runs after a failed assertion too): a server's journal
 * reserves its segments on disk. */
static char test_base_dir[64];
/* Servers a failed test left running, killed by test_cleanup(). */
static pid_t test_server_pids[8];

static inline int test_remove_entry(const char *path, const struct stat *status, int type,
                                    struct FTW *walk) {
    (void)status;
    (void)type;
    (void)walk;
    return remove(path);
}

static inline void test_cleanup(void) {
    for (size_t index = 0; index < sizeof(test_server_pids) / sizeof(test_server_pids[0]);
         index++) {
        pid_t pid = test_server_pids[index];
        test_server_pids[index] = 0;
        /* Only a child of ours not yet waited for: never a stranger reusing the number. */
        if (pid > 0 && waitpid(pid, NULL, WNOHANG) == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
    }
    if (test_base_dir[0] == '\0') return;
    nftw(test_base_dir, test_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    test_base_dir[0] = '\0';
}

/* Runs `sumzero ARGS...` quietly; returns its exit status (or -1). */
static inline int test_sumzero_run(const char *const *args) {
    const char *argv[16] = {sz_test_server_binary()};
    size_t count = 1;
    for (size_t index = 0; args[index] != NULL && count < 15; index++) argv[count++] = args[index];
    argv[count] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int null_fd = open("/dev/null", O_WRONLY);
        dup2(null_fd, STDOUT_FILENO);
        dup2(null_fd, STDERR_FILENO);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* A new, formatted data directory with small (32 MiB) journal segments, so that test
 * servers do not reserve a GiB of disk each. */
static inline void test_data_dir(char *path, size_t size) {
    if (test_base_dir[0] == '\0') {
        snprintf(test_base_dir, sizeof(test_base_dir), "/tmp/sumzero-client-XXXXXX");
        cr_assert_not_null(mkdtemp(test_base_dir));
    }
    static uint32_t dir_count;
    snprintf(path, size, "%s/data%u", test_base_dir, dir_count++);
    int status = test_sumzero_run((const char *[]){"format", "--segment-size", "33554432", path,
                                                   NULL});
    cr_assert_eq(status, 0, "sumzero format %s exited %d", path, status);
}

/* Whether this build's `sumzero` has the server at all (`start --help` exits 0). Until
 * the server is built, the tests that need it skip rather than fail. */
static inline bool test_server_available(void) {
    return test_sumzero_run((const char *[]){"start", "--help", NULL}) == 0;
}

static inline void test_server_track(const sz_test_server_t *server) {
    for (size_t index = 0; index < sizeof(test_server_pids) / sizeof(test_server_pids[0]);
         index++) {
        if (test_server_pids[index] == 0) {
            test_server_pids[index] = server->pid;
            return;
        }
    }
}

/* Starts the server on a fresh directory, extra arguments after the defaults. */
static inline void test_server_start(sz_test_server_t *server, const char *const *extra) {
    char data_dir[128];
    if (!test_server_available()) cr_skip_test("this build has no `sumzero start`");
    test_data_dir(data_dir, sizeof(data_dir));
    const char *args[SZ_TEST_SERVER_ARGS_MAX] = {TEST_SERVER_ARGS};
    size_t count = 8;
    for (size_t index = 0; extra != NULL && extra[index] != NULL; index++) {
        args[count++] = extra[index];
    }
    args[count] = NULL;
    int error = sz_test_server_start(server, data_dir, args);
    test_server_track(server);
    if (error != 0) sz_test_server_dump_log(server);
    cr_assert_eq(error, 0, "server start: %s", strerror(-error));
}

static inline void test_server_stop(sz_test_server_t *server) {
    int status = sz_test_server_stop(server, SIGTERM);
    if (status != 0) sz_test_server_dump_log(server);
    cr_assert_eq(status, 0, "the server stopped with %d", status);
}

static inline sumzero_client_t *test_client_open(const sz_test_server_t *server,
                                                 sumzero_client_options_t options) {
    options.addresses = server->address;
    sumzero_client_t *client = NULL;
    int error = sumzero_client_open(&client, &options);
    cr_assert_eq(error, 0, "open: %s", sumzero_error_message(error));
    return client;
}

/* The sum of the server's sumzero_requests_total{operation="OPERATION",...} counters. */
static inline uint64_t test_metrics_requests(const sz_test_server_t *server,
                                             const char *operation) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_port = htons(server->metrics_port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    const char *request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    cr_assert_eq(write(fd, request, strlen(request)), (ssize_t)strlen(request));
    static char text[1 << 20];
    size_t size = 0;
    ssize_t got;
    while (size + 1 < sizeof(text) &&
           (got = read(fd, text + size, sizeof(text) - 1 - size)) > 0) {
        size += (size_t)got;
    }
    close(fd);
    text[size] = '\0';
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "sumzero_requests_total{operation=\"%s\"", operation);
    uint64_t total = 0;
    bool found = false;
    for (char *line = strstr(text, prefix); line != NULL; line = strstr(line + 1, prefix)) {
        char *end = strchr(line, '}');
        if (end == NULL) break;
        total += strtoull(end + 1, NULL, 10);
        found = true;
    }
    cr_assert(found, "no %s in /metrics", prefix);
    return total;
}

#endif
