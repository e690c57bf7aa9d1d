/* test_library.c: libsumzero's own mechanics against a scripted fake server
 * (fake_server.h) over real loopback sockets: results split back by index, merging of
 * concurrent calls (and never across an open linked chain), lookups split by id, BUSY
 * retried under new numbers, a lost reply answered from the reply cache with the same
 * request number, pipelined writes lost together resubmitted (exists), timeouts, a
 * dead-looking connection reopened, cancellation at close, protocol violations and bad
 * packets. The real server's end-to-end behaviour is test_client.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "fake_server.h"
#include "sumzero.h"

static uint64_t test_now_ns(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (uint64_t)time.tv_sec * 1000000000ull + (uint64_t)time.tv_nsec;
}

/* Polls a condition for up to 10 s (never a fixed sleep standing in for a wait). */
#define WAIT_FOR(condition)                                                               \
    do {                                                                                  \
        uint64_t wait_deadline_ns = test_now_ns() + 10000000000ull;                       \
        while (!(condition)) {                                                            \
            cr_assert(test_now_ns() < wait_deadline_ns, "timed out waiting for " #condition); \
            struct timespec pause = {0, 200000};                                          \
            nanosleep(&pause, NULL);                                                      \
        }                                                                                 \
    } while (0)

static sumzero_client_t *client_open_to(const fake_server_t *server,
                                        sumzero_client_options_t options) {
    char address[32];
    snprintf(address, sizeof(address), "127.0.0.1:%u", server->port);
    options.addresses = address;
    sumzero_client_t *client = NULL;
    int error = sumzero_client_open(&client, &options);
    cr_assert_eq(error, 0, "open: %s", sumzero_error_message(error));
    return client;
}

static sumzero_account_t account_make(sumzero_u128_t id, uint16_t flags) {
    return (sumzero_account_t){.id = id, .ledger = 1, .code = 1, .flags = flags};
}

static sumzero_transfer_t transfer_make(sumzero_u128_t id, sumzero_u128_t amount,
                                        uint16_t flags) {
    return (sumzero_transfer_t){.id = id, .debit_account_id = 1, .credit_account_id = 2,
                                .amount = amount, .ledger = 1, .code = 1, .flags = flags};
}

/* An async packet whose completion the test can wait for. */
typedef struct async_call {
    sumzero_packet_t packet;
    _Atomic bool done;
    /* Results are records (u128 fields): aligned as the records are. */
    alignas(16) uint8_t results[8 * 128];
} async_call_t;

static void async_done(void *context, sumzero_packet_t *packet) {
    (void)packet;
    async_call_t *call = context;
    atomic_store(&call->done, true);
}

static void async_submit(sumzero_client_t *client, async_call_t *call, uint32_t operation,
                         const void *events, uint32_t event_count) {
    call->packet = (sumzero_packet_t){.operation = operation, .event_count = event_count,
                                      .events = events, .results = call->results,
                                      .result_capacity = 8, .callback = async_done,
                                      .context = call};
    atomic_store(&call->done, false);
    cr_assert_eq(sumzero_submit(client, &call->packet), 0);
}

Test(library, creates_return_only_the_failed_events_with_their_indexes) {
    fake_server_t *server = fake_server_start();
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){0});
    sumzero_account_t accounts[4] = {account_make(1, 0), account_make(0, 0), account_make(2, 0),
                                     account_make(1, 0)};
    sumzero_create_result_t results[4];
    uint32_t result_count = 99;
    cr_assert_eq(sumzero_create_accounts(client, accounts, 4, results, &result_count), 0);
    cr_assert_eq(result_count, 2);
    cr_assert_eq(results[0].index, 1);
    cr_assert_eq(results[0].result, SUMZERO_CREATE_ACCOUNT_ID_MUST_NOT_BE_ZERO);
    cr_assert_eq(results[1].index, 3);
    cr_assert_eq(results[1].result, SUMZERO_CREATE_ACCOUNT_EXISTS);
    sumzero_u128_t ids[3] = {2, 7, 1};
    sumzero_account_t found[3];
    cr_assert_eq(sumzero_lookup_accounts(client, ids, 3, found, &result_count), 0);
    cr_assert_eq(result_count, 2);
    cr_assert(found[0].id == 2 && found[1].id == 1);
    sumzero_client_close(client);
    fake_server_stop(server);
}

