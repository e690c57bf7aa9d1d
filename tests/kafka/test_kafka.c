/* test_kafka.c: proves that the Kafka sink (projection/kafka.h) sends every committed
 * transfer (and rejected and expired event) exactly as the contract writes it, and that
 * sz_kafka_delivered_op() never runs ahead of what Kafka really holds: through brokers
 * going down, injected produce errors, a full local queue and a crash (close without
 * flush, reopen, produce again from the delivered op).
 * How: each test starts librdkafka's mock cluster in-process (3 brokers), produces ops
 * built from journal headers and transfer bodies generated from a seed (SUMZERO_SEED,
 * printed), and reads the topics back with an independent client, kcat, in another
 * process; every event's key, headers and JSON are compared byte for byte with what this
 * file computes on its own from the same ops. One test drives core's real ledger
 * (balancing clamps, posts that inherit, failing chains, expiries) and checks each event
 * carries the transfer as the ledger stored it. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "core/ledger.h"
#include "projection/kafka.h"

#define TOPIC "transfers"
#define REJECTED_TOPIC "rejected"
#define EVENTS_PER_OP_MAX 24u
#define DELIVERY_TIMEOUT_MS 60000

/* ---- Time and seeds ---- */

static uint64_t now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static uint64_t splitmix(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t test_seed(void) {
    const char *text = getenv("SUMZERO_SEED");
    uint64_t seed = text != NULL ? strtoull(text, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "SUMZERO_SEED=%" PRIu64 "\n", seed);
    return seed;
}

/* ---- The mock cluster ---- */

typedef struct cluster {
    rd_kafka_t *handle;
    rd_kafka_mock_cluster_t *mock;
    char bootstraps[256];
} cluster_t;

static void cluster_start(cluster_t *cluster) {
    char reason[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "log_level", "3", reason, sizeof(reason)),
                 RD_KAFKA_CONF_OK);
    cluster->handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof(reason));
    cr_assert_not_null(cluster->handle, "%s", reason);
    cluster->mock = rd_kafka_mock_cluster_new(cluster->handle, 3);
    cr_assert_not_null(cluster->mock);
    snprintf(cluster->bootstraps, sizeof(cluster->bootstraps), "%s",
             rd_kafka_mock_cluster_bootstraps(cluster->mock));
    cr_assert_eq(rd_kafka_mock_topic_create(cluster->mock, TOPIC, 3, 3), 0);
    cr_assert_eq(rd_kafka_mock_topic_create(cluster->mock, REJECTED_TOPIC, 2, 3), 0);
}

static void cluster_stop(cluster_t *cluster) {
    rd_kafka_mock_cluster_destroy(cluster->mock);
    rd_kafka_destroy(cluster->handle);
}

static void cluster_set_all_brokers(cluster_t *cluster, bool up) {
    for (int32_t broker = 1; broker <= 3; broker++) {
        rd_kafka_resp_err_t error = up ? rd_kafka_mock_broker_set_up(cluster->mock, broker)
                                       : rd_kafka_mock_broker_set_down(cluster->mock, broker);
        cr_assert_eq(error, RD_KAFKA_RESP_ERR_NO_ERROR);
    }
}

/* ---- Ops generated from (seed, op) alone, so that a reopened sink gets the same ---- */

typedef struct test_op {
    sz_journal_header_t header;
    sz_transfer_t events[EVENTS_PER_OP_MAX];
    sz_transfer_t stored[EVENTS_PER_OP_MAX]; /* by event index, for what is expected */
    sz_transfer_t stored_ok[EVENTS_PER_OP_MAX]; /* one per ok event: what the sink gets */
    uint32_t stored_ok_count;
    bool use_stored;
    sz_create_result_t results[EVENTS_PER_OP_MAX];
    uint32_t result_count;
    bool expire;
    sz_transfer_t expired[EVENTS_PER_OP_MAX];
    uint32_t expired_count;
} test_op_t;

static sz_u128 random_u128(uint64_t *state) {
    /* Mostly small ids, sometimes the full width (39 digits), sometimes a power of ten
     * (runs of zeros inside the decimal form). */
    uint64_t shape = splitmix(state) % 5;
    if (shape == 0) return SZ_U128_MAX - (splitmix(state) % 3);
    if (shape == 1) return ((sz_u128)splitmix(state) << 64) | splitmix(state);
    if (shape == 2) {
        sz_u128 power = 1;
        for (uint64_t digits = splitmix(state) % 39; digits > 0; digits--) power *= 10;
        return power;
    }
    return 1 + splitmix(state) % 1000000;
}

static void random_transfer(uint64_t *state, sz_transfer_t *transfer) {
    memset(transfer, 0, sizeof(*transfer));
    transfer->id = random_u128(state);
    transfer->debit_account_id = random_u128(state);
    transfer->credit_account_id = random_u128(state);
    transfer->amount = random_u128(state);
    transfer->pending_id = splitmix(state) % 3 == 0 ? random_u128(state) : 0;
    transfer->user_data_128 = random_u128(state);
    transfer->user_data_64 = splitmix(state);
    transfer->user_data_32 = (uint32_t)splitmix(state);
    transfer->timeout = (uint32_t)(splitmix(state) % 100);
    transfer->ledger = 1 + (uint32_t)(splitmix(state) % 5);
    transfer->code = (uint16_t)(1 + splitmix(state) % 65535);
    transfer->flags = (uint16_t)(splitmix(state) % 64);
}

static void test_op_make(uint64_t seed, uint64_t op, test_op_t *test_op) {
    uint64_t state = seed ^ (op * 0x2545F4914F6CDD1Dull);
    memset(test_op, 0, sizeof(*test_op));
    sz_journal_header_t *header = &test_op->header;
    header->op = op;
    header->trace_id = splitmix(&state);
    header->timestamp = 1700000000000000000ull + op * 100000u;
    header->magic = SZ_JOURNAL_ENTRY_MAGIC;
    header->version = SZ_JOURNAL_VERSION;
    uint64_t shape = splitmix(&state) % 10;
    if (shape == 0) {
        /* create_accounts: no event for the sink, but an op to count. */
        header->operation = SZ_OPERATION_CREATE_ACCOUNTS;
        header->event_count = 2;
        header->body_size = 2 * SZ_JOURNAL_EVENT_SIZE;
        return;
    }
    if (shape == 1) {
        header->operation = SZ_OPERATION_EXPIRE_PENDING;
        test_op->expire = true;
        test_op->expired_count = (uint32_t)(splitmix(&state) % 4);
        for (uint32_t index = 0; index < test_op->expired_count; index++) {
            random_transfer(&state, &test_op->expired[index]);
            test_op->expired[index].flags = SZ_TRANSFER_PENDING;
            test_op->expired[index].timestamp = header->timestamp - 1000 + index;
        }
        return;
    }
    header->operation = SZ_OPERATION_CREATE_TRANSFERS;
    header->event_count = (uint32_t)(splitmix(&state) % (EVENTS_PER_OP_MAX + 1));
    header->body_size = header->event_count * SZ_JOURNAL_EVENT_SIZE;
    test_op->use_stored = splitmix(&state) % 2 == 0;
    for (uint32_t index = 0; index < header->event_count; index++) {
        random_transfer(&state, &test_op->events[index]);
        /* The stored record: what the ledger applied (a clamped amount, inherited
         * fields) differs from the request; the sink must send the stored one. */
        test_op->stored[index] = test_op->events[index];
        test_op->stored[index].amount = test_op->events[index].amount / 2;
        test_op->stored[index].user_data_64 ^= 1;
        test_op->stored[index].timestamp = header->timestamp + index;
        if (splitmix(&state) % 4 == 0) {
            test_op->results[test_op->result_count].index = index;
            test_op->results[test_op->result_count].result =
                1 + (uint32_t)(splitmix(&state) % (SZ_CREATE_TRANSFER_RESULT_COUNT - 1));
            test_op->result_count++;
            continue;
        }
        test_op->stored_ok[test_op->stored_ok_count++] = test_op->stored[index];
    }
}

