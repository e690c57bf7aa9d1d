/* fake_server.h: a small scripted sumzero server in a thread, for testing libsumzero's own
 * mechanics (merging, splitting, retries, the reply cache, timeouts) deterministically,
 * where the real server cannot be made to misbehave on cue. It speaks the real wire
 * protocol (gateway/protocol.h) over a real loopback socket, one connection at a time.
 *
 * Its ledger is a toy, chosen so tests can predict every result by itself:
 * - create_accounts: id 0 -> id_must_not_be_zero; a known id -> exists; a last event with
 *   the linked flag -> linked_event_chain_open; else stored.
 * - create_transfers: a known id -> exists; amount % 7 == 0 -> exceeds_credits; a last
 *   linked event -> linked_event_chain_open; else stored.
 * - lookup_accounts / lookup_transfers: the stored records, in request order.
 * - get_account_transfers: `limit` copies of a transfer whose id is the limit (so tests
 *   see the limit that arrived).
 * - Reply cache like the real one: the last write per client id is answered again to an
 *   exact retry; an older write number gets REQUEST_STALE.
 * Knobs (atomics, set by the test at any time): busy_count (answer the next N requests
 *   BUSY), silent_count (apply the next N requests and never answer them),
 *   drop_before_reply (apply the next N requests, then close the connection without
 *   replying), hold (read requests but answer none until cleared), delay_us
 *   (sleep before each reply, so requests pile up in the client), bad_reply (answer the
 *   next create with an out-of-range index).
 */
#ifndef SZ_TEST_FAKE_SERVER_H
#define SZ_TEST_FAKE_SERVER_H

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/protocol.h"

#define FAKE_RECORDS_MAX 65536u
#define FAKE_REQUESTS_LOG_MAX 65536u

typedef struct fake_server {
    int listen_fd;
    uint16_t port;
    pthread_t thread;
    _Atomic bool stop;

    /* Knobs. */
    _Atomic uint32_t busy_count;
    _Atomic uint32_t silent_count;
    _Atomic uint32_t drop_before_reply;
    _Atomic bool hold;
    _Atomic uint32_t delay_us;
    _Atomic uint32_t bad_reply;

    /* What it saw. */
    _Atomic uint32_t requests;    /* frames received */
    _Atomic uint32_t writes_applied;
    _Atomic uint32_t connections;
    uint32_t request_events[FAKE_REQUESTS_LOG_MAX]; /* events per request received */
    uint32_t request_operations[FAKE_REQUESTS_LOG_MAX];

    /* The toy ledger (server thread only). */
    sz_account_t accounts[FAKE_RECORDS_MAX];
    uint32_t account_count;
    sz_transfer_t transfers[FAKE_RECORDS_MAX];
    uint32_t transfer_count;

    /* The reply cache: one client (tests use one client per server). */
    sz_u128 cache_client_id;
    uint32_t cache_request_number;
    uint32_t cache_reply_size;
    alignas(16) uint8_t cache_reply[SZ_FRAME_SIZE_MAX];

    /* Frames are read in place: aligned for their u128 fields. */
    alignas(16) uint8_t request[SZ_FRAME_SIZE_MAX];
    alignas(16) uint8_t reply[SZ_FRAME_SIZE_MAX];
} fake_server_t;

static bool fake_read_exact(fake_server_t *server, int fd, void *buffer, size_t size) {
    uint8_t *bytes = buffer;
    while (size > 0) {
        struct pollfd poll_fd = {.fd = fd, .events = POLLIN};
        int ready = poll(&poll_fd, 1, 20);
        if (atomic_load(&server->stop)) return false;
        if (ready <= 0) continue;
        ssize_t got = read(fd, bytes, size);
        if (got <= 0) return false;
        bytes += got;
        size -= (size_t)got;
    }
    return true;
}

static bool fake_write_all(int fd, const void *buffer, size_t size) {
    const uint8_t *bytes = buffer;
    while (size > 0) {
        ssize_t done = send(fd, bytes, size, MSG_NOSIGNAL);
        if (done <= 0) return false;
        bytes += done;
        size -= (size_t)done;
    }
    return true;
}

static sz_account_t *fake_account_find(fake_server_t *server, sz_u128 id) {
    for (uint32_t index = 0; index < server->account_count; index++) {
        if (server->accounts[index].id == id) return &server->accounts[index];
    }
    return NULL;
}

static sz_transfer_t *fake_transfer_find(fake_server_t *server, sz_u128 id) {
    for (uint32_t index = server->transfer_count; index > 0; index--) {
        if (server->transfers[index - 1].id == id) return &server->transfers[index - 1];
    }
    return NULL;
}