#define MERGE_THREADS 8
#define MERGE_CALLS 40

typedef struct merge_thread {
    sumzero_client_t *client;
    uint32_t thread_index;
    uint32_t failures;
} merge_thread_t;

/* Each call sends 1..4 transfers with ids unique to this thread; amounts divisible by 7
 * fail with exceeds_credits at the fake, so the thread knows exactly what it must get. */
static void *merge_thread_run(void *argument) {
    merge_thread_t *thread = argument;
    for (uint32_t call = 0; call < MERGE_CALLS; call++) {
        uint32_t count = 1 + (call + thread->thread_index) % 4;
        sumzero_transfer_t transfers[4];
        uint32_t expected[4];
        uint32_t expected_count = 0;
        for (uint32_t index = 0; index < count; index++) {
            sumzero_u128_t id = 1000000u * (thread->thread_index + 1) + call * 10u + index;
            sumzero_u128_t amount = (call * 3u + index * 5u + thread->thread_index) % 10u + 1u;
            transfers[index] = transfer_make(id, amount, 0);
            if (amount % 7 == 0) expected[expected_count++] = index;
        }
        sumzero_create_result_t results[4];
        uint32_t result_count = 0;
        int error = sumzero_create_transfers(thread->client, transfers, count, results,
                                             &result_count);
        bool right = error == 0 && result_count == expected_count;
        for (uint32_t index = 0; right && index < result_count; index++) {
            right = results[index].index == expected[index] &&
                    results[index].result == SUMZERO_CREATE_TRANSFER_EXCEEDS_CREDITS;
        }
        if (!right) thread->failures++;
    }
    return NULL;
}

