/* gateway_harness.h: a gateway on 127.0.0.1:0 running on its own thread, with a ledger
 * thread behind its rings, for the gateway tests and the gateway benchmark.
 *
 * The ledger side is a small stand-in that answers every request from the request ring
 * in order: an OK reply that echoes the request's identity, with one 128-byte record per
 * id for lookup_accounts (so a test can ask for big replies) and no records otherwise.
 * `hold` keeps requests in the ring unanswered (to have requests in flight at will).
 * Header-only. */
#ifndef SZ_TEST_GATEWAY_HARNESS_H
#define SZ_TEST_GATEWAY_HARNESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frames.h"
#include "gateway/gateway.h"

typedef struct harness {
    sz_ring_t requests;
    sz_ring_t replies;
    sz_metrics_t metrics;
    sz_gateway_t *gateway;
    pthread_t gateway_thread;
    pthread_t ledger_thread;
    _Atomic bool ledger_stop;
    _Atomic bool hold;
    _Atomic uint64_t answered;
    uint64_t op;
    int run_result;
    bool running;
} harness_t;

static void harness_answer(sz_message_t *message, uint64_t op) {
    const sz_frame_header_t *request = sz_message_request_header(message);
    sz_frame_header_t *reply = sz_message_reply_header(message);
    memset(reply, 0, sizeof(*reply));
    reply->cluster_id = request->cluster_id;
    reply->client_id = request->client_id;
    reply->request_number = request->request_number;
    reply->trace_id = request->trace_id;
    reply->operation = request->operation;
    reply->command = SZ_COMMAND_REPLY;
    reply->op = op;
    reply->status = SZ_STATUS_OK;
    if (request->operation == SZ_OPERATION_LOOKUP_ACCOUNTS) {
        uint32_t count = request->body_size / 16;
        sz_account_t *accounts = (sz_account_t *)(message->reply + SZ_FRAME_HEADER_SIZE);
        const uint8_t *ids = message->request + SZ_FRAME_HEADER_SIZE;
        for (uint32_t index = 0; index < count; index++) {
            memset(&accounts[index], 0, sizeof(accounts[index]));
            memcpy(&accounts[index].id, ids + (size_t)index * 16, 16);
            accounts[index].ledger = 1;
            accounts[index].code = 1;
        }
        reply->body_size = count * (uint32_t)sizeof(sz_account_t);
    }
    sz_frame_header_seal(reply, message->reply + SZ_FRAME_HEADER_SIZE);
    message->reply_size = SZ_FRAME_HEADER_SIZE + reply->body_size;
}

static void *harness_ledger_main(void *context) {
    harness_t *harness = context;
    void *batch[64];
    while (!atomic_load(&harness->ledger_stop)) {
        if (atomic_load(&harness->hold)) {
            struct timespec pause = {.tv_nsec = 200000}; /* look at `hold` again soon */
            nanosleep(&pause, NULL);
            continue;
        }
        if (!sz_ring_wait_readable(&harness->requests, 2000, 20000000)) continue;
        uint32_t count = sz_ring_pop(&harness->requests, batch, 64);
        for (uint32_t index = 0; index < count; index++) {
            harness_answer(batch[index], ++harness->op);
        }
        uint32_t pushed = sz_ring_push(&harness->replies, batch, count);
        SZ_ASSERT(pushed == count);
        atomic_fetch_add(&harness->answered, count);
        sz_gateway_wake(harness->gateway);
    }
    return NULL;
}

static void *harness_gateway_main(void *context) {
    harness_t *harness = context;
    harness->run_result = sz_gateway_run(harness->gateway);
    return NULL;
}

/* Opens the gateway with config (rings and metrics are filled in here) and starts both
 * threads. Returns 0 or the open error. */
static inline int harness_start(harness_t *harness, sz_gateway_config_t config) {
    memset(harness, 0, sizeof(*harness));
    SZ_ASSERT(sz_ring_init(&harness->requests, 1024) == 0);
    SZ_ASSERT(sz_ring_init(&harness->replies, 1024) == 0);
    config.cluster_id = TEST_CLUSTER_ID;
    if (config.address == NULL) config.address = "127.0.0.1:0";
    config.requests = &harness->requests;
    config.replies = &harness->replies;
    config.metrics = &harness->metrics;
    char error[256];
    int result = sz_gateway_open(&config, &harness->gateway, error, sizeof(error));
    if (result != 0) {
        fprintf(stderr, "harness: %s\n", error);
        return result;
    }
    SZ_ASSERT(pthread_create(&harness->gateway_thread, NULL, harness_gateway_main, harness) == 0);
    SZ_ASSERT(pthread_create(&harness->ledger_thread, NULL, harness_ledger_main, harness) == 0);
    harness->running = true;
    return 0;
}

/* Stops the gateway (drain), then the ledger; returns what sz_gateway_run() returned. */
static inline int harness_stop(harness_t *harness) {
    if (!harness->running) return 0;
    sz_gateway_stop(harness->gateway);
    pthread_join(harness->gateway_thread, NULL);
    atomic_store(&harness->hold, false);
    atomic_store(&harness->ledger_stop, true);
    pthread_join(harness->ledger_thread, NULL);
    sz_gateway_close(harness->gateway);
    sz_ring_deinit(&harness->requests);
    sz_ring_deinit(&harness->replies);
    harness->running = false;
    return harness->run_result;
}

static inline uint64_t harness_metric(const _Atomic uint64_t *value) {
    return atomic_load_explicit(value, memory_order_relaxed);
}

#endif
