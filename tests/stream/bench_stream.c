/* bench_stream.c: a subscriber for measuring the stream beside a load (not a test):
 *   bench_stream HOST:PORT METRICS_PORT SECONDS [OP_FROM]
 * subscribes through projection/source_server.c, checks and counts every entry for
 * SECONDS, samples the server's sumzero_subscription_lag_ops every 50 ms, and prints
 * entries/s, MB/s, events/s and the lag (max and mean, in ops). Run it beside
 * `sumzero bench --addresses HOST:PORT --rate N`. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "projection/source.h"

static uint64_t clock_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

/* The value of "NAME VALUE" from GET /metrics on 127.0.0.1:port; UINT64_MAX on failure. */
static uint64_t metric_read(uint16_t port, const char *name) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
        if (fd >= 0) close(fd);
        return UINT64_MAX;
    }
    const char *request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    (void)!send(fd, request, strlen(request), MSG_NOSIGNAL);
    static char text[256 * 1024];
    size_t size = 0;
    ssize_t count = 0;
    while ((count = recv(fd, text + size, sizeof(text) - 1 - size, 0)) > 0) size += (size_t)count;
    close(fd);
    text[size] = 0;
    char pattern[128];
    snprintf(pattern, sizeof(pattern), "\n%s ", name);
    const char *line = strstr(text, pattern);
    return line == NULL ? UINT64_MAX : strtoull(line + strlen(pattern), NULL, 10);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_stream HOST:PORT METRICS_PORT SECONDS [OP_FROM]\n");
        return 64;
    }
    uint16_t metrics_port = (uint16_t)atoi(argv[2]);
    uint64_t duration_ms = strtoull(argv[3], NULL, 10) * 1000u;
    sz_source_server_options_t options = {.address = argv[1], .op_from = 1};
    if (argc > 4) options.op_from = strtoull(argv[4], NULL, 10);
    sz_source_t *source = NULL;
    char error[256] = "";
    if (sz_source_server_open(&options, &source, error, sizeof(error)) != 0) {
        fprintf(stderr, "bench_stream: %s\n", error);
        return 69;
    }
    uint64_t started_ms = clock_ms();
    uint64_t sample_ms = started_ms;
    uint64_t entries = 0, bytes = 0, events = 0, lag_max = 0, lag_sum = 0, samples = 0;
    while (clock_ms() - started_ms < duration_ms) {
        const sz_journal_header_t *header = NULL;
        const void *body = NULL;
        int result = sz_source_next(source, &header, &body, 10);
        if (result < 0) {
            fprintf(stderr, "bench_stream: %s\n", source->error_message);
            return 70;
        }
        if (result == 1) {
            entries++;
            bytes += SZ_JOURNAL_HEADER_SIZE + header->body_size;
            events += header->event_count;
        }
        if (clock_ms() >= sample_ms) {
            uint64_t lag = metric_read(metrics_port, "sumzero_subscription_lag_ops");
            if (lag != UINT64_MAX) {
                if (lag > lag_max) lag_max = lag;
                lag_sum += lag;
                samples++;
            }
            sample_ms = clock_ms() + 50;
        }
    }
    uint64_t elapsed_ms = clock_ms() - started_ms + 1;
    printf("bench_stream: %llu entries (%llu events, %llu bytes) in %llu ms: %llu entries/s, "
           "%llu events/s, %.1f MB/s; lag max %llu ops, mean %.1f ops (%llu samples)\n",
           (unsigned long long)entries, (unsigned long long)events, (unsigned long long)bytes,
           (unsigned long long)elapsed_ms, (unsigned long long)(entries * 1000 / elapsed_ms),
           (unsigned long long)(events * 1000 / elapsed_ms),
           (double)bytes / 1000.0 / (double)elapsed_ms, (unsigned long long)lag_max,
           samples > 0 ? (double)lag_sum / (double)samples : 0.0, (unsigned long long)samples);
    sz_source_close(source);
    return 0;
}
