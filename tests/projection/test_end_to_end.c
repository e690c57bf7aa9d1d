/* test_end_to_end.c: proves the whole projection path with real parts and faults: a real
 * `sumzero start` server takes a seeded random workload through the client library
 * (linked chains, pending transfers with and without timeouts so the server expires some,
 * posts, voids, balancing and failing transfers) while `sumzero project --address` follows
 * it into a real PostgreSQL 15 and into Kafka (librdkafka's mock cluster, started in this
 * process). During the load: the projector is SIGKILLed and restarted again and again,
 * Postgres is stopped and started again, the Kafka brokers fail Produce requests and then
 * all go down and come back. In every fault window the ledger keeps acknowledging writes.
 * After the load: the projector reaches the server's committed op in Postgres and in
 * Kafka, `--verify` passes, every transfer the client saw ok is in Postgres exactly once
 * (and nothing else is), and Kafka, read by an independent client (kcat), holds every
 * committed transfer, expiry and rejected event, each event id with exactly one content
 * (copies sent again after a crash are identical) that agrees with Postgres, and the
 * server let go of every subscription.
 * A second test follows the server without Kafka through a Postgres outage long enough
 * that the subscriber falls behind (TCP full, the server's lag metric grows) and then
 * catches up; its --verify rebuilds from the server's subscription.
 * The server writes 4 MiB segments, so the subscription crosses segment files.
 * SUMZERO_SEED picks the seed (printed); SUMZERO_TEST_SANITIZED=1 (meson sets it in
 * sanitizer builds) slows the load down. Exits 77 (skip) without Postgres or kcat. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "harness/postgres.h"
#include "harness/server.h"
#include "sumzero.h"
#include "workload.h"

#define E2E_TOPIC "e2e.transfers"
#define E2E_REJECTED_TOPIC "e2e.rejected"
#define E2E_BROKERS 3
/* The mock cluster keeps at most 5 MiB per partition and drops the oldest messages
 * beyond (rdkafka_mock.c, max_size): enough partitions that a run, with its duplicates,
 * stays far below (a run writes about 10 MiB); kcat's read proves nothing was dropped. */
#define E2E_PARTITIONS 16
#define E2E_REJECTED_PARTITIONS 8
#define E2E_DEADLINE_MS 60000u
/* Writes the ledger must acknowledge inside each fault window before it ends (the load
 * is paced: a few ms a write), so that each fault lasts while the load goes on. */
#define E2E_WINDOW_ACKS 60u
#define E2E_KILL_WINDOW_ACKS 10u
#define E2E_KILLS 10u
/* Ops the subscriber must fall behind while Postgres is down: more than the stream
 * thread's 1 MiB send buffer holds (about 80 ops of this load), so TCP is full. */
#define E2E_LAG_OPS 150u

static const char *e2e_kcat(void) {
    const char *path = getenv("SUMZERO_KCAT");
    return path != NULL && path[0] != 0 ? path : "kcat";
}

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    if (!sz_test_postgres_available()) {
        fprintf(stderr, "skip: no PostgreSQL binaries in %s\n", sz_test_postgres_bin());
        exit(77);
    }
    char command[600];
    snprintf(command, sizeof(command), "command -v '%s' >/dev/null 2>&1", e2e_kcat());
    if (system(command) != 0) {
        fprintf(stderr, "skip: no kcat (%s)\n", e2e_kcat());
        exit(77);
    }
}


static uint64_t e2e_clock_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static void e2e_pause_ms(uint32_t ms) {
    struct timespec pause = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&pause, NULL);
}

static int e2e_u128_compare(const void *a, const void *b) {
    sz_u128 left = *(const sz_u128 *)a;
    sz_u128 right = *(const sz_u128 *)b;
    return left < right ? -1 : left > right;
}

/* ---- The load: a thread sending the workload until told to stop ---- */

typedef struct e2e_load {
    sz_workload_t workload;
    sumzero_client_t *client;
    uint32_t batch_events_max;
    uint32_t events_per_second; /* the load's pace */
    pthread_t thread;
    bool started;
    bool stop;                 /* atomic: set by the main thread */
    uint64_t acked;            /* atomic: write requests answered 0 */
    int error;                 /* the first failed request's error (0: none) */
    uint64_t error_request;
    /* Ids of the transfers the client saw ok, and the count of the rejected ones. */
    sz_u128 *ok_ids;
    size_t ok_count;
    size_t ok_capacity;
    uint64_t rejected_count;
} e2e_load_t;

static int e2e_load_send(e2e_load_t *load, sz_operation_t operation, const void *events,
                         uint32_t count, sumzero_create_result_t *results) {
    uint32_t result_count = 0;
    int result = operation == SZ_OPERATION_CREATE_ACCOUNTS
                     ? sumzero_create_accounts(load->client, events, count, results,
                                               &result_count)
                     : sumzero_create_transfers(load->client, events, count, results,
                                                &result_count);
    if (result != 0) return result;
    if (operation == SZ_OPERATION_CREATE_TRANSFERS) {
        const sz_transfer_t *transfers = events;
        uint32_t failed = 0;
        for (uint32_t index = 0; index < count; index++) {
            if (failed < result_count && results[failed].index == index) {
                failed++;
                continue;
            }
            if (load->ok_count == load->ok_capacity) {
                size_t capacity = load->ok_capacity == 0 ? 65536 : 2 * load->ok_capacity;
                sz_u128 *ids = realloc(load->ok_ids, capacity * sizeof(sz_u128));
                if (ids == NULL) return -ENOMEM;
                load->ok_ids = ids;
                load->ok_capacity = capacity;
            }
            load->ok_ids[load->ok_count++] = transfers[index].id;
        }
        load->rejected_count += result_count;
    }
    __atomic_fetch_add(&load->acked, 1, __ATOMIC_RELEASE);
    return 0;
}

