/* test_client.c: libsumzero end to end against a real `sumzero start` process (through
 * tests/harness/server.h): every operation with its results by index and the records the
 * lookups and queries then see; a request retried with the same request number (by the
 * library after a proxy cut the reply, and by hand with a raw frame) is applied once;
 * concurrent create_transfers calls from many threads reach the server as fewer requests
 * (the server's own /metrics counter) and every caller gets exactly its own results; a
 * stopped server (SIGSTOP) makes calls time out and a resumed one answers again; a
 * server restarted on the same port is reconnected to and the waiting call completes. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include "gateway/protocol.h"
#include "server_test.h"

static sumzero_account_t account_make(sumzero_u128_t id, uint16_t flags) {
    return (sumzero_account_t){.id = id, .ledger = 1, .code = 1, .flags = flags};
}

static sumzero_transfer_t transfer_make(sumzero_u128_t id, sumzero_u128_t debit_account_id,
                                        sumzero_u128_t credit_account_id, sumzero_u128_t amount,
                                        uint16_t flags) {
    return (sumzero_transfer_t){.id = id, .debit_account_id = debit_account_id,
                                .credit_account_id = credit_account_id, .amount = amount,
                                .ledger = 1, .code = 1, .flags = flags};
}

static sumzero_account_t account_lookup(sumzero_client_t *client, sumzero_u128_t id) {
    sumzero_account_t account = {0};
    uint32_t count = 0;
    cr_assert_eq(sumzero_lookup_accounts(client, &id, 1, &account, &count), 0);
    cr_assert_eq(count, 1);
    return account;
}

/* Every test: kill a server a failed assertion left behind, remove the files. */
TestSuite(client, .fini = test_cleanup);

Test(client, every_operation_works_end_to_end) {
    sz_test_server_t server;
    test_server_start(&server, NULL);
    sumzero_client_t *client = test_client_open(&server, (sumzero_client_options_t){0});

    sumzero_account_t accounts[4] = {
        account_make(1, SUMZERO_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS),
        account_make(2, SUMZERO_ACCOUNT_HISTORY), account_make(3, 0), account_make(0, 0)};
    sumzero_create_result_t results[8];
    uint32_t count = 99;
    cr_assert_eq(sumzero_create_accounts(client, accounts, 4, results, &count), 0);
    cr_assert_eq(count, 1);
    cr_assert_eq(results[0].index, 3);
    cr_assert_eq(results[0].result, SUMZERO_CREATE_ACCOUNT_ID_MUST_NOT_BE_ZERO);

    sumzero_transfer_t transfers[5] = {
        transfer_make(10, 1, 2, 100, 0), /* exceeds_credits: 1 has no credits */
        transfer_make(11, 2, 1, 300, 0),
        transfer_make(12, 1, 2, 100, 0),
        transfer_make(13, 2, 3, 50, SUMZERO_TRANSFER_PENDING),
        transfer_make(14, 1, 9, 1, 0), /* credit_account_not_found */
    };
    cr_assert_eq(sumzero_create_transfers(client, transfers, 5, results, &count), 0);
    cr_assert_eq(count, 2);
    cr_assert_eq(results[0].index, 0);
    cr_assert_eq(results[0].result, SUMZERO_CREATE_TRANSFER_EXCEEDS_CREDITS);
    cr_assert_eq(results[1].index, 4);
    cr_assert_eq(results[1].result, SUMZERO_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND);
    sumzero_transfer_t post = transfer_make(15, 2, 3, 50, SUMZERO_TRANSFER_POST_PENDING);
    post.pending_id = 13;
    cr_assert_eq(sumzero_create_transfers(client, &post, 1, results, &count), 0);
    cr_assert_eq(count, 0);

    sumzero_u128_t ids[4] = {3, 7, 1, 2};
    sumzero_account_t found[4];
    cr_assert_eq(sumzero_lookup_accounts(client, ids, 4, found, &count), 0);
    cr_assert_eq(count, 3);
    cr_assert(found[0].id == 3 && found[0].credits_posted == 50 && found[0].credits_pending == 0);
    cr_assert(found[1].id == 1 && found[1].credits_posted == 300 && found[1].debits_posted == 100);
    cr_assert(found[2].id == 2 && found[2].debits_posted == 350 && found[2].credits_posted == 100);
    cr_assert_neq(found[2].timestamp, 0);

    sumzero_u128_t transfer_ids[3] = {11, 10, 15};
    sumzero_transfer_t found_transfers[3];
    cr_assert_eq(sumzero_lookup_transfers(client, transfer_ids, 3, found_transfers, &count), 0);
    cr_assert_eq(count, 2);
    cr_assert(found_transfers[0].id == 11 && found_transfers[0].amount == 300);
    cr_assert(found_transfers[1].id == 15 && found_transfers[1].pending_id == 13);

    sumzero_account_filter_t filter = {.account_id = 2, .limit = 10,
                                       .flags = SUMZERO_FILTER_DEBITS | SUMZERO_FILTER_CREDITS};
    sumzero_transfer_t rows[10];
    cr_assert_eq(sumzero_get_account_transfers(client, &filter, rows, 10, &count), 0);
    cr_assert_eq(count, 4, "11, 12, 13, 15 touch account 2");
    cr_assert(rows[0].id == 11 && rows[3].id == 15);
    cr_assert_lt(rows[0].timestamp, rows[1].timestamp);
    filter.flags |= SUMZERO_FILTER_REVERSED;
    cr_assert_eq(sumzero_get_account_transfers(client, &filter, rows, 2, &count), 0);
    cr_assert_eq(count, 2, "capped to the caller's room");
    cr_assert(rows[0].id == 15 && rows[1].id == 13);

    filter.flags = SUMZERO_FILTER_DEBITS | SUMZERO_FILTER_CREDITS;
    sumzero_account_balance_t balances[10];
    cr_assert_eq(sumzero_get_account_balances(client, &filter, balances, 10, &count), 0);
    cr_assert_eq(count, 4);
    cr_assert(balances[3].debits_posted == 350 && balances[3].credits_posted == 100);
    cr_assert(balances[2].debits_pending == 50);
    filter.account_id = 1; /* no history flag: no rows */
    cr_assert_eq(sumzero_get_account_balances(client, &filter, balances, 10, &count), 0);
    cr_assert_eq(count, 0);

    sumzero_client_close(client);
    test_server_stop(&server);
}

