/* postgres_sink.c: the projector's Postgres sink (postgres_sink.h): schema, binary COPY
 * encoding, and the one transaction per batch that carries rows and position together.
 *
 * A batch is encoded once, into one byte buffer per table, while the learner runs; the
 * transaction only ships those buffers. So a failed transaction is retried by shipping the
 * same bytes again, whatever the learner has done since.
 *
 * Binary COPY (PostgreSQL docs, "COPY ... File Formats"): an 11-byte signature, two int32
 * (flags, header extension), then per row an int16 field count and per field an int32
 * length and the value in the type's binary (send/recv) form, big-endian; an int16 -1 ends
 * the stream. NUMERIC's form is int16 ndigits, weight, sign, dscale, then ndigits base-10000
 * digits, most significant first. TIMESTAMPTZ is int64 microseconds since 2000-01-01 UTC. */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "postgres_sink.h"

/* libpq copies what it is given into its own buffer: feed it in pieces of this size. */
#define POSTGRES_COPY_CHUNK_SIZE (1u << 20)
/* Months whose partitions this process created or found: a handful per run. */
#define POSTGRES_MONTHS_MAX 256u
/* Microseconds from the Unix epoch to Postgres' epoch, 2000-01-01. */
#define POSTGRES_EPOCH_OFFSET_US 946684800000000ll

typedef enum postgres_table {
    TABLE_TRANSFERS = 0,
    TABLE_ENTRIES,
    TABLE_REJECTED,
    TABLE_EXPIRATIONS,
    TABLE_ACCOUNTS, /* accounts created by the batch's ops */
    TABLE_BALANCES, /* balances of every account the batch changed, for one UPDATE */
    TABLE_COUNT,
} postgres_table_t;

static const char *const postgres_copy_sql[TABLE_COUNT] = {
    [TABLE_TRANSFERS] = "COPY sumzero.transfers (id, debit_account_id, credit_account_id, "
                        "amount, pending_id, user_data_128, user_data_64, user_data_32, "
                        "timeout, ledger, code, flags, timestamp, time, op) "
                        "FROM STDIN (FORMAT binary)",
    [TABLE_ENTRIES] = "COPY sumzero.entries (time, timestamp, op, transfer_id, account_id, "
                      "ledger, code, amount, balance) FROM STDIN (FORMAT binary)",
    [TABLE_REJECTED] = "COPY sumzero.rejected (op, index, operation, id, result, result_name, "
                       "timestamp, time) FROM STDIN (FORMAT binary)",
    [TABLE_EXPIRATIONS] = "COPY sumzero.expirations (pending_id, op, time, timestamp, "
                          "debit_account_id, credit_account_id, ledger, code, amount) "
                          "FROM STDIN (FORMAT binary)",
    [TABLE_ACCOUNTS] = "COPY sumzero.accounts (id, ledger, code, flags, debits_pending, "
                       "debits_posted, credits_pending, credits_posted, user_data_128, "
                       "user_data_64, user_data_32, timestamp, created_at) "
                       "FROM STDIN (FORMAT binary)",
    [TABLE_BALANCES] = "COPY sz_balances_stage (id, debits_pending, debits_posted, "
                       "credits_pending, credits_posted) FROM STDIN (FORMAT binary)",
};

