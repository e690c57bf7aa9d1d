/* test_replica.c: the ledger thread, run in-process on its own thread with real rings and a
 * real formatted data directory (io_uring in a temporary directory, or the in-memory
 * fault-injecting storage where a fault is the point). Requests are sealed frames pushed
 * into the request ring; the test is the gateway: it pops replies and checks them.
 * Proves: every operation answers with the ledger's results; replies leave in pop order
 * and reads see earlier writes; a restart recovers the same digest and the same cached
 * replies; an exact retry gets the cached reply and is not applied twice, also while the
 * original is in flight; conflicts and stale requests are refused; each capacity is refused
 * at its boundary (counting ops still in flight) without journaling; timestamps past the
 * maximum are refused; pending transfers expire through journaled expire ops; a journal
 * write failure stops the loop without acknowledging anything that was not durable;
 * stopping drains what was popped; recovery into smaller capacities names the op and the
 * flag; an idle ledger thread uses no CPU.
 * Snapshots (real files in DATA/snapshots, written by the forked child): a restart from a
 * snapshot keeps the digest and answers exact retries from the snapshot's sessions and the
 * journal tail; a damaged newest snapshot falls back to the previous one, then to the
 * whole journal, each with a snapshot_invalid line; a snapshot of another history (its
 * chain head is not the journal's entry) is not used; a snapshot past the journal's end is
 * refused; pruning keeps the newest K. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replica/replica.h"
#include "snapshot/snapshot.h"

#define CLUSTER_ID ((sz_u128)0xC1u)
#define MESSAGE_COUNT 16u
#define RING_CAPACITY 16u
#define SEGMENT_SIZE (4ull * SZ_JOURNAL_SEGMENT_SIZE_MIN)
#define REPLY_TIMEOUT_NS 10000000000ull
#define CLIENT_A ((sz_u128)0xA1u)
#define CLIENT_B ((sz_u128)0xB2u)
#define CLIENT_C ((sz_u128)0xC3u)
#define TEST_EPOCH_NS 1700000000000000000ull

typedef struct fixture {
    char directory[64];
    bool in_memory;
    sz_storage_t *storage;
    sz_ring_t requests;
    sz_ring_t replies;
    sz_metrics_t metrics;
    sz_replica_config_t config;
    sz_replica_t *replica;
    pthread_t thread;
    bool running;
    int run_result;
    sz_message_t *messages;
    bool message_used[MESSAGE_COUNT];
    _Atomic uint64_t replies_pushed_count;
    _Atomic uint64_t clock_ns; /* 0: the real clock */
    uint64_t trace_next;
    int snapshots_fd; /* DATA/snapshots once enabled, else -1 */
    pthread_mutex_t log_mutex;
    char log[32768]; /* every line the replica logged, each ending in a newline */
    size_t log_length;
} fixture_t;