Test(library, concurrent_calls_are_merged_and_every_caller_gets_its_own_results) {
    fake_server_t *server = fake_server_start();
    atomic_store(&server->delay_us, 1000); /* let calls pile up while one is out */
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){
                                                          .pipeline_max = 2});
    pthread_t threads[MERGE_THREADS];
    merge_thread_t states[MERGE_THREADS];
    for (uint32_t index = 0; index < MERGE_THREADS; index++) {
        states[index] = (merge_thread_t){.client = client, .thread_index = index};
        cr_assert_eq(pthread_create(&threads[index], NULL, merge_thread_run, &states[index]), 0);
    }
    for (uint32_t index = 0; index < MERGE_THREADS; index++) {
        cr_assert_eq(pthread_join(threads[index], NULL), 0);
        cr_assert_eq(states[index].failures, 0, "thread %u got wrong results", index);
    }
    sumzero_client_stats_t stats;
    sumzero_client_stats(client, &stats);
    cr_assert_eq(stats.packets_completed, MERGE_THREADS * MERGE_CALLS);
    cr_assert_lt(stats.requests_sent, MERGE_THREADS * MERGE_CALLS / 2,
                 "%llu requests for %u calls", (unsigned long long)stats.requests_sent,
                 MERGE_THREADS * MERGE_CALLS);
    cr_assert_gt(stats.requests_merged, 0);
    cr_assert_eq(atomic_load(&server->requests), stats.requests_sent);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, a_packet_ending_in_an_open_linked_chain_travels_alone) {
    fake_server_t *server = fake_server_start();
    atomic_store(&server->hold, true);
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){
                                                          .pipeline_max = 1});
    static async_call_t calls[4];
    sumzero_transfer_t first[1] = {transfer_make(1, 1, 0)};
    sumzero_transfer_t chain[2] = {transfer_make(2, 1, SUMZERO_TRANSFER_LINKED),
                                   transfer_make(3, 1, SUMZERO_TRANSFER_LINKED)};
    sumzero_transfer_t second[1] = {transfer_make(4, 1, 0)};
    sumzero_transfer_t third[2] = {transfer_make(5, 1, SUMZERO_TRANSFER_LINKED),
                                   transfer_make(6, 7, 0)};
    async_submit(client, &calls[0], SUMZERO_OPERATION_CREATE_TRANSFERS, first, 1);
    WAIT_FOR(atomic_load(&server->requests) == 1);
    async_submit(client, &calls[1], SUMZERO_OPERATION_CREATE_TRANSFERS, chain, 2);
    async_submit(client, &calls[2], SUMZERO_OPERATION_CREATE_TRANSFERS, second, 1);
    async_submit(client, &calls[3], SUMZERO_OPERATION_CREATE_TRANSFERS, third, 2);
    atomic_store(&server->hold, false);
    for (uint32_t index = 0; index < 4; index++) WAIT_FOR(atomic_load(&calls[index].done));
    cr_assert_eq(atomic_load(&server->requests), 3);
    cr_assert_eq(server->request_events[0], 1);
    cr_assert_eq(server->request_events[1], 2, "the open chain went alone");
    cr_assert_eq(server->request_events[2], 3, "the two that follow were merged");
    const sumzero_create_result_t *chain_results = (const void *)calls[1].results;
    cr_assert_eq(calls[1].packet.reply.result_count, 1);
    cr_assert_eq(chain_results[0].index, 1);
    cr_assert_eq(chain_results[0].result, SUMZERO_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN);
    cr_assert_eq(calls[2].packet.reply.result_count, 0);
    const sumzero_create_result_t *third_results = (const void *)calls[3].results;
    cr_assert_eq(calls[3].packet.reply.result_count, 1);
    cr_assert_eq(third_results[0].index, 1, "index rebased to the packet's own events");
    cr_assert_eq(third_results[0].result, SUMZERO_CREATE_TRANSFER_EXCEEDS_CREDITS);
    /* Merged packets share the op; timestamps are the request's T plus their offset. */
    cr_assert_eq(calls[3].packet.reply.op, calls[2].packet.reply.op);
    cr_assert_eq(calls[3].packet.reply.timestamp, calls[2].packet.reply.timestamp + 1);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, merged_lookups_give_each_caller_the_records_of_its_own_ids) {
    fake_server_t *server = fake_server_start();
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){
                                                          .pipeline_max = 1});
    sumzero_account_t accounts[5];
    for (uint32_t index = 0; index < 5; index++) accounts[index] = account_make(index + 1, 0);
    sumzero_create_result_t results[5];
    uint32_t result_count;
    cr_assert_eq(sumzero_create_accounts(client, accounts, 5, results, &result_count), 0);
    cr_assert_eq(result_count, 0);

    atomic_store(&server->hold, true);
    static async_call_t calls[4];
    static const sumzero_u128_t ids0[1] = {1};
    static const sumzero_u128_t ids1[3] = {2, 9, 2};
    static const sumzero_u128_t ids2[1] = {9};
    static const sumzero_u128_t ids3[3] = {3, 4, 1};
    uint32_t requests_before = atomic_load(&server->requests);
    async_submit(client, &calls[0], SUMZERO_OPERATION_LOOKUP_ACCOUNTS, ids0, 1);
    WAIT_FOR(atomic_load(&server->requests) == requests_before + 1);
    async_submit(client, &calls[1], SUMZERO_OPERATION_LOOKUP_ACCOUNTS, ids1, 3);
    async_submit(client, &calls[2], SUMZERO_OPERATION_LOOKUP_ACCOUNTS, ids2, 1);
    async_submit(client, &calls[3], SUMZERO_OPERATION_LOOKUP_ACCOUNTS, ids3, 3);
    atomic_store(&server->hold, false);
    for (uint32_t index = 0; index < 4; index++) WAIT_FOR(atomic_load(&calls[index].done));
    cr_assert_eq(atomic_load(&server->requests), requests_before + 2);
    cr_assert_eq(server->request_events[requests_before + 1], 7);
    const sumzero_account_t *found1 = (const void *)calls[1].results;
    cr_assert_eq(calls[1].packet.reply.result_count, 2);
    cr_assert(found1[0].id == 2 && found1[1].id == 2);
    cr_assert_eq(calls[2].packet.reply.result_count, 0);
    const sumzero_account_t *found3 = (const void *)calls[3].results;
    cr_assert_eq(calls[3].packet.reply.result_count, 3);
    cr_assert(found3[0].id == 3 && found3[1].id == 4 && found3[2].id == 1);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, busy_replies_are_retried_under_new_request_numbers) {
    fake_server_t *server = fake_server_start();
    atomic_store(&server->busy_count, 3);
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){
                                                          .backoff_min_ms = 1,
                                                          .backoff_max_ms = 5});
    sumzero_account_t account = account_make(1, 0);
    sumzero_create_result_t results[1];
    uint32_t result_count = 9;
    cr_assert_eq(sumzero_create_accounts(client, &account, 1, results, &result_count), 0);
    cr_assert_eq(result_count, 0);
    sumzero_client_stats_t stats;
    sumzero_client_stats(client, &stats);
    cr_assert_eq(stats.requests_resubmitted, 3);
    cr_assert_eq(atomic_load(&server->requests), 4);
    cr_assert_eq(atomic_load(&server->writes_applied), 1);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, busy_beyond_the_retry_limit_returns_the_status) {
    fake_server_t *server = fake_server_start();
    atomic_store(&server->busy_count, 100);
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){
                                                          .retry_max = 2,
                                                          .backoff_min_ms = 1,
                                                          .backoff_max_ms = 2});
    sumzero_account_t account = account_make(1, 0);
    sumzero_create_result_t results[1];
    int error = sumzero_create_accounts(client, &account, 1, results, NULL);
    cr_assert_eq(error, SUMZERO_ERROR_STATUS(SUMZERO_STATUS_BUSY), "%s",
                 sumzero_error_message(error));
    cr_assert_eq(sumzero_error_status(error), SUMZERO_STATUS_BUSY);
    cr_assert_str_eq(sumzero_error_message(error), "busy");
    cr_assert_eq(atomic_load(&server->requests), 3);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, a_lost_reply_is_answered_from_the_reply_cache_with_the_same_number) {
    fake_server_t *server = fake_server_start();
    atomic_store(&server->drop_before_reply, 1);
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){0});
    sumzero_transfer_t transfers[2] = {transfer_make(100, 7, 0), transfer_make(101, 1, 0)};
    sumzero_create_result_t results[2];
    uint32_t result_count = 0;
    cr_assert_eq(sumzero_create_transfers(client, transfers, 2, results, &result_count), 0);
    /* The original results, not `exists`: the cache answered the exact retry. */
    cr_assert_eq(result_count, 1);
    cr_assert_eq(results[0].index, 0);
    cr_assert_eq(results[0].result, SUMZERO_CREATE_TRANSFER_EXCEEDS_CREDITS);
    cr_assert_eq(atomic_load(&server->writes_applied), 1);
    cr_assert_eq(atomic_load(&server->requests), 2);
    sumzero_client_stats_t stats;
    sumzero_client_stats(client, &stats);
    cr_assert_eq(stats.requests_sent, 1, "one request number for both sends");
    cr_assert_eq(stats.requests_resent, 1);
    cr_assert_eq(stats.requests_resubmitted, 0);
    cr_assert_eq(stats.connects, 2);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, pipelined_writes_lost_together_are_resubmitted_and_see_exists) {
    fake_server_t *server = fake_server_start();
    atomic_store(&server->silent_count, 1);      /* the first write is applied, unanswered */
    atomic_store(&server->drop_before_reply, 1); /* the second too, then the link drops */
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){0});
    static async_call_t calls[2];
    sumzero_account_t accounts[2] = {account_make(50, 0), account_make(51, 0)};
    sumzero_transfer_t transfers[1] = {transfer_make(60, 1, 0)};
    async_submit(client, &calls[0], SUMZERO_OPERATION_CREATE_ACCOUNTS, accounts, 2);
    async_submit(client, &calls[1], SUMZERO_OPERATION_CREATE_TRANSFERS, transfers, 1);
    WAIT_FOR(atomic_load(&calls[0].done) && atomic_load(&calls[1].done));
    /* The older write's reply is gone (the cache holds the last write): resubmitted, its
     * events come back `exists`, and nothing was applied twice. */
    cr_assert_eq(calls[0].packet.reply.error, 0);
    cr_assert(calls[0].packet.reply.flags & SUMZERO_REPLY_RESUBMITTED);
    const sumzero_create_result_t *results = (const void *)calls[0].results;
    cr_assert_eq(calls[0].packet.reply.result_count, 2);
    cr_assert_eq(results[0].result, SUMZERO_CREATE_ACCOUNT_EXISTS);
    cr_assert_eq(results[1].result, SUMZERO_CREATE_ACCOUNT_EXISTS);
    /* The last write was answered from the cache: its own result, ok. */
    cr_assert_eq(calls[1].packet.reply.error, 0);
    cr_assert_eq(calls[1].packet.reply.flags & SUMZERO_REPLY_RESUBMITTED, 0);
    cr_assert_eq(calls[1].packet.reply.result_count, 0);
    cr_assert_eq(server->account_count, 2);
    cr_assert_eq(server->transfer_count, 1);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, a_request_times_out_when_the_server_does_not_answer) {
    fake_server_t *server = fake_server_start();
    atomic_store(&server->hold, true);
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){
                                                          .request_timeout_ms = 300});
    sumzero_account_t account = account_make(1, 0);
    sumzero_create_result_t results[1];
    uint64_t start_ns = test_now_ns();
    int error = sumzero_create_accounts(client, &account, 1, results, NULL);
    uint64_t elapsed_ms = (test_now_ns() - start_ns) / 1000000u;
    cr_assert_eq(error, -ETIMEDOUT, "%s", sumzero_error_message(error));
    cr_assert_geq(elapsed_ms, 290);
    cr_assert_lt(elapsed_ms, 3000);
    /* The late answer to the abandoned request is ignored; the next call works. */
    atomic_store(&server->hold, false);
    sumzero_account_t second = account_make(2, 0);
    cr_assert_eq(sumzero_create_accounts(client, &second, 1, results, NULL), 0);
    sumzero_client_stats_t stats;
    sumzero_client_stats(client, &stats);
    cr_assert_eq(stats.timeouts, 1);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, a_connection_without_replies_is_reopened_and_the_request_resent) {
    fake_server_t *server = fake_server_start();
    atomic_store(&server->hold, true);
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){
                                                          .reply_timeout_ms = 100,
                                                          .backoff_min_ms = 1});
    static async_call_t call;
    sumzero_account_t account = account_make(1, 0);
    async_submit(client, &call, SUMZERO_OPERATION_CREATE_ACCOUNTS, &account, 1);
    sumzero_client_stats_t stats;
    WAIT_FOR((sumzero_client_stats(client, &stats), stats.requests_resent >= 1));
    atomic_store(&server->hold, false);
    WAIT_FOR(atomic_load(&call.done));
    cr_assert_eq(call.packet.reply.error, 0);
    cr_assert_eq(call.packet.reply.result_count, 0, "the cached reply, not `exists`");
    cr_assert_eq(atomic_load(&server->writes_applied), 1);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, an_unreachable_server_fails_with_the_connection_error) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    socklen_t size = sizeof(address);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&address, &size), 0);
    close(fd); /* a port nobody listens on */
    char text[32];
    snprintf(text, sizeof(text), "127.0.0.1:%u", ntohs(address.sin_port));
    sumzero_client_t *client = NULL;
    cr_assert_eq(sumzero_client_open(&client, &(sumzero_client_options_t){
                                                  .addresses = text, .retry_max = 2,
                                                  .backoff_min_ms = 1}),
                 0);
    sumzero_u128_t id = 1;
    sumzero_account_t found[1];
    uint64_t start_ns = test_now_ns();
    int error = sumzero_lookup_accounts(client, &id, 1, found, NULL);
    cr_assert_eq(error, -ECONNREFUSED, "%s", sumzero_error_message(error));
    cr_assert_lt(test_now_ns() - start_ns, 2000000000ull);
    sumzero_client_close(client);
}

