/* gateway_harness.h: a gateway on 127.0.0.1:0 running on its own thread, with a ledger
 * thread behind its rings, for the gateway tests and the gateway benchmark.
 *
 * Two ledgers:
 * - HARNESS_LEDGER_REAL (the tests): the real ledger thread, sz_replica, on a data
 *   directory formatted in /tmp, with io_uring and fdatasync. Between the gateway's
 *   request ring and the replica's runs a small valve thread that passes requests on in
 *   order; while `hold` is set it passes nothing, so a test can have requests in flight
 *   at will.
 * - HARNESS_LEDGER_STAND_IN (bench_gateway only, to measure the gateway alone): a thread
 *   that answers every request at once with an OK reply echoing the request's identity,
 *   one 128-byte account per id for lookup_accounts and no records otherwise.
 * Header-only. */
#ifndef SZ_TEST_GATEWAY_HARNESS_H
#define SZ_TEST_GATEWAY_HARNESS_H

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frames.h"
#include "gateway/gateway.h"
#include "replica/replica.h"

typedef enum harness_ledger {
    HARNESS_LEDGER_REAL = 0,
    HARNESS_LEDGER_STAND_IN,
} harness_ledger_t;

typedef struct harness {
    harness_ledger_t ledger;
    sz_ring_t requests;        /* gateway -> valve (or the stand-in) */
    sz_ring_t ledger_requests; /* valve -> replica */
    sz_ring_t replies;         /* replica (or the stand-in) -> gateway */
    sz_metrics_t metrics;
    sz_gateway_t *gateway;
    sz_replica_t *replica;
    sz_storage_t *storage;
    char directory[64];
    pthread_t gateway_thread;
    pthread_t ledger_thread;
    pthread_t valve_thread;
    _Atomic bool valve_stop;
    _Atomic bool stand_in_stop;
    _Atomic bool hold;
    uint64_t stand_in_op;
    int run_result;
    int replica_result;
    bool running;
} harness_t;

/* Capacities for the tests: roomy enough for every test's batches (the replica counts
 * every event of a batch against each capacity it might use). */
static const sz_ledger_config_t harness_ledger_config = {
    .accounts_max = 100000, .transfers_max = 400000, .pending_max = 100000,
    .history_max = 100000, .hash_seed = 5};

#define HARNESS_RING_CAPACITY 1024u

