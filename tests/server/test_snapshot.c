/* test_snapshot.c: snapshots in a running server, with real `sumzero start` processes
 * (tests/harness/server.h), the client library, and the `sumzero snapshot` and `sumzero
 * replay` commands as an operator runs them.
 *
 * - `sumzero snapshot` and SIGUSR1 each make the server write a new snapshot (a second
 *   request with no new op writes it again); the command times out clearly when the
 *   server cannot answer (stopped with SIGSTOP) and says no server runs once it exited
 *   (its DATA/pid is gone).
 * - SIGKILL of the snapshot process at random moments of its write, then SIGKILL of the
 *   server while one is being written: the restart uses the newest complete snapshot (no
 *   snapshot_invalid line: nothing incomplete ever has a snapshot's name), and reaches
 *   the digest of a full replay of the journal (`sumzero replay`). Seed: SUMZERO_SEED.
 * - A newest snapshot of another cluster is reported invalid and the server's own
 *   previous one is used: same digest as before the restart.
 * - Journal retention (4 MiB segments): archive moves the segments before the oldest kept
 *   snapshot out of DATA, and `sumzero replay --archive` still replays from op 1 to the
 *   server's digest; delete removes them, and the server still restarts (from its
 *   snapshot) to the same digest.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness/server.h"
#include "sumzero.h"

#define ACCOUNT_COUNT 64u
#define BATCH_MAX 8190u
#define WAIT_MS 30000u

static uint64_t hash_mix(uint64_t value) {
    value += 0x9E3779B97F4A7C15ull;
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ull;
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBull;
    return value ^ (value >> 31);
}

static uint64_t seed_get(void) {
    const char *text = getenv("SUMZERO_SEED");
    return text != NULL ? strtoull(text, NULL, 0)
                        : (uint64_t)getpid() * 2654435761u ^ sz_test_clock_ms();
}

/* A failed assertion ends the test where it stands: the fini kills what it left running
 * (else the server would outlive the test) and removes the directories. */
static sz_test_server_t *test_server;
static char test_directories[3][64];

static void test_cleanup(void) {
    if (test_server != NULL && test_server->pid > 0) {
        kill(test_server->pid, SIGCONT);
        (void)sz_test_server_stop(test_server, SIGKILL);
    }
    for (uint32_t index = 0; index < 3; index++) {
        if (test_directories[index][0] == '\0') continue;
        char command[512];
        snprintf(command, sizeof(command), "rm -rf '%s' '%s.log'", test_directories[index],
                 test_directories[index]);
        (void)system(command);
    }
}

static void directory_make(char *directory, uint32_t index) {
    cr_assert_not_null(mkdtemp(directory));
    snprintf(test_directories[index], sizeof(test_directories[index]), "%s", directory);
}

static void server_start(sz_test_server_t *server, const char *directory,
                         const char *const *args) {
    test_server = server;
    int result = sz_test_server_start(server, directory, args);
    if (result != 0) sz_test_server_dump_log(server);
    cr_assert_eq(result, 0, "server start: %s", strerror(-result));
}

static sumzero_client_t *client_open(const sz_test_server_t *server, sumzero_u128_t cluster) {
    sumzero_client_options_t options = {
        .addresses = server->address,
        .cluster_id = cluster,
        .request_timeout_ms = WAIT_MS,
    };
    sumzero_client_t *client = NULL;
    int result = sumzero_client_open(&client, &options);
    cr_assert_eq(result, 0, "client open: %s", sumzero_error_message(result));
    return client;
}

static void accounts_create(sumzero_client_t *client) {
    sumzero_account_t accounts[ACCOUNT_COUNT];
    memset(accounts, 0, sizeof(accounts));
    for (uint32_t index = 0; index < ACCOUNT_COUNT; index++) {
        accounts[index] = (sumzero_account_t){.id = index + 1, .ledger = 1, .code = 1};
    }
    sumzero_create_result_t results[ACCOUNT_COUNT];
    uint32_t result_count = 0;
    int result = sumzero_create_accounts(client, accounts, ACCOUNT_COUNT, results, &result_count);
    cr_assert_eq(result, 0, "create_accounts: %s", sumzero_error_message(result));
    cr_assert_eq(result_count, 0);
}

