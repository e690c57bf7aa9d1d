/* kafka.c: the Kafka sink of the projector (kafka.h): turns each committed op into JSON
 * events and hands them to librdkafka's idempotent producer, and turns librdkafka's
 * delivery reports back into one number, the highest op delivered with all before it.
 *
 * Design notes.
 * - Delivery tracking: every op that has events takes the next slot of a ring (its
 *   sequence), and each of its messages carries that sequence as its opaque. The slot
 *   counts the op's messages not yet reported delivered, plus one while the op is still
 *   being produced (so a report that arrives while we poll for room in the middle of an
 *   op cannot finish it early). Reports arrive in any order across partitions; slots are
 *   retired from the head only, so sz_kafka_delivered_op() is the op before the oldest
 *   unfinished slot, or the last op given when none is left. Ops without events take no
 *   slot, so they are delivered as soon as every op before them is, and a run of them
 *   (create_accounts, expiries that released nothing) never fills the ring.
 * - Nothing is skipped: message.timeout.ms is 0 (librdkafka retries for ever) and the
 *   idempotent producer keeps order and drops its own duplicates. A report that still
 *   fails (a permanent error: message too large, authorisation, a fatal idempotence
 *   error) never retires its slot; it makes the handle failed, and every later call
 *   returns -EIO with the message. The projector then stops and restarts from its last
 *   recorded position.
 * - Backpressure: when librdkafka's queue (or our ring) is full we poll and try again.
 *   That loop has no maximum on purpose: the contract is to block while Kafka is
 *   unreachable rather than drop or skip; a permanent failure ends it.
 * - Every byte of an event comes from (header, body or stored transfer, result), so an
 *   event produced again after a crash is identical. */
#include "projection/kafka.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

/* Ops with events in flight at once. 65536 ops of even one event each is more than
 * librdkafka's default queue of 100,000 messages holds in practice; a full ring only
 * makes produce poll, like a full queue. */
#define KAFKA_OPS_MAX (1u << 16)
/* The longest event: 7 u128 of 39 digits, 4 u64 of 20, 5 small numbers, the names and
 * the longest result name come to about 640 bytes. */
#define KAFKA_VALUE_SIZE_MAX 1024u
/* How long one poll waits for room when the queue is full. */
#define KAFKA_QUEUE_FULL_POLL_MS 50
#define KAFKA_DECIMAL_SIZE 44u

typedef struct kafka_op {
    uint64_t op;
    uint32_t outstanding; /* messages not yet delivered, +1 while producing */
    uint32_t reserved;
} kafka_op_t;

typedef enum kafka_kind {
    KAFKA_KIND_TRANSFER = 0,
    KAFKA_KIND_REJECTED = 1,
    KAFKA_KIND_EXPIRED = 2,
} kafka_kind_t;

struct sz_kafka {
    rd_kafka_t *producer;
    rd_kafka_topic_t *topic;
    rd_kafka_topic_t *rejected_topic; /* NULL: rejected events are not sent */
    sz_kafka_key_t key;
    bool closing;
    int error; /* sticky: 0 or the negative errno every later call returns */
    kafka_op_t *ops;
    uint64_t op_head; /* sequence of the oldest unfinished slot */
    uint64_t op_tail; /* sequence of the next slot */
    uint64_t op_given_last;
    uint64_t event_count_produced;
    uint64_t event_count_delivered;
    uint64_t queue_full_count;
    char error_message[512]; /* librdkafka's fatal reasons run past 256 */
    char value[KAFKA_VALUE_SIZE_MAX];
};