Test(library, closing_cancels_the_packets_still_out) {
    fake_server_t *server = fake_server_start();
    atomic_store(&server->hold, true);
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){0});
    static async_call_t calls[2];
    sumzero_account_t accounts[2] = {account_make(1, 0), account_make(2, SUMZERO_ACCOUNT_LINKED)};
    async_submit(client, &calls[0], SUMZERO_OPERATION_CREATE_ACCOUNTS, &accounts[0], 1);
    WAIT_FOR(atomic_load(&server->requests) == 1);
    async_submit(client, &calls[1], SUMZERO_OPERATION_CREATE_ACCOUNTS, &accounts[1], 1);
    sumzero_client_close(client);
    cr_assert(atomic_load(&calls[0].done) && atomic_load(&calls[1].done));
    cr_assert_eq(calls[0].packet.reply.error, -ECANCELED);
    cr_assert_eq(calls[1].packet.reply.error, -ECANCELED);
    atomic_store(&server->hold, false);
    fake_server_stop(server);
}

Test(library, bad_packets_are_refused_at_submission) {
    fake_server_t *server = fake_server_start();
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){0});
    static async_call_t call;
    sumzero_account_t account = account_make(1, 0);
    sumzero_packet_t packet = {.operation = SUMZERO_OPERATION_CREATE_ACCOUNTS,
                               .event_count = 1, .events = &account, .results = call.results,
                               .result_capacity = 1, .callback = async_done, .context = &call};
    sumzero_packet_t bad = packet;
    bad.operation = 0;
    cr_assert_eq(sumzero_submit(client, &bad), -EINVAL);
    bad = packet;
    bad.operation = 64; /* expire_pending: internal, never from a client */
    cr_assert_eq(sumzero_submit(client, &bad), -EINVAL);
    bad = packet;
    bad.callback = NULL;
    cr_assert_eq(sumzero_submit(client, &bad), -EINVAL);
    bad = packet;
    bad.result_capacity = 0;
    cr_assert_eq(sumzero_submit(client, &bad), -EINVAL);
    bad = packet;
    bad.event_count = SUMZERO_BATCH_EVENTS_MAX + 1;
    cr_assert_eq(sumzero_submit(client, &bad), -EMSGSIZE);
    bad = packet;
    bad.operation = SUMZERO_OPERATION_GET_ACCOUNT_TRANSFERS;
    bad.event_count = 2;
    cr_assert_eq(sumzero_submit(client, &bad), -EINVAL);
    cr_assert_eq(atomic_load(&call.done), false, "no callback for a refused packet");
    sumzero_client_options_t options = {.pipeline_max = 65};
    sumzero_client_t *other = NULL;
    cr_assert_eq(sumzero_client_open(&other, &options), -EINVAL);
    options = (sumzero_client_options_t){.addresses = "127.0.0.1:notaport"};
    cr_assert_eq(sumzero_client_open(&other, &options), -EINVAL);
    /* No events: answered at once, no request. */
    uint32_t result_count = 5;
    cr_assert_eq(sumzero_create_accounts(client, NULL, 0, NULL, &result_count), 0);
    cr_assert_eq(result_count, 0);
    cr_assert_eq(atomic_load(&server->requests), 0);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, queries_cap_the_limit_to_what_the_caller_can_hold) {
    fake_server_t *server = fake_server_start();
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){0});
    sumzero_account_filter_t filter = {.account_id = 1, .limit = 100,
                                       .flags = SUMZERO_FILTER_DEBITS};
    sumzero_transfer_t rows[10];
    uint32_t row_count = 0;
    cr_assert_eq(sumzero_get_account_transfers(client, &filter, rows, 10, &row_count), 0);
    cr_assert_eq(row_count, 10);
    cr_assert(rows[0].id == 10, "the server saw limit=10");
    cr_assert(rows[9].amount == 10);
    cr_assert_eq(filter.limit, 100, "the caller's filter is left alone");
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, a_reply_that_breaks_the_protocol_fails_with_eproto) {
    fake_server_t *server = fake_server_start();
    atomic_store(&server->bad_reply, 1);
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){0});
    sumzero_account_t account = account_make(0, 0);
    sumzero_create_result_t results[1];
    cr_assert_eq(sumzero_create_accounts(client, &account, 1, results, NULL), -EPROTO);
    cr_assert_eq(sumzero_create_accounts(client, &account, 1, results, NULL), 0);
    sumzero_client_close(client);
    fake_server_stop(server);
}