/* count transfers with ids from first, in batches of at most batch_max (one op each). */
static void transfers_create(sumzero_client_t *client, uint32_t first, uint32_t count,
                             uint32_t batch_max) {
    static sumzero_transfer_t transfers[BATCH_MAX];
    static sumzero_create_result_t results[BATCH_MAX];
    for (uint32_t done = 0; done < count;) {
        uint32_t batch = count - done < batch_max ? count - done : batch_max;
        for (uint32_t index = 0; index < batch; index++) {
            uint32_t id = first + done + index;
            uint64_t random = hash_mix(id);
            uint32_t debit = (uint32_t)(random % ACCOUNT_COUNT);
            uint32_t credit = (debit + 1 + (uint32_t)((random >> 8) % (ACCOUNT_COUNT - 1))) %
                              ACCOUNT_COUNT;
            transfers[index] = (sumzero_transfer_t){
                .id = id, .debit_account_id = debit + 1, .credit_account_id = credit + 1,
                .amount = 1 + (random >> 32) % 1000, .ledger = 1, .code = 1};
        }
        uint32_t result_count = 0;
        int result = sumzero_create_transfers(client, transfers, batch, results, &result_count);
        cr_assert_eq(result, 0, "create_transfers: %s", sumzero_error_message(result));
        cr_assert_eq(result_count, 0, "transfer %u: %s", first + done + results[0].index,
                     sumzero_create_transfer_result_name(results[0].result));
        done += batch;
    }
}

/* The whole log, for searching (NUL-terminated, the caller frees). */
static char *log_read(const sz_test_server_t *server) {
    FILE *file = fopen(server->log_path, "r");
    cr_assert_not_null(file);
    static const size_t size_max = 1u << 20;
    char *text = calloc(1, size_max + 1);
    cr_assert_not_null(text);
    size_t length = fread(text, 1, size_max, file);
    text[length] = '\0';
    fclose(file);
    return text;
}

static uint32_t text_count(const char *text, const char *needle) {
    uint32_t count = 0;
    for (const char *at = strstr(text, needle); at != NULL; at = strstr(at + 1, needle)) count++;
    return count;
}

