/* metrics.c: the Prometheus text exposition (format 0.0.4) of sz_metrics_t. Counters end in
 * _total, histograms give cumulative _bucket{le=...} lines then _sum and _count. Durations
 * are kept in microseconds and printed in seconds with exact decimals (no floating point).
 * Never allocates: it formats into the caller's buffer and counts what would not fit. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>

#include "replica/ring.h"

typedef struct render {
    char *buffer;
    size_t size;   /* of buffer */
    size_t length; /* wanted so far, may exceed size */
} render_t;

__attribute__((format(printf, 2, 3))) static void render_format(render_t *render,
                                                                const char *format, ...) {
    size_t room = render->length < render->size ? render->size - render->length : 0;
    va_list arguments;
    va_start(arguments, format);
    int written = vsnprintf(room > 0 ? render->buffer + render->length : NULL, room, format,
                            arguments);
    va_end(arguments);
    SZ_ASSERT(written >= 0);
    render->length += (size_t)written;
}

static uint64_t load(const _Atomic uint64_t *value) {
    return atomic_load_explicit(value, memory_order_relaxed);
}

static void render_family(render_t *render, const char *name, const char *type,
                          const char *help) {
    render_format(render, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_value(render_t *render, const char *name, const char *help,
                         const char *type, uint64_t value) {
    render_family(render, name, type, help);
    render_format(render, "%s %llu\n", name, (unsigned long long)value);
}

/* Microseconds as seconds, exactly: 1500 -> "0.001500". */
static void render_seconds(render_t *render, uint64_t microseconds) {
    render_format(render, "%llu.%06llu", (unsigned long long)(microseconds / 1000000u),
                  (unsigned long long)(microseconds % 1000000u));
}

/* A histogram whose unit is microseconds (seconds = true) or a plain count. */
static void render_histogram(render_t *render, const char *name, const char *help,
                             const sz_histogram_t *histogram, bool seconds) {
    render_family(render, name, "histogram", help);
    uint64_t cumulative = 0;
    for (uint32_t bucket = 0; bucket < SZ_HISTOGRAM_BUCKET_COUNT; bucket++) {
        cumulative += load(&histogram->buckets[bucket]);
        render_format(render, "%s_bucket{le=\"", name);
        if (bucket + 1 == SZ_HISTOGRAM_BUCKET_COUNT) {
            render_format(render, "+Inf");
        } else if (seconds) {
            render_seconds(render, 1ull << bucket);
        } else {
            render_format(render, "%llu", 1ull << bucket);
        }
        render_format(render, "\"} %llu\n", (unsigned long long)cumulative);
    }
    render_format(render, "%s_sum ", name);
    if (seconds) {
        render_seconds(render, load(&histogram->sum));
    } else {
        render_format(render, "%llu", (unsigned long long)load(&histogram->sum));
    }
    /* The count is read after the buckets: a record between the two reads may make the
     * count differ from the +Inf bucket by a few, which Prometheus tolerates. */
    render_format(render, "\n%s_count %llu\n", name, (unsigned long long)load(&histogram->count));
}

/* Index 0 holds requests whose operation was not a client operation. */
static const char *operation_label(uint32_t operation) {
    return operation == 0 ? "unknown" : sz_operation_name(operation);
}

static void render_requests(render_t *render, const sz_metrics_t *metrics) {
    render_family(render, "sumzero_requests_total", "counter",
                  "Requests answered, by operation and reply status.");
    for (uint32_t operation = 0; operation < SZ_METRICS_OPERATION_COUNT; operation++) {
        for (uint32_t status = 0; status < SZ_STATUS_COUNT; status++) {
            uint64_t count = load(&metrics->requests[operation][status]);
            /* Every real operation shows its ok line from the start; the rest once seen. */
            if (count == 0 && (operation == 0 || status != SZ_STATUS_OK)) continue;
            render_format(render, "sumzero_requests_total{operation=\"%s\",status=\"%s\"} %llu\n",
                          operation_label(operation), sz_status_name(status),
                          (unsigned long long)count);
        }
    }
    render_family(render, "sumzero_events_total", "counter",
                  "Events in requests answered ok, by operation.");
    for (uint32_t operation = 1; operation < SZ_METRICS_OPERATION_COUNT; operation++) {
        render_format(render, "sumzero_events_total{operation=\"%s\"} %llu\n",
                      operation_label(operation),
                      (unsigned long long)load(&metrics->events[operation]));
    }
}

static void render_results(render_t *render, const sz_metrics_t *metrics) {
    render_family(render, "sumzero_create_account_results_total", "counter",
                  "Events of applied create_accounts, by result.");
    for (uint32_t result = 0; result < SZ_CREATE_ACCOUNT_RESULT_COUNT; result++) {
        render_format(render, "sumzero_create_account_results_total{result=\"%s\"} %llu\n",
                      sz_create_account_result_name(result),
                      (unsigned long long)load(&metrics->create_account_results[result]));
    }
    render_family(render, "sumzero_create_transfer_results_total", "counter",
                  "Events of applied create_transfers, by result.");
    for (uint32_t result = 0; result < SZ_CREATE_TRANSFER_RESULT_COUNT; result++) {
        render_format(render, "sumzero_create_transfer_results_total{result=\"%s\"} %llu\n",
                      sz_create_transfer_result_name(result),
                      (unsigned long long)load(&metrics->create_transfer_results[result]));
    }
}

static void render_gateway(render_t *render, const sz_metrics_t *metrics) {
    render_value(render, "sumzero_frames_invalid_total",
                 "Frames answered with an error status or a close.", "counter",
                 load(&metrics->frames_invalid));
    render_value(render, "sumzero_connections_open", "Client connections open.", "gauge",
                 load(&metrics->connections_open));
    render_value(render, "sumzero_connections_accepted_total", "Client connections accepted.",
                 "counter", load(&metrics->connections_accepted));
    render_value(render, "sumzero_connections_refused_total",
                 "Client connections closed at once: over the connection limit.", "counter",
                 load(&metrics->connections_refused));
    render_value(render, "sumzero_connections_timed_out_total",
                 "Client connections closed after the idle timeout.", "counter",
                 load(&metrics->connections_timed_out));
    render_value(render, "sumzero_received_bytes_total", "Bytes read from clients.", "counter",
                 load(&metrics->bytes_received));
    render_value(render, "sumzero_sent_bytes_total", "Bytes written to clients.", "counter",
                 load(&metrics->bytes_sent));
    render_value(render, "sumzero_messages_in_use", "Messages out of the gateway's pool.",
                 "gauge", load(&metrics->messages_in_use));
    render_histogram(render, "sumzero_batch_events", "Events per request sent to the ledger.",
                     &metrics->batch_events, false);
    render_histogram(render, "sumzero_request_latency_seconds",
                     "From a request fully read to its reply fully written.",
                     &metrics->request_latency_us, true);
}

static void render_snapshots(render_t *render, const sz_metrics_t *metrics) {
    render_value(render, "sumzero_snapshots_written_total", "Snapshots written.", "counter",
                 load(&metrics->snapshots_written));
    render_value(render, "sumzero_snapshots_failed_total",
                 "Snapshots that failed (the log says why).", "counter",
                 load(&metrics->snapshots_failed));
    render_value(render, "sumzero_snapshot_op", "Op of the newest snapshot written.", "gauge",
                 load(&metrics->snapshot_op));
    render_value(render, "sumzero_snapshot_size_bytes", "Size of the newest snapshot written.",
                 "gauge", load(&metrics->snapshot_size_bytes));
    render_family(render, "sumzero_snapshot_pause_seconds_max", "gauge",
                  "The ledger thread's longest pause to take a snapshot (fork).");
    render_format(render, "sumzero_snapshot_pause_seconds_max ");
    render_seconds(render, load(&metrics->snapshot_pause_us_max));
    render_format(render, "\n");
    render_histogram(render, "sumzero_snapshot_pause_seconds",
                     "The ledger thread's pause to take a snapshot (fork).",
                     &metrics->snapshot_pause_us, true);
    render_histogram(render, "sumzero_snapshot_duration_seconds",
                     "From the fork to the snapshot durable, pruned and retention applied.",
                     &metrics->snapshot_duration_us, true);
}

static void render_ledger(render_t *render, const sz_metrics_t *metrics) {
    render_value(render, "sumzero_op_last", "Last op sequenced.", "gauge",
                 load(&metrics->op_last));
    render_value(render, "sumzero_op_committed", "Last op applied.", "gauge",
                 load(&metrics->op_committed));
    render_value(render, "sumzero_expired_total", "Pending transfers expired.", "counter",
                 load(&metrics->expired_count));
    render_value(render, "sumzero_journal_writes_total", "Group commits completed.", "counter",
                 load(&metrics->journal_writes));
    render_histogram(render, "sumzero_commit_latency_seconds",
                     "From an op appended to the journal to the op applied.",
                     &metrics->commit_latency_us, true);
    render_histogram(render, "sumzero_fdatasync_latency_seconds",
                     "Write and fdatasync of one group commit.", &metrics->fdatasync_latency_us,
                     true);
    render_histogram(render, "sumzero_commit_ops", "Ops per group commit.", &metrics->commit_ops,
                     false);
    render_snapshots(render, metrics);
    if (metrics->request_ring != NULL) {
        render_value(render, "sumzero_request_ring_occupancy",
                     "Requests waiting for the ledger thread.", "gauge",
                     sz_ring_occupancy(metrics->request_ring));
    }
    if (metrics->reply_ring != NULL) {
        render_value(render, "sumzero_reply_ring_occupancy",
                     "Replies waiting for the gateway thread.", "gauge",
                     sz_ring_occupancy(metrics->reply_ring));
    }
}

static void render_stream(render_t *render, const sz_metrics_t *metrics) {
    render_family(render, "sumzero_subscriptions_total", "counter",
                  "Subscribe requests answered, by reply status.");
    for (uint32_t status = 0; status < SZ_STATUS_COUNT; status++) {
        uint64_t count = load(&metrics->subscriptions[status]);
        if (count == 0 && status != SZ_STATUS_OK) continue;
        render_format(render, "sumzero_subscriptions_total{status=\"%s\"} %llu\n",
                      sz_status_name(status), (unsigned long long)count);
    }
    render_value(render, "sumzero_subscribers", "Subscriptions streaming.", "gauge",
                 load(&metrics->subscribers));
    render_value(render, "sumzero_subscription_lag_ops",
                 "The largest lag of a subscriber: ops committed and not yet sent to it.",
                 "gauge", load(&metrics->subscription_lag_ops));
    render_value(render, "sumzero_stream_entries_total", "Journal entries sent to subscribers.",
                 "counter", load(&metrics->stream_entries));
    render_value(render, "sumzero_stream_bytes_total", "Bytes of entries sent to subscribers.",
                 "counter", load(&metrics->stream_bytes));
}

size_t sz_metrics_render(const sz_metrics_t *metrics, char *buffer, size_t buffer_size) {
    SZ_ASSERT(metrics != NULL);
    SZ_ASSERT(buffer != NULL || buffer_size == 0);
    render_t render = {.buffer = buffer, .size = buffer_size, .length = 0};
    render_requests(&render, metrics);
    render_gateway(&render, metrics);
    render_results(&render, metrics);
    render_ledger(&render, metrics);
    render_stream(&render, metrics);
    if (render.length >= buffer_size) return render.length + 1;
    return render.length;
}
