/* stream.c: the stream thread of stream.h. It owns the sockets of subscribers: for each one a
 * journal reader and a send buffer; entries up to the published committed op are copied
 * from the reader into the buffer and written as fast as the socket takes them.
 *
 * Design notes
 * - Why a thread of its own: reading the journal is a blocking pread (page cache, or the
 *   disk for a subscriber far behind). In the gateway's loop that would stall every
 *   client; here it stalls only other subscribers, and the ledger thread never waits on
 *   anything of ours (it stores the committed op; see publish and the sleeping flag).
 * - Backpressure is TCP's: a subscriber's buffer is refilled only once the socket took all
 *   of it, so a subscriber that does not read costs one buffer and nothing else; when it
 *   reads again it catches up from the files. Fairness: each subscriber gets at most
 *   PUMP_BYTES_MAX per round.
 * - Waking: when a caught-up subscriber waits for new ops, the loop sets `sleeping`,
 *   fences and reads the committed op once more before epoll_wait; publish stores the op,
 *   fences and writes the eventfd only if it sees the flag (the gateway's pattern: one of
 *   the two always sees the other). Handovers always write the eventfd (rare).
 * - Epoll is edge-triggered on EPOLLOUT|EPOLLRDHUP; `writable` is cleared by EAGAIN or a
 *   short send and set by the next EPOLLOUT edge.
 *
 * A subscriber's life (a slot's generation changes at every close):
 *
 *   handed over --refused (full, bad body, op ahead/retired, journal unreadable):
 *                 one reply, close--> gone
 *   handed over --reader open, OK reply queued--> streaming
 *   streaming --send: socket full--> waiting for EPOLLOUT --edge--> streaming
 *   streaming --caught up--> waiting for a commit --publish--> streaming
 *   streaming --peer closed, send error, journal damage, stop--> gone
 */
#include "stream.h"

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "journal/reader.h"

/* One entry of any size fits, so a held entry always goes out once the buffer drained. */
#define SEND_BUFFER_SIZE                                                                 \
    ((SZ_JOURNAL_ENTRY_SIZE_MAX + 4095u) / 4096u * 4096u)
/* Bytes one subscriber may send per round before the next one gets its turn. */
#define PUMP_BYTES_MAX (4u << 20)
#define EPOLL_EVENTS_MAX 64
#define TOKEN_WAKE UINT64_MAX
#define PATH_SIZE 4096u
/* A sleeping loop still looks around now and then (stop without a wake, metrics). */
#define SLEEP_MS_MAX 1000

typedef struct handover {
    int fd;
    sz_frame_header_t request;
    sz_subscribe_request_t body;
} handover_t;

typedef struct subscriber {
    int fd; /* -1: slot free */
    uint32_t generation;
    sz_journal_reader_t *reader;
    uint8_t *buffer; /* SEND_BUFFER_SIZE: bytes [start, end) still to send */
    uint32_t buffer_start;
    uint32_t buffer_end;
    /* Taken from the reader but not yet in the buffer (valid until the reader's next call). */
    const sz_journal_header_t *held_header;
    const void *held_body;
    uint64_t op_from;
    uint64_t op_buffered; /* last op copied into the buffer */
    uint64_t op_sent;     /* last op whose bytes all went out */
    bool writable;
    bool caught_up;       /* the last fill found nothing committed to read */
    bool damaged;         /* the reader failed: send what is buffered, then close */
} subscriber_t;

struct sz_stream {
    sz_stream_config_t config;
    char directory[PATH_SIZE];
    char archive_directory[PATH_SIZE];
    alignas(64) _Atomic uint64_t op_committed; /* the ledger thread's store */
    _Atomic uint32_t sleeping;
    _Atomic uint32_t stopping;
    _Atomic uint64_t op_needed; /* the oldest op a subscriber still needs; UINT64_MAX: none */
    int epoll_fd;
    int wake_fd;
    pthread_mutex_t lock; /* guards handovers: the gateway adds, the stream thread takes */
    handover_t *handovers;
    uint32_t handover_count;
    handover_t *taken;    /* the stream thread's copy of what it took */
    subscriber_t *subscribers;
    uint32_t subscriber_count;
};

/* ---- replies and refusals --------------------------------------------------------- */