static void *e2e_load_run(void *raw) {
    e2e_load_t *load = raw;
    static sumzero_create_result_t results[SZ_BATCH_EVENTS_MAX];
    sz_transfer_t *transfers = calloc(load->batch_events_max, sizeof(sz_transfer_t));
    int result = transfers == NULL ? -ENOMEM : 0;
    uint64_t request = 0;
    /* The accounts sz_workload_build() made (two failing events among them). */
    for (uint64_t index = 0; result == 0 && index < load->workload.entry_count; index++) {
        const sz_workload_entry_t *entry = &load->workload.entries[index];
        request++;
        result = e2e_load_send(load, SZ_OPERATION_CREATE_ACCOUNTS, entry->body,
                               entry->header.event_count, results);
    }
    uint64_t started_ns = e2e_clock_ns();
    uint64_t sent = 0;
    while (result == 0 && !__atomic_load_n(&load->stop, __ATOMIC_ACQUIRE)) {
        uint32_t count = 1 + (uint32_t)sz_workload_below(&load->workload, load->batch_events_max);
        sz_workload_batch_fill(&load->workload, transfers, count, false);
        request++;
        result = e2e_load_send(load, SZ_OPERATION_CREATE_TRANSFERS, transfers, count, results);
        /* A steady rate, not a wait for anything: the server, the projector and Postgres
         * share 2 cores, and the capacities are small. */
        sent += count;
        uint64_t due_ns = started_ns + sent * 1000000000ull / load->events_per_second;
        uint64_t now_ns = e2e_clock_ns();
        if (due_ns > now_ns) {
            struct timespec pause = {.tv_sec = (time_t)((due_ns - now_ns) / 1000000000ull),
                                     .tv_nsec = (long)((due_ns - now_ns) % 1000000000ull)};
            nanosleep(&pause, NULL);
        }
    }
    if (result != 0) {
        load->error = result;
        load->error_request = request;
    }
    free(transfers);
    return NULL;
}

static uint64_t e2e_acked(e2e_load_t *load) {
    return __atomic_load_n(&load->acked, __ATOMIC_ACQUIRE);
}

/* ---- The parts ---- */

typedef struct e2e {
    sz_test_postgres_t postgres;
    bool postgres_started;
    sz_test_server_t server;
    bool server_started;
    char dir[64];
    char data[96];
    char project_log[128];
    char verify_log[128];
    rd_kafka_t *kafka_handle;
    rd_kafka_mock_cluster_t *mock;
    char bootstraps[256];
    pid_t projector;
    bool kafka;              /* the projector sends to Kafka too */
    bool verify_from_server; /* --verify with --address (else --journal) */
    e2e_load_t load;
    uint64_t seed;
    uint64_t start_ms;
} e2e_t;

static e2e_t e2e;

static uint64_t e2e_pg_number(const char *sql) {
    uint64_t value = UINT64_MAX;
    PGconn *connection = PQconnectdb(e2e.postgres.conninfo);
    if (PQstatus(connection) == CONNECTION_OK) {
        PGresult *result = PQexec(connection, sql);
        if (PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1 &&
            !PQgetisnull(result, 0, 0)) {
            value = strtoull(PQgetvalue(result, 0, 0), NULL, 10);
        }
        PQclear(result);
    }
    PQfinish(connection);
    return value;
}

/* The rows of a query (the caller PQclear()s them and the connection). */
static PGresult *e2e_pg_rows(PGconn **connection_out, const char *sql) {
    PGconn *connection = PQconnectdb(e2e.postgres.conninfo);
    cr_assert_eq(PQstatus(connection), CONNECTION_OK, "%s", PQerrorMessage(connection));
    PGresult *result = PQexec(connection, sql);
    cr_assert_eq(PQresultStatus(result), PGRES_TUPLES_OK, "%s: %s", sql,
                 PQerrorMessage(connection));
    *connection_out = connection;
    return result;
}

static uint64_t e2e_position(const char *name) {
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT op FROM sumzero.position WHERE name = '%s'", name);
    return e2e_pg_number(sql);
}

/* The lower of the two Postgres streams' positions (UINT64_MAX while unreachable). */
static uint64_t e2e_postgres_position(void) {
    return e2e_pg_number(
        "SELECT min(op) FROM sumzero.position WHERE name IN ('postgres', 'entries')");
}

/* `sumzero project`, its output appended to a log; only async-signal-safe calls between
 * fork and exec (the mock cluster's threads run in this process). */
static pid_t e2e_spawn_projector(bool verify) {
    const char *args[64];
    uint32_t count = 0;
    args[count++] = sz_test_server_binary();
    args[count++] = "project";
    if (verify) {
        /* --verify rebuilds from the server's journal directory, or from the server. */
        args[count++] = e2e.verify_from_server ? "--address" : "--journal";
        args[count++] = e2e.verify_from_server ? e2e.server.address : e2e.data;
        args[count++] = "--verify";
    } else {
        args[count++] = "--address";
        args[count++] = e2e.server.address;
        args[count++] = "--batch-ms";
        args[count++] = "20";
    }
    if (!verify && e2e.kafka) {
        args[count++] = "--kafka-brokers";
        args[count++] = e2e.bootstraps;
        args[count++] = "--kafka-topic";
        args[count++] = E2E_TOPIC;
        args[count++] = "--kafka-rejected-topic";
        args[count++] = E2E_REJECTED_TOPIC;
        /* One request in flight: the mock cluster (librdkafka 2.0.2) checks sequences
         * only for transactional producers, so with several in flight it would store a
         * later batch after a failed one and lose the failed one (tests/kafka explains). */
        static const char *const properties[] = {
            "max.in.flight.requests.per.connection=1", "retry.backoff.ms=20",
            "reconnect.backoff.ms=20", "reconnect.backoff.max.ms=200", "log_level=2", NULL};
        for (uint32_t index = 0; properties[index] != NULL; index++) {
            args[count++] = "--kafka-property";
            args[count++] = properties[index];
        }
    }
    static const char *const capacities[] = {"--accounts-max", "4096", "--transfers-max",
                                             "524288", "--pending-max", "65536",
                                             "--history-max", "1024", NULL};
    for (uint32_t index = 0; capacities[index] != NULL; index++) args[count++] = capacities[index];
    args[count++] = "--postgres";
    args[count++] = e2e.postgres.conninfo;
    args[count] = NULL;
    int log_fd = open(verify ? e2e.verify_log : e2e.project_log,
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    cr_assert_geq(log_fd, 0);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        if (dup2(log_fd, STDOUT_FILENO) < 0 || dup2(log_fd, STDERR_FILENO) < 0) _exit(126);
        execv(args[0], (char *const *)args);
        _exit(127);
    }
    close(log_fd);
    return child;
}