static uint64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static uint64_t fixture_clock(void *context) {
    fixture_t *fixture = context;
    uint64_t value = atomic_load(&fixture->clock_ns);
    if (value != 0) return value;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static void fixture_log(const char *line, void *context) {
    fixture_t *fixture = context;
    pthread_mutex_lock(&fixture->log_mutex);
    size_t length = strlen(line);
    if (fixture->log_length + length + 2 < sizeof(fixture->log)) {
        memcpy(fixture->log + fixture->log_length, line, length);
        fixture->log_length += length;
        fixture->log[fixture->log_length++] = '\n';
        fixture->log[fixture->log_length] = '\0';
    }
    pthread_mutex_unlock(&fixture->log_mutex);
}

static void fixture_on_replies(void *context) {
    fixture_t *fixture = context;
    atomic_fetch_add(&fixture->replies_pushed_count, 1);
}

static sz_ledger_config_t ledger_config(uint32_t accounts_max, uint32_t transfers_max,
                                        uint32_t pending_max, uint32_t history_max) {
    return (sz_ledger_config_t){.accounts_max = accounts_max, .transfers_max = transfers_max,
                                .pending_max = pending_max, .history_max = history_max,
                                .hash_seed = 11};
}

static sz_ledger_config_t ledger_roomy(void) { return ledger_config(1000, 100000, 1000, 10000); }

/* Formats a data directory (real or in memory) and sets up rings and messages. */
static void fixture_init(fixture_t *fixture, bool in_memory, sz_ledger_config_t ledger) {
    memset(fixture, 0, sizeof(*fixture));
    fixture->in_memory = in_memory;
    fixture->snapshots_fd = -1;
    pthread_mutex_init(&fixture->log_mutex, NULL);
    if (in_memory) {
        cr_assert_eq(sz_storage_fault_init(&fixture->storage), 0);
    } else {
        snprintf(fixture->directory, sizeof(fixture->directory), "/tmp/sz_test_replica_XXXXXX");
        cr_assert_not_null(mkdtemp(fixture->directory));
        int result = sz_storage_uring_init(fixture->directory, &fixture->storage);
        if (result == -ENOSYS || result == -EPERM) {
            fprintf(stderr, "io_uring unavailable (%s): skipping\n", strerror(-result));
            exit(77);
        }
        cr_assert_eq(result, 0);
    }
    sz_journal_format_options_t format = {.cluster_id = CLUSTER_ID, .segment_size = SEGMENT_SIZE};
    cr_assert_eq(sz_journal_format(fixture->storage, &format), 0);
    cr_assert_eq(sz_ring_init(&fixture->requests, RING_CAPACITY), 0);
    cr_assert_eq(sz_ring_init(&fixture->replies, RING_CAPACITY), 0);
    fixture->messages = aligned_alloc(64, MESSAGE_COUNT * sizeof(sz_message_t));
    cr_assert_not_null(fixture->messages);
    fixture->config = (sz_replica_config_t){
        .ledger = ledger,
        .storage = fixture->storage,
        .requests = &fixture->requests,
        .replies = &fixture->replies,
        .replies_pushed = fixture_on_replies,
        .context = fixture,
        .metrics = &fixture->metrics,
        .clock_now_ns = fixture_clock,
        .log = fixture_log,
    };
}

static int fixture_open_result(fixture_t *fixture, sz_journal_problem_t *problem) {
    return sz_replica_open(&fixture->config, &fixture->replica, problem);
}

static void fixture_open(fixture_t *fixture) {
    sz_journal_problem_t problem;
    int result = fixture_open_result(fixture, &problem);
    cr_assert_eq(result, 0, "open: %s: %s", strerror(-result), problem.reason);
}

static void *fixture_thread(void *context) {
    fixture_t *fixture = context;
    fixture->run_result = sz_replica_run(fixture->replica);
    return NULL;
}

static void fixture_start(fixture_t *fixture) {
    cr_assert_eq(pthread_create(&fixture->thread, NULL, fixture_thread, fixture), 0);
    fixture->running = true;
}

/* Stops the loop and returns what sz_replica_run() returned. */
static int fixture_stop(fixture_t *fixture) {
    cr_assert(fixture->running);
    sz_replica_stop(fixture->replica);
    cr_assert_eq(pthread_join(fixture->thread, NULL), 0);
    fixture->running = false;
    return fixture->run_result;
}

static void fixture_close(fixture_t *fixture) {
    sz_replica_close(fixture->replica);
    fixture->replica = NULL;
    if (fixture->in_memory) sz_storage_fault_unlock(fixture->storage);
}

/* Stop, close and open again on the same data directory. */
static void fixture_restart(fixture_t *fixture) {
    cr_assert_eq(fixture_stop(fixture), 0);
    fixture_close(fixture);
    if (!fixture->in_memory) {
        /* A new storage object, as a new process would have. */
        sz_storage_deinit(fixture->storage);
        cr_assert_eq(sz_storage_uring_init(fixture->directory, &fixture->storage), 0);
        fixture->config.storage = fixture->storage;
    }
    fixture_open(fixture);
    fixture_start(fixture);
}

static void fixture_deinit(fixture_t *fixture) {
    if (fixture->running) cr_assert_eq(fixture_stop(fixture), 0);
    sz_replica_close(fixture->replica);
    sz_storage_deinit(fixture->storage);
    sz_ring_deinit(&fixture->requests);
    sz_ring_deinit(&fixture->replies);
    free(fixture->messages);
    if (fixture->snapshots_fd >= 0) close(fixture->snapshots_fd);
    pthread_mutex_destroy(&fixture->log_mutex);
    if (!fixture->in_memory) {
        char command[128];
        snprintf(command, sizeof(command), "rm -rf %s", fixture->directory);
        cr_assert_eq(system(command), 0);
    }
}

/* ---- messages ---- */

static sz_message_t *request_new(fixture_t *fixture, uint32_t operation, sz_u128 client_id,
                                 uint32_t request_number, const void *body, uint32_t body_size) {
    uint32_t index = 0;
    while (index < MESSAGE_COUNT && fixture->message_used[index]) index++;
    cr_assert_lt(index, MESSAGE_COUNT, "message pool exhausted");
    fixture->message_used[index] = true;
    sz_message_t *message = &fixture->messages[index];
    message->reply_size = 0;
    memset(message->reply, 0xEE, SZ_FRAME_HEADER_SIZE); /* the reply must overwrite it */
    sz_frame_header_t *header = sz_message_request_header(message);
    memset(header, 0, sizeof(*header));
    header->cluster_id = CLUSTER_ID;
    header->client_id = client_id;
    header->request_number = request_number;
    header->trace_id = ++fixture->trace_next;
    header->command = SZ_COMMAND_REQUEST;
    header->operation = (uint8_t)operation;
    header->body_size = body_size;
    if (body_size > 0) memcpy(message->request + SZ_FRAME_HEADER_SIZE, body, body_size);
    sz_frame_header_seal(header, message->request + SZ_FRAME_HEADER_SIZE);
    cr_assert_eq(sz_frame_header_check(header, SZ_COMMAND_REQUEST, CLUSTER_ID, true),
                 SZ_STATUS_OK);
    return message;
}

static void message_free(fixture_t *fixture, sz_message_t *message) {
    uint32_t index = (uint32_t)(message - fixture->messages);
    cr_assert_lt(index, MESSAGE_COUNT);
    cr_assert(fixture->message_used[index]);
    fixture->message_used[index] = false;
}

static void request_push(fixture_t *fixture, sz_message_t *message) {
    void *pointer = message;
    cr_assert_eq(sz_ring_push(&fixture->requests, &pointer, 1), 1);
}

/* The next reply, waiting for it with a deadline. */
static sz_message_t *reply_take(fixture_t *fixture) {
    uint64_t deadline_ns = monotonic_ns() + REPLY_TIMEOUT_NS;
    void *pointer = NULL;
    while (sz_ring_pop(&fixture->replies, &pointer, 1) == 0) {
        uint64_t now_ns = monotonic_ns();
        cr_assert_lt(now_ns, deadline_ns, "no reply within 10 s");
        (void)sz_ring_wait_readable(&fixture->replies, 1000, deadline_ns - now_ns);
    }
    return pointer;
}

/* Checks a reply frame as a client would, and that it answers its own request. */
static const sz_frame_header_t *reply_check(sz_message_t *message, sz_status_t status) {
    const sz_frame_header_t *request = sz_message_request_header(message);
    const sz_frame_header_t *reply = sz_message_reply_header(message);
    cr_assert_eq(sz_frame_header_check(reply, SZ_COMMAND_REPLY, CLUSTER_ID, true), SZ_STATUS_OK);
    cr_assert_eq(sz_frame_body_check(reply, message->reply + SZ_FRAME_HEADER_SIZE), SZ_STATUS_OK);
    cr_assert_eq(message->reply_size, SZ_FRAME_HEADER_SIZE + reply->body_size);
    cr_assert(reply->client_id == request->client_id);
    cr_assert_eq(reply->request_number, request->request_number);
    cr_assert_eq(reply->trace_id, request->trace_id);
    cr_assert_eq(reply->operation, request->operation);
    cr_assert_eq(reply->status, status, "status %s, expected %s", sz_status_name(reply->status),
                 sz_status_name(status));
    if (status != SZ_STATUS_OK) cr_assert_eq(reply->body_size, 0);
    return reply;
}

static const void *reply_body(const sz_message_t *message) {
    return message->reply + SZ_FRAME_HEADER_SIZE;
}

/* One request, its reply checked for status; the caller frees the message. */
static sz_message_t *call(fixture_t *fixture, uint32_t operation, sz_u128 client_id,
                          uint32_t request_number, const void *body, uint32_t body_size,
                          sz_status_t status) {
    sz_message_t *message =
        request_new(fixture, operation, client_id, request_number, body, body_size);
    request_push(fixture, message);
    sz_message_t *reply = reply_take(fixture);
    cr_assert_eq(reply, message, "the reply answers the request just sent");
    reply_check(reply, status);
    return reply;
}

/* ---- records ---- */

static sz_account_t account(sz_u128 id, uint16_t flags) {
    return (sz_account_t){.id = id, .ledger = 1, .code = 1, .flags = flags};
}

static sz_transfer_t transfer(sz_u128 id, sz_u128 debit, sz_u128 credit, sz_u128 amount,
                              uint16_t flags, uint32_t timeout) {
    return (sz_transfer_t){.id = id, .debit_account_id = debit, .credit_account_id = credit,
                           .amount = amount, .ledger = 1, .code = 1, .flags = flags,
                           .timeout = timeout};
}

/* Creates accounts 1..count (ok expected) as client_id's request_number. */
static void accounts_create(fixture_t *fixture, sz_u128 client_id, uint32_t request_number,
                            uint32_t first, uint32_t count) {
    sz_account_t accounts[64];
    cr_assert_leq(count, 64);
    for (uint32_t index = 0; index < count; index++) accounts[index] = account(first + index, 0);
    sz_message_t *reply = call(fixture, SZ_OPERATION_CREATE_ACCOUNTS, client_id, request_number,
                               accounts, count * (uint32_t)sizeof(sz_account_t), SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(reply)->body_size, 0, "every account created");
    message_free(fixture, reply);
}

static sz_account_t account_lookup(fixture_t *fixture, sz_u128 id) {
    sz_message_t *reply = call(fixture, SZ_OPERATION_LOOKUP_ACCOUNTS, CLIENT_C, 1, &id,
                               sizeof(id), SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(reply)->body_size, sizeof(sz_account_t));
    sz_account_t found;
    memcpy(&found, reply_body(reply), sizeof(found));
    message_free(fixture, reply);
    return found;
}

static sz_replica_info_t info_stopped(fixture_t *fixture) {
    cr_assert_eq(fixture_stop(fixture), 0);
    sz_replica_info_t info;
    sz_replica_info(fixture->replica, &info);
    fixture_start(fixture);
    return info;
}

/* ---- tests ---- */

Test(replica, every_operation_is_answered_with_the_ledgers_results) {
    fixture_t fixture;
    fixture_init(&fixture, false, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);

    sz_account_t accounts[4] = {account(1, 0), account(2, SZ_ACCOUNT_HISTORY), account(3, 0),
                                account(4, 0)};
    accounts[3].ledger = 0;
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_A, 1, accounts,
                               sizeof(accounts), SZ_STATUS_OK);
    const sz_frame_header_t *header = sz_message_reply_header(reply);
    cr_assert_eq(header->op, 1);
    cr_assert_gt(header->timestamp, 0);
    uint64_t accounts_timestamp = header->timestamp;
    cr_assert_eq(header->body_size, sizeof(sz_create_result_t));
    const sz_create_result_t *results = reply_body(reply);
    cr_assert_eq(results[0].index, 3);
    cr_assert_eq(results[0].result, SZ_CREATE_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO);
    message_free(&fixture, reply);

    sz_transfer_t transfers[3] = {transfer(10, 1, 2, 100, 0, 0), transfer(11, 2, 3, 30, 0, 0),
                                  transfer(12, 1, 99, 5, 0, 0)};
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 2, transfers,
                 sizeof(transfers), SZ_STATUS_OK);
    header = sz_message_reply_header(reply);
    cr_assert_eq(header->op, 2);
    cr_assert_gt(header->timestamp, accounts_timestamp + 3, "T after every account's");
    uint64_t transfers_timestamp = header->timestamp;
    cr_assert_eq(header->body_size, sizeof(sz_create_result_t));
    results = reply_body(reply);
    cr_assert_eq(results[0].index, 2);
    cr_assert_eq(results[0].result, SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND);
    message_free(&fixture, reply);

    sz_u128 account_ids[3] = {1, 99, 2};
    reply = call(&fixture, SZ_OPERATION_LOOKUP_ACCOUNTS, CLIENT_B, 1, account_ids,
                 sizeof(account_ids), SZ_STATUS_OK);
    header = sz_message_reply_header(reply);
    cr_assert_eq(header->op, 2, "a read carries the last op committed");
    cr_assert_eq(header->body_size, 2 * sizeof(sz_account_t), "missing ids are left out");
    const sz_account_t *found = reply_body(reply);
    cr_assert(found[0].id == 1 && found[0].debits_posted == 100);
    cr_assert(found[1].id == 2 && found[1].credits_posted == 100 && found[1].debits_posted == 30);
    cr_assert_eq(found[0].timestamp, accounts_timestamp);
    message_free(&fixture, reply);

    sz_u128 transfer_ids[3] = {11, 12, 10};
    reply = call(&fixture, SZ_OPERATION_LOOKUP_TRANSFERS, CLIENT_B, 2, transfer_ids,
                 sizeof(transfer_ids), SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(reply)->body_size, 2 * sizeof(sz_transfer_t));
    const sz_transfer_t *found_transfers = reply_body(reply);
    cr_assert(found_transfers[0].id == 11);
    cr_assert_eq(found_transfers[0].timestamp, transfers_timestamp + 1);
    cr_assert(found_transfers[1].id == 10 && found_transfers[1].timestamp == transfers_timestamp);
    message_free(&fixture, reply);

    sz_account_filter_t filter = {.account_id = 2, .limit = 10,
                                  .flags = SZ_FILTER_DEBITS | SZ_FILTER_CREDITS};
    reply = call(&fixture, SZ_OPERATION_GET_ACCOUNT_TRANSFERS, CLIENT_B, 3, &filter,
                 sizeof(filter), SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(reply)->body_size, 2 * sizeof(sz_transfer_t));
    found_transfers = reply_body(reply);
    cr_assert(found_transfers[0].id == 10 && found_transfers[1].id == 11);
    message_free(&fixture, reply);

    reply = call(&fixture, SZ_OPERATION_GET_ACCOUNT_BALANCES, CLIENT_B, 4, &filter,
                 sizeof(filter), SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(reply)->body_size, 2 * sizeof(sz_account_balance_t));
    const sz_account_balance_t *balances = reply_body(reply);
    cr_assert(balances[0].credits_posted == 100 && balances[0].debits_posted == 0);
    cr_assert(balances[1].credits_posted == 100 && balances[1].debits_posted == 30);
    message_free(&fixture, reply);

    /* A create of zero events is answered like a read: no op, no body. */
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 3, NULL, 0, SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(reply)->op, 2);
    cr_assert_eq(sz_message_reply_header(reply)->body_size, 0);
    message_free(&fixture, reply);

    sz_replica_info_t info = info_stopped(&fixture);
    cr_assert_eq(info.op_last, 2);
    cr_assert_eq(info.op_committed, 2);
    cr_assert_eq(info.ledger.account_count, 3);
    cr_assert_eq(info.ledger.transfer_count, 2);
    cr_assert_geq(atomic_load(&fixture.replies_pushed_count), 7);
    fixture_deinit(&fixture);
}

