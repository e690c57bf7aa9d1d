/* client.c: libsumzero, the C client library (the contract is sumzero.h). Application
 * threads queue packets; one I/O thread per client owns the socket, merges waiting packets
 * into requests, keeps up to pipeline_max requests out, matches replies by request number,
 * splits results back to each packet, and reconnects and resends when it has to.
 *
 * A request slot goes through these states (the function on each edge):
 *
 *            request_build()             connection_write()
 *   FREE ----------------------> WAITING ------------------> OUT
 *    ^                            ^  ^                        |
 *    |                            |  +-- connection_reset() --+  (same frame, same number)
 *    |                            |                           |
 *    |                            +-- request_resubmit() -----+  REQUEST_STALE (new number)
 *    |                            |                           |
 *    |                 BACKOFF ---+ (retry time reached)      |
 *    |                    ^                                   |
 *    |                    +------ request_retry_later() ------+  BUSY, RATE_LIMITED,
 *    |                                                        |  SHUTTING_DOWN, UNAVAILABLE
 *    +--------- request_complete() / request_fail() ----------+  OK, other statuses,
 *                                                               timeout, retries exhausted
 *
 * Threads: the submission queue, `closing` and the client id are shared under `mutex`;
 * everything else below "I/O thread only" belongs to the I/O thread. Callbacks run on the
 * I/O thread with no lock held, after the slot they came from is back to FREE.
 */
#include "sumzero.h"

#include <errno.h>
#include <linux/futex.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "gateway/protocol.h"

/* The public header repeats core's layouts and numbers without including core: pin every
 * one of them here, so the two can never drift apart. */
#define SAME_FIELD(public_type, core_type, field)                                         \
    static_assert(offsetof(public_type, field) == offsetof(core_type, field) &&           \
                      sizeof(((public_type *)0)->field) == sizeof(((core_type *)0)->field), \
                  #public_type "." #field)
static_assert(sizeof(sumzero_u128_t) == sizeof(sz_u128), "u128");
static_assert(sizeof(sumzero_account_t) == sizeof(sz_account_t), "account");
SAME_FIELD(sumzero_account_t, sz_account_t, id);
SAME_FIELD(sumzero_account_t, sz_account_t, debits_pending);
SAME_FIELD(sumzero_account_t, sz_account_t, debits_posted);
SAME_FIELD(sumzero_account_t, sz_account_t, credits_pending);
SAME_FIELD(sumzero_account_t, sz_account_t, credits_posted);
SAME_FIELD(sumzero_account_t, sz_account_t, user_data_128);
SAME_FIELD(sumzero_account_t, sz_account_t, user_data_64);
SAME_FIELD(sumzero_account_t, sz_account_t, user_data_32);
SAME_FIELD(sumzero_account_t, sz_account_t, reserved);
SAME_FIELD(sumzero_account_t, sz_account_t, ledger);
SAME_FIELD(sumzero_account_t, sz_account_t, code);
SAME_FIELD(sumzero_account_t, sz_account_t, flags);
SAME_FIELD(sumzero_account_t, sz_account_t, timestamp);
static_assert(sizeof(sumzero_transfer_t) == sizeof(sz_transfer_t), "transfer");
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, id);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, debit_account_id);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, credit_account_id);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, amount);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, pending_id);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, user_data_128);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, user_data_64);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, user_data_32);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, timeout);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, ledger);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, code);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, flags);
SAME_FIELD(sumzero_transfer_t, sz_transfer_t, timestamp);
static_assert(sizeof(sumzero_account_balance_t) == sizeof(sz_account_balance_t), "balance");
SAME_FIELD(sumzero_account_balance_t, sz_account_balance_t, debits_pending);
SAME_FIELD(sumzero_account_balance_t, sz_account_balance_t, debits_posted);
SAME_FIELD(sumzero_account_balance_t, sz_account_balance_t, credits_pending);
SAME_FIELD(sumzero_account_balance_t, sz_account_balance_t, credits_posted);
SAME_FIELD(sumzero_account_balance_t, sz_account_balance_t, timestamp);
SAME_FIELD(sumzero_account_balance_t, sz_account_balance_t, reserved);
static_assert(sizeof(sumzero_account_filter_t) == sizeof(sz_account_filter_t), "filter");
SAME_FIELD(sumzero_account_filter_t, sz_account_filter_t, account_id);
SAME_FIELD(sumzero_account_filter_t, sz_account_filter_t, timestamp_min);
SAME_FIELD(sumzero_account_filter_t, sz_account_filter_t, timestamp_max);
SAME_FIELD(sumzero_account_filter_t, sz_account_filter_t, limit);
SAME_FIELD(sumzero_account_filter_t, sz_account_filter_t, flags);
SAME_FIELD(sumzero_account_filter_t, sz_account_filter_t, reserved);
static_assert(sizeof(sumzero_create_result_t) == sizeof(sz_create_result_t), "result");
SAME_FIELD(sumzero_create_result_t, sz_create_result_t, index);
SAME_FIELD(sumzero_create_result_t, sz_create_result_t, result);
#undef SAME_FIELD