static void kafka_fail(sz_kafka_t *kafka, int error, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void kafka_fail(sz_kafka_t *kafka, int error, const char *format, ...) {
    SZ_ASSERT(error < 0);
    if (kafka->error != 0) return; /* the first failure is the one to report */
    kafka->error = error;
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(kafka->error_message, sizeof(kafka->error_message), format, arguments);
    va_end(arguments);
}

/* Retires finished slots from the head: only there, so delivery is in op order. */
static void kafka_ops_retire(sz_kafka_t *kafka) {
    while (kafka->op_head < kafka->op_tail &&
           kafka->ops[kafka->op_head % KAFKA_OPS_MAX].outstanding == 0) {
        kafka->op_head++;
    }
    SZ_ASSERT(kafka->op_tail - kafka->op_head <= KAFKA_OPS_MAX);
}

static void kafka_on_delivery(rd_kafka_t *producer, const rd_kafka_message_t *message,
                              void *opaque) {
    (void)producer;
    sz_kafka_t *kafka = opaque;
    uint64_t sequence = (uint64_t)(uintptr_t)message->_private;
    SZ_ASSERT(sequence >= kafka->op_head);
    SZ_ASSERT(sequence < kafka->op_tail);
    kafka_op_t *slot = &kafka->ops[sequence % KAFKA_OPS_MAX];
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* Purged at close (a simulated or real crash): not delivered, not an error. */
        if (kafka->closing) return;
        kafka_fail(kafka, -EIO,
                   "kafka: an event of op %" PRIu64 " was not delivered to topic %s: %s "
                   "(permanent; restart the projector from its recorded position)",
                   slot->op, rd_kafka_topic_name(message->rkt), rd_kafka_err2str(message->err));
        return;
    }
    SZ_ASSERT(slot->outstanding > 0);
    slot->outstanding--;
    kafka->event_count_delivered++;
    if (slot->outstanding == 0 && sequence == kafka->op_head) kafka_ops_retire(kafka);
}

static void kafka_on_error(rd_kafka_t *producer, int error, const char *reason, void *opaque) {
    (void)reason; /* rd_kafka_fatal_error() gives the same, and the original code */
    sz_kafka_t *kafka = opaque;
    /* Transport errors and brokers going down are retried by librdkafka; only a fatal
     * error (the idempotent producer lost its guarantees) ends the handle. */
    if (error != RD_KAFKA_RESP_ERR__FATAL) return;
    if (kafka->closing) return;
    char fatal[384];
    rd_kafka_resp_err_t fatal_error = rd_kafka_fatal_error(producer, fatal, sizeof(fatal));
    kafka_fail(kafka, -EIO, "kafka: fatal producer error %s (restart the projector from "
               "its recorded position): %s", rd_kafka_err2name(fatal_error), fatal);
}

static int kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                          char *error_out, size_t error_size) {
    char reason[256];
    if (rd_kafka_conf_set(conf, name, value, reason, sizeof(reason)) != RD_KAFKA_CONF_OK) {
        /* Not the value: it may be a password (sasl.password). */
        snprintf(error_out, error_size, "kafka: property %s: %s", name, reason);
        return -EINVAL;
    }
    return 0;
}

static int kafka_conf_build(const sz_kafka_config_t *config, sz_kafka_t *kafka,
                            rd_kafka_conf_t *conf, char *error_out, size_t error_size) {
    /* Idempotence with acks=all and unlimited retries: at-least-once with order kept
     * and no duplicates from librdkafka's own retries. message.timeout.ms 0 means a
     * message is never given up for time: Kafka down for hours just blocks. */
    static const char *const defaults[][2] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"message.timeout.ms", "0"},
        {"linger.ms", "5"},
    };
    int error = kafka_conf_set(conf, "bootstrap.servers", config->brokers, error_out,
                               error_size);
    for (size_t index = 0; error == 0 && index < sizeof(defaults) / sizeof(defaults[0]);
         index++) {
        error = kafka_conf_set(conf, defaults[index][0], defaults[index][1], error_out,
                               error_size);
    }
    /* The caller's properties come last so that they may override ours. */
    for (size_t index = 0; error == 0 && config->properties != NULL &&
                           config->properties[index] != NULL;
         index++) {
        const char *property = config->properties[index];
        const char *equals = strchr(property, '=');
        if (equals == NULL || equals == property || equals - property >= 128) {
            snprintf(error_out, error_size, "kafka: property %zu is not name=value", index + 1);
            return -EINVAL;
        }
        char name[128];
        memcpy(name, property, (size_t)(equals - property));
        name[equals - property] = '\0';
        error = kafka_conf_set(conf, name, equals + 1, error_out, error_size);
    }
    if (error != 0) return error;
    rd_kafka_conf_set_opaque(conf, kafka);
    rd_kafka_conf_set_dr_msg_cb(conf, kafka_on_delivery);
    rd_kafka_conf_set_error_cb(conf, kafka_on_error);
    return 0;
}