Test(client, a_wrong_cluster_id_is_a_status_error) {
    sz_test_server_t server;
    test_server_start(&server, NULL);
    sumzero_client_t *client = test_client_open(&server, (sumzero_client_options_t){
                                                             .cluster_id = 77,
                                                             .retry_max = 2});
    sumzero_account_t account = account_make(1, 0);
    sumzero_create_result_t results[1];
    int error = sumzero_create_accounts(client, &account, 1, results, NULL);
    cr_assert_eq(error, SUMZERO_ERROR_STATUS(SUMZERO_STATUS_CLUSTER_INVALID), "%s",
                 sumzero_error_message(error));
    sumzero_client_close(client);
    test_server_stop(&server);
}

/* ---- retries with the same request number ------------------------------------------- */

/* A TCP proxy that forwards one client connection to the server, except that on the
 * first connection it cuts both sides as soon as the server starts to reply: the request
 * was applied, its reply is lost. Later connections are forwarded whole. */
typedef struct proxy {
    int listen_fd;
    uint16_t port;
    uint16_t server_port;
    pthread_t thread;
    _Atomic bool stop;
    _Atomic uint32_t connections;
    _Atomic uint32_t replies_cut;
} proxy_t;

static bool proxy_forward(int from, int to) {
    uint8_t buffer[65536];
    ssize_t got = read(from, buffer, sizeof(buffer));
    if (got <= 0) return false;
    for (ssize_t done = 0; done < got;) {
        ssize_t sent = send(to, buffer + done, (size_t)(got - done), MSG_NOSIGNAL);
        if (sent <= 0) return false;
        done += sent;
    }
    return true;
}

