/* source_server.c: the server source of source.h: one TCP connection to a running server,
 * one subscribe request (docs/PROTOCOL.md, "Subscriptions"), then journal entries back to
 * back, each checked here before it is handed out. A lost connection is reopened with
 * backoff and the subscription resumes at the op after the last entry handed out; the hash
 * chain from that entry proves the resumed stream joins without a gap or a duplicate.
 *
 *   state diagram of a server source
 *
 *   [disconnected] --connect, send subscribe (source_connect)--> [subscribing]
 *   [disconnected] --connect fails: backoff--> [disconnected]
 *   [subscribing] --reply ok (source_reply)--> [streaming]
 *   [subscribing] --reply subscribers_full / unavailable: backoff--> [disconnected]
 *   [subscribing] --any other refusal--> [failed] (next returns -EPROTO or -ENOENT)
 *   [streaming] --a whole entry that checks (source_entry)--> [streaming] (returns 1)
 *   [streaming] --connection lost--> [disconnected]
 *   [streaming] --an entry that fails a check--> [disconnected] (returns -EUCLEAN once)
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "gateway/protocol.h"
#include "projection/source.h"

/* Any entry (1 MiB + 128) plus room to read ahead. */
#define RECEIVE_BUFFER_SIZE (4u << 20)
static_assert(RECEIVE_BUFFER_SIZE >= 2 * SZ_JOURNAL_ENTRY_SIZE_MAX, "an entry fits");
#define BACKOFF_MS_MIN 50u
#define BACKOFF_MS_MAX 5000u
#define CONNECT_TIMEOUT_MS_DEFAULT 5000u
#define ADDRESS_SIZE 256u

typedef struct source_server {
    sz_source_t base; /* first: the caller's sz_source_t * is this */
    char address[ADDRESS_SIZE];
    sz_u128 cluster_id;
    uint32_t connect_timeout_ms;
    int fd;
    bool subscribed;   /* the OK reply arrived on this connection */
    bool progressed;   /* this connection handed out an entry */
    int failed;        /* a refusal that retrying cannot fix: returned from every next() */
    uint64_t op_next;  /* the op the next entry must carry */
    bool chain_known;  /* once an entry was handed out */
    sz_u128 checksum_last;
    uint64_t retry_at_ms;
    uint32_t backoff_ms;
    sz_u128 client_id;
    uint32_t request_number;
    uint8_t *buffer;   /* received bytes [start, end) not yet used */
    uint32_t buffer_start;
    uint32_t buffer_end;
} source_server_t;

static uint64_t clock_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static sz_u128 checksum(const void *data, size_t size) {
    XXH128_hash_t hash = XXH3_128bits(data, size);
    return ((sz_u128)hash.high64 << 64) | hash.low64;
}

__attribute__((format(printf, 2, 3))) static void source_error(source_server_t *source,
                                                               const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(source->base.error_message, sizeof(source->base.error_message), format, arguments);
    va_end(arguments);
}

static void source_disconnect(source_server_t *source, bool backoff) {
    if (source->fd >= 0) close(source->fd);
    source->fd = -1;
    source->subscribed = false;
    source->progressed = false;
    source->buffer_start = source->buffer_end = 0;
    uint64_t now_ms = clock_ms();
    if (!backoff) {
        source->retry_at_ms = now_ms;
        return;
    }
    source->retry_at_ms = now_ms + source->backoff_ms;
    source->backoff_ms = source->backoff_ms * 2 > BACKOFF_MS_MAX ? BACKOFF_MS_MAX
                                                                 : source->backoff_ms * 2;
}

/* ---- connecting ------------------------------------------------------------------- */

static int address_resolve(const char *address, struct addrinfo **addresses_out) {
    const char *colon = strrchr(address, ':');
    if (colon == NULL || colon[1] == 0) return -EINVAL;
    char host[ADDRESS_SIZE];
    size_t host_length = (size_t)(colon - address);
    const char *host_start = address;
    if (address[0] == '[' && host_length >= 2 && address[host_length - 1] == ']') {
        host_start++;
        host_length -= 2;
    }
    if (host_length >= sizeof(host)) return -EINVAL;
    memcpy(host, host_start, host_length);
    host[host_length] = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    int found = getaddrinfo(host_length == 0 ? NULL : host, colon + 1, &hints, addresses_out);
    return found == 0 ? 0 : -EHOSTUNREACH;
}