static int test_op_produce(sz_kafka_t *kafka, const test_op_t *test_op) {
    if (test_op->expire) {
        return sz_kafka_produce_expired(kafka, &test_op->header, test_op->expired,
                                        test_op->expired_count);
    }
    if (!test_op->use_stored) {
        return sz_kafka_produce_op(kafka, &test_op->header, test_op->events, test_op->results,
                                   test_op->result_count);
    }
    return sz_kafka_produce_op_stored(kafka, &test_op->header, test_op->events,
                                      test_op->stored_ok, test_op->stored_ok_count,
                                      test_op->results, test_op->result_count);
}

/* ---- What this file expects, computed independently of kafka.c ---- */

typedef struct event {
    char event_id[48];
    char topic[16];
    char key[48];
    char headers[160];
    char value[1024];
    uint32_t seen;
} event_t;

typedef struct events {
    event_t *items;
    size_t count;
    size_t capacity;
} events_t;

static event_t *events_add(events_t *events) {
    if (events->count == events->capacity) {
        events->capacity = events->capacity == 0 ? 1024 : 2 * events->capacity;
        events->items = realloc(events->items, events->capacity * sizeof(event_t));
        cr_assert_not_null(events->items);
    }
    event_t *event = &events->items[events->count++];
    memset(event, 0, sizeof(*event));
    return event;
}

/* Not inlined: inlined into bsearch on a list that may still be empty, gcc (under ASan)
 * warns of reading an object of size 0. */
__attribute__((noinline)) static int event_compare(const void *a, const void *b) {
    const event_t *left = a;
    const event_t *right = b;
    int by_topic = strcmp(left->topic, right->topic);
    return by_topic != 0 ? by_topic : strcmp(left->event_id, right->event_id);
}

static void expected_event(events_t *events, const char *topic, const char *kind, uint64_t op,
                           uint32_t index, uint64_t timestamp, uint64_t trace_id,
                           const char *result, const sz_transfer_t *transfer,
                           sz_kafka_key_t key) {
    char id[7][SZ_U128_DECIMAL_SIZE];
    sz_u128_format(transfer->id, id[0]);
    sz_u128_format(transfer->debit_account_id, id[1]);
    sz_u128_format(transfer->credit_account_id, id[2]);
    sz_u128_format(transfer->amount, id[3]);
    sz_u128_format(transfer->pending_id, id[4]);
    sz_u128_format(transfer->user_data_128, id[5]);
    event_t *event = events_add(events);
    snprintf(event->event_id, sizeof(event->event_id), "%" PRIu64 ".%" PRIu32, op, index);
    snprintf(event->topic, sizeof(event->topic), "%s", topic);
    snprintf(event->key, sizeof(event->key), "%s",
             key == SZ_KAFKA_KEY_DEBIT_ACCOUNT_ID    ? id[1]
             : key == SZ_KAFKA_KEY_CREDIT_ACCOUNT_ID ? id[2]
                                                     : id[0]);
    snprintf(event->headers, sizeof(event->headers),
             "trace_id=%" PRIu64 ",op=%" PRIu64 ",event_id=%s", trace_id, op, event->event_id);
    int size = snprintf(
        event->value, sizeof(event->value),
        "{\"event_id\":\"%s\",\"kind\":\"%s\",\"op\":\"%" PRIu64 "\",\"timestamp\":\"%" PRIu64
        "\",\"trace_id\":\"%" PRIu64 "\",\"result\":\"%s\",\"id\":\"%s\","
        "\"debit_account_id\":\"%s\",\"credit_account_id\":\"%s\",\"amount\":\"%s\","
        "\"pending_id\":\"%s\",\"user_data_128\":\"%s\",\"user_data_64\":\"%" PRIu64 "\","
        "\"user_data_32\":%" PRIu32 ",\"timeout\":%" PRIu32 ",\"ledger\":%" PRIu32
        ",\"code\":%u,\"flags\":%u}",
        event->event_id, kind, op, timestamp, trace_id, result, id[0], id[1], id[2], id[3],
        id[4], id[5], transfer->user_data_64, transfer->user_data_32, transfer->timeout,
        transfer->ledger, (unsigned)transfer->code, (unsigned)transfer->flags);
    cr_assert_lt((size_t)size, sizeof(event->value));
}

static void expected_add(events_t *events, const test_op_t *test_op, bool rejected_topic,
                         sz_kafka_key_t key) {
    const sz_journal_header_t *header = &test_op->header;
    if (test_op->expire) {
        for (uint32_t index = 0; index < test_op->expired_count; index++) {
            expected_event(events, TOPIC, "expired", header->op, index, header->timestamp,
                           header->trace_id, "ok", &test_op->expired[index], key);
        }
        return;
    }
    if (header->operation != SZ_OPERATION_CREATE_TRANSFERS) return;
    uint32_t result_index = 0;
    for (uint32_t index = 0; index < header->event_count; index++) {
        if (result_index < test_op->result_count &&
            test_op->results[result_index].index == index) {
            uint32_t result = test_op->results[result_index++].result;
            if (rejected_topic) {
                expected_event(events, REJECTED_TOPIC, "rejected", header->op, index,
                               header->timestamp + index, header->trace_id,
                               sz_create_transfer_result_name(result), &test_op->events[index],
                               key);
            }
            continue;
        }
        const sz_transfer_t *transfer =
            test_op->use_stored ? &test_op->stored[index] : &test_op->events[index];
        expected_event(events, TOPIC, "transfer", header->op, index, header->timestamp + index,
                       header->trace_id, "ok", transfer, key);
    }
}

static void expected_build(events_t *events, uint64_t seed, uint64_t op_first,
                           uint64_t op_last, bool rejected_topic, sz_kafka_key_t key) {
    test_op_t *test_op = malloc(sizeof(*test_op));
    cr_assert_not_null(test_op);
    for (uint64_t op = op_first; op <= op_last; op++) {
        test_op_make(seed, op, test_op);
        expected_add(events, test_op, rejected_topic, key);
    }
    free(test_op);
    qsort(events->items, events->count, sizeof(event_t), event_compare);
}

/* ---- What Kafka holds, read by kcat ---- */

static const char *kcat_path(void) {
    const char *path = getenv("SUMZERO_KCAT");
    if (path == NULL || path[0] == '\0') path = "kcat";
    return path;
}

/* Reads a whole topic (kcat -e stops at the end of every partition) into events. A short
 * fetch wait: kcat's default of 500 ms at each partition's end made each read 1 s. */