static int e2e_wait(pid_t child) {
    int status = 0;
    if (waitpid(child, &status, 0) != child) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void e2e_dump(const char *path, const char *prefix) {
    FILE *log = fopen(path, "r");
    if (log == NULL) return;
    char line[2048];
    while (fgets(line, sizeof(line), log) != NULL) fprintf(stderr, "%s: %s", prefix, line);
    fclose(log);
}

/* Lines of the projector's log that say it failed to reach or write Postgres. */
static uint32_t e2e_postgres_failures(void) {
    FILE *log = fopen(e2e.project_log, "r");
    if (log == NULL) return 0;
    uint32_t count = 0;
    char line[2048];
    while (fgets(line, sizeof(line), log) != NULL) {
        if (strstr(line, "msg=commit_failed") != NULL ||
            strstr(line, "msg=postgres_unavailable") != NULL) {
            count++;
        }
    }
    fclose(log);
    return count;
}

/* A value of the server's metrics endpoint, e.g. sumzero_op_committed (UINT64_MAX if
 * unreadable or absent). */
static uint64_t e2e_server_metric(const char *name) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_port = htons(e2e.server.metrics_port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static char response[1 << 17];
    size_t size = 0;
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) == 0) {
        const char request[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if (write(fd, request, sizeof(request) - 1) == (ssize_t)(sizeof(request) - 1)) {
            ssize_t got;
            while (size + 1 < sizeof(response) &&
                   (got = read(fd, response + size, sizeof(response) - 1 - size)) > 0) {
                size += (size_t)got;
            }
        }
    }
    close(fd);
    response[size] = 0;
    char pattern[128];
    snprintf(pattern, sizeof(pattern), "\n%s ", name);
    const char *line = strstr(response, pattern);
    return line != NULL ? strtoull(line + strlen(pattern), NULL, 10) : UINT64_MAX;
}

static void e2e_note(const char *what) {
    fprintf(stderr, "test_end_to_end: at %.1f s: %s\n",
            (double)(sz_test_clock_ms() - e2e.start_ms) / 1000.0, what);
}

/* Waits until the load acknowledged at least `more` writes after `from`; returns how many
 * it acknowledged since `from` (the fault window's count). */
static uint64_t e2e_window_acks(uint64_t from, uint64_t more, const char *fault) {
    uint64_t deadline_ms = sz_test_clock_ms() + E2E_DEADLINE_MS;
    while (e2e_acked(&e2e.load) < from + more && sz_test_clock_ms() < deadline_ms &&
           e2e.load.error == 0) {
        e2e_pause_ms(2);
    }
    uint64_t acked = e2e_acked(&e2e.load) - from;
    fprintf(stderr, "test_end_to_end: at %.1f s, %s: %" PRIu64 " writes acknowledged\n",
            (double)(sz_test_clock_ms() - e2e.start_ms) / 1000.0, fault, acked);
    cr_assert_eq(e2e.load.error, 0, "the ledger failed request %" PRIu64 " during %s: %s",
                 e2e.load.error_request, fault, sumzero_error_message(e2e.load.error));
    cr_assert_geq(acked, more, "the ledger stopped serving during %s", fault);
    return acked;
}

static void e2e_projector_kill_and_restart(void) {
    cr_assert_eq(kill(e2e.projector, SIGKILL), 0);
    int status = e2e_wait(e2e.projector);
    /* It may have died of something else first: that is a failure too. */
    if (status != 128 + SIGKILL) e2e_dump(e2e.project_log, "project");
    cr_assert_eq(status, 128 + SIGKILL, "the projector exited with %d before the kill", status);
    e2e.projector = e2e_spawn_projector(false);
}

/* Polls until the Postgres position passes `after` (the projector is writing). */
static uint64_t e2e_wait_position_after(uint64_t after, const char *what) {
    uint64_t deadline_ms = sz_test_clock_ms() + E2E_DEADLINE_MS;
    uint64_t position = 0;
    for (;;) {
        position = e2e_postgres_position();
        if (position != UINT64_MAX && position > after) return position;
        if (sz_test_clock_ms() > deadline_ms) break;
        e2e_pause_ms(5);
    }
    e2e_dump(e2e.project_log, "project");
    cr_assert_fail("%s: the Postgres position stayed at %" PRIu64, what, position);
    return position;
}

static void e2e_kafka_brokers(bool up) {
    for (int32_t broker = 1; broker <= E2E_BROKERS; broker++) {
        rd_kafka_resp_err_t error = up ? rd_kafka_mock_broker_set_up(e2e.mock, broker)
                                       : rd_kafka_mock_broker_set_down(e2e.mock, broker);
        cr_assert_eq(error, RD_KAFKA_RESP_ERR_NO_ERROR);
    }
}

static size_t e2e_kafka_errors_left(void) {
    size_t total = 0;
    for (int32_t broker = 1; broker <= E2E_BROKERS; broker++) {
        size_t count = 0;
        cr_assert_eq(rd_kafka_mock_broker_error_stack_cnt(e2e.mock, broker, 0 /* Produce */,
                                                          &count),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        total += count;
    }
    return total;
}

static void e2e_setup(void) {
    memset(&e2e, 0, sizeof(e2e));
    e2e.start_ms = sz_test_clock_ms();
    const char *text = getenv("SUMZERO_SEED");
    e2e.seed = text != NULL ? strtoull(text, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "test_end_to_end: SUMZERO_SEED=%" PRIu64 "\n", e2e.seed);
    snprintf(e2e.dir, sizeof(e2e.dir), "/tmp/sz-e2e-XXXXXX");
    cr_assert_not_null(mkdtemp(e2e.dir));
    snprintf(e2e.data, sizeof(e2e.data), "%s/data", e2e.dir);
    snprintf(e2e.project_log, sizeof(e2e.project_log), "%s/project.log", e2e.dir);
    snprintf(e2e.verify_log, sizeof(e2e.verify_log), "%s/verify.log", e2e.dir);

    setenv("SUMZERO_PG_OPTIONS", "-c fsync=off", 1);
    cr_assert_eq(sz_test_postgres_start(&e2e.postgres), 0);
    e2e.postgres_started = true;

    char reason[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "log_level", "2", reason, sizeof(reason)),
                 RD_KAFKA_CONF_OK);
    e2e.kafka_handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof(reason));
    cr_assert_not_null(e2e.kafka_handle, "%s", reason);
    e2e.mock = rd_kafka_mock_cluster_new(e2e.kafka_handle, E2E_BROKERS);
    cr_assert_not_null(e2e.mock);
    snprintf(e2e.bootstraps, sizeof(e2e.bootstraps), "%s",
             rd_kafka_mock_cluster_bootstraps(e2e.mock));
    cr_assert_eq(rd_kafka_mock_topic_create(e2e.mock, E2E_TOPIC, E2E_PARTITIONS, E2E_BROKERS), 0);
    cr_assert_eq(rd_kafka_mock_topic_create(e2e.mock, E2E_REJECTED_TOPIC, E2E_REJECTED_PARTITIONS,
                                            E2E_BROKERS),
                 0);
    /* Every broker leads partitions of the transfers topic, so that each one gets
     * Produce requests (and meets the errors pushed to it). */
    for (int32_t partition = 0; partition < E2E_PARTITIONS; partition++) {
        cr_assert_eq(rd_kafka_mock_partition_set_leader(e2e.mock, E2E_TOPIC, partition,
                                                        partition % E2E_BROKERS + 1),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    }

    /* The smallest segments (4 MiB): the subscription crosses segments while it follows
     * and while it catches up. */
    static const char *const capacities[] = {"--accounts-max", "4096", "--transfers-max",
                                             "524288", "--pending-max", "65536",
                                             "--history-max", "1024", "--segment-size",
                                             "4194304", NULL};
    int result = sz_test_server_start(&e2e.server, e2e.data, capacities);
    if (result != 0) sz_test_server_dump_log(&e2e.server);
    cr_assert_eq(result, 0);
    e2e.server_started = true;
}