/* Applies a create request; writes the not-ok results into body, returns their count. */
static uint32_t fake_apply_creates(fake_server_t *server, const sz_frame_header_t *header,
                                   const uint8_t *events, uint8_t *body) {
    uint32_t count = sz_frame_event_count(header);
    uint32_t result_count = 0;
    for (uint32_t index = 0; index < count; index++) {
        uint32_t result = 0;
        if (header->operation == SZ_OPERATION_CREATE_ACCOUNTS) {
            sz_account_t account;
            memcpy(&account, events + index * 128u, sizeof(account));
            if (account.id == 0) {
                result = SZ_CREATE_ACCOUNT_ID_MUST_NOT_BE_ZERO;
            } else if (fake_account_find(server, account.id) != NULL) {
                result = SZ_CREATE_ACCOUNT_EXISTS;
            } else if (index + 1 == count && (account.flags & SZ_ACCOUNT_LINKED)) {
                result = SZ_CREATE_ACCOUNT_LINKED_EVENT_CHAIN_OPEN;
            } else if (server->account_count < FAKE_RECORDS_MAX) {
                server->accounts[server->account_count++] = account;
            }
        } else {
            sz_transfer_t transfer;
            memcpy(&transfer, events + index * 128u, sizeof(transfer));
            if (fake_transfer_find(server, transfer.id) != NULL) {
                result = SZ_CREATE_TRANSFER_EXISTS;
            } else if (transfer.amount % 7 == 0) {
                result = SZ_CREATE_TRANSFER_EXCEEDS_CREDITS;
            } else if (index + 1 == count && (transfer.flags & SZ_TRANSFER_LINKED)) {
                result = SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN;
            } else if (server->transfer_count < FAKE_RECORDS_MAX) {
                server->transfers[server->transfer_count++] = transfer;
            }
        }
        if (result != 0) {
            sz_create_result_t pair = {index, result};
            if (atomic_load(&server->bad_reply) > 0) {
                atomic_fetch_sub(&server->bad_reply, 1);
                pair.index = count + 5;
            }
            memcpy(body + result_count * sizeof(pair), &pair, sizeof(pair));
            result_count++;
        }
    }
    atomic_fetch_add(&server->writes_applied, 1);
    return result_count * (uint32_t)sizeof(sz_create_result_t);
}

/* Reads: returns the body size. */
static uint32_t fake_apply_read(fake_server_t *server, const sz_frame_header_t *header,
                                const uint8_t *events, uint8_t *body) {
    uint32_t size = 0;
    if (header->operation == SZ_OPERATION_GET_ACCOUNT_TRANSFERS ||
        header->operation == SZ_OPERATION_GET_ACCOUNT_BALANCES) {
        sz_account_filter_t filter;
        memcpy(&filter, events, sizeof(filter));
        for (uint32_t index = 0; index < filter.limit && index < SZ_BATCH_EVENTS_MAX; index++) {
            sz_transfer_t row = {.id = filter.limit, .amount = index + 1};
            memcpy(body + size, &row, sizeof(row));
            size += sizeof(row);
        }
        return size;
    }
    uint32_t count = sz_frame_event_count(header);
    for (uint32_t index = 0; index < count; index++) {
        sz_u128 id;
        memcpy(&id, events + index * sizeof(id), sizeof(id));
        const void *record = header->operation == SZ_OPERATION_LOOKUP_ACCOUNTS
                                 ? (const void *)fake_account_find(server, id)
                                 : (const void *)fake_transfer_find(server, id);
        if (record == NULL) continue;
        memcpy(body + size, record, 128);
        size += 128;
    }
    return size;
}

static void fake_reply_header(sz_frame_header_t *reply, const sz_frame_header_t *request,
                              uint32_t status, uint32_t body_size, const void *body) {
    *reply = (sz_frame_header_t){
        .cluster_id = request->cluster_id,
        .client_id = request->client_id,
        .trace_id = request->trace_id,
        .request_number = request->request_number,
        .command = SZ_COMMAND_REPLY,
        .operation = request->operation,
        .status = (uint16_t)status,
        .body_size = body_size,
        .op = 1000 + request->request_number,
        .timestamp = status == 0 && sz_operation_is_write(request->operation) ? 1000000 : 0,
    };
    sz_frame_header_seal(reply, body);
}