typedef struct nested_call {
    sumzero_client_t *client;
    _Atomic int error;
    _Atomic bool done;
} nested_call_t;

static void nested_callback(void *context, sumzero_packet_t *packet) {
    (void)packet;
    nested_call_t *nested = context;
    sumzero_account_t account = account_make(5, 0);
    sumzero_create_result_t results[1];
    atomic_store(&nested->error, sumzero_create_accounts(nested->client, &account, 1, results,
                                                         NULL));
    atomic_store(&nested->done, true);
}

Test(library, a_synchronous_call_from_a_callback_returns_edeadlk) {
    fake_server_t *server = fake_server_start();
    sumzero_client_t *client = client_open_to(server, (sumzero_client_options_t){0});
    nested_call_t nested = {.client = client};
    sumzero_account_t account = account_make(1, 0);
    sumzero_create_result_t results[1];
    sumzero_packet_t packet = {.operation = SUMZERO_OPERATION_CREATE_ACCOUNTS,
                               .event_count = 1, .events = &account, .results = results,
                               .result_capacity = 1, .callback = nested_callback,
                               .context = &nested};
    cr_assert_eq(sumzero_submit(client, &packet), 0);
    WAIT_FOR(atomic_load(&nested.done));
    cr_assert_eq(atomic_load(&nested.error), -EDEADLK);
    sumzero_client_close(client);
    fake_server_stop(server);
}

