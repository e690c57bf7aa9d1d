/* gateway.c: the gateway thread of gateway.h: one epoll loop over every socket, a fixed
 * message pool, and the two rings to the ledger thread.
 *
 * Design notes
 * - Edge-triggered epoll. Each client socket is added once with IN|OUT|RDHUP|ET and never
 *   modified: the loop keeps its own `readable` and `writable` flags (set by an edge,
 *   cleared by EAGAIN or a short read/write), so stopping and resuming reads for
 *   backpressure costs no epoll_ctl.
 * - Reads are fair: connections with something to read wait in a FIFO "ready" list and
 *   get one read (or readv) per round. A connection whose pipeline is full leaves the list
 *   until one of its messages comes back; a connection that needs a message while the
 *   pool is empty waits in the FIFO "pool wait" list, and no socket is read until the pool
 *   has a message again (TCP pushes back on every client).
 * - Zero copy for big bodies: the small per-connection input buffer only takes read-ahead
 *   (headers and small frames, several per read); while a body is being read, readv puts
 *   the rest of the body straight into the message and only what follows it into the
 *   input buffer. The decoder (decoder.h) decides what a byte is.
 * - Every message a connection holds (being filled, in the ledger, or waiting to be
 *   written) counts against its pipeline_max, so a client that never reads its replies
 *   holds at most pipeline_max messages.
 * - Writes: one sendmsg per connection per round, gathering every queued reply. A reply
 *   keeps its message until its last byte is sent; a short write waits for EPOLLOUT.
 * - Waking: before sleeping in epoll_wait the loop sets `sleeping`, fences, and looks at
 *   the reply ring once more; sz_gateway_wake() fences and writes the eventfd only if it
 *   sees the flag. One of the two always sees the other, so no reply waits for a timeout,
 *   and while the gateway is awake a wake costs no syscall.
 *
 * Connection life (one slot of the table; a slot's generation changes at every close, so
 * a reply for a closed connection is recognised and dropped):
 *
 *     free --accept--> open --EOF, bad header, drain--> read_closed --nothing held--> free
 *                       |                                    |
 *                       +--error, idle timeout, drain deadline (conn_close)-----------> free
 */
#include "gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "decoder.h"

/* Read-ahead per connection: several small frames per read; big bodies bypass it. */
#define INPUT_SIZE 4096u
/* Replies gathered into one sendmsg. */
#define WRITE_IOVEC_MAX 64u
/* How long the loop keeps polling (ring + epoll_wait(0)) after its last progress before
 * it sleeps: a wake-up costs ~20 us, a reply often comes sooner. */
#define SPIN_NS 50000ull
#define EPOLL_EVENTS_MAX 256
/* Connections accepted per listener event, so a connection storm cannot starve reads. */
#define ACCEPT_BURST_MAX 64u
/* Replies popped from the ring per call. */
#define REPLY_BATCH_MAX 64u
/* File descriptors beyond the connections: listeners, epoll, eventfd, spare, metrics
 * clients, and the rest of the process (journal files, stdio). */
#define FILES_RESERVED 64u
/* The connection index lives in 24 bits of the epoll token. */
#define CONNECTIONS_LIMIT (1u << 24)

/* The metrics endpoint: a handful of scrapers at once, small requests, bounded time. */
#define METRICS_CONNECTIONS_MAX 4u
#define METRICS_REQUEST_SIZE_MAX 2048u
#define METRICS_RESPONSE_SIZE_MAX (256u * 1024u)
#define METRICS_HEADER_ROOM 256u
#define METRICS_TIMEOUT_NS 5000000000ull

#define NONE UINT32_MAX

__extension__ typedef __int128 tokens_t;
/* A token is 1e9 units, so a refill of elapsed_ns * rate units needs no division. */
#define TOKEN_UNITS 1000000000

enum token_kind {
    KIND_WAKE = 1,
    KIND_LISTEN,
    KIND_METRICS_LISTEN,
    KIND_CLIENT,
    KIND_METRICS_CLIENT,
};

enum read_list { LIST_NONE = 0, LIST_READY, LIST_POOL_WAIT };

/* What decoding a connection's buffered bytes ended with. */
enum decode_result { DECODE_NEED_BYTES, DECODE_BLOCKED_PIPELINE, DECODE_BLOCKED_POOL, DECODE_STOPPED };

typedef struct connection {
    sz_decoder_t decoder;
    sz_frame_header_t final_reply; /* the error reply to a bad header, sent before closing */
    sz_message_t *filling;         /* the message the decoder's body goes into */
    uint8_t *input;                /* INPUT_SIZE bytes of read-ahead */
    int fd;                        /* -1: slot free */
    uint32_t generation;
    uint32_t index;
    uint32_t input_start;          /* read-ahead not yet decoded: [start, end) */
    uint32_t input_end;
    uint32_t list_prev;
    uint32_t list_next;
    uint32_t held_count;           /* filling + in the ledger + queued for writing */
    uint32_t ledger_count;         /* in the ledger (or about to be pushed) */
    uint32_t queue_head;           /* replies to write: message indices, FIFO */
    uint32_t queue_tail;
    uint32_t head_sent;            /* bytes of the queue head already sent */
    uint32_t final_sent;
    uint8_t list;                  /* enum read_list */
    bool readable;                 /* an EPOLLIN edge and no EAGAIN since */
    bool peer_closed;              /* EPOLLRDHUP seen: read on until end of stream */
    bool writable;
    bool read_closed;              /* never read again; close once nothing is held */
    bool final_pending;
    bool dirty;                    /* in the gateway's dirty stack */
    tokens_t request_tokens;
    tokens_t event_tokens;
    uint64_t refill_ns;
    uint64_t progress_ns;          /* last frame completed or reply bytes sent */
} connection_t;

typedef struct metrics_connection {
    int fd;
    uint32_t generation;
    uint64_t deadline_ns;
    uint32_t request_size;
    uint32_t response_start;  /* the response is response[start, end) */
    uint32_t response_end;
    bool responding;
    char request[METRICS_REQUEST_SIZE_MAX];
    char *response;           /* METRICS_RESPONSE_SIZE_MAX bytes */
} metrics_connection_t;

struct sz_gateway {
    sz_gateway_config_t config; /* with the defaults filled in */
    _Atomic uint32_t stopping;
    _Atomic uint32_t sleeping;
    int epoll_fd;
    int wake_fd;
    int listen_fd;
    int metrics_listen_fd;
    int spare_fd; /* closed to accept-and-close when out of descriptors */
    uint16_t port;
    uint16_t metrics_port;
    bool draining;
    uint64_t now_ns;
    uint64_t drain_deadline_ns;
    uint64_t sweep_ns;       /* next idle-timeout sweep */
    uint64_t progress_ns;    /* last loop iteration that did something */

    sz_message_t *messages;  /* the pool: messages_max, mmap'd */
    size_t messages_mapped_size;
    uint32_t *message_next;  /* write-queue links, by message index */
    uint32_t *free_messages; /* stack of free message indices */
    uint32_t free_count;
    uint32_t ledger_count;   /* messages pushed and not yet back */
    sz_message_t **push_batch;
    uint32_t push_count;

    connection_t *connections;
    uint8_t *inputs;
    size_t inputs_mapped_size;
    uint32_t *free_connections; /* stack of free slots */
    uint32_t free_connection_count;
    uint32_t *dirty;            /* connections with replies to flush */
    uint32_t dirty_count;
    uint32_t ready_head, ready_tail, ready_count;
    uint32_t wait_head, wait_tail;

    metrics_connection_t metrics_connections[METRICS_CONNECTIONS_MAX];
};

/* ---- small helpers ---------------------------------------------------------------- */

static uint64_t clock_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static uint64_t gateway_clock(sz_gateway_t *gateway) {
    gateway->now_ns = clock_ns();
    return gateway->now_ns;
}