static void kcat_read(const cluster_t *cluster, const char *topic, events_t *received) {
    char command[1024];
    snprintf(command, sizeof(command),
             "timeout 60 %s -b '%s' -X fetch.wait.max.ms=10 -C -t %s -o beginning -e -q -f '%%k\\t%%h\\t%%s\\n'",
             kcat_path(), cluster->bootstraps, topic);
    FILE *pipe = popen(command, "r");
    cr_assert_not_null(pipe, "popen %s", command);
    char *line = NULL;
    size_t line_capacity = 0;
    ssize_t line_size;
    while ((line_size = getline(&line, &line_capacity, pipe)) > 0) {
        if (line[line_size - 1] == '\n') line[--line_size] = '\0';
        if (line_size == 0) continue;
        char *key = line;
        char *headers = strchr(key, '\t');
        cr_assert_not_null(headers, "kcat line without fields: %s", line);
        *headers++ = '\0';
        char *value = strchr(headers, '\t');
        cr_assert_not_null(value, "kcat line without a value: %s", line);
        *value++ = '\0';
        event_t *event = events_add(received);
        snprintf(event->topic, sizeof(event->topic), "%s", topic);
        cr_assert_lt(strlen(key), sizeof(event->key));
        cr_assert_lt(strlen(headers), sizeof(event->headers));
        cr_assert_lt(strlen(value), sizeof(event->value));
        strcpy(event->key, key);
        strcpy(event->headers, headers);
        strcpy(event->value, value);
        /* The id from the value's first field, to match against what is expected. */
        const char *id_start = strstr(value, "\"event_id\":\"");
        cr_assert_not_null(id_start, "no event_id in %s", value);
        id_start += strlen("\"event_id\":\"");
        const char *id_end = strchr(id_start, '"');
        cr_assert_not_null(id_end);
        cr_assert_lt((size_t)(id_end - id_start), sizeof(event->event_id));
        memcpy(event->event_id, id_start, (size_t)(id_end - id_start));
    }
    free(line);
    int status = pclose(pipe);
    cr_assert_eq(status, 0, "kcat exited with %d: %s", status, command);
}

typedef struct match_report {
    size_t missing;
    size_t duplicates;
} match_report_t;

/* Every received event must be expected, byte for byte; reports the expected ones that
 * never arrived and the extra copies (identical, or the comparison fails). */
static match_report_t events_match(events_t *expected, const events_t *received) {
    for (size_t index = 0; index < expected->count; index++) expected->items[index].seen = 0;
    match_report_t report = {0, 0};
    for (size_t index = 0; index < received->count; index++) {
        const event_t *got = &received->items[index];
        event_t *want = bsearch(got, expected->items, expected->count, sizeof(event_t),
                                event_compare);
        cr_assert_not_null(want, "unexpected event %s on %s: %s", got->event_id, got->topic,
                           got->value);
        cr_assert_str_eq(got->value, want->value, "event %s", got->event_id);
        cr_assert_str_eq(got->key, want->key, "event %s key", got->event_id);
        cr_assert_str_eq(got->headers, want->headers, "event %s headers", got->event_id);
        if (want->seen > 0) report.duplicates++;
        want->seen++;
    }
    for (size_t index = 0; index < expected->count; index++) {
        if (expected->items[index].seen == 0) report.missing++;
    }
    return report;
}

static void events_read_all(const cluster_t *cluster, events_t *received) {
    received->count = 0;
    kcat_read(cluster, TOPIC, received);
    kcat_read(cluster, REJECTED_TOPIC, received);
}

/* ---- The sink ---- */

static const char *const test_properties[] = {
    "retry.backoff.ms=20",
    "reconnect.backoff.ms=20",
    "reconnect.backoff.max.ms=200",
    "log_level=3",
    NULL,
};

/* For the tests that inject produce errors or take brokers down: one request in flight
 * per connection. The mock cluster of librdkafka 2.0.2 checks producer sequences only
 * for transactional producers, so it appends a later batch after an earlier one failed
 * (a real broker answers OUT_OF_ORDER_SEQUENCE_NUMBER); librdkafka then takes the later
 * ack as an implicit ack of the earlier messages, which the mock never stored. With
 * several requests in flight that loses events against the mock only; with one, a
 * failed batch is retried before anything after it is sent. The idempotent producer and
 * acks=all stay on. */
static const char *const fault_properties[] = {
    "retry.backoff.ms=20",
    "reconnect.backoff.ms=20",
    "reconnect.backoff.max.ms=200",
    "log_level=3",
    "max.in.flight.requests.per.connection=1",
    /* Small batches: the position then moves in many small steps, which the in-flight
     * checks of the injected-errors test need to catch it between two. */
    "batch.num.messages=64",
    NULL,
};

static sz_kafka_t *sink_open(const cluster_t *cluster, bool rejected, sz_kafka_key_t key,
                             const char *const *properties) {
    sz_kafka_config_t config = {
        .brokers = cluster->bootstraps,
        .topic = TOPIC,
        .rejected_topic = rejected ? REJECTED_TOPIC : NULL,
        .key = key,
        .properties = properties != NULL ? properties : test_properties,
    };
    sz_kafka_t *kafka = NULL;
    char error[256] = "";
    int result = sz_kafka_open(&config, &kafka, error, sizeof(error));
    cr_assert_eq(result, 0, "open: %s", error);
    return kafka;
}

static void sink_wait_delivered(sz_kafka_t *kafka, uint64_t op) {
    uint64_t deadline = now_ms() + DELIVERY_TIMEOUT_MS;
    while (sz_kafka_delivered_op(kafka) < op) {
        int result = sz_kafka_poll(kafka, 20);
        cr_assert_eq(result, 0, "poll: %s", sz_kafka_error_message(kafka));
        cr_assert_lt(now_ms(), deadline, "op %" PRIu64 " not delivered in time (at %" PRIu64
                     ")", op, sz_kafka_delivered_op(kafka));
    }
}

static void sink_produce_range(sz_kafka_t *kafka, uint64_t seed, uint64_t op_first,
                               uint64_t op_last) {
    test_op_t *test_op = malloc(sizeof(*test_op));
    cr_assert_not_null(test_op);
    for (uint64_t op = op_first; op <= op_last; op++) {
        test_op_make(seed, op, test_op);
        int result = test_op_produce(kafka, test_op);
        cr_assert_eq(result, 0, "op %" PRIu64 ": %s", op, sz_kafka_error_message(kafka));
    }
    free(test_op);
}

/* Produces, delivers and reads back ops 1..op_count; asserts exactly once each. */
static void run_exactly_once(uint64_t op_count, bool rejected, sz_kafka_key_t key) {
    uint64_t seed = test_seed();
    cluster_t cluster;
    cluster_start(&cluster);
    sz_kafka_t *kafka = sink_open(&cluster, rejected, key, NULL);
    sink_produce_range(kafka, seed, 1, op_count);
    sink_wait_delivered(kafka, op_count);
    cr_assert_eq(sz_kafka_delivered_op(kafka), op_count);
    sz_kafka_close(kafka, 1000);

    events_t expected = {0};
    events_t received = {0};
    expected_build(&expected, seed, 1, op_count, rejected, key);
    events_read_all(&cluster, &received);
    match_report_t report = events_match(&expected, &received);
    cr_assert_eq(report.missing, 0, "%zu of %zu events missing", report.missing,
                 expected.count);
    cr_assert_eq(report.duplicates, 0, "%zu duplicates", report.duplicates);
    cr_assert_gt(expected.count, 0);
    free(expected.items);
    free(received.items);
    cluster_stop(&cluster);
}

