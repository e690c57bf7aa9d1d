/* server.h: starting and stopping a real `sumzero start` process for integration tests.
 * The binary is $SUMZERO_BIN (meson's test() sets it). The server listens on port 0 and
 * its `msg=listening` log line tells the real ports; its stderr goes to DATA_DIR.log
 * (the harness reads the line from there), so a failing test can show the log.
 *
 * Contract: header-only; tests only. Returns 0 or a negative errno; never asserts, so the
 * caller's Criterion assertion names what failed. */
#ifndef SZ_TEST_SERVER_H
#define SZ_TEST_SERVER_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SZ_TEST_SERVER_ARGS_MAX 32

typedef struct sz_test_server {
    pid_t pid;
    uint16_t port;
    uint16_t metrics_port;
    char data_dir[256];
    char log_path[300];
    char address[64]; /* "127.0.0.1:PORT" */
} sz_test_server_t;

static inline uint64_t sz_test_clock_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static inline const char *sz_test_server_binary(void) {
    const char *binary = getenv("SUMZERO_BIN");
    return binary != NULL ? binary : "sumzero";
}

/* Reads the log until the listening line appears (or the process exits, or 60 s pass). */
static inline int sz_test_server_wait_listening(sz_test_server_t *server) {
    uint64_t deadline_ms = sz_test_clock_ms() + 60000;
    char text[8192];
    while (sz_test_clock_ms() < deadline_ms) {
        FILE *log = fopen(server->log_path, "r");
        if (log != NULL) {
            while (fgets(text, sizeof(text), log) != NULL) {
                const char *line = strstr(text, "msg=listening ");
                if (line == NULL) continue;
                const char *address = strstr(line, "address=");
                const char *metrics = strstr(line, "metrics_address=");
                const char *port = address != NULL ? strchr(address, ' ') : NULL;
                if (address == NULL || port == NULL) continue;
                /* The port is after the last ':' before the space. */
                const char *colon = port;
                while (colon > address && *colon != ':') colon--;
                server->port = (uint16_t)atoi(colon + 1);
                snprintf(server->address, sizeof(server->address), "127.0.0.1:%u", server->port);
                if (metrics != NULL && strrchr(metrics, ':') != NULL) {
                    server->metrics_port = (uint16_t)atoi(strrchr(metrics, ':') + 1);
                }
                fclose(log);
                return 0;
            }
            fclose(log);
        }
        int status = 0;
        if (waitpid(server->pid, &status, WNOHANG) == server->pid) {
            server->pid = 0;
            return -ECHILD;
        }
        struct timespec pause = {.tv_nsec = 5 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return -ETIMEDOUT;
}

/* Starts `sumzero start --data DATA_DIR --address 127.0.0.1:0 --metrics-address
 * 127.0.0.1:0 --prefault no --segment-size 32MiB` plus extra_args (NULL-terminated, may be NULL), and waits
 * until it listens. Small capacities are the caller's to pass. */
static inline int sz_test_server_start(sz_test_server_t *server, const char *data_dir,
                                       const char *const *extra_args) {
    memset(server, 0, sizeof(*server));
    snprintf(server->data_dir, sizeof(server->data_dir), "%s", data_dir);
    snprintf(server->log_path, sizeof(server->log_path), "%s.log", data_dir);
    const char *args[SZ_TEST_SERVER_ARGS_MAX + 14];
    size_t count = 0;
    args[count++] = sz_test_server_binary();
    args[count++] = "start";
    args[count++] = "--data";
    args[count++] = server->data_dir;
    args[count++] = "--address";
    args[count++] = "127.0.0.1:0";
    args[count++] = "--metrics-address";
    args[count++] = "127.0.0.1:0";
    args[count++] = "--prefault";
    args[count++] = "no";
    /* 1 GiB segments are preallocated: tests would fill the disk. */
    args[count++] = "--segment-size";
    args[count++] = "33554432";
    for (size_t index = 0; extra_args != NULL && extra_args[index] != NULL; index++) {
        if (index >= SZ_TEST_SERVER_ARGS_MAX) return -E2BIG;
        args[count++] = extra_args[index];
    }
    args[count] = NULL;
    int log_fd = open(server->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return -errno;
    /* Lines of an earlier run of the same directory must not be taken for this one. */
    if (ftruncate(log_fd, 0) != 0) {
        close(log_fd);
        return -errno;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(log_fd);
        return -errno;
    }
    if (pid == 0) {
        dup2(log_fd, STDERR_FILENO);
        execv(args[0], (char *const *)args);
        fprintf(stderr, "exec %s: %s\n", args[0], strerror(errno));
        _exit(127);
    }
    close(log_fd);
    server->pid = pid;
    return sz_test_server_wait_listening(server);
}

/* Sends the signal (SIGTERM drains, SIGKILL crashes) and waits up to 60 s. Returns the
 * exit status (0..255), 128 + the signal that killed it, or a negative errno. */
static inline int sz_test_server_stop(sz_test_server_t *server, int signal_number) {
    if (server->pid <= 0) return -ECHILD;
    if (kill(server->pid, signal_number) != 0) return -errno;
    uint64_t deadline_ms = sz_test_clock_ms() + 60000;
    int status = 0;
    while (sz_test_clock_ms() < deadline_ms) {
        pid_t done = waitpid(server->pid, &status, WNOHANG);
        if (done == server->pid) {
            server->pid = 0;
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            return 128 + WTERMSIG(status);
        }
        if (done < 0) return -errno;
        struct timespec pause = {.tv_nsec = 2 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    kill(server->pid, SIGKILL);
    waitpid(server->pid, &status, 0);
    server->pid = 0;
    return -ETIMEDOUT;
}

/* Prints the server's log to stderr (for a failing test). */
static inline void sz_test_server_dump_log(const sz_test_server_t *server) {
    FILE *log = fopen(server->log_path, "r");
    if (log == NULL) return;
    char line[4096];
    while (fgets(line, sizeof(line), log) != NULL) fprintf(stderr, "server: %s", line);
    fclose(log);
}

#endif
