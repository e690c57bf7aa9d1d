/* test_project.c: proves `sumzero project` end to end through a real journal and a real
 * PostgreSQL 15: a seeded random workload (linked, pending, posted, voided, expired and
 * failing transfers) written as a journal is projected, `--verify` passes and every
 * transfer is in Postgres once; `sumzero project` SIGKILLed again and again while it
 * writes, then restarted, ends exact (no gap, no duplicate); and `--verify` exits 1 and
 * names the mismatch when Postgres was tampered with. SUMZERO_SEED picks the seed. */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "harness/postgres.h"
#include "harness/server.h"
#include "projection/learner.h"
#include "workload.h"

SZ_TEST_POSTGRES_SKIP_IF_MISSING()

static sz_test_postgres_t postgres;
static char journal_dir[64];
static sz_workload_t workload;

static uint64_t project_seed(void) {
    const char *text = getenv("SUMZERO_SEED");
    uint64_t seed = text != NULL ? strtoull(text, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "test_project: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    return seed;
}

static void project_setup(void) {
    setenv("SUMZERO_PG_OPTIONS", "-c fsync=off", 1);
    cr_assert_eq(sz_test_postgres_start(&postgres), 0);
    snprintf(journal_dir, sizeof(journal_dir), "/tmp/sz-journal-XXXXXX");
    cr_assert_not_null(mkdtemp(journal_dir));
    cr_assert_eq(sz_workload_build(&workload, project_seed(), 40, 500, 150, false), 0);
    cr_assert_eq(sz_workload_journal_write(&workload, journal_dir), 0);
}

static void project_teardown(void) {
    sz_test_postgres_remove(&postgres);
    char command[128];
    snprintf(command, sizeof(command), "rm -rf '%s'", journal_dir);
    cr_assert_eq(system(command), 0);
    sz_workload_free(&workload);
}

static uint64_t project_number(const char *sql) {
    uint64_t value = UINT64_MAX;
    PGconn *connection = PQconnectdb(postgres.conninfo);
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

static uint64_t project_expected_transfers(void) {
    sz_ledger_config_t config = {.accounts_max = 4096, .transfers_max = 1u << 18,
                                 .pending_max = 1u << 16, .history_max = 1024};
    sz_learner_t *learner = NULL;
    cr_assert_eq(sz_learner_init(&config, &learner), 0);
    uint64_t count = 0;
    for (uint64_t index = 0; index < workload.entry_count; index++) {
        sz_learner_op_t op;
        cr_assert_eq(sz_learner_apply(learner, &workload.entries[index].header,
                                      workload.entries[index].body, true, &op, NULL), 0);
        sz_learner_dirty_clear(learner);
        count += op.transfer_count;
    }
    sz_learner_deinit(learner);
    return count;
}

/* Starts `sumzero project --journal DIR` (output to DIR.log), or --verify. */
static pid_t project_spawn(bool verify) {
    char log_path[128];
    snprintf(log_path, sizeof(log_path), "%s.%s.log", journal_dir, verify ? "verify" : "project");
    pid_t child = fork();
    if (child != 0) return child;
    FILE *log = freopen(log_path, "a", stdout);
    if (log == NULL || dup2(fileno(stdout), STDERR_FILENO) < 0) _exit(126);
    const char *args[] = {sz_test_server_binary(), "project", "--journal", journal_dir,
                          "--postgres", postgres.conninfo, "--batch-rows", "1500",
                          "--accounts-max", "4096", "--transfers-max", "262144",
                          "--pending-max", "65536", "--history-max", "1024",
                          verify ? "--verify" : NULL, NULL};
    execv(args[0], (char *const *)args);
    _exit(127);
}

static int project_wait(pid_t child) {
    int status = 0;
    if (waitpid(child, &status, 0) != child) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void project_dump(const char *what) {
    char path[128];
    snprintf(path, sizeof(path), "%s.%s.log", journal_dir, what);
    FILE *log = fopen(path, "r");
    if (log == NULL) return;
    char line[1024];
    while (fgets(line, sizeof(line), log) != NULL) fprintf(stderr, "%s: %s", what, line);
    fclose(log);
    remove(path);
}

Test(project, a_journal_is_projected_once_and_verify_passes, .init = project_setup,
     .fini = project_teardown) {
    int status = project_wait(project_spawn(false));
    project_dump("project");
    cr_assert_eq(status, 0);
    uint64_t expected = project_expected_transfers();
    cr_assert_eq(project_number("SELECT count(*) FROM sumzero.transfers"), expected);
    cr_assert_eq(project_number("SELECT count(DISTINCT id) FROM sumzero.transfers"), expected);
    cr_assert_eq(project_number("SELECT op FROM sumzero.position WHERE name = 'postgres'"),
                 workload.entry_count);
    status = project_wait(project_spawn(true));
    project_dump("verify");
    cr_assert_eq(status, 0);
}

Test(project, verify_exits_1_when_postgres_disagrees_with_the_ledger, .init = project_setup,
     .fini = project_teardown) {
    cr_assert_eq(project_wait(project_spawn(false)), 0);
    project_dump("project");
    /* Both lines of one transfer go missing. */
    cr_assert_eq(project_number("WITH gone AS (DELETE FROM sumzero.entries WHERE transfer_id = "
                                "(SELECT min(transfer_id) FROM sumzero.entries) RETURNING 1) "
                                "SELECT count(*) FROM gone"), 2);
    int status = project_wait(project_spawn(true));
    project_dump("verify");
    cr_assert_eq(status, 1);
}

Test(project, a_projector_killed_again_and_again_ends_exact, .init = project_setup,
     .fini = project_teardown) {
    uint64_t random_state = workload.state;
    uint32_t kill_count = 0;
    uint64_t position_before = 0;
    for (uint32_t round = 0; round < 30; round++) {
        pid_t child = project_spawn(false);
        random_state = random_state * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t extra_ms = (random_state >> 33) % 30;
        uint64_t deadline_ms = sz_test_clock_ms() + 30000;
        bool exited = false;
        int status = 0;
        while (sz_test_clock_ms() < deadline_ms) {
            if (waitpid(child, &status, WNOHANG) == child) {
                exited = true;
                break;
            }
            uint64_t position =
                project_number("SELECT op FROM sumzero.position WHERE name = 'postgres'");
            if (position != UINT64_MAX && position > position_before) {
                /* A random moment after a commit, not a wait for a condition. */
                struct timespec pause = {.tv_nsec = (long)extra_ms * 1000000};
                nanosleep(&pause, NULL);
                break;
            }
            struct timespec pause = {.tv_nsec = 2000000};
            nanosleep(&pause, NULL);
        }
        if (!exited) {
            kill(child, SIGKILL);
            status = project_wait(child);
            if (status == 128 + SIGKILL) kill_count++;
            else cr_assert_eq(status, 0);
        } else {
            cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        uint64_t position = project_number("SELECT op FROM sumzero.position WHERE name = 'postgres'");
        cr_assert_geq(position, position_before);
        char sql[160];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM sumzero.transfers WHERE op > %llu",
                 (unsigned long long)position);
        cr_assert_eq(project_number(sql), 0, "rows beyond the position");
        uint64_t entries_position =
            project_number("SELECT op FROM sumzero.position WHERE name = 'entries'");
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM sumzero.entries WHERE op > %llu",
                 (unsigned long long)entries_position);
        cr_assert_eq(project_number(sql), 0, "lines beyond the entries position");
        cr_assert_eq(project_number("SELECT count(*) - count(DISTINCT id) FROM sumzero.transfers"),
                     0, "a transfer written twice");
        position_before = position;
        if (position == workload.entry_count) break;
    }
    fprintf(stderr, "test_project: killed `sumzero project` %u times\n", kill_count);
    cr_assert_gt(kill_count, 2);
    int status = project_wait(project_spawn(false));
    project_dump("project");
    cr_assert_eq(status, 0);
    cr_assert_eq(project_number("SELECT count(*) FROM sumzero.transfers"),
                 project_expected_transfers());
    status = project_wait(project_spawn(true));
    project_dump("verify");
    cr_assert_eq(status, 0);
}