/* ---- Tests ---- */

Test(kafka, every_transfer_rejected_and_expired_event_arrives_once_with_exact_json_key_and_headers) {
    run_exactly_once(200, true, SZ_KAFKA_KEY_TRANSFER_ID);
}

Test(kafka, rejected_events_are_not_sent_without_a_rejected_topic) {
    run_exactly_once(100, false, SZ_KAFKA_KEY_TRANSFER_ID);
}

Test(kafka, the_key_can_be_the_debit_or_the_credit_account) {
    run_exactly_once(60, true, SZ_KAFKA_KEY_DEBIT_ACCOUNT_ID);
    run_exactly_once(60, true, SZ_KAFKA_KEY_CREDIT_ACCOUNT_ID);
}

Test(kafka, the_largest_values_are_written_in_full) {
    /* A hand-written event, against a hand-written expected line: no shared code. */
    cluster_t cluster;
    cluster_start(&cluster);
    sz_kafka_t *kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
    sz_journal_header_t header = {
        .op = 7,
        .trace_id = UINT64_MAX,
        .timestamp = UINT64_MAX - 2,
        .operation = SZ_OPERATION_CREATE_TRANSFERS,
        .event_count = 2,
        .body_size = 2 * SZ_JOURNAL_EVENT_SIZE,
    };
    sz_transfer_t events[2];
    memset(events, 0, sizeof(events));
    events[0] = (sz_transfer_t){
        .id = SZ_U128_MAX,
        .debit_account_id = (sz_u128)1 << 64,
        .credit_account_id = 10000000000000000000ull,
        .amount = SZ_U128_MAX - 1,
        .pending_id = 0,
        .user_data_128 = ((sz_u128)1 << 64) - 1,
        .user_data_64 = UINT64_MAX,
        .user_data_32 = UINT32_MAX,
        .timeout = 0,
        .ledger = UINT32_MAX,
        .code = UINT16_MAX,
        .flags = SZ_TRANSFER_BALANCING_DEBIT,
    };
    events[1] = events[0];
    events[1].id = 1;
    sz_create_result_t results[1] = {{.index = 1, .result = SZ_CREATE_TRANSFER_EXCEEDS_DEBITS}};
    cr_assert_eq(sz_kafka_produce_op(kafka, &header, events, results, 1), 0);
    sink_wait_delivered(kafka, 7);
    sz_kafka_close(kafka, 1000);

    events_t received = {0};
    events_read_all(&cluster, &received);
    cr_assert_eq(received.count, 2);
    cr_assert_str_eq(received.items[0].key, "340282366920938463463374607431768211455");
    cr_assert_str_eq(received.items[0].headers,
                     "trace_id=18446744073709551615,op=7,event_id=7.0");
    cr_assert_str_eq(
        received.items[0].value,
        "{\"event_id\":\"7.0\",\"kind\":\"transfer\",\"op\":\"7\","
        "\"timestamp\":\"18446744073709551613\",\"trace_id\":\"18446744073709551615\","
        "\"result\":\"ok\",\"id\":\"340282366920938463463374607431768211455\","
        "\"debit_account_id\":\"18446744073709551616\","
        "\"credit_account_id\":\"10000000000000000000\","
        "\"amount\":\"340282366920938463463374607431768211454\",\"pending_id\":\"0\","
        "\"user_data_128\":\"18446744073709551615\",\"user_data_64\":\"18446744073709551615\","
        "\"user_data_32\":4294967295,\"timeout\":0,\"ledger\":4294967295,\"code\":65535,"
        "\"flags\":16}");
    cr_assert_str_eq(received.items[1].key, "1");
    cr_assert_str_eq(received.items[1].headers,
                     "trace_id=18446744073709551615,op=7,event_id=7.1");
    cr_assert_not_null(strstr(received.items[1].value,
                              "\"kind\":\"rejected\",\"op\":\"7\","
                              "\"timestamp\":\"18446744073709551614\""));
    cr_assert_not_null(strstr(received.items[1].value, "\"result\":\"exceeds_debits\""));
    free(received.items);
    cluster_stop(&cluster);
}

Test(kafka, delivered_op_waits_while_every_broker_is_down_and_catches_up_after) {
    uint64_t seed = test_seed();
    cluster_t cluster;
    cluster_start(&cluster);
    sz_kafka_t *kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, fault_properties);
    sink_produce_range(kafka, seed, 1, 40);
    sink_wait_delivered(kafka, 40);

    cluster_set_all_brokers(&cluster, false);
    sink_produce_range(kafka, seed, 41, 120);
    /* While nothing can be delivered, the position must not move past op 40 (ops made of
     * nothing but create_accounts or empty batches right after 40 may count). */
    test_op_t *test_op = malloc(sizeof(*test_op));
    uint64_t first_with_events = 41;
    for (; first_with_events <= 120; first_with_events++) {
        test_op_make(seed, first_with_events, test_op);
        bool has_events = test_op->expire ? test_op->expired_count > 0
                          : test_op->header.operation == SZ_OPERATION_CREATE_TRANSFERS
                              ? test_op->header.event_count > 0
                              : false;
        if (has_events) break;
    }
    free(test_op);
    uint64_t deadline = now_ms() + 1500;
    while (now_ms() < deadline) {
        cr_assert_eq(sz_kafka_poll(kafka, 50), 0, "%s", sz_kafka_error_message(kafka));
        cr_assert_lt(sz_kafka_delivered_op(kafka), first_with_events);
    }
    cluster_set_all_brokers(&cluster, true);
    sink_wait_delivered(kafka, 120);
    sz_kafka_close(kafka, 1000);

    events_t expected = {0};
    events_t received = {0};
    expected_build(&expected, seed, 1, 120, true, SZ_KAFKA_KEY_TRANSFER_ID);
    events_read_all(&cluster, &received);
    match_report_t report = events_match(&expected, &received);
    cr_assert_eq(report.missing, 0, "%zu missing", report.missing);
    fprintf(stderr, "brokers down: %zu events, %zu duplicates\n", expected.count,
            report.duplicates);
    free(expected.items);
    free(received.items);
    cluster_stop(&cluster);
}

/* Whatever the sink calls delivered must be in Kafka already: reads both topics and
 * asserts every expected event of an op at or below delivered is there. */
static void check_delivered_in_kafka(const cluster_t *cluster, events_t *expected,
                                     events_t *received, uint64_t delivered) {
    events_read_all(cluster, received);
    (void)events_match(expected, received);
    for (size_t index = 0; index < expected->count; index++) {
        uint64_t event_op = strtoull(expected->items[index].event_id, NULL, 10);
        if (event_op > delivered) continue;
        cr_assert_gt(expected->items[index].seen, 0,
                     "event %s counted delivered (at op %" PRIu64 ") but not in Kafka",
                     expected->items[index].event_id, delivered);
    }
}