static void proxy_serve(proxy_t *proxy, int client_fd, bool cut_reply) {
    int server_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(proxy->server_port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(server_fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
        close(server_fd);
        return;
    }
    while (!atomic_load(&proxy->stop)) {
        struct pollfd fds[2] = {{.fd = client_fd, .events = POLLIN},
                                {.fd = server_fd, .events = POLLIN}};
        if (poll(fds, 2, 20) <= 0) continue;
        if (fds[1].revents != 0 && cut_reply) {
            atomic_fetch_add(&proxy->replies_cut, 1);
            break;
        }
        if (fds[0].revents != 0 && !proxy_forward(client_fd, server_fd)) break;
        if (fds[1].revents != 0 && !proxy_forward(server_fd, client_fd)) break;
    }
    close(server_fd);
}

static void *proxy_run(void *argument) {
    proxy_t *proxy = argument;
    while (!atomic_load(&proxy->stop)) {
        struct pollfd poll_fd = {.fd = proxy->listen_fd, .events = POLLIN};
        if (poll(&poll_fd, 1, 20) <= 0) continue;
        int fd = accept(proxy->listen_fd, NULL, NULL);
        if (fd < 0) continue;
        uint32_t index = atomic_fetch_add(&proxy->connections, 1);
        proxy_serve(proxy, fd, index == 0);
        close(fd);
    }
    return NULL;
}

static void proxy_start(proxy_t *proxy, uint16_t server_port) {
    *proxy = (proxy_t){.server_port = server_port};
    proxy->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(proxy->listen_fd, (struct sockaddr *)&address, sizeof(address)), 0);
    cr_assert_eq(listen(proxy->listen_fd, 8), 0);
    socklen_t size = sizeof(address);
    cr_assert_eq(getsockname(proxy->listen_fd, (struct sockaddr *)&address, &size), 0);
    proxy->port = ntohs(address.sin_port);
    cr_assert_eq(pthread_create(&proxy->thread, NULL, proxy_run, proxy), 0);
}

static void proxy_stop(proxy_t *proxy) {
    atomic_store(&proxy->stop, true);
    pthread_join(proxy->thread, NULL);
    close(proxy->listen_fd);
}

Test(client, a_request_whose_reply_was_lost_is_retried_and_applied_once) {
    sz_test_server_t server;
    test_server_start(&server, NULL);
    sumzero_client_t *direct = test_client_open(&server, (sumzero_client_options_t){0});
    sumzero_account_t accounts[2] = {account_make(1, 0), account_make(2, 0)};
    sumzero_create_result_t results[2];
    uint32_t count = 9;
    cr_assert_eq(sumzero_create_accounts(direct, accounts, 2, results, &count), 0);
    cr_assert_eq(count, 0);

    proxy_t proxy;
    proxy_start(&proxy, server.port);
    char address[32];
    snprintf(address, sizeof(address), "127.0.0.1:%u", proxy.port);
    sumzero_client_t *client = NULL;
    cr_assert_eq(sumzero_client_open(&client, &(sumzero_client_options_t){
                                                  .addresses = address, .backoff_min_ms = 1}),
                 0);
    sumzero_transfer_t transfer = transfer_make(20, 1, 2, 25, 0);
    cr_assert_eq(sumzero_create_transfers(client, &transfer, 1, results, &count), 0);
    /* The server's reply cache answered the exact retry: `ok`, not `exists`. */
    cr_assert_eq(count, 0);
    cr_assert_eq(atomic_load(&proxy.replies_cut), 1);
    sumzero_client_stats_t stats;
    sumzero_client_stats(client, &stats);
    cr_assert_eq(stats.requests_sent, 1, "one request number");
    cr_assert_eq(stats.requests_resent, 1, "sent twice");
    cr_assert_eq(stats.requests_resubmitted, 0);
    cr_assert_eq(account_lookup(direct, 1).debits_posted, 25, "applied once");
    cr_assert_eq(account_lookup(direct, 2).credits_posted, 25);

    sumzero_client_close(client);
    proxy_stop(&proxy);
    sumzero_client_close(direct);
    test_server_stop(&server);
}

static int raw_connect(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    return fd;
}

static void raw_read(int fd, void *buffer, size_t size) {
    for (size_t done = 0; done < size;) {
        ssize_t got = read(fd, (uint8_t *)buffer + done, size - done);
        cr_assert_gt(got, 0, "the server closed the connection");
        done += (size_t)got;
    }
}