/* The schema of docs/PROJECTION.md. Every statement is idempotent. */
static const char postgres_schema_sql[] =
    "CREATE SCHEMA IF NOT EXISTS sumzero;\n"
    "CREATE TABLE IF NOT EXISTS sumzero.position (\n"
    "  name text PRIMARY KEY,\n"
    "  op bigint NOT NULL,\n"
    "  cluster_id numeric(39,0) NOT NULL,\n"
    "  updated_at timestamptz NOT NULL DEFAULT now());\n"
    "INSERT INTO sumzero.position (name, op, cluster_id) VALUES ('postgres', 0, 0), "
    "  ('entries', 0, 0), ('kafka', 0, 0) ON CONFLICT (name) DO NOTHING;\n"
    "CREATE TABLE IF NOT EXISTS sumzero.accounts (\n"
    "  id numeric(39,0) PRIMARY KEY,\n"
    "  ledger bigint NOT NULL,\n"
    "  code integer NOT NULL,\n"
    "  flags integer NOT NULL,\n"
    "  debits_pending numeric(39,0) NOT NULL,\n"
    "  debits_posted numeric(39,0) NOT NULL,\n"
    "  credits_pending numeric(39,0) NOT NULL,\n"
    "  credits_posted numeric(39,0) NOT NULL,\n"
    "  user_data_128 numeric(39,0) NOT NULL,\n"
    "  user_data_64 numeric(20,0) NOT NULL,\n"
    "  user_data_32 bigint NOT NULL,\n"
    "  timestamp bigint NOT NULL,\n"
    "  created_at timestamptz NOT NULL) WITH (fillfactor = 50);\n"
    "CREATE TABLE IF NOT EXISTS sumzero.transfers (\n"
    "  id numeric(39,0) NOT NULL,\n"
    "  debit_account_id numeric(39,0) NOT NULL,\n"
    "  credit_account_id numeric(39,0) NOT NULL,\n"
    "  amount numeric(39,0) NOT NULL,\n"
    "  pending_id numeric(39,0) NOT NULL,\n"
    "  user_data_128 numeric(39,0) NOT NULL,\n"
    "  user_data_64 numeric(20,0) NOT NULL,\n"
    "  user_data_32 bigint NOT NULL,\n"
    "  timeout bigint NOT NULL,\n"
    "  ledger bigint NOT NULL,\n"
    "  code integer NOT NULL,\n"
    "  flags integer NOT NULL,\n"
    "  timestamp bigint NOT NULL,\n"
    "  time timestamptz NOT NULL,\n"
    "  op bigint NOT NULL) PARTITION BY RANGE (time);\n"
    "CREATE INDEX IF NOT EXISTS transfers_id ON sumzero.transfers (id);\n"
    "CREATE INDEX IF NOT EXISTS transfers_user_data_128 ON sumzero.transfers (user_data_128);\n"
    "CREATE INDEX IF NOT EXISTS transfers_time ON sumzero.transfers USING brin (time);\n"
    "CREATE TABLE IF NOT EXISTS sumzero.entries (\n"
    "  time timestamptz NOT NULL,\n"
    "  timestamp bigint NOT NULL,\n"
    "  op bigint NOT NULL,\n"
    "  transfer_id numeric(39,0) NOT NULL,\n"
    "  account_id numeric(39,0) NOT NULL,\n"
    "  ledger bigint NOT NULL,\n"
    "  code integer NOT NULL,\n"
    "  amount numeric(39,0) NOT NULL,\n"
    "  balance numeric(39,0) NOT NULL) PARTITION BY RANGE (time);\n"
    "CREATE INDEX IF NOT EXISTS entries_account ON sumzero.entries USING hash (account_id);\n"
    "CREATE INDEX IF NOT EXISTS entries_time ON sumzero.entries USING brin (time);\n"
    "CREATE TABLE IF NOT EXISTS sumzero.rejected (\n"
    "  op bigint NOT NULL,\n"
    "  index integer NOT NULL,\n"
    "  operation text NOT NULL,\n"
    "  id numeric(39,0) NOT NULL,\n"
    "  result integer NOT NULL,\n"
    "  result_name text NOT NULL,\n"
    "  timestamp bigint NOT NULL,\n"
    "  time timestamptz NOT NULL,\n"
    "  PRIMARY KEY (op, index));\n"
    "CREATE INDEX IF NOT EXISTS rejected_id ON sumzero.rejected (id);\n"
    "CREATE TABLE IF NOT EXISTS sumzero.expirations (\n"
    "  pending_id numeric(39,0) PRIMARY KEY,\n"
    "  op bigint NOT NULL,\n"
    "  time timestamptz NOT NULL,\n"
    "  timestamp bigint NOT NULL,\n"
    "  debit_account_id numeric(39,0) NOT NULL,\n"
    "  credit_account_id numeric(39,0) NOT NULL,\n"
    "  ledger bigint NOT NULL,\n"
    "  code integer NOT NULL,\n"
    "  amount numeric(39,0) NOT NULL);\n";

typedef struct postgres_buffer {
    uint8_t *data;
    size_t size;
    size_t capacity;
    uint64_t row_count;
} postgres_buffer_t;

struct sz_postgres_batch {
    sz_postgres_stream_t stream;
    uint64_t op_after;
    uint64_t op_last;
    uint64_t kafka_op;
    sz_u128 cluster_id;
    uint64_t line_count;
    int64_t time_us_min;
    int64_t time_us_max;
    postgres_buffer_t tables[TABLE_COUNT];
    bool failed; /* an encoding failed: the batch is unusable */
    char error_message[256];
};

struct sz_postgres {
    char *conninfo;
    PGconn *connection;
    /* Months (year * 12 + month - 1) known to have partitions of both tables. */
    int32_t months[POSTGRES_MONTHS_MAX];
    uint32_t month_count;
    char error_message[512];
};

static void postgres_error(sz_postgres_t *sink, const char *what, const PGresult *result) {
    const char *detail = result != NULL ? PQresultErrorMessage(result) : "";
    if (detail == NULL || detail[0] == 0) {
        detail = sink->connection != NULL ? PQerrorMessage(sink->connection) : "no connection";
    }
    snprintf(sink->error_message, sizeof(sink->error_message), "postgres: %s: %s", what, detail);
    /* libpq's messages end with a newline; a one-line error must not. */
    for (char *cursor = sink->error_message; *cursor != 0; cursor++) {
        if (*cursor == '\n' || *cursor == '\r') *cursor = ' ';
    }
}

static int postgres_failure(sz_postgres_t *sink) {
    if (sink->connection == NULL || PQstatus(sink->connection) != CONNECTION_OK) {
        return -ENOTCONN;
    }
    return -EIO;
}

/* ---- encoding ------------------------------------------------------------------------ */