Test(replica, replies_leave_in_pop_order_and_reads_see_earlier_writes) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);
    /* One pipeline pushed at once: writes, reads of them, a refusal, more writes. */
    sz_account_t accounts[2] = {account(1, 0), account(2, 0)};
    sz_transfer_t transfers[1] = {transfer(7, 1, 2, 5, 0, 0)};
    sz_u128 ids[2] = {1, 2};
    sz_u128 transfer_id = 7;
    sz_message_t *pipeline[8];
    pipeline[0] = request_new(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_A, 1, accounts,
                              sizeof(accounts));
    pipeline[1] = request_new(&fixture, SZ_OPERATION_LOOKUP_ACCOUNTS, CLIENT_B, 1, ids,
                              sizeof(ids));
    pipeline[2] = request_new(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 2, transfers,
                              sizeof(transfers));
    pipeline[3] = request_new(&fixture, SZ_OPERATION_LOOKUP_TRANSFERS, CLIENT_B, 2, &transfer_id,
                              sizeof(transfer_id));
    pipeline[4] = request_new(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_A, 1, accounts,
                              sizeof(accounts)); /* stale: 1 < 2 */
    transfers[0] = transfer(8, 2, 1, 3, 0, 0);
    pipeline[5] = request_new(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 3, transfers,
                              sizeof(transfers));
    pipeline[6] = request_new(&fixture, SZ_OPERATION_LOOKUP_ACCOUNTS, CLIENT_B, 3, ids,
                              sizeof(ids));
    pipeline[7] = request_new(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_C, 1, transfers,
                              sizeof(transfers)); /* id 8 again: exists */
    void *pointers[8];
    memcpy(pointers, pipeline, sizeof(pointers));
    cr_assert_eq(sz_ring_push(&fixture.requests, pointers, 8), 8);
    sz_message_t *replies[8];
    for (uint32_t index = 0; index < 8; index++) {
        replies[index] = reply_take(&fixture);
        cr_assert_eq(replies[index], pipeline[index], "reply %u in pop order", index);
    }
    reply_check(replies[0], SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(replies[1])->body_size, 2 * sizeof(sz_account_t));
    reply_check(replies[1], SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(replies[3])->body_size, sizeof(sz_transfer_t));
    reply_check(replies[4], SZ_STATUS_REQUEST_STALE);
    reply_check(replies[5], SZ_STATUS_OK);
    const sz_account_t *found = reply_body(replies[6]);
    cr_assert(found[0].debits_posted == 5 && found[0].credits_posted == 3);
    reply_check(replies[7], SZ_STATUS_OK);
    const sz_create_result_t *results = reply_body(replies[7]);
    cr_assert_eq(sz_message_reply_header(replies[7])->body_size, sizeof(sz_create_result_t));
    cr_assert_eq(results[0].result, SZ_CREATE_TRANSFER_EXISTS);
    uint64_t op_previous = 0;
    for (uint32_t index = 0; index < 8; index++) {
        uint64_t op = sz_message_reply_header(replies[index])->op;
        cr_assert_geq(op, op_previous, "ops never go back in reply order");
        op_previous = op;
        message_free(&fixture, replies[index]);
    }
    fixture_deinit(&fixture);
}