static void e2e_load_stop(void) {
    if (!e2e.load.started) return;
    __atomic_store_n(&e2e.load.stop, true, __ATOMIC_RELEASE);
    pthread_join(e2e.load.thread, NULL);
    e2e.load.started = false;
}

static void e2e_teardown(void) {
    e2e_load_stop();
    sumzero_client_close(e2e.load.client);
    free(e2e.load.ok_ids);
    sz_workload_free(&e2e.load.workload);
    if (e2e.projector > 0) {
        kill(e2e.projector, SIGKILL);
        (void)e2e_wait(e2e.projector);
    }
    if (e2e.server_started) (void)sz_test_server_stop(&e2e.server, SIGTERM);
    if (e2e.mock != NULL) rd_kafka_mock_cluster_destroy(e2e.mock);
    if (e2e.kafka_handle != NULL) rd_kafka_destroy(e2e.kafka_handle);
    if (e2e.postgres_started) sz_test_postgres_remove(&e2e.postgres);
    /* The server's log (DATA.log) is in the directory too. */
    char command[128];
    snprintf(command, sizeof(command), "rm -rf '%s'", e2e.dir);
    if (e2e.dir[0] != 0 && system(command) != 0) fprintf(stderr, "cannot remove %s\n", e2e.dir);
}

/* ---- What Kafka holds ---- */

typedef struct e2e_event {
    char topic[16];
    char event_id[48];
    char kind[16];
    char id[48];
    char op[24];
    char timestamp[24];
    char amount[48];
    char result[64];
    char key[48];
    char headers[160];
    char value[1024];
} e2e_event_t;

typedef struct e2e_events {
    e2e_event_t *items;
    size_t count;
    size_t capacity;
} e2e_events_t;

/* The text of a JSON string field ("name":"text") of one event line. */
static void e2e_json_field(const char *value, const char *name, char *out, size_t size) {
    char pattern[64];
    snprintf(pattern, sizeof(pattern), "\"%s\":\"", name);
    const char *start = strstr(value, pattern);
    cr_assert_not_null(start, "no %s in %s", name, value);
    start += strlen(pattern);
    const char *end = strchr(start, '"');
    cr_assert_not_null(end, "unterminated %s in %s", name, value);
    cr_assert_lt((size_t)(end - start), size, "%s too long in %s", name, value);
    memcpy(out, start, (size_t)(end - start));
    out[end - start] = 0;
}

static void e2e_kcat_read(const char *topic, e2e_events_t *events) {
    char command[1024];
    snprintf(command, sizeof(command),
             "timeout 60 '%s' -b '%s' -X fetch.wait.max.ms=10 -C -t %s -o beginning -e -q "
             "-f '%%p\\t%%o\\t%%k\\t%%h\\t%%s\\n'",
             e2e_kcat(), e2e.bootstraps, topic);
    FILE *pipe = popen(command, "r");
    cr_assert_not_null(pipe, "popen %s", command);
    char *line = NULL;
    size_t line_capacity = 0;
    ssize_t line_size;
    /* The first offset read in each partition: 0 unless the mock dropped messages. */
    int64_t offset_first[64];
    for (uint32_t index = 0; index < 64; index++) offset_first[index] = -1;
    while ((line_size = getline(&line, &line_capacity, pipe)) > 0) {
        if (line[line_size - 1] == '\n') line[--line_size] = 0;
        if (line_size == 0) continue;
        char *partition_end = NULL;
        unsigned long partition = strtoul(line, &partition_end, 10);
        cr_assert(partition < 64 && *partition_end == '\t', "kcat line: %s", line);
        char *offset_end = NULL;
        long long offset = strtoll(partition_end + 1, &offset_end, 10);
        cr_assert_eq(*offset_end, '\t', "kcat line: %s", line);
        if (offset_first[partition] < 0 || offset < offset_first[partition]) {
            offset_first[partition] = offset;
        }
        char *key = offset_end + 1;
        memmove(line, key, strlen(key) + 1);
        char *headers = strchr(line, '\t');
        cr_assert_not_null(headers, "kcat line without fields: %s", line);
        *headers++ = 0;
        char *value = strchr(headers, '\t');
        cr_assert_not_null(value, "kcat line without a value: %s", line);
        *value++ = 0;
        if (events->count == events->capacity) {
            events->capacity = events->capacity == 0 ? 65536 : 2 * events->capacity;
            events->items = realloc(events->items, events->capacity * sizeof(e2e_event_t));
            cr_assert_not_null(events->items);
        }
        e2e_event_t *event = &events->items[events->count++];
        memset(event, 0, sizeof(*event));
        snprintf(event->topic, sizeof(event->topic), "%s", topic);
        cr_assert_lt(strlen(line), sizeof(event->key));
        cr_assert_lt(strlen(headers), sizeof(event->headers));
        cr_assert_lt(strlen(value), sizeof(event->value));
        strcpy(event->key, line);
        strcpy(event->headers, headers);
        strcpy(event->value, value);
        e2e_json_field(value, "event_id", event->event_id, sizeof(event->event_id));
        e2e_json_field(value, "kind", event->kind, sizeof(event->kind));
        e2e_json_field(value, "id", event->id, sizeof(event->id));
        e2e_json_field(value, "op", event->op, sizeof(event->op));
        e2e_json_field(value, "timestamp", event->timestamp, sizeof(event->timestamp));
        e2e_json_field(value, "amount", event->amount, sizeof(event->amount));
        e2e_json_field(value, "result", event->result, sizeof(event->result));
    }
    free(line);
    int status = pclose(pipe);
    cr_assert_eq(status, 0, "kcat exited with %d: %s", status, command);
    for (uint32_t index = 0; index < 64; index++) {
        cr_assert_leq(offset_first[index], 0,
                      "%s [%u] starts at offset %lld: the mock cluster dropped its oldest "
                      "messages (5 MiB per partition); the test must write less",
                      topic, index, (long long)offset_first[index]);
    }
}