static int buffer_reserve(postgres_buffer_t *buffer, size_t extra) {
    if (buffer->size + extra <= buffer->capacity) return 0;
    size_t capacity = buffer->capacity == 0 ? (1u << 16) : buffer->capacity;
    while (capacity < buffer->size + extra) capacity *= 2;
    uint8_t *data = realloc(buffer->data, capacity);
    if (data == NULL) return -ENOMEM;
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

static inline void put_u16(postgres_buffer_t *buffer, uint16_t value) {
    buffer->data[buffer->size++] = (uint8_t)(value >> 8);
    buffer->data[buffer->size++] = (uint8_t)value;
}

static inline void put_u32(postgres_buffer_t *buffer, uint32_t value) {
    uint32_t big = __builtin_bswap32(value);
    memcpy(buffer->data + buffer->size, &big, 4);
    buffer->size += 4;
}

static inline void put_u64(postgres_buffer_t *buffer, uint64_t value) {
    uint64_t big = __builtin_bswap64(value);
    memcpy(buffer->data + buffer->size, &big, 8);
    buffer->size += 8;
}

static inline void field_int8(postgres_buffer_t *buffer, int64_t value) {
    put_u32(buffer, 8);
    put_u64(buffer, (uint64_t)value);
}

static inline void field_int4(postgres_buffer_t *buffer, int32_t value) {
    put_u32(buffer, 4);
    put_u32(buffer, (uint32_t)value);
}

static inline void field_text(postgres_buffer_t *buffer, const char *text) {
    size_t length = strlen(text);
    put_u32(buffer, (uint32_t)length);
    memcpy(buffer->data + buffer->size, text, length);
    buffer->size += length;
}

/* Base-10000 digits of a u64 below 10^16, least significant first. */
static inline uint32_t digits_u64(uint64_t value, uint16_t *digits) {
    uint32_t count = 0;
    while (value != 0) {
        digits[count++] = (uint16_t)(value % 10000u);
        value /= 10000u;
    }
    return count;
}

/* NUMERIC: at most 10 base-10000 digits for a u128 (39 decimal digits). */
#define NUMERIC_FIELD_SIZE_MAX (4u + 8u + 2u * 10u)

static inline void field_numeric(postgres_buffer_t *buffer, sz_u128 value, bool negative) {
    uint16_t digits[12];
    uint32_t count = 0;
    if ((value >> 64) == 0 && (uint64_t)value < 10000000000000000ull) {
        count = digits_u64((uint64_t)value, digits);
    } else {
        /* Three chunks below 10^16 so the divisions are 64-bit but two. */
        const sz_u128 chunk = 10000000000000000ull;
        uint64_t low = (uint64_t)(value % chunk);
        sz_u128 rest = value / chunk;
        uint64_t middle = (uint64_t)(rest % chunk);
        uint64_t high = (uint64_t)(rest / chunk);
        for (uint32_t index = 0; index < 4; index++, low /= 10000u) {
            digits[count++] = (uint16_t)(low % 10000u);
        }
        if (middle != 0 || high != 0) {
            for (uint32_t index = 0; index < 4; index++, middle /= 10000u) {
                digits[count++] = (uint16_t)(middle % 10000u);
            }
        }
        if (high != 0) count += digits_u64(high, digits + count);
        while (count > 0 && digits[count - 1] == 0) count--;
    }
    /* Trailing zero digits (the lowest ones) are left out, as Postgres stores them. */
    uint32_t low_zeros = 0;
    while (low_zeros < count && digits[low_zeros] == 0) low_zeros++;
    uint32_t stored = count - low_zeros;
    put_u32(buffer, 8u + 2u * stored);
    put_u16(buffer, (uint16_t)stored);
    put_u16(buffer, (uint16_t)(count == 0 ? 0 : count - 1)); /* weight */
    put_u16(buffer, negative && count != 0 ? 0x4000 : 0x0000);
    put_u16(buffer, 0); /* dscale */
    for (uint32_t index = count; index-- > low_zeros;) put_u16(buffer, digits[index]);
}

/* TIMESTAMPTZ from ns since the Unix epoch (microsecond precision, as Postgres keeps). */
static inline int64_t time_us(uint64_t timestamp_ns) {
    return (int64_t)(timestamp_ns / 1000u) - POSTGRES_EPOCH_OFFSET_US;
}

static void batch_time(sz_postgres_batch_t *sink, int64_t value_us) {
    if (value_us < sink->time_us_min) sink->time_us_min = value_us;
    if (value_us > sink->time_us_max) sink->time_us_max = value_us;
}

/* The signed posted balance credits - debits, as sign and magnitude. */
static inline void field_signed(postgres_buffer_t *buffer, sz_u128 plus, sz_u128 minus) {
    if (plus >= minus) {
        field_numeric(buffer, plus - minus, false);
    } else {
        field_numeric(buffer, minus - plus, true);
    }
}

/* ---- the batch --------------------------------------------------------------------- */

void sz_postgres_batch_begin(sz_postgres_batch_t *sink, uint64_t op_after, sz_u128 cluster_id) {
    SZ_ASSERT(sink != NULL);
    sink->op_after = op_after;
    sink->op_last = op_after;
    sink->kafka_op = 0;
    sink->cluster_id = cluster_id;
    sink->line_count = 0;
    sink->time_us_min = INT64_MAX;
    sink->time_us_max = INT64_MIN;
    sink->failed = false;
    for (uint32_t table = 0; table < TABLE_COUNT; table++) {
        sink->tables[table].size = 0;
        sink->tables[table].row_count = 0;
    }
}

void sz_postgres_batch_kafka_op(sz_postgres_batch_t *sink, uint64_t kafka_op) {
    SZ_ASSERT(kafka_op == 0 || sink->stream == SZ_POSTGRES_STREAM_TRANSFERS);
    sink->kafka_op = kafka_op;
}

bool sz_postgres_batch_empty(const sz_postgres_batch_t *sink) {
    return sink->op_last == sink->op_after && sink->kafka_op == 0;
}

void sz_postgres_batch_stats(const sz_postgres_batch_t *sink, sz_postgres_batch_stats_t *stats_out) {
    memset(stats_out, 0, sizeof(*stats_out));
    stats_out->op_first = sink->op_after + 1;
    stats_out->op_last = sink->op_last;
    stats_out->transfer_count = sink->tables[TABLE_TRANSFERS].row_count;
    stats_out->line_count = sink->tables[TABLE_ENTRIES].row_count;
    stats_out->rejected_count = sink->tables[TABLE_REJECTED].row_count;
    stats_out->expired_count = sink->tables[TABLE_EXPIRATIONS].row_count;
    stats_out->account_count = sink->tables[TABLE_BALANCES].row_count;
    for (uint32_t table = 0; table < TABLE_COUNT; table++) {
        stats_out->byte_count += sink->tables[table].size;
    }
}

/* Timestamps are stored as bigint ns: above 2^63-1 (the year 2262) they do not fit. */
static int batch_timestamp_check(sz_postgres_batch_t *sink, uint64_t timestamp, uint64_t op) {
    if (timestamp <= (uint64_t)INT64_MAX) return 0;
    snprintf(sink->error_message, sizeof(sink->error_message),
             "op %" PRIu64 ": timestamp %" PRIu64 " ns is beyond what bigint holds (2262)", op,
             timestamp);
    sink->failed = true;
    return -ERANGE;
}

static int batch_transfers(sz_postgres_batch_t *sink, const sz_learner_op_t *op) {
    postgres_buffer_t *buffer = &sink->tables[TABLE_TRANSFERS];
    uint64_t op_number = op->header->op;
    int result = buffer_reserve(buffer, (size_t)op->transfer_count *
                                            (2u + 6u * NUMERIC_FIELD_SIZE_MAX + 2u * 32u +
                                             NUMERIC_FIELD_SIZE_MAX + 6u * 12u));
    if (result < 0) return result;
    for (uint32_t index = 0; index < op->transfer_count; index++) {
        const sz_transfer_t *transfer = &op->transfers[index];
        result = batch_timestamp_check(sink, transfer->timestamp, op_number);
        if (result < 0) return result;
        int64_t when_us = time_us(transfer->timestamp);
        batch_time(sink, when_us);
        put_u16(buffer, 15);
        field_numeric(buffer, transfer->id, false);
        field_numeric(buffer, transfer->debit_account_id, false);
        field_numeric(buffer, transfer->credit_account_id, false);
        field_numeric(buffer, transfer->amount, false);
        field_numeric(buffer, transfer->pending_id, false);
        field_numeric(buffer, transfer->user_data_128, false);
        field_numeric(buffer, transfer->user_data_64, false);
        field_int8(buffer, transfer->user_data_32);
        field_int8(buffer, transfer->timeout);
        field_int8(buffer, transfer->ledger);
        field_int4(buffer, transfer->code);
        field_int4(buffer, transfer->flags);
        field_int8(buffer, (int64_t)transfer->timestamp);
        field_int8(buffer, when_us);
        field_int8(buffer, (int64_t)op_number);
    }
    buffer->row_count += op->transfer_count;
    return 0;
}

static int batch_lines(sz_postgres_batch_t *sink, const sz_learner_op_t *op) {
    postgres_buffer_t *buffer = &sink->tables[TABLE_ENTRIES];
    int result = buffer_reserve(buffer, (size_t)op->line_count *
                                            (2u + 4u * NUMERIC_FIELD_SIZE_MAX + 5u * 12u));
    if (result < 0) return result;
    for (uint32_t index = 0; index < op->line_count; index++) {
        const sz_learner_line_t *line = &op->lines[index];
        result = batch_timestamp_check(sink, line->timestamp, op->header->op);
        if (result < 0) return result;
        int64_t when_us = time_us(line->timestamp);
        batch_time(sink, when_us);
        put_u16(buffer, 9);
        field_int8(buffer, when_us);
        field_int8(buffer, (int64_t)line->timestamp);
        field_int8(buffer, (int64_t)op->header->op);
        field_numeric(buffer, line->transfer_id, false);
        field_numeric(buffer, line->account_id, false);
        field_int8(buffer, line->ledger);
        field_int4(buffer, line->code);
        /* Debits negative, credits positive: each ledger's lines sum to zero. */
        field_numeric(buffer, line->amount, line->debit);
        field_signed(buffer, line->credits_posted, line->debits_posted);
    }
    buffer->row_count += op->line_count;
    return 0;
}

static int batch_rejected(sz_postgres_batch_t *sink, const sz_learner_op_t *op) {
    postgres_buffer_t *buffer = &sink->tables[TABLE_REJECTED];
    const sz_journal_header_t *header = op->header;
    int result = buffer_reserve(buffer, (size_t)op->result_count *
                                            (2u + 2u * NUMERIC_FIELD_SIZE_MAX + 160u));
    if (result < 0) return result;
    bool accounts = header->operation == SZ_OPERATION_CREATE_ACCOUNTS;
    for (uint32_t index = 0; index < op->result_count; index++) {
        const sz_create_result_t *rejected = &op->results[index];
        /* The ledger returned it for this body: the index is inside it. */
        SZ_ASSERT(rejected->index < header->event_count);
        /* Accounts and transfers both start with their u128 id. */
        sz_u128 id;
        memcpy(&id, (const uint8_t *)op->body + (size_t)rejected->index * SZ_JOURNAL_EVENT_SIZE,
               sizeof(id));
        uint64_t timestamp = header->timestamp + rejected->index;
        result = batch_timestamp_check(sink, timestamp, header->op);
        if (result < 0) return result;
        put_u16(buffer, 8);
        field_int8(buffer, (int64_t)header->op);
        field_int4(buffer, (int32_t)rejected->index);
        field_text(buffer, sz_operation_name(header->operation));
        field_numeric(buffer, id, false);
        field_int4(buffer, (int32_t)rejected->result);
        field_text(buffer, accounts ? sz_create_account_result_name(rejected->result)
                                    : sz_create_transfer_result_name(rejected->result));
        field_int8(buffer, (int64_t)timestamp);
        field_int8(buffer, time_us(timestamp));
    }
    buffer->row_count += op->result_count;
    return 0;
}

static int batch_created(sz_postgres_batch_t *sink, const sz_learner_op_t *op);

static int batch_expired(sz_postgres_batch_t *sink, const sz_learner_op_t *op) {
    postgres_buffer_t *buffer = &sink->tables[TABLE_EXPIRATIONS];
    uint64_t timestamp = op->header->timestamp;
    int result = batch_timestamp_check(sink, timestamp, op->header->op);
    if (result < 0) return result;
    result = buffer_reserve(buffer, (size_t)op->expired_count *
                                        (2u + 4u * NUMERIC_FIELD_SIZE_MAX + 5u * 12u));
    if (result < 0) return result;
    for (uint32_t index = 0; index < op->expired_count; index++) {
        const sz_transfer_t *pending = &op->expired[index];
        put_u16(buffer, 9);
        field_numeric(buffer, pending->id, false);
        field_int8(buffer, (int64_t)op->header->op);
        field_int8(buffer, time_us(timestamp));
        field_int8(buffer, (int64_t)timestamp);
        field_numeric(buffer, pending->debit_account_id, false);
        field_numeric(buffer, pending->credit_account_id, false);
        field_int8(buffer, pending->ledger);
        field_int4(buffer, pending->code);
        field_numeric(buffer, pending->amount, false);
    }
    buffer->row_count += op->expired_count;
    return 0;
}

int sz_postgres_batch_add_op(sz_postgres_batch_t *sink, const sz_learner_op_t *op) {
    SZ_ASSERT(sink != NULL && op != NULL && op->header != NULL);
    SZ_ASSERT(op->header->op == sink->op_last + 1);
    int result = 0;
    if (sink->stream == SZ_POSTGRES_STREAM_TRANSFERS) {
        result = batch_transfers(sink, op);
        if (result == 0) result = batch_rejected(sink, op);
        if (result == 0) result = batch_expired(sink, op);
    } else {
        result = batch_lines(sink, op);
        if (result == 0) result = batch_created(sink, op);
    }
    if (result < 0) {
        sink->failed = true;
        if (result == -ENOMEM) {
            snprintf(sink->error_message, sizeof(sink->error_message),
                     "postgres: out of memory encoding a batch");
        }
        return result;
    }
    sink->op_last = op->header->op;
    return 0;
}

/* Accounts created by an op, as created (balances zero); their later balances come with
 * the batch's balance update. Created exactly once, so a plain COPY is exact. */
static int batch_created(sz_postgres_batch_t *sink, const sz_learner_op_t *op) {
    postgres_buffer_t *buffer = &sink->tables[TABLE_ACCOUNTS];
    int result = buffer_reserve(buffer, (size_t)op->account_count *
                                            (2u + 7u * NUMERIC_FIELD_SIZE_MAX + 6u * 12u));
    if (result < 0) return result;
    for (uint32_t index = 0; index < op->account_count; index++) {
        const sz_account_t *account = &op->accounts[index];
        result = batch_timestamp_check(sink, account->timestamp, op->header->op);
        if (result < 0) return result;
        put_u16(buffer, 13);
        field_numeric(buffer, account->id, false);
        field_int8(buffer, account->ledger);
        field_int4(buffer, account->code);
        field_int4(buffer, account->flags);
        field_numeric(buffer, account->debits_pending, false);
        field_numeric(buffer, account->debits_posted, false);
        field_numeric(buffer, account->credits_pending, false);
        field_numeric(buffer, account->credits_posted, false);
        field_numeric(buffer, account->user_data_128, false);
        field_numeric(buffer, account->user_data_64, false);
        field_int8(buffer, account->user_data_32);
        field_int8(buffer, (int64_t)account->timestamp);
        field_int8(buffer, time_us(account->timestamp));
    }
    buffer->row_count += op->account_count;
    return 0;
}

int sz_postgres_batch_add_accounts(sz_postgres_batch_t *sink, const sz_account_t *accounts,
                                   uint32_t account_count) {
    SZ_ASSERT(sink->stream == SZ_POSTGRES_STREAM_ENTRIES);
    postgres_buffer_t *buffer = &sink->tables[TABLE_BALANCES];
    int result = buffer_reserve(buffer, (size_t)account_count * (2u + 5u * NUMERIC_FIELD_SIZE_MAX));
    if (result < 0) {
        sink->failed = true;
        snprintf(sink->error_message, sizeof(sink->error_message),
                 "postgres: out of memory encoding a batch");
        return result;
    }
    for (uint32_t index = 0; index < account_count; index++) {
        const sz_account_t *account = &accounts[index];
        put_u16(buffer, 5);
        field_numeric(buffer, account->id, false);
        field_numeric(buffer, account->debits_pending, false);
        field_numeric(buffer, account->debits_posted, false);
        field_numeric(buffer, account->credits_pending, false);
        field_numeric(buffer, account->credits_posted, false);
    }
    buffer->row_count += account_count;
    return 0;
}

int sz_postgres_batch_init(sz_postgres_stream_t stream, sz_postgres_batch_t **batch_out) {
    SZ_ASSERT(batch_out != NULL);
    SZ_ASSERT(stream == SZ_POSTGRES_STREAM_TRANSFERS || stream == SZ_POSTGRES_STREAM_ENTRIES);
    *batch_out = calloc(1, sizeof(**batch_out));
    if (*batch_out == NULL) return -ENOMEM;
    (*batch_out)->stream = stream;
    sz_postgres_batch_begin(*batch_out, 0, 0);
    return 0;
}

void sz_postgres_batch_free(sz_postgres_batch_t *batch) {
    if (batch == NULL) return;
    for (uint32_t table = 0; table < TABLE_COUNT; table++) free(batch->tables[table].data);
    free(batch);
}

const char *sz_postgres_batch_error_message(const sz_postgres_batch_t *batch) {
    return batch->error_message;
}

/* ---- the connection ------------------------------------------------------------------ */

int sz_postgres_open(const char *conninfo, sz_postgres_t **sink_out) {
    SZ_ASSERT(conninfo != NULL && sink_out != NULL);
    *sink_out = NULL;
    sz_postgres_t *sink = calloc(1, sizeof(*sink));
    if (sink == NULL) return -ENOMEM;
    sink->conninfo = strdup(conninfo);
    if (sink->conninfo == NULL) {
        free(sink);
        return -ENOMEM;
    }
    *sink_out = sink;
    return 0;
}

void sz_postgres_close(sz_postgres_t *sink) {
    if (sink == NULL) return;
    if (sink->connection != NULL) PQfinish(sink->connection);
    free(sink->conninfo);
    free(sink);
}

bool sz_postgres_connected(const sz_postgres_t *sink) {
    return sink->connection != NULL && PQstatus(sink->connection) == CONNECTION_OK;
}

void *sz_postgres_connection(sz_postgres_t *sink) { return sink->connection; }

const char *sz_postgres_error_message(const sz_postgres_t *sink) { return sink->error_message; }

static int postgres_exec(sz_postgres_t *sink, const char *sql, const char *what) {
    PGresult *result = PQexec(sink->connection, sql);
    ExecStatusType status = PQresultStatus(result);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        postgres_error(sink, what, result);
        PQclear(result);
        return postgres_failure(sink);
    }
    PQclear(result);
    return 0;
}