/* Handles one request frame; returns false to close the connection. */
static bool fake_handle(fake_server_t *server, int fd, const sz_frame_header_t *request,
                        const uint8_t *events) {
    uint32_t received = atomic_fetch_add(&server->requests, 1);
    if (received < FAKE_REQUESTS_LOG_MAX) {
        server->request_events[received] = sz_frame_event_count(request);
        server->request_operations[received] = request->operation;
    }
    while (atomic_load(&server->hold) && !atomic_load(&server->stop)) usleep(1000);
    uint32_t delay_us = atomic_load(&server->delay_us);
    if (delay_us > 0) usleep(delay_us);
    sz_frame_header_t *reply = (sz_frame_header_t *)server->reply;
    uint8_t *body = server->reply + SZ_FRAME_HEADER_SIZE;
    bool write = sz_operation_is_write(request->operation);
    if (atomic_load(&server->busy_count) > 0) {
        atomic_fetch_sub(&server->busy_count, 1);
        fake_reply_header(reply, request, SZ_STATUS_BUSY, 0, NULL);
        return fake_write_all(fd, reply, SZ_FRAME_HEADER_SIZE);
    }
    if (write && request->client_id == server->cache_client_id &&
        request->request_number == server->cache_request_number) {
        return fake_write_all(fd, server->cache_reply, server->cache_reply_size);
    }
    if (write && request->client_id == server->cache_client_id &&
        request->request_number < server->cache_request_number) {
        fake_reply_header(reply, request, SZ_STATUS_REQUEST_STALE, 0, NULL);
        return fake_write_all(fd, reply, SZ_FRAME_HEADER_SIZE);
    }
    uint32_t body_size = write ? fake_apply_creates(server, request, events, body)
                               : fake_apply_read(server, request, events, body);
    fake_reply_header(reply, request, SZ_STATUS_OK, body_size, body);
    if (write) {
        server->cache_client_id = request->client_id;
        server->cache_request_number = request->request_number;
        server->cache_reply_size = SZ_FRAME_HEADER_SIZE + body_size;
        memcpy(server->cache_reply, server->reply, server->cache_reply_size);
    }
    if (atomic_load(&server->silent_count) > 0) {
        atomic_fetch_sub(&server->silent_count, 1);
        return true;
    }
    if (atomic_load(&server->drop_before_reply) > 0) {
        atomic_fetch_sub(&server->drop_before_reply, 1);
        return false;
    }
    return fake_write_all(fd, server->reply, SZ_FRAME_HEADER_SIZE + body_size);
}

static void fake_serve_connection(fake_server_t *server, int fd) {
    for (;;) {
        sz_frame_header_t *header = (sz_frame_header_t *)server->request;
        if (!fake_read_exact(server, fd, header, SZ_FRAME_HEADER_SIZE)) return;
        if (sz_frame_header_check(header, SZ_COMMAND_REQUEST, 0, false) != SZ_STATUS_OK) return;
        uint8_t *events = server->request + SZ_FRAME_HEADER_SIZE;
        if (!fake_read_exact(server, fd, events, header->body_size)) return;
        if (sz_frame_body_check(header, events) != SZ_STATUS_OK) return;
        if (!fake_handle(server, fd, header, events)) return;
    }
}

static void *fake_server_run(void *argument) {
    fake_server_t *server = argument;
    while (!atomic_load(&server->stop)) {
        struct pollfd poll_fd = {.fd = server->listen_fd, .events = POLLIN};
        if (poll(&poll_fd, 1, 20) <= 0) continue;
        int fd = accept(server->listen_fd, NULL, NULL);
        if (fd < 0) continue;
        atomic_fetch_add(&server->connections, 1);
        fake_serve_connection(server, fd);
        close(fd);
    }
    return NULL;
}

/* Starts the server on 127.0.0.1 and a free port. */
static fake_server_t *fake_server_start(void) {
    fake_server_t *server = calloc(1, sizeof(*server));
    SZ_ASSERT(server != NULL);
    server->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    SZ_ASSERT(server->listen_fd >= 0);
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    SZ_ASSERT(bind(server->listen_fd, (struct sockaddr *)&address, sizeof(address)) == 0);
    SZ_ASSERT(listen(server->listen_fd, 16) == 0);
    socklen_t size = sizeof(address);
    SZ_ASSERT(getsockname(server->listen_fd, (struct sockaddr *)&address, &size) == 0);
    server->port = ntohs(address.sin_port);
    SZ_ASSERT(pthread_create(&server->thread, NULL, fake_server_run, server) == 0);
    return server;
}

static void fake_server_stop(fake_server_t *server) {
    atomic_store(&server->stop, true);
    SZ_ASSERT(pthread_join(server->thread, NULL) == 0);
    close(server->listen_fd);
    free(server);
}

#endif