/* Event ids "OP.INDEX" in numeric order, within a topic. */
static int e2e_event_compare(const void *a, const void *b) {
    const e2e_event_t *left = a;
    const e2e_event_t *right = b;
    int by_topic = strcmp(left->topic, right->topic);
    if (by_topic != 0) return by_topic;
    uint64_t left_op = strtoull(left->event_id, NULL, 10);
    uint64_t right_op = strtoull(right->event_id, NULL, 10);
    if (left_op != right_op) return left_op < right_op ? -1 : 1;
    uint64_t left_index = strtoull(strchr(left->event_id, '.') + 1, NULL, 10);
    uint64_t right_index = strtoull(strchr(right->event_id, '.') + 1, NULL, 10);
    return left_index < right_index ? -1 : left_index > right_index;
}

/* Sorts the events, checks every copy of an event id is identical (key, headers, value),
 * and keeps one of each. Returns how many copies were dropped. */
static size_t e2e_events_unique(e2e_events_t *events) {
    for (size_t index = 0; index < events->count; index++) {
        cr_assert_not_null(strchr(events->items[index].event_id, '.'), "event id %s",
                           events->items[index].event_id);
    }
    qsort(events->items, events->count, sizeof(e2e_event_t), e2e_event_compare);
    size_t kept = 0;
    for (size_t index = 0; index < events->count; index++) {
        const e2e_event_t *event = &events->items[index];
        if (kept > 0 && e2e_event_compare(&events->items[kept - 1], event) == 0) {
            const e2e_event_t *first = &events->items[kept - 1];
            cr_assert_str_eq(event->value, first->value, "event %s sent with two contents",
                             event->event_id);
            cr_assert_str_eq(event->key, first->key, "event %s key", event->event_id);
            cr_assert_str_eq(event->headers, first->headers, "event %s headers",
                             event->event_id);
            continue;
        }
        if (kept != index) events->items[kept] = *event;
        kept++;
    }
    size_t dropped = events->count - kept;
    events->count = kept;
    return dropped;
}

/* ---- The checks after the load ---- */

typedef struct e2e_row {
    sz_u128 id;
    char op[24];
    char timestamp[24];
    char amount[48];
} e2e_row_t;

static int e2e_row_compare(const void *a, const void *b) {
    return e2e_u128_compare(&((const e2e_row_t *)a)->id, &((const e2e_row_t *)b)->id);
}

/* Postgres holds exactly the transfers the client saw ok, once each. Returns the rows
 * sorted by id for the Kafka comparison. */
static e2e_row_t *e2e_check_postgres(size_t *row_count_out) {
    e2e_load_t *load = &e2e.load;
    qsort(load->ok_ids, load->ok_count, sizeof(sz_u128), e2e_u128_compare);
    for (size_t index = 1; index < load->ok_count; index++) {
        cr_assert_neq(load->ok_ids[index - 1], load->ok_ids[index],
                      "the client saw an id ok twice");
    }
    PGconn *connection = NULL;
    PGresult *result = e2e_pg_rows(
        &connection, "SELECT id, op, timestamp, amount FROM sumzero.transfers ORDER BY id");
    size_t count = (size_t)PQntuples(result);
    e2e_row_t *rows = calloc(count + 1, sizeof(e2e_row_t));
    cr_assert_not_null(rows);
    for (size_t index = 0; index < count; index++) {
        cr_assert_eq(sz_u128_parse(PQgetvalue(result, (int)index, 0), &rows[index].id), 0);
        snprintf(rows[index].op, sizeof(rows[index].op), "%s", PQgetvalue(result, (int)index, 1));
        snprintf(rows[index].timestamp, sizeof(rows[index].timestamp), "%s",
                 PQgetvalue(result, (int)index, 2));
        snprintf(rows[index].amount, sizeof(rows[index].amount), "%s",
                 PQgetvalue(result, (int)index, 3));
    }
    PQclear(result);
    PQfinish(connection);
    /* numeric ORDER BY is numeric order; sort again in u128 order to be independent. */
    qsort(rows, count, sizeof(e2e_row_t), e2e_row_compare);
    cr_assert_eq(count, load->ok_count, "Postgres has %zu transfers, the client saw %zu ok",
                 count, load->ok_count);
    for (size_t index = 0; index < count; index++) {
        char want[SZ_U128_DECIMAL_SIZE], got[SZ_U128_DECIMAL_SIZE];
        cr_assert_eq(rows[index].id, load->ok_ids[index],
                     "transfer %s is missing from Postgres (or %s is extra or twice)",
                     sz_u128_format(load->ok_ids[index], want),
                     sz_u128_format(rows[index].id, got));
    }
    cr_assert_eq(e2e_pg_number("SELECT count(*) FROM sumzero.rejected "
                               "WHERE operation = 'create_transfers'"),
                 load->rejected_count, "rejected transfer events in Postgres");
    *row_count_out = count;
    return rows;
}

/* The rows of a one-column text query, sorted, to look lines up in. */
typedef struct e2e_strings {
    char **items;
    size_t count;
} e2e_strings_t;