/* Notices (CREATE ... IF NOT EXISTS "already exists, skipping") are not errors. */
static void postgres_notice_ignore(void *context, const PGresult *result) {
    (void)context;
    (void)result;
}

int sz_postgres_connect(sz_postgres_t *sink) {
    SZ_ASSERT(sink != NULL);
    if (sink->connection != NULL) {
        PQfinish(sink->connection);
        sink->connection = NULL;
    }
    sink->month_count = 0;
    /* Defaults first so that the conninfo's own wins (later keywords override). A Postgres
     * that vanishes without closing the connection must not hang a writer forever: TCP
     * keepalives and a send timeout turn it into an error the writer retries. */
    const char *const keywords[] = {"connect_timeout", "application_name", "keepalives_idle",
                                    "keepalives_interval", "keepalives_count",
                                    "tcp_user_timeout", "dbname", NULL};
    const char *const values[] = {"5", "sumzero-projector", "10", "5", "3", "30000",
                                  sink->conninfo, NULL};
    sink->connection = PQconnectdbParams(keywords, values, 1);
    if (sink->connection == NULL) {
        snprintf(sink->error_message, sizeof(sink->error_message), "postgres: out of memory");
        return -ENOMEM;
    }
    if (PQstatus(sink->connection) != CONNECTION_OK) {
        postgres_error(sink, "connect", NULL);
        return -ENOTCONN;
    }
    PQsetNoticeReceiver(sink->connection, postgres_notice_ignore, NULL);
    /* Rows and position commit together, so losing the last commits in a Postgres crash
     * only moves the position back: the projector writes them again. */
    int result = postgres_exec(sink, "SET synchronous_commit = off", "set synchronous_commit");
    if (result < 0) return result;
    /* Two projectors creating the schema at once would race on the catalog: serialise. */
    result = postgres_exec(sink, "BEGIN; SELECT pg_advisory_xact_lock(7235114301);", "lock");
    if (result < 0) return result;
    result = postgres_exec(sink, postgres_schema_sql, "create the schema");
    if (result < 0) {
        (void)postgres_exec(sink, "ROLLBACK", "rollback");
        return result;
    }
    result = postgres_exec(sink, "COMMIT", "commit the schema");
    if (result < 0) return result;
    return postgres_exec(sink,
                         "CREATE TEMP TABLE IF NOT EXISTS sz_balances_stage (id numeric(39,0), "
                         "debits_pending numeric(39,0), debits_posted numeric(39,0), "
                         "credits_pending numeric(39,0), credits_posted numeric(39,0)) "
                         "ON COMMIT DELETE ROWS",
                         "create the accounts staging table");
}