static uint64_t token_make(uint32_t kind, uint32_t index, uint32_t generation) {
    SZ_ASSERT(index < CONNECTIONS_LIMIT);
    return ((uint64_t)kind << 56) | ((uint64_t)index << 32) | generation;
}

static int epoll_add(sz_gateway_t *gateway, int fd, uint32_t events, uint64_t token) {
    struct epoll_event event = {.events = events, .data.u64 = token};
    if (epoll_ctl(gateway->epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) return -errno;
    return 0;
}

/* "what: reason", unless an earlier, more precise line is already there. */
static void set_error(char *error_out, size_t error_size, const char *what, int error) {
    if (error_out == NULL || error_size == 0 || error_out[0] != 0) return;
    snprintf(error_out, error_size, "%s: %s", what, strerror(-error));
}

static connection_t *connection_at(sz_gateway_t *gateway, uint32_t index) {
    SZ_ASSERT(index < gateway->config.connections_max);
    return &gateway->connections[index];
}

static void metrics_count_request(sz_gateway_t *gateway, uint32_t operation, uint32_t status) {
    SZ_ASSERT(status < SZ_STATUS_COUNT);
    /* Row 0 counts frames whose operation is not a client operation. */
    if (operation >= SZ_METRICS_OPERATION_COUNT) operation = 0;
    sz_metrics_add(&gateway->config.metrics->requests[operation][status], 1);
}

/* ---- the message pool ------------------------------------------------------------- */

static uint32_t message_index(const sz_gateway_t *gateway, const sz_message_t *message) {
    SZ_ASSERT(message >= gateway->messages);
    size_t index = (size_t)(message - gateway->messages);
    SZ_ASSERT(index < gateway->config.messages_max);
    return (uint32_t)index;
}

static sz_message_t *message_take(sz_gateway_t *gateway) {
    SZ_ASSERT(gateway->free_count > 0);
    uint32_t index = gateway->free_messages[--gateway->free_count];
    sz_metrics_set(&gateway->config.metrics->messages_in_use,
                   gateway->config.messages_max - gateway->free_count);
    return &gateway->messages[index];
}

static void conn_schedule(sz_gateway_t *gateway, connection_t *conn);

/* owner: the open connection that holds the message, or NULL when it has none (its
 * connection closed while the message was in the ledger). */
static void message_free(sz_gateway_t *gateway, sz_message_t *message, connection_t *owner) {
    SZ_ASSERT(gateway->free_count < gateway->config.messages_max);
    gateway->free_messages[gateway->free_count++] = message_index(gateway, message);
    sz_metrics_set(&gateway->config.metrics->messages_in_use,
                   gateway->config.messages_max - gateway->free_count);
    if (owner != NULL) {
        SZ_ASSERT(owner->held_count > 0);
        owner->held_count--;
        /* A message back may unblock its pipeline. */
        conn_schedule(gateway, owner);
    }
}

/* ---- read lists (ready, pool wait): FIFO, intrusive, by slot index ---------------- */

static void list_append(sz_gateway_t *gateway, connection_t *conn, uint8_t list) {
    SZ_ASSERT(conn->list == LIST_NONE);
    SZ_ASSERT(list == LIST_READY || list == LIST_POOL_WAIT);
    uint32_t *head = list == LIST_READY ? &gateway->ready_head : &gateway->wait_head;
    uint32_t *tail = list == LIST_READY ? &gateway->ready_tail : &gateway->wait_tail;
    conn->list = list;
    conn->list_next = NONE;
    conn->list_prev = *tail;
    if (*tail == NONE) {
        *head = conn->index;
    } else {
        connection_at(gateway, *tail)->list_next = conn->index;
    }
    *tail = conn->index;
    if (list == LIST_READY) gateway->ready_count++;
}

static void list_remove(sz_gateway_t *gateway, connection_t *conn) {
    if (conn->list == LIST_NONE) return;
    bool ready = conn->list == LIST_READY;
    uint32_t *head = ready ? &gateway->ready_head : &gateway->wait_head;
    uint32_t *tail = ready ? &gateway->ready_tail : &gateway->wait_tail;
    if (conn->list_prev == NONE) {
        *head = conn->list_next;
    } else {
        connection_at(gateway, conn->list_prev)->list_next = conn->list_next;
    }
    if (conn->list_next == NONE) {
        *tail = conn->list_prev;
    } else {
        connection_at(gateway, conn->list_next)->list_prev = conn->list_prev;
    }
    if (ready) {
        SZ_ASSERT(gateway->ready_count > 0);
        gateway->ready_count--;
    }
    conn->list = LIST_NONE;
    conn->list_prev = NONE;
    conn->list_next = NONE;
}

/* The pool has messages again: every waiter goes before the ready ones, oldest first. */
static void list_wait_to_ready_front(sz_gateway_t *gateway) {
    while (gateway->wait_tail != NONE) {
        connection_t *conn = connection_at(gateway, gateway->wait_tail);
        list_remove(gateway, conn);
        conn->list = LIST_READY;
        conn->list_prev = NONE;
        conn->list_next = gateway->ready_head;
        if (gateway->ready_head == NONE) {
            gateway->ready_tail = conn->index;
        } else {
            connection_at(gateway, gateway->ready_head)->list_prev = conn->index;
        }
        gateway->ready_head = conn->index;
        gateway->ready_count++;
    }
}

/* Something may have changed for conn's reading (an EPOLLIN edge, a message back): give
 * it a turn. A turn that finds nothing to do simply drops it again. */
static void conn_schedule(sz_gateway_t *gateway, connection_t *conn) {
    if (conn->fd < 0 || conn->read_closed || conn->list != LIST_NONE) return;
    list_append(gateway, conn, LIST_READY);
}

static void conn_mark_dirty(sz_gateway_t *gateway, connection_t *conn) {
    if (conn->dirty) return;
    SZ_ASSERT(gateway->dirty_count < gateway->config.connections_max);
    conn->dirty = true;
    gateway->dirty[gateway->dirty_count++] = conn->index;
}

/* ---- closing ---------------------------------------------------------------------- */

/* Frees the slot; the caller closed the socket or gave it away. */
static void conn_release(sz_gateway_t *gateway, connection_t *conn) {
    SZ_ASSERT(conn->fd >= 0);
    conn->fd = -1;
    conn->readable = false;
    conn->generation++;
    list_remove(gateway, conn);
    if (conn->filling != NULL) {
        message_free(gateway, conn->filling, NULL);
        conn->filling = NULL;
    }
    while (conn->queue_head != NONE) {
        uint32_t index = conn->queue_head;
        conn->queue_head = gateway->message_next[index];
        message_free(gateway, &gateway->messages[index], NULL);
    }
    /* Messages still in the ledger come back to a new generation and are dropped then. */
    conn->queue_tail = NONE;
    conn->held_count = 0;
    conn->ledger_count = 0;
    conn->final_pending = false;
    SZ_ASSERT(gateway->free_connection_count < gateway->config.connections_max);
    gateway->free_connections[gateway->free_connection_count++] = conn->index;
    sz_metrics_set(&gateway->config.metrics->connections_open,
                   gateway->config.connections_max - gateway->free_connection_count);
}

static void conn_close(sz_gateway_t *gateway, connection_t *conn) {
    SZ_ASSERT(conn->fd >= 0);
    /* close() also removes the socket from the epoll set (we never dup it). */
    close(conn->fd);
    conn_release(gateway, conn);
}

/* A connection that reads no more closes once everything it holds is answered. */
static void conn_finish_if_done(sz_gateway_t *gateway, connection_t *conn) {
    if (conn->fd < 0 || !conn->read_closed) return;
    if (conn->held_count == 0 && !conn->final_pending) conn_close(gateway, conn);
}

static void conn_stop_reading(sz_gateway_t *gateway, connection_t *conn) {
    conn->read_closed = true;
    conn->readable = false;
    list_remove(gateway, conn);
    if (conn->filling != NULL) {
        message_free(gateway, conn->filling, conn);
        conn->filling = NULL;
    }
}

/* ---- replies ---------------------------------------------------------------------- */

/* An error reply made by the gateway: no body. The request's identity is echoed only
 * from an authentic header (its checksum held); anything else could be forged noise. */
static void reply_error_build(sz_frame_header_t *reply, const sz_frame_header_t *request,
                              sz_status_t status, sz_u128 cluster_id, bool authentic) {
    SZ_ASSERT(status != SZ_STATUS_OK);
    memset(reply, 0, sizeof(*reply));
    reply->cluster_id = cluster_id;
    if (authentic) {
        reply->client_id = request->client_id;
        reply->request_number = request->request_number;
        reply->trace_id = request->trace_id;
        reply->operation = request->operation;
    }
    reply->command = SZ_COMMAND_REPLY;
    reply->status = (uint16_t)status;
    reply->body_size = 0;
    sz_frame_header_seal(reply, NULL);
}

static void conn_queue_reply(sz_gateway_t *gateway, connection_t *conn, sz_message_t *message) {
    SZ_ASSERT(message->reply_size >= SZ_FRAME_HEADER_SIZE);
    SZ_ASSERT(message->reply_size <= SZ_FRAME_SIZE_MAX);
    uint32_t index = message_index(gateway, message);
    gateway->message_next[index] = NONE;
    if (conn->queue_tail == NONE) {
        conn->queue_head = index;
        conn->head_sent = 0;
    } else {
        gateway->message_next[conn->queue_tail] = index;
    }
    conn->queue_tail = index;
    conn_mark_dirty(gateway, conn);
}

/* A reply left the ledger thread: count it and queue it, or drop it when its connection
 * is gone. */
static void gateway_route_reply(sz_gateway_t *gateway, sz_message_t *message) {
    SZ_ASSERT(gateway->ledger_count > 0);
    gateway->ledger_count--;
    const sz_frame_header_t *request = sz_message_request_header(message);
    const sz_frame_header_t *reply = sz_message_reply_header(message);
    SZ_ASSERT(reply->status < SZ_STATUS_COUNT);
    metrics_count_request(gateway, request->operation, reply->status);
    if (reply->status == SZ_STATUS_OK) {
        sz_metrics_add(&gateway->config.metrics->events[request->operation],
                       sz_frame_event_count(request));
    }
    connection_t *conn = connection_at(gateway, message->connection_index);
    if (conn->fd < 0 || conn->generation != message->connection_generation) {
        message_free(gateway, message, NULL);
        return;
    }
    SZ_ASSERT(conn->ledger_count > 0);
    conn->ledger_count--;
    conn_queue_reply(gateway, conn, message);
}

static bool gateway_route_replies(sz_gateway_t *gateway) {
    void *batch[REPLY_BATCH_MAX];
    uint32_t total = 0;
    /* Bounded: at most messages_max messages exist. */
    while (total <= gateway->config.messages_max) {
        uint32_t count = sz_ring_pop(gateway->config.replies, batch, REPLY_BATCH_MAX);
        if (count == 0) break;
        for (uint32_t index = 0; index < count; index++) gateway_route_reply(gateway, batch[index]);
        total += count;
    }
    SZ_ASSERT(total <= gateway->config.messages_max);
    return total > 0;
}

/* ---- writing ---------------------------------------------------------------------- */

static uint32_t conn_gather(sz_gateway_t *gateway, connection_t *conn, struct iovec *iov) {
    uint32_t iov_count = 0;
    uint32_t index = conn->queue_head;
    uint32_t offset = conn->head_sent;
    while (index != NONE && iov_count < WRITE_IOVEC_MAX) {
        sz_message_t *message = &gateway->messages[index];
        SZ_ASSERT(offset < message->reply_size);
        iov[iov_count].iov_base = message->reply + offset;
        iov[iov_count].iov_len = message->reply_size - offset;
        iov_count++;
        offset = 0;
        index = gateway->message_next[index];
    }
    /* The final reply goes after every queued reply. */
    if (index == NONE && iov_count < WRITE_IOVEC_MAX && conn->final_pending) {
        iov[iov_count].iov_base = (uint8_t *)&conn->final_reply + conn->final_sent;
        iov[iov_count].iov_len = SZ_FRAME_HEADER_SIZE - conn->final_sent;
        iov_count++;
    }
    return iov_count;
}

/* sent bytes left the queue's front: free every reply that is whole. */
static void conn_advance(sz_gateway_t *gateway, connection_t *conn, size_t sent) {
    sz_metrics_t *metrics = gateway->config.metrics;
    sz_metrics_add(&metrics->bytes_sent, sent);
    conn->progress_ns = gateway->now_ns;
    while (sent > 0 && conn->queue_head != NONE) {
        uint32_t index = conn->queue_head;
        sz_message_t *message = &gateway->messages[index];
        size_t left = message->reply_size - conn->head_sent;
        if (sent < left) {
            conn->head_sent += (uint32_t)sent;
            return;
        }
        sent -= left;
        conn->queue_head = gateway->message_next[index];
        if (conn->queue_head == NONE) conn->queue_tail = NONE;
        conn->head_sent = 0;
        uint64_t latency_ns = gateway->now_ns - message->received_ns;
        sz_histogram_record(&metrics->request_latency_us, latency_ns / 1000u);
        message_free(gateway, message, conn);
    }
    if (sent > 0) {
        SZ_ASSERT(conn->final_pending);
        SZ_ASSERT(sent <= SZ_FRAME_HEADER_SIZE - conn->final_sent);
        conn->final_sent += (uint32_t)sent;
        if (conn->final_sent == SZ_FRAME_HEADER_SIZE) conn->final_pending = false;
    }
}

/* Writes what the connection has queued until done or the socket is full. Returns
 * whether any byte went out. */
static bool conn_flush(sz_gateway_t *gateway, connection_t *conn) {
    bool progress = false;
    /* Each pass sends at least one byte or stops: bounded by the bytes queued. */
    while (conn->fd >= 0 && conn->writable &&
           (conn->queue_head != NONE || conn->final_pending)) {
        struct iovec iov[WRITE_IOVEC_MAX];
        uint32_t iov_count = conn_gather(gateway, conn, iov);
        size_t wanted = 0;
        for (uint32_t index = 0; index < iov_count; index++) wanted += iov[index].iov_len;
        struct msghdr message_header = {.msg_iov = iov, .msg_iovlen = iov_count};
        ssize_t sent = sendmsg(conn->fd, &message_header, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn->writable = false;
                break;
            }
            conn_close(gateway, conn); /* EPIPE, ECONNRESET: the client is gone */
            return progress;
        }
        gateway_clock(gateway);
        conn_advance(gateway, conn, (size_t)sent);
        progress = true;
        /* A short write means the socket buffer is full: EPOLLOUT will say when not. */
        if ((size_t)sent < wanted) conn->writable = false;
    }
    conn_finish_if_done(gateway, conn);
    return progress;
}

