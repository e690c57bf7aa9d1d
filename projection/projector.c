/* projector.c: the projector's loop (source -> learner -> Postgres and Kafka) and its
 * check against a rebuilt ledger (projector.h).
 *
 * Threads: the projector's (source, learner, encoding, Kafka) and one writer thread per
 * Postgres stream (postgres_sink.h: transfers, and entries + accounts), each with its own
 * connection, so two Postgres backends work at once while the learner encodes the next
 * batch. Each stream has two batches: one being encoded, one being committed.
 *
 * States of the loop:
 *
 *   connect --ok--> rebuild (ops <= a stream's stored position: nothing for it)
 *      ^                |
 *      |             writing (ops > position: apply, encode, produce to Kafka)
 *      |                |  batch full / batch_ms / source idle / source ended
 *      |             hand to the stream's writer --ok--> writing (or done at the end)
 *      +--commit failed-+  (the writer: backoff, reconnect, commit the same batch again)
 *
 * connect: projector_connect(); hand: projector_flush(); commit: projector_commit(). */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "learner.h"
#include "postgres_sink.h"
#include "projector.h"

/* Dirty accounts are read from the ledger this many at a time. */
#define PROJECTOR_ACCOUNT_CHUNK 4096u
/* A source is asked for an entry with this timeout, so batches close on time. */
#define PROJECTOR_NEXT_TIMEOUT_MS 50

/* One Postgres stream: its connection, its two batches and its writer thread. */
typedef struct projector_stream {
    struct projector *projector;
    sz_postgres_stream_t kind;
    sz_postgres_t *sink;
    sz_postgres_batch_t *batches[2];
    uint64_t batch_kafka_op[2];
    uint64_t batch_timestamp[2]; /* of the batch's last op (ns since the epoch) */
    uint32_t current;            /* the batch being encoded */
    uint64_t position;           /* committed */
    pthread_t thread;
    bool started;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    const sz_postgres_batch_t *handed; /* the batch the writer is committing; NULL: idle */
    bool committing;                   /* handed a batch not yet accounted for */
    bool quit;
    int result;
    uint64_t committed_wall_ns; /* when the writer's last commit returned */
    char error[512];
} projector_stream_t;

typedef struct projector {
    const sz_projector_options_t *options;
    sz_projector_stats_t *stats;
    sz_learner_t *learner;
    sz_kafka_t *kafka;
    projector_stream_t streams[2];
    sz_postgres_positions_t positions;
    sz_u128 cluster_id;
    bool cluster_known;
    bool quitting;
    uint64_t batch_rows;
    uint64_t batch_started_ns;
    uint64_t kafka_stored_op; /* committed to Postgres */
    uint64_t kafka_handed_op; /* in a batch handed to the writer */
    uint64_t kafka_given_op;  /* the last op produced to Kafka */
    uint64_t timestamp_last;  /* of the last op applied */
    uint64_t progress_logged_ns;
    uint64_t progress_transfer_count;
    sz_account_t accounts[PROJECTOR_ACCOUNT_CHUNK];
    char *error;
    size_t error_size;
} projector_t;

static uint64_t projector_clock_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static bool projector_stopping(const projector_t *projector) {
    if (__atomic_load_n(&projector->quitting, __ATOMIC_ACQUIRE)) return true;
    return projector->options->stop != NULL && *projector->options->stop != 0;
}