int sz_postgres_query_value(sz_postgres_t *sink, const char *sql, char *value_out,
                            size_t value_size) {
    if (!sz_postgres_connected(sink)) {
        snprintf(sink->error_message, sizeof(sink->error_message), "postgres: not connected");
        return -ENOTCONN;
    }
    PGresult *result = PQexec(sink->connection, sql);
    if (PQresultStatus(result) != PGRES_TUPLES_OK || PQntuples(result) != 1 ||
        PQnfields(result) != 1) {
        postgres_error(sink, sql, result);
        PQclear(result);
        return postgres_failure(sink) == -ENOTCONN ? -ENOTCONN : -EIO;
    }
    snprintf(value_out, value_size, "%s", PQgetisnull(result, 0, 0) ? "" : PQgetvalue(result, 0, 0));
    PQclear(result);
    return 0;
}

static int postgres_parse_u64(const char *text, uint64_t *value_out) {
    sz_u128 value = 0;
    if (sz_u128_parse(text, &value) < 0 || value > UINT64_MAX) return -EINVAL;
    *value_out = (uint64_t)value;
    return 0;
}

int sz_postgres_positions_read(sz_postgres_t *sink, sz_postgres_positions_t *positions_out) {
    memset(positions_out, 0, sizeof(*positions_out));
    char text[64];
    int result = sz_postgres_query_value(
        sink, "SELECT op FROM sumzero.position WHERE name = 'postgres'", text, sizeof(text));
    if (result == 0 && postgres_parse_u64(text, &positions_out->postgres_op) < 0) result = -EINVAL;
    if (result == 0) {
        result = sz_postgres_query_value(
            sink, "SELECT op FROM sumzero.position WHERE name = 'entries'", text, sizeof(text));
    }
    if (result == 0 && postgres_parse_u64(text, &positions_out->entries_op) < 0) result = -EINVAL;
    if (result == 0) {
        result = sz_postgres_query_value(
            sink, "SELECT op FROM sumzero.position WHERE name = 'kafka'", text, sizeof(text));
    }
    if (result == 0 && postgres_parse_u64(text, &positions_out->kafka_op) < 0) result = -EINVAL;
    if (result == 0) {
        result = sz_postgres_query_value(
            sink, "SELECT cluster_id FROM sumzero.position WHERE name = 'postgres'", text,
            sizeof(text));
    }
    if (result == 0 && sz_u128_parse(text, &positions_out->cluster_id) < 0) result = -EINVAL;
    if (result == -EINVAL) {
        snprintf(sink->error_message, sizeof(sink->error_message),
                 "postgres: sumzero.position holds a value that is not a position: '%s'", text);
    }
    return result;
}