static bool gateway_flush(sz_gateway_t *gateway) {
    bool progress = false;
    while (gateway->dirty_count > 0) {
        connection_t *conn = connection_at(gateway, gateway->dirty[--gateway->dirty_count]);
        conn->dirty = false;
        if (conn->fd >= 0) progress |= conn_flush(gateway, conn);
    }
    return progress;
}

/* ---- frames ----------------------------------------------------------------------- */

/* Token buckets, refilled continuously, holding at most one second of the rate. A
 * request passes while both buckets are above zero and then pays in full, so a batch
 * larger than a second's worth of events still passes once, and the long-run rate holds. */
static bool conn_rate_allow(sz_gateway_t *gateway, connection_t *conn, uint32_t event_count) {
    uint64_t requests_rate = gateway->config.requests_per_second_max;
    uint64_t events_rate = gateway->config.events_per_second_max;
    if (requests_rate == 0 && events_rate == 0) return true;
    uint64_t elapsed_ns = gateway->now_ns - conn->refill_ns;
    conn->refill_ns = gateway->now_ns;
    if (requests_rate != 0) {
        tokens_t full = (tokens_t)requests_rate * TOKEN_UNITS;
        conn->request_tokens += (tokens_t)elapsed_ns * requests_rate;
        if (conn->request_tokens > full) conn->request_tokens = full;
        if (conn->request_tokens <= 0) return false;
    }
    if (events_rate != 0) {
        tokens_t full = (tokens_t)events_rate * TOKEN_UNITS;
        conn->event_tokens += (tokens_t)elapsed_ns * events_rate;
        if (conn->event_tokens > full) conn->event_tokens = full;
        if (conn->event_tokens <= 0) return false;
    }
    if (requests_rate != 0) conn->request_tokens -= TOKEN_UNITS;
    if (events_rate != 0) conn->event_tokens -= (tokens_t)event_count * TOKEN_UNITS;
    return true;
}