static int e2e_string_compare(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void e2e_strings_load(e2e_strings_t *strings, const char *sql) {
    PGconn *connection = NULL;
    PGresult *result = e2e_pg_rows(&connection, sql);
    strings->count = (size_t)PQntuples(result);
    strings->items = calloc(strings->count + 1, sizeof(char *));
    cr_assert_not_null(strings->items);
    for (size_t index = 0; index < strings->count; index++) {
        strings->items[index] = strdup(PQgetvalue(result, (int)index, 0));
        cr_assert_not_null(strings->items[index]);
    }
    PQclear(result);
    PQfinish(connection);
    qsort(strings->items, strings->count, sizeof(char *), e2e_string_compare);
}

static bool e2e_strings_has(const e2e_strings_t *strings, const char *line) {
    return bsearch(&line, strings->items, strings->count, sizeof(char *),
                   e2e_string_compare) != NULL;
}

static void e2e_strings_free(e2e_strings_t *strings) {
    for (size_t index = 0; index < strings->count; index++) free(strings->items[index]);
    free(strings->items);
}

/* For a failure: the runs of ops whose transfers Postgres has and Kafka lacks. */
static void e2e_report_missing(const e2e_row_t *rows, size_t row_count,
                               const e2e_events_t *events) {
    uint64_t op_max = 0;
    for (size_t index = 0; index < row_count; index++) {
        uint64_t op = strtoull(rows[index].op, NULL, 10);
        if (op > op_max) op_max = op;
    }
    uint32_t *want = calloc(op_max + 2, sizeof(uint32_t));
    uint32_t *got = calloc(op_max + 2, sizeof(uint32_t));
    cr_assert(want != NULL && got != NULL);
    for (size_t index = 0; index < row_count; index++) {
        want[strtoull(rows[index].op, NULL, 10)]++;
    }
    for (size_t index = 0; index < events->count; index++) {
        if (strcmp(events->items[index].kind, "transfer") != 0) continue;
        uint64_t op = strtoull(events->items[index].op, NULL, 10);
        if (op <= op_max) got[op]++;
    }
    uint64_t run_start = 0;
    for (uint64_t op = 1; op <= op_max + 1; op++) {
        bool missing = op <= op_max && got[op] < want[op];
        if (missing && run_start == 0) run_start = op;
        if (!missing && run_start != 0) {
            fprintf(stderr, "test_end_to_end: missing in Kafka: ops %" PRIu64 "..%" PRIu64 "\n",
                    run_start, op - 1);
            run_start = 0;
        }
    }
    free(want);
    free(got);
}

/* Kafka holds every committed transfer, expiry and rejected event of Postgres, and
 * nothing else; each event id has one content, and it agrees with Postgres. */
static void e2e_check_kafka(const e2e_row_t *rows, size_t row_count, uint64_t position) {
    e2e_events_t events = {0};
    e2e_kcat_read(E2E_TOPIC, &events);
    e2e_kcat_read(E2E_REJECTED_TOPIC, &events);
    size_t received = events.count;
    size_t duplicates = e2e_events_unique(&events);
    size_t transfers = 0, expired = 0, rejected = 0;
    e2e_strings_t expirations, rejections;
    e2e_strings_load(&expirations, "SELECT pending_id || ' ' || op || ' ' || amount "
                                   "FROM sumzero.expirations");
    e2e_strings_load(&rejections, "SELECT op || '.' || index || ' ' || id || ' ' || result_name "
                                  "FROM sumzero.rejected WHERE operation = 'create_transfers'");
    sz_u128 *transfer_ids = calloc(events.count + 1, sizeof(sz_u128));
    cr_assert_not_null(transfer_ids);
    for (size_t index = 0; index < events.count; index++) {
        const e2e_event_t *event = &events.items[index];
        cr_assert_leq(strtoull(event->op, NULL, 10), position,
                      "event %s is beyond the projector's position", event->event_id);
        if (strcmp(event->kind, "transfer") == 0) {
            cr_assert_str_eq(event->topic, E2E_TOPIC);
            e2e_row_t key = {0};
            cr_assert_eq(sz_u128_parse(event->id, &key.id), 0);
            const e2e_row_t *row = bsearch(&key, rows, row_count, sizeof(e2e_row_t),
                                           e2e_row_compare);
            cr_assert_not_null(row, "Kafka event %s: transfer %s is not in Postgres",
                               event->event_id, event->id);
            cr_assert_str_eq(event->op, row->op, "event %s op", event->event_id);
            cr_assert_str_eq(event->timestamp, row->timestamp, "event %s timestamp",
                             event->event_id);
            cr_assert_str_eq(event->amount, row->amount, "event %s amount", event->event_id);
            cr_assert_str_eq(event->result, "ok");
            transfer_ids[transfers++] = key.id;
        } else if (strcmp(event->kind, "expired") == 0) {
            cr_assert_str_eq(event->topic, E2E_TOPIC);
            char line[160];
            snprintf(line, sizeof(line), "%s %s %s", event->id, event->op, event->amount);
            cr_assert(e2e_strings_has(&expirations, line),
                      "expiry event %s (pending %s) is not in Postgres", event->event_id,
                      event->id);
            expired++;
        } else {
            cr_assert_str_eq(event->kind, "rejected", "event %s", event->event_id);
            cr_assert_str_eq(event->topic, E2E_REJECTED_TOPIC);
            char line[200];
            snprintf(line, sizeof(line), "%s.%s %s %s", event->op,
                     strchr(event->event_id, '.') + 1, event->id, event->result);
            cr_assert(e2e_strings_has(&rejections, line), "rejected event %s is not in Postgres",
                      event->event_id);
            rejected++;
        }
    }
    /* No transfer under two event ids, and none missing. */
    qsort(transfer_ids, transfers, sizeof(sz_u128), e2e_u128_compare);
    for (size_t index = 1; index < transfers; index++) {
        cr_assert_neq(transfer_ids[index - 1], transfer_ids[index],
                      "a transfer in Kafka under two event ids");
    }
    if (transfers != row_count) {
        e2e_report_missing(rows, row_count, &events);
        e2e_dump(e2e.project_log, "project");
    }
    cr_assert_eq(transfers, row_count, "Kafka has %zu of the %zu committed transfers",
                 transfers, row_count);
    cr_assert_eq(expired, expirations.count, "expiry events");
    cr_assert_eq(rejected, rejections.count, "rejected events in Kafka and Postgres");
    cr_assert_eq(rejected, e2e.load.rejected_count, "rejected events");
    fprintf(stderr,
            "test_end_to_end: Kafka: %zu messages, %zu duplicates (identical), %zu transfers, "
            "%zu expiries, %zu rejected\n",
            received, duplicates, transfers, expired, rejected);
    free(transfer_ids);
    free(events.items);
    e2e_strings_free(&expirations);
    e2e_strings_free(&rejections);
}

/* The server's journal segment files (journal.NNNNNN). */
static uint32_t e2e_segment_count(void) {
    DIR *directory = opendir(e2e.data);
    if (directory == NULL) return 0;
    uint32_t count = 0;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        if (strncmp(entry->d_name, "journal.", 8) == 0) count++;
    }
    closedir(directory);
    return count;
}