Test(replica, a_restart_recovers_the_same_digest_and_the_same_cached_replies) {
    fixture_t fixture;
    fixture_init(&fixture, false, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 8);
    sz_transfer_t transfers[40];
    for (uint32_t index = 0; index < 40; index++) {
        /* Every 4th names an account that does not exist: a non-empty cached reply. */
        transfers[index] =
            transfer(100 + index, index % 8 + 1, (index + 3) % 8 + 1, index + 1, 0, 0);
        if (index % 4 == 0) transfers[index].credit_account_id = 77;
    }
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_B, 5, transfers,
                               sizeof(transfers), SZ_STATUS_OK);
    sz_frame_header_t original = *sz_message_reply_header(reply);
    uint8_t original_body[40 * sizeof(sz_create_result_t)];
    cr_assert_eq(original.body_size, 10 * sizeof(sz_create_result_t));
    memcpy(original_body, reply_body(reply), original.body_size);
    message_free(&fixture, reply);
    sz_replica_info_t before = info_stopped(&fixture);
    cr_assert_eq(before.op_last, 2);

    fixture_restart(&fixture);
    sz_replica_info_t after;
    cr_assert_eq(fixture_stop(&fixture), 0);
    sz_replica_info(fixture.replica, &after);
    fixture_start(&fixture);
    cr_assert_eq(after.op_last, before.op_last);
    cr_assert_eq(after.op_committed, before.op_committed);
    cr_assert_eq(after.timestamp_last, before.timestamp_last);
    cr_assert(after.digest.low == before.digest.low && after.digest.high == before.digest.high,
              "same digest after recovery");
    cr_assert_eq(after.ledger.transfer_count, 30);

    /* The retry after the restart gets the reply recorded before it. */
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_B, 5, transfers,
                 sizeof(transfers), SZ_STATUS_OK);
    const sz_frame_header_t *again = sz_message_reply_header(reply);
    cr_assert_eq(again->op, original.op);
    cr_assert_eq(again->timestamp, original.timestamp);
    cr_assert_eq(again->body_size, original.body_size);
    cr_assert_eq(memcmp(reply_body(reply), original_body, original.body_size), 0);
    message_free(&fixture, reply);
    /* And the client's older request is stale, as before the restart. */
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_B, 4, transfers,
                 sizeof(transfers), SZ_STATUS_REQUEST_STALE);
    message_free(&fixture, reply);
    sz_replica_info_t last = info_stopped(&fixture);
    cr_assert_eq(last.op_last, 2, "the retry was not applied again");
    cr_assert(last.digest.low == before.digest.low);
    fixture_deinit(&fixture);
}

Test(replica, an_exact_retry_gets_the_cached_reply_and_is_not_applied_twice) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 2);
    sz_transfer_t transfers[3] = {transfer(5, 1, 2, 10, 0, 0), transfer(6, 1, 9, 10, 0, 0),
                                  transfer(7, 2, 1, 4, 0, 0)};
    /* The original and two retries back to back: the retries wait behind the original. */
    sz_message_t *sent[3];
    void *pointers[3];
    for (uint32_t index = 0; index < 3; index++) {
        sent[index] = request_new(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_B, 1,
                                  transfers, sizeof(transfers));
        pointers[index] = sent[index];
    }
    cr_assert_eq(sz_ring_push(&fixture.requests, pointers, 3), 3);
    sz_message_t *replies[3];
    for (uint32_t index = 0; index < 3; index++) {
        replies[index] = reply_take(&fixture);
        cr_assert_eq(replies[index], sent[index]);
        reply_check(replies[index], SZ_STATUS_OK);
    }
    const sz_frame_header_t *first = sz_message_reply_header(replies[0]);
    cr_assert_eq(first->body_size, sizeof(sz_create_result_t));
    for (uint32_t index = 1; index < 3; index++) {
        const sz_frame_header_t *retry = sz_message_reply_header(replies[index]);
        cr_assert_eq(retry->op, first->op);
        cr_assert_eq(retry->timestamp, first->timestamp);
        cr_assert_eq(retry->body_size, first->body_size);
        cr_assert_eq(
            memcmp(reply_body(replies[index]), reply_body(replies[0]), first->body_size), 0);
        cr_assert_neq(retry->trace_id, first->trace_id, "each reply carries its own trace id");
    }
    for (uint32_t index = 0; index < 3; index++) message_free(&fixture, replies[index]);
    /* A later retry, once everything is applied, is answered from the cache too. */
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_B, 1, transfers,
                               sizeof(transfers), SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(reply)->op, 2);
    message_free(&fixture, reply);
    sz_account_t debit = account_lookup(&fixture, 1);
    cr_assert(debit.debits_posted == 10 && debit.credits_posted == 4, "applied exactly once");
    sz_replica_info_t info = info_stopped(&fixture);
    cr_assert_eq(info.op_last, 2);
    cr_assert_eq(info.ledger.transfer_count, 2);
    fixture_deinit(&fixture);
}

Test(replica, a_retry_with_another_body_conflicts_and_an_older_request_is_stale) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 7, 1, 2);
    sz_account_t other = account(3, 0);
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_A, 7, &other,
                               sizeof(other), SZ_STATUS_REQUEST_CONFLICT);
    message_free(&fixture, reply);
    reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_A, 6, &other, sizeof(other),
                 SZ_STATUS_REQUEST_STALE);
    message_free(&fixture, reply);
    /* Another client with the same request number is a different client. */
    reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_B, 7, &other, sizeof(other),
                 SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(reply)->op, 2);
    message_free(&fixture, reply);
    sz_replica_info_t info = info_stopped(&fixture);
    cr_assert_eq(info.op_last, 2, "refusals are not journaled");
    cr_assert_eq(info.ledger.account_count, 3);
    fixture_deinit(&fixture);
}

Test(replica, the_reply_cache_forgets_the_least_recent_client_beyond_clients_max) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_roomy());
    fixture.config.clients_max = 2;
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 1);
    accounts_create(&fixture, CLIENT_B, 1, 2, 1);
    accounts_create(&fixture, CLIENT_C, 1, 3, 1); /* evicts A */
    sz_account_t first = account(1, 0);
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_A, 1, &first,
                               sizeof(first), SZ_STATUS_OK);
    const sz_frame_header_t *header = sz_message_reply_header(reply);
    cr_assert_eq(header->op, 4, "a forgotten client's retry is a new op");
    cr_assert_eq(header->body_size, sizeof(sz_create_result_t));
    cr_assert_eq(((const sz_create_result_t *)reply_body(reply))[0].result,
                 SZ_CREATE_ACCOUNT_EXISTS, "ids keep it idempotent");
    message_free(&fixture, reply);
    sz_account_t third = account(3, 0);
    reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_C, 1, &third, sizeof(third),
                 SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(reply)->op, 3, "C is still cached");
    message_free(&fixture, reply);
    fixture_deinit(&fixture);
}

/* Pushes two writes at once (the second is sequenced before the first is applied) and
 * returns the second's status. */
static sz_status_t pipelined_second(fixture_t *fixture, uint32_t operation, const void *first,
                                    uint32_t first_size, const void *second,
                                    uint32_t second_size, uint32_t request_number) {
    sz_message_t *one =
        request_new(fixture, operation, CLIENT_A, request_number, first, first_size);
    sz_message_t *two =
        request_new(fixture, operation, CLIENT_A, request_number + 1, second, second_size);
    void *pointers[2] = {one, two};
    cr_assert_eq(sz_ring_push(&fixture->requests, pointers, 2), 2);
    cr_assert_eq(reply_take(fixture), one);
    reply_check(one, SZ_STATUS_OK);
    cr_assert_eq(reply_take(fixture), two);
    sz_status_t status = sz_message_reply_header(two)->status;
    message_free(fixture, one);
    message_free(fixture, two);
    return status;
}

