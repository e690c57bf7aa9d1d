/* test_stream.c: subscriptions to the committed stream, against real `sumzero start`
 * processes (tests/harness/server.h) with 4 MiB journal segments, real sockets, the client
 * library as the writer and projection/source_server.c as the subscriber. Every entry a
 * subscriber receives is compared with the server's journal read by the journal reader
 * (checksum_header by op, which covers the body), so "exactly the journal" means same ops,
 * same bytes, no gap, no duplicate.
 * Proves: a subscriber from op 1 gets exactly the journal while writes run; a subscriber
 * that connects late (or from a middle op) catches up (and the throughput is printed); a
 * subscriber that stops reading does not slow the writes (timed against a run without
 * it, and the server's lag metric shows it was behind) and then catches up with nothing
 * lost; several subscribers at once; bad subscribe requests get their statuses (other
 * cluster, op ahead, malformed body, flags, op 0, a pipelined request, op retired, the
 * subscriber limit); a server stopped and restarted, and one killed with SIGKILL, under a
 * subscriber: the source reconnects and resumes without gap or duplicate. Seeded
 * (SUMZERO_SEED). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "gateway/protocol.h"
#include "harness/server.h"
#include "journal/reader.h"
#include "projection/source.h"
#include "sumzero.h"

#define OP_COUNT_MAX 262144u
#define BATCH_MAX 500u
#define WAIT_MS 30000u

static const char *const server_args[] = {
    "--accounts-max", "64", "--transfers-max", "1048576", "--pending-max", "1024",
    "--history-max", "1024", "--segment-size", "4194304", "--subscribers-max", "4", NULL,
};

static uint64_t seed;
static char directory[64];
/* The test's server; teardown kills it if a failed assertion left it running. */
static sz_test_server_t server;

static uint64_t mix(uint64_t value) {
    value += 0x9E3779B97F4A7C15ull;
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ull;
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBull;
    return value ^ (value >> 31);
}