/* ---- the transaction ----------------------------------------------------------------- */

static int32_t month_of(int64_t when_us) {
    time_t seconds = (time_t)((when_us + POSTGRES_EPOCH_OFFSET_US) / 1000000);
    if (when_us + POSTGRES_EPOCH_OFFSET_US < 0 && (when_us + POSTGRES_EPOCH_OFFSET_US) % 1000000) {
        seconds--;
    }
    struct tm parts;
    gmtime_r(&seconds, &parts);
    return (int32_t)(parts.tm_year + 1900) * 12 + parts.tm_mon;
}

static bool month_known(const sz_postgres_t *sink, int32_t month) {
    for (uint32_t index = 0; index < sink->month_count; index++) {
        if (sink->months[index] == month) return true;
    }
    return false;
}

/* Months cached per transaction: beyond this, partitions are still created, only not
 * remembered (a batch spanning years of idle ledger is rare and merely slower). */
#define POSTGRES_MONTHS_CREATED_MAX 64u

/* Creates the stream's monthly partitions (transfers or entries) for every month of the
 * batch and the one after it, so a partition exists before its first row. */
static int transaction_partitions(sz_postgres_t *sink, const sz_postgres_batch_t *batch,
                                  int32_t *created, uint32_t *created_count) {
    *created_count = 0;
    if (batch->time_us_min > batch->time_us_max) return 0;
    const char *table = batch->stream == SZ_POSTGRES_STREAM_TRANSFERS ? "transfers" : "entries";
    int32_t first = month_of(batch->time_us_min);
    int32_t last = month_of(batch->time_us_max) + 1;
    for (int32_t month = first; month <= last; month++) {
        if (month_known(sink, month)) continue;
        int32_t next = month + 1;
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "CREATE TABLE IF NOT EXISTS sumzero.%s_%04d_%02d PARTITION OF sumzero.%s "
                 "FOR VALUES FROM ('%04d-%02d-01 00:00:00+00') TO ('%04d-%02d-01 00:00:00+00')",
                 table, month / 12, month % 12 + 1, table, month / 12, month % 12 + 1,
                 next / 12, next % 12 + 1);
        int result = postgres_exec(sink, sql, "create a monthly partition");
        if (result < 0) return result;
        if (*created_count < POSTGRES_MONTHS_CREATED_MAX) created[(*created_count)++] = month;
    }
    return 0;
}