Test(replica, accounts_full_is_answered_at_the_boundary_counting_ops_in_flight) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_config(4, 100, 100, 100));
    fixture_open(&fixture);
    fixture_start(&fixture);
    sz_account_t accounts[5];
    for (uint32_t index = 0; index < 5; index++) accounts[index] = account(index + 1, 0);
    /* 3 in flight + 2 > 4, even though the 3 are not applied when the 2 are sequenced. */
    cr_assert_eq(pipelined_second(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, accounts,
                                  3 * sizeof(sz_account_t), accounts + 3,
                                  2 * sizeof(sz_account_t), 1),
                 SZ_STATUS_ACCOUNTS_FULL);
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_A, 3, accounts + 3,
                               sizeof(sz_account_t), SZ_STATUS_OK); /* exactly 4 */
    message_free(&fixture, reply);
    reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_A, 4, accounts + 4,
                 sizeof(sz_account_t), SZ_STATUS_ACCOUNTS_FULL);
    message_free(&fixture, reply);
    sz_replica_info_t info = info_stopped(&fixture);
    cr_assert_eq(info.op_last, 2, "refused writes are not journaled");
    cr_assert_eq(info.ledger.account_count, 4);
    fixture_deinit(&fixture);
}

Test(replica, transfers_full_is_answered_at_the_boundary_counting_ops_in_flight) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_config(10, 5, 100, 100));
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_B, 1, 1, 2);
    sz_transfer_t transfers[6];
    for (uint32_t index = 0; index < 6; index++) {
        transfers[index] = transfer(index + 1, 1, 2, 1, 0, 0);
    }
    cr_assert_eq(pipelined_second(&fixture, SZ_OPERATION_CREATE_TRANSFERS, transfers,
                                  3 * sizeof(sz_transfer_t), transfers + 3,
                                  3 * sizeof(sz_transfer_t), 1),
                 SZ_STATUS_TRANSFERS_FULL);
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 3,
                               transfers + 3, 2 * sizeof(sz_transfer_t), SZ_STATUS_OK);
    message_free(&fixture, reply);
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 4, transfers + 5,
                 sizeof(sz_transfer_t), SZ_STATUS_TRANSFERS_FULL);
    message_free(&fixture, reply);
    sz_replica_info_t info = info_stopped(&fixture);
    cr_assert_eq(info.ledger.transfer_count, 5);
    fixture_deinit(&fixture);
}

Test(replica, pending_full_is_answered_at_the_boundary) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_config(10, 100, 3, 100));
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_B, 1, 1, 2);
    sz_transfer_t transfers[4];
    for (uint32_t index = 0; index < 4; index++) {
        transfers[index] = transfer(index + 1, 1, 2, 1, SZ_TRANSFER_PENDING, 60);
    }
    /* Core counts any create_transfers batch of n as n possible pending timeouts. */
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 1, transfers,
                               4 * sizeof(sz_transfer_t), SZ_STATUS_PENDING_FULL);
    message_free(&fixture, reply);
    cr_assert_eq(pipelined_second(&fixture, SZ_OPERATION_CREATE_TRANSFERS, transfers,
                                  2 * sizeof(sz_transfer_t), transfers + 2,
                                  2 * sizeof(sz_transfer_t), 2),
                 SZ_STATUS_PENDING_FULL);
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 4, transfers + 2,
                 sizeof(sz_transfer_t), SZ_STATUS_OK); /* exactly 3 */
    message_free(&fixture, reply);
    sz_replica_info_t info = info_stopped(&fixture);
    cr_assert_eq(info.ledger.transfer_count, 3);
    fixture_deinit(&fixture);
}

Test(replica, history_full_is_answered_at_the_boundary) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_config(10, 100, 100, 4));
    fixture_open(&fixture);
    fixture_start(&fixture);
    sz_account_t accounts[2] = {account(1, SZ_ACCOUNT_HISTORY), account(2, SZ_ACCOUNT_HISTORY)};
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_B, 1, accounts,
                               sizeof(accounts), SZ_STATUS_OK);
    message_free(&fixture, reply);
    sz_transfer_t transfers[3] = {transfer(1, 1, 2, 1, 0, 0), transfer(2, 1, 2, 1, 0, 0),
                                  transfer(3, 1, 2, 1, 0, 0)};
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 1, transfers,
                 3 * sizeof(sz_transfer_t), SZ_STATUS_HISTORY_FULL); /* 6 rows > 4 */
    message_free(&fixture, reply);
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 2, transfers,
                 2 * sizeof(sz_transfer_t), SZ_STATUS_OK); /* exactly 4 */
    message_free(&fixture, reply);
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 3, transfers + 2,
                 sizeof(sz_transfer_t), SZ_STATUS_HISTORY_FULL);
    message_free(&fixture, reply);
    sz_replica_info_t info = info_stopped(&fixture);
    cr_assert_eq(info.ledger.history_count, 4);
    fixture_deinit(&fixture);
}

Test(replica, timestamps_past_the_maximum_are_refused_as_exhausted) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_roomy());
    atomic_store(&fixture.clock_ns, SZ_TIMESTAMP_MAX - 1);
    fixture_open(&fixture);
    fixture_start(&fixture);
    sz_account_t accounts[2] = {account(1, 0), account(2, 0)};
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_A, 1, accounts,
                               sizeof(accounts), SZ_STATUS_OK);
    cr_assert_eq(sz_message_reply_header(reply)->timestamp, SZ_TIMESTAMP_MAX - 1);
    message_free(&fixture, reply);
    sz_account_t third = account(3, 0);
    reply = call(&fixture, SZ_OPERATION_CREATE_ACCOUNTS, CLIENT_A, 2, &third, sizeof(third),
                 SZ_STATUS_TIMESTAMP_EXHAUSTED);
    message_free(&fixture, reply);
    sz_replica_info_t info = info_stopped(&fixture);
    cr_assert_eq(info.op_last, 1);
    cr_assert_eq(info.timestamp_last, SZ_TIMESTAMP_MAX);
    fixture_deinit(&fixture);
}

Test(replica, a_pending_transfer_expires_through_a_journaled_expire_op) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_roomy());
    atomic_store(&fixture.clock_ns, TEST_EPOCH_NS);
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 2);
    sz_transfer_t pending = transfer(9, 1, 2, 50, SZ_TRANSFER_PENDING, 1);
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 2, &pending,
                               sizeof(pending), SZ_STATUS_OK);
    message_free(&fixture, reply);
    cr_assert(account_lookup(&fixture, 1).debits_pending == 50);
    /* Two seconds later the expiry (T + 1 s) is due. A lookup wakes the loop; the pass
     * that pops it may have read the clock just before it moved, but every later pass
     * sees the new time and journals the expire op before it pops anything, so the
     * second lookup, pushed after the first one's reply, sees the expiry. */
    atomic_store(&fixture.clock_ns, TEST_EPOCH_NS + 2000000000ull);
    (void)account_lookup(&fixture, 1);
    sz_account_t debit = account_lookup(&fixture, 1);
    cr_assert(debit.debits_pending == 0, "released by expiry");
    cr_assert_eq(atomic_load(&fixture.metrics.expired_count), 1);
    sz_replica_info_t before = info_stopped(&fixture);
    cr_assert_eq(before.op_last, 3, "the expire op is an op");
    cr_assert_eq(before.timestamp_last, TEST_EPOCH_NS + 2000000000ull);
    /* A post after the expiry: pending_transfer_expired. */
    sz_transfer_t post = transfer(10, 1, 2, 50, SZ_TRANSFER_POST_PENDING, 0);
    post.pending_id = 9;
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 3, &post, sizeof(post),
                 SZ_STATUS_OK);
    cr_assert_eq(((const sz_create_result_t *)reply_body(reply))[0].result,
                 SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED);
    message_free(&fixture, reply);
    /* Replay repeats the expire op: same digest. */
    sz_replica_info_t live = info_stopped(&fixture);
    fixture_restart(&fixture);
    sz_replica_info_t recovered = info_stopped(&fixture);
    cr_assert_eq(recovered.op_last, 4);
    cr_assert(recovered.digest.low == live.digest.low && recovered.digest.high == live.digest.high);
    cr_assert(account_lookup(&fixture, 1).debits_pending == 0);
    fixture_deinit(&fixture);
}