static void setup(void) {
    const char *text = getenv("SUMZERO_SEED");
    seed = text != NULL ? strtoull(text, NULL, 0) : (uint64_t)getpid() ^ sz_test_clock_ms();
    fprintf(stderr, "test_stream: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    snprintf(directory, sizeof(directory), "/tmp/sz_test_stream_XXXXXX");
    cr_assert_not_null(mkdtemp(directory));
}

static void teardown(void) {
    if (server.pid > 0) {
        sz_test_server_dump_log(&server);
        (void)sz_test_server_stop(&server, SIGKILL);
    }
    char command[256];
    snprintf(command, sizeof(command), "rm -rf '%s' '%s.log' '%s.moved'", directory, directory,
             directory);
    (void)!system(command);
}

static void server_start(sz_test_server_t *started, const char *address) {
    const char *args[32];
    size_t count = 0;
    for (; server_args[count] != NULL; count++) args[count] = server_args[count];
    if (address != NULL) {
        args[count++] = "--address";
        args[count++] = address;
    }
    args[count] = NULL;
    int result = sz_test_server_start(started, directory, args);
    if (result != 0) sz_test_server_dump_log(started);
    cr_assert_eq(result, 0, "server start: %s", strerror(-result));
}

/* ---- the writer: transfers between two accounts, in batches of random sizes ---------- */

typedef struct writer {
    sumzero_client_t *client;
    uint64_t transfer_next; /* the next transfer id */
    uint64_t transfer_last; /* write until this id */
    uint64_t duration_ms;
    _Atomic bool done;
    int error;
} writer_t;

static sumzero_client_t *client_open(const sz_test_server_t *running) {
    sumzero_client_options_t options = {.addresses = running->address};
    sumzero_client_t *client = NULL;
    cr_assert_eq(sumzero_client_open(&client, &options), 0);
    return client;
}

static void accounts_create(sumzero_client_t *client) {
    sumzero_account_t accounts[2] = {{.id = 1, .ledger = 1, .code = 1},
                                     {.id = 2, .ledger = 1, .code = 1}};
    sumzero_create_result_t results[2];
    uint32_t count = 0;
    cr_assert_eq(sumzero_create_accounts(client, accounts, 2, results, &count), 0);
}

static void *writer_run(void *context) {
    writer_t *writer = context;
    static sumzero_transfer_t transfers[BATCH_MAX];
    static sumzero_create_result_t results[BATCH_MAX];
    uint64_t started_ms = sz_test_clock_ms();
    while (writer->transfer_next <= writer->transfer_last) {
        uint32_t count = (uint32_t)(mix(seed ^ writer->transfer_next) % BATCH_MAX) + 1;
        if (writer->transfer_next + count - 1 > writer->transfer_last) {
            count = (uint32_t)(writer->transfer_last - writer->transfer_next + 1);
        }
        for (uint32_t index = 0; index < count; index++) {
            uint64_t id = writer->transfer_next + index;
            transfers[index] = (sumzero_transfer_t){.id = id, .debit_account_id = 1 + id % 2,
                                                    .credit_account_id = 2 - id % 2,
                                                    .amount = 1 + id % 100, .ledger = 1,
                                                    .code = 1};
        }
        uint32_t failed = 0;
        int result = sumzero_create_transfers(writer->client, transfers, count, results, &failed);
        if (result != 0 && result != -ETIMEDOUT) {
            writer->error = result;
            break;
        }
        /* A timeout (a restart in the test) is retried with the same ids: exists is fine. */
        if (result == 0) writer->transfer_next += count;
    }
    writer->duration_ms = sz_test_clock_ms() - started_ms;
    atomic_store(&writer->done, true);
    return NULL;
}

static void writer_start(writer_t *writer, pthread_t *thread, sumzero_client_t *client,
                         uint64_t first, uint64_t last) {
    *writer = (writer_t){.client = client, .transfer_next = first, .transfer_last = last};
    cr_assert_eq(pthread_create(thread, NULL, writer_run, writer), 0);
}

static void writer_join(writer_t *writer, pthread_t thread) {
    cr_assert_eq(pthread_join(thread, NULL), 0);
    cr_assert_eq(writer->error, 0, "writer: %s", strerror(-writer->error));
}

/* ---- the journal, as the reference ------------------------------------------------ */

typedef struct journal_copy {
    uint64_t op_last;
    sz_u128 checksums[OP_COUNT_MAX + 1]; /* checksum_header by op */
    uint64_t bytes;
} journal_copy_t;

static journal_copy_t journal_copy;

static void journal_read(void) {
    memset(&journal_copy, 0, sizeof(journal_copy));
    sz_journal_reader_options_t options = {.directory = directory, .op_from = 1};
    sz_journal_reader_t *reader = NULL;
    sz_journal_problem_t problem;
    cr_assert_eq(sz_journal_reader_open(&options, &reader, &problem), 0, "%s", problem.reason);
    for (;;) {
        const sz_journal_header_t *header = NULL;
        const void *body = NULL;
        int result = sz_journal_reader_next(reader, UINT64_MAX, &header, &body, &problem);
        cr_assert_geq(result, 0, "%s", problem.reason);
        if (result == 0) break;
        cr_assert_leq(header->op, OP_COUNT_MAX);
        journal_copy.checksums[header->op] = header->checksum_header;
        journal_copy.op_last = header->op;
        journal_copy.bytes += SZ_JOURNAL_HEADER_SIZE + header->body_size;
    }
    sz_journal_reader_close(reader);
}

/* ---- subscribers ------------------------------------------------------------------ */

typedef struct subscriber {
    sz_source_t *source;
    uint64_t op_from;
    uint64_t op_next; /* the next op it must get */
    uint64_t bytes;
    sz_u128 checksums[OP_COUNT_MAX + 1];
} subscriber_t;

static subscriber_t *subscriber_open(const char *address, uint64_t op_from) {
    subscriber_t *subscriber = calloc(1, sizeof(*subscriber));
    cr_assert_not_null(subscriber);
    sz_source_server_options_t options = {.address = address, .op_from = op_from};
    char error[256] = "";
    int result = sz_source_server_open(&options, &subscriber->source, error, sizeof(error));
    cr_assert_eq(result, 0, "subscribe from %llu: %s", (unsigned long long)op_from, error);
    subscriber->op_from = subscriber->op_next = op_from;
    return subscriber;
}

static void subscriber_close(subscriber_t *subscriber) {
    sz_source_close(subscriber->source);
    free(subscriber);
}

/* Reads what is there within timeout_ms; returns the entries read. */
static uint64_t subscriber_read(subscriber_t *subscriber, int timeout_ms) {
    uint64_t count = 0;
    for (;;) {
        const sz_journal_header_t *header = NULL;
        const void *body = NULL;
        int result = sz_source_next(subscriber->source, &header, &body, timeout_ms);
        cr_assert_geq(result, 0, "%s", subscriber->source->error_message);
        if (result == 0) return count;
        cr_assert_eq(header->op, subscriber->op_next, "in order, no gap, no duplicate");
        cr_assert_leq(header->op, OP_COUNT_MAX);
        subscriber->checksums[header->op] = header->checksum_header;
        subscriber->op_next++;
        subscriber->bytes += SZ_JOURNAL_HEADER_SIZE + header->body_size;
        count++;
        timeout_ms = 0;
    }
}

/* Reads until it has op_last, within the wait. */
static void subscriber_until(subscriber_t *subscriber, uint64_t op_last) {
    uint64_t deadline_ms = sz_test_clock_ms() + WAIT_MS;
    while (subscriber->op_next <= op_last && sz_test_clock_ms() < deadline_ms) {
        subscriber_read(subscriber, 100);
    }
    cr_assert_gt(subscriber->op_next, op_last, "the subscriber got op %llu of %llu",
                 (unsigned long long)subscriber->op_next - 1, (unsigned long long)op_last);
}

/* Every op it got is the journal's, and it got nothing past the journal. */
static void subscriber_matches_journal(const subscriber_t *subscriber) {
    cr_assert_leq(subscriber->op_next - 1, journal_copy.op_last);
    for (uint64_t op = subscriber->op_from; op < subscriber->op_next; op++) {
        cr_assert(subscriber->checksums[op] == journal_copy.checksums[op], "op %llu differs",
                  (unsigned long long)op);
    }
}

/* ---- raw subscribe requests ------------------------------------------------------- */

static int socket_open(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    struct timeval timeout = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    return fd;
}

static void frame_subscribe(uint8_t *frame, sz_u128 cluster_id, const sz_subscribe_request_t *body,
                            uint32_t body_size) {
    memcpy(frame + SZ_FRAME_HEADER_SIZE, body, sizeof(*body));
    sz_frame_header_t header = {.cluster_id = cluster_id, .client_id = 77, .request_number = 1,
                                .body_size = body_size, .command = SZ_COMMAND_REQUEST,
                                .operation = SZ_OPERATION_SUBSCRIBE, .trace_id = 5};
    sz_frame_header_seal(&header, frame + SZ_FRAME_HEADER_SIZE);
    memcpy(frame, &header, sizeof(header));
}

/* Sends size bytes and reads one reply header; returns its status (reply_out gets it). */
static uint16_t request_raw(uint16_t port, const uint8_t *bytes, size_t size,
                            sz_frame_header_t *reply_out) {
    int fd = socket_open(port);
    cr_assert_eq(send(fd, bytes, size, MSG_NOSIGNAL), (ssize_t)size);
    size_t received = 0;
    while (received < sizeof(*reply_out)) {
        ssize_t count = recv(fd, (uint8_t *)reply_out + received, sizeof(*reply_out) - received, 0);
        cr_assert_gt(count, 0, "a reply header arrives");
        received += (size_t)count;
    }
    close(fd);
    cr_assert_eq(sz_frame_header_check(reply_out, SZ_COMMAND_REPLY, 0, false), SZ_STATUS_OK);
    return reply_out->status;
}

static uint16_t subscribe_raw(uint16_t port, sz_u128 cluster_id, sz_subscribe_request_t body,
                              sz_frame_header_t *reply_out) {
    uint8_t frame[SZ_FRAME_HEADER_SIZE + sizeof(body)];
    frame_subscribe(frame, cluster_id, &body, sizeof(body));
    return request_raw(port, frame, sizeof(frame), reply_out);
}

/* The value of a metric line "NAME VALUE" from GET /metrics. */
static uint64_t metric_read(uint16_t port, const char *name) {
    int fd = socket_open(port);
    const char *request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(send(fd, request, strlen(request), MSG_NOSIGNAL), (ssize_t)strlen(request));
    static char text[256 * 1024];
    size_t size = 0;
    ssize_t count = 0;
    while ((count = recv(fd, text + size, sizeof(text) - 1 - size, 0)) > 0) size += (size_t)count;
    close(fd);
    text[size] = 0;
    char pattern[128];
    snprintf(pattern, sizeof(pattern), "\n%s ", name);
    const char *line = strstr(text, pattern);
    cr_assert_not_null(line, "metric %s", name);
    return strtoull(line + strlen(pattern), NULL, 10);
}

/* ---- tests ------------------------------------------------------------------------ */

Test(stream, a_subscriber_from_op_1_gets_exactly_the_journal_while_writes_run,
     .init = setup, .fini = teardown, .timeout = 120) {
    server_start(&server, NULL);
    subscriber_t *subscriber = subscriber_open(server.address, 1);
    sumzero_client_t *client = client_open(&server);
    accounts_create(client);
    writer_t writer;
    pthread_t thread;
    writer_start(&writer, &thread, client, 1, 80000);
    /* The server's lag gauge, sampled while the subscriber keeps up. */
    uint64_t lag_max = 0;
    uint64_t sample_count = 0;
    uint64_t sample_ms = 0;
    while (!atomic_load(&writer.done)) {
        subscriber_read(subscriber, 10);
        if (sz_test_clock_ms() >= sample_ms) {
            uint64_t lag = metric_read(server.metrics_port, "sumzero_subscription_lag_ops");
            if (lag > lag_max) lag_max = lag;
            sample_count++;
            sample_ms = sz_test_clock_ms() + 20;
        }
    }
    writer_join(&writer, thread);
    journal_read();
    fprintf(stderr, "test_stream: live subscriber: lag at most %llu ops in %llu samples, "
                    "%llu ops of %llu transfers\n",
            (unsigned long long)lag_max, (unsigned long long)sample_count,
            (unsigned long long)journal_copy.op_last, 80000ull);
    cr_assert_gt(journal_copy.bytes, 8u << 20, "the journal spans several 4 MiB segments");
    subscriber_until(subscriber, journal_copy.op_last);
    subscriber_matches_journal(subscriber);
    /* Nothing more comes: no entry past the journal. */
    cr_assert_eq(subscriber_read(subscriber, 200), 0);
    cr_assert_eq(metric_read(server.metrics_port, "sumzero_subscribers"), 1);
    subscriber_close(subscriber);
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}

Test(stream, a_late_subscriber_catches_up_from_op_1_and_from_a_middle_op,
     .init = setup, .fini = teardown, .timeout = 120) {
    server_start(&server, NULL);
    sumzero_client_t *client = client_open(&server);
    accounts_create(client);
    writer_t writer;
    pthread_t thread;
    writer_start(&writer, &thread, client, 1, 120000);
    writer_join(&writer, thread);
    journal_read();
    uint64_t started_ms = sz_test_clock_ms();
    subscriber_t *subscriber = subscriber_open(server.address, 1);
    subscriber_until(subscriber, journal_copy.op_last);
    uint64_t elapsed_ms = sz_test_clock_ms() - started_ms + 1;
    subscriber_matches_journal(subscriber);
    fprintf(stderr,
            "test_stream: catch-up of %llu entries (%llu bytes) in %llu ms: %llu entries/s, "
            "%llu MB/s (provisional: shared machine)\n",
            (unsigned long long)journal_copy.op_last, (unsigned long long)subscriber->bytes,
            (unsigned long long)elapsed_ms,
            (unsigned long long)(journal_copy.op_last * 1000 / elapsed_ms),
            (unsigned long long)(subscriber->bytes / 1000 / elapsed_ms));
    subscriber_close(subscriber);
    uint64_t op_middle = journal_copy.op_last / 2 + 1;
    subscriber = subscriber_open(server.address, op_middle);
    subscriber_until(subscriber, journal_copy.op_last);
    subscriber_matches_journal(subscriber);
    subscriber_close(subscriber);
    /* From the op after the last: nothing yet, then the next write. */
    subscriber = subscriber_open(server.address, journal_copy.op_last + 1);
    cr_assert_eq(subscriber_read(subscriber, 100), 0);
    writer_start(&writer, &thread, client, 120001, 120010);
    writer_join(&writer, thread);
    subscriber_until(subscriber, journal_copy.op_last + 1);
    sumzero_client_close(client);
    journal_read();
    subscriber_matches_journal(subscriber);
    subscriber_close(subscriber);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}

Test(stream, a_subscriber_that_stops_reading_does_not_slow_writes_and_then_catches_up,
     .init = setup, .fini = teardown, .timeout = 180) {
    server_start(&server, NULL);
    sumzero_client_t *client = client_open(&server);
    accounts_create(client);
    writer_t writer;
    pthread_t thread;
    /* The same load without and then with a paused subscriber. */
    writer_start(&writer, &thread, client, 1, 80000);
    writer_join(&writer, thread);
    uint64_t alone_ms = writer.duration_ms + 1;
    subscriber_t *subscriber = subscriber_open(server.address, 1);
    cr_assert_gt(subscriber_read(subscriber, 50), 0, "it streams");
    /* Paused: next() is not called, so nothing reads its socket. */
    writer_start(&writer, &thread, client, 80001, 160000);
    writer_join(&writer, thread);
    uint64_t paused_ms = writer.duration_ms + 1;
    journal_read();
    uint64_t lag = metric_read(server.metrics_port, "sumzero_subscription_lag_ops");
    fprintf(stderr,
            "test_stream: 80000 transfers took %llu ms alone and %llu ms beside a paused "
            "subscriber; its lag then: %llu ops of %llu (provisional: shared machine)\n",
            (unsigned long long)alone_ms, (unsigned long long)paused_ms,
            (unsigned long long)lag, (unsigned long long)journal_copy.op_last);
    cr_assert_gt(lag, 0, "the paused subscriber was behind while the writes completed");
    /* Had the ledger waited for the subscriber, the writes would never have finished (it
     * reads nothing meanwhile); the time bound is generous for a shared machine. */
    cr_assert_lt(paused_ms, 3 * alone_ms + 5000, "writes were not held back");
    subscriber_until(subscriber, journal_copy.op_last);
    subscriber_matches_journal(subscriber);
    /* The gauge is set right after the last send: give the stream thread its moment. */
    uint64_t deadline_ms = sz_test_clock_ms() + WAIT_MS;
    while (metric_read(server.metrics_port, "sumzero_subscription_lag_ops") != 0 &&
           sz_test_clock_ms() < deadline_ms) {
        struct timespec pause = {.tv_nsec = 5000000};
        nanosleep(&pause, NULL);
    }
    cr_assert_eq(metric_read(server.metrics_port, "sumzero_subscription_lag_ops"), 0);
    subscriber_close(subscriber);
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}

Test(stream, several_subscribers_each_get_every_entry_from_their_op,
     .init = setup, .fini = teardown, .timeout = 120) {
    server_start(&server, NULL);
    sumzero_client_t *client = client_open(&server);
    accounts_create(client);
    writer_t writer;
    pthread_t thread;
    writer_start(&writer, &thread, client, 1, 20000);
    writer_join(&writer, thread);
    journal_read();
    subscriber_t *subscribers[3] = {
        subscriber_open(server.address, 1),
        subscriber_open(server.address, journal_copy.op_last / 3 + 1),
        subscriber_open(server.address, journal_copy.op_last + 1),
    };
    writer_start(&writer, &thread, client, 20001, 50000);
    while (!atomic_load(&writer.done)) {
        for (uint32_t index = 0; index < 3; index++) subscriber_read(subscribers[index], 5);
    }
    writer_join(&writer, thread);
    journal_read();
    for (uint32_t index = 0; index < 3; index++) {
        subscriber_until(subscribers[index], journal_copy.op_last);
        subscriber_matches_journal(subscribers[index]);
        subscriber_close(subscribers[index]);
    }
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}

Test(stream, bad_subscribe_requests_get_their_statuses,
     .init = setup, .fini = teardown, .timeout = 120) {
    server_start(&server, NULL);
    sumzero_client_t *client = client_open(&server);
    accounts_create(client);
    writer_t writer;
    pthread_t thread;
    writer_start(&writer, &thread, client, 1, 60000);
    writer_join(&writer, thread);
    journal_read();
    uint64_t op_last = journal_copy.op_last;
    sz_frame_header_t reply;
    sz_subscribe_request_t body = {.op_from = 1};
    cr_assert_eq(subscribe_raw(server.port, 99, body, &reply), SZ_STATUS_CLUSTER_INVALID);
    body.op_from = op_last + 2;
    cr_assert_eq(subscribe_raw(server.port, 0, body, &reply), SZ_STATUS_OP_AHEAD);
    cr_assert_eq(reply.op, op_last, "the reply names the committed op");
    cr_assert_eq(reply.client_id, 77);
    body.op_from = 0;
    cr_assert_eq(subscribe_raw(server.port, 0, body, &reply), SZ_STATUS_SUBSCRIPTION_INVALID);
    body = (sz_subscribe_request_t){.op_from = 1, .flags = 1};
    cr_assert_eq(subscribe_raw(server.port, 0, body, &reply), SZ_STATUS_RESERVED_NOT_ZERO);
    body = (sz_subscribe_request_t){.op_from = 1};
    body.reserved[47] = 1;
    cr_assert_eq(subscribe_raw(server.port, 0, body, &reply), SZ_STATUS_RESERVED_NOT_ZERO);
    /* A body that is not one subscribe request. */
    uint8_t frame[2 * SZ_FRAME_HEADER_SIZE + 2 * sizeof(body)];
    body = (sz_subscribe_request_t){.op_from = 1};
    frame_subscribe(frame, 0, &body, 32);
    cr_assert_eq(request_raw(server.port, frame, SZ_FRAME_HEADER_SIZE + 32, &reply),
                 SZ_STATUS_BODY_SIZE_INVALID);
    /* Another request behind the subscribe on the same connection. */
    frame_subscribe(frame, 0, &body, sizeof(body));
    memcpy(frame + SZ_FRAME_HEADER_SIZE + sizeof(body), frame, SZ_FRAME_HEADER_SIZE + sizeof(body));
    cr_assert_eq(request_raw(server.port, frame, sizeof(frame), &reply),
                 SZ_STATUS_SUBSCRIPTION_INVALID);
    /* The source reports refusals at open. */
    sz_source_server_options_t options = {.address = server.address, .cluster_id = 99,
                                          .op_from = 1};
    sz_source_t *source = NULL;
    char error[256];
    cr_assert_eq(sz_source_server_open(&options, &source, error, sizeof(error)), -EPROTO);
    options = (sz_source_server_options_t){.address = server.address, .op_from = op_last + 5};
    cr_assert_eq(sz_source_server_open(&options, &source, error, sizeof(error)), -EPROTO);
    cr_assert_not_null(strstr(error, "past the server's committed op"), "%s", error);
    /* The limit: 4 subscribers, the fifth is refused, and one leaving frees a place. */
    subscriber_t *subscribers[4];
    for (uint32_t index = 0; index < 4; index++) {
        subscribers[index] = subscriber_open(server.address, op_last + 1);
    }
    body = (sz_subscribe_request_t){.op_from = 1};
    cr_assert_eq(subscribe_raw(server.port, 0, body, &reply), SZ_STATUS_SUBSCRIBERS_FULL);
    subscriber_close(subscribers[3]);
    uint64_t deadline_ms = sz_test_clock_ms() + WAIT_MS;
    while (metric_read(server.metrics_port, "sumzero_subscribers") > 3 &&
           sz_test_clock_ms() < deadline_ms) {
        struct timespec pause = {.tv_nsec = 5000000};
        nanosleep(&pause, NULL);
    }
    subscribers[3] = subscriber_open(server.address, op_last + 1);
    for (uint32_t index = 0; index < 4; index++) subscriber_close(subscribers[index]);
    /* Retired: segment 0 moved away as retention would (the server never reads it again). */
    char from[128];
    char to[128];
    snprintf(from, sizeof(from), "%s/journal.000000", directory);
    snprintf(to, sizeof(to), "%s.moved", directory);
    cr_assert_eq(rename(from, to), 0);
    sz_journal_reader_options_t reader_options = {.directory = directory, .op_from = 1};
    sz_journal_reader_t *reader = NULL;
    sz_journal_problem_t problem;
    cr_assert_eq(sz_journal_reader_open(&reader_options, &reader, &problem), -ENOENT);
    uint64_t op_first = problem.op;
    cr_assert_gt(op_first, 1);
    body.op_from = 1;
    cr_assert_eq(subscribe_raw(server.port, 0, body, &reply), SZ_STATUS_OP_RETIRED);
    cr_assert_eq(reply.op, op_first, "the reply names the first op available");
    options = (sz_source_server_options_t){.address = server.address, .op_from = 1};
    cr_assert_eq(sz_source_server_open(&options, &source, error, sizeof(error)), -ENOENT);
    subscriber_t *subscriber = subscriber_open(server.address, op_first);
    subscriber_until(subscriber, op_last);
    subscriber_matches_journal(subscriber);
    subscriber_close(subscriber);
    cr_assert_eq(rename(to, from), 0);
    cr_assert_eq(metric_read(server.metrics_port,
                             "sumzero_subscriptions_total{status=\"op_ahead\"}"), 2);
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}

/* A journal of op_count small ops written directly through the journal API (op 1 creates
 * two accounts, every later op one transfer: 256-byte entries), for the server to recover. */
static void journal_small_write(uint64_t op_count) {
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_uring_init(directory, &storage), 0);
    sz_journal_format_options_t format = {.segment_size = 4u << 20};
    cr_assert_eq(sz_journal_format(storage, &format), 0);
    sz_journal_options_t options = {0};
    sz_journal_t *journal = NULL;
    cr_assert_eq(sz_journal_open(storage, &options, &journal, NULL), 0);
    uint64_t timestamp = 1600000000000000000ull;
    for (uint64_t op = 1; op <= op_count; op++) {
        uint8_t body[2 * 128];
        memset(body, 0, sizeof(body));
        sz_journal_append_t entry = {.timestamp = timestamp, .client_id = 5,
                                     .request_number = (uint32_t)op};
        if (op == 1) {
            sz_account_t accounts[2] = {{.id = 1, .ledger = 1, .code = 1},
                                        {.id = 2, .ledger = 1, .code = 1}};
            memcpy(body, accounts, sizeof(accounts));
            entry.operation = SZ_OPERATION_CREATE_ACCOUNTS;
            entry.event_count = 2;
        } else {
            sz_transfer_t transfer = {.id = op, .debit_account_id = 1 + op % 2,
                                      .credit_account_id = 2 - op % 2, .amount = 1,
                                      .ledger = 1, .code = 1};
            memcpy(body, &transfer, sizeof(transfer));
            entry.operation = SZ_OPERATION_CREATE_TRANSFERS;
            entry.event_count = 1;
        }
        timestamp += entry.event_count;
        int result = sz_journal_append(journal, &entry, body, NULL);
        /* Bounded: each poll completes a write or fails. */
        while (result == -EAGAIN) {
            cr_assert_eq(sz_journal_poll(journal, true), 0);
            result = sz_journal_append(journal, &entry, body, NULL);
        }
        cr_assert_eq(result, 0);
        cr_assert_eq(sz_journal_poll(journal, false), 0);
    }
    cr_assert_eq(sz_journal_flush(journal), 0);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
}