static void projector_log(const projector_t *projector, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
static void projector_log(const projector_t *projector, const char *format, ...) {
    if (projector->options->log == NULL) return;
    va_list arguments;
    va_start(arguments, format);
    vfprintf(projector->options->log, format, arguments);
    va_end(arguments);
    fputc('\n', projector->options->log);
    fflush(projector->options->log);
}

/* Sleeps the backoff, in slices so a stop request is seen within 10 ms. */
static void projector_backoff(projector_t *projector, uint32_t *backoff_ms) {
    uint32_t slept_ms = 0;
    while (slept_ms < *backoff_ms && !projector_stopping(projector)) {
        struct timespec pause = {.tv_nsec = 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
        slept_ms += 10;
    }
    uint32_t retry_ms_max = projector->options->retry_ms_max != 0
                                ? projector->options->retry_ms_max
                                : SZ_PROJECTOR_RETRY_MS_DEFAULT;
    *backoff_ms = *backoff_ms * 2 > retry_ms_max ? retry_ms_max : *backoff_ms * 2;
}

static void projector_retried(projector_t *projector) {
    __atomic_fetch_add(&projector->stats->retry_count, 1, __ATOMIC_RELEASE);
}

static const char *projector_stream_name(const projector_stream_t *stream) {
    return stream->kind == SZ_POSTGRES_STREAM_TRANSFERS ? "transfers" : "entries";
}

/* Connects both streams (retrying) and reads the stored positions. 1: stopped first. */
static int projector_connect(projector_t *projector) {
    uint32_t backoff_ms = 50;
    for (uint32_t index = 0; index < 2;) {
        sz_postgres_t *sink = projector->streams[index].sink;
        int result = sz_postgres_connect(sink);
        if (result == 0 && index == 0) result = sz_postgres_positions_read(sink, &projector->positions);
        if (result == 0) {
            index++;
            continue;
        }
        if (result != -ENOTCONN && result != -EIO) {
            snprintf(projector->error, projector->error_size, "%s", sz_postgres_error_message(sink));
            return result;
        }
        projector_retried(projector);
        projector_log(projector, "level=warn msg=postgres_unavailable retry_ms=%u error=\"%s\"",
                      backoff_ms, sz_postgres_error_message(sink));
        if (projector_stopping(projector)) return 1;
        projector_backoff(projector, &backoff_ms);
    }
    return 0;
}

/* The writer thread's work: commits one batch, retrying with backoff. 1: stopped first. */
static int projector_commit(projector_stream_t *stream, const sz_postgres_batch_t *batch) {
    projector_t *projector = stream->projector;
    sz_postgres_batch_stats_t stats;
    sz_postgres_batch_stats(batch, &stats);
    uint32_t backoff_ms = 50;
    for (;;) {
        int result = sz_postgres_commit(stream->sink, batch);
        if (result == 0) return 0;
        if (result != -ENOTCONN && result != -EIO) {
            snprintf(stream->error, sizeof(stream->error), "%s",
                     sz_postgres_error_message(stream->sink));
            return result;
        }
        projector_retried(projector);
        projector_log(projector, "level=warn msg=commit_failed stream=%s op_first=%" PRIu64
                      " op_last=%" PRIu64 " retry_ms=%u error=\"%s\"",
                      projector_stream_name(stream), stats.op_first, stats.op_last, backoff_ms,
                      sz_postgres_error_message(stream->sink));
        if (projector_stopping(projector)) return 1;
        projector_backoff(projector, &backoff_ms);
        if (sz_postgres_connected(stream->sink)) continue;
        result = sz_postgres_connect(stream->sink);
        if (result < 0 && result != -ENOTCONN && result != -EIO) {
            snprintf(stream->error, sizeof(stream->error), "%s",
                     sz_postgres_error_message(stream->sink));
            return result;
        }
    }
}

/* A writer thread: commits each batch handed to it. */
static void *projector_writer(void *raw) {
    projector_stream_t *stream = raw;
    pthread_mutex_lock(&stream->mutex);
    for (;;) {
        while (stream->handed == NULL && !stream->quit) {
            pthread_cond_wait(&stream->cond, &stream->mutex);
        }
        if (stream->handed == NULL) break;
        const sz_postgres_batch_t *batch = stream->handed;
        pthread_mutex_unlock(&stream->mutex);
        uint64_t started_ns = projector_clock_ns();
        int result = projector_commit(stream, batch);
        __atomic_fetch_add(&stream->projector->stats->commit_ns[stream->kind],
                           projector_clock_ns() - started_ns, __ATOMIC_RELEASE);
        struct timespec wall;
        clock_gettime(CLOCK_REALTIME, &wall);
        pthread_mutex_lock(&stream->mutex);
        stream->result = result;
        stream->committed_wall_ns = (uint64_t)wall.tv_sec * 1000000000ull + (uint64_t)wall.tv_nsec;
        stream->handed = NULL;
        pthread_cond_broadcast(&stream->cond);
    }
    pthread_mutex_unlock(&stream->mutex);
    return NULL;
}

/* A line per second while writing: the position, how far it was behind the leader when it
 * committed (the op's timestamp is the leader's clock when it applied the op), and the
 * rate. */
static void projector_progress(projector_t *projector, uint64_t timestamp_ns, uint64_t wall_ns) {
    uint64_t now_ns = projector_clock_ns();
    if (now_ns - projector->progress_logged_ns < 1000000000ull) return;
    double seconds = (double)(now_ns - projector->progress_logged_ns) / 1e9;
    uint64_t transfers = projector->stats->transfer_count - projector->progress_transfer_count;
    projector_log(projector,
                  "level=info msg=progress position=%" PRIu64 " applied=%" PRIu64
                  " lag_ms=%.1f transfers_per_second=%.0f",
                  projector->stats->op_position, projector->stats->op_last,
                  wall_ns > timestamp_ns ? (double)(wall_ns - timestamp_ns) / 1e6 : 0.0,
                  projector->progress_logged_ns != 0 ? (double)transfers / seconds : 0.0);
    projector->progress_logged_ns = now_ns;
    projector->progress_transfer_count = projector->stats->transfer_count;
}

/* Waits until the stream's writer has finished the batch it was given, and accounts for
 * it. Returns its result: 0, 1 (stopped) or a negative errno. */
static int projector_writer_wait(projector_stream_t *stream) {
    projector_t *projector = stream->projector;
    pthread_mutex_lock(&stream->mutex);
    while (stream->handed != NULL) pthread_cond_wait(&stream->cond, &stream->mutex);
    int result = stream->result;
    uint64_t committed_wall_ns = stream->committed_wall_ns;
    stream->result = 0;
    pthread_mutex_unlock(&stream->mutex);
    if (!stream->committing) return result;
    stream->committing = false;
    if (result != 0) {
        if (result < 0) snprintf(projector->error, projector->error_size, "%s", stream->error);
        return result;
    }
    uint32_t done = stream->current ^ 1;
    sz_postgres_batch_stats_t batch;
    sz_postgres_batch_stats(stream->batches[done], &batch);
    stream->position = batch.op_last;
    if (stream->kind == SZ_POSTGRES_STREAM_TRANSFERS) {
        if (stream->batch_kafka_op[done] != 0) projector->kafka_stored_op = stream->batch_kafka_op[done];
        projector->stats->op_written_count += batch.op_last - (batch.op_first - 1);
        projector->stats->transfer_count += batch.transfer_count;
        projector->stats->rejected_count += batch.rejected_count;
        projector->stats->expired_count += batch.expired_count;
        projector->stats->batch_count++;
    } else {
        projector->stats->line_count += batch.line_count;
    }
    uint64_t transfers_position = projector->streams[0].position;
    uint64_t entries_position = projector->streams[1].position;
    projector->stats->op_position = transfers_position < entries_position ? transfers_position
                                                                          : entries_position;
    projector_progress(projector, stream->batch_timestamp[done], committed_wall_ns);
    return 0;
}

static int projector_batch_accounts(projector_t *projector, sz_postgres_batch_t *batch) {
    uint32_t count = sz_learner_dirty_count(projector->learner);
    const sz_u128 *ids = sz_learner_dirty_ids(projector->learner);
    const sz_ledger_t *ledger = sz_learner_ledger(projector->learner);
    for (uint32_t offset = 0; offset < count; offset += PROJECTOR_ACCOUNT_CHUNK) {
        uint32_t chunk = count - offset;
        if (chunk > PROJECTOR_ACCOUNT_CHUNK) chunk = PROJECTOR_ACCOUNT_CHUNK;
        uint32_t found = sz_ledger_lookup_accounts(ledger, ids + offset, chunk,
                                                   projector->accounts);
        /* Dirty ids are of accounts the ledger created or changed. */
        SZ_ASSERT(found == chunk);
        int result = sz_postgres_batch_add_accounts(batch, projector->accounts, found);
        if (result < 0) {
            snprintf(projector->error, projector->error_size, "%s",
                     sz_postgres_batch_error_message(batch));
            return result;
        }
    }
    return 0;
}

/* Hands the stream's current batch to its writer (after the previous one is done). */
static int projector_hand(projector_stream_t *stream, uint64_t kafka_op) {
    projector_t *projector = stream->projector;
    sz_postgres_batch_t *batch = stream->batches[stream->current];
    if (stream->kind == SZ_POSTGRES_STREAM_TRANSFERS) sz_postgres_batch_kafka_op(batch, kafka_op);
    if (sz_postgres_batch_empty(batch)) return 0;
    if (stream->kind == SZ_POSTGRES_STREAM_ENTRIES) {
        int result = projector_batch_accounts(projector, batch);
        if (result < 0) return result;
    }
    int result = projector_writer_wait(stream);
    if (result != 0) return result;
    stream->batch_kafka_op[stream->current] = kafka_op;
    stream->batch_timestamp[stream->current] = projector->timestamp_last;
    sz_postgres_batch_stats_t stats;
    sz_postgres_batch_stats(batch, &stats);
    pthread_mutex_lock(&stream->mutex);
    stream->handed = batch;
    stream->committing = true;
    pthread_cond_broadcast(&stream->cond);
    pthread_mutex_unlock(&stream->mutex);
    stream->current ^= 1;
    sz_postgres_batch_begin(stream->batches[stream->current], stats.op_last, projector->cluster_id);
    return 0;
}

/* Closes the current batches (the entries stream adding the accounts the batch changed, as
 * the ledger has them now) and hands them to the writers; with wait, also waits for them.
 * Returns 0, 1 (stopped) or a negative errno. */
static int projector_flush(projector_t *projector, bool wait) {
    uint64_t kafka_op = 0;
    if (projector->kafka != NULL) {
        uint64_t delivered = sz_kafka_delivered_op(projector->kafka);
        if (delivered > projector->kafka_handed_op) kafka_op = delivered;
    }
    for (uint32_t index = 0; index < 2; index++) {
        int result = projector_hand(&projector->streams[index], kafka_op);
        if (result != 0) return result;
    }
    if (kafka_op != 0) projector->kafka_handed_op = kafka_op;
    sz_learner_dirty_clear(projector->learner);
    projector->batch_rows = 0;
    projector->batch_started_ns = projector_clock_ns();
    for (uint32_t index = 0; wait && index < 2; index++) {
        int result = projector_writer_wait(&projector->streams[index]);
        if (result != 0) return result;
    }
    return 0;
}

static int projector_cluster_check(projector_t *projector, const sz_journal_header_t *header) {
    if (projector->cluster_known) return 0;
    projector->cluster_id = header->cluster_id;
    projector->cluster_known = true;
    if (projector->positions.cluster_id != 0 && projector->positions.cluster_id != header->cluster_id) {
        char stored[SZ_U128_DECIMAL_SIZE], source[SZ_U128_DECIMAL_SIZE];
        snprintf(projector->error, projector->error_size,
                 "postgres holds the projection of cluster %s, the source is cluster %s",
                 sz_u128_format(projector->positions.cluster_id, stored),
                 sz_u128_format(header->cluster_id, source));
        return -ESTALE;
    }
    for (uint32_t index = 0; index < 2; index++) {
        projector_stream_t *stream = &projector->streams[index];
        sz_postgres_batch_begin(stream->batches[stream->current], stream->position,
                                header->cluster_id);
    }
    return 0;
}

/* Applies one entry and hands its rows to the sinks that still need them. */
static int projector_entry(projector_t *projector, const sz_journal_header_t *header,
                           const void *body) {
    int result = projector_cluster_check(projector, header);
    if (result < 0) return result;
    bool transfers_want = header->op > projector->streams[0].position;
    bool entries_want = header->op > projector->streams[1].position;
    bool kafka_wants = projector->kafka != NULL && header->op > projector->positions.kafka_op;
    if ((transfers_want || entries_want) && projector->stats->write_ns == 0) {
        projector->stats->write_ns = projector_clock_ns();
        projector->stats->rebuild_ns = projector->stats->write_ns - projector->stats->rebuild_ns;
        projector->batch_started_ns = projector->stats->write_ns;
    }
    sz_learner_op_t op;
    sz_journal_problem_t problem;
    for (;;) {
        result = sz_learner_apply(projector->learner, header, body,
                                  transfers_want || entries_want || kafka_wants, &op, &problem);
        if (result != -ENOBUFS) break;
        result = projector_flush(projector, false); /* the dirty set is full: write it out */
        if (result != 0) return result < 0 ? result : -EINTR;
    }
    if (result < 0) {
        snprintf(projector->error, projector->error_size, "%s", problem.reason);
        return result;
    }
    projector->stats->op_last = header->op;
    projector->timestamp_last = header->timestamp;
    /* Accounts of ops at or below the entries position are in Postgres as they were then. */
    if (!entries_want) sz_learner_dirty_clear(projector->learner);
    if (kafka_wants) {
        /* The stored transfers carry what applied (clamped amounts, what posts inherit). */
        result = header->operation == SZ_OPERATION_EXPIRE_PENDING
                     ? sz_kafka_produce_expired(projector->kafka, header, op.expired,
                                                op.expired_count)
                     : sz_kafka_produce_op_stored(projector->kafka, header, body, op.transfers,
                                                  op.transfer_count, op.results, op.result_count);
        if (result < 0) {
            snprintf(projector->error, projector->error_size, "%s",
                     sz_kafka_error_message(projector->kafka));
            return result;
        }
        projector->kafka_given_op = header->op;
    }
    for (uint32_t index = 0; index < 2; index++) {
        if (!(index == 0 ? transfers_want : entries_want)) continue;
        projector_stream_t *stream = &projector->streams[index];
        sz_postgres_batch_t *batch = stream->batches[stream->current];
        result = sz_postgres_batch_add_op(batch, &op);
        if (result < 0) {
            snprintf(projector->error, projector->error_size, "%s",
                     sz_postgres_batch_error_message(batch));
            return result;
        }
    }
    projector->batch_rows += op.transfer_count + op.line_count + op.result_count + op.expired_count;
    return 0;
}

static bool projector_batch_due(const projector_t *projector, bool idle) {
    const sz_projector_options_t *options = projector->options;
    uint32_t rows_max = options->batch_rows_max != 0 ? options->batch_rows_max
                                                     : SZ_PROJECTOR_BATCH_ROWS_DEFAULT;
    uint32_t ms_max = options->batch_ms_max != 0 ? options->batch_ms_max
                                                 : SZ_PROJECTOR_BATCH_MS_DEFAULT;
    if (projector->batch_rows >= rows_max) return true;
    if (idle) return true;
    return projector_clock_ns() - projector->batch_started_ns >= (uint64_t)ms_max * 1000000u;
}

static int projector_open(projector_t *projector) {
    const sz_projector_options_t *options = projector->options;
    int result = sz_learner_init(&options->ledger, &projector->learner);
    if (result < 0) {
        snprintf(projector->error, projector->error_size,
                 "cannot reserve the projector's ledger: %s", strerror(-result));
        return result;
    }
    for (uint32_t index = 0; index < 2; index++) {
        projector_stream_t *stream = &projector->streams[index];
        stream->projector = projector;
        stream->kind = index == 0 ? SZ_POSTGRES_STREAM_TRANSFERS : SZ_POSTGRES_STREAM_ENTRIES;
        result = sz_postgres_open(options->conninfo, &stream->sink);
        for (uint32_t batch = 0; result == 0 && batch < 2; batch++) {
            result = sz_postgres_batch_init(stream->kind, &stream->batches[batch]);
        }
        if (result < 0) {
            snprintf(projector->error, projector->error_size, "out of memory");
            return result;
        }
    }
    result = projector_connect(projector);
    if (result != 0) return result;
    projector->streams[0].position = projector->positions.postgres_op;
    projector->streams[1].position = projector->positions.entries_op;
    for (uint32_t index = 0; index < 2; index++) {
        projector_stream_t *stream = &projector->streams[index];
        pthread_mutex_init(&stream->mutex, NULL);
        pthread_cond_init(&stream->cond, NULL);
        result = -pthread_create(&stream->thread, NULL, projector_writer, stream);
        if (result < 0) {
            pthread_mutex_destroy(&stream->mutex);
            pthread_cond_destroy(&stream->cond);
            snprintf(projector->error, projector->error_size, "cannot start a writer thread");
            return result;
        }
        stream->started = true;
    }
    projector->kafka_stored_op = projector->positions.kafka_op;
    projector->kafka_handed_op = projector->positions.kafka_op;
    uint64_t position = projector->positions.postgres_op < projector->positions.entries_op
                            ? projector->positions.postgres_op
                            : projector->positions.entries_op;
    projector->stats->op_resumed = position;
    projector->stats->op_position = position;
    projector_log(projector,
                  "level=info msg=resuming postgres_op=%" PRIu64 " entries_op=%" PRIu64
                  " kafka_op=%" PRIu64,
                  projector->positions.postgres_op, projector->positions.entries_op,
                  projector->positions.kafka_op);
    if (options->kafka != NULL) {
        result = sz_kafka_open(options->kafka, &projector->kafka, projector->error,
                               projector->error_size);
        if (result < 0) return result;
    }
    return 0;
}

static void projector_close(projector_t *projector) {
    __atomic_store_n(&projector->quitting, true, __ATOMIC_RELEASE);
    for (uint32_t index = 0; index < 2; index++) {
        projector_stream_t *stream = &projector->streams[index];
        if (stream->started) {
            pthread_mutex_lock(&stream->mutex);
            stream->quit = true;
            pthread_cond_broadcast(&stream->cond);
            pthread_mutex_unlock(&stream->mutex);
            pthread_join(stream->thread, NULL);
            pthread_mutex_destroy(&stream->mutex);
            pthread_cond_destroy(&stream->cond);
        }
        for (uint32_t batch = 0; batch < 2; batch++) sz_postgres_batch_free(stream->batches[batch]);
        sz_postgres_close(stream->sink);
    }
    sz_kafka_close(projector->kafka, 5000);
    sz_learner_deinit(projector->learner);
}

static bool projector_pending(const projector_t *projector) {
    for (uint32_t index = 0; index < 2; index++) {
        const projector_stream_t *stream = &projector->streams[index];
        if (!sz_postgres_batch_empty(stream->batches[stream->current])) return true;
    }
    return projector->kafka != NULL &&
           sz_kafka_delivered_op(projector->kafka) > projector->kafka_handed_op;
}

/* Before the last commit: lets Kafka deliver what was produced (up to 10 s), so the
 * position stored with it is the last op and a restart sends nothing again. */
static void projector_kafka_drain(projector_t *projector) {
    if (projector->kafka == NULL) return;
    uint64_t deadline_ns = projector_clock_ns() + 10000000000ull;
    while (sz_kafka_delivered_op(projector->kafka) < projector->kafka_given_op &&
           projector_clock_ns() < deadline_ns) {
        if (sz_kafka_poll(projector->kafka, 50) < 0) return;
    }
}

static int projector_loop(projector_t *projector) {
    const sz_projector_options_t *options = projector->options;
    for (;;) {
        if (projector_stopping(projector)) {
            projector_kafka_drain(projector);
            int stopped = projector_flush(projector, true);
            return stopped == 1 ? 0 : stopped;
        }
        const sz_journal_header_t *header = NULL;
        const void *body = NULL;
        int result = sz_source_next(options->source, &header, &body, PROJECTOR_NEXT_TIMEOUT_MS);
        bool idle = false;
        if (result == 1) {
            result = projector_entry(projector, header, body);
            if (result < 0) return result;
        } else if (result == 0 || (result == -ENODATA && options->follow)) {
            idle = true;
            if (result == -ENODATA) {
                struct timespec pause = {.tv_nsec = PROJECTOR_NEXT_TIMEOUT_MS * 1000000};
                nanosleep(&pause, NULL);
            }
        } else if (result == -ENODATA) {
            projector_kafka_drain(projector);
            result = projector_flush(projector, true);
            return result == 1 ? 0 : result;
        } else {
            snprintf(projector->error, projector->error_size, "%s",
                     options->source->error_message);
            return result;
        }
        if (projector->kafka != NULL) {
            result = sz_kafka_poll(projector->kafka, 0);
            if (result < 0) {
                snprintf(projector->error, projector->error_size, "%s",
                         sz_kafka_error_message(projector->kafka));
                return result;
            }
        }
        if (projector_pending(projector) && projector_batch_due(projector, idle)) {
            result = projector_flush(projector, false);
            if (result == 1) return 0;
            if (result < 0) return result;
        }
    }
}

int sz_projector_run(const sz_projector_options_t *options, sz_projector_stats_t *stats_out,
                     char *error_out, size_t error_size) {
    SZ_ASSERT(options != NULL && options->source != NULL && options->conninfo != NULL);
    SZ_ASSERT(stats_out != NULL && error_out != NULL);
    memset(stats_out, 0, sizeof(*stats_out));
    error_out[0] = 0;
    projector_t *projector = calloc(1, sizeof(*projector));
    if (projector == NULL) {
        snprintf(error_out, error_size, "out of memory");
        return -ENOMEM;
    }
    projector->options = options;
    projector->stats = stats_out;
    projector->error = error_out;
    projector->error_size = error_size;
    stats_out->rebuild_ns = projector_clock_ns();
    int result = projector_open(projector);
    if (result == 0) result = projector_loop(projector);
    if (result == 1) result = 0;
    uint64_t now_ns = projector_clock_ns();
    if (stats_out->write_ns != 0) {
        stats_out->write_ns = now_ns - stats_out->write_ns;
    } else {
        stats_out->rebuild_ns = now_ns - stats_out->rebuild_ns;
    }
    projector_close(projector);
    free(projector);
    return result;
}
