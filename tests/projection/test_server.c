/* test_server.c: proves `sumzero project --address` against a real server under load: a
 * seeded random workload (linked, pending with timeouts that the server expires, posted,
 * voided, balancing and failing transfers) goes through the client library while the
 * projector follows the server's subscription and is SIGKILLed and restarted several
 * times; every request is answered (the ledger keeps serving whatever the projector does),
 * the projector catches up with the server's journal, and `--verify` passes.
 * SUMZERO_SEED picks the seed (printed). */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "harness/postgres.h"
#include "harness/server.h"
#include "projection/source.h"
#include "sumzero.h"
#include "workload.h"

SZ_TEST_POSTGRES_SKIP_IF_MISSING()

static const char *const server_capacities[] = {
    "--accounts-max", "4096", "--transfers-max", "262144", "--pending-max", "65536",
    "--history-max", "1024", NULL};

static uint64_t server_number(const char *conninfo, const char *sql) {
    uint64_t value = UINT64_MAX;
    PGconn *connection = PQconnectdb(conninfo);
    if (PQstatus(connection) == CONNECTION_OK) {
        PGresult *result = PQexec(connection, sql);
        if (PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1) {
            value = strtoull(PQgetvalue(result, 0, 0), NULL, 10);
        }
        PQclear(result);
    }
    PQfinish(connection);
    return value;
}

static pid_t server_project(const char *mode, const char *target, const char *conninfo,
                            const char *log_path, bool verify) {
    pid_t child = fork();
    if (child != 0) return child;
    FILE *log = freopen(log_path, "a", stdout);
    if (log == NULL || dup2(fileno(stdout), STDERR_FILENO) < 0) _exit(126);
    const char *args[] = {sz_test_server_binary(), "project", mode, target, "--postgres",
                          conninfo, "--batch-ms", "20", "--accounts-max", "4096",
                          "--transfers-max", "262144", "--pending-max", "65536",
                          "--history-max", "1024", verify ? "--verify" : NULL, NULL};
    execv(args[0], (char *const *)args);
    _exit(127);
}

/* The last op in the server's journal (read-only, while it runs). */
static uint64_t server_journal_last_op(const char *data_dir) {
    sz_source_t *source = NULL;
    char error[256];
    if (sz_source_journal_open(data_dir, 1, &source, error, sizeof(error)) < 0) return 0;
    uint64_t op = 0;
    const sz_journal_header_t *header = NULL;
    const void *body = NULL;
    while (sz_source_next(source, &header, &body, 0) == 1) op = header->op;
    sz_source_close(source);
    return op;
}

static void server_dump(const char *path) {
    FILE *log = fopen(path, "r");
    if (log == NULL) return;
    char line[1024];
    while (fgets(line, sizeof(line), log) != NULL) fprintf(stderr, "project: %s", line);
    fclose(log);
}

Test(server, a_projector_follows_a_server_under_load_through_kills_and_verifies) {
    const char *text = getenv("SUMZERO_SEED");
    uint64_t seed = text != NULL ? strtoull(text, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "test_server: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    setenv("SUMZERO_PG_OPTIONS", "-c fsync=off", 1);
    sz_test_postgres_t postgres;
    cr_assert_eq(sz_test_postgres_start(&postgres), 0);
    char data_dir[64];
    snprintf(data_dir, sizeof(data_dir), "/tmp/sz-follow-XXXXXX");
    cr_assert_not_null(mkdtemp(data_dir));
    char data[96];
    snprintf(data, sizeof(data), "%s/data", data_dir);
    char log_path[128];
    snprintf(log_path, sizeof(log_path), "%s/project.log", data_dir);
    sz_test_server_t server;
    int result = sz_test_server_start(&server, data, server_capacities);
    if (result != 0) sz_test_server_dump_log(&server);
    cr_assert_eq(result, 0);

    sz_workload_t workload;
    cr_assert_eq(sz_workload_build(&workload, seed, 40, 240, 150, false), 0);
    sumzero_client_options_t options = {0};
    options.addresses = server.address;
    sumzero_client_t *client = NULL;
    cr_assert_eq(sumzero_client_open(&client, &options), 0);
    pid_t projector = server_project("--address", server.address, postgres.conninfo, log_path,
                                     false);
    static sumzero_create_result_t results[SZ_BATCH_EVENTS_MAX];
    uint32_t kill_count = 0;
    for (uint64_t index = 0; index < workload.entry_count; index++) {
        const sz_workload_entry_t *entry = &workload.entries[index];
        uint32_t result_count = 0;
        if (entry->header.operation == SZ_OPERATION_CREATE_ACCOUNTS) {
            result = sumzero_create_accounts(client, entry->body, entry->header.event_count,
                                             results, &result_count);
        } else if (entry->header.operation == SZ_OPERATION_CREATE_TRANSFERS) {
            result = sumzero_create_transfers(client, entry->body, entry->header.event_count,
                                              results, &result_count);
        } else {
            continue; /* the server runs its own expiries */
        }
        cr_assert_eq(result, 0, "request %llu: %s", (unsigned long long)index,
                     sumzero_error_message(result));
        /* Kill the projector now and then, mid-stream, and start it again. */
        if (index % 60 == 59) {
            kill(projector, SIGKILL);
            int status = 0;
            cr_assert_eq(waitpid(projector, &status, 0), projector);
            kill_count++;
            projector = server_project("--address", server.address, postgres.conninfo, log_path,
                                       false);
        }
    }
    sumzero_client_close(client);

    /* Caught up: the projection reaches the journal's last op (expiries may add more). */
    uint64_t deadline_ms = sz_test_clock_ms() + 60000;
    bool caught_up = false;
    while (!caught_up && sz_test_clock_ms() < deadline_ms) {
        uint64_t last = server_journal_last_op(data);
        uint64_t position = server_number(
            postgres.conninfo,
            "SELECT min(op) FROM sumzero.position WHERE name IN ('postgres', 'entries')");
        caught_up = position != UINT64_MAX && last > 0 && position >= last;
        struct timespec pause = {.tv_nsec = 20000000};
        if (!caught_up) nanosleep(&pause, NULL);
    }
    kill(projector, SIGTERM);
    int status = 0;
    cr_assert_eq(waitpid(projector, &status, 0), projector);
    if (!caught_up || !WIFEXITED(status) || WEXITSTATUS(status) != 0) server_dump(log_path);
    cr_assert(caught_up, "the projector did not catch up with the server");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the projector failed on SIGTERM");
    cr_assert_geq(kill_count, 3);
    cr_assert_gt(server_number(postgres.conninfo, "SELECT count(*) FROM sumzero.transfers"), 0);
    cr_assert_eq(server_number(postgres.conninfo,
                               "SELECT count(*) - count(DISTINCT id) FROM sumzero.transfers"), 0);
    /* Verify against the server's own journal, while the server still runs. */
    pid_t verify = server_project("--journal", data, postgres.conninfo, log_path, true);
    cr_assert_eq(waitpid(verify, &status, 0), verify);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) server_dump(log_path);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "verify failed");

    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
    sz_workload_free(&workload);
    sz_test_postgres_remove(&postgres);
    char command[256];
    snprintf(command, sizeof(command), "rm -rf '%s'", data_dir);
    cr_assert_eq(system(command), 0);
}