Test(stream, a_subscriber_catches_up_on_200000_small_entries,
     .init = setup, .fini = teardown, .timeout = 180) {
    journal_small_write(200000);
    server_start(&server, NULL);
    journal_read();
    cr_assert_eq(journal_copy.op_last, 200000);
    uint64_t started_ms = sz_test_clock_ms();
    subscriber_t *subscriber = subscriber_open(server.address, 1);
    subscriber_until(subscriber, journal_copy.op_last);
    uint64_t elapsed_ms = sz_test_clock_ms() - started_ms + 1;
    subscriber_matches_journal(subscriber);
    fprintf(stderr,
            "test_stream: catch-up of %llu small entries (%llu bytes) in %llu ms: %llu "
            "entries/s, %llu MB/s (provisional: shared machine)\n",
            (unsigned long long)journal_copy.op_last, (unsigned long long)subscriber->bytes,
            (unsigned long long)elapsed_ms,
            (unsigned long long)(journal_copy.op_last * 1000 / elapsed_ms),
            (unsigned long long)(subscriber->bytes / 1000 / elapsed_ms));
    subscriber_close(subscriber);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}

typedef struct position_find {
    uint64_t op;
    sz_journal_position_t position;
} position_find_t;

static int position_collect(const sz_journal_header_t *header, const void *body,
                            const sz_journal_position_t *position, void *context) {
    (void)body;
    position_find_t *find = context;
    if (header->op != find->op) return 0;
    find->position = *position;
    return 1; /* found: stop the read-only scan */
}

