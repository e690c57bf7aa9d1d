/* test_gateway.c: proves the gateway thread with real sockets on 127.0.0.1, a real epoll
 * loop and real rings: a thousand connections at once are each answered; every kind of bad
 * frame gets its status (and a close where framing is lost) while other clients go on
 * being served; idle connections time out; a client that never reads its replies, one
 * that floods past its rate limit, and one past the connection limit cannot stop another
 * client; an exhausted message pool only slows clients down; /metrics shows the counters
 * move; stopping drains requests already in flight. Behind the gateway runs the real
 * ledger thread (sz_replica, journaling with io_uring into a data directory in /tmp);
 * see gateway_harness.h. Waits poll a condition with a deadline; nothing sleeps blind. */
#include <criterion/criterion.h>
#include <stdalign.h>
#include <sched.h>
#include <stdlib.h>

#include "client.h"
#include "gateway_harness.h"

static alignas(64) uint8_t frame[SZ_FRAME_SIZE_MAX];
static alignas(64) uint8_t body[SZ_FRAME_BODY_SIZE_MAX];

/* Polls condition until it holds or timeout_ms passes; yields in between. */
#define WAIT_UNTIL(condition, timeout_ms)                                                  \
    do {                                                                                   \
        uint64_t wait_deadline_ns = test_clock_ns() + (uint64_t)(timeout_ms) * 1000000ull; \
        while (!(condition) && test_clock_ns() < wait_deadline_ns) {                       \
            struct timespec wait_pause = {.tv_nsec = 1000000};                             \
            nanosleep(&wait_pause, NULL);                                                  \
        }                                                                                  \
        cr_assert((condition), "timed out waiting for: %s", #condition);                   \
    } while (0)

static harness_t harness;

static uint16_t start(sz_gateway_config_t config) {
    if (config.metrics_address == NULL) config.metrics_address = "127.0.0.1:0";
    cr_assert_eq(harness_start(&harness, HARNESS_LEDGER_REAL, config), 0);
    return sz_gateway_port(harness.gateway);
}

static void stop(void) { cr_assert_eq(harness_stop(&harness), 0); }

/* After a failed assertion the test never reaches stop(): stop here, so the data
 * directory in /tmp goes too. A no-op after stop(). */
static void teardown(void) { (void)harness_stop(&harness); }

TestSuite(gateway, .fini = teardown);

/* Sends a frame already in `frame` and checks that its reply is OK. */
static void frame_ok(int fd, uint32_t size, sz_frame_header_t *reply) {
    const sz_frame_header_t *request = (const sz_frame_header_t *)frame;
    cr_assert_eq(test_send(fd, frame, size), 0);
    cr_assert_eq(test_reply_read(fd, reply, body), 0);
    cr_assert_eq(reply->status, SZ_STATUS_OK, "status %s", sz_status_name(reply->status));
    cr_assert(reply->client_id == request->client_id);
    cr_assert_eq(reply->request_number, request->request_number);
}

/* Sends one well-formed request (its events may be refused by the ledger, which is not the
 * point) and checks its OK reply. */
static void request_ok(int fd, uint32_t operation, uint32_t events, sz_u128 client_id,
                       uint32_t request_number) {
    uint32_t size = test_frame_build(frame, operation, events, client_id, request_number, 1);
    cr_assert_eq(test_send(fd, frame, size), 0);
    sz_frame_header_t reply;
    cr_assert_eq(test_reply_read(fd, &reply, body), 0);
    cr_assert_eq(reply.status, SZ_STATUS_OK, "status %s", sz_status_name(reply.status));
    cr_assert(reply.client_id == client_id);
    cr_assert_eq(reply.request_number, request_number);
    cr_assert_eq(reply.operation, operation);
}

static uint64_t requests_with(uint32_t operation, sz_status_t status) {
    return harness_metric(&harness.metrics.requests[operation][status]);
}

Test(gateway, a_thousand_connections_at_once_each_get_their_reply) {
    enum { COUNT = 1000 };
    uint16_t port = start((sz_gateway_config_t){.connections_max = COUNT + 24});
    static int fds[COUNT];
    for (uint32_t index = 0; index < COUNT; index++) {
        fds[index] = test_connect(port, 0);
        cr_assert_geq(fds[index], 0, "connect %u: %s", index, strerror(-fds[index]));
    }
    /* Every connection sends before any reads: all are open at once. */
    for (uint32_t index = 0; index < COUNT; index++) {
        uint32_t size = test_frame_build(frame, SZ_OPERATION_CREATE_TRANSFERS, 1 + index % 3,
                                         5000 + index, index + 1, index);
        cr_assert_eq(test_send(fds[index], frame, size), 0);
    }
    WAIT_UNTIL(harness_metric(&harness.metrics.connections_open) == COUNT, 10000);
    for (uint32_t index = 0; index < COUNT; index++) {
        sz_frame_header_t reply;
        cr_assert_eq(test_reply_read(fds[index], &reply, body), 0, "reply %u", index);
        cr_assert_eq(reply.status, SZ_STATUS_OK);
        cr_assert(reply.client_id == 5000 + index);
        cr_assert_eq(reply.request_number, index + 1);
    }
    cr_assert_eq(requests_with(SZ_OPERATION_CREATE_TRANSFERS, SZ_STATUS_OK), COUNT);
    for (uint32_t index = 0; index < COUNT; index++) close(fds[index]);
    WAIT_UNTIL(harness_metric(&harness.metrics.connections_open) == 0, 10000);
    cr_assert_eq(harness_metric(&harness.metrics.messages_in_use), 0);
    stop();
}

Test(gateway, pipelined_requests_come_back_in_order) {
    uint16_t port = start((sz_gateway_config_t){.pipeline_max = 4});
    int fd = test_connect(port, 0);
    cr_assert_geq(fd, 0);
    sz_frame_header_t created;
    frame_ok(fd, test_accounts_frame(frame, 1, 3, 76, 1), &created);
    cr_assert_eq(created.body_size, 0, "every account created");
    /* 100 frames in one write: the gateway takes 4 at a time. */
    static alignas(64) uint8_t frames[100 * (128 + 3 * 16)];
    uint32_t size = 0;
    for (uint32_t index = 0; index < 100; index++) {
        size += test_lookup_frame(frames + size, 1, 3, 77, index + 1);
    }
    cr_assert_eq(test_send(fd, frames, size), 0);
    for (uint32_t index = 0; index < 100; index++) {
        sz_frame_header_t reply;
        cr_assert_eq(test_reply_read(fd, &reply, body), 0);
        cr_assert_eq(reply.status, SZ_STATUS_OK);
        cr_assert_eq(reply.request_number, index + 1);
        cr_assert_eq(reply.body_size, 3 * 128);
    }
    cr_assert_eq(harness_metric(&harness.metrics.batch_events.count), 101);
    cr_assert_eq(harness_metric(&harness.metrics.batch_events.sum), 303);
    close(fd);
    stop();
}

Test(gateway, full_size_frames_pass_whole_in_both_directions) {
    uint16_t port = start((sz_gateway_config_t){0});
    int fd = test_connect(port, 0);
    cr_assert_geq(fd, 0);
    sz_frame_header_t reply;
    /* 8190 accounts in (1 MiB), all created. */
    frame_ok(fd, test_accounts_frame(frame, 1, SZ_BATCH_EVENTS_MAX, 3, 1), &reply);
    cr_assert_eq(reply.body_size, 0);
    for (uint32_t round = 0; round < 4; round++) {
        /* 8190 transfers in (1 MiB), all applied. */
        uint32_t size = test_transfers_frame(frame, 1 + round * SZ_BATCH_EVENTS_MAX,
                                             SZ_BATCH_EVENTS_MAX, SZ_BATCH_EVENTS_MAX, 3,
                                             round * 2 + 2);
        frame_ok(fd, size, &reply);
        cr_assert_eq(reply.body_size, 0, "every transfer applied");
        /* 8190 ids out, 8190 accounts (1 MiB) back, each with the transfers so far. */
        frame_ok(fd, test_lookup_frame(frame, 1, SZ_BATCH_EVENTS_MAX, 3, round * 2 + 3), &reply);
        cr_assert_eq(reply.body_size, SZ_FRAME_BODY_SIZE_MAX);
        const sz_account_t *accounts = (const sz_account_t *)body;
        cr_assert(accounts[8189].id == SZ_BATCH_EVENTS_MAX);
        cr_assert(accounts[8189].debits_posted == round + 1);
        cr_assert(accounts[8189].credits_posted == round + 1);
    }
    close(fd);
    stop();
}

/* ---- bad frames ------------------------------------------------------------------- */

/* Sends bytes and expects one error reply with status, then (if closes) the end. */
static void expect_error(uint16_t port, const void *bytes, size_t size, sz_status_t status,
                         bool authentic, bool closes) {
    int fd = test_connect(port, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(test_send(fd, bytes, size), 0);
    sz_frame_header_t reply;
    cr_assert_eq(test_reply_read(fd, &reply, NULL), 0);
    cr_assert_eq(reply.status, status, "got %s, wanted %s", sz_status_name(reply.status),
                 sz_status_name(status));
    cr_assert_eq(reply.body_size, 0);
    const sz_frame_header_t *request = bytes;
    if (authentic) {
        cr_assert(reply.client_id == request->client_id);
        cr_assert_eq(reply.request_number, request->request_number);
    } else {
        cr_assert(reply.client_id == 0);
        cr_assert_eq(reply.request_number, 0);
    }
    if (closes) {
        cr_assert(test_closed_by_server(fd), "the connection should close");
    } else {
        request_ok(fd, SZ_OPERATION_CREATE_ACCOUNTS, 2, request->client_id, 1000);
    }
    close(fd);
}

/* A bystander: a connection opened before the bad frames, served after each. */
static void bystander_served(int fd, uint32_t *request_number) {
    *request_number += 1;
    request_ok(fd, SZ_OPERATION_CREATE_TRANSFERS, 1, 99, *request_number);
}

static sz_frame_header_t *fresh(uint32_t operation, uint32_t events) {
    test_frame_build(frame, operation, events, 31, 7, 2);
    return (sz_frame_header_t *)frame;
}

static size_t frame_size(void) { return 128 + ((sz_frame_header_t *)frame)->body_size; }

Test(gateway, every_bad_header_gets_its_status_then_a_close_while_others_are_served) {
    uint16_t port = start((sz_gateway_config_t){0});
    int bystander = test_connect(port, 0);
    uint32_t bystander_number = 0;
    bystander_served(bystander, &bystander_number);

    sz_frame_header_t *header = fresh(SZ_OPERATION_CREATE_TRANSFERS, 2);
    header->checksum_header ^= 1;
    expect_error(port, frame, frame_size(), SZ_STATUS_HEADER_CHECKSUM_INVALID, false, true);
    bystander_served(bystander, &bystander_number);

    header = fresh(SZ_OPERATION_CREATE_TRANSFERS, 2);
    header->magic = 0x50545448; /* "HTTP" */
    expect_error(port, frame, frame_size(), SZ_STATUS_MAGIC_INVALID, false, true);

    header = fresh(SZ_OPERATION_CREATE_TRANSFERS, 2);
    header->version = 2;
    sz_frame_header_t copy = *header;
    expect_error(port, &copy, sizeof(copy), SZ_STATUS_VERSION_UNSUPPORTED, false, true);
    bystander_served(bystander, &bystander_number);

    /* The rest are authentic headers: sealed, so their identity is echoed. */
    header = fresh(SZ_OPERATION_CREATE_TRANSFERS, 2);
    header->cluster_id += 1;
    sz_frame_header_seal(header, frame + 128);
    expect_error(port, frame, frame_size(), SZ_STATUS_CLUSTER_INVALID, true, true);

    header = fresh(SZ_OPERATION_CREATE_TRANSFERS, 0);
    header->operation = 9;
    sz_frame_header_seal(header, NULL);
    expect_error(port, frame, 128, SZ_STATUS_OPERATION_INVALID, true, true);
    bystander_served(bystander, &bystander_number);

    header = fresh(SZ_OPERATION_CREATE_TRANSFERS, 2);
    header->body_size = 200; /* not a whole number of 128-byte transfers */
    sz_frame_header_seal(header, frame + 128);
    expect_error(port, frame, 128 + 200, SZ_STATUS_BODY_SIZE_INVALID, true, true);

    header = fresh(SZ_OPERATION_LOOKUP_ACCOUNTS, SZ_BATCH_EVENTS_MAX);
    header->body_size = (SZ_BATCH_EVENTS_MAX + 1) * 16; /* one id too many */
    sz_frame_header_seal(header, frame + 128);
    expect_error(port, frame, 128, SZ_STATUS_BODY_TOO_LARGE, true, true);

    /* Over the frame limit: refused from the header alone, no body is read. */
    header = fresh(SZ_OPERATION_CREATE_TRANSFERS, 0);
    header->body_size = SZ_FRAME_BODY_SIZE_MAX + 128;
    test_header_reseal(header);
    expect_error(port, frame, 128, SZ_STATUS_BODY_TOO_LARGE, true, true);

    header = fresh(SZ_OPERATION_CREATE_TRANSFERS, 1);
    header->client_id = 0;
    sz_frame_header_seal(header, frame + 128);
    expect_error(port, frame, frame_size(), SZ_STATUS_CLIENT_ID_INVALID, true, true);

    header = fresh(SZ_OPERATION_CREATE_TRANSFERS, 1);
    header->command = SZ_COMMAND_REPLY;
    sz_frame_header_seal(header, frame + 128);
    expect_error(port, frame, frame_size(), SZ_STATUS_COMMAND_INVALID, true, true);

    header = fresh(SZ_OPERATION_CREATE_TRANSFERS, 1);
    header->reserved[3] = 1;
    sz_frame_header_seal(header, frame + 128);
    expect_error(port, frame, frame_size(), SZ_STATUS_RESERVED_NOT_ZERO, true, true);
    bystander_served(bystander, &bystander_number);

    cr_assert_eq(harness_metric(&harness.metrics.frames_invalid), 11);
    cr_assert_eq(requests_with(0, SZ_STATUS_HEADER_CHECKSUM_INVALID), 1);
    cr_assert_eq(requests_with(0, SZ_STATUS_OPERATION_INVALID), 1);
    cr_assert_eq(requests_with(SZ_OPERATION_CREATE_TRANSFERS, SZ_STATUS_CLUSTER_INVALID), 1);
    close(bystander);
    stop();
}

Test(gateway, a_subscribe_without_a_stream_thread_is_refused_and_closed_while_others_are_served) {
    uint16_t port = start((sz_gateway_config_t){0});
    int bystander = test_connect(port, 0);
    cr_assert_geq(bystander, 0);
    uint32_t request_number = 0;
    bystander_served(bystander, &request_number);
    test_frame_build(frame, SZ_OPERATION_SUBSCRIBE, 1, 31, 7, 2);
    expect_error(port, frame, frame_size(), SZ_STATUS_OPERATION_INVALID, true, true);
    bystander_served(bystander, &request_number);
    close(bystander);
    stop();
}

Test(gateway, a_bad_body_checksum_gets_its_status_and_the_connection_stays) {
    uint16_t port = start((sz_gateway_config_t){0});
    fresh(SZ_OPERATION_CREATE_TRANSFERS, 3);
    frame[128 + 200] ^= 0x40;
    expect_error(port, frame, frame_size(), SZ_STATUS_BODY_CHECKSUM_INVALID, true, false);
    cr_assert_eq(requests_with(SZ_OPERATION_CREATE_TRANSFERS, SZ_STATUS_BODY_CHECKSUM_INVALID),
                 1);
    stop();
}

Test(gateway, truncated_frames_get_no_reply_and_the_server_keeps_serving) {
    uint16_t port = start((sz_gateway_config_t){0});
    int bystander = test_connect(port, 0);
    uint32_t bystander_number = 0;
    size_t cuts[] = {1, 60, 127, 128, 129, 128 + 256, 128 + 4 * 128 - 1};
    for (size_t index = 0; index < sizeof(cuts) / sizeof(cuts[0]); index++) {
        fresh(SZ_OPERATION_CREATE_TRANSFERS, 4); /* the bystander's request reuses `frame` */
        int fd = test_connect(port, 0);
        cr_assert_eq(test_send(fd, frame, cuts[index]), 0);
        shutdown(fd, SHUT_WR); /* the client is done: the frame stays cut */
        cr_assert(test_closed_by_server(fd), "cut at %zu", cuts[index]);
        close(fd);
        bystander_served(bystander, &bystander_number);
    }
    cr_assert_eq(harness_metric(&harness.metrics.batch_events.count), bystander_number);
    close(bystander);
    stop();
}

Test(gateway, a_client_that_sends_garbage_is_answered_and_dropped) {
    uint16_t port = start((sz_gateway_config_t){0});
    int bystander = test_connect(port, 0);
    uint32_t bystander_number = 0;
    uint64_t seed = getenv("SUMZERO_SEED") ? strtoull(getenv("SUMZERO_SEED"), NULL, 0)
                                           : (uint64_t)time(NULL);
    fprintf(stderr, "test_gateway garbage seed=%llu\n", (unsigned long long)seed);
    srand((unsigned)seed);
    for (uint32_t round = 0; round < 20; round++) {
        static uint8_t garbage[4096];
        for (size_t index = 0; index < sizeof(garbage); index++) garbage[index] = (uint8_t)rand();
        int fd = test_connect(port, 0);
        /* The server may close before reading all of it: a failed send is fine. */
        (void)test_send(fd, garbage, sizeof(garbage));
        sz_frame_header_t reply;
        int result = test_reply_read(fd, &reply, NULL);
        if (result == 0) cr_assert_eq(reply.status, SZ_STATUS_MAGIC_INVALID);
        cr_assert(test_closed_by_server(fd));
        close(fd);
        bystander_served(bystander, &bystander_number);
    }
    close(bystander);
    stop();
}

/* ---- slow, idle, flooding and too many clients ------------------------------------ */

Test(gateway, an_idle_connection_times_out_while_others_are_served) {
    uint16_t port = start((sz_gateway_config_t){.idle_timeout_ns = 300000000ull});
    int idle = test_connect(port, 0);
    int partial = test_connect(port, 0);
    fresh(SZ_OPERATION_CREATE_TRANSFERS, 1);
    cr_assert_eq(test_send(partial, frame, 100), 0); /* a frame never finished */
    int busy = test_connect(port, 0);
    uint64_t start_ns = test_clock_ns();
    uint32_t number = 0;
    /* Keep the busy client busy past the timeout: it must not time out. */
    while (test_clock_ns() - start_ns < 600000000ull) {
        request_ok(busy, SZ_OPERATION_LOOKUP_ACCOUNTS, 1, 5, ++number);
        struct timespec pause = {.tv_nsec = 5000000};
        nanosleep(&pause, NULL); /* pacing the busy client, not waiting for anything */
    }
    cr_assert(test_closed_by_server(idle));
    cr_assert(test_closed_by_server(partial));
    uint64_t closed_after_ns = test_clock_ns() - start_ns;
    cr_assert_geq(closed_after_ns, 300000000ull);
    request_ok(busy, SZ_OPERATION_LOOKUP_ACCOUNTS, 1, 5, ++number);
    cr_assert_eq(harness_metric(&harness.metrics.connections_timed_out), 2);
    close(idle);
    close(partial);
    close(busy);
    stop();
}

/* The slow client's requests go out from their own thread: once its pipeline is full the
 * gateway stops reading them, and the sends wait for the test to read replies. */
enum { SLOW_REQUESTS = 12 };
static int slow_fd;

static void *slow_sender_main(void *context) {
    static alignas(64) uint8_t slow_frame[SZ_FRAME_SIZE_MAX];
    for (uint32_t index = 0; index < SLOW_REQUESTS; index++) {
        uint32_t size = test_lookup_frame(slow_frame, 1, SZ_BATCH_EVENTS_MAX, 8, index + 1);
        if (test_send(slow_fd, slow_frame, size) != 0) return (void *)1;
    }
    return NULL;
}

Test(gateway, a_client_that_never_reads_its_replies_does_not_stop_another) {
    uint16_t port = start((sz_gateway_config_t){.pipeline_max = 4, .messages_max = 16});
    int fast = test_connect(port, 0);
    sz_frame_header_t created;
    frame_ok(fast, test_accounts_frame(frame, 1, SZ_BATCH_EVENTS_MAX, 9, 1), &created);
    cr_assert_eq(created.body_size, 0);
    /* 12 lookups of 8190 ids: 12 MiB of replies, far more than the socket buffers take
     * (4 MiB at most on the server's side, 4 KiB on the client's). */
    slow_fd = test_connect(port, 4096);
    pthread_t sender;
    cr_assert_eq(pthread_create(&sender, NULL, slow_sender_main, NULL), 0);
    /* The slow client holds its pipeline_max messages and no more. */
    WAIT_UNTIL(harness_metric(&harness.metrics.messages_in_use) == 4 &&
                   harness_metric(&harness.metrics.batch_events.count) >= 5,
               10000);
    for (uint32_t number = 2; number <= 201; number++) {
        request_ok(fast, SZ_OPERATION_CREATE_TRANSFERS, 2, 9, number);
        cr_assert_leq(harness_metric(&harness.metrics.messages_in_use), 5);
    }
    WAIT_UNTIL(harness_metric(&harness.metrics.messages_in_use) == 4, 5000);
    /* Now the slow client reads: every reply is whole and in order. */
    for (uint32_t index = 0; index < SLOW_REQUESTS; index++) {
        sz_frame_header_t reply;
        cr_assert_eq(test_reply_read(slow_fd, &reply, body), 0, "reply %u", index);
        cr_assert_eq(reply.request_number, index + 1);
        cr_assert_eq(reply.body_size, SZ_FRAME_BODY_SIZE_MAX);
    }
    void *sender_result = NULL;
    pthread_join(sender, &sender_result);
    cr_assert_null(sender_result);
    close(slow_fd);
    close(fast);
    stop();
}

Test(gateway, a_flooding_client_is_rate_limited_while_another_is_served) {
    uint16_t port = start((sz_gateway_config_t){.requests_per_second_max = 50,
                                                .events_per_second_max = 10000});
    int flood = test_connect(port, 0);
    int calm = test_connect(port, 0);
    /* 300 requests at once, far beyond 50 per second. */
    static alignas(64) uint8_t frames[300 * (128 + 128)];
    uint32_t size = 0;
    for (uint32_t index = 0; index < 300; index++) {
        size += test_frame_build(frames + size, SZ_OPERATION_CREATE_TRANSFERS, 1, 66, index + 1,
                                 index);
    }
    cr_assert_eq(test_send(flood, frames, size), 0);
    /* The calm client, within its own limits, is served meanwhile. */
    for (uint32_t number = 1; number <= 40; number++) {
        request_ok(calm, SZ_OPERATION_CREATE_TRANSFERS, 1, 67, number);
    }
    uint32_t ok = 0, limited = 0;
    for (uint32_t index = 0; index < 300; index++) {
        sz_frame_header_t reply;
        cr_assert_eq(test_reply_read(flood, &reply, NULL), 0);
        if (reply.status == SZ_STATUS_OK) ok++;
        if (reply.status == SZ_STATUS_RATE_LIMITED) limited++;
    }
    cr_assert_eq(ok + limited, 300);
    /* A second's burst of 50, plus what refills while the 300 are read. */
    cr_assert_geq(ok, 50);
    cr_assert_lt(ok, 150, "ok %u", ok);
    cr_assert_eq(requests_with(SZ_OPERATION_CREATE_TRANSFERS, SZ_STATUS_RATE_LIMITED), limited);

    /* The events limit: one full batch drains the bucket, so the next is refused. */
    request_ok(calm, SZ_OPERATION_CREATE_TRANSFERS, SZ_BATCH_EVENTS_MAX, 67, 100);
    request_ok(calm, SZ_OPERATION_CREATE_TRANSFERS, SZ_BATCH_EVENTS_MAX, 67, 101);
    uint32_t frame_bytes = test_frame_build(frame, SZ_OPERATION_CREATE_TRANSFERS,
                                            SZ_BATCH_EVENTS_MAX, 67, 102, 1);
    cr_assert_eq(test_send(calm, frame, frame_bytes), 0);
    sz_frame_header_t reply;
    cr_assert_eq(test_reply_read(calm, &reply, NULL), 0);
    cr_assert_eq(reply.status, SZ_STATUS_RATE_LIMITED);
    cr_assert_eq(reply.request_number, 102);
    close(flood);
    close(calm);
    stop();
}

Test(gateway, connections_past_the_limit_are_closed_at_once) {
    uint16_t port = start((sz_gateway_config_t){.connections_max = 8});
    int fds[8];
    for (uint32_t index = 0; index < 8; index++) {
        fds[index] = test_connect(port, 0);
        request_ok(fds[index], SZ_OPERATION_LOOKUP_ACCOUNTS, 1, 100 + index, 1);
    }
    int extra = test_connect(port, 0);
    cr_assert_geq(extra, 0);
    cr_assert(test_closed_by_server(extra));
    close(extra);
    cr_assert_eq(harness_metric(&harness.metrics.connections_refused), 1);
    request_ok(fds[3], SZ_OPERATION_LOOKUP_ACCOUNTS, 1, 103, 2);
    /* A slot freed is a slot for a newcomer. */
    close(fds[0]);
    WAIT_UNTIL(harness_metric(&harness.metrics.connections_open) == 7, 5000);
    fds[0] = test_connect(port, 0);
    request_ok(fds[0], SZ_OPERATION_LOOKUP_ACCOUNTS, 1, 200, 1);
    for (uint32_t index = 0; index < 8; index++) close(fds[index]);
    stop();
}

Test(gateway, an_empty_pool_only_slows_clients_down) {
    uint16_t port = start((sz_gateway_config_t){.messages_max = 3, .pipeline_max = 2});
    enum { CLIENTS = 12, REQUESTS = 30 };
    int fds[CLIENTS];
    static alignas(64) uint8_t frames[REQUESTS * (128 + 5 * 128)];
    for (uint32_t client = 0; client < CLIENTS; client++) {
        fds[client] = test_connect(port, 0);
        uint32_t size = 0;
        for (uint32_t index = 0; index < REQUESTS; index++) {
            size += test_frame_build(frames + size, SZ_OPERATION_CREATE_ACCOUNTS, 5, 300 + client,
                                     index + 1, index);
        }
        cr_assert_eq(test_send(fds[client], frames, size), 0);
    }
    for (uint32_t client = 0; client < CLIENTS; client++) {
        for (uint32_t index = 0; index < REQUESTS; index++) {
            sz_frame_header_t reply;
            cr_assert_eq(test_reply_read(fds[client], &reply, NULL), 0);
            cr_assert_eq(reply.status, SZ_STATUS_OK);
            cr_assert_eq(reply.request_number, index + 1);
        }
        close(fds[client]);
    }
    cr_assert_eq(requests_with(SZ_OPERATION_CREATE_ACCOUNTS, SZ_STATUS_OK), CLIENTS * REQUESTS);
    cr_assert_eq(harness_metric(&harness.metrics.events[SZ_OPERATION_CREATE_ACCOUNTS]),
                 CLIENTS * REQUESTS * 5);
    stop();
}

/* ---- metrics ---------------------------------------------------------------------- */

/* One HTTP exchange with the metrics endpoint; returns the whole response. */
static char *http_get(uint16_t port, const char *request) {
    int fd = test_connect(port, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(test_send(fd, request, strlen(request)), 0);
    size_t capacity = 1 << 20, size = 0;
    char *response = malloc(capacity);
    while (size + 1 < capacity) {
        ssize_t received = recv(fd, response + size, capacity - 1 - size, 0);
        if (received <= 0) break;
        size += (size_t)received;
    }
    response[size] = 0;
    close(fd);
    return response;
}

/* The value on the sample line that starts with line_start (not a HELP line). */
static uint64_t metric_value(const char *response, const char *line_start) {
    char needle[256];
    snprintf(needle, sizeof(needle), "\n%s", line_start);
    const char *at = strstr(response, needle);
    cr_assert_not_null(at, "no line %s", line_start);
    return strtoull(at + strlen(needle), NULL, 10);
}

Test(gateway, metrics_over_http_show_the_counters_move) {
    uint16_t port = start((sz_gateway_config_t){0});
    uint16_t metrics_port = sz_gateway_metrics_port(harness.gateway);
    cr_assert_neq(metrics_port, 0);
    char *before = http_get(metrics_port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(strncmp(before, "HTTP/1.1 200 OK\r\n", 17) == 0, "%.40s", before);
    cr_assert_not_null(strstr(before, "Content-Type: text/plain; version=0.0.4"));
    const char *ok_line = "sumzero_requests_total{operation=\"create_transfers\",status=\"ok\"} ";
    cr_assert_eq(metric_value(before, ok_line), 0);

    int fd = test_connect(port, 0);
    for (uint32_t number = 1; number <= 7; number++) {
        request_ok(fd, SZ_OPERATION_CREATE_TRANSFERS, 3, 12, number);
    }
    fresh(SZ_OPERATION_CREATE_TRANSFERS, 1);
    frame[200] ^= 1;
    cr_assert_eq(test_send(fd, frame, frame_size()), 0);
    sz_frame_header_t reply;
    cr_assert_eq(test_reply_read(fd, &reply, NULL), 0);
    close(fd);

    char *after = http_get(metrics_port, "GET /metrics HTTP/1.0\r\n\r\n");
    cr_assert_eq(metric_value(after, ok_line), 7);
    cr_assert_eq(metric_value(after, "sumzero_events_total{operation=\"create_transfers\"} "), 21);
    cr_assert_eq(metric_value(after, "sumzero_requests_total{operation=\"create_transfers\","
                                     "status=\"body_checksum_invalid\"} "), 1);
    cr_assert_eq(metric_value(after, "sumzero_frames_invalid_total "), 1);
    cr_assert_eq(metric_value(after, "sumzero_connections_accepted_total "), 1);
    cr_assert_eq(metric_value(after, "sumzero_batch_events_bucket{le=\"4\"} "), 7);
    cr_assert_eq(metric_value(after, "sumzero_batch_events_count "), 7);
    cr_assert_eq(metric_value(after, "sumzero_request_latency_seconds_count "), 8);
    cr_assert_gt(metric_value(after, "sumzero_received_bytes_total "), 8 * 128);
    cr_assert_not_null(strstr(after, "sumzero_request_ring_occupancy 0\n"));

    char *missing = http_get(metrics_port, "GET /other HTTP/1.1\r\n\r\n");
    cr_assert(strncmp(missing, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
    char *post = http_get(metrics_port, "POST /metrics HTTP/1.1\r\n\r\n");
    cr_assert(strncmp(post, "HTTP/1.1 404", 12) == 0);
    /* A request that never ends is cut off at its bound. */
    static char endless[8192];
    memset(endless, 'a', sizeof(endless) - 1);
    char *cut = http_get(metrics_port, endless);
    cr_assert_eq(cut[0], 0);
    free(before);
    free(after);
    free(missing);
    free(post);
    free(cut);
    stop();
}

/* ---- stopping --------------------------------------------------------------------- */

Test(gateway, stopping_answers_the_requests_in_flight_then_closes) {
    uint16_t port = start((sz_gateway_config_t){0});
    atomic_store(&harness.hold, true);
    enum { CLIENTS = 3, REQUESTS = 5 };
    int fds[CLIENTS];
    for (uint32_t client = 0; client < CLIENTS; client++) {
        fds[client] = test_connect(port, 0);
        for (uint32_t index = 0; index < REQUESTS; index++) {
            uint32_t size = test_frame_build(frame, SZ_OPERATION_CREATE_TRANSFERS, 2, 40 + client,
                                             index + 1, index);
            cr_assert_eq(test_send(fds[client], frame, size), 0);
        }
    }
    /* All 15 are in the ledger's hands when the stop comes. */
    WAIT_UNTIL(harness_metric(&harness.metrics.batch_events.count) == CLIENTS * REQUESTS, 5000);
    sz_gateway_stop(harness.gateway);
    /* The listener closes first: a newcomer is refused. */
    WAIT_UNTIL(test_connect(port, 0) == -ECONNREFUSED, 5000);
    atomic_store(&harness.hold, false);
    for (uint32_t client = 0; client < CLIENTS; client++) {
        for (uint32_t index = 0; index < REQUESTS; index++) {
            sz_frame_header_t reply;
            cr_assert_eq(test_reply_read(fds[client], &reply, NULL), 0);
            cr_assert_eq(reply.status, SZ_STATUS_OK);
            cr_assert_eq(reply.request_number, index + 1);
        }
        cr_assert(test_closed_by_server(fds[client]));
        close(fds[client]);
    }
    stop();
}

Test(gateway, a_busy_address_is_an_open_error_with_a_clear_line) {
    uint16_t port = start((sz_gateway_config_t){0});
    char address[64];
    snprintf(address, sizeof(address), "127.0.0.1:%u", port);
    sz_ring_t requests, replies;
    cr_assert_eq(sz_ring_init(&requests, 64), 0);
    cr_assert_eq(sz_ring_init(&replies, 64), 0);
    sz_metrics_t metrics;
    memset(&metrics, 0, sizeof(metrics));
    sz_gateway_config_t config = {.address = address, .requests = &requests,
                                  .replies = &replies, .metrics = &metrics};
    sz_gateway_t *second = NULL;
    char error[256];
    cr_assert_eq(sz_gateway_open(&config, &second, error, sizeof(error)), -EADDRINUSE);
    cr_assert_null(second);
    cr_assert_not_null(strstr(error, address), "%s", error);
    config.address = "127.0.0.1";
    cr_assert_eq(sz_gateway_open(&config, &second, error, sizeof(error)), -EINVAL);
    config.address = "127.0.0.1:0";
    config.messages_max = 128; /* more than the rings hold */
    cr_assert_eq(sz_gateway_open(&config, &second, error, sizeof(error)), -EINVAL);
    sz_ring_deinit(&requests);
    sz_ring_deinit(&replies);
    stop();
}