static int kafka_topic_open(sz_kafka_t *kafka, const char *name, rd_kafka_topic_t **topic_out,
                            char *error_out, size_t error_size) {
    *topic_out = rd_kafka_topic_new(kafka->producer, name, NULL);
    if (*topic_out == NULL) {
        snprintf(error_out, error_size, "kafka: topic %s: %s", name,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return -EINVAL;
    }
    return 0;
}

int sz_kafka_open(const sz_kafka_config_t *config, sz_kafka_t **kafka_out, char *error_out,
                  size_t error_size) {
    SZ_ASSERT(config != NULL);
    SZ_ASSERT(kafka_out != NULL);
    *kafka_out = NULL;
    if (config->brokers == NULL || config->brokers[0] == '\0' || config->topic == NULL ||
        config->topic[0] == '\0' ||
        (config->rejected_topic != NULL && config->rejected_topic[0] == '\0')) {
        snprintf(error_out, error_size, "kafka: brokers and topic must be given");
        return -EINVAL;
    }
    if ((uint32_t)config->key > SZ_KAFKA_KEY_CREDIT_ACCOUNT_ID) {
        snprintf(error_out, error_size, "kafka: unknown key choice %u", (unsigned)config->key);
        return -EINVAL;
    }
    sz_kafka_t *kafka = calloc(1, sizeof(*kafka));
    if (kafka == NULL) return -ENOMEM;
    kafka->ops = calloc(KAFKA_OPS_MAX, sizeof(kafka->ops[0]));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int error = -ENOMEM;
    if (kafka->ops == NULL || conf == NULL) goto fail;
    kafka->key = config->key;
    error = kafka_conf_build(config, kafka, conf, error_out, error_size);
    if (error != 0) goto fail;
    char reason[256];
    kafka->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof(reason));
    if (kafka->producer == NULL) {
        snprintf(error_out, error_size, "kafka: cannot create the producer: %s", reason);
        error = -EINVAL;
        goto fail;
    }
    conf = NULL; /* the producer owns it now */
    error = kafka_topic_open(kafka, config->topic, &kafka->topic, error_out, error_size);
    if (error != 0) goto fail;
    if (config->rejected_topic != NULL) {
        error = kafka_topic_open(kafka, config->rejected_topic, &kafka->rejected_topic,
                                 error_out, error_size);
        if (error != 0) goto fail;
    }
    *kafka_out = kafka;
    return 0;
fail:
    if (conf != NULL) rd_kafka_conf_destroy(conf);
    sz_kafka_close(kafka, 0);
    return error;
}