static void harness_stand_in_answer(sz_message_t *message, uint64_t op) {
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

static void harness_pause(void) {
    struct timespec pause = {.tv_nsec = 200000}; /* look at `hold` again soon */
    nanosleep(&pause, NULL);
}

static void *harness_stand_in_main(void *context) {
    harness_t *harness = context;
    void *batch[64];
    while (!atomic_load(&harness->stand_in_stop)) {
        if (atomic_load(&harness->hold)) {
            harness_pause();
            continue;
        }
        if (!sz_ring_wait_readable(&harness->requests, 2000, 20000000)) continue;
        uint32_t count = sz_ring_pop(&harness->requests, batch, 64);
        for (uint32_t index = 0; index < count; index++) {
            harness_stand_in_answer(batch[index], ++harness->stand_in_op);
        }
        uint32_t pushed = sz_ring_push(&harness->replies, batch, count);
        SZ_ASSERT(pushed == count);
        sz_gateway_wake(harness->gateway);
    }
    return NULL;
}

/* Passes requests from the gateway's ring to the replica's, in order, unless held. */
static void *harness_valve_main(void *context) {
    harness_t *harness = context;
    void *batch[64];
    while (!atomic_load(&harness->valve_stop)) {
        if (atomic_load(&harness->hold)) {
            harness_pause();
            continue;
        }
        if (!sz_ring_wait_readable(&harness->requests, 2000, 20000000)) continue;
        uint32_t count = sz_ring_pop(&harness->requests, batch, 64);
        /* The replica's ring holds every message there is: this always fits. */
        uint32_t pushed = sz_ring_push(&harness->ledger_requests, batch, count);
        SZ_ASSERT(pushed == count);
    }
    return NULL;
}

static void *harness_replica_main(void *context) {
    harness_t *harness = context;
    harness->replica_result = sz_replica_run(harness->replica);
    return NULL;
}

static void harness_on_replies(void *context) {
    harness_t *harness = context;
    sz_gateway_wake(harness->gateway);
}

static void *harness_gateway_main(void *context) {
    harness_t *harness = context;
    harness->run_result = sz_gateway_run(harness->gateway);
    return NULL;
}

static int harness_remove_entry(const char *path, const struct stat *status, int flag,
                                struct FTW *walk) {
    (void)status;
    (void)flag;
    (void)walk;
    return remove(path);
}

/* Formats a data directory in /tmp and opens the replica on it. 77 (skip) without
 * io_uring, as the journal's own tests do. */
static int harness_replica_open(harness_t *harness) {
    snprintf(harness->directory, sizeof(harness->directory), "/tmp/sz_test_gateway_XXXXXX");
    if (mkdtemp(harness->directory) == NULL) return -errno;
    int result = sz_storage_uring_init(harness->directory, &harness->storage);
    if (result == -ENOSYS || result == -EPERM) {
        fprintf(stderr, "io_uring unavailable (%s): skipping\n", strerror(-result));
        exit(77);
    }
    if (result != 0) return result;
    sz_journal_format_options_t format = {.cluster_id = TEST_CLUSTER_ID,
                                          .segment_size = 4ull * SZ_JOURNAL_SEGMENT_SIZE_MIN};
    result = sz_journal_format(harness->storage, &format);
    if (result != 0) return result;
    SZ_ASSERT(sz_ring_init(&harness->ledger_requests, HARNESS_RING_CAPACITY) == 0);
    sz_replica_config_t config = {
        .ledger = harness_ledger_config,
        .storage = harness->storage,
        .requests = &harness->ledger_requests,
        .replies = &harness->replies,
        .replies_pushed = harness_on_replies,
        .context = harness,
        .metrics = &harness->metrics,
    };
    sz_journal_problem_t problem;
    memset(&problem, 0, sizeof(problem));
    result = sz_replica_open(&config, &harness->replica, &problem);
    if (result != 0) fprintf(stderr, "harness: replica open: %s\n", problem.reason);
    return result;
}

/* Opens the gateway with config (rings and metrics are filled in here) and starts the
 * threads. Returns 0 or the open error. */
static inline int harness_start(harness_t *harness, harness_ledger_t ledger,
                                sz_gateway_config_t config) {
    memset(harness, 0, sizeof(*harness));
    harness->ledger = ledger;
    SZ_ASSERT(sz_ring_init(&harness->requests, HARNESS_RING_CAPACITY) == 0);
    SZ_ASSERT(sz_ring_init(&harness->replies, HARNESS_RING_CAPACITY) == 0);
    if (ledger == HARNESS_LEDGER_REAL) {
        int result = harness_replica_open(harness);
        if (result != 0) return result;
    }
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
    if (ledger == HARNESS_LEDGER_REAL) {
        SZ_ASSERT(pthread_create(&harness->valve_thread, NULL, harness_valve_main, harness) == 0);
        SZ_ASSERT(pthread_create(&harness->ledger_thread, NULL, harness_replica_main, harness) ==
                  0);
    } else {
        SZ_ASSERT(pthread_create(&harness->ledger_thread, NULL, harness_stand_in_main, harness) ==
                  0);
    }
    harness->running = true;
    return 0;
}

/* Stops the gateway (it drains), then the ledger side, and removes the data directory.
 * Returns what sz_gateway_run() returned, or the replica's error. */
static inline int harness_stop(harness_t *harness) {
    if (!harness->running) return 0;
    atomic_store(&harness->hold, false);
    sz_gateway_stop(harness->gateway);
    pthread_join(harness->gateway_thread, NULL);
    if (harness->ledger == HARNESS_LEDGER_REAL) {
        atomic_store(&harness->valve_stop, true);
        pthread_join(harness->valve_thread, NULL);
        sz_replica_stop(harness->replica);
        pthread_join(harness->ledger_thread, NULL);
        sz_replica_close(harness->replica);
        sz_storage_deinit(harness->storage);
        sz_ring_deinit(&harness->ledger_requests);
        nftw(harness->directory, harness_remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    } else {
        atomic_store(&harness->stand_in_stop, true);
        pthread_join(harness->ledger_thread, NULL);
    }
    sz_gateway_close(harness->gateway);
    sz_ring_deinit(&harness->requests);
    sz_ring_deinit(&harness->replies);
    harness->running = false;
    return harness->run_result != 0 ? harness->run_result : harness->replica_result;
}

static inline uint64_t harness_metric(const _Atomic uint64_t *value) {
    return atomic_load_explicit(value, memory_order_relaxed);
}

#endif