static void file_flip(const char *name, uint64_t offset) {
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", directory, name);
    FILE *file = fopen(path, "r+b");
    cr_assert_not_null(file);
    cr_assert_eq(fseek(file, (long)offset, SEEK_SET), 0);
    int byte = fgetc(file);
    cr_assert_neq(byte, EOF);
    cr_assert_eq(fseek(file, (long)offset, SEEK_SET), 0);
    cr_assert_neq(fputc(byte ^ 0x10, file), EOF);
    cr_assert_eq(fclose(file), 0);
}

static bool log_contains(const char *text) {
    FILE *log = fopen(server.log_path, "r");
    if (log == NULL) return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), log) != NULL) found = strstr(line, text) != NULL;
    fclose(log);
    return found;
}

Test(stream, a_damaged_entry_is_never_sent_and_the_server_says_so,
     .init = setup, .fini = teardown, .timeout = 120) {
    server_start(&server, NULL);
    sumzero_client_t *client = client_open(&server);
    accounts_create(client);
    writer_t writer;
    pthread_t thread;
    writer_start(&writer, &thread, client, 1, 20000);
    writer_join(&writer, thread);
    journal_read();
    /* Where op 10 is, from a read-only open of the journal. */
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_uring_init(directory, &storage), 0);
    position_find_t find = {.op = 10};
    sz_journal_options_t options = {.read_only = true, .on_entry = position_collect,
                                    .entry_context = &find};
    sz_journal_t *journal = NULL;
    cr_assert_eq(sz_journal_open(storage, &options, &journal, NULL), 0);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
    char name[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(find.position.segment, name);
    file_flip(name, find.position.offset + SZ_JOURNAL_HEADER_SIZE + 3); /* in its body */
    subscriber_t *subscriber = subscriber_open(server.address, 1);
    uint64_t deadline_ms = sz_test_clock_ms() + 1000;
    while (sz_test_clock_ms() < deadline_ms) subscriber_read(subscriber, 50);
    cr_assert_eq(subscriber->op_next, 10,
                 "ops 1..9 came, op 10 never did (next %llu, segment %u offset %llu)",
                 (unsigned long long)subscriber->op_next, find.position.segment,
                 (unsigned long long)find.position.offset);
    subscriber_matches_journal(subscriber);
    cr_assert(log_contains("msg=subscription_journal_damaged"), "the server logs the damage");
    subscriber_close(subscriber);
    file_flip(name, find.position.offset + SZ_JOURNAL_HEADER_SIZE + 3);
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}