void sz_kafka_close(sz_kafka_t *kafka, int timeout_ms) {
    if (kafka == NULL) return;
    if (kafka->producer != NULL) {
        if (timeout_ms > 0) (void)rd_kafka_flush(kafka->producer, timeout_ms);
        /* What is still queued or in flight is given up here (its reports arrive as
         * purged and are ignored): a later run sends it again from the recorded op. */
        kafka->closing = true;
        (void)rd_kafka_purge(kafka->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        (void)rd_kafka_poll(kafka->producer, 0);
    }
    if (kafka->topic != NULL) rd_kafka_topic_destroy(kafka->topic);
    if (kafka->rejected_topic != NULL) rd_kafka_topic_destroy(kafka->rejected_topic);
    if (kafka->producer != NULL) rd_kafka_destroy(kafka->producer);
    free(kafka->ops);
    free(kafka);
}

/* ---- The event's text ---- */

typedef struct kafka_text {
    char *data;
    size_t size;
    size_t capacity;
} kafka_text_t;

static void text_append(kafka_text_t *text, const char *bytes, size_t size) {
    /* Our own formatting of bounded fields: overflowing is a bug, not input. */
    SZ_ASSERT(text->size + size < text->capacity);
    memcpy(text->data + text->size, bytes, size);
    text->size += size;
}

#define TEXT_LITERAL(text, literal) text_append((text), (literal), sizeof(literal) - 1)

/* Writes the digits of value at the end of buffer[KAFKA_DECIMAL_SIZE] and returns the
 * first; no terminating zero is needed by the callers that take a length. */
static char *decimal_u64(uint64_t value, char *end) {
    char *cursor = end;
    do {
        *--cursor = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    return cursor;
}

/* u128 in 19-digit chunks: one u128 division per chunk instead of one per digit. */
static size_t decimal_u128(sz_u128 value, char buffer[KAFKA_DECIMAL_SIZE]) {
    static const uint64_t chunk_base = 10000000000000000000ull; /* 10^19 */
    char *end = buffer + KAFKA_DECIMAL_SIZE - 1;
    *end = '\0';
    char *cursor = end;
    while (value > UINT64_MAX) {
        uint64_t chunk = (uint64_t)(value % chunk_base);
        value /= chunk_base;
        char *chunk_start = decimal_u64(chunk, cursor);
        while (cursor - chunk_start < 19) *--chunk_start = '0';
        cursor = chunk_start;
    }
    cursor = decimal_u64((uint64_t)value, cursor);
    size_t size = (size_t)(end - cursor);
    memmove(buffer, cursor, size + 1);
    return size;
}

static void text_u128_string(kafka_text_t *text, const char *name, size_t name_size,
                             sz_u128 value) {
    char digits[KAFKA_DECIMAL_SIZE];
    size_t size = decimal_u128(value, digits);
    text_append(text, name, name_size);
    text_append(text, digits, size);
    TEXT_LITERAL(text, "\"");
}

static void text_u64_string(kafka_text_t *text, const char *name, size_t name_size,
                            uint64_t value) {
    char digits[KAFKA_DECIMAL_SIZE];
    char *end = digits + sizeof(digits);
    char *start = decimal_u64(value, end);
    text_append(text, name, name_size);
    text_append(text, start, (size_t)(end - start));
    TEXT_LITERAL(text, "\"");
}

static void text_u32_number(kafka_text_t *text, const char *name, size_t name_size,
                            uint32_t value) {
    char digits[KAFKA_DECIMAL_SIZE];
    char *end = digits + sizeof(digits);
    char *start = decimal_u64(value, end);
    text_append(text, name, name_size);
    text_append(text, start, (size_t)(end - start));
}

/* "name":"  and "name":  with the comma before every field but the first. */
#define FIELD_STRING(name) ",\"" name "\":\"", sizeof(",\"" name "\":\"") - 1
#define FIELD_NUMBER(name) ",\"" name "\":", sizeof(",\"" name "\":") - 1

static const char *const kafka_kind_names[] = {"transfer", "rejected", "expired"};

/* One event's JSON (kafka.h gives the exact form) into kafka->value. */
static size_t kafka_event_format(sz_kafka_t *kafka, kafka_kind_t kind, uint64_t op,
                                 uint32_t event_index, uint64_t timestamp, uint64_t trace_id,
                                 const char *result_name, const sz_transfer_t *transfer) {
    kafka_text_t text = {.data = kafka->value, .size = 0, .capacity = sizeof(kafka->value)};
    char digits[KAFKA_DECIMAL_SIZE];
    char *end = digits + sizeof(digits);
    TEXT_LITERAL(&text, "{\"event_id\":\"");
    char *start = decimal_u64(op, end);
    text_append(&text, start, (size_t)(end - start));
    TEXT_LITERAL(&text, ".");
    start = decimal_u64(event_index, end);
    text_append(&text, start, (size_t)(end - start));
    TEXT_LITERAL(&text, "\",\"kind\":\"");
    text_append(&text, kafka_kind_names[kind], strlen(kafka_kind_names[kind]));
    TEXT_LITERAL(&text, "\"");
    text_u64_string(&text, FIELD_STRING("op"), op);
    text_u64_string(&text, FIELD_STRING("timestamp"), timestamp);
    text_u64_string(&text, FIELD_STRING("trace_id"), trace_id);
    TEXT_LITERAL(&text, ",\"result\":\"");
    text_append(&text, result_name, strlen(result_name)); /* names are [a-z_]: no escaping */
    TEXT_LITERAL(&text, "\"");
    text_u128_string(&text, FIELD_STRING("id"), transfer->id);
    text_u128_string(&text, FIELD_STRING("debit_account_id"), transfer->debit_account_id);
    text_u128_string(&text, FIELD_STRING("credit_account_id"), transfer->credit_account_id);
    text_u128_string(&text, FIELD_STRING("amount"), transfer->amount);
    text_u128_string(&text, FIELD_STRING("pending_id"), transfer->pending_id);
    text_u128_string(&text, FIELD_STRING("user_data_128"), transfer->user_data_128);
    text_u64_string(&text, FIELD_STRING("user_data_64"), transfer->user_data_64);
    text_u32_number(&text, FIELD_NUMBER("user_data_32"), transfer->user_data_32);
    text_u32_number(&text, FIELD_NUMBER("timeout"), transfer->timeout);
    text_u32_number(&text, FIELD_NUMBER("ledger"), transfer->ledger);
    text_u32_number(&text, FIELD_NUMBER("code"), transfer->code);
    text_u32_number(&text, FIELD_NUMBER("flags"), transfer->flags);
    TEXT_LITERAL(&text, "}");
    SZ_ASSERT(text.size < text.capacity);
    kafka->value[text.size] = '\0';
    return text.size;
}

/* ---- Producing ---- */

static int kafka_check(const sz_kafka_t *kafka) {
    return kafka->error;
}

/* Polls until the ring has a free slot (delivery reports retire slots). */
static int kafka_ops_wait_for_room(sz_kafka_t *kafka) {
    while (kafka->op_tail - kafka->op_head >= KAFKA_OPS_MAX) {
        (void)rd_kafka_poll(kafka->producer, KAFKA_QUEUE_FULL_POLL_MS);
        if (kafka->error != 0) return kafka->error;
    }
    return 0;
}

static int kafka_send(sz_kafka_t *kafka, rd_kafka_topic_t *topic, uint64_t sequence,
                      sz_u128 key, size_t value_size, uint64_t op, uint32_t event_index,
                      uint64_t trace_id) {
    char key_text[KAFKA_DECIMAL_SIZE];
    size_t key_size = decimal_u128(key, key_text);
    char op_text[KAFKA_DECIMAL_SIZE];
    char trace_text[KAFKA_DECIMAL_SIZE];
    char event_id_text[2 * KAFKA_DECIMAL_SIZE];
    /* Not snprintf: these run once per event and printf showed in profiles. */
    size_t op_size = decimal_u128(op, op_text);
    (void)decimal_u128(trace_id, trace_text);
    memcpy(event_id_text, op_text, op_size);
    event_id_text[op_size] = '.';
    (void)decimal_u128(event_index, event_id_text + op_size + 1);
    for (;;) {
        rd_kafka_resp_err_t error = rd_kafka_producev(
            kafka->producer, RD_KAFKA_V_RKT(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key_text, key_size), RD_KAFKA_V_VALUE(kafka->value, value_size),
            RD_KAFKA_V_HEADER("trace_id", trace_text, -1), RD_KAFKA_V_HEADER("op", op_text, -1),
            RD_KAFKA_V_HEADER("event_id", event_id_text, -1),
            RD_KAFKA_V_OPAQUE((void *)(uintptr_t)sequence), RD_KAFKA_V_END);
        if (error == RD_KAFKA_RESP_ERR_NO_ERROR) break;
        if (error != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            kafka_fail(kafka, -EIO, "kafka: cannot produce event %s to topic %s: %s",
                       event_id_text, rd_kafka_topic_name(topic), rd_kafka_err2str(error));
            return kafka->error;
        }
        /* Backpressure: serve delivery reports until librdkafka has room. */
        kafka->queue_full_count++;
        (void)rd_kafka_poll(kafka->producer, KAFKA_QUEUE_FULL_POLL_MS);
        if (kafka->error != 0) return kafka->error;
    }
    kafka->ops[sequence % KAFKA_OPS_MAX].outstanding++;
    kafka->event_count_produced++;
    return 0;
}

static sz_u128 kafka_key(const sz_kafka_t *kafka, const sz_transfer_t *transfer) {
    switch (kafka->key) {
    case SZ_KAFKA_KEY_DEBIT_ACCOUNT_ID: return transfer->debit_account_id;
    case SZ_KAFKA_KEY_CREDIT_ACCOUNT_ID: return transfer->credit_account_id;
    case SZ_KAFKA_KEY_TRANSFER_ID: break;
    }
    return transfer->id;
}

/* Gives the op: an op that may have events takes a slot (held open with the +1 until
 * kafka_op_end()); one that has none needs no slot, since sz_kafka_delivered_op() is the
 * last op given whenever no slot is open. Fails on an op out of order. */
#define KAFKA_SEQUENCE_NONE UINT64_MAX

static int kafka_op_begin(sz_kafka_t *kafka, const sz_journal_header_t *header,
                          bool has_events, uint64_t *sequence_out) {
    *sequence_out = KAFKA_SEQUENCE_NONE;
    int error = kafka_check(kafka);
    if (error != 0) return error;
    if (header->op <= kafka->op_given_last) {
        kafka_fail(kafka, -EINVAL, "kafka: op %" PRIu64 " given after op %" PRIu64
                   " (ops must come in order, once each)", header->op, kafka->op_given_last);
        return kafka->error;
    }
    if (has_events) {
        error = kafka_ops_wait_for_room(kafka);
        if (error != 0) return error;
        *sequence_out = kafka->op_tail;
        kafka_op_t *slot = &kafka->ops[kafka->op_tail % KAFKA_OPS_MAX];
        slot->op = header->op;
        slot->outstanding = 1;
        kafka->op_tail++;
    }
    kafka->op_given_last = header->op;
    SZ_ASSERT(kafka->op_tail - kafka->op_head <= KAFKA_OPS_MAX);
    return 0;
}

/* Drops the +1 of an op whose events are all queued. */
static void kafka_op_end(sz_kafka_t *kafka, uint64_t sequence) {
    if (sequence == KAFKA_SEQUENCE_NONE) return;
    SZ_ASSERT(sequence >= kafka->op_head && sequence < kafka->op_tail);
    kafka_op_t *slot = &kafka->ops[sequence % KAFKA_OPS_MAX];
    SZ_ASSERT(slot->outstanding > 0);
    slot->outstanding--;
    kafka_ops_retire(kafka);
}

static int kafka_results_check(sz_kafka_t *kafka, const sz_journal_header_t *header,
                               const sz_create_result_t *results, uint32_t result_count) {
    if (result_count > header->event_count || (result_count > 0 && results == NULL)) {
        kafka_fail(kafka, -EINVAL, "kafka: op %" PRIu64 " has %" PRIu32 " results for %" PRIu32
                   " events", header->op, result_count, header->event_count);
        return kafka->error;
    }
    for (uint32_t index = 0; index < result_count; index++) {
        bool ascending = index == 0 || results[index].index > results[index - 1].index;
        if (!ascending || results[index].index >= header->event_count ||
            results[index].result == SZ_CREATE_TRANSFER_OK) {
            kafka_fail(kafka, -EINVAL, "kafka: op %" PRIu64 " result %" PRIu32
                       " (event %" PRIu32 ", result %" PRIu32 ") is out of order, out of "
                       "range or ok", header->op, index, results[index].index,
                       results[index].result);
            return kafka->error;
        }
    }
    return 0;
}

/* Before anything is produced: one stored transfer per ok event, each with its event's
 * id (a projector bug or a ledger mismatch, reported, not asserted: the ids come from
 * the journal). */
static int kafka_stored_check(sz_kafka_t *kafka, const sz_journal_header_t *header,
                              const uint8_t *body, const sz_transfer_t *stored,
                              uint32_t stored_count, const sz_create_result_t *results,
                              uint32_t result_count) {
    if (stored_count != header->event_count - result_count) {
        kafka_fail(kafka, -EINVAL, "kafka: op %" PRIu64 " has %" PRIu32 " stored transfers "
                   "for %" PRIu32 " ok events", header->op, stored_count,
                   header->event_count - result_count);
        return kafka->error;
    }
    uint32_t result_index = 0;
    uint32_t stored_index = 0;
    for (uint32_t event_index = 0; event_index < header->event_count; event_index++) {
        if (result_index < result_count && results[result_index].index == event_index) {
            result_index++;
            continue;
        }
        sz_u128 id;
        memcpy(&id, body + (size_t)event_index * SZ_JOURNAL_EVENT_SIZE +
                        offsetof(sz_transfer_t, id), sizeof(id));
        SZ_ASSERT(stored_index < stored_count);
        if (stored[stored_index++].id != id) {
            kafka_fail(kafka, -EINVAL, "kafka: op %" PRIu64 " event %" PRIu32 ": the stored "
                       "transfer has another id", header->op, event_index);
            return kafka->error;
        }
    }
    SZ_ASSERT(stored_index == stored_count);
    return 0;
}

static int kafka_transfers_produce(sz_kafka_t *kafka, const sz_journal_header_t *header,
                                   const uint8_t *body, const sz_transfer_t *stored,
                                   const sz_create_result_t *results, uint32_t result_count,
                                   uint64_t sequence) {
    uint32_t result_index = 0;
    uint32_t stored_index = 0; /* the next ok event's stored transfer */
    for (uint32_t event_index = 0; event_index < header->event_count; event_index++) {
        /* A copy: the body may sit at any alignment (a network or read buffer). */
        sz_transfer_t request;
        memcpy(&request, body + (size_t)event_index * SZ_JOURNAL_EVENT_SIZE, sizeof(request));
        const sz_transfer_t *transfer = &request;
        kafka_kind_t kind = KAFKA_KIND_TRANSFER;
        const char *result_name = "ok";
        if (result_index < result_count && results[result_index].index == event_index) {
            kind = KAFKA_KIND_REJECTED;
            result_name = sz_create_transfer_result_name(results[result_index].result);
            result_index++;
            if (kafka->rejected_topic == NULL) continue;
        } else if (stored != NULL) {
            /* kafka_stored_check() matched each ok event with its stored transfer. */
            SZ_ASSERT(stored_index < header->event_count - result_count);
            SZ_ASSERT(stored[stored_index].id == request.id);
            transfer = &stored[stored_index++];
        }
        /* The event's time, whatever the record holds: T + index (journal.h). */
        uint64_t timestamp = header->timestamp + event_index;
        size_t value_size = kafka_event_format(kafka, kind, header->op, event_index, timestamp,
                                               header->trace_id, result_name, transfer);
        rd_kafka_topic_t *topic =
            kind == KAFKA_KIND_REJECTED ? kafka->rejected_topic : kafka->topic;
        int error = kafka_send(kafka, topic, sequence, kafka_key(kafka, transfer), value_size,
                               header->op, event_index, header->trace_id);
        if (error != 0) return error;
    }
    SZ_ASSERT(result_index == result_count);
    return 0;
}

int sz_kafka_produce_op_stored(sz_kafka_t *kafka, const sz_journal_header_t *header,
                               const void *body, const sz_transfer_t *stored,
                               uint32_t stored_count, const sz_create_result_t *results,
                               uint32_t result_count) {
    SZ_ASSERT(kafka != NULL);
    SZ_ASSERT(header != NULL);
    int error = kafka_check(kafka);
    if (error != 0) return error;
    bool transfers = header->operation == SZ_OPERATION_CREATE_TRANSFERS;
    if (!transfers && header->operation != SZ_OPERATION_CREATE_ACCOUNTS &&
        header->operation != SZ_OPERATION_EXPIRE_PENDING) {
        kafka_fail(kafka, -EINVAL, "kafka: op %" PRIu64 " has operation %u (%s), which is "
                   "never journaled", header->op, header->operation,
                   sz_operation_name(header->operation));
        return kafka->error;
    }
    if (transfers && (header->event_count > SZ_BATCH_EVENTS_MAX ||
                      header->body_size != header->event_count * SZ_JOURNAL_EVENT_SIZE ||
                      (header->event_count > 0 && body == NULL))) {
        kafka_fail(kafka, -EINVAL, "kafka: op %" PRIu64 " has %" PRIu32 " events in a body "
                   "of %" PRIu32 " bytes", header->op, header->event_count, header->body_size);
        return kafka->error;
    }
    if (transfers) {
        error = kafka_results_check(kafka, header, results, result_count);
        if (error != 0) return error;
        if (stored != NULL) {
            error = kafka_stored_check(kafka, header, body, stored, stored_count, results,
                                       result_count);
            if (error != 0) return error;
        }
    }
    uint64_t sequence = 0;
    error = kafka_op_begin(kafka, header, transfers && header->event_count > 0, &sequence);
    if (error != 0) return error;
    if (sequence != KAFKA_SEQUENCE_NONE) {
        error = kafka_transfers_produce(kafka, header, body, stored, results, result_count,
                                        sequence);
        if (error != 0) return error; /* the slot stays open: the handle is failed */
    }
    kafka_op_end(kafka, sequence);
    return 0;
}

int sz_kafka_produce_op(sz_kafka_t *kafka, const sz_journal_header_t *header, const void *body,
                        const sz_create_result_t *results, uint32_t result_count) {
    return sz_kafka_produce_op_stored(kafka, header, body, NULL, 0, results, result_count);
}

int sz_kafka_produce_expired(sz_kafka_t *kafka, const sz_journal_header_t *header,
                             const sz_transfer_t *expired, uint32_t expired_count) {
    SZ_ASSERT(kafka != NULL);
    SZ_ASSERT(header != NULL);
    int error = kafka_check(kafka);
    if (error != 0) return error;
    if (header->operation != SZ_OPERATION_EXPIRE_PENDING || expired_count > SZ_BATCH_EVENTS_MAX ||
        (expired_count > 0 && expired == NULL)) {
        kafka_fail(kafka, -EINVAL, "kafka: op %" PRIu64 " (%s) with %" PRIu32 " expired "
                   "transfers is not an expire_pending op the sink can send", header->op,
                   sz_operation_name(header->operation), expired_count);
        return kafka->error;
    }
    uint64_t sequence = 0;
    error = kafka_op_begin(kafka, header, expired_count > 0, &sequence);
    if (error != 0) return error;
    for (uint32_t index = 0; index < expired_count; index++) {
        size_t value_size = kafka_event_format(kafka, KAFKA_KIND_EXPIRED, header->op, index,
                                               header->timestamp, header->trace_id, "ok",
                                               &expired[index]);
        error = kafka_send(kafka, kafka->topic, sequence, kafka_key(kafka, &expired[index]),
                           value_size, header->op, index, header->trace_id);
        if (error != 0) return error;
    }
    kafka_op_end(kafka, sequence);
    return 0;
}

int sz_kafka_poll(sz_kafka_t *kafka, int timeout_ms) {
    SZ_ASSERT(kafka != NULL);
    SZ_ASSERT(timeout_ms >= 0);
    int error = kafka_check(kafka);
    if (error != 0) return error;
    (void)rd_kafka_poll(kafka->producer, timeout_ms);
    return kafka_check(kafka);
}

uint64_t sz_kafka_delivered_op(const sz_kafka_t *kafka) {
    SZ_ASSERT(kafka != NULL);
    if (kafka->op_head == kafka->op_tail) return kafka->op_given_last;
    const kafka_op_t *slot = &kafka->ops[kafka->op_head % KAFKA_OPS_MAX];
    SZ_ASSERT(slot->outstanding > 0);
    SZ_ASSERT(slot->op > 0);
    return slot->op - 1;
}

const char *sz_kafka_error_message(const sz_kafka_t *kafka) {
    SZ_ASSERT(kafka != NULL);
    return kafka->error_message;
}

void sz_kafka_stats(const sz_kafka_t *kafka, sz_kafka_stats_t *stats_out) {
    SZ_ASSERT(kafka != NULL);
    SZ_ASSERT(stats_out != NULL);
    *stats_out = (sz_kafka_stats_t){
        .event_count_produced = kafka->event_count_produced,
        .event_count_delivered = kafka->event_count_delivered,
        .queue_full_count = kafka->queue_full_count,
        .op_count_in_flight = kafka->op_tail - kafka->op_head,
    };
}
