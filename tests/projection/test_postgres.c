/* test_postgres.c: proves the projector against a real PostgreSQL 15 (tests/harness/
 * postgres.sh): a seeded random workload (linked, pending, posted, voided, expired and
 * failing transfers) projected in small batches passes --verify, every transfer is in
 * Postgres exactly once, the monthly partitions exist ahead of the rows; a Postgres
 * stopped mid-stream is retried with backoff and caught up once it is back; Kafka beside it
 * gets every op after its stored position across a restart; --verify catches tampering.
 * (SIGKILL of the projector: test_project.c, through the real binary and a journal.)
 * SUMZERO_SEED picks the seed (printed). */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "harness/postgres.h"
#include "harness/server.h"
#include "projection/learner.h"
#include "projection/projector.h"
#include "workload.h"

SZ_TEST_POSTGRES_SKIP_IF_MISSING()

static const sz_ledger_config_t postgres_test_ledger = {
    .accounts_max = 4096, .transfers_max = 1u << 18, .pending_max = 1u << 16,
    .history_max = 1024, .hash_seed = 3};

static uint64_t postgres_test_seed(void) {
    const char *text = getenv("SUMZERO_SEED");
    uint64_t seed = text != NULL ? strtoull(text, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "test_postgres: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    return seed;
}

static sz_test_postgres_t postgres;

static void postgres_setup(void) {
    /* Only the projector is crashed here, never Postgres: its fsyncs are not needed. */
    setenv("SUMZERO_PG_OPTIONS", "-c fsync=off", 1);
    int result = sz_test_postgres_start(&postgres);
    cr_assert_eq(result, 0, "postgres.sh start failed (%d)", result);
}

static void postgres_teardown(void) { sz_test_postgres_remove(&postgres); }

/* One value of one query, as text ("" on failure). */
static void postgres_value(const char *sql, char *value_out, size_t value_size) {
    value_out[0] = 0;
    PGconn *connection = PQconnectdb(postgres.conninfo);
    if (PQstatus(connection) == CONNECTION_OK) {
        PGresult *result = PQexec(connection, sql);
        if (PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1) {
            snprintf(value_out, value_size, "%s", PQgetvalue(result, 0, 0));
        }
        PQclear(result);
    }
    PQfinish(connection);
}

static uint64_t postgres_number(const char *sql) {
    char text[128];
    postgres_value(sql, text, sizeof(text));
    return text[0] != 0 ? strtoull(text, NULL, 10) : UINT64_MAX;
}

static sz_projector_options_t postgres_options(sz_source_t *source) {
    sz_projector_options_t options = {
        .source = source,
        .conninfo = postgres.conninfo,
        .ledger = postgres_test_ledger,
        .batch_rows_max = 2000, /* many transactions, so crashes land between them */
        .batch_ms_max = 20,
        .retry_ms_max = 200,
    };
    return options;
}

static void postgres_verify_ok(const sz_workload_t *workload) {
    sz_workload_source_t source;
    sz_workload_source_init(&source, workload);
    sz_projector_options_t options = postgres_options(&source.source);
    char error[512];
    int result = sz_projector_verify(&options, stderr, error, sizeof(error));
    cr_assert_eq(result, 0, "verify: %d %s", result, error);
}

static uint64_t workload_transfer_rows(const sz_workload_t *workload) {
    /* What the learner commits: apply to a fresh learner and count. */
    sz_learner_t *learner = NULL;
    cr_assert_eq(sz_learner_init(&postgres_test_ledger, &learner), 0);
    uint64_t count = 0;
    for (uint64_t index = 0; index < workload->entry_count; index++) {
        sz_learner_op_t op;
        cr_assert_eq(sz_learner_apply(learner, &workload->entries[index].header,
                                      workload->entries[index].body, true, &op, NULL), 0);
        sz_learner_dirty_clear(learner);
        count += op.transfer_count;
    }
    sz_learner_deinit(learner);
    return count;
}

Test(postgres, a_random_workload_is_projected_exactly_once_and_verifies,
     .init = postgres_setup, .fini = postgres_teardown) {
    sz_workload_t workload;
    cr_assert_eq(sz_workload_build(&workload, postgres_test_seed(), 40, 300, 150, false), 0);
    sz_workload_source_t source;
    sz_workload_source_init(&source, &workload);
    sz_projector_options_t options = postgres_options(&source.source);
    sz_projector_stats_t stats;
    char error[512];
    int result = sz_projector_run(&options, &stats, error, sizeof(error));
    cr_assert_eq(result, 0, "run: %s", error);
    cr_assert_eq(stats.op_position, workload.entry_count);
    cr_assert_gt(stats.batch_count, 3);
    cr_assert_eq(stats.retry_count, 0, "no transaction may fail (a partition missing...)");
    uint64_t expected = workload_transfer_rows(&workload);
    cr_assert_eq(postgres_number("SELECT count(*) FROM sumzero.transfers"), expected);
    cr_assert_eq(postgres_number("SELECT count(DISTINCT id) FROM sumzero.transfers"), expected);
    cr_assert_gt(postgres_number("SELECT count(*) FROM sumzero.expirations"), 0);
    cr_assert_gt(postgres_number("SELECT count(*) FROM sumzero.rejected WHERE result_name = "
                                 "'linked_event_failed'"), 0);
    cr_assert_eq(postgres_number("SELECT op FROM sumzero.position WHERE name = 'postgres'"),
                 workload.entry_count);
    /* Both months have partitions, and the month after the last row too. */
    cr_assert_eq(postgres_number("SELECT count(*) FROM pg_class WHERE relname IN "
                                 "('transfers_2026_01', 'transfers_2026_02', 'transfers_2026_03',"
                                 " 'entries_2026_01', 'entries_2026_02', 'entries_2026_03')"),
                 6);
    cr_assert_gt(postgres_number("SELECT count(*) FROM sumzero.transfers_2026_02"), 0);
    /* A u128 beyond 64 bits survives the binary NUMERIC encoding. */
    char text[128];
    postgres_value("SELECT max(id)::text FROM sumzero.accounts", text, sizeof(text));
    char expected_id[SZ_U128_DECIMAL_SIZE];
    sz_u128 max_id = 0;
    for (uint32_t index = 0; index < workload.account_count; index++) {
        if (workload.account_ids[index] > max_id) max_id = workload.account_ids[index];
    }
    cr_assert_str_eq(text, sz_u128_format(max_id, expected_id));
    postgres_verify_ok(&workload);

    /* Running again writes nothing: everything is at or below the stored position. */
    sz_workload_source_init(&source, &workload);
    result = sz_projector_run(&options, &stats, error, sizeof(error));
    cr_assert_eq(result, 0, "second run: %s", error);
    cr_assert_eq(stats.op_written_count, 0);
    cr_assert_eq(postgres_number("SELECT count(*) FROM sumzero.transfers"), expected);
    sz_workload_free(&workload);
}

Test(postgres, verify_reports_a_tampered_balance_and_another_cluster_is_refused, .init = postgres_setup,
     .fini = postgres_teardown) {
    sz_workload_t workload;
    cr_assert_eq(sz_workload_build(&workload, postgres_test_seed(), 16, 40, 40, false), 0);
    sz_workload_source_t source;
    sz_workload_source_init(&source, &workload);
    sz_projector_options_t options = postgres_options(&source.source);
    sz_projector_stats_t stats;
    char error[512];
    cr_assert_eq(sz_projector_run(&options, &stats, error, sizeof(error)), 0, "%s", error);
    char ignored[64];
    postgres_value("WITH changed AS (UPDATE sumzero.accounts SET credits_posted = credits_posted "
                   "+ 1 WHERE id = (SELECT min(id) FROM sumzero.accounts) RETURNING 1) "
                   "SELECT count(*) FROM changed", ignored, sizeof(ignored));
    cr_assert_str_eq(ignored, "1");
    sz_workload_source_init(&source, &workload);
    FILE *report = tmpfile();
    cr_assert_eq(sz_projector_verify(&options, report, error, sizeof(error)), 1);
    fclose(report);
    /* The journal of another cluster is refused, by the projector and by verify. */
    for (uint64_t index = 0; index < workload.entry_count; index++) {
        workload.entries[index].header.cluster_id += 1;
    }
    sz_workload_source_init(&source, &workload);
    cr_assert_eq(sz_projector_run(&options, &stats, error, sizeof(error)), -ESTALE);
    cr_assert(strstr(error, "cluster") != NULL, "%s", error);
    sz_workload_source_init(&source, &workload);
    report = tmpfile();
    cr_assert_eq(sz_projector_verify(&options, report, error, sizeof(error)), -ESTALE);
    fclose(report);
    sz_workload_free(&workload);
}

typedef struct follow_context {
    sz_workload_source_t source;
    sz_projector_stats_t stats;
    volatile sig_atomic_t stop;
    int result;
    char error[512];
} follow_context_t;

static void *follow_thread(void *raw) {
    follow_context_t *context = raw;
    sz_projector_options_t options = postgres_options(&context->source.source);
    options.follow = true;
    options.stop = &context->stop;
    options.log = stderr;
    context->result = sz_projector_run(&options, &context->stats, context->error,
                                       sizeof(context->error));
    return NULL;
}

static bool postgres_wait_position(uint64_t op, uint64_t timeout_ms) {
    uint64_t deadline_ms = sz_test_clock_ms() + timeout_ms;
    while (sz_test_clock_ms() < deadline_ms) {
        if (postgres_number("SELECT op FROM sumzero.position WHERE name = 'postgres'") == op) {
            return true;
        }
        struct timespec pause = {.tv_nsec = 5000000};
        nanosleep(&pause, NULL);
    }
    return false;
}

Test(postgres, a_projector_retries_while_postgres_is_down_and_catches_up,
     .init = postgres_setup, .fini = postgres_teardown) {
    sz_workload_t workload;
    cr_assert_eq(sz_workload_build(&workload, postgres_test_seed(), 40, 300, 150, false), 0);
    follow_context_t *context = calloc(1, sizeof(*context));
    sz_workload_source_init(&context->source, &workload);
    /* The source hands out a third of the ops, then nothing until we release the rest. */
    context->source.end = workload.entry_count / 3;
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, follow_thread, context), 0);
    cr_assert(postgres_wait_position(context->source.end, 30000), "first third not projected");
    cr_assert_eq(sz_test_postgres_stop(&postgres), 0);
    __atomic_store_n(&context->source.end, workload.entry_count, __ATOMIC_RELEASE);
    /* Wait until the projector has failed and retried a few times. */
    uint64_t deadline_ms = sz_test_clock_ms() + 30000;
    while (__atomic_load_n(&context->stats.retry_count, __ATOMIC_ACQUIRE) < 3 &&
           sz_test_clock_ms() < deadline_ms) {
        struct timespec pause = {.tv_nsec = 5000000};
        nanosleep(&pause, NULL);
    }
    cr_assert_geq(__atomic_load_n(&context->stats.retry_count, __ATOMIC_ACQUIRE), 3);
    cr_assert_eq(sz_test_postgres_restart(&postgres), 0);
    cr_assert(postgres_wait_position(workload.entry_count, 60000), "did not catch up");
    context->stop = 1;
    cr_assert_eq(pthread_join(thread, NULL), 0);
    cr_assert_eq(context->result, 0, "%s", context->error);
    cr_assert_eq(postgres_number("SELECT count(*) FROM sumzero.transfers"),
                 workload_transfer_rows(&workload));
    postgres_verify_ok(&workload);
    free(context);
    sz_workload_free(&workload);
}