/* Sends one frame and reads its reply (header and up to 8 bytes of body). */
static sz_frame_header_t raw_call(int fd, const sz_frame_header_t *header, const void *body,
                                  uint8_t *reply_body) {
    cr_assert_eq(write(fd, header, sizeof(*header)), (ssize_t)sizeof(*header));
    cr_assert_eq(write(fd, body, header->body_size), (ssize_t)header->body_size);
    sz_frame_header_t reply;
    raw_read(fd, &reply, sizeof(reply));
    cr_assert_eq(sz_frame_header_check(&reply, SZ_COMMAND_REPLY, 0, false), SZ_STATUS_OK);
    cr_assert_leq(reply.body_size, 8);
    raw_read(fd, reply_body, reply.body_size);
    return reply;
}

Test(client, an_exact_retry_by_hand_gets_the_same_reply_and_is_not_applied_twice) {
    sz_test_server_t server;
    test_server_start(&server, NULL);
    sumzero_client_t *client = test_client_open(&server, (sumzero_client_options_t){0});
    sumzero_account_t accounts[2] = {account_make(1, 0), account_make(2, 0)};
    sumzero_create_result_t results[2];
    cr_assert_eq(sumzero_create_accounts(client, accounts, 2, results, NULL), 0);

    sz_transfer_t transfer = {.id = 30, .debit_account_id = 1, .credit_account_id = 2,
                              .amount = 40, .ledger = 1, .code = 1};
    sz_frame_header_t header = {.client_id = 0xC0FFEE, .request_number = 1,
                                .command = SZ_COMMAND_REQUEST,
                                .operation = SZ_OPERATION_CREATE_TRANSFERS,
                                .body_size = sizeof(transfer)};
    sz_frame_header_seal(&header, &transfer);
    int fd = raw_connect(server.port);
    uint8_t body[8];
    sz_frame_header_t first = raw_call(fd, &header, &transfer, body);
    cr_assert_eq(first.status, SZ_STATUS_OK);
    cr_assert_eq(first.body_size, 0);
    sz_frame_header_t second = raw_call(fd, &header, &transfer, body);
    cr_assert_eq(second.status, SZ_STATUS_OK);
    cr_assert_eq(second.body_size, 0, "the cached reply, not `exists`");
    cr_assert_eq(second.op, first.op, "no new op");
    cr_assert_eq(second.timestamp, first.timestamp);
    close(fd);
    /* The same number on a new connection, as a reconnecting client would send it. */
    fd = raw_connect(server.port);
    sz_frame_header_t third = raw_call(fd, &header, &transfer, body);
    cr_assert_eq(third.op, first.op);
    /* The same number with a different body is a conflict, not a retry. */
    transfer.amount = 41;
    sz_frame_header_seal(&header, &transfer);
    sz_frame_header_t conflict = raw_call(fd, &header, &transfer, body);
    cr_assert_eq(conflict.status, SZ_STATUS_REQUEST_CONFLICT);
    close(fd);
    cr_assert_eq(account_lookup(client, 1).debits_posted, 40, "applied once");

    sumzero_client_close(client);
    test_server_stop(&server);
}

/* ---- batching -------------------------------------------------------------------------- */

#define MERGE_THREADS 8
#define MERGE_CALLS 60
#define MERGE_ACCOUNTS 4

typedef struct merge_thread {
    sumzero_client_t *client;
    uint32_t thread_index;
    uint32_t failures;
    uint64_t amount_debited; /* from this thread's own account */
} merge_thread_t;

/* Each thread debits its own account (limited by debits_must_not_exceed_credits with a
 * credit of exactly 100 units), so it knows which of its transfers must fail whatever
 * the others do: once 100 is spent, every further transfer is exceeds_credits. */