/* Same number on both sides; ints, since comparing two enums' members is a warning. */
#define SAME(public_name, core_name)                                                     \
    static_assert((int)(public_name) == (int)(core_name), #public_name)
SAME(SUMZERO_BATCH_EVENTS_MAX, SZ_BATCH_EVENTS_MAX);
SAME(SUMZERO_ACCOUNT_LINKED, SZ_ACCOUNT_LINKED);
SAME(SUMZERO_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS, SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS);
SAME(SUMZERO_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS, SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS);
SAME(SUMZERO_ACCOUNT_HISTORY, SZ_ACCOUNT_HISTORY);
SAME(SZ_ACCOUNT_FLAGS_KNOWN, (1u << 4) - 1); /* a new account flag needs a public name */
SAME(SUMZERO_TRANSFER_LINKED, SZ_TRANSFER_LINKED);
SAME(SUMZERO_TRANSFER_PENDING, SZ_TRANSFER_PENDING);
SAME(SUMZERO_TRANSFER_POST_PENDING, SZ_TRANSFER_POST_PENDING);
SAME(SUMZERO_TRANSFER_VOID_PENDING, SZ_TRANSFER_VOID_PENDING);
SAME(SUMZERO_TRANSFER_BALANCING_DEBIT, SZ_TRANSFER_BALANCING_DEBIT);
SAME(SUMZERO_TRANSFER_BALANCING_CREDIT, SZ_TRANSFER_BALANCING_CREDIT);
SAME(SZ_TRANSFER_FLAGS_KNOWN, (1u << 6) - 1); /* a new transfer flag needs a public name */
SAME(SUMZERO_FILTER_DEBITS, SZ_FILTER_DEBITS);
SAME(SUMZERO_FILTER_CREDITS, SZ_FILTER_CREDITS);
SAME(SUMZERO_FILTER_REVERSED, SZ_FILTER_REVERSED);
SAME(SZ_FILTER_FLAGS_KNOWN, (1u << 3) - 1); /* a new filter flag needs a public name */
SAME(SUMZERO_OPERATION_CREATE_ACCOUNTS, SZ_OPERATION_CREATE_ACCOUNTS);
SAME(SUMZERO_OPERATION_CREATE_TRANSFERS, SZ_OPERATION_CREATE_TRANSFERS);
SAME(SUMZERO_OPERATION_LOOKUP_ACCOUNTS, SZ_OPERATION_LOOKUP_ACCOUNTS);
SAME(SUMZERO_OPERATION_LOOKUP_TRANSFERS, SZ_OPERATION_LOOKUP_TRANSFERS);
SAME(SUMZERO_OPERATION_GET_ACCOUNT_TRANSFERS, SZ_OPERATION_GET_ACCOUNT_TRANSFERS);
SAME(SUMZERO_OPERATION_GET_ACCOUNT_BALANCES, SZ_OPERATION_GET_ACCOUNT_BALANCES);
#define SAME_STATUS(upper, lower, value) SAME(SUMZERO_STATUS_##upper, SZ_STATUS_##upper);
SZ_STATUS_LIST(SAME_STATUS)
#undef SAME_STATUS
SAME(SUMZERO_STATUS_SUBSCRIPTION_INVALID + 1, SZ_STATUS_COUNT); /* a new status needs a public name */
#define SAME_RESULT(upper, lower, value)                                                  \
    SAME(SUMZERO_CREATE_ACCOUNT_##upper, SZ_CREATE_ACCOUNT_##upper);
SZ_CREATE_ACCOUNT_RESULTS(SAME_RESULT)
#undef SAME_RESULT
#define SAME_RESULT(upper, lower, value)                                                  \
    SAME(SUMZERO_CREATE_TRANSFER_##upper, SZ_CREATE_TRANSFER_##upper);
SZ_CREATE_TRANSFER_RESULTS(SAME_RESULT)
#undef SAME_RESULT
SAME(SUMZERO_CREATE_ACCOUNT_RESULT_COUNT, SZ_CREATE_ACCOUNT_RESULT_COUNT);
SAME(SUMZERO_CREATE_TRANSFER_RESULT_COUNT, SZ_CREATE_TRANSFER_RESULT_COUNT);
#undef SAME

/* The packet's private words (sumzero_packet_t.internal) hold integers as pointers. */
static_assert(sizeof(uintptr_t) == sizeof(uint64_t), "64-bit pointers");

#define ADDRESSES_MAX 16u                 /* addresses in options.addresses */
#define PIPELINE_LIMIT 64u                /* the largest pipeline_max we accept */
#define NS_PER_MS 1000000ull
/* Room for one whole reply frame plus the start of the next, so a recv() can always
 * make progress once the partial frame at the front has been moved to the start. */
#define RECEIVE_BUFFER_SIZE (SZ_FRAME_SIZE_MAX + 65536u)
#define NONE UINT32_MAX

typedef enum slot_state {
    SLOT_FREE = 0,
    SLOT_WAITING, /* built, to be written (first time or again) */
    SLOT_OUT,     /* written on the current connection, waiting for its reply */
    SLOT_BACKOFF, /* renumbered after BUSY and the like, waiting for retry_ns */
} slot_state_t;

/* One request: its frame, and the packets whose events it carries, in order. */
typedef struct slot {
    slot_state_t state;
    uint32_t operation;
    uint32_t event_count;
    uint32_t packet_count;
    uint32_t attempts;    /* sends after the first (resent, retried, resubmitted) */
    uint32_t reply_flags; /* SUMZERO_REPLY_* */
    int error_last;       /* why it was last sent again (returned when retries run out) */
    uint32_t reserved;
    sumzero_packet_t *packets; /* linked through packet_next() */
    const uint8_t *body;       /* buffer, or the only packet's own events */
    uint8_t *buffer;           /* SZ_FRAME_BODY_SIZE_MAX bytes, for merged bodies */
    uint64_t deadline_ns;      /* the earliest of its packets' deadlines */
    uint64_t sent_ns;          /* when it was fully written (OUT) */
    uint64_t retry_ns;         /* BACKOFF: when to send it again */
    sz_frame_header_t header;  /* sealed */
} slot_t;

typedef struct address {
    struct sockaddr_storage storage;
    socklen_t size;
} address_t;

typedef struct packet_queue {
    sumzero_packet_t *head;
    sumzero_packet_t *tail;
} packet_queue_t;

typedef enum connection_state {
    CONNECTION_CLOSED = 0,
    CONNECTION_CONNECTING,
    CONNECTION_OPEN,
} connection_state_t;

typedef struct client_counters {
    _Atomic uint64_t packets_submitted;
    _Atomic uint64_t packets_completed;
    _Atomic uint64_t requests_sent;
    _Atomic uint64_t requests_merged;
    _Atomic uint64_t events_sent;
    _Atomic uint64_t requests_resent;
    _Atomic uint64_t requests_resubmitted;
    _Atomic uint64_t replies_received;
    _Atomic uint64_t connects;
    _Atomic uint64_t connect_failures;
    _Atomic uint64_t timeouts;
} client_counters_t;

struct sumzero_client {
    /* Shared: under mutex. */
    pthread_mutex_t mutex;
    packet_queue_t submitted;
    bool closing;
    sz_u128 client_id; /* written by the I/O thread when request numbers run out */
    pthread_t thread;
    int wake_fd; /* eventfd: submissions are waiting, or closing */

    /* Read-only after open. */
    sz_u128 cluster_id;
    uint64_t request_timeout_ns;
    uint64_t connect_timeout_ns;
    uint64_t reply_timeout_ns;
    uint64_t backoff_min_ns;
    uint64_t backoff_max_ns;
    uint32_t retry_max; /* 0: no limit */
    uint32_t slot_count;
    uint32_t batch_events_max;
    uint32_t address_count;
    address_t addresses[ADDRESSES_MAX];

    /* I/O thread only. */
    connection_state_t connection;
    int fd;
    uint32_t address_index;
    uint32_t connect_failures;   /* in a row: connections that never got a reply */
    uint64_t connect_deadline_ns;
    uint64_t reconnect_ns;
    bool connect_attempted;
    uint64_t replies_on_connection;
    uint32_t request_number_next;
    uint32_t write_slot; /* the slot partly written, or NONE */
    size_t write_offset;
    uint8_t *receive;
    size_t receive_size;
    packet_queue_t pending;   /* submitted, not yet in a request; deadlines ascending */
    packet_queue_t completed; /* replies set, callbacks to run */
    uint64_t random_state;
    slot_t *slots;

    client_counters_t counters;
};

/* ---- small helpers ------------------------------------------------------------------ */

static uint64_t now_ns(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (uint64_t)time.tv_sec * 1000000000ull + (uint64_t)time.tv_nsec;
}

static void counter_add(_Atomic uint64_t *counter, uint64_t value) {
    atomic_fetch_add_explicit(counter, value, memory_order_relaxed);
}

/* The packet's private words: [0] next in a queue, [1] deadline, [2] event offset in its
 * request. */
static sumzero_packet_t *packet_next(const sumzero_packet_t *packet) {
    return (sumzero_packet_t *)packet->internal[0];
}
static void packet_next_set(sumzero_packet_t *packet, sumzero_packet_t *next) {
    packet->internal[0] = next;
}
static uint64_t packet_deadline_ns(const sumzero_packet_t *packet) {
    return (uint64_t)(uintptr_t)packet->internal[1];
}
static uint32_t packet_offset(const sumzero_packet_t *packet) {
    return (uint32_t)(uintptr_t)packet->internal[2];
}
static void packet_offset_set(sumzero_packet_t *packet, uint32_t offset) {
    packet->internal[2] = (void *)(uintptr_t)offset;
}

static void queue_push(packet_queue_t *queue, sumzero_packet_t *packet) {
    packet_next_set(packet, NULL);
    if (queue->tail == NULL) {
        queue->head = packet;
    } else {
        packet_next_set(queue->tail, packet);
    }
    queue->tail = packet;
}

static sumzero_packet_t *queue_pop(packet_queue_t *queue) {
    sumzero_packet_t *packet = queue->head;
    if (packet == NULL) return NULL;
    queue->head = packet_next(packet);
    if (queue->head == NULL) queue->tail = NULL;
    packet_next_set(packet, NULL);
    return packet;
}

static uint64_t random_next(sumzero_client_t *client) {
    /* xorshift64*: jitter only, never anything that must be unpredictable. */
    uint64_t x = client->random_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    client->random_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Doubling from backoff_min to backoff_max, then a random point in its upper half, so
 * that many clients cut off together do not come back together. */
static uint64_t backoff_ns(sumzero_client_t *client, uint32_t attempt) {
    uint32_t shift = attempt == 0 ? 0 : attempt - 1;
    if (shift > 20) shift = 20;
    uint64_t delay = client->backoff_min_ns << shift;
    if (delay > client->backoff_max_ns) delay = client->backoff_max_ns;
    return delay / 2 + random_next(client) % (delay / 2 + 1);
}

static bool operation_is_create(uint32_t operation) {
    return operation == SUMZERO_OPERATION_CREATE_ACCOUNTS ||
           operation == SUMZERO_OPERATION_CREATE_TRANSFERS;
}

static bool operation_is_lookup(uint32_t operation) {
    return operation == SUMZERO_OPERATION_LOOKUP_ACCOUNTS ||
           operation == SUMZERO_OPERATION_LOOKUP_TRANSFERS;
}

static bool operation_is_query(uint32_t operation) {
    return operation == SUMZERO_OPERATION_GET_ACCOUNT_TRANSFERS ||
           operation == SUMZERO_OPERATION_GET_ACCOUNT_BALANCES;
}

static bool on_io_thread(const sumzero_client_t *client) {
    return pthread_equal(pthread_self(), client->thread);
}

/* ---- names ------------------------------------------------------------------------ */

const char *sumzero_create_account_result_name(uint32_t result) {
    return sz_create_account_result_name(result);
}

const char *sumzero_create_transfer_result_name(uint32_t result) {
    return sz_create_transfer_result_name(result);
}

const char *sumzero_status_name(uint32_t status) {
    const char *name = sz_status_name(status);
    return name == NULL ? "unknown" : name;
}

const char *sumzero_operation_name(uint32_t operation) {
    if (operation < SUMZERO_OPERATION_CREATE_ACCOUNTS ||
        operation > SUMZERO_OPERATION_GET_ACCOUNT_BALANCES) {
        return "unknown";
    }
    return sz_operation_name(operation);
}

const char *sumzero_error_message(int error) {
    if (error == 0) return "ok";
    if (error <= -SUMZERO_ERROR_STATUS_BASE) {
        return sumzero_status_name(sumzero_error_status(error));
    }
    const char *description = error < 0 ? strerrordesc_np(-error) : NULL;
    return description == NULL ? "unknown error" : description;
}

char *sumzero_u128_format(sumzero_u128_t value, char *buffer) {
    return sz_u128_format(value, buffer);
}

int sumzero_u128_parse(const char *text, sumzero_u128_t *value_out) {
    return sz_u128_parse(text, value_out);
}

const char *sumzero_version(void) {
    return "0.1.0";
}

/* ---- completing packets ------------------------------------------------------------- */

/* Sets the packet's reply and queues its callback (run by callbacks_run()). */
static void packet_complete(sumzero_client_t *client, sumzero_packet_t *packet, int error,
                            uint32_t result_count, uint64_t op, uint64_t timestamp,
                            uint32_t flags) {
    SZ_ASSERT(error <= 0);
    SZ_ASSERT(error != 0 || result_count <= packet->result_capacity);
    packet->reply = (sumzero_reply_t){
        .error = error,
        .result_count = error == 0 ? result_count : 0,
        .op = error == 0 ? op : 0,
        .timestamp = error == 0 ? timestamp : 0,
        .flags = flags,
    };
    if (error == -ETIMEDOUT) counter_add(&client->counters.timeouts, 1);
    queue_push(&client->completed, packet);
}

/* Runs the queued callbacks. The next pointer is read before each callback: once it
 * starts, the packet is the caller's again (a synchronous caller may already be gone). */
static void callbacks_run(sumzero_client_t *client) {
    sumzero_packet_t *packet = client->completed.head;
    client->completed = (packet_queue_t){0};
    while (packet != NULL) {
        sumzero_packet_t *next = packet_next(packet);
        counter_add(&client->counters.packets_completed, 1);
        packet->callback(packet->context, packet);
        packet = next;
    }
}

static void slot_free(slot_t *slot) {
    SZ_ASSERT(slot->state != SLOT_FREE);
    slot->state = SLOT_FREE;
    slot->packets = NULL;
    slot->packet_count = 0;
    slot->event_count = 0;
    slot->body = NULL;
}

/* Every packet of the slot gets the same error; the slot is freed. */
static void request_fail(sumzero_client_t *client, slot_t *slot, int error) {
    SZ_ASSERT(error < 0);
    uint32_t slot_index = (uint32_t)(slot - client->slots);
    /* A frame half on the wire cannot be abandoned without losing the stream's framing;
     * the callers of request_fail() reset the connection first. */
    SZ_ASSERT(client->write_slot != slot_index);
    sumzero_packet_t *packet = slot->packets;
    while (packet != NULL) {
        sumzero_packet_t *next = packet_next(packet);
        packet_complete(client, packet, error, 0, 0, 0, slot->reply_flags);
        packet = next;
    }
    slot_free(slot);
}

static void pending_fail_all(sumzero_client_t *client, int error) {
    sumzero_packet_t *packet;
    while ((packet = queue_pop(&client->pending)) != NULL) {
        packet_complete(client, packet, error, 0, 0, 0, 0);
    }
}

/* ---- building requests -------------------------------------------------------------- */

/* A create packet whose last event is linked leaves a chain open: it must travel alone,
 * or the chain would run into the next caller's events. Flags sit at byte 118 of both
 * accounts and transfers, with linked as bit 0. */
static bool packet_mergeable(const sumzero_packet_t *packet) {
    if (operation_is_lookup(packet->operation)) return true;
    if (!operation_is_create(packet->operation)) return false;
    SZ_ASSERT(packet->event_count > 0);
    static_assert(offsetof(sz_account_t, flags) == offsetof(sz_transfer_t, flags), "flags");
    static_assert((int)SZ_ACCOUNT_LINKED == (int)SZ_TRANSFER_LINKED, "linked");
    const uint8_t *last =
        (const uint8_t *)packet->events + (size_t)(packet->event_count - 1) * 128u;
    uint16_t flags;
    memcpy(&flags, last + offsetof(sz_account_t, flags), sizeof(flags));
    return (flags & SZ_ACCOUNT_LINKED) == 0;
}

static uint32_t request_number_take(sumzero_client_t *client) {
    if (client->request_number_next == UINT32_MAX) {
        /* Request numbers ran out: become a new client for the server (its reply cache
         * then starts afresh for us). Frames already sealed keep the old id. */
        sz_u128 client_id = 0;
        while (client_id == 0) {
            client_id = ((sz_u128)random_next(client) << 64) | random_next(client);
        }
        pthread_mutex_lock(&client->mutex);
        client->client_id = client_id;
        pthread_mutex_unlock(&client->mutex);
        client->request_number_next = 1;
    }
    return client->request_number_next++;
}

/* Gives the slot's frame a new request number (and the current client id) and seals it
 * again: for a request the server refused as a whole, so nothing of it was applied. */
static void request_renumber(sumzero_client_t *client, slot_t *slot) {
    uint32_t request_number = request_number_take(client);
    pthread_mutex_lock(&client->mutex);
    slot->header.client_id = client->client_id;
    pthread_mutex_unlock(&client->mutex);
    slot->header.request_number = request_number;
    slot->header.trace_id = request_number;
    sz_frame_header_seal(&slot->header, slot->body);
    counter_add(&client->counters.requests_resubmitted, 1);
}

/* Copies the events of a merged request (or the filter of a query, its limit capped to
 * what the caller can hold) into the slot's buffer. */
static void request_body_fill(slot_t *slot) {
    sumzero_packet_t *first = slot->packets;
    uint32_t record_size = sz_operation_request_record_size(slot->operation);
    if (operation_is_query(slot->operation)) {
        sz_account_filter_t filter;
        memcpy(&filter, first->events, sizeof(filter));
        if (filter.limit > first->result_capacity) filter.limit = first->result_capacity;
        if (filter.limit > SZ_BATCH_EVENTS_MAX) filter.limit = SZ_BATCH_EVENTS_MAX;
        memcpy(slot->buffer, &filter, sizeof(filter));
        slot->body = slot->buffer;
    } else if (slot->packet_count == 1) {
        slot->body = first->events; /* borrowed until the callback: no copy needed */
    } else {
        for (sumzero_packet_t *packet = first; packet != NULL; packet = packet_next(packet)) {
            memcpy(slot->buffer + (size_t)packet_offset(packet) * record_size, packet->events,
                   (size_t)packet->event_count * record_size);
        }
        slot->body = slot->buffer;
    }
}

/* Takes the run of waiting packets that can share one request from the head of the
 * pending queue into the free slot, and seals the frame. */
static void request_build(sumzero_client_t *client, slot_t *slot) {
    SZ_ASSERT(slot->state == SLOT_FREE);
    SZ_ASSERT(client->pending.head != NULL);
    sumzero_packet_t *first = queue_pop(&client->pending);
    *slot = (slot_t){.buffer = slot->buffer, .operation = first->operation,
                     .packets = first, .packet_count = 1, .event_count = first->event_count,
                     .deadline_ns = packet_deadline_ns(first)};
    packet_offset_set(first, 0);
    sumzero_packet_t *last = first;
    if (packet_mergeable(first)) {
        sumzero_packet_t *next;
        while ((next = client->pending.head) != NULL && next->operation == slot->operation &&
               packet_mergeable(next) &&
               slot->event_count + next->event_count <= client->batch_events_max) {
            queue_pop(&client->pending);
            packet_offset_set(next, slot->event_count);
            packet_next_set(last, next);
            last = next;
            slot->event_count += next->event_count;
            slot->packet_count++;
            if (packet_deadline_ns(next) < slot->deadline_ns) {
                slot->deadline_ns = packet_deadline_ns(next);
            }
        }
    }
    request_body_fill(slot);

    uint32_t record_size = sz_operation_request_record_size(slot->operation);
    SZ_ASSERT(record_size != 0);
    uint32_t request_number = request_number_take(client);
    pthread_mutex_lock(&client->mutex);
    slot->header.client_id = client->client_id;
    pthread_mutex_unlock(&client->mutex);
    slot->header.cluster_id = client->cluster_id;
    slot->header.request_number = request_number;
    slot->header.trace_id = request_number;
    slot->header.command = SZ_COMMAND_REQUEST;
    slot->header.operation = (uint8_t)slot->operation;
    slot->header.body_size = slot->event_count * record_size;
    sz_frame_header_seal(&slot->header, slot->body);
    slot->state = SLOT_WAITING;

    counter_add(&client->counters.requests_sent, 1);
    counter_add(&client->counters.events_sent, slot->event_count);
    if (slot->packet_count > 1) counter_add(&client->counters.requests_merged, 1);
}

/* Fills every free slot from the pending queue (only while connected, so that packets
 * waiting out a reconnect can still merge). */
static void requests_build(sumzero_client_t *client) {
    for (uint32_t index = 0; index < client->slot_count && client->pending.head != NULL;
         index++) {
        if (client->slots[index].state == SLOT_FREE) request_build(client, &client->slots[index]);
    }
}

/* ---- the connection ----------------------------------------------------------------- */

/* Closes the connection and puts every request written on it (or being written) back to
 * WAITING, to be resent as the very same frame on the next connection; the server's reply
 * cache answers the last write, REQUEST_STALE the older ones (then resubmitted). */
static void connection_reset(sumzero_client_t *client, int error, uint64_t now) {
    SZ_ASSERT(error < 0);
    if (client->fd >= 0) close(client->fd);
    client->fd = -1;
    /* A connection that never got a reply counts as a failed attempt: a server that
     * accepts and closes at once must not make us reconnect in a tight loop. */
    if (client->connection == CONNECTION_OPEN && client->replies_on_connection > 0) {
        client->connect_failures = 0;
    } else {
        client->connect_failures++;
    }
    client->connection = CONNECTION_CLOSED;
    client->reconnect_ns = client->connect_failures == 0
                               ? now
                               : now + backoff_ns(client, client->connect_failures);
    client->receive_size = 0;
    uint32_t write_slot = client->write_slot;
    client->write_slot = NONE;
    client->write_offset = 0;
    for (uint32_t index = 0; index < client->slot_count; index++) {
        slot_t *slot = &client->slots[index];
        if (slot->state != SLOT_OUT && index != write_slot) continue;
        slot->state = SLOT_WAITING;
        slot->attempts++;
        slot->error_last = error;
        counter_add(&client->counters.requests_resent, 1);
        if (client->retry_max != 0 && slot->attempts > client->retry_max) {
            request_fail(client, slot, error);
        }
    }
}

/* Connection attempts failed retry_max times in a row: everything waiting fails with the
 * last error instead of waiting for its timeout. */
static void connection_give_up(sumzero_client_t *client, int error) {
    pending_fail_all(client, error);
    for (uint32_t index = 0; index < client->slot_count; index++) {
        slot_t *slot = &client->slots[index];
        if (slot->state != SLOT_FREE) request_fail(client, slot, error);
    }
    client->connect_failures = 0;
}

static void connection_failed(sumzero_client_t *client, int error, uint64_t now) {
    SZ_ASSERT(error < 0);
    counter_add(&client->counters.connect_failures, 1);
    if (client->fd >= 0) close(client->fd);
    client->fd = -1;
    client->connection = CONNECTION_CLOSED;
    client->connect_failures++;
    client->address_index = (client->address_index + 1) % client->address_count;
    client->reconnect_ns = now + backoff_ns(client, client->connect_failures);
    if (client->retry_max != 0 && client->connect_failures > client->retry_max) {
        connection_give_up(client, error);
    }
}

static void connection_opened(sumzero_client_t *client) {
    client->connection = CONNECTION_OPEN;
    client->replies_on_connection = 0;
    client->write_slot = NONE;
    client->write_offset = 0;
    client->receive_size = 0;
    counter_add(&client->counters.connects, 1);
}

static void connection_start(sumzero_client_t *client, uint64_t now) {
    SZ_ASSERT(client->connection == CONNECTION_CLOSED);
    SZ_ASSERT(client->fd < 0);
    client->connect_attempted = true;
    const address_t *address = &client->addresses[client->address_index];
    int fd = socket(address->storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connection_failed(client, -errno, now);
        return;
    }
    client->fd = fd;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&address->storage, address->size) == 0) {
        connection_opened(client);
    } else if (errno == EINPROGRESS) {
        client->connection = CONNECTION_CONNECTING;
        client->connect_deadline_ns = now + client->connect_timeout_ns;
    } else {
        connection_failed(client, -errno, now);
    }
}

/* A non-blocking connect finished (the socket became writable or errored). */
static void connection_connect_done(sumzero_client_t *client, uint64_t now) {
    int error = 0;
    socklen_t size = sizeof(error);
    if (getsockopt(client->fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0) error = errno;
    if (error != 0) {
        connection_failed(client, -error, now);
    } else {
        connection_opened(client);
    }
}

/* The WAITING slots in the order they go on the wire: the one partly written first (it is
 * always the lowest number still waiting), then by request number. */
static uint32_t write_order(const sumzero_client_t *client, uint32_t *order) {
    uint32_t count = 0;
    if (client->write_slot != NONE) order[count++] = client->write_slot;
    for (uint32_t index = 0; index < client->slot_count; index++) {
        if (client->slots[index].state != SLOT_WAITING || index == client->write_slot) continue;
        uint32_t position = count++;
        uint32_t number = client->slots[index].header.request_number;
        /* Insertion sort: at most PIPELINE_LIMIT slots. Numbers compare as a sequence
         * (wrapping), though wrapping also changes the client id. */
        while (position > (client->write_slot != NONE ? 1u : 0u) &&
               (int32_t)(client->slots[order[position - 1]].header.request_number - number) > 0) {
            order[position] = order[position - 1];
            position--;
        }
        order[position] = index;
    }
    return count;
}

/* Writes waiting frames, several per sendmsg(), until the socket is full. */
static int connection_write(sumzero_client_t *client, uint64_t now) {
    SZ_ASSERT(client->connection == CONNECTION_OPEN);
    for (;;) {
        uint32_t order[PIPELINE_LIMIT];
        uint32_t order_count = write_order(client, order);
        if (order_count == 0) return 0;
        struct iovec iov[2 * PIPELINE_LIMIT];
        uint32_t iov_count = 0;
        for (uint32_t position = 0; position < order_count; position++) {
            slot_t *slot = &client->slots[order[position]];
            size_t skip = position == 0 ? client->write_offset : 0;
            if (skip < sizeof(slot->header)) {
                iov[iov_count++] = (struct iovec){(uint8_t *)&slot->header + skip,
                                                  sizeof(slot->header) - skip};
                skip = 0;
            } else {
                skip -= sizeof(slot->header);
            }
            if (slot->header.body_size > skip) {
                iov[iov_count++] = (struct iovec){(void *)(slot->body + skip),
                                                  slot->header.body_size - skip};
            }
        }
        struct msghdr message = {.msg_iov = iov, .msg_iovlen = iov_count};
        ssize_t written = sendmsg(client->fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (written < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -errno;
        }
        size_t remaining = (size_t)written;
        for (uint32_t position = 0; position < order_count; position++) {
            slot_t *slot = &client->slots[order[position]];
            size_t frame_left = sizeof(slot->header) + slot->header.body_size -
                                (position == 0 ? client->write_offset : 0);
            if (remaining < frame_left) {
                client->write_slot = order[position];
                client->write_offset = (position == 0 ? client->write_offset : 0) + remaining;
                break;
            }
            remaining -= frame_left;
            slot->state = SLOT_OUT;
            slot->sent_ns = now;
            client->write_slot = NONE;
            client->write_offset = 0;
        }
    }
}

/* ---- replies ------------------------------------------------------------------------ */

/* Create results: ascending indexes into the whole request, split back to each packet
 * with its own indexes. Checked whole before anything is written. */
static int reply_split_creates(sumzero_client_t *client, slot_t *slot, const uint8_t *body,
                               uint32_t count, uint64_t op, uint64_t timestamp) {
    if (count > slot->event_count) return -EPROTO;
    sz_create_result_t result;
    for (uint32_t index = 0; index < count; index++) {
        memcpy(&result, body + (size_t)index * sizeof(result), sizeof(result));
        if (result.index >= slot->event_count) return -EPROTO;
        if (result.result == 0) return -EPROTO;
        if (index > 0) {
            uint32_t previous;
            memcpy(&previous, body + (size_t)(index - 1) * sizeof(result), sizeof(previous));
            if (previous >= result.index) return -EPROTO;
        }
    }
    uint32_t index = 0;
    for (sumzero_packet_t *packet = slot->packets; packet != NULL;) {
        sumzero_packet_t *next = packet_next(packet);
        uint32_t offset = packet_offset(packet);
        uint32_t result_count = 0;
        sumzero_create_result_t *results = packet->results;
        for (; index < count; index++) {
            memcpy(&result, body + (size_t)index * sizeof(result), sizeof(result));
            if (result.index >= offset + packet->event_count) break;
            results[result_count++] = (sumzero_create_result_t){result.index - offset,
                                                                 result.result};
        }
        packet_complete(client, packet, 0, result_count, op, timestamp + offset,
                        slot->reply_flags);
        packet = next;
    }
    return 0;
}

/* Lookup replies hold the records found, in request order, missing ids left out. Each
 * record is matched to the next requested id equal to its own (greedy is exact: if an id
 * is missing, every copy of it is). */
static int reply_split_lookups(sumzero_client_t *client, slot_t *slot, const uint8_t *body,
                               uint32_t count, uint64_t op) {
    if (count > slot->event_count) return -EPROTO;
    uint32_t position = 0; /* into the request's ids */
    for (uint32_t index = 0; index < count; index++) {
        sz_u128 id;
        memcpy(&id, body + (size_t)index * 128u, sizeof(id));
        while (position < slot->event_count &&
               memcmp(slot->body + (size_t)position * sizeof(sz_u128), &id, sizeof(id)) != 0) {
            position++;
        }
        if (position == slot->event_count) return -EPROTO;
        position++;
    }
    position = 0;
    uint32_t index = 0;
    for (sumzero_packet_t *packet = slot->packets; packet != NULL;) {
        sumzero_packet_t *next = packet_next(packet);
        uint32_t end = packet_offset(packet) + packet->event_count;
        uint32_t result_count = 0;
        for (; index < count; index++) {
            sz_u128 id;
            memcpy(&id, body + (size_t)index * 128u, sizeof(id));
            while (position < end && memcmp(slot->body + (size_t)position * sizeof(sz_u128),
                                            &id, sizeof(id)) != 0) {
                position++;
            }
            if (position == end) break; /* this record belongs to a later packet */
            memcpy((uint8_t *)packet->results + (size_t)result_count * 128u,
                   body + (size_t)index * 128u, 128u);
            result_count++;
            position++;
        }
        position = end;
        packet_complete(client, packet, 0, result_count, op, 0, slot->reply_flags);
        packet = next;
    }
    return 0;
}

/* An OK reply: the results go back to the packets and the slot is freed. */
static int reply_deliver(sumzero_client_t *client, slot_t *slot,
                         const sz_frame_header_t *header, const uint8_t *body) {
    uint32_t record_size = sz_operation_reply_record_size(slot->operation);
    SZ_ASSERT(record_size != 0);
    if (header->body_size % record_size != 0) return -EPROTO;
    uint32_t count = header->body_size / record_size;
    int error;
    if (operation_is_create(slot->operation)) {
        error = reply_split_creates(client, slot, body, count, header->op, header->timestamp);
    } else if (operation_is_lookup(slot->operation)) {
        error = reply_split_lookups(client, slot, body, count, header->op);
    } else {
        sumzero_packet_t *packet = slot->packets;
        sz_account_filter_t filter;
        memcpy(&filter, slot->body, sizeof(filter));
        if (count > filter.limit) return -EPROTO;
        SZ_ASSERT(count <= packet->result_capacity);
        memcpy(packet->results, body, (size_t)count * record_size);
        packet_complete(client, packet, 0, count, header->op, 0, slot->reply_flags);
        error = 0;
    }
    if (error == 0) slot_free(slot);
    return error;
}

static int status_error(uint32_t status) {
    return SUMZERO_ERROR_STATUS(status);
}

/* The server refused the request as a whole but asks to come back (nothing was applied):
 * new number, sent after a backoff. */
static void request_retry_later(sumzero_client_t *client, slot_t *slot, uint32_t status,
                                uint64_t now) {
    slot->attempts++;
    slot->error_last = status_error(status);
    if (client->retry_max != 0 && slot->attempts > client->retry_max) {
        request_fail(client, slot, slot->error_last);
        return;
    }
    request_renumber(client, slot);
    slot->state = SLOT_BACKOFF;
    slot->retry_ns = now + backoff_ns(client, slot->attempts);
}

/* REQUEST_STALE: the server has applied a later write of ours and no longer keeps this
 * one's reply. Send the same events under a new number; ids keep creates idempotent. */
static void request_resubmit(sumzero_client_t *client, slot_t *slot) {
    slot->attempts++;
    slot->error_last = status_error(SZ_STATUS_REQUEST_STALE);
    if (client->retry_max != 0 && slot->attempts > client->retry_max) {
        request_fail(client, slot, slot->error_last);
        return;
    }
    request_renumber(client, slot);
    slot->reply_flags |= SUMZERO_REPLY_RESUBMITTED;
    slot->state = SLOT_WAITING;
}

static slot_t *slot_find_out(sumzero_client_t *client, const sz_frame_header_t *header) {
    for (uint32_t index = 0; index < client->slot_count; index++) {
        slot_t *slot = &client->slots[index];
        if (slot->state == SLOT_OUT && slot->header.request_number == header->request_number &&
            slot->header.client_id == header->client_id) {
            return slot;
        }
    }
    return NULL;
}

/* One whole reply frame, already checked (header and body checksum). */
static void reply_process(sumzero_client_t *client, const sz_frame_header_t *header,
                          const uint8_t *body, uint64_t now) {
    slot_t *slot = slot_find_out(client, header);
    if (slot == NULL) return; /* the answer to a request given up on (timed out) */
    counter_add(&client->counters.replies_received, 1);
    client->replies_on_connection++;
    client->connect_failures = 0;
    if (header->operation != slot->operation) {
        request_fail(client, slot, -EPROTO);
        return;
    }
    switch (header->status) {
    case SZ_STATUS_OK: {
        int error = reply_deliver(client, slot, header, body);
        if (error != 0) request_fail(client, slot, error);
        return;
    }
    case SZ_STATUS_BUSY:
    case SZ_STATUS_RATE_LIMITED:
    case SZ_STATUS_SHUTTING_DOWN:
    case SZ_STATUS_UNAVAILABLE: request_retry_later(client, slot, header->status, now); return;
    case SZ_STATUS_REQUEST_STALE: request_resubmit(client, slot); return;
    default: request_fail(client, slot, status_error(header->status)); return;
    }
}

/* Parses every whole frame in the receive buffer. A frame that fails its checks means the
 * stream cannot be trusted: -EPROTO, and the caller resets the connection. */
static int replies_parse(sumzero_client_t *client, uint64_t now) {
    size_t offset = 0;
    while (client->receive_size - offset >= SZ_FRAME_HEADER_SIZE) {
        sz_frame_header_t header;
        memcpy(&header, client->receive + offset, sizeof(header));
        if (sz_frame_header_check(&header, SZ_COMMAND_REPLY, 0, false) != SZ_STATUS_OK) {
            return -EPROTO;
        }
        size_t frame_size = SZ_FRAME_HEADER_SIZE + header.body_size;
        if (client->receive_size - offset < frame_size) break;
        const uint8_t *body = client->receive + offset + SZ_FRAME_HEADER_SIZE;
        if (sz_frame_body_check(&header, body) != SZ_STATUS_OK) return -EPROTO;
        reply_process(client, &header, body, now);
        offset += frame_size;
    }
    if (offset > 0) {
        memmove(client->receive, client->receive + offset, client->receive_size - offset);
        client->receive_size -= offset;
    }
    return 0;
}

static int connection_read(sumzero_client_t *client, uint64_t now) {
    for (;;) {
        SZ_ASSERT(client->receive_size < RECEIVE_BUFFER_SIZE);
        ssize_t size = recv(client->fd, client->receive + client->receive_size,
                            RECEIVE_BUFFER_SIZE - client->receive_size, MSG_DONTWAIT);
        if (size == 0) return -ECONNRESET;
        if (size < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -errno;
        }
        client->receive_size += (size_t)size;
        int error = replies_parse(client, now);
        if (error != 0) return error;
        callbacks_run(client);
        if (client->connection != CONNECTION_OPEN) return 0;
    }
}

/* ---- the I/O thread ----------------------------------------------------------------- */

/* Moves submitted packets to the pending queue; packets without events are answered at
 * once. Returns true when the client is closing. */
static bool submissions_take(sumzero_client_t *client) {
    pthread_mutex_lock(&client->mutex);
    sumzero_packet_t *packet = client->submitted.head;
    client->submitted = (packet_queue_t){0};
    bool closing = client->closing;
    pthread_mutex_unlock(&client->mutex);
    while (packet != NULL) {
        sumzero_packet_t *next = packet_next(packet);
        if (packet->event_count == 0) {
            packet_complete(client, packet, 0, 0, 0, 0, 0);
        } else {
            queue_push(&client->pending, packet);
        }
        packet = next;
    }
    return closing;
}

/* Request timeouts: packets still waiting for a slot (their deadlines ascend), and whole
 * requests (at their earliest packet's deadline). */
static void timeouts_check(sumzero_client_t *client, uint64_t now) {
    while (client->pending.head != NULL && packet_deadline_ns(client->pending.head) <= now) {
        packet_complete(client, queue_pop(&client->pending), -ETIMEDOUT, 0, 0, 0, 0);
    }
    for (uint32_t index = 0; index < client->slot_count; index++) {
        slot_t *slot = &client->slots[index];
        if (slot->state == SLOT_FREE || slot->deadline_ns > now) continue;
        if (client->write_slot == index) connection_reset(client, -ETIMEDOUT, now);
        if (slot->state != SLOT_FREE) request_fail(client, slot, -ETIMEDOUT);
    }
    for (uint32_t index = 0; index < client->slot_count; index++) {
        slot_t *slot = &client->slots[index];
        if (slot->state == SLOT_BACKOFF && slot->retry_ns <= now) slot->state = SLOT_WAITING;
        if (slot->state == SLOT_OUT && now - slot->sent_ns >= client->reply_timeout_ns &&
            client->connection == CONNECTION_OPEN) {
            /* No reply for too long on a live socket (a stopped or wedged server). */
            connection_reset(client, -ETIMEDOUT, now);
        }
    }
    if (client->connection == CONNECTION_CONNECTING && client->connect_deadline_ns <= now) {
        connection_failed(client, -ETIMEDOUT, now);
    }
}

static bool work_exists(const sumzero_client_t *client) {
    if (client->pending.head != NULL) return true;
    for (uint32_t index = 0; index < client->slot_count; index++) {
        if (client->slots[index].state != SLOT_FREE) return true;
    }
    return false;
}

static bool write_wanted(const sumzero_client_t *client) {
    if (client->write_slot != NONE) return true;
    for (uint32_t index = 0; index < client->slot_count; index++) {
        if (client->slots[index].state == SLOT_WAITING) return true;
    }
    return false;
}

static void earliest(uint64_t *next_ns, uint64_t candidate_ns) {
    if (candidate_ns < *next_ns) *next_ns = candidate_ns;
}

/* Milliseconds until the next deadline of any kind, -1 for none. */
static int poll_timeout_ms(const sumzero_client_t *client, uint64_t now) {
    uint64_t next_ns = UINT64_MAX;
    if (client->pending.head != NULL) earliest(&next_ns, packet_deadline_ns(client->pending.head));
    for (uint32_t index = 0; index < client->slot_count; index++) {
        const slot_t *slot = &client->slots[index];
        if (slot->state == SLOT_FREE) continue;
        earliest(&next_ns, slot->deadline_ns);
        if (slot->state == SLOT_BACKOFF) earliest(&next_ns, slot->retry_ns);
        if (slot->state == SLOT_OUT) earliest(&next_ns, slot->sent_ns + client->reply_timeout_ns);
    }
    if (client->connection == CONNECTION_CONNECTING) {
        earliest(&next_ns, client->connect_deadline_ns);
    }
    if (client->connection == CONNECTION_CLOSED && work_exists(client)) {
        earliest(&next_ns, client->reconnect_ns);
    }
    if (next_ns == UINT64_MAX) return -1;
    if (next_ns <= now) return 0;
    uint64_t timeout_ms = (next_ns - now + NS_PER_MS - 1) / NS_PER_MS;
    return timeout_ms > 60000 ? 60000 : (int)timeout_ms;
}

/* Everything the loop does between two polls, given what poll reported. */
static void io_step(sumzero_client_t *client, short events, uint64_t now) {
    if (client->connection == CONNECTION_CONNECTING && (events & (POLLOUT | POLLERR | POLLHUP))) {
        connection_connect_done(client, now);
    }
    if (client->connection == CONNECTION_OPEN && (events & (POLLIN | POLLERR | POLLHUP))) {
        int error = connection_read(client, now);
        if (error != 0) connection_reset(client, error, now);
    }
    timeouts_check(client, now);
    if (client->connection == CONNECTION_CLOSED && now >= client->reconnect_ns &&
        (work_exists(client) || !client->connect_attempted)) {
        connection_start(client, now);
    }
    if (client->connection == CONNECTION_OPEN) {
        requests_build(client);
        int error = connection_write(client, now);
        if (error != 0) connection_reset(client, error, now);
    }
    callbacks_run(client);
}

static void io_close_all(sumzero_client_t *client) {
    if (client->write_slot != NONE) connection_reset(client, -ECANCELED, now_ns());
    pending_fail_all(client, -ECANCELED);
    for (uint32_t index = 0; index < client->slot_count; index++) {
        if (client->slots[index].state != SLOT_FREE) {
            request_fail(client, &client->slots[index], -ECANCELED);
        }
    }
    callbacks_run(client);
    if (client->fd >= 0) close(client->fd);
    client->fd = -1;
}

static void *io_thread_run(void *argument) {
    sumzero_client_t *client = argument;
    short events = 0;
    for (;;) {
        if (submissions_take(client)) break;
        io_step(client, events, now_ns());
        struct pollfd fds[2] = {{.fd = client->wake_fd, .events = POLLIN}, {.fd = -1}};
        if (client->connection == CONNECTION_CONNECTING) {
            fds[1] = (struct pollfd){.fd = client->fd, .events = POLLOUT};
        } else if (client->connection == CONNECTION_OPEN) {
            fds[1] = (struct pollfd){.fd = client->fd,
                                     .events = POLLIN | (write_wanted(client) ? POLLOUT : 0)};
        }
        /* Submissions that arrived during the step (from callbacks) need no sleep. */
        pthread_mutex_lock(&client->mutex);
        bool submitted = client->submitted.head != NULL || client->closing;
        pthread_mutex_unlock(&client->mutex);
        int timeout_ms = submitted ? 0 : poll_timeout_ms(client, now_ns());
        int ready = poll(fds, 2, timeout_ms);
        events = ready > 0 ? fds[1].revents : 0;
        if (ready > 0 && (fds[0].revents & POLLIN)) {
            uint64_t value;
            if (read(client->wake_fd, &value, sizeof(value)) < 0) {
                SZ_ASSERT(errno == EAGAIN || errno == EINTR);
            }
        }
    }
    io_close_all(client);
    return NULL;
}

/* ---- open and close ------------------------------------------------------------------ */

/* "HOST:PORT", "[V6]:PORT" or "PORT", resolved to the first stream address. */
static int address_resolve(const char *text, size_t length, address_t *address_out) {
    char host[256];
    char port[16];
    const char *colon = NULL;
    for (size_t index = 0; index < length; index++) {
        if (text[index] == ':') colon = text + index;
    }
    size_t host_length = colon == NULL ? 0 : (size_t)(colon - text);
    const char *port_text = colon == NULL ? text : colon + 1;
    size_t port_length = length - (size_t)(port_text - text);
    if (host_length > 1 && text[0] == '[' && text[host_length - 1] == ']') {
        text++;
        host_length -= 2;
    }
    if (host_length >= sizeof(host) || port_length == 0 || port_length >= sizeof(port)) {
        return -EINVAL;
    }
    for (size_t index = 0; index < port_length; index++) {
        if (port_text[index] < '0' || port_text[index] > '9') return -EINVAL;
    }
    memcpy(host, text, host_length);
    host[host_length] = '\0';
    memcpy(port, port_text, port_length);
    port[port_length] = '\0';
    if (atoi(port) > 65535) return -EINVAL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *result = NULL;
    int rc = getaddrinfo(host_length == 0 ? "127.0.0.1" : host, port, &hints, &result);
    if (rc != 0 || result == NULL) return rc == EAI_MEMORY ? -ENOMEM : -EHOSTUNREACH;
    SZ_ASSERT(result->ai_addrlen <= sizeof(address_out->storage));
    memcpy(&address_out->storage, result->ai_addr, result->ai_addrlen);
    address_out->size = result->ai_addrlen;
    freeaddrinfo(result);
    return 0;
}

static int addresses_resolve(sumzero_client_t *client, const char *addresses) {
    if (addresses == NULL) addresses = "127.0.0.1:3000";
    const char *cursor = addresses;
    for (;;) {
        const char *end = strchr(cursor, ',');
        size_t length = end == NULL ? strlen(cursor) : (size_t)(end - cursor);
        if (length == 0 || client->address_count == ADDRESSES_MAX) return -EINVAL;
        int error = address_resolve(cursor, length, &client->addresses[client->address_count]);
        if (error != 0) return error;
        client->address_count++;
        if (end == NULL) return 0;
        cursor = end + 1;
    }
}

static uint64_t option_ms(uint32_t value_ms, uint32_t default_ms) {
    return (uint64_t)(value_ms == 0 ? default_ms : value_ms) * NS_PER_MS;
}

static int options_apply(sumzero_client_t *client, const sumzero_client_options_t *options) {
    for (size_t index = 0; index < sizeof(options->reserved); index++) {
        if (options->reserved[index] != 0) return -EINVAL;
    }
    if (options->pipeline_max > PIPELINE_LIMIT) return -EINVAL;
    client->cluster_id = options->cluster_id;
    client->request_timeout_ns = option_ms(options->request_timeout_ms, 30000);
    client->connect_timeout_ns = option_ms(options->connect_timeout_ms, 5000);
    client->reply_timeout_ns = option_ms(options->reply_timeout_ms, 10000);
    client->backoff_min_ns = option_ms(options->backoff_min_ms, 10);
    client->backoff_max_ns = option_ms(options->backoff_max_ms, 1000);
    if (client->backoff_max_ns < client->backoff_min_ns) {
        client->backoff_max_ns = client->backoff_min_ns;
    }
    client->retry_max = options->retry_max;
    client->slot_count = options->pipeline_max == 0 ? 4 : options->pipeline_max;
    client->batch_events_max = options->batch_events_max == 0 ||
                                       options->batch_events_max > SZ_BATCH_EVENTS_MAX
                                   ? SZ_BATCH_EVENTS_MAX
                                   : options->batch_events_max;
    return addresses_resolve(client, options->addresses);
}

static int random_fill(void *buffer, size_t size) {
    uint8_t *bytes = buffer;
    while (size > 0) {
        ssize_t got = getrandom(bytes, size, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        bytes += got;
        size -= (size_t)got;
    }
    return 0;
}

static void client_free(sumzero_client_t *client) {
    if (client->slots != NULL) {
        for (uint32_t index = 0; index < client->slot_count; index++) {
            free(client->slots[index].buffer);
        }
    }
    free(client->slots);
    free(client->receive);
    if (client->wake_fd >= 0) close(client->wake_fd);
    pthread_mutex_destroy(&client->mutex);
    free(client);
}

static int client_allocate(sumzero_client_t *client) {
    client->receive = malloc(RECEIVE_BUFFER_SIZE);
    client->slots = calloc(client->slot_count, sizeof(slot_t));
    if (client->receive == NULL || client->slots == NULL) return -ENOMEM;
    for (uint32_t index = 0; index < client->slot_count; index++) {
        client->slots[index].buffer = malloc(SZ_FRAME_BODY_SIZE_MAX);
        if (client->slots[index].buffer == NULL) return -ENOMEM;
    }
    client->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (client->wake_fd < 0) return -errno;
    return 0;
}

int sumzero_client_open(sumzero_client_t **client_out, const sumzero_client_options_t *options) {
    if (client_out == NULL) return -EINVAL;
    *client_out = NULL;
    sumzero_client_options_t defaults = {0};
    if (options == NULL) options = &defaults;
    sumzero_client_t *client = calloc(1, sizeof(*client));
    if (client == NULL) return -ENOMEM;
    client->fd = -1;
    client->wake_fd = -1;
    client->write_slot = NONE;
    client->request_number_next = 1;
    pthread_mutex_init(&client->mutex, NULL);
    int error = options_apply(client, options);
    if (error == 0) error = client_allocate(client);
    if (error == 0) error = random_fill(&client->client_id, sizeof(client->client_id));
    if (error == 0) error = random_fill(&client->random_state, sizeof(client->random_state));
    if (error != 0) goto fail;
    if (client->client_id == 0) client->client_id = 1; /* one chance in 2^128 */
    client->random_state |= 1; /* xorshift must not start at 0 */
    error = -pthread_create(&client->thread, NULL, io_thread_run, client);
    if (error != 0) goto fail;
    *client_out = client;
    return 0;
fail:
    client_free(client);
    return error;
}

void sumzero_client_close(sumzero_client_t *client) {
    if (client == NULL) return;
    if (on_io_thread(client)) {
        fprintf(stderr, "libsumzero: sumzero_client_close() called from a callback\n");
        abort();
    }
    pthread_mutex_lock(&client->mutex);
    client->closing = true;
    pthread_mutex_unlock(&client->mutex);
    uint64_t one = 1;
    if (write(client->wake_fd, &one, sizeof(one)) < 0) SZ_ASSERT(errno == EAGAIN);
    int error = pthread_join(client->thread, NULL);
    SZ_ASSERT(error == 0);
    client_free(client);
}

sumzero_u128_t sumzero_client_id(const sumzero_client_t *client) {
    sumzero_client_t *mutable_client = (sumzero_client_t *)client;
    pthread_mutex_lock(&mutable_client->mutex);
    sz_u128 client_id = client->client_id;
    pthread_mutex_unlock(&mutable_client->mutex);
    return client_id;
}

void sumzero_client_stats(const sumzero_client_t *client, sumzero_client_stats_t *stats_out) {
    const client_counters_t *counters = &client->counters;
#define LOAD(field) atomic_load_explicit(&counters->field, memory_order_relaxed)
    *stats_out = (sumzero_client_stats_t){
        .packets_submitted = LOAD(packets_submitted),
        .packets_completed = LOAD(packets_completed),
        .requests_sent = LOAD(requests_sent),
        .requests_merged = LOAD(requests_merged),
        .events_sent = LOAD(events_sent),
        .requests_resent = LOAD(requests_resent),
        .requests_resubmitted = LOAD(requests_resubmitted),
        .replies_received = LOAD(replies_received),
        .connects = LOAD(connects),
        .connect_failures = LOAD(connect_failures),
        .timeouts = LOAD(timeouts),
    };
#undef LOAD
}

/* ---- submitting ---------------------------------------------------------------------- */

static int packet_check(const sumzero_packet_t *packet) {
    uint32_t operation = packet->operation;
    if (operation < SUMZERO_OPERATION_CREATE_ACCOUNTS ||
        operation > SUMZERO_OPERATION_GET_ACCOUNT_BALANCES) {
        return -EINVAL;
    }
    if (packet->callback == NULL || packet->reserved_in != 0) return -EINVAL;
    if (packet->event_count > SUMZERO_BATCH_EVENTS_MAX) return -EMSGSIZE;
    if (packet->event_count > 0 && (packet->events == NULL || packet->results == NULL)) {
        return -EINVAL;
    }
    if (operation_is_query(operation)) {
        if (packet->event_count != 1 || packet->result_capacity == 0) return -EINVAL;
    } else if (packet->result_capacity < packet->event_count) {
        return -EINVAL;
    }
    return 0;
}

int sumzero_submit(sumzero_client_t *client, sumzero_packet_t *packet) {
    if (client == NULL || packet == NULL) return -EINVAL;
    int error = packet_check(packet);
    if (error != 0) return error;
    packet->reply = (sumzero_reply_t){0};
    memset(packet->internal, 0, sizeof(packet->internal));
    pthread_mutex_lock(&client->mutex);
    if (client->closing) {
        pthread_mutex_unlock(&client->mutex);
        return -ECANCELED;
    }
    /* Read the clock under the lock, so deadlines ascend in queue order (the I/O thread
     * only ever checks the head of the queue). */
    packet->internal[1] = (void *)(uintptr_t)(now_ns() + client->request_timeout_ns);
    bool was_empty = client->submitted.head == NULL;
    queue_push(&client->submitted, packet);
    pthread_mutex_unlock(&client->mutex);
    counter_add(&client->counters.packets_submitted, 1);
    /* The I/O thread checks the queue again before it sleeps; others must wake it. */
    if (was_empty && !on_io_thread(client)) {
        uint64_t one = 1;
        if (write(client->wake_fd, &one, sizeof(one)) < 0) SZ_ASSERT(errno == EAGAIN);
    }
    return 0;
}

/* ---- synchronous calls ------------------------------------------------------------------ */

typedef struct waiter {
    _Atomic uint32_t done;
} waiter_t;

/* Runs on the I/O thread. After the store the caller may return at once, so nothing here
 * touches the packet or the waiter afterwards (a futex wake on a dead address is
 * harmless: waiters always check their word again). */
static void waiter_wake(void *context, sumzero_packet_t *packet) {
    (void)packet;
    waiter_t *waiter = context;
    atomic_store_explicit(&waiter->done, 1, memory_order_release);
    syscall(SYS_futex, &waiter->done, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static int call(sumzero_client_t *client, uint32_t operation, const void *events,
                uint32_t event_count, void *results, uint32_t result_capacity,
                uint32_t *result_count_out) {
    if (result_count_out != NULL) *result_count_out = 0;
    if (client == NULL) return -EINVAL;
    if (on_io_thread(client)) return -EDEADLK;
    waiter_t waiter = {0};
    sumzero_packet_t packet = {
        .operation = operation,
        .event_count = event_count,
        .events = events,
        .results = results,
        .result_capacity = result_capacity,
        .callback = waiter_wake,
        .context = &waiter,
    };
    int error = sumzero_submit(client, &packet);
    if (error != 0) return error;
    while (atomic_load_explicit(&waiter.done, memory_order_acquire) == 0) {
        syscall(SYS_futex, &waiter.done, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    }
    if (result_count_out != NULL) *result_count_out = packet.reply.result_count;
    return packet.reply.error;
}

int sumzero_create_accounts(sumzero_client_t *client, const sumzero_account_t *accounts,
                            uint32_t account_count, sumzero_create_result_t *results_out,
                            uint32_t *result_count_out) {
    return call(client, SUMZERO_OPERATION_CREATE_ACCOUNTS, accounts, account_count, results_out,
                account_count, result_count_out);
}

int sumzero_create_transfers(sumzero_client_t *client, const sumzero_transfer_t *transfers,
                             uint32_t transfer_count, sumzero_create_result_t *results_out,
                             uint32_t *result_count_out) {
    return call(client, SUMZERO_OPERATION_CREATE_TRANSFERS, transfers, transfer_count,
                results_out, transfer_count, result_count_out);
}

int sumzero_lookup_accounts(sumzero_client_t *client, const sumzero_u128_t *ids,
                            uint32_t id_count, sumzero_account_t *accounts_out,
                            uint32_t *account_count_out) {
    return call(client, SUMZERO_OPERATION_LOOKUP_ACCOUNTS, ids, id_count, accounts_out, id_count,
                account_count_out);
}

int sumzero_lookup_transfers(sumzero_client_t *client, const sumzero_u128_t *ids,
                             uint32_t id_count, sumzero_transfer_t *transfers_out,
                             uint32_t *transfer_count_out) {
    return call(client, SUMZERO_OPERATION_LOOKUP_TRANSFERS, ids, id_count, transfers_out,
                id_count, transfer_count_out);
}

int sumzero_get_account_transfers(sumzero_client_t *client,
                                  const sumzero_account_filter_t *filter,
                                  sumzero_transfer_t *transfers_out, uint32_t transfer_capacity,
                                  uint32_t *transfer_count_out) {
    return call(client, SUMZERO_OPERATION_GET_ACCOUNT_TRANSFERS, filter, 1, transfers_out,
                transfer_capacity, transfer_count_out);
}

int sumzero_get_account_balances(sumzero_client_t *client,
                                 const sumzero_account_filter_t *filter,
                                 sumzero_account_balance_t *balances_out,
                                 uint32_t balance_capacity, uint32_t *balance_count_out) {
    return call(client, SUMZERO_OPERATION_GET_ACCOUNT_BALANCES, filter, 1, balances_out,
                balance_capacity, balance_count_out);
}