/* ---- Kafka beside Postgres (librdkafka's mock cluster, in-process) ---- */

#define KAFKA_TOPIC "sumzero.transfers"

static const char *const kafka_test_properties[] = {
    "message.timeout.ms=30000", "retry.backoff.ms=20", "reconnect.backoff.ms=20",
    "reconnect.backoff.max.ms=200", "log_level=3", NULL,
};

/* Messages in the topic: the sum of the partitions' high watermarks, asked by a client of
 * its own. */
static int64_t kafka_message_count(const char *bootstraps) {
    char reason[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, reason, sizeof(reason)) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_t *handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof(reason));
    if (handle == NULL) return -1;
    int64_t total = 0;
    for (int32_t partition = 0; partition < 3; partition++) {
        int64_t low = 0, high = 0;
        if (rd_kafka_query_watermark_offsets(handle, KAFKA_TOPIC, partition, &low, &high, 5000) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            total = -1;
            break;
        }
        total += high;
    }
    rd_kafka_destroy(handle);
    return total;
}

Test(postgres, kafka_gets_every_op_after_its_stored_position_across_a_restart,
     .init = postgres_setup, .fini = postgres_teardown) {
    char reason[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "log_level", "3", reason, sizeof(reason)),
                 RD_KAFKA_CONF_OK);
    rd_kafka_t *handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof(reason));
    cr_assert_not_null(handle, "%s", reason);
    rd_kafka_mock_cluster_t *mock = rd_kafka_mock_cluster_new(handle, 3);
    cr_assert_not_null(mock);
    cr_assert_eq(rd_kafka_mock_topic_create(mock, KAFKA_TOPIC, 3, 3), 0);
    sz_kafka_config_t kafka = {.brokers = rd_kafka_mock_cluster_bootstraps(mock),
                               .topic = KAFKA_TOPIC,
                               .properties = kafka_test_properties};

    sz_workload_t workload;
    cr_assert_eq(sz_workload_build(&workload, postgres_test_seed(), 40, 200, 100, false), 0);
    sz_workload_source_t source;
    sz_workload_source_init(&source, &workload);
    source.end = workload.entry_count / 2;
    sz_projector_options_t options = postgres_options(&source.source);
    options.kafka = &kafka;
    sz_projector_stats_t stats;
    char error[512];
    cr_assert_eq(sz_projector_run(&options, &stats, error, sizeof(error)), 0, "%s", error);
    cr_assert_eq(postgres_number("SELECT op FROM sumzero.position WHERE name = 'kafka'"),
                 source.end);
    /* The second run rebuilds from op 1 and gives Kafka only the ops after its position. */
    sz_workload_source_init(&source, &workload);
    cr_assert_eq(sz_projector_run(&options, &stats, error, sizeof(error)), 0, "%s", error);
    cr_assert_eq(postgres_number("SELECT op FROM sumzero.position WHERE name = 'kafka'"),
                 workload.entry_count);
    /* One event per committed transfer and per expired pending transfer, none twice. */
    uint64_t expected = postgres_number("SELECT count(*) FROM sumzero.transfers") +
                        postgres_number("SELECT count(*) FROM sumzero.expirations");
    int64_t produced = kafka_message_count(kafka.brokers);
    cr_assert_eq(produced, (int64_t)expected, "%lld messages in the topic, %llu expected",
                 (long long)produced, (unsigned long long)expected);
    postgres_verify_ok(&workload);
    sz_workload_free(&workload);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(handle);
}