static void *merge_thread_run(void *argument) {
    merge_thread_t *thread = argument;
    uint64_t spent = 0;
    for (uint32_t call = 0; call < MERGE_CALLS; call++) {
        uint32_t transfer_count = 1 + (call + thread->thread_index) % 3;
        sumzero_transfer_t transfers[3];
        uint32_t expected[3];
        uint32_t expected_count = 0;
        for (uint32_t index = 0; index < transfer_count; index++) {
            sumzero_u128_t id = 1000000u * (thread->thread_index + 1) + call * 10u + index;
            uint64_t amount = 1 + (call + index) % 3;
            transfers[index] = transfer_make(id, 100 + thread->thread_index,
                                             1 + thread->thread_index % MERGE_ACCOUNTS, amount, 0);
            if (spent + amount > 100) {
                expected[expected_count++] = index;
            } else {
                spent += amount;
            }
        }
        sumzero_create_result_t results[3];
        uint32_t result_count = 0;
        int error = sumzero_create_transfers(thread->client, transfers, transfer_count, results,
                                             &result_count);
        bool right = error == 0 && result_count == expected_count;
        for (uint32_t index = 0; right && index < result_count; index++) {
            right = results[index].index == expected[index] &&
                    results[index].result == SUMZERO_CREATE_TRANSFER_EXCEEDS_CREDITS;
        }
        if (!right) thread->failures++;
    }
    thread->amount_debited = spent;
    return NULL;
}

Test(client, concurrent_calls_are_merged_and_every_caller_gets_exactly_its_own_results) {
    sz_test_server_t server;
    test_server_start(&server, NULL);
    sumzero_client_t *client = test_client_open(&server, (sumzero_client_options_t){
                                                             .pipeline_max = 2});
    sumzero_account_t accounts[MERGE_ACCOUNTS + 2 * MERGE_THREADS];
    uint32_t account_count = 0;
    for (uint32_t index = 1; index <= MERGE_ACCOUNTS; index++) {
        accounts[account_count++] = account_make(index, 0);
    }
    for (uint32_t index = 0; index < MERGE_THREADS; index++) {
        accounts[account_count++] =
            account_make(100 + index, SUMZERO_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS);
        accounts[account_count++] = account_make(200 + index, 0);
    }
    sumzero_create_result_t results[MERGE_ACCOUNTS + 2 * MERGE_THREADS];
    uint32_t count = 9;
    cr_assert_eq(sumzero_create_accounts(client, accounts, account_count, results, &count), 0);
    cr_assert_eq(count, 0);
    sumzero_transfer_t funding[MERGE_THREADS];
    for (uint32_t index = 0; index < MERGE_THREADS; index++) {
        funding[index] = transfer_make(500 + index, 200 + index, 100 + index, 100, 0);
    }
    cr_assert_eq(sumzero_create_transfers(client, funding, MERGE_THREADS, results, &count), 0);
    cr_assert_eq(count, 0);

    sumzero_client_stats_t before;
    sumzero_client_stats(client, &before);
    uint64_t server_before = test_metrics_requests(&server, "create_transfers");
    pthread_t threads[MERGE_THREADS];
    merge_thread_t states[MERGE_THREADS];
    for (uint32_t index = 0; index < MERGE_THREADS; index++) {
        states[index] = (merge_thread_t){.client = client, .thread_index = index};
        cr_assert_eq(pthread_create(&threads[index], NULL, merge_thread_run, &states[index]), 0);
    }
    for (uint32_t index = 0; index < MERGE_THREADS; index++) {
        cr_assert_eq(pthread_join(threads[index], NULL), 0);
        cr_assert_eq(states[index].failures, 0, "thread %u got results not its own", index);
    }
    sumzero_client_stats_t after;
    sumzero_client_stats(client, &after);
    uint64_t requests = after.requests_sent - before.requests_sent;
    uint64_t server_requests = test_metrics_requests(&server, "create_transfers") - server_before;
    cr_assert_eq(server_requests, requests, "the server counted what the library sent");
    cr_assert_lt(requests, MERGE_THREADS * MERGE_CALLS * 3 / 4, "%llu requests for %u calls",
                 (unsigned long long)requests, MERGE_THREADS * MERGE_CALLS);
    cr_assert_gt(after.requests_merged, before.requests_merged);
    for (uint32_t index = 0; index < MERGE_THREADS; index++) {
        sumzero_account_t account = account_lookup(client, 100 + index);
        cr_assert_eq(account.debits_posted, states[index].amount_debited);
        cr_assert_eq(account.credits_posted, 100);
    }
    sumzero_client_close(client);
    test_server_stop(&server);
}