static void write_failure_case(sz_storage_fault_kind_t kind, const char *expected) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 2);
    sz_storage_fault_t fault = {.kind = kind,
                                .at_submission = sz_storage_fault_submission_count(fixture.storage),
                                .error = EIO};
    cr_assert_eq(sz_storage_fault_arm(fixture.storage, &fault), 0);
    sz_transfer_t transfers[1] = {transfer(1, 1, 2, 5, 0, 0)};
    sz_u128 id = 1;
    sz_message_t *write = request_new(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 2,
                                      transfers, sizeof(transfers));
    sz_message_t *read = request_new(&fixture, SZ_OPERATION_LOOKUP_ACCOUNTS, CLIENT_B, 1, &id,
                                     sizeof(id));
    void *pointers[2] = {write, read};
    cr_assert_eq(sz_ring_push(&fixture.requests, pointers, 2), 2);
    /* The loop ends by itself with the journal's error. */
    cr_assert_eq(pthread_join(fixture.thread, NULL), 0);
    fixture.running = false;
    cr_assert_eq(fixture.run_result, -EIO);
    void *pointer = NULL;
    cr_assert_eq(sz_ring_pop(&fixture.replies, &pointer, 1), 0,
                 "nothing is answered after a write that was not durable");
    const char *message = sz_replica_error_message(fixture.replica);
    cr_assert_not_null(strstr(message, expected), "error message: %s", message);
    sz_replica_info_t info;
    sz_replica_info(fixture.replica, &info);
    cr_assert_eq(info.op_committed, 1, "the failed op was never applied");
    fixture_deinit(&fixture);
}

Test(replica, a_failed_journal_write_stops_the_loop_without_acknowledging_it) {
    write_failure_case(SZ_STORAGE_FAULT_WRITE_ERROR, "write failed");
}

Test(replica, a_failed_fdatasync_stops_the_loop_without_acknowledging_it) {
    write_failure_case(SZ_STORAGE_FAULT_SYNC_ERROR, "fdatasync failed");
}

Test(replica, stopping_drains_every_popped_request_and_keeps_it_after_a_restart) {
    fixture_t fixture;
    fixture_init(&fixture, false, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 2);
    enum { WRITE_COUNT = 12 };
    sz_message_t *sent[WRITE_COUNT];
    void *pointers[WRITE_COUNT];
    for (uint32_t index = 0; index < WRITE_COUNT; index++) {
        sz_transfer_t one = transfer(index + 1, 1, 2, 1, 0, 0);
        sent[index] = request_new(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_B, index + 1,
                                  &one, sizeof(one));
        pointers[index] = sent[index];
    }
    cr_assert_eq(sz_ring_push(&fixture.requests, pointers, WRITE_COUNT), WRITE_COUNT);
    cr_assert_eq(fixture_stop(&fixture), 0);
    /* Everything in the ring when the stop came was answered, in order. */
    for (uint32_t index = 0; index < WRITE_COUNT; index++) {
        void *pointer = NULL;
        cr_assert_eq(sz_ring_pop(&fixture.replies, &pointer, 1), 1, "reply %u", index);
        cr_assert_eq(pointer, sent[index]);
        reply_check(sent[index], SZ_STATUS_OK);
        message_free(&fixture, sent[index]);
    }
    sz_replica_info_t info;
    sz_replica_info(fixture.replica, &info);
    cr_assert_eq(info.op_committed, 1 + WRITE_COUNT);
    fixture_start(&fixture);
    fixture_restart(&fixture);
    cr_assert(account_lookup(&fixture, 1).debits_posted == WRITE_COUNT);
    fixture_deinit(&fixture);
}

Test(replica, recovery_into_smaller_capacities_names_the_op_and_the_flag_to_raise) {
    fixture_t fixture;
    fixture_init(&fixture, true, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 2);
    accounts_create(&fixture, CLIENT_A, 2, 3, 3);
    cr_assert_eq(fixture_stop(&fixture), 0);
    fixture_close(&fixture);
    fixture.config.ledger.accounts_max = 4;
    sz_journal_problem_t problem;
    cr_assert_eq(fixture_open_result(&fixture, &problem), -ENOSPC);
    cr_assert_null(fixture.replica);
    cr_assert_eq(problem.op, 2);
    cr_assert_str_eq(problem.file, "journal.000000");
    cr_assert_not_null(strstr(problem.reason, "--accounts-max"), "%s", problem.reason);
    cr_assert_not_null(strstr(problem.reason, "op 2"), "%s", problem.reason);
    sz_storage_fault_unlock(fixture.storage);
    fixture.config.ledger.accounts_max = 5;
    fixture_open(&fixture);
    fixture_deinit(&fixture);
}

Test(replica, an_idle_ledger_thread_sleeps_and_uses_no_cpu) {
    fixture_t fixture;
    fixture_init(&fixture, false, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 2);
    clockid_t clock_id;
    cr_assert_eq(pthread_getcpuclockid(fixture.thread, &clock_id), 0);
    /* A measurement window, not a wait for a condition: CPU used while nothing happens. */
    struct timespec start, end;
    clock_gettime(clock_id, &start);
    struct timespec window = {.tv_sec = 0, .tv_nsec = 300000000};
    nanosleep(&window, NULL);
    clock_gettime(clock_id, &end);
    uint64_t used_ns = (uint64_t)(end.tv_sec - start.tv_sec) * 1000000000ull +
                       (uint64_t)end.tv_nsec - (uint64_t)start.tv_nsec;
    printf("idle ledger thread: %llu us of CPU in 300 ms\n", (unsigned long long)(used_ns / 1000));
    cr_assert_lt(used_ns, 3000000ull, "idle used %llu ns of CPU", (unsigned long long)used_ns);
    /* And it still answers at once. */
    cr_assert(account_lookup(&fixture, 2).id == 2);
    sz_replica_info_t info = info_stopped(&fixture);
    cr_assert_geq(info.sleep_count, 1);
    fixture_deinit(&fixture);
}

Test(replica, metrics_count_results_ops_and_group_commits) {
    fixture_t fixture;
    fixture_init(&fixture, false, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 3);
    sz_transfer_t transfers[3] = {transfer(1, 1, 2, 5, 0, 0), transfer(2, 1, 9, 5, 0, 0),
                                  transfer(3, 1, 1, 5, 0, 0)};
    sz_message_t *reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_A, 2, transfers,
                               sizeof(transfers), SZ_STATUS_OK);
    message_free(&fixture, reply);
    sz_metrics_t *metrics = &fixture.metrics;
    cr_assert_eq(atomic_load(&metrics->create_account_results[SZ_CREATE_ACCOUNT_OK]), 3);
    cr_assert_eq(atomic_load(&metrics->create_transfer_results[SZ_CREATE_TRANSFER_OK]), 1);
    _Atomic uint64_t *transfer_results = metrics->create_transfer_results;
    cr_assert_eq(atomic_load(&transfer_results[SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND]), 1);
    cr_assert_eq(atomic_load(&transfer_results[SZ_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT]), 1);
    cr_assert_eq(atomic_load(&metrics->op_last), 2);
    cr_assert_eq(atomic_load(&metrics->op_committed), 2);
    cr_assert_eq(atomic_load(&metrics->journal_writes), 2);
    cr_assert_eq(atomic_load(&metrics->commit_ops.count), 2);
    cr_assert_eq(atomic_load(&metrics->commit_ops.sum), 2);
    cr_assert_eq(atomic_load(&metrics->fdatasync_latency_us.count), 2);
    cr_assert_eq(atomic_load(&metrics->commit_latency_us.count), 2);
    fixture_deinit(&fixture);
}