Test(kafka, injected_produce_errors_lose_nothing_and_the_position_never_passes_kafka) {
    uint64_t seed = test_seed();
    cluster_t cluster;
    cluster_start(&cluster);
    sz_kafka_t *kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, fault_properties);
    /* Retriable errors on Produce requests (ApiKey 0), several rounds of them. */
    for (int round = 0; round < 4; round++) {
        rd_kafka_mock_push_request_errors(
            cluster.mock, 0, 6, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR__TRANSPORT);
    }
    /* Slow round trips keep later ops in flight when the position is checked. */
    for (int32_t broker = 1; broker <= 3; broker++) {
        cr_assert_eq(rd_kafka_mock_broker_set_rtt(cluster.mock, broker, 30), 0);
    }
    uint64_t op_count = 300;
    uint64_t op_checked = 0;
    uint32_t check_count = 0;
    events_t expected = {0};
    events_t received = {0};
    expected_build(&expected, seed, 1, op_count, true, SZ_KAFKA_KEY_TRANSFER_ID);
    test_op_t *test_op = malloc(sizeof(*test_op));
    for (uint64_t op = 1; op <= op_count; op++) {
        test_op_make(seed, op, test_op);
        cr_assert_eq(test_op_produce(kafka, test_op), 0, "%s", sz_kafka_error_message(kafka));
        /* A few ms a op: deliveries come back while later ops are still in flight. */
        cr_assert_eq(sz_kafka_poll(kafka, 5), 0, "%s", sz_kafka_error_message(kafka));
        /* One broker (a partition leader) goes away for a while. */
        if (op == op_count / 3) cr_assert_eq(rd_kafka_mock_broker_set_down(cluster.mock, 2), 0);
        if (op == 2 * op_count / 3) cr_assert_eq(rd_kafka_mock_broker_set_up(cluster.mock, 2), 0);
        if (op % 50 == 0) {
            rd_kafka_mock_push_request_errors(cluster.mock, 0, 3,
                                              RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                              RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                              RD_KAFKA_RESP_ERR__TRANSPORT);
        }
    }
    free(test_op);
    /* Catching up: three times, while later ops are still in flight, whatever the sink
     * calls delivered must be in Kafka already. */
    uint64_t deadline = now_ms() + DELIVERY_TIMEOUT_MS;
    while (sz_kafka_delivered_op(kafka) < op_count) {
        cr_assert_eq(sz_kafka_poll(kafka, 5), 0, "%s", sz_kafka_error_message(kafka));
        cr_assert_lt(now_ms(), deadline, "not delivered in time");
        uint64_t delivered = sz_kafka_delivered_op(kafka);
        if (check_count < 3 && delivered > op_checked + op_count / 10 && delivered < op_count) {
            check_count++;
            op_checked = delivered;
            check_delivered_in_kafka(&cluster, &expected, &received, delivered);
            fprintf(stderr, "checked at delivered op %" PRIu64 " of %" PRIu64 "\n", delivered,
                    op_count);
        }
    }
    cr_assert_gt(check_count, 0, "the position never lagged: nothing was checked in flight");
    /* The sink handed each event to librdkafka once: any duplicate below comes from
     * librdkafka's retries against the mock (which drops duplicate sequences only for
     * transactional producers, see fault_properties), and must still be identical. */
    sz_kafka_stats_t stats;
    sz_kafka_stats(kafka, &stats);
    cr_assert_eq(stats.event_count_produced, expected.count);
    cr_assert_eq(stats.event_count_delivered, expected.count);
    sz_kafka_close(kafka, 1000);

    events_read_all(&cluster, &received);
    match_report_t report = events_match(&expected, &received);
    cr_assert_eq(report.missing, 0, "%zu of %zu missing", report.missing, expected.count);
    fprintf(stderr, "injected errors: %zu events, %zu duplicates, %u checks in flight\n",
            expected.count, report.duplicates, check_count);
    free(expected.items);
    free(received.items);
    cluster_stop(&cluster);
}

Test(kafka, a_full_local_queue_blocks_and_drops_nothing) {
    uint64_t seed = test_seed();
    cluster_t cluster;
    cluster_start(&cluster);
    static const char *const small_queue[] = {
        "queue.buffering.max.messages=20",
        "log_level=3",
        NULL,
    };
    sz_kafka_t *kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, small_queue);
    /* Slow brokers make the queue fill up. */
    for (int32_t broker = 1; broker <= 3; broker++) {
        cr_assert_eq(rd_kafka_mock_broker_set_rtt(cluster.mock, broker, 5), 0);
    }
    sink_produce_range(kafka, seed, 1, 120);
    sink_wait_delivered(kafka, 120);
    sz_kafka_stats_t stats;
    sz_kafka_stats(kafka, &stats);
    cr_assert_gt(stats.queue_full_count, 0, "the queue never filled up");
    cr_assert_eq(stats.event_count_delivered, stats.event_count_produced);
    cr_assert_eq(stats.op_count_in_flight, 0);
    fprintf(stderr, "full queue: %" PRIu64 " events, waited %" PRIu64 " times\n",
            stats.event_count_produced, stats.queue_full_count);
    sz_kafka_close(kafka, 1000);

    events_t expected = {0};
    events_t received = {0};
    expected_build(&expected, seed, 1, 120, true, SZ_KAFKA_KEY_TRANSFER_ID);
    events_read_all(&cluster, &received);
    match_report_t report = events_match(&expected, &received);
    cr_assert_eq(report.missing, 0, "%zu of %zu missing", report.missing, expected.count);
    cr_assert_eq(report.duplicates, 0);
    free(expected.items);
    free(received.items);
    cluster_stop(&cluster);
}

Test(kafka, after_a_crash_events_sent_again_are_identical_and_nothing_is_missing) {
    uint64_t seed = test_seed();
    cluster_t cluster;
    cluster_start(&cluster);
    uint64_t op_count = 400;
    uint64_t position = 0; /* what the projector would have recorded */
    uint64_t op_next = 1;
    for (int run = 0; run < 3; run++) {
        sz_kafka_t *kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
        /* Produce from the recorded position on, recording now and then, then crash:
         * close without flushing while events are still queued or in flight. */
        op_next = position + 1;
        uint64_t op_stop = run == 2 ? op_count : op_next + 150;
        test_op_t *test_op = malloc(sizeof(*test_op));
        for (uint64_t op = op_next; op <= op_stop; op++) {
            test_op_make(seed, op, test_op);
            cr_assert_eq(test_op_produce(kafka, test_op), 0, "%s",
                         sz_kafka_error_message(kafka));
            if (op % 16 == 0) {
                cr_assert_eq(sz_kafka_poll(kafka, 1), 0, "%s", sz_kafka_error_message(kafka));
                uint64_t delivered = sz_kafka_delivered_op(kafka);
                if (delivered > position) position = delivered;
            }
        }
        free(test_op);
        if (run == 2) {
            sink_wait_delivered(kafka, op_count);
            position = op_count;
            sz_kafka_close(kafka, 1000);
        } else {
            fprintf(stderr, "crash %d: produced to op %" PRIu64 ", recorded op %" PRIu64 "\n",
                    run, op_stop, position);
            sz_kafka_close(kafka, 0);
        }
    }
    events_t expected = {0};
    events_t received = {0};
    expected_build(&expected, seed, 1, op_count, true, SZ_KAFKA_KEY_TRANSFER_ID);
    events_read_all(&cluster, &received);
    match_report_t report = events_match(&expected, &received);
    cr_assert_eq(report.missing, 0, "%zu of %zu missing", report.missing, expected.count);
    fprintf(stderr, "crashes: %zu events, %zu identical duplicates\n", expected.count,
            report.duplicates);
    free(expected.items);
    free(received.items);
    cluster_stop(&cluster);
}

