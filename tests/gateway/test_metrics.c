/* test_metrics.c: proves sz_metrics_render() writes valid Prometheus text (0.0.4): every
 * sample line belongs to a family announced by HELP and TYPE lines, counters end in
 * _total, histogram buckets are cumulative with le labels ending in +Inf and agree with
 * _count, durations are printed in seconds exactly, labels use the operation, status
 * and result names; and that a buffer too small gets a truncated text and the size
 * needed, never an overrun. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "gateway/metrics.h"

static sz_metrics_t metrics;
static char text[256 * 1024];

static void render(void) {
    size_t length = sz_metrics_render(&metrics, text, sizeof(text));
    cr_assert_lt(length, sizeof(text));
    cr_assert_eq(strlen(text), length);
}

static bool has_line(const char *line) {
    char needle[512];
    snprintf(needle, sizeof(needle), "\n%s\n", line);
    return strstr(text, needle) != NULL;
}

Test(metrics, counters_and_gauges_carry_their_names_and_labels) {
    memset(&metrics, 0, sizeof(metrics));
    sz_metrics_add(&metrics.requests[SZ_OPERATION_CREATE_TRANSFERS][SZ_STATUS_OK], 5);
    sz_metrics_add(&metrics.requests[SZ_OPERATION_LOOKUP_ACCOUNTS][SZ_STATUS_RATE_LIMITED], 2);
    sz_metrics_add(&metrics.requests[0][SZ_STATUS_MAGIC_INVALID], 1);
    sz_metrics_add(&metrics.events[SZ_OPERATION_CREATE_TRANSFERS], 40960);
    sz_metrics_add(&metrics.create_transfer_results[SZ_CREATE_TRANSFER_EXCEEDS_CREDITS], 3);
    sz_metrics_add(&metrics.create_account_results[SZ_CREATE_ACCOUNT_EXISTS], 4);
    sz_metrics_set(&metrics.connections_open, 17);
    sz_metrics_set(&metrics.op_committed, 123456789012ull);
    render();
    cr_assert(has_line("sumzero_requests_total{operation=\"create_transfers\",status=\"ok\"} 5"));
    cr_assert(has_line("sumzero_requests_total{operation=\"lookup_accounts\",status=\"rate_limited\"} 2"));
    cr_assert(has_line("sumzero_requests_total{operation=\"unknown\",status=\"magic_invalid\"} 1"));
    cr_assert(has_line("sumzero_requests_total{operation=\"get_account_balances\",status=\"ok\"} 0"));
    cr_assert(has_line("sumzero_events_total{operation=\"create_transfers\"} 40960"));
    cr_assert(has_line("sumzero_create_transfer_results_total{result=\"exceeds_credits\"} 3"));
    cr_assert(has_line("sumzero_create_account_results_total{result=\"exists\"} 4"));
    cr_assert(has_line("sumzero_connections_open 17"));
    cr_assert(has_line("sumzero_op_committed 123456789012"));
    cr_assert(has_line("# TYPE sumzero_requests_total counter"));
    cr_assert(has_line("# TYPE sumzero_connections_open gauge"));
    /* Rings are shown only when the server set them. */
    cr_assert_null(strstr(text, "ring_occupancy"));
}

Test(metrics, every_sample_belongs_to_an_announced_family) {
    memset(&metrics, 0, sizeof(metrics));
    sz_histogram_record(&metrics.commit_latency_us, 700);
    render();
    char family[128] = "";
    char type[32] = "";
    uint32_t samples = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strncmp(line, "# HELP ", 7) == 0) continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            cr_assert_eq(sscanf(line, "# TYPE %127s %31s", family, type), 2);
            bool counter = strcmp(type, "counter") == 0;
            size_t length = strlen(family);
            cr_assert(!counter || (length > 6 && strcmp(family + length - 6, "_total") == 0),
                      "counter %s", family);
            continue;
        }
        samples++;
        cr_assert_neq(family[0], 0, "sample before any TYPE: %s", line);
        cr_assert(strncmp(line, family, strlen(family)) == 0, "%s is not in %s", line, family);
        const char *space = strrchr(line, ' ');
        cr_assert_not_null(space);
        char *end = NULL;
        strtod(space + 1, &end);
        cr_assert_eq(*end, 0, "value of %s", line);
    }
    cr_assert_gt(samples, 200);
}

Test(metrics, histogram_buckets_are_cumulative_and_durations_are_seconds) {
    memset(&metrics, 0, sizeof(metrics));
    sz_histogram_record(&metrics.request_latency_us, 1);    /* le 0.000001 */
    sz_histogram_record(&metrics.request_latency_us, 3);    /* le 0.000004 */
    sz_histogram_record(&metrics.request_latency_us, 1500); /* le 0.002048 */
    sz_histogram_record(&metrics.request_latency_us, 1ull << 40); /* +Inf */
    sz_histogram_record(&metrics.batch_events, 8190);
    render();
    cr_assert(has_line("sumzero_request_latency_seconds_bucket{le=\"0.000001\"} 1"));
    cr_assert(has_line("sumzero_request_latency_seconds_bucket{le=\"0.000002\"} 1"));
    cr_assert(has_line("sumzero_request_latency_seconds_bucket{le=\"0.000004\"} 2"));
    cr_assert(has_line("sumzero_request_latency_seconds_bucket{le=\"0.001024\"} 2"));
    cr_assert(has_line("sumzero_request_latency_seconds_bucket{le=\"0.002048\"} 3"));
    cr_assert(has_line("sumzero_request_latency_seconds_bucket{le=\"8.388608\"} 3"));
    cr_assert(has_line("sumzero_request_latency_seconds_bucket{le=\"+Inf\"} 4"));
    cr_assert(has_line("sumzero_request_latency_seconds_count 4"));
    cr_assert(has_line("sumzero_request_latency_seconds_sum 1099511.629280"));
    cr_assert(has_line("sumzero_batch_events_bucket{le=\"4096\"} 0"));
    cr_assert(has_line("sumzero_batch_events_bucket{le=\"8192\"} 1"));
    cr_assert(has_line("sumzero_batch_events_sum 8190"));
    cr_assert(has_line("# TYPE sumzero_request_latency_seconds histogram"));
}

Test(metrics, a_small_buffer_gets_a_truncated_text_and_the_size_needed) {
    memset(&metrics, 0, sizeof(metrics));
    size_t needed = sz_metrics_render(&metrics, NULL, 0);
    cr_assert_gt(needed, 1000);
    size_t length = sz_metrics_render(&metrics, text, sizeof(text));
    cr_assert_eq(needed, length + 1);
    char *exact = malloc(needed);
    cr_assert_eq(sz_metrics_render(&metrics, exact, needed), length);
    cr_assert_str_eq(exact, text);
    char *small = malloc(100);
    cr_assert_eq(sz_metrics_render(&metrics, small, 100), needed);
    cr_assert_eq(strlen(small), 99);
    cr_assert_eq(strncmp(small, text, 99), 0);
    free(small);
    free(exact);
}