Test(replica, many_small_writes_share_group_commits) {
    fixture_t fixture;
    fixture_init(&fixture, false, ledger_roomy());
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 2);
    /* Keep the ring full of one-transfer writes for a while. */
    enum { ROUNDS = 40 };
    uint32_t id = 1;
    for (uint32_t round = 0; round < ROUNDS; round++) {
        sz_message_t *sent[MESSAGE_COUNT];
        void *pointers[MESSAGE_COUNT];
        for (uint32_t index = 0; index < MESSAGE_COUNT; index++) {
            sz_transfer_t one = transfer(id, 1, 2, 1, 0, 0);
            sent[index] = request_new(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_B, id, &one,
                                      sizeof(one));
            pointers[index] = sent[index];
            id++;
        }
        cr_assert_eq(sz_ring_push(&fixture.requests, pointers, MESSAGE_COUNT), MESSAGE_COUNT);
        for (uint32_t index = 0; index < MESSAGE_COUNT; index++) {
            cr_assert_eq(reply_take(&fixture), sent[index]);
            reply_check(sent[index], SZ_STATUS_OK);
            message_free(&fixture, sent[index]);
        }
    }
    uint64_t writes = atomic_load(&fixture.metrics.journal_writes);
    uint64_t ops = atomic_load(&fixture.metrics.commit_ops.sum);
    printf("group commit: %llu ops in %llu writes\n", (unsigned long long)ops,
           (unsigned long long)writes);
    cr_assert_eq(ops, 1 + ROUNDS * MESSAGE_COUNT);
    cr_assert_lt(writes, ops, "some writes carried several ops");
    cr_assert(account_lookup(&fixture, 2).credits_posted == ROUNDS * MESSAGE_COUNT);
    fixture_deinit(&fixture);
}

/* ---- snapshots ---- */

static void fixture_snapshots_enable(fixture_t *fixture, uint32_t keep_count) {
    cr_assert(!fixture->in_memory);
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", fixture->directory, SZ_SNAPSHOT_DIRECTORY);
    cr_assert(mkdir(path, 0755) == 0 || errno == EEXIST);
    fixture->snapshots_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cr_assert_geq(fixture->snapshots_fd, 0);
    fixture->config.snapshots = (sz_replica_snapshots_t){
        .enabled = true, .directory_fd = fixture->snapshots_fd, .keep_count = keep_count};
}

/* Asks for a snapshot and waits (with a deadline) until the file of op is the newest; it
 * is complete once it has its name. */
static void snapshot_take(fixture_t *fixture, uint64_t op) {
    sz_replica_snapshot_request(fixture->replica);
    uint64_t deadline_ns = monotonic_ns() + REPLY_TIMEOUT_NS;
    while (true) {
        uint64_t newest = 0;
        int count = sz_snapshot_list(fixture->snapshots_fd, &newest, 1);
        cr_assert_geq(count, 0);
        if (count >= 1 && newest == op) return;
        cr_assert_lt(monotonic_ns(), deadline_ns, "no snapshot of op %llu within 10 s; log:\n%s",
                     (unsigned long long)op, fixture->log);
        struct timespec pause = {.tv_nsec = 1000000};
        nanosleep(&pause, NULL);
    }
}

static void snapshot_path(const fixture_t *fixture, uint64_t op, char *path, size_t size) {
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(op, name);
    snprintf(path, size, "%s/%s/%s", fixture->directory, SZ_SNAPSHOT_DIRECTORY, name);
}

static bool log_has(fixture_t *fixture, const char *text) {
    pthread_mutex_lock(&fixture->log_mutex);
    bool found = strstr(fixture->log, text) != NULL;
    pthread_mutex_unlock(&fixture->log_mutex);
    return found;
}

static void digest_assert_equal(const sz_replica_info_t *a, const sz_replica_info_t *b) {
    cr_assert(a->digest.low == b->digest.low && a->digest.high == b->digest.high,
              "same digest");
    cr_assert_eq(a->op_committed, b->op_committed);
    cr_assert_eq(a->timestamp_last, b->timestamp_last);
}

/* A batch of count transfers among accounts 1..8, ids from first; every 4th fails. */
static sz_message_t *transfers_call(fixture_t *fixture, sz_u128 client_id,
                                    uint32_t request_number, uint32_t first, uint32_t count,
                                    sz_transfer_t *transfers_out) {
    for (uint32_t index = 0; index < count; index++) {
        transfers_out[index] =
            transfer(first + index, index % 8 + 1, (index + 3) % 8 + 1, index + 1, 0, 0);
        if (index % 4 == 0) transfers_out[index].credit_account_id = 77;
    }
    return call(fixture, SZ_OPERATION_CREATE_TRANSFERS, client_id, request_number,
                transfers_out, count * (uint32_t)sizeof(sz_transfer_t), SZ_STATUS_OK);
}

/* The retry is answered with exactly the reply recorded in original (op, T, results). */
static void retry_assert_cached(fixture_t *fixture, sz_u128 client_id, uint32_t request_number,
                                const sz_transfer_t *transfers, uint32_t count,
                                const sz_frame_header_t *original, const uint8_t *body) {
    sz_message_t *reply = call(fixture, SZ_OPERATION_CREATE_TRANSFERS, client_id, request_number,
                               transfers, count * (uint32_t)sizeof(sz_transfer_t), SZ_STATUS_OK);
    const sz_frame_header_t *again = sz_message_reply_header(reply);
    cr_assert_eq(again->op, original->op);
    cr_assert_eq(again->timestamp, original->timestamp);
    cr_assert_eq(again->body_size, original->body_size);
    cr_assert_eq(memcmp(reply_body(reply), body, original->body_size), 0);
    message_free(fixture, reply);
}

Test(replica, a_restart_from_a_snapshot_keeps_the_digest_and_the_cached_replies) {
    fixture_t fixture;
    fixture_init(&fixture, false, ledger_roomy());
    fixture_snapshots_enable(&fixture, 3);
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 8);
    static sz_transfer_t in_snapshot[40], in_tail[24];
    uint8_t body_snapshot[40 * sizeof(sz_create_result_t)];
    uint8_t body_tail[24 * sizeof(sz_create_result_t)];
    sz_message_t *reply = transfers_call(&fixture, CLIENT_B, 5, 100, 40, in_snapshot);
    sz_frame_header_t original_snapshot = *sz_message_reply_header(reply);
    cr_assert_eq(original_snapshot.body_size, 10 * sizeof(sz_create_result_t));
    memcpy(body_snapshot, reply_body(reply), original_snapshot.body_size);
    message_free(&fixture, reply);
    snapshot_take(&fixture, 2);
    /* Written after the snapshot: only the journal's tail has it. */
    reply = transfers_call(&fixture, CLIENT_C, 9, 200, 24, in_tail);
    sz_frame_header_t original_tail = *sz_message_reply_header(reply);
    memcpy(body_tail, reply_body(reply), original_tail.body_size);
    message_free(&fixture, reply);
    sz_replica_info_t before = info_stopped(&fixture);
    cr_assert_eq(before.op_committed, 3);
    cr_assert_eq(before.snapshot_op_last, 2);
    cr_assert(log_has(&fixture, "msg=snapshot_written op=2 "), "%s", fixture.log);
    cr_assert_eq(atomic_load(&fixture.metrics.snapshots_written), 1);
    cr_assert_eq(atomic_load(&fixture.metrics.snapshot_pause_us.count), 1);

    fixture_restart(&fixture);
    sz_replica_info_t after = info_stopped(&fixture);
    cr_assert_eq(after.snapshot_op_recovered, 2, "recovered from the snapshot");
    cr_assert_eq(after.op_count_replayed, 1, "then the journal after it");
    digest_assert_equal(&after, &before);
    cr_assert_eq(after.ledger.transfer_count, before.ledger.transfer_count);

    retry_assert_cached(&fixture, CLIENT_B, 5, in_snapshot, 40, &original_snapshot,
                        body_snapshot);
    retry_assert_cached(&fixture, CLIENT_C, 9, in_tail, 24, &original_tail, body_tail);
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_B, 4, in_snapshot,
                 sizeof(in_snapshot), SZ_STATUS_REQUEST_STALE);
    message_free(&fixture, reply);
    reply = call(&fixture, SZ_OPERATION_CREATE_TRANSFERS, CLIENT_B, 5, in_tail,
                 sizeof(in_tail), SZ_STATUS_REQUEST_CONFLICT);
    message_free(&fixture, reply);
    sz_replica_info_t last = info_stopped(&fixture);
    cr_assert_eq(last.op_last, 3, "no retry was applied again");
    digest_assert_equal(&last, &before);
    fixture_deinit(&fixture);
}