Test(kafka, a_permanent_delivery_failure_is_an_error_and_the_position_stays_before_it) {
    cluster_t cluster;
    cluster_start(&cluster);
    sz_kafka_t *kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
    test_op_t *test_op = malloc(sizeof(*test_op));
    uint64_t seed = test_seed();
    sink_produce_range(kafka, seed, 1, 10);
    sink_wait_delivered(kafka, 10);
    /* A non-retriable error for every Produce request from now on. */
    for (int index = 0; index < 50; index++) {
        rd_kafka_mock_push_request_errors(cluster.mock, 0, 1,
                                          RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    }
    int result = 0;
    uint64_t deadline = now_ms() + DELIVERY_TIMEOUT_MS;
    for (uint64_t op = 11; result == 0 && op <= 40; op++) {
        test_op_make(seed, op, test_op);
        result = test_op_produce(kafka, test_op);
    }
    while (result == 0) {
        result = sz_kafka_poll(kafka, 20);
        cr_assert_lt(now_ms(), deadline, "the failure was never reported");
    }
    cr_assert_eq(result, -EIO);
    fprintf(stderr, "reported: %s\n", sz_kafka_error_message(kafka));
    cr_assert_not_null(strstr(sz_kafka_error_message(kafka), "not delivered"));
    cr_assert_lt(sz_kafka_delivered_op(kafka), 40);
    /* Sticky: every later call says the same. */
    cr_assert_eq(sz_kafka_poll(kafka, 0), -EIO);
    test_op_make(seed, 41, test_op);
    cr_assert_eq(test_op_produce(kafka, test_op), -EIO);
    free(test_op);
    sz_kafka_close(kafka, 0);
    cluster_stop(&cluster);
}

static void stats_check_nothing_produced(const sz_kafka_t *kafka) {
    sz_kafka_stats_t stats;
    sz_kafka_stats(kafka, &stats);
    cr_assert_eq(stats.event_count_produced, 0);
}

Test(kafka, bad_input_is_an_error_not_an_assertion) {
    cluster_t cluster;
    cluster_start(&cluster);
    sz_journal_header_t header = {
        .op = 5,
        .operation = SZ_OPERATION_CREATE_TRANSFERS,
        .event_count = 2,
        .body_size = 2 * SZ_JOURNAL_EVENT_SIZE,
    };
    sz_transfer_t events[2];
    memset(events, 0, sizeof(events));
    sz_create_result_t descending[2] = {{.index = 1, .result = 3}, {.index = 0, .result = 3}};
    sz_kafka_t *kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
    cr_assert_eq(sz_kafka_produce_op(kafka, &header, events, descending, 2), -EINVAL);
    sz_kafka_close(kafka, 0);

    kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
    header.body_size = 3 * SZ_JOURNAL_EVENT_SIZE;
    cr_assert_eq(sz_kafka_produce_op(kafka, &header, events, NULL, 0), -EINVAL);
    sz_kafka_close(kafka, 0);

    kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
    header.body_size = 2 * SZ_JOURNAL_EVENT_SIZE;
    cr_assert_eq(sz_kafka_produce_op(kafka, &header, events, NULL, 0), 0);
    cr_assert_eq(sz_kafka_produce_op(kafka, &header, events, NULL, 0), -EINVAL,
                 "the same op twice");
    cr_assert_not_null(strstr(sz_kafka_error_message(kafka), "in order"));
    sz_kafka_close(kafka, 0);

    kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
    events[0].id = 10;
    events[1].id = 11;
    sz_transfer_t stored[2] = {events[0], events[1]};
    stored[1].id = 12;
    header.op = 6;
    cr_assert_eq(sz_kafka_produce_op_stored(kafka, &header, events, stored, 1, NULL, 0),
                 -EINVAL, "one stored transfer for two ok events");
    sz_kafka_close(kafka, 0);
    kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
    cr_assert_eq(sz_kafka_produce_op_stored(kafka, &header, events, stored, 2, NULL, 0),
                 -EINVAL, "a stored transfer with another id");
    cr_assert_not_null(strstr(sz_kafka_error_message(kafka), "another id"));
    stats_check_nothing_produced(kafka);
    sz_kafka_close(kafka, 0);

    sz_kafka_config_t config = {.brokers = cluster.bootstraps, .topic = TOPIC};
    static const char *const broken[] = {"no-equals-sign", NULL};
    config.properties = broken;
    char error[256] = "";
    cr_assert_eq(sz_kafka_open(&config, &kafka, error, sizeof(error)), -EINVAL);
    cr_assert_not_null(strstr(error, "name=value"), "%s", error);
    static const char *const unknown[] = {"no.such.property=1", NULL};
    config.properties = unknown;
    cr_assert_eq(sz_kafka_open(&config, &kafka, error, sizeof(error)), -EINVAL);
    config.properties = NULL;
    config.topic = NULL;
    cr_assert_eq(sz_kafka_open(&config, &kafka, error, sizeof(error)), -EINVAL);
    cluster_stop(&cluster);
}

Test(kafka, ops_without_events_count_as_delivered_once_every_earlier_op_is) {
    cluster_t cluster;
    cluster_start(&cluster);
    sz_kafka_t *kafka = sink_open(&cluster, false, SZ_KAFKA_KEY_TRANSFER_ID, fault_properties);
    cr_assert_eq(sz_kafka_delivered_op(kafka), 0);
    sz_journal_header_t accounts = {
        .op = 3,
        .operation = SZ_OPERATION_CREATE_ACCOUNTS,
        .event_count = 1,
        .body_size = SZ_JOURNAL_EVENT_SIZE,
    };
    sz_account_t account;
    memset(&account, 0, sizeof(account));
    /* Nothing before it and nothing to send: delivered at once, without a poll. */
    cr_assert_eq(sz_kafka_produce_op(kafka, &accounts, &account, NULL, 0), 0);
    cr_assert_eq(sz_kafka_delivered_op(kafka), 3);

    cluster_set_all_brokers(&cluster, false);
    sz_transfer_t transfer = {.id = 9, .debit_account_id = 1, .credit_account_id = 2,
                              .amount = 5, .ledger = 1, .code = 1};
    sz_journal_header_t transfers = {
        .op = 4,
        .timestamp = 1000,
        .operation = SZ_OPERATION_CREATE_TRANSFERS,
        .event_count = 1,
        .body_size = SZ_JOURNAL_EVENT_SIZE,
    };
    cr_assert_eq(sz_kafka_produce_op(kafka, &transfers, &transfer, NULL, 0), 0);
    accounts.op = 5;
    cr_assert_eq(sz_kafka_produce_op(kafka, &accounts, &account, NULL, 0), 0);
    /* An expire op through produce_op sends nothing (the contract), but counts. */
    sz_journal_header_t expire = {.op = 6, .operation = SZ_OPERATION_EXPIRE_PENDING};
    cr_assert_eq(sz_kafka_produce_op(kafka, &expire, NULL, NULL, 0), 0);
    sz_journal_header_t expire_none = {.op = 7, .operation = SZ_OPERATION_EXPIRE_PENDING};
    cr_assert_eq(sz_kafka_produce_expired(kafka, &expire_none, NULL, 0), 0);
    uint64_t deadline = now_ms() + 500;
    while (now_ms() < deadline) {
        cr_assert_eq(sz_kafka_poll(kafka, 50), 0);
        cr_assert_eq(sz_kafka_delivered_op(kafka), 3, "op 4 is not delivered yet");
    }
    cluster_set_all_brokers(&cluster, true);
    sink_wait_delivered(kafka, 7);
    cr_assert_eq(sz_kafka_delivered_op(kafka), 7);
    sz_kafka_close(kafka, 1000);

    events_t received = {0};
    kcat_read(&cluster, TOPIC, &received);
    cr_assert_eq(received.count, 1);
    cr_assert_str_eq(received.items[0].event_id, "4.0");
    free(received.items);
    cluster_stop(&cluster);
}

Test(kafka, a_fatal_idempotence_error_stops_the_sink_and_a_restart_from_its_position_loses_nothing) {
    uint64_t seed = test_seed();
    cluster_t cluster;
    cluster_start(&cluster);
    sz_kafka_t *kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
    sink_produce_range(kafka, seed, 1, 30);
    sink_wait_delivered(kafka, 30);
    /* The broker says the producer's sequence broke: librdkafka raises a fatal error,
     * the idempotent guarantees are gone, the sink must stop. */
    rd_kafka_mock_push_request_errors(cluster.mock, 0, 1,
                                      RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    test_op_t *test_op = malloc(sizeof(*test_op));
    int result = 0;
    uint64_t op = 31;
    for (; result == 0 && op <= 80; op++) {
        test_op_make(seed, op, test_op);
        result = test_op_produce(kafka, test_op);
    }
    uint64_t deadline = now_ms() + DELIVERY_TIMEOUT_MS;
    while (result == 0) {
        result = sz_kafka_poll(kafka, 20);
        cr_assert_lt(now_ms(), deadline, "the fatal error was never reported");
    }
    cr_assert_eq(result, -EIO);
    fprintf(stderr, "reported: %s\n", sz_kafka_error_message(kafka));
    cr_assert_not_null(strstr(sz_kafka_error_message(kafka), "fatal"));
    uint64_t position = sz_kafka_delivered_op(kafka);
    cr_assert_lt(position, 80);
    sz_kafka_close(kafka, 0);

    /* The projector restarts from the position it recorded. */
    kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
    sink_produce_range(kafka, seed, position + 1, 80);
    sink_wait_delivered(kafka, 80);
    sz_kafka_close(kafka, 1000);
    free(test_op);

    events_t expected = {0};
    events_t received = {0};
    expected_build(&expected, seed, 1, 80, true, SZ_KAFKA_KEY_TRANSFER_ID);
    events_read_all(&cluster, &received);
    match_report_t report = events_match(&expected, &received);
    cr_assert_eq(report.missing, 0, "%zu of %zu missing", report.missing, expected.count);
    free(expected.items);
    free(received.items);
    cluster_stop(&cluster);
}

/* ---- Through the real ledger ---- */

#define LEDGER_ACCOUNT_COUNT 8u
#define LEDGER_PENDING_KEPT_MAX 256u

typedef struct ledger_run {
    sz_ledger_t *ledger;
    uint64_t state;
    uint64_t clock_ns;
    uint64_t op;
    sz_u128 id_next;
    sz_u128 pending_ids[LEDGER_PENDING_KEPT_MAX];
    uint32_t pending_count;
    events_t expected;
    uint64_t clamped_count;   /* ok balancing transfers whose stored amount differs */
    uint64_t inherited_count; /* ok posts whose request left the accounts zero */
    uint64_t expired_count;
    uint64_t rejected_count;
} ledger_run_t;

static void ledger_run_accounts(ledger_run_t *run, sz_kafka_t *kafka) {
    sz_account_t accounts[LEDGER_ACCOUNT_COUNT];
    memset(accounts, 0, sizeof(accounts));
    for (uint32_t index = 0; index < LEDGER_ACCOUNT_COUNT; index++) {
        accounts[index].id = index + 1;
        accounts[index].ledger = 1;
        accounts[index].code = 1;
        /* Accounts 1 and 2 may not go below zero: balancing debits clamp against them. */
        if (index < 2) accounts[index].flags = SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS;
    }
    sz_journal_header_t header = {
        .op = ++run->op,
        .trace_id = splitmix(&run->state),
        .timestamp = sz_ledger_timestamp_next(run->ledger, run->clock_ns),
        .operation = SZ_OPERATION_CREATE_ACCOUNTS,
        .event_count = LEDGER_ACCOUNT_COUNT,
        .body_size = LEDGER_ACCOUNT_COUNT * SZ_JOURNAL_EVENT_SIZE,
    };
    sz_create_result_t results[LEDGER_ACCOUNT_COUNT];
    uint32_t result_count = 0;
    cr_assert_eq(sz_ledger_create_accounts(run->ledger, accounts, LEDGER_ACCOUNT_COUNT,
                                           header.timestamp, results, &result_count),
                 SZ_BATCH_APPLIED);
    cr_assert_eq(result_count, 0);
    cr_assert_eq(sz_kafka_produce_op(kafka, &header, accounts, results, result_count), 0);
}

/* One request of a random shape: plain, pending, post or void (inheriting accounts),
 * balancing, invalid, a retry of an earlier id, or linked to the next. */
static void ledger_run_transfer(ledger_run_t *run, sz_transfer_t *transfer) {
    memset(transfer, 0, sizeof(*transfer));
    transfer->id = run->id_next++;
    transfer->debit_account_id = 1 + splitmix(&run->state) % LEDGER_ACCOUNT_COUNT;
    transfer->credit_account_id =
        1 + (transfer->debit_account_id + splitmix(&run->state) % (LEDGER_ACCOUNT_COUNT - 1)) %
                LEDGER_ACCOUNT_COUNT;
    transfer->amount = 1 + splitmix(&run->state) % 1000;
    transfer->ledger = 1;
    transfer->code = 1;
    transfer->user_data_64 = splitmix(&run->state);
    uint64_t shape = splitmix(&run->state) % 12;
    if (shape == 4 || shape == 5) {
        transfer->flags = SZ_TRANSFER_PENDING;
        transfer->timeout = (uint32_t)(splitmix(&run->state) % 3);
        if (run->pending_count < LEDGER_PENDING_KEPT_MAX) {
            run->pending_ids[run->pending_count++] = transfer->id;
        }
    } else if ((shape == 6 || shape == 7) && run->pending_count > 0) {
        transfer->pending_id = run->pending_ids[splitmix(&run->state) % run->pending_count];
        transfer->flags = shape == 6 ? SZ_TRANSFER_POST_PENDING : SZ_TRANSFER_VOID_PENDING;
        transfer->debit_account_id = 0; /* inherited from the pending transfer */
        transfer->credit_account_id = 0;
        transfer->ledger = 0;
        transfer->code = 0;
        transfer->amount = 0; /* the pending amount */
    } else if (shape == 8) {
        transfer->flags = SZ_TRANSFER_BALANCING_DEBIT;
        transfer->debit_account_id = 1 + splitmix(&run->state) % 2;
        transfer->amount = 0; /* as much as the debit account has */
    } else if (shape == 9) {
        transfer->amount = 0; /* amount_must_not_be_zero */
    } else if (shape == 10 && run->id_next > 3) {
        transfer->id = 1 + splitmix(&run->state) % (uint64_t)(run->id_next - 2); /* exists* */
    } else if (shape == 11) {
        transfer->flags = SZ_TRANSFER_LINKED;
    }
}

static void ledger_run_expire(ledger_run_t *run, sz_kafka_t *kafka) {
    static sz_u128 ids[SZ_EXPIRE_EVENTS_MAX];
    static sz_transfer_t expired[SZ_EXPIRE_EVENTS_MAX];
    sz_journal_header_t header = {
        .op = ++run->op,
        .trace_id = splitmix(&run->state),
        .timestamp = sz_ledger_timestamp_next(run->ledger, run->clock_ns),
        .operation = SZ_OPERATION_EXPIRE_PENDING,
    };
    uint32_t count = 0;
    cr_assert_eq(sz_ledger_expire_pending(run->ledger, header.timestamp, ids, &count),
                 SZ_BATCH_APPLIED);
    cr_assert_eq(sz_ledger_lookup_transfers(run->ledger, ids, count, expired), count);
    for (uint32_t index = 0; index < count; index++) {
        expected_event(&run->expected, TOPIC, "expired", header.op, index, header.timestamp,
                       header.trace_id, "ok", &expired[index], SZ_KAFKA_KEY_TRANSFER_ID);
    }
    run->expired_count += count;
    cr_assert_eq(sz_kafka_produce_expired(kafka, &header, expired, count), 0, "%s",
                 sz_kafka_error_message(kafka));
}

static void ledger_run_transfers(ledger_run_t *run, sz_kafka_t *kafka) {
    static sz_transfer_t events[EVENTS_PER_OP_MAX];
    static sz_transfer_t stored[EVENTS_PER_OP_MAX];
    static sz_create_result_t results[EVENTS_PER_OP_MAX];
    uint32_t event_count = 1 + (uint32_t)(splitmix(&run->state) % EVENTS_PER_OP_MAX);
    for (uint32_t index = 0; index < event_count; index++) {
        ledger_run_transfer(run, &events[index]);
    }
    sz_journal_header_t header = {
        .op = ++run->op,
        .trace_id = splitmix(&run->state),
        .timestamp = sz_ledger_timestamp_next(run->ledger, run->clock_ns),
        .operation = SZ_OPERATION_CREATE_TRANSFERS,
        .event_count = event_count,
        .body_size = event_count * SZ_JOURNAL_EVENT_SIZE,
    };
    uint32_t result_count = 0;
    cr_assert_eq(sz_ledger_create_transfers(run->ledger, events, event_count, header.timestamp,
                                            results, &result_count),
                 SZ_BATCH_APPLIED);
    uint32_t stored_count = 0;
    uint32_t result_index = 0;
    for (uint32_t index = 0; index < event_count; index++) {
        if (result_index < result_count && results[result_index].index == index) {
            expected_event(&run->expected, REJECTED_TOPIC, "rejected", header.op, index,
                           header.timestamp + index, header.trace_id,
                           sz_create_transfer_result_name(results[result_index].result),
                           &events[index], SZ_KAFKA_KEY_TRANSFER_ID);
            result_index++;
            run->rejected_count++;
            continue;
        }
        sz_transfer_t *record = &stored[stored_count++];
        cr_assert_eq(sz_ledger_lookup_transfers(run->ledger, &events[index].id, 1, record), 1);
        cr_assert_eq(record->timestamp, header.timestamp + index);
        if ((events[index].flags & SZ_TRANSFER_BALANCING_DEBIT) != 0 &&
            record->amount != events[index].amount) {
            run->clamped_count++;
        }
        if ((events[index].flags & SZ_TRANSFER_POST_PENDING) != 0) run->inherited_count++;
        expected_event(&run->expected, TOPIC, "transfer", header.op, index,
                       header.timestamp + index, header.trace_id, "ok", record,
                       SZ_KAFKA_KEY_TRANSFER_ID);
    }
    cr_assert_eq(sz_kafka_produce_op_stored(kafka, &header, events, stored, stored_count,
                                            results, result_count),
                 0, "%s", sz_kafka_error_message(kafka));
}

Test(kafka, a_real_ledgers_ops_arrive_as_the_ledger_stored_them) {
    /* Through core's ledger: balancing transfers clamp, posts inherit their pending
     * transfer's accounts, chains fail, pending transfers expire; every event must carry
     * what the ledger stored, found by lookups, not what the request said. */
    ledger_run_t run;
    memset(&run, 0, sizeof(run));
    run.state = test_seed();
    run.clock_ns = 1700000000000000000ull;
    run.id_next = 1000;
    sz_ledger_config_t config = {
        .accounts_max = 64,
        .transfers_max = 16384,
        .pending_max = 4096,
        .history_max = 64,
        .hash_seed = 7,
    };
    cr_assert_eq(sz_ledger_init(&config, &run.ledger), 0);
    cluster_t cluster;
    cluster_start(&cluster);
    sz_kafka_t *kafka = sink_open(&cluster, true, SZ_KAFKA_KEY_TRANSFER_ID, NULL);
    ledger_run_accounts(&run, kafka);
    for (uint32_t batch = 0; batch < 400; batch++) {
        run.clock_ns += 1000000 + splitmix(&run.state) % 50000000; /* 1 to 51 ms */
        if (sz_ledger_expiry_next(run.ledger) <= run.clock_ns) ledger_run_expire(&run, kafka);
        ledger_run_transfers(&run, kafka);
    }
    sink_wait_delivered(kafka, run.op);
    sz_kafka_close(kafka, 1000);
    sz_ledger_deinit(run.ledger);
    fprintf(stderr, "ledger: %" PRIu64 " ops, %zu events, %" PRIu64 " rejected, %" PRIu64
            " expired, %" PRIu64 " clamped, %" PRIu64 " posts\n", run.op, run.expected.count,
            run.rejected_count, run.expired_count, run.clamped_count, run.inherited_count);
    cr_assert_gt(run.rejected_count, 0);
    cr_assert_gt(run.expired_count, 0);
    cr_assert_gt(run.clamped_count, 0);
    cr_assert_gt(run.inherited_count, 0);

    qsort(run.expected.items, run.expected.count, sizeof(event_t), event_compare);
    events_t received = {0};
    events_read_all(&cluster, &received);
    match_report_t report = events_match(&run.expected, &received);
    cr_assert_eq(report.missing, 0, "%zu of %zu missing", report.missing, run.expected.count);
    cr_assert_eq(report.duplicates, 0);
    free(run.expected.items);
    free(received.items);
    cluster_stop(&cluster);
}