static void gateway_push_requests(sz_gateway_t *gateway) {
    if (gateway->push_count == 0) return;
    uint32_t pushed = sz_ring_push(gateway->config.requests, (void *const *)gateway->push_batch,
                                   gateway->push_count);
    /* Never short: the ring holds at least messages_max (checked at open). */
    SZ_ASSERT(pushed == gateway->push_count);
    gateway->push_count = 0;
}

/* A checked subscribe request: the connection goes to the stream thread, which answers
 * it. Only a connection with nothing else out and nothing read after the request can go
 * (the stream thread never reads it); anything else is answered here and closed. */
static void conn_subscribe(sz_gateway_t *gateway, connection_t *conn, sz_message_t *message) {
    const sz_frame_header_t *request = sz_message_request_header(message);
    sz_status_t status = SZ_STATUS_OK;
    if (gateway->config.stream == NULL) {
        status = SZ_STATUS_OPERATION_INVALID;
    } else if (conn->held_count != 1 || conn->input_start != conn->input_end ||
               conn->final_pending) {
        status = SZ_STATUS_SUBSCRIPTION_INVALID;
    }
    if (status == SZ_STATUS_OK) {
        sz_subscribe_request_t body;
        memcpy(&body, message->request + SZ_FRAME_HEADER_SIZE, sizeof(body));
        int fd = conn->fd;
        /* Out of our epoll set before the stream thread adds it to its own. */
        if (epoll_ctl(gateway->epoll_fd, EPOLL_CTL_DEL, fd, NULL) == 0) {
            if (sz_stream_subscribe(gateway->config.stream, fd, request, &body) == 0) {
                message_free(gateway, message, conn);
                conn_release(gateway, conn);
                return;
            }
            status = SZ_STATUS_SUBSCRIBERS_FULL;
            struct epoll_event event = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                        .data.u64 = token_make(KIND_CLIENT, conn->index,
                                                               conn->generation)};
            /* Back in, for the refusal; failing that, the refusal is lost with the close. */
            if (epoll_ctl(gateway->epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) {
                message_free(gateway, message, conn);
                conn_close(gateway, conn);
                return;
            }
            conn->writable = true;
        } else {
            status = SZ_STATUS_UNAVAILABLE;
        }
    }
    if (status != SZ_STATUS_SUBSCRIBERS_FULL) {
        metrics_count_request(gateway, request->operation, status);
    }
    reply_error_build(&conn->final_reply, request, status, gateway->config.cluster_id, true);
    conn->final_pending = true;
    conn->final_sent = 0;
    message_free(gateway, message, conn);
    conn_stop_reading(gateway, conn);
    conn_mark_dirty(gateway, conn);
}

/* The decoder holds a whole frame in conn->filling: send it to the ledger, or answer it
 * here (bad body checksum, rate limited). */
static void conn_frame_done(sz_gateway_t *gateway, connection_t *conn) {
    sz_message_t *message = conn->filling;
    SZ_ASSERT(message != NULL);
    SZ_ASSERT(conn->decoder.state == SZ_DECODER_FRAME);
    conn->filling = NULL;
    const sz_frame_header_t *request = sz_message_request_header(message);
    message->received_ns = gateway_clock(gateway);
    message->connection_index = conn->index;
    message->connection_generation = conn->generation;
    conn->progress_ns = gateway->now_ns;

    sz_status_t status = conn->decoder.status;
    if (status == SZ_STATUS_OK && request->operation == SZ_OPERATION_SUBSCRIBE) {
        conn_subscribe(gateway, conn, message);
        sz_decoder_next(&conn->decoder);
        return;
    }
    uint32_t event_count = sz_frame_event_count(request);
    if (status == SZ_STATUS_OK && !conn_rate_allow(gateway, conn, event_count)) {
        status = SZ_STATUS_RATE_LIMITED;
    }
    if (status == SZ_STATUS_OK) {
        SZ_ASSERT(gateway->push_count < gateway->config.messages_max);
        gateway->push_batch[gateway->push_count++] = message;
        gateway->ledger_count++;
        conn->ledger_count++;
        sz_histogram_record(&gateway->config.metrics->batch_events, event_count);
    } else {
        if (status == SZ_STATUS_BODY_CHECKSUM_INVALID) {
            sz_metrics_add(&gateway->config.metrics->frames_invalid, 1);
        }
        metrics_count_request(gateway, request->operation, status);
        reply_error_build(sz_message_reply_header(message), request, status,
                          gateway->config.cluster_id, true);
        message->reply_size = SZ_FRAME_HEADER_SIZE;
        conn_queue_reply(gateway, conn, message);
    }
    sz_decoder_next(&conn->decoder);
}

/* The header failed its check: framing is lost. Answer it, then close once the replies
 * already owed have gone out. */
static void conn_frame_failed(sz_gateway_t *gateway, connection_t *conn) {
    const sz_frame_header_t *request = &conn->decoder.header;
    sz_status_t status = conn->decoder.status;
    bool authentic = sz_decoder_status_authentic(status);
    sz_metrics_add(&gateway->config.metrics->frames_invalid, 1);
    metrics_count_request(gateway, authentic ? request->operation : 0, status);
    reply_error_build(&conn->final_reply, request, status, gateway->config.cluster_id,
                      authentic);
    conn->final_pending = true;
    conn->final_sent = 0;
    conn_stop_reading(gateway, conn);
    conn_mark_dirty(gateway, conn);
}

/* Decodes the read-ahead until it is used up or the connection must wait. */
static enum decode_result conn_decode(sz_gateway_t *gateway, connection_t *conn) {
    /* Bounded: every pass consumes input, takes a message (at most pipeline_max), or
     * finishes a frame that took one. */
    while (true) {
        sz_decoder_t *decoder = &conn->decoder;
        switch (decoder->state) {
        case SZ_DECODER_HEADER:
        case SZ_DECODER_BODY: {
            if (conn->input_start == conn->input_end) return DECODE_NEED_BYTES;
            size_t taken = sz_decoder_feed(decoder, conn->input + conn->input_start,
                                           conn->input_end - conn->input_start);
            SZ_ASSERT(taken > 0);
            conn->input_start += (uint32_t)taken;
            break;
        }
        case SZ_DECODER_BODY_WANTED: {
            if (conn->held_count >= gateway->config.pipeline_max) return DECODE_BLOCKED_PIPELINE;
            if (gateway->free_count == 0) return DECODE_BLOCKED_POOL;
            sz_message_t *message = message_take(gateway);
            conn->filling = message;
            conn->held_count++;
            memcpy(message->request, &decoder->header, SZ_FRAME_HEADER_SIZE);
            sz_decoder_attach(decoder, message->request + SZ_FRAME_HEADER_SIZE);
            break;
        }
        case SZ_DECODER_FRAME:
            conn_frame_done(gateway, conn);
            break;
        case SZ_DECODER_FAILED:
            conn_frame_failed(gateway, conn);
            return DECODE_STOPPED;
        }
    }
}

