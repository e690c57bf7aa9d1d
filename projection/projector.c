/* projector.c: the projector's loop (source -> learner -> Postgres and Kafka) and its
 * check against a rebuilt ledger (projector.h).
 *
 * States of the loop:
 *
 *   connect --ok--> rebuild (ops <= stored position: apply only)
 *      ^                |
 *      |             writing (ops > position: apply, encode, produce to Kafka)
 *      |                |  batch full / batch_ms / source idle / source ended
 *      |             commit --ok--> writing (or done at the end of the source)
 *      +--failed--------+  (backoff, reconnect, commit the same batch again)
 *
 * connect: projector_connect(); commit: projector_flush(); the rest: sz_projector_run(). */
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

typedef struct projector {
    const sz_projector_options_t *options;
    sz_projector_stats_t *stats;
    sz_learner_t *learner;
    sz_postgres_t *sink;
    sz_kafka_t *kafka;
    sz_postgres_positions_t positions;
    sz_u128 cluster_id;
    bool cluster_known;
    uint64_t batch_rows;
    uint64_t batch_started_ns;
    uint64_t kafka_stored_op; /* committed to Postgres */
    uint64_t kafka_handed_op; /* in a batch handed to the writer */
    /* Two batches: the learner encodes one while the writer thread commits the other. */
    sz_postgres_batch_t *batches[2];
    uint64_t batch_kafka_op[2];
    uint64_t batch_timestamp[2];   /* of the batch's last op (ns since the epoch) */
    uint64_t timestamp_last;       /* of the last op applied */
    uint64_t progress_logged_ns;   /* the last progress line */
    uint64_t progress_transfer_count;
    uint32_t current;
    pthread_t writer;
    bool writer_started;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    const sz_postgres_batch_t *handed; /* the batch the writer is committing; NULL: idle */
    bool committing;                   /* handed a batch not yet accounted for */
    bool writer_quit;
    int writer_result;
    char writer_error[512];
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
    if (__atomic_load_n(&projector->writer_quit, __ATOMIC_ACQUIRE)) return true;
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

/* Connects (retrying) and reads the stored positions. 1: stopped before it worked. */
static int projector_connect(projector_t *projector) {
    uint32_t backoff_ms = 50;
    for (;;) {
        int result = sz_postgres_connect(projector->sink);
        if (result == 0) result = sz_postgres_positions_read(projector->sink, &projector->positions);
        if (result == 0) return 0;
        if (result != -ENOTCONN && result != -EIO) {
            snprintf(projector->error, projector->error_size, "%s",
                     sz_postgres_error_message(projector->sink));
            return result;
        }
        projector_retried(projector);
        projector_log(projector, "level=warn msg=postgres_unavailable retry_ms=%u error=\"%s\"",
                      backoff_ms, sz_postgres_error_message(projector->sink));
        if (projector_stopping(projector)) return 1;
        projector_backoff(projector, &backoff_ms);
    }
}

/* The writer thread's work: commits one batch, retrying with backoff. 1: stopped first. */
static int projector_commit(projector_t *projector, const sz_postgres_batch_t *batch) {
    sz_postgres_batch_stats_t stats;
    sz_postgres_batch_stats(batch, &stats);
    uint32_t backoff_ms = 50;
    for (;;) {
        int result = sz_postgres_commit(projector->sink, batch);
        if (result == 0) return 0;
        if (result != -ENOTCONN && result != -EIO) {
            snprintf(projector->writer_error, sizeof(projector->writer_error), "%s",
                     sz_postgres_error_message(projector->sink));
            return result;
        }
        projector_retried(projector);
        projector_log(projector, "level=warn msg=commit_failed op_first=%" PRIu64
                      " op_last=%" PRIu64 " retry_ms=%u error=\"%s\"",
                      stats.op_first, stats.op_last, backoff_ms,
                      sz_postgres_error_message(projector->sink));
        if (projector_stopping(projector)) return 1;
        projector_backoff(projector, &backoff_ms);
        if (sz_postgres_connected(projector->sink)) continue;
        result = sz_postgres_connect(projector->sink);
        if (result < 0 && result != -ENOTCONN && result != -EIO) {
            snprintf(projector->writer_error, sizeof(projector->writer_error), "%s",
                     sz_postgres_error_message(projector->sink));
            return result;
        }
        if (result < 0) {
            projector_log(projector, "level=warn msg=postgres_unavailable error=\"%s\"",
                          sz_postgres_error_message(projector->sink));
        }
    }
}

/* The writer thread: commits each batch handed to it (Postgres works on one core while
 * the learner encodes the next batch on the other). */
static void *projector_writer(void *raw) {
    projector_t *projector = raw;
    pthread_mutex_lock(&projector->mutex);
    for (;;) {
        while (projector->handed == NULL && !projector->writer_quit) {
            pthread_cond_wait(&projector->cond, &projector->mutex);
        }
        if (projector->handed == NULL) break;
        const sz_postgres_batch_t *batch = projector->handed;
        pthread_mutex_unlock(&projector->mutex);
        int result = projector_commit(projector, batch);
        pthread_mutex_lock(&projector->mutex);
        projector->writer_result = result;
        projector->handed = NULL;
        pthread_cond_broadcast(&projector->cond);
    }
    pthread_mutex_unlock(&projector->mutex);
    return NULL;
}

/* A line per second while writing: the position, how far it is behind the wall clock
 * (the op's timestamp is the leader's clock when it committed), and the rate. */
static void projector_progress(projector_t *projector, uint64_t timestamp_ns) {
    uint64_t now_ns = projector_clock_ns();
    if (now_ns - projector->progress_logged_ns < 1000000000ull) return;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    uint64_t wall_ns = (uint64_t)wall.tv_sec * 1000000000ull + (uint64_t)wall.tv_nsec;
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

/* Waits until the writer has finished the batch it was given, and accounts for it.
 * Returns its result: 0, 1 (stopped) or a negative errno. */
static int projector_writer_wait(projector_t *projector) {
    pthread_mutex_lock(&projector->mutex);
    while (projector->handed != NULL) pthread_cond_wait(&projector->cond, &projector->mutex);
    int result = projector->writer_result;
    projector->writer_result = 0;
    pthread_mutex_unlock(&projector->mutex);
    if (!projector->committing) return result;
    projector->committing = false;
    if (result != 0) {
        if (result < 0) snprintf(projector->error, projector->error_size, "%s", projector->writer_error);
        return result;
    }
    sz_postgres_batch_stats_t batch;
    sz_postgres_batch_stats(projector->batches[projector->current ^ 1], &batch);
    uint64_t kafka_op = projector->batch_kafka_op[projector->current ^ 1];
    if (kafka_op != 0) projector->kafka_stored_op = kafka_op;
    projector->stats->op_position = batch.op_last;
    projector->stats->op_written_count += batch.op_last - (batch.op_first - 1);
    projector->stats->transfer_count += batch.transfer_count;
    projector->stats->line_count += batch.line_count;
    projector->stats->rejected_count += batch.rejected_count;
    projector->stats->expired_count += batch.expired_count;
    projector->stats->batch_count++;
    projector_progress(projector, projector->batch_timestamp[projector->current ^ 1]);
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

/* Closes the current batch (adding the accounts it changed, as the ledger has them now),
 * waits for the writer to finish the previous one, and hands it this one. With wait, also
 * waits for this one. Returns 0, 1 (stopped) or a negative errno. */
static int projector_flush(projector_t *projector, bool wait) {
    sz_postgres_batch_t *batch = projector->batches[projector->current];
    uint64_t kafka_op = 0;
    if (projector->kafka != NULL) {
        uint64_t delivered = sz_kafka_delivered_op(projector->kafka);
        if (delivered > projector->kafka_handed_op) kafka_op = delivered;
    }
    sz_postgres_batch_kafka_op(batch, kafka_op);
    if (!sz_postgres_batch_empty(batch)) {
        int result = projector_batch_accounts(projector, batch);
        if (result < 0) return result;
        result = projector_writer_wait(projector);
        if (result != 0) return result;
        if (kafka_op != 0) projector->kafka_handed_op = kafka_op;
        projector->batch_kafka_op[projector->current] = kafka_op;
        projector->batch_timestamp[projector->current] = projector->timestamp_last;
        sz_postgres_batch_stats_t stats;
        sz_postgres_batch_stats(batch, &stats);
        pthread_mutex_lock(&projector->mutex);
        projector->handed = batch;
        projector->committing = true;
        pthread_cond_broadcast(&projector->cond);
        pthread_mutex_unlock(&projector->mutex);
        projector->current ^= 1;
        sz_postgres_batch_begin(projector->batches[projector->current], stats.op_last,
                                projector->cluster_id);
        sz_learner_dirty_clear(projector->learner);
        projector->batch_rows = 0;
    }
    projector->batch_started_ns = projector_clock_ns();
    return wait ? projector_writer_wait(projector) : 0;
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
    sz_postgres_batch_begin(projector->batches[projector->current],
                            projector->positions.postgres_op, header->cluster_id);
    return 0;
}

/* Applies one entry and hands its rows to the sinks that still need them. */
static int projector_entry(projector_t *projector, const sz_journal_header_t *header,
                           const void *body) {
    int result = projector_cluster_check(projector, header);
    if (result < 0) return result;
    bool postgres_wants = header->op > projector->positions.postgres_op;
    bool kafka_wants = projector->kafka != NULL && header->op > projector->positions.kafka_op;
    if (postgres_wants && projector->stats->write_ns == 0) {
        projector->stats->write_ns = projector_clock_ns();
        projector->stats->rebuild_ns = projector->stats->write_ns - projector->stats->rebuild_ns;
        projector->batch_started_ns = projector->stats->write_ns;
    }
    sz_learner_op_t op;
    sz_journal_problem_t problem;
    for (;;) {
        result = sz_learner_apply(projector->learner, header, body, postgres_wants || kafka_wants,
                                  &op, &problem);
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
    /* Ops at or below the position are in Postgres with the accounts as they were then. */
    if (!postgres_wants) sz_learner_dirty_clear(projector->learner);
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
    }
    if (!postgres_wants) return 0;
    sz_postgres_batch_t *batch = projector->batches[projector->current];
    result = sz_postgres_batch_add_op(batch, &op);
    if (result < 0) {
        snprintf(projector->error, projector->error_size, "%s",
                 sz_postgres_batch_error_message(batch));
        return result;
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
    result = sz_postgres_open(options->conninfo, &projector->sink);
    if (result < 0) {
        snprintf(projector->error, projector->error_size, "out of memory");
        return result;
    }
    for (uint32_t index = 0; index < 2; index++) {
        result = sz_postgres_batch_init(&projector->batches[index]);
        if (result < 0) {
            snprintf(projector->error, projector->error_size, "out of memory");
            return result;
        }
    }
    result = projector_connect(projector);
    if (result != 0) return result;
    pthread_mutex_init(&projector->mutex, NULL);
    pthread_cond_init(&projector->cond, NULL);
    result = -pthread_create(&projector->writer, NULL, projector_writer, projector);
    if (result < 0) {
        snprintf(projector->error, projector->error_size, "cannot start the writer thread");
        return result;
    }
    projector->writer_started = true;
    projector->kafka_stored_op = projector->positions.kafka_op;
    projector->kafka_handed_op = projector->positions.kafka_op;
    projector->stats->op_resumed = projector->positions.postgres_op;
    projector->stats->op_position = projector->positions.postgres_op;
    projector_log(projector, "level=info msg=resuming postgres_op=%" PRIu64 " kafka_op=%" PRIu64,
                  projector->positions.postgres_op, projector->positions.kafka_op);
    if (options->kafka != NULL) {
        result = sz_kafka_open(options->kafka, &projector->kafka, projector->error,
                               projector->error_size);
        if (result < 0) return result;
    }
    return 0;
}

static void projector_close(projector_t *projector) {
    if (projector->writer_started) {
        pthread_mutex_lock(&projector->mutex);
        __atomic_store_n(&projector->writer_quit, true, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&projector->cond);
        pthread_mutex_unlock(&projector->mutex);
        pthread_join(projector->writer, NULL);
        pthread_mutex_destroy(&projector->mutex);
        pthread_cond_destroy(&projector->cond);
    }
    for (uint32_t index = 0; index < 2; index++) sz_postgres_batch_free(projector->batches[index]);
    sz_kafka_close(projector->kafka, 5000);
    sz_postgres_close(projector->sink);
    sz_learner_deinit(projector->learner);
}

static int projector_loop(projector_t *projector) {
    const sz_projector_options_t *options = projector->options;
    for (;;) {
        if (projector_stopping(projector)) {
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
        bool pending = !sz_postgres_batch_empty(projector->batches[projector->current]) ||
                       (projector->kafka != NULL &&
                        sz_kafka_delivered_op(projector->kafka) > projector->kafka_handed_op);
        if (pending && projector_batch_due(projector, idle)) {
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