static void reply_build(sz_frame_header_t *reply, const sz_stream_t *stream,
                        const sz_frame_header_t *request, sz_status_t status, uint64_t op) {
    memset(reply, 0, sizeof(*reply));
    reply->cluster_id = stream->config.cluster_id;
    reply->client_id = request->client_id;
    reply->request_number = request->request_number;
    reply->trace_id = request->trace_id;
    reply->operation = request->operation;
    reply->command = SZ_COMMAND_REPLY;
    reply->status = (uint16_t)status;
    reply->op = op;
    sz_frame_header_seal(reply, NULL);
}

static void log_refusal(const handover_t *handover, sz_status_t status, uint64_t op) {
    fprintf(stderr,
            "level=info msg=subscription_refused status=%s op_from=%llu op=%llu trace_id=%llu\n",
            sz_status_name(status), (unsigned long long)handover->body.op_from,
            (unsigned long long)op, (unsigned long long)handover->request.trace_id);
}

/* A refusal on a fresh socket: 128 bytes always fit its send buffer. */
static void refuse(sz_stream_t *stream, const handover_t *handover, sz_status_t status,
                   uint64_t op) {
    SZ_ASSERT(status != SZ_STATUS_OK);
    sz_frame_header_t reply;
    reply_build(&reply, stream, &handover->request, status, op);
    (void)!send(handover->fd, &reply, sizeof(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
    close(handover->fd);
    sz_metrics_add(&stream->config.metrics->subscriptions[status], 1);
    log_refusal(handover, status, op);
}

static bool bytes_zero(const uint8_t *bytes, size_t size) {
    for (size_t index = 0; index < size; index++) {
        if (bytes[index] != 0) return false;
    }
    return true;
}

/* ---- subscribers ------------------------------------------------------------------ */

static subscriber_t *subscriber_free_slot(sz_stream_t *stream) {
    for (uint32_t index = 0; index < stream->config.subscribers_max; index++) {
        if (stream->subscribers[index].fd < 0) return &stream->subscribers[index];
    }
    return NULL;
}

static void subscriber_close(sz_stream_t *stream, subscriber_t *subscriber, const char *reason) {
    SZ_ASSERT(subscriber->fd >= 0);
    SZ_ASSERT(stream->subscriber_count > 0);
    fprintf(stderr, "level=info msg=unsubscribed reason=\"%s\" op_from=%llu op_sent=%llu\n",
            reason, (unsigned long long)subscriber->op_from,
            (unsigned long long)subscriber->op_sent);
    close(subscriber->fd); /* also leaves the epoll set */
    subscriber->fd = -1;
    subscriber->generation++;
    sz_journal_reader_close(subscriber->reader);
    subscriber->reader = NULL;
    free(subscriber->buffer);
    subscriber->buffer = NULL;
    subscriber->held_header = NULL;
    subscriber->held_body = NULL;
    stream->subscriber_count--;
    sz_metrics_set(&stream->config.metrics->subscribers, stream->subscriber_count);
}

/* Checks the request and opens the reader; returns the status to answer. */
static sz_status_t subscriber_admit(sz_stream_t *stream, const handover_t *handover,
                                    uint64_t op_committed, sz_journal_reader_t **reader_out,
                                    uint64_t *op_out) {
    const sz_subscribe_request_t *body = &handover->body;
    *op_out = op_committed;
    if (stream->subscriber_count >= stream->config.subscribers_max) {
        return SZ_STATUS_SUBSCRIBERS_FULL;
    }
    if (body->flags != 0 || !bytes_zero(body->reserved, sizeof(body->reserved))) {
        return SZ_STATUS_RESERVED_NOT_ZERO;
    }
    if (body->op_from == 0) return SZ_STATUS_SUBSCRIPTION_INVALID;
    if (body->op_from > op_committed + 1) return SZ_STATUS_OP_AHEAD;
    sz_journal_reader_options_t options = {
        .directory = stream->directory,
        .archive_directory = stream->archive_directory[0] != 0 ? stream->archive_directory : NULL,
        .op_from = body->op_from,
    };
    sz_journal_problem_t problem;
    int result = sz_journal_reader_open(&options, reader_out, &problem);
    if (result == -ENOENT && problem.op > 0) {
        *op_out = problem.op; /* the first op the journal holds */
        return SZ_STATUS_OP_RETIRED;
    }
    if (result < 0) {
        fprintf(stderr,
                "level=error msg=subscription_reader_failed error=\"%s\" file=%s offset=%llu "
                "op=%llu reason=\"%s\"\n",
                strerror(-result), problem.file, (unsigned long long)problem.offset,
                (unsigned long long)problem.op, problem.reason);
        *op_out = 0;
        return SZ_STATUS_UNAVAILABLE;
    }
    return SZ_STATUS_OK;
}

static void subscriber_start(sz_stream_t *stream, const handover_t *handover,
                             uint64_t op_committed) {
    sz_journal_reader_t *reader = NULL;
    uint64_t op = 0;
    sz_status_t status = subscriber_admit(stream, handover, op_committed, &reader, &op);
    subscriber_t *subscriber = status == SZ_STATUS_OK ? subscriber_free_slot(stream) : NULL;
    uint8_t *buffer = status == SZ_STATUS_OK ? malloc(SEND_BUFFER_SIZE) : NULL;
    if (status == SZ_STATUS_OK && (subscriber == NULL || buffer == NULL)) {
        status = SZ_STATUS_UNAVAILABLE; /* out of memory (a free slot exists by the count) */
    }
    if (status != SZ_STATUS_OK) {
        free(buffer);
        sz_journal_reader_close(reader);
        refuse(stream, handover, status, op);
        return;
    }
    SZ_ASSERT(subscriber->fd < 0);
    *subscriber = (subscriber_t){
        .fd = handover->fd,
        .generation = subscriber->generation,
        .reader = reader,
        .buffer = buffer,
        .buffer_end = SZ_FRAME_HEADER_SIZE,
        .op_from = handover->body.op_from,
        .op_buffered = handover->body.op_from - 1,
        .op_sent = handover->body.op_from - 1,
        .writable = true,
    };
    /* The OK reply goes out first, then the entries. */
    reply_build((sz_frame_header_t *)buffer, stream, &handover->request, SZ_STATUS_OK, op);
    uint32_t index = (uint32_t)(subscriber - stream->subscribers);
    struct epoll_event event = {.events = EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                .data.u64 = ((uint64_t)index << 32) | subscriber->generation};
    stream->subscriber_count++;
    sz_metrics_set(&stream->config.metrics->subscribers, stream->subscriber_count);
    sz_metrics_add(&stream->config.metrics->subscriptions[SZ_STATUS_OK], 1);
    fprintf(stderr,
            "level=info msg=subscribed op_from=%llu op_committed=%llu subscribers=%u "
            "trace_id=%llu\n",
            (unsigned long long)handover->body.op_from, (unsigned long long)op_committed,
            stream->subscriber_count, (unsigned long long)handover->request.trace_id);
    if (epoll_ctl(stream->epoll_fd, EPOLL_CTL_ADD, subscriber->fd, &event) != 0) {
        subscriber_close(stream, subscriber, "epoll_ctl failed");
    }
}

/* Refills an empty buffer with committed entries, up to damage if the reader meets any
 * (then `damaged`: the entries before it still go out). */
static void subscriber_fill(sz_stream_t *stream, subscriber_t *subscriber, uint64_t op_committed) {
    SZ_ASSERT(subscriber->buffer_start == subscriber->buffer_end);
    subscriber->buffer_start = 0;
    subscriber->buffer_end = 0;
    uint64_t entry_count = 0;
    subscriber->caught_up = false;
    /* Bounded by the buffer: each pass copies one entry or stops. */
    while (true) {
        if (subscriber->held_header == NULL) {
            sz_journal_problem_t problem;
            int result = sz_journal_reader_next(subscriber->reader, op_committed,
                                                &subscriber->held_header,
                                                &subscriber->held_body, &problem);
            if (result < 0) {
                fprintf(stderr,
                        "level=error msg=subscription_journal_damaged error=\"%s\" file=%s "
                        "offset=%llu op=%llu reason=\"%s\"\n",
                        strerror(-result), problem.file, (unsigned long long)problem.offset,
                        (unsigned long long)problem.op, problem.reason);
                subscriber->held_header = NULL;
                subscriber->damaged = true;
                break;
            }
            if (result == 0) {
                subscriber->held_header = NULL;
                subscriber->caught_up = true;
                break;
            }
        }
        const sz_journal_header_t *header = subscriber->held_header;
        SZ_ASSERT(header->op == subscriber->op_buffered + 1);
        SZ_ASSERT(header->op <= op_committed);
        uint32_t size = SZ_JOURNAL_HEADER_SIZE + header->body_size;
        SZ_ASSERT(size <= SEND_BUFFER_SIZE);
        if (subscriber->buffer_end + size > SEND_BUFFER_SIZE) break;
        memcpy(subscriber->buffer + subscriber->buffer_end, header, SZ_JOURNAL_HEADER_SIZE);
        memcpy(subscriber->buffer + subscriber->buffer_end + SZ_JOURNAL_HEADER_SIZE,
               subscriber->held_body, header->body_size);
        subscriber->buffer_end += size;
        subscriber->op_buffered = header->op;
        subscriber->held_header = NULL;
        subscriber->held_body = NULL;
        entry_count++;
    }
    sz_metrics_add(&stream->config.metrics->stream_entries, entry_count);
}

/* Sends and refills until the socket is full, the subscriber is caught up, or its share
 * of the round is spent. Returns whether anything happened. */
static bool subscriber_pump(sz_stream_t *stream, subscriber_t *subscriber, uint64_t op_committed) {
    bool progress = false;
    uint64_t budget = PUMP_BYTES_MAX;
    /* Bounded by the budget: each pass sends bytes, refills, or returns. */
    while (subscriber->fd >= 0) {
        if (subscriber->buffer_start == subscriber->buffer_end) {
            subscriber->op_sent = subscriber->op_buffered;
            if (budget == 0) return progress;
            if (!subscriber->damaged) subscriber_fill(stream, subscriber, op_committed);
            if (subscriber->buffer_start == subscriber->buffer_end) {
                if (!subscriber->damaged) return progress;
                subscriber_close(stream, subscriber, "journal damaged");
                return true;
            }
            progress = true;
        }
        if (!subscriber->writable) return progress;
        uint32_t wanted = subscriber->buffer_end - subscriber->buffer_start;
        ssize_t sent = send(subscriber->fd, subscriber->buffer + subscriber->buffer_start, wanted,
                            MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0 && errno == EINTR) continue;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            subscriber->writable = false;
            return progress;
        }
        if (sent <= 0) {
            subscriber_close(stream, subscriber, "send failed");
            return true;
        }
        progress = true;
        subscriber->buffer_start += (uint32_t)sent;
        sz_metrics_add(&stream->config.metrics->stream_bytes, (uint64_t)sent);
        budget = (uint64_t)sent >= budget ? 0 : budget - (uint64_t)sent;
        /* A short send means the socket is full: EPOLLOUT says when it is not. */
        if ((uint32_t)sent < wanted) subscriber->writable = false;
    }
    return true;
}

/* ---- the loop --------------------------------------------------------------------- */

static bool stream_take_handovers(sz_stream_t *stream) {
    pthread_mutex_lock(&stream->lock);
    uint32_t count = stream->handover_count;
    memcpy(stream->taken, stream->handovers, count * sizeof(handover_t));
    stream->handover_count = 0;
    pthread_mutex_unlock(&stream->lock);
    /* Read after the handovers: a subscriber that saw op N committed in a reply subscribed
     * after N was published, so N + 1 is never taken for an op ahead. */
    uint64_t op_committed = atomic_load_explicit(&stream->op_committed, memory_order_acquire);
    for (uint32_t index = 0; index < count; index++) {
        subscriber_start(stream, &stream->taken[index], op_committed);
    }
    return count > 0;
}

static void stream_event(sz_stream_t *stream, const struct epoll_event *event) {
    if (event->data.u64 == TOKEN_WAKE) {
        uint64_t count = 0;
        (void)!read(stream->wake_fd, &count, sizeof(count));
        return;
    }
    uint32_t index = (uint32_t)(event->data.u64 >> 32);
    SZ_ASSERT(index < stream->config.subscribers_max);
    subscriber_t *subscriber = &stream->subscribers[index];
    if (subscriber->fd < 0 || subscriber->generation != (uint32_t)event->data.u64) return;
    if (event->events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        subscriber_close(stream, subscriber, "peer closed");
        return;
    }
    if (event->events & EPOLLOUT) subscriber->writable = true;
}

/* Pumps every subscriber once; says whether any progressed and any waits for a commit. */
static bool stream_round(sz_stream_t *stream, uint64_t op_committed, bool *waiting_out) {
    bool progress = false;
    bool waiting = false;
    uint64_t lag_max = 0;
    uint64_t op_needed = UINT64_MAX;
    for (uint32_t index = 0; index < stream->config.subscribers_max; index++) {
        subscriber_t *subscriber = &stream->subscribers[index];
        if (subscriber->fd < 0) continue;
        progress |= subscriber_pump(stream, subscriber, op_committed);
        if (subscriber->fd < 0) continue;
        if (subscriber->caught_up && subscriber->buffer_start == subscriber->buffer_end) {
            waiting = true;
        }
        uint64_t lag = op_committed > subscriber->op_sent ? op_committed - subscriber->op_sent : 0;
        if (lag > lag_max) lag_max = lag;
        /* Its reader may still be in the segment of op_sent + 1 (or of op_from). */
        if (subscriber->op_sent + 1 < op_needed) op_needed = subscriber->op_sent + 1;
    }
    atomic_store_explicit(&stream->op_needed, op_needed, memory_order_relaxed);
    sz_metrics_set(&stream->config.metrics->subscription_lag_ops, lag_max);
    *waiting_out = waiting;
    return progress;
}

int sz_stream_run(sz_stream_t *stream) {
    SZ_ASSERT(stream != NULL);
    struct epoll_event events[EPOLL_EVENTS_MAX];
    while (atomic_load_explicit(&stream->stopping, memory_order_acquire) == 0) {
        bool progress = stream_take_handovers(stream);
        uint64_t op_committed = atomic_load_explicit(&stream->op_committed, memory_order_acquire);
        bool waiting = false;
        progress |= stream_round(stream, op_committed, &waiting);
        int timeout_ms = progress ? 0 : SLEEP_MS_MAX;
        if (!progress && waiting) {
            /* Pairs with the fence in sz_stream_publish(). */
            atomic_store_explicit(&stream->sleeping, 1, memory_order_relaxed);
            atomic_thread_fence(memory_order_seq_cst);
            if (atomic_load_explicit(&stream->op_committed, memory_order_relaxed) != op_committed) {
                timeout_ms = 0;
            }
        }
        int count = epoll_wait(stream->epoll_fd, events, EPOLL_EVENTS_MAX, timeout_ms);
        atomic_store_explicit(&stream->sleeping, 0, memory_order_relaxed);
        if (count < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        for (int index = 0; index < count; index++) stream_event(stream, &events[index]);
    }
    for (uint32_t index = 0; index < stream->config.subscribers_max; index++) {
        if (stream->subscribers[index].fd >= 0) {
            subscriber_close(stream, &stream->subscribers[index], "server stopping");
        }
    }
    return 0;
}

static void stream_wake(sz_stream_t *stream) {
    uint64_t one = 1;
    /* A full counter (EAGAIN) still wakes the loop. */
    (void)!write(stream->wake_fd, &one, sizeof(one));
}

void sz_stream_stop(sz_stream_t *stream) {
    atomic_store_explicit(&stream->stopping, 1, memory_order_seq_cst);
    stream_wake(stream);
}

uint64_t sz_stream_op_needed(const sz_stream_t *stream) {
    return atomic_load_explicit(&stream->op_needed, memory_order_relaxed);
}

void sz_stream_publish(sz_stream_t *stream, uint64_t op_committed) {
    SZ_ASSERT(op_committed >= atomic_load_explicit(&stream->op_committed, memory_order_relaxed));
    atomic_store_explicit(&stream->op_committed, op_committed, memory_order_release);
    /* Pairs with the fence before the stream thread's epoll_wait. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&stream->sleeping, memory_order_relaxed) == 0) return;
    if (atomic_exchange_explicit(&stream->sleeping, 0, memory_order_relaxed) == 0) return;
    stream_wake(stream);
}

int sz_stream_subscribe(sz_stream_t *stream, int fd, const sz_frame_header_t *request,
                        const sz_subscribe_request_t *body) {
    SZ_ASSERT(fd >= 0 && request != NULL && body != NULL);
    SZ_ASSERT(request->operation == SZ_OPERATION_SUBSCRIBE);
    pthread_mutex_lock(&stream->lock);
    bool full = stream->handover_count >= stream->config.subscribers_max;
    if (!full) {
        handover_t *handover = &stream->handovers[stream->handover_count++];
        handover->fd = fd;
        handover->request = *request;
        handover->body = *body;
    }
    pthread_mutex_unlock(&stream->lock);
    if (full) {
        sz_metrics_add(&stream->config.metrics->subscriptions[SZ_STATUS_SUBSCRIBERS_FULL], 1);
        return -EAGAIN;
    }
    stream_wake(stream);
    return 0;
}

/* ---- open and close --------------------------------------------------------------- */

/* Each subscriber holds three descriptors (its socket, a segment, the next segment): raise
 * the soft limit to the hard one if the default would not hold them beside the rest. */
static void stream_files_limit_raise(uint32_t subscribers_max) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    rlim_t wanted = (rlim_t)subscribers_max * 3u + 256u;
    if (limit.rlim_cur >= wanted) return;
    limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : limit.rlim_max;
    /* Failing costs refusals (UNAVAILABLE) at the limit, not correctness. */
    (void)setrlimit(RLIMIT_NOFILE, &limit);
}

int sz_stream_open(const sz_stream_config_t *config, sz_stream_t **stream_out, char *error_out,
                   size_t error_size) {
    SZ_ASSERT(config != NULL && stream_out != NULL);
    *stream_out = NULL;
    const char *problem = NULL;
    if (config->directory == NULL) problem = "the data directory is missing";
    if (config->metrics == NULL) problem = "metrics are missing";
    if (config->subscribers_max > SZ_STREAM_SUBSCRIBERS_MAX) {
        problem = "subscribers_max is too large";
    }
    if (config->directory != NULL && strlen(config->directory) >= PATH_SIZE) {
        problem = "path too long";
    }
    if (config->archive_directory != NULL && strlen(config->archive_directory) >= PATH_SIZE) {
        problem = "path too long";
    }
    if (problem != NULL) {
        if (error_out != NULL && error_size > 0) {
            snprintf(error_out, error_size, "stream: %s", problem);
        }
        return -EINVAL;
    }
    sz_stream_t *stream = calloc(1, sizeof(*stream));
    if (stream == NULL) return -ENOMEM;
    stream->config = *config;
    if (stream->config.subscribers_max == 0) {
        stream->config.subscribers_max = SZ_STREAM_SUBSCRIBERS_DEFAULT;
    }
    snprintf(stream->directory, sizeof(stream->directory), "%s", config->directory);
    if (config->archive_directory != NULL) {
        snprintf(stream->archive_directory, sizeof(stream->archive_directory), "%s",
                 config->archive_directory);
    }
    stream->config.directory = stream->directory;
    stream->config.archive_directory = NULL;
    atomic_init(&stream->op_committed, config->op_committed);
    atomic_init(&stream->sleeping, 0);
    atomic_init(&stream->stopping, 0);
    atomic_init(&stream->op_needed, UINT64_MAX);
    stream->epoll_fd = stream->wake_fd = -1;
    pthread_mutex_init(&stream->lock, NULL);
    uint32_t max = stream->config.subscribers_max;
    stream_files_limit_raise(max);
    stream->handovers = calloc(max, sizeof(handover_t));
    stream->taken = calloc(max, sizeof(handover_t));
    stream->subscribers = calloc(max, sizeof(subscriber_t));
    int result = 0;
    if (stream->handovers == NULL || stream->taken == NULL || stream->subscribers == NULL) {
        result = -ENOMEM;
        goto fail;
    }
    for (uint32_t index = 0; index < max; index++) stream->subscribers[index].fd = -1;
    stream->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    stream->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (stream->epoll_fd < 0 || stream->wake_fd < 0) {
        result = -errno;
        goto fail;
    }
    struct epoll_event event = {.events = EPOLLIN, .data.u64 = TOKEN_WAKE};
    if (epoll_ctl(stream->epoll_fd, EPOLL_CTL_ADD, stream->wake_fd, &event) != 0) {
        result = -errno;
        goto fail;
    }
    *stream_out = stream;
    return 0;
fail:
    if (error_out != NULL && error_size > 0) {
        snprintf(error_out, error_size, "stream: %s", strerror(-result));
    }
    sz_stream_close(stream);
    return result;
}

void sz_stream_close(sz_stream_t *stream) {
    if (stream == NULL) return;
    if (stream->subscribers != NULL) {
        for (uint32_t index = 0; index < stream->config.subscribers_max; index++) {
            subscriber_t *subscriber = &stream->subscribers[index];
            if (subscriber->fd >= 0) close(subscriber->fd);
            sz_journal_reader_close(subscriber->reader);
            free(subscriber->buffer);
        }
    }
    if (stream->handovers != NULL) {
        for (uint32_t index = 0; index < stream->handover_count; index++) {
            close(stream->handovers[index].fd);
        }
    }
    if (stream->epoll_fd >= 0) close(stream->epoll_fd);
    if (stream->wake_fd >= 0) close(stream->wake_fd);
    pthread_mutex_destroy(&stream->lock);
    free(stream->handovers);
    free(stream->taken);
    free(stream->subscribers);
    free(stream);
}