/* ---- an unresponsive and a restarted server ------------------------------------------- */

Test(client, a_stopped_server_makes_calls_time_out_and_a_resumed_one_answers) {
    sz_test_server_t server;
    test_server_start(&server, NULL);
    sumzero_client_t *client = test_client_open(&server, (sumzero_client_options_t){
                                                             .request_timeout_ms = 500});
    sumzero_account_t account = account_make(1, 0);
    sumzero_create_result_t results[1];
    cr_assert_eq(sumzero_create_accounts(client, &account, 1, results, NULL), 0);
    cr_assert_eq(kill(server.pid, SIGSTOP), 0);
    sumzero_u128_t id = 1;
    sumzero_account_t found;
    uint64_t start_ns = test_now_ns();
    int error = sumzero_lookup_accounts(client, &id, 1, &found, NULL);
    uint64_t elapsed_ms = (test_now_ns() - start_ns) / 1000000u;
    cr_assert_eq(kill(server.pid, SIGCONT), 0);
    cr_assert_eq(error, -ETIMEDOUT, "%s", sumzero_error_message(error));
    cr_assert_geq(elapsed_ms, 490);
    cr_assert_lt(elapsed_ms, 5000);
    uint32_t count = 0;
    cr_assert_eq(sumzero_lookup_accounts(client, &id, 1, &found, &count), 0);
    cr_assert_eq(count, 1);
    sumzero_client_close(client);
    test_server_stop(&server);
}

typedef struct waiting_call {
    sumzero_packet_t packet;
    sumzero_create_result_t results[2];
    _Atomic bool done;
} waiting_call_t;

static void waiting_call_done(void *context, sumzero_packet_t *packet) {
    (void)packet;
    waiting_call_t *call = context;
    atomic_store(&call->done, true);
}

Test(client, a_restarted_server_is_reconnected_and_the_waiting_call_completes) {
    sz_test_server_t server;
    test_server_start(&server, NULL);
    sumzero_client_t *client = test_client_open(&server, (sumzero_client_options_t){
                                                             .backoff_min_ms = 5,
                                                             .backoff_max_ms = 100});
    sumzero_account_t accounts[2] = {account_make(1, 0), account_make(2, 0)};
    sumzero_create_result_t results[2];
    cr_assert_eq(sumzero_create_accounts(client, accounts, 2, results, NULL), 0);
    test_server_stop(&server);

    static waiting_call_t call;
    static sumzero_transfer_t transfers[2];
    transfers[0] = transfer_make(40, 1, 2, 5, 0);
    transfers[1] = transfer_make(41, 2, 1, 3, 0);
    call.packet = (sumzero_packet_t){.operation = SUMZERO_OPERATION_CREATE_TRANSFERS,
                                     .event_count = 2, .events = transfers,
                                     .results = call.results, .result_capacity = 2,
                                     .callback = waiting_call_done, .context = &call};
    cr_assert_eq(sumzero_submit(client, &call.packet), 0);
    sumzero_client_stats_t stats;
    WAIT_FOR((sumzero_client_stats(client, &stats), stats.connect_failures >= 2));
    cr_assert(!atomic_load(&call.done));

    char port[16];
    snprintf(port, sizeof(port), "127.0.0.1:%u", server.port);
    const char *args[] = {TEST_SERVER_ARGS, "--address", port, NULL};
    char data_dir[256];
    snprintf(data_dir, sizeof(data_dir), "%s", server.data_dir);
    int error = sz_test_server_start(&server, data_dir, args);
    test_server_track(&server);
    if (error != 0) sz_test_server_dump_log(&server);
    cr_assert_eq(error, 0, "restart: %s", strerror(-error));
    WAIT_FOR(atomic_load(&call.done));
    cr_assert_eq(call.packet.reply.error, 0, "%s", sumzero_error_message(call.packet.reply.error));
    cr_assert_eq(call.packet.reply.result_count, 0);
    cr_assert_eq(account_lookup(client, 1).debits_posted, 5, "the accounts survived the restart");
    cr_assert_eq(account_lookup(client, 1).credits_posted, 3);
    sumzero_client_close(client);
    test_server_stop(&server);
}