/* Stops the server under a subscriber (SIGTERM or SIGKILL) while a writer runs, restarts
 * it on the same port, and checks the subscriber resumed without a gap or a duplicate. */
static void restart_under_subscriber(int signal_number) {
    server_start(&server, NULL);
    char address[64];
    snprintf(address, sizeof(address), "%s", server.address);
    subscriber_t *subscriber = subscriber_open(address, 1);
    sumzero_client_t *client = client_open(&server);
    accounts_create(client);
    writer_t writer;
    pthread_t thread;
    writer_start(&writer, &thread, client, 1, 60000);
    /* Mid-stream: once the subscriber has a good part of it. */
    uint64_t deadline_ms = sz_test_clock_ms() + WAIT_MS;
    while (subscriber->op_next < 80 && sz_test_clock_ms() < deadline_ms) {
        subscriber_read(subscriber, 10);
    }
    cr_assert_geq(subscriber->op_next, 80);
    int status = sz_test_server_stop(&server, signal_number);
    cr_assert_eq(status, signal_number == SIGKILL ? 128 + SIGKILL : 0);
    uint64_t op_before = subscriber->op_next - 1;
    /* Down: the source keeps trying and hands out nothing new beyond what was sent. */
    subscriber_read(subscriber, 200);
    server_start(&server, address);
    while (!atomic_load(&writer.done)) subscriber_read(subscriber, 10);
    writer_join(&writer, thread);
    journal_read();
    subscriber_until(subscriber, journal_copy.op_last);
    subscriber_matches_journal(subscriber);
    fprintf(stderr, "test_stream: %s at op %llu; resumed to op %llu\n",
            signal_number == SIGKILL ? "SIGKILL" : "SIGTERM", (unsigned long long)op_before,
            (unsigned long long)journal_copy.op_last);
    subscriber_close(subscriber);
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
}

Test(stream, the_source_resumes_without_gap_or_duplicate_after_a_restart,
     .init = setup, .fini = teardown, .timeout = 180) {
    restart_under_subscriber(SIGTERM);
}

Test(stream, the_source_resumes_without_gap_or_duplicate_after_sigkill,
     .init = setup, .fini = teardown, .timeout = 180) {
    restart_under_subscriber(SIGKILL);
}