/* ---- reading ---------------------------------------------------------------------- */

/* One read from the socket: the rest of a body straight into its message, read-ahead
 * into the input buffer. Returns false when the connection stopped reading. */
static bool conn_read(sz_gateway_t *gateway, connection_t *conn) {
    /* Decoding stopped only because the read-ahead was used up. */
    SZ_ASSERT(conn->input_start == conn->input_end);
    conn->input_start = 0;
    conn->input_end = 0;
    struct iovec iov[2];
    int iov_count = 0;
    void *body = NULL;
    size_t body_room = sz_decoder_body_room(&conn->decoder, &body);
    if (body_room > 0) iov[iov_count++] = (struct iovec){.iov_base = body, .iov_len = body_room};
    iov[iov_count++] = (struct iovec){.iov_base = conn->input, .iov_len = INPUT_SIZE};
    ssize_t received = readv(conn->fd, iov, iov_count);
    if (received < 0) {
        if (errno == EINTR) return true;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            conn->readable = false;
            return true;
        }
        conn_close(gateway, conn); /* ECONNRESET and friends */
        return false;
    }
    if (received == 0) {
        /* The client sent its last frame; answer what it is owed, then close. */
        conn_stop_reading(gateway, conn);
        conn_finish_if_done(gateway, conn);
        return false;
    }
    sz_metrics_add(&gateway->config.metrics->bytes_received, (uint64_t)received);
    size_t size = (size_t)received;
    /* A short read drained the socket: wait for the next edge. Unless the client has shut
     * its side: the end of stream came with the last edge, and only a read finds it. */
    if (size < body_room + INPUT_SIZE && !conn->peer_closed) conn->readable = false;
    size_t into_body = size < body_room ? size : body_room;
    if (into_body > 0) sz_decoder_body_received(&conn->decoder, into_body);
    conn->input_end = (uint32_t)(size - into_body);
    return true;
}

/* One turn of a connection in the ready list: decode what is buffered, read once if
 * that needs more bytes, decode again, and find where it waits next. */
static bool conn_turn(sz_gateway_t *gateway, connection_t *conn) {
    enum decode_result result = conn_decode(gateway, conn);
    bool progress = false;
    if (result == DECODE_NEED_BYTES && conn->readable) {
        progress = true;
        if (!conn_read(gateway, conn)) return true;
        result = conn_decode(gateway, conn);
    }
    if (conn->fd < 0) return true;
    switch (result) {
    case DECODE_NEED_BYTES:
        if (conn->readable) list_append(gateway, conn, LIST_READY);
        break;
    case DECODE_BLOCKED_POOL: list_append(gateway, conn, LIST_POOL_WAIT); break;
    case DECODE_BLOCKED_PIPELINE: break; /* message_free() schedules it again */
    case DECODE_STOPPED: break;
    }
    return progress;
}

/* Gives every ready connection one turn, in FIFO order, while the pool has messages. */
static bool gateway_read_round(sz_gateway_t *gateway) {
    if (gateway->free_count > 0) list_wait_to_ready_front(gateway);
    bool progress = false;
    uint32_t turns = gateway->ready_count;
    for (uint32_t turn = 0; turn < turns && gateway->ready_head != NONE; turn++) {
        /* The pool is empty: read nothing more, so TCP pushes back on every client. */
        if (gateway->free_count == 0) break;
        connection_t *conn = connection_at(gateway, gateway->ready_head);
        list_remove(gateway, conn);
        progress |= conn_turn(gateway, conn);
        /* Hand requests over early in a long round: the ledger should not wait for it. */
        if (gateway->push_count >= 16) gateway_push_requests(gateway);
    }
    gateway_push_requests(gateway);
    return progress;
}

/* ---- accepting -------------------------------------------------------------------- */

static void conn_open(sz_gateway_t *gateway, int fd) {
    SZ_ASSERT(gateway->free_connection_count > 0);
    uint32_t index = gateway->free_connections[--gateway->free_connection_count];
    connection_t *conn = connection_at(gateway, index);
    SZ_ASSERT(conn->fd < 0);
    SZ_ASSERT(conn->list == LIST_NONE);
    int one = 1;
    /* Replies are whole frames: send each at once. A failure only costs latency. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn->fd = fd;
    sz_decoder_init(&conn->decoder, SZ_COMMAND_REQUEST, gateway->config.cluster_id, true);
    conn->filling = NULL;
    conn->input_start = conn->input_end = 0;
    conn->held_count = conn->ledger_count = 0;
    conn->queue_head = conn->queue_tail = NONE;
    conn->head_sent = conn->final_sent = 0;
    conn->readable = false;
    conn->peer_closed = false;
    conn->writable = true;
    conn->read_closed = false;
    conn->final_pending = false;
    /* Full buckets: a new client may start with a second's burst. */
    conn->request_tokens = (tokens_t)gateway->config.requests_per_second_max * TOKEN_UNITS;
    conn->event_tokens = (tokens_t)gateway->config.events_per_second_max * TOKEN_UNITS;
    conn->refill_ns = gateway->now_ns;
    conn->progress_ns = gateway->now_ns;
    sz_metrics_t *metrics = gateway->config.metrics;
    sz_metrics_add(&metrics->connections_accepted, 1);
    sz_metrics_set(&metrics->connections_open,
                   gateway->config.connections_max - gateway->free_connection_count);
    /* Edge-triggered and never modified; an already readable socket reports at once. */
    uint64_t token = token_make(KIND_CLIENT, index, conn->generation);
    if (epoll_add(gateway, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, token) != 0) {
        conn_close(gateway, conn);
    }
}

/* Out of descriptors: free the spare one to accept and close the client at once (it
 * learns the server is full instead of waiting in the backlog), then take it back. */
static void accept_with_spare(sz_gateway_t *gateway, int listen_fd) {
    if (gateway->spare_fd < 0) return;
    close(gateway->spare_fd);
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    sz_metrics_add(&gateway->config.metrics->connections_refused, 1);
    if (fd >= 0) close(fd);
    gateway->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void gateway_accept(sz_gateway_t *gateway) {
    for (uint32_t count = 0; count < ACCEPT_BURST_MAX; count++) {
        int fd = accept4(gateway->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EMFILE || errno == ENFILE) accept_with_spare(gateway, gateway->listen_fd);
            return; /* EAGAIN: nothing more waits; other errors: try at the next edge */
        }
        if (gateway->free_connection_count == 0) {
            sz_metrics_add(&gateway->config.metrics->connections_refused, 1);
            close(fd);
            continue;
        }
        conn_open(gateway, fd);
    }
}

static void gateway_client_event(sz_gateway_t *gateway, uint64_t token, uint32_t events) {
    uint32_t index = (uint32_t)(token >> 32) & (CONNECTIONS_LIMIT - 1);
    uint32_t generation = (uint32_t)token;
    connection_t *conn = connection_at(gateway, index);
    /* An event queued before the slot was closed (and maybe reused) in this batch. */
    if (conn->fd < 0 || conn->generation != generation) return;
    if (events & EPOLLERR) {
        conn_close(gateway, conn);
        return;
    }
    if (events & (EPOLLRDHUP | EPOLLHUP)) conn->peer_closed = true;
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) && !conn->read_closed) {
        conn->readable = true;
        conn_schedule(gateway, conn);
    }
    if (events & (EPOLLOUT | EPOLLHUP)) {
        conn->writable = true;
        if (conn->queue_head != NONE || conn->final_pending) conn_mark_dirty(gateway, conn);
    }
}

/* ---- the metrics endpoint --------------------------------------------------------- */

static void metrics_close(metrics_connection_t *client) {
    if (client->fd < 0) return;
    close(client->fd);
    client->fd = -1;
    client->generation++;
}