/* Waits until fd is ready for events or deadline_ms. Returns 1 ready, 0 timeout, -errno. */
static int wait_ready(int fd, short events, uint64_t deadline_ms) {
    /* Bounded by the deadline; EINTR retries. */
    while (true) {
        uint64_t now_ms = clock_ms();
        int timeout_ms = deadline_ms > now_ms ? (int)(deadline_ms - now_ms) : 0;
        struct pollfd item = {.fd = fd, .events = events};
        int count = poll(&item, 1, timeout_ms);
        if (count < 0 && errno == EINTR) continue;
        if (count < 0) return -errno;
        return count;
    }
}

static int socket_connect(const source_server_t *source, int *fd_out) {
    struct addrinfo *addresses = NULL;
    int result = address_resolve(source->address, &addresses);
    if (result < 0) return result;
    result = -ECONNREFUSED;
    uint64_t deadline_ms = clock_ms() + source->connect_timeout_ms;
    for (struct addrinfo *at = addresses; at != NULL; at = at->ai_next) {
        int fd = socket(at->ai_family, at->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            result = -errno;
            continue;
        }
        if (connect(fd, at->ai_addr, at->ai_addrlen) != 0 && errno != EINPROGRESS) {
            result = -errno;
            close(fd);
            continue;
        }
        int ready = wait_ready(fd, POLLOUT, deadline_ms);
        int error = 0;
        socklen_t error_size = sizeof(error);
        if (ready == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_size) == 0 &&
            error == 0) {
            /* A server that vanished (power, network) is noticed within about 25 s. */
            int on = 1, idle = 10, interval = 5, count = 3;
            (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
            (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
            (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
            (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
            *fd_out = fd;
            freeaddrinfo(addresses);
            return 0;
        }
        result = ready == 0 ? -ETIMEDOUT : ready < 0 ? ready : -(error != 0 ? error : EIO);
        close(fd);
    }
    freeaddrinfo(addresses);
    return result;
}

/* Connects and sends the subscribe request for op_next (128 + 64 bytes fit any fresh
 * socket's buffer). */
static int source_connect(source_server_t *source) {
    SZ_ASSERT(source->fd < 0);
    int fd = -1;
    int result = socket_connect(source, &fd);
    if (result < 0) {
        source_error(source, "cannot connect to %s: %s", source->address, strerror(-result));
        return result;
    }
    uint8_t frame[SZ_FRAME_HEADER_SIZE + sizeof(sz_subscribe_request_t)];
    memset(frame, 0, sizeof(frame));
    sz_subscribe_request_t body = {.op_from = source->op_next};
    memcpy(frame + SZ_FRAME_HEADER_SIZE, &body, sizeof(body));
    sz_frame_header_t header = {
        .cluster_id = source->cluster_id,
        .client_id = source->client_id,
        .request_number = ++source->request_number,
        .body_size = sizeof(body),
        .command = SZ_COMMAND_REQUEST,
        .operation = SZ_OPERATION_SUBSCRIBE,
    };
    sz_frame_header_seal(&header, frame + SZ_FRAME_HEADER_SIZE);
    memcpy(frame, &header, sizeof(header));
    ssize_t sent = send(fd, frame, sizeof(frame), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent != (ssize_t)sizeof(frame)) {
        result = sent < 0 ? -errno : -EIO;
        source_error(source, "cannot send the subscribe request to %s: %s", source->address,
                     strerror(-result));
        close(fd);
        return result;
    }
    source->fd = fd;
    source->subscribed = false;
    source->buffer_start = source->buffer_end = 0;
    return 0;
}

/* ---- receiving -------------------------------------------------------------------- */

/* Reads what the socket has, waiting until deadline_ms. Returns 1 bytes came, 0 timeout,
 * or -errno (-ECONNRESET when the server closed). */
static int source_receive(source_server_t *source, uint64_t deadline_ms) {
    /* Keep the unused bytes at the front: entries stay 128-byte aligned (every entry and
     * the reply are multiples of 128 bytes) and the room behind them is largest. */
    if (source->buffer_start > 0) {
        uint32_t count = source->buffer_end - source->buffer_start;
        memmove(source->buffer, source->buffer + source->buffer_start, count);
        source->buffer_start = 0;
        source->buffer_end = count;
    }
    SZ_ASSERT(source->buffer_end < RECEIVE_BUFFER_SIZE);
    /* Bounded by the deadline. */
    while (true) {
        ssize_t count = recv(source->fd, source->buffer + source->buffer_end,
                             RECEIVE_BUFFER_SIZE - source->buffer_end, MSG_DONTWAIT);
        if (count > 0) {
            source->buffer_end += (uint32_t)count;
            return 1;
        }
        if (count == 0) return -ECONNRESET;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
        int ready = wait_ready(source->fd, POLLIN, deadline_ms);
        if (ready <= 0) return ready;
    }
}

/* The subscribe reply: 0 subscribed, 1 not whole yet, -EAGAIN retry later, or an error
 * that retrying will not fix. */
static int source_reply(source_server_t *source) {
    if (source->buffer_end - source->buffer_start < SZ_FRAME_HEADER_SIZE) return 1;
    sz_frame_header_t reply;
    memcpy(&reply, source->buffer + source->buffer_start, sizeof(reply));
    sz_status_t check = sz_frame_header_check(&reply, SZ_COMMAND_REPLY, source->cluster_id, true);
    if (check != SZ_STATUS_OK) {
        source_error(source, "the server at %s sent a bad reply header: %s", source->address,
                     sz_status_name(check));
        return check == SZ_STATUS_CLUSTER_INVALID ? -EPROTO : -EAGAIN;
    }
    if (reply.body_size != 0 || reply.operation != SZ_OPERATION_SUBSCRIBE) {
        source_error(source, "the server at %s answered something else than the subscription",
                     source->address);
        return -EAGAIN;
    }
    source->buffer_start += SZ_FRAME_HEADER_SIZE;
    const char *name = sz_status_name(reply.status);
    switch (reply.status) {
    case SZ_STATUS_OK: return 0;
    case SZ_STATUS_SUBSCRIBERS_FULL:
    case SZ_STATUS_UNAVAILABLE:
        source_error(source, "the server at %s refused the subscription for now: %s",
                     source->address, name);
        return -EAGAIN;
    case SZ_STATUS_OP_RETIRED:
        source_error(source,
                     "op %llu is no longer in the server's journal (its first op is %llu): "
                     "restore from a snapshot or read the archived segments",
                     (unsigned long long)source->op_next, (unsigned long long)reply.op);
        return -ENOENT;
    case SZ_STATUS_OP_AHEAD:
        source_error(source,
                     "op %llu is past the server's committed op %llu: this position is not "
                     "from this server's journal",
                     (unsigned long long)source->op_next, (unsigned long long)reply.op);
        return -EPROTO;
    default:
        source_error(source, "the server at %s refused the subscription: %s", source->address,
                     name != NULL ? name : "unknown status");
        return -EPROTO;
    }
}

/* One entry from the buffer: 1 handed out, 0 not whole yet, -EUCLEAN it fails a check. */
static int source_entry(source_server_t *source, const sz_journal_header_t **header_out,
                        const void **body_out) {
    uint32_t available = source->buffer_end - source->buffer_start;
    if (available < SZ_JOURNAL_HEADER_SIZE) return 0;
    const uint8_t *bytes = source->buffer + source->buffer_start;
    const sz_journal_header_t *header = (const sz_journal_header_t *)bytes;
    const char *problem = NULL;
    if (sz_journal_header_check(header) != 0) {
        problem = "header check failed";
    } else if (header->cluster_id != source->cluster_id) {
        problem = "another cluster";
    } else if (header->op != source->op_next) {
        problem = "not the op expected";
    } else if (source->chain_known && header->checksum_previous != source->checksum_last) {
        problem = "does not chain to the entry before it";
    }
    if (problem == NULL) {
        if (available < SZ_JOURNAL_HEADER_SIZE + header->body_size) return 0;
        if (checksum(bytes + SZ_JOURNAL_HEADER_SIZE, header->body_size) != header->checksum_body) {
            problem = "body checksum mismatch";
        }
    }
    if (problem != NULL) {
        source_error(source, "entry for op %llu from %s: %s; reconnecting",
                     (unsigned long long)source->op_next, source->address, problem);
        return -EUCLEAN;
    }
    source->buffer_start += SZ_JOURNAL_HEADER_SIZE + header->body_size;
    source->op_next++;
    source->chain_known = true;
    source->checksum_last = header->checksum_header;
    *header_out = header;
    *body_out = bytes + SZ_JOURNAL_HEADER_SIZE;
    return 1;
}

/* ---- the interface ---------------------------------------------------------------- */

/* Bytes arrived: look at them before the deadline decides. */
#define STEP_AGAIN 2

/* Moves the connection on: 1 an entry, STEP_AGAIN, 0 nothing before the deadline, or an
 * error. */
static int source_step(source_server_t *source, const sz_journal_header_t **header_out,
                       const void **body_out, uint64_t deadline_ms) {
    if (source->fd < 0) {
        uint64_t now_ms = clock_ms();
        if (now_ms < source->retry_at_ms) {
            uint64_t until_ms = source->retry_at_ms < deadline_ms ? source->retry_at_ms
                                                                  : deadline_ms;
            /* Backoff: nothing to wait on but time. */
            struct timespec pause = {.tv_sec = (time_t)((until_ms - now_ms) / 1000),
                                     .tv_nsec = (long)((until_ms - now_ms) % 1000) * 1000000};
            nanosleep(&pause, NULL);
            return 0;
        }
        if (source_connect(source) < 0) {
            source_disconnect(source, true);
            return 0;
        }
    }
    if (!source->subscribed) {
        int result = source_reply(source);
        if (result == 0) {
            source->subscribed = true;
        } else if (result == -EAGAIN) {
            source_disconnect(source, true);
            return 0;
        } else if (result < 0) {
            source_disconnect(source, false);
            source->failed = result;
            return result;
        }
    }
    if (source->subscribed) {
        int result = source_entry(source, header_out, body_out);
        if (result < 0) source_disconnect(source, true);
        if (result > 0 && !source->progressed) {
            /* The connection works: the next loss reconnects at once. */
            source->progressed = true;
            source->backoff_ms = BACKOFF_MS_MIN;
        }
        if (result != 0) return result;
    }
    int result = source_receive(source, deadline_ms);
    if (result < 0) {
        source_error(source, "connection to %s lost: %s; reconnecting", source->address,
                     strerror(-result));
        /* A connection that gave nothing (a server closing at once) waits before the next. */
        source_disconnect(source, !source->progressed);
        return 0;
    }
    return result == 1 ? STEP_AGAIN : 0;
}

static int source_server_next(sz_source_t *base, const sz_journal_header_t **header_out,
                              const void **body_out, int timeout_ms) {
    source_server_t *source = (source_server_t *)base;
    SZ_ASSERT(header_out != NULL && body_out != NULL);
    if (source->failed != 0) return source->failed;
    uint64_t deadline_ms = clock_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    /* Bounded by the deadline (each step waits at most until it) and by the bytes that
     * arrive (STEP_AGAIN consumes them). */
    while (true) {
        int result = source_step(source, header_out, body_out, deadline_ms);
        if (result == STEP_AGAIN) continue;
        if (result != 0) return result;
        if (clock_ms() >= deadline_ms) return 0;
    }
}

static void source_server_close(sz_source_t *base) {
    source_server_t *source = (source_server_t *)base;
    if (source->fd >= 0) close(source->fd);
    free(source->buffer);
    free(source);
}

int sz_source_server_open(const sz_source_server_options_t *options, sz_source_t **source_out,
                          char *error_out, size_t error_size) {
    SZ_ASSERT(options != NULL && source_out != NULL);
    *source_out = NULL;
    if (options->address == NULL || strlen(options->address) >= ADDRESS_SIZE ||
        options->op_from == 0) {
        if (error_out != NULL) {
            snprintf(error_out, error_size, "an address and op_from >= 1 are needed");
        }
        return -EINVAL;
    }
    source_server_t *source = calloc(1, sizeof(*source));
    if (source == NULL) return -ENOMEM;
    source->buffer = aligned_alloc(4096, RECEIVE_BUFFER_SIZE);
    if (source->buffer == NULL) {
        free(source);
        return -ENOMEM;
    }
    source->base.next = source_server_next;
    source->base.close = source_server_close;
    snprintf(source->address, sizeof(source->address), "%s", options->address);
    source->cluster_id = options->cluster_id;
    source->connect_timeout_ms = options->connect_timeout_ms ? options->connect_timeout_ms
                                                             : CONNECT_TIMEOUT_MS_DEFAULT;
    source->fd = -1;
    source->op_next = options->op_from;
    source->backoff_ms = BACKOFF_MS_MIN;
    /* A client id is any non-zero number; the stream thread only echoes it. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    source->client_id = ((sz_u128)(uint64_t)getpid() << 64) | (uint64_t)now.tv_nsec | 1u;
    /* The first subscription is made here, so a wrong address, cluster or op is reported
     * at once rather than retried forever. */
    int result = source_connect(source);
    uint64_t deadline_ms = clock_ms() + source->connect_timeout_ms;
    while (result == 0) {
        result = source_reply(source);
        if (result == 0) {
            source->subscribed = true;
            break;
        }
        if (result < 0) break;
        result = source_receive(source, deadline_ms);
        if (result == 0) {
            result = -ETIMEDOUT;
            source_error(source, "no answer from %s to the subscription", source->address);
        } else if (result == 1) {
            result = 0;
        } else {
            source_error(source, "connection to %s lost: %s", source->address, strerror(-result));
        }
    }
    if (result < 0) {
        if (error_out != NULL) snprintf(error_out, error_size, "%s", source->base.error_message);
        source_server_close(&source->base);
        return result;
    }
    *source_out = &source->base;
    return 0;
}
