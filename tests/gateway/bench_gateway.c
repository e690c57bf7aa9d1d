/* bench_gateway.c: how fast requests cross the gateway over loopback TCP, without the
 * ledger's cost: the gateway of gateway_harness.h with its stand-in ledger thread (which
 * answers at once), and client threads that keep `depth` requests in flight each.
 *   bench_gateway [--connections C] [--events E] [--depth D] [--seconds S]
 * Prints requests/s, events/s and MB/s of request frames. Not a test: run it by hand. */
#include <pthread.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "client.h"
#include "gateway_harness.h"

typedef struct bench_client {
    pthread_t thread;
    uint16_t port;
    uint32_t events;
    uint32_t depth;
    uint64_t deadline_ns;
    uint64_t requests_done;
    int failed;
} bench_client_t;

static void *bench_client_main(void *context) {
    bench_client_t *client = context;
    int fd = test_connect(client->port, 0);
    if (fd < 0) {
        client->failed = 1;
        return NULL;
    }
    uint8_t *frame = aligned_alloc(64, SZ_FRAME_SIZE_MAX);
    uint32_t frame_size = test_frame_build(frame, SZ_OPERATION_CREATE_TRANSFERS, client->events,
                                           (sz_u128)(uintptr_t)client, 1, 1);
    struct iovec iov[64];
    size_t buffer_size = 1 << 20, buffered = 0;
    uint8_t *buffer = malloc(buffer_size);
    uint32_t in_flight = 0;
    while (true) {
        /* Top up to depth, several frames per writev. */
        bool more = test_clock_ns() < client->deadline_ns;
        uint32_t want = more ? client->depth - in_flight : 0;
        while (want > 0) {
            uint32_t count = want < 64 ? want : 64;
            for (uint32_t index = 0; index < count; index++) {
                iov[index] = (struct iovec){.iov_base = frame, .iov_len = frame_size};
            }
            size_t total = (size_t)count * frame_size, sent = 0;
            struct iovec *at = iov;
            int at_count = (int)count;
            while (sent < total) {
                ssize_t result = writev(fd, at, at_count);
                if (result <= 0) goto fail;
                sent += (size_t)result;
                size_t skip = (size_t)result;
                while (at_count > 0 && skip >= at->iov_len) {
                    skip -= at->iov_len;
                    at++;
                    at_count--;
                }
                if (at_count > 0) {
                    at->iov_base = (uint8_t *)at->iov_base + skip;
                    at->iov_len -= skip;
                }
            }
            in_flight += count;
            want -= count;
        }
        if (in_flight == 0) break;
        ssize_t received = recv(fd, buffer + buffered, buffer_size - buffered, 0);
        if (received <= 0) goto fail;
        buffered += (size_t)received;
        /* Count whole replies; keep a partial one at the front. */
        size_t offset = 0;
        while (buffered - offset >= SZ_FRAME_HEADER_SIZE) {
            sz_frame_header_t header;
            memcpy(&header, buffer + offset, sizeof(header));
            if (header.status != SZ_STATUS_OK) goto fail;
            size_t reply_size = SZ_FRAME_HEADER_SIZE + header.body_size;
            if (buffered - offset < reply_size) break;
            offset += reply_size;
            in_flight--;
            client->requests_done++;
        }
        memmove(buffer, buffer + offset, buffered - offset);
        buffered -= offset;
    }
    close(fd);
    free(buffer);
    free(frame);
    return NULL;
fail:
    client->failed = 1;
    close(fd);
    free(buffer);
    free(frame);
    return NULL;
}

/* The upper bound of the bucket that holds the given fraction of the records. */
static uint64_t histogram_percentile(const sz_histogram_t *histogram, double fraction) {
    uint64_t count = harness_metric(&histogram->count), seen = 0;
    for (uint32_t bucket = 0; bucket < SZ_HISTOGRAM_BUCKET_COUNT; bucket++) {
        seen += harness_metric(&histogram->buckets[bucket]);
        if ((double)seen >= fraction * (double)count) return 1ull << bucket;
    }
    return UINT64_MAX;
}

int main(int argc, char **argv) {
    uint32_t connections = 1, events = 1, depth = 8;
    double seconds = 3;
    for (int index = 1; index + 1 < argc; index += 2) {
        if (strcmp(argv[index], "--connections") == 0) connections = (uint32_t)atoi(argv[index + 1]);
        else if (strcmp(argv[index], "--events") == 0) events = (uint32_t)atoi(argv[index + 1]);
        else if (strcmp(argv[index], "--depth") == 0) depth = (uint32_t)atoi(argv[index + 1]);
        else if (strcmp(argv[index], "--seconds") == 0) seconds = atof(argv[index + 1]);
        else {
            fprintf(stderr, "usage: bench_gateway [--connections C] [--events E] [--depth D] "
                            "[--seconds S]\n");
            return 64;
        }
    }
    static harness_t harness;
    sz_gateway_config_t config = {.pipeline_max = depth,
                                  .messages_max = connections * depth > 1024
                                                      ? 1024
                                                      : connections * depth + 4,
                                  .connections_max = connections + 16};
    if (harness_start(&harness, HARNESS_LEDGER_STAND_IN, config) != 0) return 1;
    bench_client_t *clients = calloc(connections, sizeof(*clients));
    uint64_t start_ns = test_clock_ns();
    uint64_t deadline_ns = start_ns + (uint64_t)(seconds * 1e9);
    for (uint32_t index = 0; index < connections; index++) {
        clients[index] = (bench_client_t){.port = sz_gateway_port(harness.gateway),
                                          .events = events, .depth = depth,
                                          .deadline_ns = deadline_ns};
        pthread_create(&clients[index].thread, NULL, bench_client_main, &clients[index]);
    }
    uint64_t requests = 0;
    int failed = 0;
    for (uint32_t index = 0; index < connections; index++) {
        pthread_join(clients[index].thread, NULL);
        requests += clients[index].requests_done;
        failed |= clients[index].failed;
    }
    double elapsed = (double)(test_clock_ns() - start_ns) / 1e9;
    uint64_t frame_size = SZ_FRAME_HEADER_SIZE + (uint64_t)events * 128;
    printf("connections=%u events=%u depth=%u seconds=%.2f requests_per_second=%.0f "
           "events_per_second=%.0f request_megabytes_per_second=%.1f "
           "gateway_latency_us_p50<=%llu p99<=%llu%s\n",
           connections, events, depth, elapsed, (double)requests / elapsed,
           (double)requests * events / elapsed, (double)requests * frame_size / elapsed / 1e6,
           (unsigned long long)histogram_percentile(&harness.metrics.request_latency_us, 0.50),
           (unsigned long long)histogram_percentile(&harness.metrics.request_latency_us, 0.99),
           failed ? " FAILED" : "");
    int result = harness_stop(&harness);
    free(clients);
    return failed || result != 0;
}