static void metrics_accept(sz_gateway_t *gateway) {
    for (uint32_t count = 0; count < ACCEPT_BURST_MAX; count++) {
        int fd = accept4(gateway->metrics_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EMFILE || errno == ENFILE) {
                accept_with_spare(gateway, gateway->metrics_listen_fd);
            }
            return;
        }
        metrics_connection_t *client = NULL;
        uint32_t slot = 0;
        for (; slot < METRICS_CONNECTIONS_MAX; slot++) {
            if (gateway->metrics_connections[slot].fd < 0) {
                client = &gateway->metrics_connections[slot];
                break;
            }
        }
        if (client == NULL) {
            close(fd); /* a few scrapers at once is plenty */
            continue;
        }
        client->fd = fd;
        client->deadline_ns = gateway->now_ns + METRICS_TIMEOUT_NS;
        if (client->deadline_ns < gateway->sweep_ns) gateway->sweep_ns = client->deadline_ns;
        client->request_size = 0;
        client->responding = false;
        uint64_t token = token_make(KIND_METRICS_CLIENT, slot, client->generation);
        if (epoll_add(gateway, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, token) != 0) {
            metrics_close(client);
        }
    }
}

/* Builds the whole HTTP response in client->response: headers right before the body. */
static void metrics_respond(sz_gateway_t *gateway, metrics_connection_t *client) {
    const char *request = client->request;
    bool found = strncmp(request, "GET /metrics ", 13) == 0 ||
                 strncmp(request, "GET /metrics?", 13) == 0;
    char *body = client->response + METRICS_HEADER_ROOM;
    size_t body_room = METRICS_RESPONSE_SIZE_MAX - METRICS_HEADER_ROOM;
    const char *status = "200 OK";
    const char *type = "text/plain; version=0.0.4; charset=utf-8";
    size_t body_size = 0;
    if (found) {
        body_size = sz_metrics_render(gateway->config.metrics, body, body_room);
        if (body_size >= body_room) {
            status = "500 Internal Server Error";
            type = "text/plain";
            body_size = (size_t)snprintf(body, body_room, "metrics do not fit\n");
        }
    } else {
        status = "404 Not Found";
        type = "text/plain";
        body_size = (size_t)snprintf(body, body_room, "not found: try GET /metrics\n");
    }
    char header[METRICS_HEADER_ROOM];
    int header_size = snprintf(header, sizeof(header),
                               "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                               "Connection: close\r\n\r\n",
                               status, type, body_size);
    SZ_ASSERT(header_size > 0 && (size_t)header_size < sizeof(header));
    client->response_start = METRICS_HEADER_ROOM - (uint32_t)header_size;
    memcpy(client->response + client->response_start, header, (size_t)header_size);
    client->response_end = METRICS_HEADER_ROOM + (uint32_t)body_size;
    client->responding = true;
}

static bool metrics_request_complete(const metrics_connection_t *client) {
    const char *request = client->request;
    for (uint32_t index = 0; index + 1 < client->request_size; index++) {
        if (request[index] == '\n' && request[index + 1] == '\n') return true;
        if (index + 3 < client->request_size && memcmp(request + index, "\r\n\r\n", 4) == 0) {
            return true;
        }
    }
    return false;
}