/* Waits until the log holds more than `already` lines with needle; returns the last one. */
static void log_wait(const sz_test_server_t *server, const char *needle, uint32_t already,
                     char *line_out, size_t line_size) {
    uint64_t deadline_ms = sz_test_clock_ms() + WAIT_MS;
    while (true) {
        char *text = log_read(server);
        if (text_count(text, needle) > already) {
            const char *last = NULL;
            for (const char *at = strstr(text, needle); at != NULL; at = strstr(at + 1, needle)) {
                last = at;
            }
            const char *end = strchr(last, '\n');
            size_t length = end != NULL ? (size_t)(end - last) : strlen(last);
            if (length >= line_size) length = line_size - 1;
            memcpy(line_out, last, length);
            line_out[length] = '\0';
            free(text);
            return;
        }
        free(text);
        if (sz_test_clock_ms() > deadline_ms) sz_test_server_dump_log(server);
        cr_assert_leq(sz_test_clock_ms(), deadline_ms, "no '%s' in the log within %u ms", needle,
                      WAIT_MS);
        struct timespec pause = {.tv_nsec = 2 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

static uint64_t field_u64(const char *line, const char *key) {
    const char *at = strstr(line, key);
    cr_assert_not_null(at, "no %s in '%s'", key, line);
    return strtoull(at + strlen(key), NULL, 10);
}

static void field_text(const char *line, const char *key, char *out, size_t size) {
    const char *at = strstr(line, key);
    cr_assert_not_null(at, "no %s in '%s'", key, line);
    at += strlen(key);
    size_t length = strcspn(at, " \n");
    cr_assert_lt(length, size);
    memcpy(out, at, length);
    out[length] = '\0';
}

/* Runs a shell command line; returns its exit status (or -1), output in output_out. */
static int command_run(const char *command, char *output_out, size_t output_size) {
    FILE *pipe = popen(command, "r");
    cr_assert_not_null(pipe);
    size_t length = fread(output_out, 1, output_size - 1, pipe);
    output_out[length] = '\0';
    int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The digest of a full replay of the journal, as `sumzero replay` prints it. */
static void replay_digest(const char *directory, char *digest_out, size_t size) {
    char command[512], output[4096];
    snprintf(command, sizeof(command),
             "%s replay --accounts-max 1024 --transfers-max 1048576 --pending-max 16384 "
             "--history-max 32768 '%s' 2>&1", sz_test_server_binary(), directory);
    int status = command_run(command, output, sizeof(output));
    cr_assert_eq(status, 0, "replay: %s", output);
    field_text(output, "digest=", digest_out, size);
}


/* A batch of n transfers reserves n pending and 2n history rows: room for full batches. */
static const char *const small_args[] = {
    "--accounts-max", "1024", "--transfers-max", "1048576", "--pending-max", "16384",
    "--history-max", "32768", "--snapshot-every-seconds", "0", NULL,
};

Test(snapshot, sumzero_snapshot_and_sigusr1_each_write_a_new_snapshot, .timeout = 120, .fini = test_cleanup) {
    char directory[] = "/tmp/sz_test_snapshot_XXXXXX";
    directory_make(directory, 0);
    sz_test_server_t server;
    server_start(&server, directory, small_args);
    sumzero_client_t *client = client_open(&server, 0);
    accounts_create(client);
    transfers_create(client, 1, 1000, 1000);

    char command[512], output[4096];
    snprintf(command, sizeof(command), "%s snapshot --data '%s' --timeout-seconds 20 2>&1",
             sz_test_server_binary(), directory);
    int status = command_run(command, output, sizeof(output));
    cr_assert_eq(status, 0, "sumzero snapshot: %d: %s", status, output);
    cr_assert(strstr(output, "snapshot.00000000000000000002 op=2 ") != NULL, "%s", output);

    /* SIGUSR1 straight to the server, after one more op. */
    transfers_create(client, 1001, 500, 500);
    cr_assert_eq(kill(server.pid, SIGUSR1), 0);
    char line[1024];
    log_wait(&server, "msg=snapshot_written op=3 ", 0, line, sizeof(line));
    cr_assert_lt(field_u64(line, "pause_us="), 1000000, "%s", line);

    /* Nothing new: written again all the same, so the command always sees a new file. */
    status = command_run(command, output, sizeof(output));
    cr_assert_eq(status, 0, "sumzero snapshot: %d: %s", status, output);
    cr_assert(strstr(output, " op=3 ") != NULL, "%s", output);
    log_wait(&server, "msg=snapshot_written op=3 ", 1, line, sizeof(line));

    /* A server that cannot answer: the command gives up at its timeout (75). */
    cr_assert_eq(kill(server.pid, SIGSTOP), 0);
    snprintf(command, sizeof(command), "%s snapshot --data '%s' --timeout-seconds 1 2>&1",
             sz_test_server_binary(), directory);
    status = command_run(command, output, sizeof(output));
    cr_assert_eq(kill(server.pid, SIGCONT), 0);
    cr_assert_eq(status, 75, "%d: %s", status, output);
    cr_assert(strstr(output, "no new snapshot") != NULL, "%s", output);
    /* The SIGUSR1 it left is taken once the server runs again. */
    log_wait(&server, "msg=snapshot_written op=3 ", 2, line, sizeof(line));

    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
    char pid_path[300];
    snprintf(pid_path, sizeof(pid_path), "%s/pid", directory);
    struct stat status_pid;
    cr_assert_neq(stat(pid_path, &status_pid), 0, "DATA/pid is removed at exit");
    status = command_run(command, output, sizeof(output));
    cr_assert_eq(status, 69, "%d: %s", status, output);
    cr_assert(strstr(output, "no server is running") != NULL, "%s", output);
}

Test(snapshot, sigkill_mid_write_never_leaves_an_incomplete_snapshot_in_use, .timeout = 240, .fini = test_cleanup) {
    uint64_t seed = seed_get();
    printf("test_snapshot: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    fflush(stdout);
    uint64_t random = seed;
    char directory[] = "/tmp/sz_test_snapshot_kill_XXXXXX";
    directory_make(directory, 0);
    sz_test_server_t server;
    server_start(&server, directory, small_args);
    sumzero_client_t *client = client_open(&server, 0);
    accounts_create(client);
    /* Tens of megabytes of state: a write that lasts long enough to be cut. */
    uint32_t transfer_next = 1;
    transfers_create(client, transfer_next, 300000, BATCH_MAX);
    transfer_next += 300000;

    char line[1024];
    cr_assert_eq(kill(server.pid, SIGUSR1), 0);
    log_wait(&server, "msg=snapshot_written ", 0, line, sizeof(line));
    uint64_t duration_ms = field_u64(line, "duration_ms=");
    printf("an uninterrupted snapshot: %s\n", line);
    uint32_t started = 1, ended = 1;
    for (uint32_t round = 0; round < 6; round++) {
        transfers_create(client, transfer_next, 100, 100);
        transfer_next += 100;
        cr_assert_eq(kill(server.pid, SIGUSR1), 0);
        log_wait(&server, "msg=snapshot_started ", started++, line, sizeof(line));
        pid_t child = (pid_t)field_u64(line, "pid=");
        random = hash_mix(random);
        uint64_t delay_us = random % ((duration_ms + 1) * 1200);
        struct timespec pause = {.tv_sec = (time_t)(delay_us / 1000000),
                                 .tv_nsec = (long)(delay_us % 1000000) * 1000};
        nanosleep(&pause, NULL);
        (void)kill(child, SIGKILL); /* it may have finished: then the kill misses */
        /* Either way the server reaps it and says how it ended. */
        uint64_t deadline_ms = sz_test_clock_ms() + WAIT_MS;
        while (true) {
            char *text = log_read(&server);
            uint32_t count = text_count(text, "msg=snapshot_written ") +
                             text_count(text, "msg=snapshot_failed ");
            free(text);
            if (count > ended) break;
            cr_assert_leq(sz_test_clock_ms(), deadline_ms, "the child was never reaped");
            struct timespec poll = {.tv_nsec = 2 * 1000 * 1000};
            nanosleep(&poll, NULL);
        }
        ended++;
        printf("round %u: child %d killed after %llu us\n", round, (int)child,
               (unsigned long long)delay_us);
    }
    /* Now the server itself, while its child writes. */
    transfers_create(client, transfer_next, 100, 100);
    cr_assert_eq(kill(server.pid, SIGUSR1), 0);
    log_wait(&server, "msg=snapshot_started ", started, line, sizeof(line));
    random = hash_mix(random);
    uint64_t delay_us = random % ((duration_ms + 1) * 1200);
    struct timespec pause = {.tv_sec = (time_t)(delay_us / 1000000),
                             .tv_nsec = (long)(delay_us % 1000000) * 1000};
    nanosleep(&pause, NULL);
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGKILL), 128 + SIGKILL);
    char *before = log_read(&server);
    printf("before the restart:\n%s", before);
    free(before);

    char expected[64];
    replay_digest(directory, expected, sizeof(expected));
    server_start(&server, directory, small_args);
    char *text = log_read(&server);
    cr_assert_null(strstr(text, "snapshot_invalid"), "an incomplete snapshot was named:\n%s",
                   text);
    free(text);
    log_wait(&server, "msg=recovered ", 0, line, sizeof(line));
    printf("restart: %s\n", line);
    char digest[64];
    field_text(line, "digest=", digest, sizeof(digest));
    cr_assert_str_eq(digest, expected, "recovery and a full replay disagree");
    cr_assert_gt(field_u64(line, "snapshot_op="), 0, "recovered from a snapshot");
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}

Test(snapshot, a_newest_snapshot_of_another_cluster_is_skipped, .timeout = 120, .fini = test_cleanup) {
    char own[] = "/tmp/sz_test_snapshot_own_XXXXXX";
    char other[] = "/tmp/sz_test_snapshot_other_XXXXXX";
    directory_make(own, 0);
    directory_make(other, 1);
    sz_test_server_t server;
    server_start(&server, own, small_args);
    sumzero_client_t *client = client_open(&server, 0);
    accounts_create(client);
    transfers_create(client, 1, 200, 100); /* ops 2, 3 */
    char line[1024];
    cr_assert_eq(kill(server.pid, SIGUSR1), 0);
    log_wait(&server, "msg=snapshot_written op=3 ", 0, line, sizeof(line));
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
    log_wait(&server, "msg=stopped ", 0, line, sizeof(line));
    char digest_before[64];
    field_text(line, "digest=", digest_before, sizeof(digest_before));

    /* Cluster 7, more ops: its snapshot sorts after ours. */
    const char *other_args[SZ_TEST_SERVER_ARGS_MAX];
    size_t count = 0;
    other_args[count++] = "--cluster";
    other_args[count++] = "7";
    for (size_t index = 0; small_args[index] != NULL; index++) other_args[count++] = small_args[index];
    other_args[count] = NULL;
    server_start(&server, other, other_args);
    client = client_open(&server, 7);
    accounts_create(client);
    transfers_create(client, 1, 500, 100); /* ops 2..6 */
    cr_assert_eq(kill(server.pid, SIGUSR1), 0);
    log_wait(&server, "msg=snapshot_written op=6 ", 0, line, sizeof(line));
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);

    char command[1024];
    snprintf(command, sizeof(command),
             "cp '%s/snapshots/snapshot.00000000000000000006' '%s/snapshots/'", other, own);
    cr_assert_eq(system(command), 0);
    server_start(&server, own, small_args);
    log_wait(&server, "msg=snapshot_invalid name=snapshot.00000000000000000006 ", 0, line,
             sizeof(line));
    printf("%s\n", line);
    log_wait(&server, "msg=recovered ", 0, line, sizeof(line));
    cr_assert_eq(field_u64(line, "snapshot_op="), 3, "%s", line);
    char digest_after[64];
    field_text(line, "digest=", digest_after, sizeof(digest_after));
    cr_assert_str_eq(digest_after, digest_before);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}

static uint32_t segments_count(const char *directory) {
    char command[512], output[256];
    snprintf(command, sizeof(command), "ls '%s' | grep -c '^journal\\.[0-9]*$'", directory);
    (void)command_run(command, output, sizeof(output));
    return (uint32_t)strtoul(output, NULL, 10);
}

static void stopped_digest(const sz_test_server_t *server, char *digest_out, size_t size) {
    char line[1024];
    log_wait(server, "msg=stopped ", 0, line, sizeof(line));
    field_text(line, "digest=", digest_out, size);
}

Test(snapshot, journal_retention_archives_or_deletes_segments_and_replay_still_reaches_op_1,
     .timeout = 180, .fini = test_cleanup) {
    char directory[] = "/tmp/sz_test_retention_XXXXXX";
    char archive[] = "/tmp/sz_test_archive_XXXXXX";
    directory_make(directory, 0);
    directory_make(archive, 1);
    const char *archive_args[] = {
        "--accounts-max", "1024", "--transfers-max", "1048576", "--pending-max", "16384",
        "--history-max", "32768", "--snapshot-every-seconds", "0", "--segment-size", "4194304",
        "--snapshot-keep", "1", "--journal-retention", "archive", "--journal-archive", archive,
        NULL,
    };
    sz_test_server_t server;
    server_start(&server, directory, archive_args);
    sumzero_client_t *client = client_open(&server, 0);
    accounts_create(client);
    /* About 32000 transfers per 4 MiB segment: several segments. */
    transfers_create(client, 1, 150000, BATCH_MAX);
    char line[1024];
    cr_assert_eq(kill(server.pid, SIGUSR1), 0);
    log_wait(&server, "msg=snapshot_written ", 0, line, sizeof(line));
    printf("archive: %s\n", line);
    cr_assert_gt(field_u64(line, "retired="), 0, "%s", line);
    transfers_create(client, 150001, 1000, 1000);
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
    char expected[64];
    stopped_digest(&server, expected, sizeof(expected));
    char segment_zero[300];
    snprintf(segment_zero, sizeof(segment_zero), "%s/journal.000000", directory);
    struct stat status;
    cr_assert_neq(stat(segment_zero, &status), 0, "segment 0 left the data directory");
    cr_assert_gt(segments_count(archive), 0);

    /* Point-in-time recovery from op 1 still works, through the archive. */
    char command[1024], output[4096];
    snprintf(command, sizeof(command),
             "%s replay --accounts-max 1024 --transfers-max 1048576 --pending-max 16384 "
             "--history-max 32768 --archive '%s' '%s' 2>&1", sz_test_server_binary(), archive,
             directory);
    int code = command_run(command, output, sizeof(output));
    cr_assert_eq(code, 0, "replay --archive: %s", output);
    char digest[64];
    field_text(output, "digest=", digest, sizeof(digest));
    cr_assert_str_eq(digest, expected, "replay from op 1 through the archive");

    /* delete: the next snapshot's retirements are gone for good; restart still works. */
    archive_args[15] = "delete";
    archive_args[16] = NULL;
    uint32_t archived = segments_count(archive);
    server_start(&server, directory, archive_args);
    client = client_open(&server, 0);
    transfers_create(client, 151001, 100000, BATCH_MAX);
    cr_assert_eq(kill(server.pid, SIGUSR1), 0);
    log_wait(&server, "msg=snapshot_written ", 0, line, sizeof(line));
    printf("delete: %s\n", line);
    cr_assert_gt(field_u64(line, "retired="), 0, "%s", line);
    cr_assert_eq(segments_count(archive), archived, "delete archives nothing");
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
    stopped_digest(&server, expected, sizeof(expected));
    server_start(&server, directory, archive_args);
    log_wait(&server, "msg=recovered ", 0, line, sizeof(line));
    field_text(line, "digest=", digest, sizeof(digest));
    cr_assert_str_eq(digest, expected, "%s", line);
    cr_assert_gt(field_u64(line, "snapshot_op="), 0, "%s", line);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}