/* ---- The tests ---- */

static bool e2e_sanitized(void) {
    const char *text = getenv("SUMZERO_TEST_SANITIZED");
    return text != NULL && strcmp(text, "1") == 0;
}

/* Starts the projector and the load (events per batch at most, events per second),
 * and waits for the projector's first commit; returns the Postgres position. */
static uint64_t e2e_start(bool kafka, uint32_t batch_events_max, uint32_t events_per_second) {
    e2e_load_t *load = &e2e.load;
    e2e.kafka = kafka;
    cr_assert_eq(sz_workload_build(&load->workload, e2e.seed, 40, 0, 0, false), 0);
    load->batch_events_max = batch_events_max;
    load->events_per_second = events_per_second;
    sumzero_client_options_t options = {0};
    options.addresses = e2e.server.address;
    cr_assert_eq(sumzero_client_open(&load->client, &options), 0);
    e2e.projector = e2e_spawn_projector(false);
    cr_assert_eq(pthread_create(&load->thread, NULL, e2e_load_run, load), 0);
    load->started = true;
    return e2e_wait_position_after(0, "start");
}

/* Stops the load; waits until the projector reaches the server's committed op (in Kafka
 * too, if it sends there); stops it with SIGTERM; --verify; then checks Postgres (and
 * Kafka) against what the client saw. */
static void e2e_finish(void) {
    e2e_load_t *load = &e2e.load;
    (void)e2e_window_acks(e2e_acked(load), E2E_KILL_WINDOW_ACKS, "after the faults");
    e2e_load_stop();
    cr_assert_eq(load->error, 0, "request %" PRIu64 ": %s", load->error_request,
                 sumzero_error_message(load->error));
    uint64_t committed = e2e_server_metric("sumzero_op_committed");
    cr_assert(committed > 0 && committed != UINT64_MAX,
              "no sumzero_op_committed from the server's metrics");
    uint64_t deadline_ms = sz_test_clock_ms() + E2E_DEADLINE_MS;
    uint64_t position = 0;
    uint64_t kafka_position = 0;
    for (;;) {
        position = e2e_postgres_position();
        kafka_position = e2e.kafka ? e2e_position("kafka") : committed;
        if (position != UINT64_MAX && position >= committed && kafka_position != UINT64_MAX &&
            kafka_position >= committed) {
            break;
        }
        if (sz_test_clock_ms() > deadline_ms) {
            e2e_dump(e2e.project_log, "project");
            cr_assert_fail("not caught up with op %" PRIu64 ": postgres %" PRIu64
                           " kafka %" PRIu64, committed, position, kafka_position);
        }
        e2e_pause_ms(10);
    }
    e2e_note("caught up");
    cr_assert_eq(kill(e2e.projector, SIGTERM), 0);
    int status = e2e_wait(e2e.projector);
    e2e.projector = 0;
    if (status != 0) e2e_dump(e2e.project_log, "project");
    cr_assert_eq(status, 0, "the projector exited with %d on SIGTERM", status);
    position = e2e_postgres_position();
    if (e2e.kafka) {
        kafka_position = e2e_position("kafka");
        cr_assert_geq(kafka_position, position, "Kafka's recorded position is behind");
    }

    status = e2e_wait(e2e_spawn_projector(true));
    if (status != 0) e2e_dump(e2e.verify_log, "verify");
    cr_assert_eq(status, 0, "sumzero project --verify exited with %d", status);
    e2e_note("verified");
    /* The server let go of every subscription: the killed projectors', the last one's and
     * the check's (no slot leaks however a subscriber went). */
    uint64_t subscribers = UINT64_MAX;
    deadline_ms = sz_test_clock_ms() + E2E_DEADLINE_MS;
    while ((subscribers = e2e_server_metric("sumzero_subscribers")) != 0 &&
           sz_test_clock_ms() < deadline_ms) {
        e2e_pause_ms(10);
    }
    cr_assert_eq(subscribers, 0, "the server still counts %" PRIu64 " subscribers", subscribers);
    size_t row_count = 0;
    e2e_row_t *rows = e2e_check_postgres(&row_count);
    e2e_note("Postgres checked");
    if (e2e.kafka) {
        e2e_check_kafka(rows, row_count, kafka_position);
        e2e_note("Kafka checked");
    }
    free(rows);
    fprintf(stderr,
            "test_end_to_end: %" PRIu64 " writes, %zu transfers ok, %" PRIu64
            " rejected, server op %" PRIu64 ", position %" PRIu64 ", %u journal segments\n",
            e2e_acked(load), load->ok_count, load->rejected_count, committed, position,
            e2e_segment_count());
}

/* Fault 1: SIGKILL the projector right after one of its commits, again and again. */
static uint64_t e2e_fault_kills(uint64_t position) {
    e2e_load_t *load = &e2e.load;
    uint64_t random_state = e2e.seed;
    for (uint32_t kill = 0; kill < E2E_KILLS; kill++) {
        uint64_t from = e2e_acked(load);
        position = e2e_wait_position_after(position, "before a kill");
        /* A random moment after the commit, within the next writes. */
        random_state = random_state * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t later = e2e_acked(load) + (random_state >> 33) % 8;
        while (e2e_acked(load) < later && load->error == 0) e2e_pause_ms(1);
        e2e_projector_kill_and_restart();
        (void)e2e_window_acks(from, E2E_KILL_WINDOW_ACKS, "projector killed");
    }
    return e2e_wait_position_after(position, "after the kills");
}