/* Reads the request until its blank line (bounded), then writes the response. */
static void metrics_client_event(sz_gateway_t *gateway, uint64_t token) {
    uint32_t slot = (uint32_t)(token >> 32) & (CONNECTIONS_LIMIT - 1);
    SZ_ASSERT(slot < METRICS_CONNECTIONS_MAX);
    metrics_connection_t *client = &gateway->metrics_connections[slot];
    if (client->fd < 0 || client->generation != (uint32_t)token) return;
    while (!client->responding) {
        size_t room = METRICS_REQUEST_SIZE_MAX - 1 - client->request_size;
        if (room == 0) {
            metrics_close(client); /* a request this long is not a scrape */
            return;
        }
        ssize_t received = recv(client->fd, client->request + client->request_size, room, 0);
        if (received < 0 && errno == EINTR) continue;
        if (received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (received <= 0) {
            metrics_close(client);
            return;
        }
        client->request_size += (uint32_t)received;
        client->request[client->request_size] = 0;
        if (metrics_request_complete(client)) metrics_respond(gateway, client);
    }
    while (client->response_start < client->response_end) {
        ssize_t sent = send(client->fd, client->response + client->response_start,
                            client->response_end - client->response_start,
                            MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0 && errno == EINTR) continue;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return; /* EPOLLOUT */
        if (sent <= 0) break;
        client->response_start += (uint32_t)sent;
    }
    metrics_close(client);
}

/* ---- timeouts, drain -------------------------------------------------------------- */

/* Closes idle connections and timed-out scrapes; sets when to look again. */
static void gateway_sweep(sz_gateway_t *gateway) {
    uint64_t now_ns = gateway->now_ns;
    if (now_ns < gateway->sweep_ns) return;
    uint64_t idle_ns = gateway->config.idle_timeout_ns;
    /* Look again at least every quarter timeout: a connection whose last message just
     * came back from the ledger is idle since its last progress, not since now. */
    uint64_t next_ns = now_ns + (idle_ns / 4 > 1000000u ? idle_ns / 4 : 1000000u);
    for (uint32_t index = 0; index < gateway->config.connections_max; index++) {
        connection_t *conn = &gateway->connections[index];
        if (conn->fd < 0 || conn->ledger_count > 0) continue;
        uint64_t deadline_ns = conn->progress_ns + idle_ns;
        if (now_ns >= deadline_ns) {
            sz_metrics_add(&gateway->config.metrics->connections_timed_out, 1);
            conn_close(gateway, conn);
        } else if (deadline_ns < next_ns) {
            next_ns = deadline_ns;
        }
    }
    for (uint32_t slot = 0; slot < METRICS_CONNECTIONS_MAX; slot++) {
        metrics_connection_t *client = &gateway->metrics_connections[slot];
        if (client->fd < 0) continue;
        if (now_ns >= client->deadline_ns) {
            metrics_close(client);
        } else if (client->deadline_ns < next_ns) {
            next_ns = client->deadline_ns;
        }
    }
    gateway->sweep_ns = next_ns;
}

static void gateway_drain_begin(sz_gateway_t *gateway) {
    gateway->draining = true;
    gateway->drain_deadline_ns = gateway->now_ns + gateway->config.drain_timeout_ns;
    if (gateway->listen_fd >= 0) {
        close(gateway->listen_fd);
        gateway->listen_fd = -1;
    }
    for (uint32_t index = 0; index < gateway->config.connections_max; index++) {
        connection_t *conn = &gateway->connections[index];
        if (conn->fd < 0) continue;
        conn_stop_reading(gateway, conn);
        conn_finish_if_done(gateway, conn);
    }
}

static bool gateway_drained(const sz_gateway_t *gateway) {
    if (gateway->now_ns >= gateway->drain_deadline_ns) return true;
    return gateway->ledger_count == 0 &&
           gateway->free_connection_count == gateway->config.connections_max;
}

/* ---- the loop --------------------------------------------------------------------- */

static void gateway_event(sz_gateway_t *gateway, const struct epoll_event *event) {
    uint64_t token = event->data.u64;
    switch ((uint32_t)(token >> 56)) {
    case KIND_WAKE: {
        uint64_t count = 0;
        /* Resets the eventfd; EAGAIN when another read already did. */
        (void)!read(gateway->wake_fd, &count, sizeof(count));
        break;
    }
    case KIND_LISTEN:
        if (gateway->listen_fd >= 0) gateway_accept(gateway);
        break;
    case KIND_METRICS_LISTEN: metrics_accept(gateway); break;
    case KIND_CLIENT: gateway_client_event(gateway, token, event->events); break;
    case KIND_METRICS_CLIENT: metrics_client_event(gateway, token); break;
    default: SZ_ASSERT(!"unknown epoll token");
    }
}

/* How long epoll_wait may block: 0 while spinning; else until the next deadline, after
 * announcing the sleep (see the design notes), or -1 for "until woken". */
static int gateway_wait_timeout(sz_gateway_t *gateway, bool progress) {
    if (progress) gateway->progress_ns = gateway->now_ns;
    if (gateway->now_ns - gateway->progress_ns < SPIN_NS) return 0;
    atomic_store_explicit(&gateway->sleeping, 1, memory_order_relaxed);
    /* Pairs with the fence in sz_gateway_wake(): either it sees `sleeping`, or we see
     * the replies it pushed before calling it. */
    atomic_thread_fence(memory_order_seq_cst);
    if (sz_ring_occupancy(gateway->config.replies) > 0 ||
        atomic_load_explicit(&gateway->stopping, memory_order_relaxed) != 0) {
        atomic_store_explicit(&gateway->sleeping, 0, memory_order_relaxed);
        return 0;
    }
    uint64_t deadline_ns = gateway->sweep_ns;
    if (gateway->draining && gateway->drain_deadline_ns < deadline_ns) {
        deadline_ns = gateway->drain_deadline_ns;
    }
    if (deadline_ns <= gateway->now_ns) return 0;
    uint64_t wait_ms = (deadline_ns - gateway->now_ns + 999999u) / 1000000u;
    return wait_ms > 60000u ? 60000 : (int)wait_ms;
}

static void gateway_close_all(sz_gateway_t *gateway) {
    for (uint32_t index = 0; index < gateway->config.connections_max; index++) {
        if (gateway->connections[index].fd >= 0) conn_close(gateway, &gateway->connections[index]);
    }
    for (uint32_t slot = 0; slot < METRICS_CONNECTIONS_MAX; slot++) {
        metrics_close(&gateway->metrics_connections[slot]);
    }
}

int sz_gateway_run(sz_gateway_t *gateway) {
    SZ_ASSERT(gateway != NULL);
    struct epoll_event events[EPOLL_EVENTS_MAX];
    gateway_clock(gateway);
    gateway->progress_ns = gateway->now_ns;
    gateway->sweep_ns = gateway->now_ns;
    int result = 0;
    while (true) {
        gateway_clock(gateway);
        if (!gateway->draining &&
            atomic_load_explicit(&gateway->stopping, memory_order_relaxed) != 0) {
            gateway_drain_begin(gateway);
        }
        if (gateway->draining && gateway_drained(gateway)) break;
        bool progress = gateway_route_replies(gateway);
        if (!gateway->draining) progress |= gateway_read_round(gateway);
        progress |= gateway_flush(gateway);
        gateway_sweep(gateway);

        int timeout_ms = gateway_wait_timeout(gateway, progress);
        int count = epoll_wait(gateway->epoll_fd, events, EPOLL_EVENTS_MAX, timeout_ms);
        atomic_store_explicit(&gateway->sleeping, 0, memory_order_relaxed);
        if (count < 0) {
            if (errno == EINTR) continue;
            result = -errno;
            break;
        }
        gateway_clock(gateway);
        if (count > 0) gateway->progress_ns = gateway->now_ns;
        for (int index = 0; index < count; index++) gateway_event(gateway, &events[index]);
    }
    gateway_close_all(gateway);
    return result;
}

void sz_gateway_stop(sz_gateway_t *gateway) {
    atomic_store_explicit(&gateway->stopping, 1, memory_order_seq_cst);
    uint64_t one = 1;
    /* write() is async-signal-safe; a full counter (EAGAIN) still wakes the loop. */
    (void)!write(gateway->wake_fd, &one, sizeof(one));
}

void sz_gateway_wake(sz_gateway_t *gateway) {
    /* Pairs with the fence in gateway_wait_timeout(): the replies were published by the
     * ring's release store before this fence. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&gateway->sleeping, memory_order_relaxed) == 0) return;
    if (atomic_exchange_explicit(&gateway->sleeping, 0, memory_order_relaxed) == 0) return;
    uint64_t one = 1;
    (void)!write(gateway->wake_fd, &one, sizeof(one));
}

uint16_t sz_gateway_port(const sz_gateway_t *gateway) { return gateway->port; }

uint16_t sz_gateway_metrics_port(const sz_gateway_t *gateway) { return gateway->metrics_port; }

/* ---- open and close --------------------------------------------------------------- */

/* "host:port", "[v6]:port" or ":port" (every address). */
static int address_split(const char *address, char *host, size_t host_size, char *port,
                         size_t port_size) {
    const char *colon = strrchr(address, ':');
    if (colon == NULL || colon[1] == 0) return -EINVAL;
    const char *host_start = address;
    size_t host_length = (size_t)(colon - address);
    if (address[0] == '[') {
        if (host_length < 2 || address[host_length - 1] != ']') return -EINVAL;
        host_start = address + 1;
        host_length -= 2;
    }
    if (host_length >= host_size || strlen(colon + 1) >= port_size) return -EINVAL;
    memcpy(host, host_start, host_length);
    host[host_length] = 0;
    snprintf(port, port_size, "%s", colon + 1);
    return 0;
}

static int listen_open(const char *address, int *fd_out, uint16_t *port_out) {
    char host[256], port[16];
    if (address_split(address, host, sizeof(host), port, sizeof(port)) != 0) return -EINVAL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *addresses = NULL;
    int found = getaddrinfo(host[0] == 0 ? NULL : host, port, &hints, &addresses);
    if (found != 0) return found == EAI_NONAME ? -EADDRNOTAVAIL : -EINVAL;
    int result = -EADDRNOTAVAIL;
    for (struct addrinfo *at = addresses; at != NULL; at = at->ai_next) {
        int fd = socket(at->ai_family, at->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            result = -errno;
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, at->ai_addr, at->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
            result = -errno;
            close(fd);
            continue;
        }
        struct sockaddr_storage bound;
        socklen_t bound_size = sizeof(bound);
        if (getsockname(fd, (struct sockaddr *)&bound, &bound_size) != 0) {
            result = -errno;
            close(fd);
            break;
        }
        *port_out = bound.ss_family == AF_INET6
                        ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                        : ntohs(((struct sockaddr_in *)&bound)->sin_port);
        *fd_out = fd;
        result = 0;
        break;
    }
    freeaddrinfo(addresses);
    return result;
}

/* Every connection needs a descriptor: raise the soft limit up to the hard one. */
static int files_limit_raise(uint32_t connections_max, char *error_out, size_t error_size) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -errno;
    rlim_t wanted = (rlim_t)connections_max + FILES_RESERVED;
    if (limit.rlim_cur >= wanted) return 0;
    if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < wanted) {
        if (error_out != NULL && error_size > 0) {
            snprintf(error_out, error_size,
                     "connections_max %u needs %llu file descriptors; the hard limit is %llu: "
                     "lower --connections-max or raise the limit (ulimit -Hn)",
                     connections_max, (unsigned long long)wanted,
                     (unsigned long long)limit.rlim_max);
        }
        return -EMFILE;
    }
    /* An infinite hard limit still caps at fs.nr_open: ask for what we need. */
    limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return -errno;
    return 0;
}

static int config_check(const sz_gateway_config_t *config, char *error_out, size_t error_size) {
    const char *problem = NULL;
    if (config->address == NULL) problem = "address is missing";
    if (config->requests == NULL || config->replies == NULL) problem = "rings are missing";
    if (config->metrics == NULL) problem = "metrics are missing";
    if (problem == NULL && (config->messages_max > config->requests->capacity ||
                            config->messages_max > config->replies->capacity)) {
        problem = "messages_max is more than a ring holds";
    }
    if (config->connections_max >= CONNECTIONS_LIMIT) problem = "connections_max is too large";
    if (problem == NULL) return 0;
    if (error_out != NULL && error_size > 0) snprintf(error_out, error_size, "%s", problem);
    return -EINVAL;
}

static void *map_zeroed(size_t size) {
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return memory == MAP_FAILED ? NULL : memory;
}