Test(library, names_and_errors_read_as_the_server_prints_them) {
    cr_assert_str_eq(sumzero_create_transfer_result_name(54), "exceeds_credits");
    cr_assert_str_eq(sumzero_create_account_result_name(21), "exists");
    cr_assert_str_eq(sumzero_create_account_result_name(999), "unknown");
    cr_assert_str_eq(sumzero_status_name(SUMZERO_STATUS_RATE_LIMITED), "rate_limited");
    cr_assert_str_eq(sumzero_status_name(999), "unknown");
    cr_assert_str_eq(sumzero_operation_name(2), "create_transfers");
    cr_assert_str_eq(sumzero_operation_name(64), "unknown");
    cr_assert_str_eq(sumzero_error_message(0), "ok");
    cr_assert_str_eq(sumzero_error_message(-ECONNREFUSED), "Connection refused");
    cr_assert_str_eq(sumzero_error_message(SUMZERO_ERROR_STATUS(SUMZERO_STATUS_ACCOUNTS_FULL)),
                     "accounts_full");
    cr_assert_eq(sumzero_error_status(-ETIMEDOUT), SUMZERO_STATUS_OK);
    char text[SUMZERO_U128_DECIMAL_SIZE];
    sumzero_u128_t max = ~(sumzero_u128_t)0;
    cr_assert_str_eq(sumzero_u128_format(max, text), "340282366920938463463374607431768211455");
    sumzero_u128_t parsed = 0;
    cr_assert_eq(sumzero_u128_parse(text, &parsed), 0);
    cr_assert(parsed == max);
    cr_assert_eq(sumzero_u128_parse("12x", &parsed), -EINVAL);
}