static int transaction_copy(sz_postgres_t *sink, const sz_postgres_batch_t *batch,
                            postgres_table_t table) {
    const postgres_buffer_t *buffer = &batch->tables[table];
    if (buffer->row_count == 0) return 0;
    PGresult *result = PQexec(sink->connection, postgres_copy_sql[table]);
    if (PQresultStatus(result) != PGRES_COPY_IN) {
        postgres_error(sink, "start COPY", result);
        PQclear(result);
        return postgres_failure(sink);
    }
    PQclear(result);
    static const uint8_t signature[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xFF, '\r', '\n', 0,
                                          0,   0,   0,   0,   0,   0,   0,   0};
    static const uint8_t trailer[2] = {0xFF, 0xFF};
    bool sent = PQputCopyData(sink->connection, (const char *)signature, sizeof(signature)) == 1;
    for (size_t offset = 0; sent && offset < buffer->size; offset += POSTGRES_COPY_CHUNK_SIZE) {
        size_t length = buffer->size - offset;
        if (length > POSTGRES_COPY_CHUNK_SIZE) length = POSTGRES_COPY_CHUNK_SIZE;
        sent = PQputCopyData(sink->connection, (const char *)buffer->data + offset,
                             (int)length) == 1;
    }
    if (sent) sent = PQputCopyData(sink->connection, (const char *)trailer, 2) == 1;
    if (PQputCopyEnd(sink->connection, sent ? NULL : "sumzero: sending failed") != 1) {
        postgres_error(sink, "send COPY data", NULL);
        return postgres_failure(sink);
    }
    int outcome = 0;
    while ((result = PQgetResult(sink->connection)) != NULL) {
        if (PQresultStatus(result) != PGRES_COMMAND_OK && outcome == 0) {
            postgres_error(sink, postgres_copy_sql[table], result);
            outcome = postgres_failure(sink);
        }
        PQclear(result);
    }
    if (outcome == 0 && !sent) {
        postgres_error(sink, "send COPY data", NULL);
        outcome = postgres_failure(sink);
    }
    return outcome;
}

