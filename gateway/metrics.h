/* metrics.h: the server's counters, gauges and histograms, and their Prometheus text
 * form for GET /metrics.
 *
 * Contract:
 * - One sz_metrics_t per server, zeroed at start, shared by the gateway and the ledger
 *   thread. Every field has exactly one writing thread (named beside it); writers use
 *   relaxed atomic adds and stores (sz_metrics_add, sz_histogram_record), so the hot path
 *   pays no lock and no fence. Any thread may read at any time; a scrape sees each value
 *   whole, not all values from one instant.
 * - sz_metrics_render() formats into a caller's buffer and never allocates; it returns
 *   the length written, or the size it would need when the buffer is too small.
 */
#ifndef SZ_METRICS_H
#define SZ_METRICS_H

#include <stdatomic.h>

#include "protocol.h"

/* Histogram buckets: upper bounds 1, 2, 4, ... 2^(N-2) in the histogram's unit, then +Inf.
 * Microseconds from 1 us to 8.4 s; events per batch from 1 to 8192. */
#define SZ_HISTOGRAM_BUCKET_COUNT 25u

typedef struct sz_histogram {
    _Atomic uint64_t buckets[SZ_HISTOGRAM_BUCKET_COUNT]; /* not cumulative */
    _Atomic uint64_t sum;
    _Atomic uint64_t count;
} sz_histogram_t;

/* Operations are numbered 1..6 on the wire; index 0 counts frames whose operation is not
 * a client operation (rendered as operation="unknown"). */
#define SZ_METRICS_OPERATION_COUNT 7u

typedef struct sz_metrics {
    /* Gateway thread. */
    _Atomic uint64_t requests[SZ_METRICS_OPERATION_COUNT][SZ_STATUS_COUNT]; /* by reply status */
    _Atomic uint64_t events[SZ_METRICS_OPERATION_COUNT]; /* events in requests answered OK */
    _Atomic uint64_t frames_invalid;     /* frames answered with an error or a close */
    _Atomic uint64_t connections_open;   /* gauge */
    _Atomic uint64_t connections_accepted;
    _Atomic uint64_t connections_refused; /* over the connection limit */
    _Atomic uint64_t connections_timed_out;
    _Atomic uint64_t bytes_received;
    _Atomic uint64_t bytes_sent;
    _Atomic uint64_t messages_in_use;    /* gauge: messages out of the pool */
    sz_histogram_t batch_events;         /* events per request, by the gateway */
    sz_histogram_t request_latency_us;   /* frame fully read to reply fully written */

    /* Ledger thread. */
    _Atomic uint64_t create_account_results[SZ_CREATE_ACCOUNT_RESULT_COUNT];
    _Atomic uint64_t create_transfer_results[SZ_CREATE_TRANSFER_RESULT_COUNT];
    _Atomic uint64_t op_last;       /* gauge: last op sequenced (appended) */
    _Atomic uint64_t op_committed;  /* gauge: last op applied */
    _Atomic uint64_t expired_count; /* pending transfers expired by expire ops */
    _Atomic uint64_t journal_writes; /* group commits completed */
    sz_histogram_t commit_latency_us;    /* append to applied, per op */
    sz_histogram_t fdatasync_latency_us; /* write + fdatasync of one group commit */
    sz_histogram_t commit_ops;           /* ops per group commit */
    /* Ledger thread: snapshots (replica.c forks a child that writes each one). */
    _Atomic uint64_t snapshots_written;
    _Atomic uint64_t snapshots_failed;
    _Atomic uint64_t snapshot_op;          /* gauge: op of the newest snapshot written */
    _Atomic uint64_t snapshot_size_bytes;  /* gauge: its size */
    _Atomic uint64_t snapshot_pause_us_max; /* gauge: the longest fork() so far */
    sz_histogram_t snapshot_pause_us;      /* the ledger thread's time in fork() */
    sz_histogram_t snapshot_duration_us;   /* fork to the child's exit */

    /* Stream thread (subscriptions, stream.h). */
    _Atomic uint64_t subscribers;            /* gauge: subscriptions streaming */
    _Atomic uint64_t subscription_lag_ops;   /* gauge: the largest op_committed - op sent */
    _Atomic uint64_t subscriptions[SZ_STATUS_COUNT]; /* subscribe requests, by reply status */
    _Atomic uint64_t stream_entries;         /* journal entries sent to subscribers */
    _Atomic uint64_t stream_bytes;           /* their bytes */

    /* Read at scrape time by the gateway (set once at start). */
    const void *request_ring; /* const sz_ring_t *: occupancy gauge */
    const void *reply_ring;
} sz_metrics_t;

static inline void sz_metrics_add(_Atomic uint64_t *counter, uint64_t value) {
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + value,
                          memory_order_relaxed);
}

static inline void sz_metrics_set(_Atomic uint64_t *gauge, uint64_t value) {
    atomic_store_explicit(gauge, value, memory_order_relaxed);
}

/* Single writer per histogram (see the owners above). */
static inline void sz_histogram_record(sz_histogram_t *histogram, uint64_t value) {
    uint32_t bucket = 0;
    /* Bucket b holds values in (2^(b-1), 2^b]; the last one everything above. */
    while (bucket + 1 < SZ_HISTOGRAM_BUCKET_COUNT && value > (1ull << bucket)) bucket++;
    sz_metrics_add(&histogram->buckets[bucket], 1);
    sz_metrics_add(&histogram->sum, value);
    sz_metrics_add(&histogram->count, 1);
}

/* Writes the Prometheus text exposition (version 0.0.4) of every metric. Returns the
 * length (without the terminating zero), which is less than buffer_size; or, if
 * buffer_size is too small, the buffer size needed (length plus one for the zero), which
 * is at least buffer_size; the buffer then holds a truncated text. */
size_t sz_metrics_render(const sz_metrics_t *metrics, char *buffer, size_t buffer_size);

#endif