static void file_flip_byte(const char *path, uint64_t offset) {
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    uint8_t byte = 0;
    cr_assert_eq(pread(fd, &byte, 1, (off_t)offset), 1);
    byte ^= 0x10;
    cr_assert_eq(pwrite(fd, &byte, 1, (off_t)offset), 1);
    close(fd);
}

static uint64_t file_size(const char *path) {
    struct stat status;
    cr_assert_eq(stat(path, &status), 0, "%s: %s", path, strerror(errno));
    return (uint64_t)status.st_size;
}

Test(replica, a_damaged_newest_snapshot_falls_back_to_the_previous_then_to_the_journal) {
    fixture_t fixture;
    fixture_init(&fixture, false, ledger_roomy());
    fixture_snapshots_enable(&fixture, 3);
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 8);
    static sz_transfer_t transfers[64];
    for (uint32_t round = 0; round < 3; round++) {
        message_free(&fixture, transfers_call(&fixture, CLIENT_B, round + 1, 1000 * (round + 1),
                                              64, transfers));
        if (round < 2) snapshot_take(&fixture, round + 2);
    }
    sz_replica_info_t before = info_stopped(&fixture);
    cr_assert_eq(before.op_committed, 4);

    /* A bit flipped in the middle of the newest: the previous one is used. */
    char path[256];
    snapshot_path(&fixture, 3, path, sizeof(path));
    file_flip_byte(path, file_size(path) / 2);
    fixture_restart(&fixture);
    sz_replica_info_t after = info_stopped(&fixture);
    cr_assert(log_has(&fixture, "msg=snapshot_invalid name=snapshot.00000000000000000003 "),
              "%s", fixture.log);
    cr_assert_eq(after.snapshot_op_recovered, 2);
    cr_assert_eq(after.op_count_replayed, 2);
    digest_assert_equal(&after, &before);

    /* And the previous one cut short too: the whole journal. */
    snapshot_path(&fixture, 2, path, sizeof(path));
    cr_assert_eq(truncate(path, (off_t)(file_size(path) * 2 / 3)), 0);
    fixture_restart(&fixture);
    after = info_stopped(&fixture);
    cr_assert(log_has(&fixture, "msg=snapshot_invalid name=snapshot.00000000000000000002 "),
              "%s", fixture.log);
    cr_assert_eq(after.snapshot_op_recovered, 0);
    cr_assert_eq(after.op_count_replayed, 4);
    digest_assert_equal(&after, &before);
    printf("fallback log:\n%s", fixture.log);
    fixture_deinit(&fixture);
}

/* Copies snapshot op of one data directory into another's snapshots. */
static void snapshot_copy(const fixture_t *source, const fixture_t *target, uint64_t op) {
    char from[256], to[256], command[600];
    snapshot_path(source, op, from, sizeof(from));
    snapshot_path(target, op, to, sizeof(to));
    snprintf(command, sizeof(command), "cp '%s' '%s'", from, to);
    cr_assert_eq(system(command), 0);
}

Test(replica, a_snapshot_of_another_history_is_not_used_and_one_past_the_journal_is_refused) {
    fixture_t first, second;
    fixture_init(&first, false, ledger_roomy());
    fixture_snapshots_enable(&first, 3);
    fixture_open(&first);
    fixture_start(&first);
    accounts_create(&first, CLIENT_A, 1, 1, 8);
    static sz_transfer_t transfers[16];
    message_free(&first, transfers_call(&first, CLIENT_B, 1, 10, 16, transfers));
    message_free(&first, transfers_call(&first, CLIENT_B, 2, 30, 16, transfers));
    snapshot_take(&first, 3);
    cr_assert_eq(fixture_stop(&first), 0);

    /* Same cluster, other ops: four of them, so op 3 exists with another chain head. */
    fixture_init(&second, false, ledger_roomy());
    fixture_snapshots_enable(&second, 3);
    fixture_open(&second);
    fixture_start(&second);
    accounts_create(&second, CLIENT_A, 1, 1, 8);
    for (uint32_t round = 0; round < 3; round++) {
        message_free(&second, transfers_call(&second, CLIENT_C, round + 1, 500 + 20 * round, 8,
                                             transfers));
    }
    sz_replica_info_t before = info_stopped(&second);
    cr_assert_eq(before.op_committed, 4);
    snapshot_copy(&first, &second, 3);
    fixture_restart(&second);
    sz_replica_info_t after = info_stopped(&second);
    cr_assert(log_has(&second, "msg=snapshot_invalid name=snapshot.00000000000000000003 "),
              "%s", second.log);
    cr_assert_eq(after.snapshot_op_recovered, 0, "the whole journal instead");
    digest_assert_equal(&after, &before);
    cr_assert_eq(fixture_stop(&second), 0);
    fixture_close(&second);

    /* A journal that ends at op 1 under a snapshot of op 3: refused, nothing loaded. */
    fixture_t third;
    fixture_init(&third, false, ledger_roomy());
    fixture_snapshots_enable(&third, 3);
    fixture_open(&third);
    fixture_start(&third);
    accounts_create(&third, CLIENT_A, 1, 1, 8);
    cr_assert_eq(fixture_stop(&third), 0);
    fixture_close(&third);
    snapshot_copy(&first, &third, 3);
    sz_storage_deinit(third.storage);
    cr_assert_eq(sz_storage_uring_init(third.directory, &third.storage), 0);
    third.config.storage = third.storage;
    sz_journal_problem_t problem;
    int result = fixture_open_result(&third, &problem);
    cr_assert_eq(result, -EUCLEAN, "open: %s", strerror(-result));
    cr_assert(strstr(problem.reason, "journal ends at op 1") != NULL, "%s", problem.reason);
    printf("refusal: %s: %s\n", problem.file, problem.reason);
    fixture_deinit(&third);
    fixture_deinit(&second);
    fixture_deinit(&first);
}

Test(replica, pruning_keeps_the_newest_snapshots) {
    fixture_t fixture;
    fixture_init(&fixture, false, ledger_roomy());
    fixture_snapshots_enable(&fixture, 2);
    fixture_open(&fixture);
    fixture_start(&fixture);
    accounts_create(&fixture, CLIENT_A, 1, 1, 8);
    static sz_transfer_t transfers[8];
    for (uint32_t round = 0; round < 4; round++) {
        message_free(&fixture, transfers_call(&fixture, CLIENT_B, round + 1, 100 + 10 * round, 8,
                                              transfers));
        snapshot_take(&fixture, round + 2);
    }
    cr_assert_eq(fixture_stop(&fixture), 0); /* waits for the last child */
    uint64_t ops[8];
    int count = sz_snapshot_list(fixture.snapshots_fd, ops, 8);
    cr_assert_eq(count, 2);
    cr_assert_eq(ops[0], 5);
    cr_assert_eq(ops[1], 4);
    fixture_start(&fixture);
    fixture_deinit(&fixture);
}