/* Everything sized from the configuration, once: nothing grows after this. */
static int gateway_allocate(sz_gateway_t *gateway) {
    const sz_gateway_config_t *config = &gateway->config;
    gateway->messages_mapped_size = (size_t)config->messages_max * sizeof(sz_message_t);
    gateway->messages = map_zeroed(gateway->messages_mapped_size);
    /* A forked child (the ledger thread's snapshot writer) never reads messages: not
     * sharing them keeps fork() short and spares the gateway copy-on-write faults while
     * the child runs. Advice only. */
    if (gateway->messages != NULL) {
        (void)madvise(gateway->messages, gateway->messages_mapped_size, MADV_DONTFORK);
    }
    gateway->inputs_mapped_size = (size_t)config->connections_max * INPUT_SIZE;
    gateway->inputs = map_zeroed(gateway->inputs_mapped_size);
    gateway->message_next = calloc(config->messages_max, sizeof(uint32_t));
    gateway->free_messages = calloc(config->messages_max, sizeof(uint32_t));
    gateway->push_batch = calloc(config->messages_max, sizeof(sz_message_t *));
    gateway->connections = calloc(config->connections_max, sizeof(connection_t));
    gateway->free_connections = calloc(config->connections_max, sizeof(uint32_t));
    gateway->dirty = calloc(config->connections_max, sizeof(uint32_t));
    if (gateway->messages == NULL || gateway->inputs == NULL || gateway->message_next == NULL ||
        gateway->free_messages == NULL || gateway->push_batch == NULL ||
        gateway->connections == NULL || gateway->free_connections == NULL ||
        gateway->dirty == NULL) {
        return -ENOMEM;
    }
    for (uint32_t index = 0; index < METRICS_CONNECTIONS_MAX; index++) {
        gateway->metrics_connections[index].response = malloc(METRICS_RESPONSE_SIZE_MAX);
        if (gateway->metrics_connections[index].response == NULL) return -ENOMEM;
    }
    /* Pop order 0, 1, 2...: the lowest messages and slots stay warm in the cache. */
    for (uint32_t index = 0; index < config->messages_max; index++) {
        gateway->free_messages[index] = config->messages_max - 1 - index;
    }
    gateway->free_count = config->messages_max;
    for (uint32_t index = 0; index < config->connections_max; index++) {
        connection_t *conn = &gateway->connections[index];
        conn->fd = -1;
        conn->index = index;
        conn->input = gateway->inputs + (size_t)index * INPUT_SIZE;
        conn->list_prev = conn->list_next = NONE;
        conn->queue_head = conn->queue_tail = NONE;
        gateway->free_connections[index] = config->connections_max - 1 - index;
    }
    gateway->free_connection_count = config->connections_max;
    gateway->ready_head = gateway->ready_tail = NONE;
    gateway->wait_head = gateway->wait_tail = NONE;
    return 0;
}

static int gateway_sockets_open(sz_gateway_t *gateway, char *error_out, size_t error_size) {
    const sz_gateway_config_t *config = &gateway->config;
    gateway->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (gateway->epoll_fd < 0) return -errno;
    gateway->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (gateway->wake_fd < 0) return -errno;
    gateway->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    char what[320];
    int result = listen_open(config->address, &gateway->listen_fd, &gateway->port);
    if (result != 0) {
        snprintf(what, sizeof(what), "cannot listen on %s", config->address);
        set_error(error_out, error_size, what, result);
        return result;
    }
    if (config->metrics_address != NULL && config->metrics_address[0] != 0) {
        result = listen_open(config->metrics_address, &gateway->metrics_listen_fd,
                             &gateway->metrics_port);
        if (result != 0) {
            snprintf(what, sizeof(what), "cannot listen on metrics address %s",
                     config->metrics_address);
            set_error(error_out, error_size, what, result);
            return result;
        }
        result = epoll_add(gateway, gateway->metrics_listen_fd, EPOLLIN,
                           token_make(KIND_METRICS_LISTEN, 0, 0));
        if (result != 0) return result;
    }
    result = epoll_add(gateway, gateway->wake_fd, EPOLLIN, token_make(KIND_WAKE, 0, 0));
    if (result != 0) return result;
    /* Level-triggered: a burst left waiting in the backlog is reported again. */
    return epoll_add(gateway, gateway->listen_fd, EPOLLIN, token_make(KIND_LISTEN, 0, 0));
}

int sz_gateway_open(const sz_gateway_config_t *config, sz_gateway_t **gateway_out,
                    char *error_out, size_t error_size) {
    SZ_ASSERT(config != NULL);
    SZ_ASSERT(gateway_out != NULL);
    *gateway_out = NULL;
    if (error_out != NULL && error_size > 0) error_out[0] = 0;
    sz_gateway_config_t defaults = *config;
    if (defaults.connections_max == 0) defaults.connections_max = 1024;
    if (defaults.messages_max == 0) defaults.messages_max = 64;
    if (defaults.pipeline_max == 0) defaults.pipeline_max = 8;
    if (defaults.idle_timeout_ns == 0) defaults.idle_timeout_ns = 300000000000ull;
    if (defaults.drain_timeout_ns == 0) defaults.drain_timeout_ns = 10000000000ull;
    int result = config_check(&defaults, error_out, error_size);
    if (result != 0) return result;
    result = files_limit_raise(defaults.connections_max, error_out, error_size);
    if (result != 0) return result;

    sz_gateway_t *gateway = calloc(1, sizeof(*gateway));
    if (gateway == NULL) return -ENOMEM;
    gateway->config = defaults;
    gateway->epoll_fd = gateway->wake_fd = gateway->spare_fd = -1;
    gateway->listen_fd = gateway->metrics_listen_fd = -1;
    atomic_init(&gateway->stopping, 0);
    atomic_init(&gateway->sleeping, 0);
    for (uint32_t slot = 0; slot < METRICS_CONNECTIONS_MAX; slot++) {
        gateway->metrics_connections[slot].fd = -1;
    }
    result = gateway_allocate(gateway);
    if (result == 0) result = gateway_sockets_open(gateway, error_out, error_size);
    if (result != 0) {
        set_error(error_out, error_size, "gateway", result);
        goto fail;
    }
    /* The scrape shows ring occupancy; the gateway is the one that knows both rings. */
    if (gateway->config.metrics->request_ring == NULL) {
        gateway->config.metrics->request_ring = gateway->config.requests;
    }
    if (gateway->config.metrics->reply_ring == NULL) {
        gateway->config.metrics->reply_ring = gateway->config.replies;
    }
    *gateway_out = gateway;
    return 0;
fail:
    sz_gateway_close(gateway);
    return result;
}

static void close_if_open(int fd) {
    if (fd >= 0) close(fd);
}

void sz_gateway_close(sz_gateway_t *gateway) {
    if (gateway == NULL) return;
    if (gateway->connections != NULL) {
        for (uint32_t index = 0; index < gateway->config.connections_max; index++) {
            close_if_open(gateway->connections[index].fd);
        }
    }
    for (uint32_t slot = 0; slot < METRICS_CONNECTIONS_MAX; slot++) {
        close_if_open(gateway->metrics_connections[slot].fd);
        free(gateway->metrics_connections[slot].response);
    }
    close_if_open(gateway->listen_fd);
    close_if_open(gateway->metrics_listen_fd);
    close_if_open(gateway->spare_fd);
    close_if_open(gateway->wake_fd);
    close_if_open(gateway->epoll_fd);
    if (gateway->messages != NULL) munmap(gateway->messages, gateway->messages_mapped_size);
    if (gateway->inputs != NULL) munmap(gateway->inputs, gateway->inputs_mapped_size);
    free(gateway->message_next);
    free(gateway->free_messages);
    free(gateway->push_batch);
    free(gateway->connections);
    free(gateway->free_connections);
    free(gateway->dirty);
    free(gateway);
}