/* Fault 2: Postgres stops (the projector retries; killed meanwhile, it starts again
 * against a Postgres that is down), then starts again. */
static uint64_t e2e_fault_postgres(uint64_t position) {
    e2e_load_t *load = &e2e.load;
    uint64_t from = e2e_acked(load);
    uint32_t failures = e2e_postgres_failures();
    cr_assert_eq(sz_test_postgres_stop(&e2e.postgres), 0);
    uint64_t deadline_ms = sz_test_clock_ms() + E2E_DEADLINE_MS;
    while (e2e_postgres_failures() == failures && sz_test_clock_ms() < deadline_ms) {
        e2e_pause_ms(5);
    }
    cr_assert_gt(e2e_postgres_failures(), failures, "the projector never saw Postgres down");
    e2e_projector_kill_and_restart();
    /* Three failed attempts of the new one: it backs off (50, 100, 200 ms...). */
    failures = e2e_postgres_failures();
    while (e2e_postgres_failures() < failures + 3 && sz_test_clock_ms() < deadline_ms) {
        e2e_pause_ms(5);
    }
    cr_assert_geq(e2e_postgres_failures(), failures + 3,
                  "the restarted projector did not keep trying the stopped Postgres");
    (void)e2e_window_acks(from, E2E_WINDOW_ACKS, "Postgres stopped");
    cr_assert_eq(sz_test_postgres_restart(&e2e.postgres), 0);
    return e2e_wait_position_after(position, "after Postgres came back");
}

/* Fault 3: every broker fails its next Produce requests with retriable errors. */
static uint64_t e2e_fault_kafka_errors(uint64_t position) {
    e2e_load_t *load = &e2e.load;
    uint64_t from = e2e_acked(load);
    for (int32_t broker = 1; broker <= E2E_BROKERS; broker++) {
        cr_assert_eq(rd_kafka_mock_broker_push_request_error_rtts(
                         e2e.mock, broker, 0 /* Produce */, 4,
                         RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, 0,
                         RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 20,
                         RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 0,
                         RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, 0),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    /* And the cluster's next Produce requests, whichever broker gets them. */
    rd_kafka_mock_push_request_errors(e2e.mock, 0 /* Produce */, 3,
                                      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                                      RD_KAFKA_RESP_ERR__TRANSPORT,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    uint64_t deadline_ms = sz_test_clock_ms() + E2E_DEADLINE_MS;
    while (e2e_kafka_errors_left() > 0 && sz_test_clock_ms() < deadline_ms) {
        e2e_pause_ms(5);
    }
    cr_assert_eq(e2e_kafka_errors_left(), 0,
                 "%zu of the injected Produce errors were never hit", e2e_kafka_errors_left());
    (void)e2e_window_acks(from, E2E_WINDOW_ACKS, "Kafka failing Produce requests");
    return position;
}

/* Fault 4: every broker down; Postgres keeps being written; the projector is killed
 * and starts again while Kafka is still down; then the brokers come back. */
static uint64_t e2e_fault_kafka_down(uint64_t position) {
    e2e_load_t *load = &e2e.load;
    uint64_t from = e2e_acked(load);
    e2e_kafka_brokers(false);
    uint64_t kafka_position = e2e_position("kafka");
    position = e2e_wait_position_after(position, "with Kafka down");
    e2e_projector_kill_and_restart();
    position = e2e_wait_position_after(position, "restarted with Kafka down");
    (void)e2e_window_acks(from, E2E_WINDOW_ACKS, "Kafka down");
    fprintf(stderr, "test_end_to_end: Kafka down at kafka position %" PRIu64
            ", Postgres reached %" PRIu64 "\n", kafka_position, position);
    e2e_kafka_brokers(true);
    return position;
}

Test(end_to_end, the_projection_survives_projector_kills_postgres_and_kafka_outages_exactly,
     .init = e2e_setup, .fini = e2e_teardown) {
    bool sanitized = e2e_sanitized();
    uint64_t position = e2e_start(true, sanitized ? 40 : 60, sanitized ? 3000 : 5000);
    position = e2e_fault_kills(position);
    position = e2e_fault_postgres(position);
    position = e2e_fault_kafka_errors(position);
    (void)e2e_fault_kafka_down(position);
    e2e_finish();
}

/* Following a live server (without Kafka) through a Postgres outage long enough that the
 * projector stops reading its subscription: the server keeps serving, its subscriber
 * falls behind (the server's sumzero_subscription_lag_ops grows: TCP's buffers are full),
 * and once Postgres is back the projector catches up from the server's journal files.
 * --verify here rebuilds its ledger from the server's subscription too. */
Test(end_to_end, a_projector_following_a_server_falls_behind_while_postgres_is_down_and_catches_up,
     .init = e2e_setup, .fini = e2e_teardown) {
    e2e_load_t *load = &e2e.load;
    bool sanitized = e2e_sanitized();
    e2e.verify_from_server = true;
    uint64_t position = e2e_start(false, sanitized ? 150 : 200, sanitized ? 12000 : 20000);
    position = e2e_wait_position_after(position, "before Postgres stops");
    uint64_t from = e2e_acked(load);
    uint32_t failures = e2e_postgres_failures();
    cr_assert_eq(sz_test_postgres_stop(&e2e.postgres), 0);
    uint64_t deadline_ms = sz_test_clock_ms() + E2E_DEADLINE_MS;
    uint64_t lag = 0;
    while (sz_test_clock_ms() < deadline_ms && load->error == 0) {
        lag = e2e_server_metric("sumzero_subscription_lag_ops");
        cr_assert_neq(lag, UINT64_MAX, "no sumzero_subscription_lag_ops from the server");
        if (lag >= E2E_LAG_OPS && e2e_postgres_failures() >= failures + 3) break;
        e2e_pause_ms(10);
    }
    fprintf(stderr, "test_end_to_end: Postgres down: the subscriber is %" PRIu64
            " ops behind, %u failed attempts\n", lag, e2e_postgres_failures() - failures);
    cr_assert_geq(lag, E2E_LAG_OPS, "the subscriber never fell behind");
    (void)e2e_window_acks(from, E2E_WINDOW_ACKS, "Postgres stopped");
    cr_assert_eq(sz_test_postgres_restart(&e2e.postgres), 0);
    (void)e2e_wait_position_after(position, "after Postgres came back");
    e2e_finish();
}