/* Locks the position row and compares it with the batch: 0 go on, 1 already committed. */
static const char *postgres_stream_name(sz_postgres_stream_t stream) {
    return stream == SZ_POSTGRES_STREAM_TRANSFERS ? "postgres" : "entries";
}

static int transaction_position_check(sz_postgres_t *sink, const sz_postgres_batch_t *batch) {
    char text[64];
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT op FROM sumzero.position WHERE name = '%s' FOR UPDATE",
             postgres_stream_name(batch->stream));
    int result = sz_postgres_query_value(sink, sql, text, sizeof(text));
    if (result < 0) return result;
    uint64_t stored = 0;
    if (postgres_parse_u64(text, &stored) < 0) {
        snprintf(sink->error_message, sizeof(sink->error_message),
                 "postgres: the stored position '%s' is not an op", text);
        return -EINVAL;
    }
    if (stored == batch->op_after) return 0;
    if (stored == batch->op_last && batch->op_last > batch->op_after) return 1;
    snprintf(sink->error_message, sizeof(sink->error_message),
             "postgres: the stored position of %s is op %" PRIu64 " but this batch follows op %"
             PRIu64 " (another projector writes this database?)",
             postgres_stream_name(batch->stream), stored, batch->op_after);
    return -ESTALE;
}

static int transaction_position_update(sz_postgres_t *sink, const sz_postgres_batch_t *batch) {
    char sql[256];
    char cluster[SZ_U128_DECIMAL_SIZE];
    snprintf(sql, sizeof(sql),
             "UPDATE sumzero.position SET op = %" PRIu64 ", cluster_id = %s, updated_at = now() "
             "WHERE name = '%s'",
             batch->op_last, sz_u128_format(batch->cluster_id, cluster),
             postgres_stream_name(batch->stream));
    int result = postgres_exec(sink, sql, "update the position");
    if (result < 0 || batch->kafka_op == 0) return result;
    snprintf(sql, sizeof(sql),
             "UPDATE sumzero.position SET op = %" PRIu64 ", cluster_id = %s, updated_at = now() "
             "WHERE name = 'kafka'",
             batch->kafka_op, cluster);
    return postgres_exec(sink, sql, "update the Kafka position");
}

static int transaction_body(sz_postgres_t *sink, const sz_postgres_batch_t *batch,
                            int32_t *created, uint32_t *created_count) {
    int result = transaction_position_check(sink, batch);
    if (result != 0) return result;
    result = transaction_partitions(sink, batch, created, created_count);
    for (uint32_t table = 0; result == 0 && table < TABLE_COUNT; table++) {
        result = transaction_copy(sink, batch, (postgres_table_t)table);
    }
    if (result == 0 && batch->tables[TABLE_BALANCES].row_count > 0) {
        /* One join instead of a probe per row; fillfactor 50 leaves room on each page so
         * these updates are HOT (no index entry per new row version). */
        result = postgres_exec(
            sink,
            "UPDATE sumzero.accounts AS a SET debits_pending = s.debits_pending, "
            "debits_posted = s.debits_posted, credits_pending = s.credits_pending, "
            "credits_posted = s.credits_posted FROM sz_balances_stage AS s WHERE a.id = s.id",
            "update the balances");
    }
    if (result == 0) result = transaction_position_update(sink, batch);
    return result;
}

int sz_postgres_commit(sz_postgres_t *sink, const sz_postgres_batch_t *batch) {
    SZ_ASSERT(sink != NULL && batch != NULL);
    if (batch->failed) {
        snprintf(sink->error_message, sizeof(sink->error_message), "%s", batch->error_message);
        return -EINVAL;
    }
    if (sz_postgres_batch_empty(batch)) return 0;
    if (!sz_postgres_connected(sink)) {
        snprintf(sink->error_message, sizeof(sink->error_message), "postgres: not connected");
        return -ENOTCONN;
    }
    int result = postgres_exec(sink, "BEGIN", "begin");
    if (result < 0) return result;
    int32_t created[POSTGRES_MONTHS_CREATED_MAX];
    uint32_t created_count = 0;
    result = transaction_body(sink, batch, created, &created_count);
    if (result != 0) {
        int failure = result;
        if (sz_postgres_connected(sink)) (void)postgres_exec(sink, "ROLLBACK", "rollback");
        /* 1: an earlier attempt committed this very batch. */
        return failure == 1 ? 0 : failure;
    }
    result = postgres_exec(sink, "COMMIT", "commit");
    if (result < 0) return result;
    for (uint32_t index = 0; index < created_count && sink->month_count < POSTGRES_MONTHS_MAX;
         index++) {
        sink->months[sink->month_count++] = created[index];
    }
    return 0;
}
