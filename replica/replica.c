/* replica.c: the ledger thread of DESIGN.md, a cluster of one. It takes checked requests
 * from the request ring, gives each write an op number and a timestamp, journals it by
 * group commit, applies it once it is durable, and pushes every reply back in the order
 * the requests were popped. Between two applied ops it forks a child that writes a
 * snapshot; at open it recovers from the newest valid snapshot and the journal after it
 * (sections "Snapshots: taking them" and "Recovery from snapshots").
 *
 * Design notes
 * - One FIFO of slots, in pop order, with four cursors (all u64, never wrapping):
 *       slot_pushed <= slot_answered <= slot_sequenced <= slot_popped
 *   [pushed, answered): reply written, waiting for room in the reply ring;
 *   [answered, sequenced): decided (journaled, or classified as a read, a cached retry or
 *   a refusal), waiting for their turn; [sequenced, popped): popped but not yet journaled
 *   because the journal's window and buffer were full (-EAGAIN). Ops are handed out in
 *   slot order, so answering slots in order is applying ops in op order. Expire ops are
 *   slots without a message. The FIFO holds at least twice the request ring's capacity,
 *   and the gateway never has more messages out than that, so popping is bounded by the
 *   FIFO's room (backpressure, never loss): a message stays in the request ring until
 *   there is a slot for it.
 * - Sequencing a write: reply cache (retry, conflict, stale) first, then capacity counting
 *   every op not yet applied at its worst case (sz_ledger_capacity_check_reserved), then
 *   T = max(last timestamp handed out + 1, clock). What is journaled can then never be
 *   refused at apply, nor at replay. The body is appended straight from message->request
 *   (the journal's copy into its group-commit buffer is the only copy of a body).
 * - Group commit: each pass pops everything available, appends all of it and submits once;
 *   the journal also submits whatever accumulated when a slot of its window frees.
 * - Apply: on_durable only records op_durable; the loop then applies ready slots straight
 *   from the request body into the reply body, at most about one full batch per pass, so
 *   new requests get journaled between two long applies (the disk works while we apply).
 * - Reply cache: per client, the newest write sequenced (request number, body checksum,
 *   how many still in flight) and the reply of the newest write applied (op, T and the
 *   non-ok results). An exact retry waits in the FIFO behind the original and is answered
 *   from the cache at its turn; entries referenced by slots are pinned so LRU eviction
 *   never takes them. Rebuilt at open from a snapshot's sessions section and the journal
 *   after it (or the whole journal). Result copies are allocated on
 *   demand, bounded in total by CACHE_RESULTS_SIZE_MAX.
 * - Waiting: with journal writes in flight the loop polls the journal without blocking
 *   between ring checks (a write completes in about 0.4 ms, a futex wake-up costs 22 us),
 *   yielding the core between polls so the io_uring worker that runs fdatasync gets it;
 *   with nothing in flight and nothing to answer it spins briefly on the request ring,
 *   then sleeps on its futex until a push, sz_replica_stop(), or the next expiry.
 *
 *   a request's life (one slot)
 *
 *   ring --pop--> [popped] --journal full (-EAGAIN)--> [popped] (again next pass)
 *                    |
 *                    +--write that fits: op k, T, append--> [sequenced/appended]
 *                    |                                            | submit (group commit)
 *                    |                                            v
 *                    |        no reply; run returns <--fails-- [submitted]
 *                    |                                            | on_durable(>= k)
 *                    |                                            v
 *                    |                                        [durable]
 *                    |                                            | its turn (every slot
 *                    |                                            v before it answered)
 *                    |                                        [applied] --push--> [replied]
 *                    |                                                               ^
 *                    +--read, zero events, exact retry--> [waiting for commit] ------+
 *                    |                                            its turn: run, answer
 *                    +--stale, conflict, *_full, exhausted--> [refused] -------------+
 *                                                                 its turn: status
 *
 *   transitions, with the function that takes each
 *   [ring] --replica_intake: sz_ring_pop--> [popped]
 *   [popped] --replica_sequence: journal full (-EAGAIN)--> [popped] (retried next pass)
 *   [popped] --replica_sequence: create_* with events, fits--> [appended] (op k, T)
 *   [popped] --replica_sequence: read, zero events--> [waiting for commit]
 *   [popped] --replica_sequence: exact retry--> [waiting for commit] (cache pinned)
 *   [popped] --replica_sequence: stale, conflict, *_full, timestamp exhausted--> [refused]
 *   [appended] --sz_journal_submit / sz_journal_poll--> [submitted]
 *   [submitted] --on_durable(op_durable >= k)--> [durable]
 *   [durable] --replica_answer, every earlier slot answered: replica_apply_write--> [applied]
 *   [waiting for commit] --replica_answer, every earlier slot answered--> [answered]
 *   [refused] --replica_answer, every earlier slot answered--> [answered]
 *   [applied] and [answered] --replica_push: sz_ring_push, replies_pushed()--> [replied]
 *   [submitted] --journal write or fdatasync fails--> (sz_replica_run returns the error;
 *                                                      no reply, ever)
 *
 *   the loop (sz_replica_run)
 *
 *   [running] --sz_replica_run: stop seen; take what the ring holds now--> [draining]
 *   [draining] --sz_replica_run: every slot pushed, journal flushed--> [returned 0]
 *   [running], [draining] --replica_fail: journal error--> [returned error]
 *                                         (what was durable is answered first)
 *   [returned 0] --sz_replica_run--> [running]
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "replica.h"
#include "journal/retention.h"
#include "snapshot/snapshot.h"

#define CLIENTS_DEFAULT 1024u
/* Each entry costs ~100 bytes plus its results; a million clients is far past a server's
 * connection limit. */
#define CLIENTS_MAX (1u << 20)
#define CACHE_NONE UINT32_MAX
/* Result copies in the reply cache, all clients together: 1024 clients with 8190 failures
 * each fit; beyond it a reply is not cached (its retry is applied again: ids make creates
 * idempotent). */
#define CACHE_RESULTS_SIZE_MAX (64ull << 20)
#define SLOT_COUNT_MIN 256u
/* 65536 slots of 48 bytes: far more messages than a gateway pool holds (2 MiB each). */
#define SLOT_COUNT_MAX 65536u
/* Work per pass before looking at the ring and the journal again: one full batch. */
#define ANSWER_EVENTS_PER_PASS SZ_BATCH_EVENTS_MAX
/* Spin this long on the request ring before sleeping (a wake-up costs ~22 us). */
#define IDLE_SPIN_NS 50000ull
/* Pause-spin this long on the journal before yielding the core between polls. */
#define JOURNAL_SPIN_NS 20000ull
/* Sleep at most this long while an expiry is pending: bounds the error of a clock step. */
#define IDLE_SLEEP_EXPIRY_NS_MAX 1000000000ull
#define REPLY_WAIT_NS 1000000ull
#define NS_PER_US 1000ull
#define NS_PER_MS 1000000ull
/* A running snapshot child is looked at (waitpid) at most this often while busy, and the
 * idle loop sleeps at most SNAPSHOT_REAP_IDLE_NS while one runs. */
#define SNAPSHOT_REAP_INTERVAL_NS 1000000ull
#define SNAPSHOT_REAP_IDLE_NS 10000000ull
#define SNAPSHOT_KEEP_DEFAULT 3u
/* The child's nice value: a tenth of a full-weight thread's share under contention. */
#define SNAPSHOT_CHILD_NICE 10
/* Pruning keeps at most this many: the child lists them on its stack. */
#define SNAPSHOT_KEEP_MAX 1000u
/* Snapshots looked at by recovery, newest first: pruning keeps far fewer. */
#define SNAPSHOT_LIST_MAX 256u

typedef enum slot_kind {
    SLOT_NEW = 0,     /* popped, not yet sequenced */
    SLOT_WRITE = 1,   /* journaled create_*: applied once durable */
    SLOT_EXPIRE = 2,  /* journaled expire_pending, no message */
    SLOT_READ = 3,    /* lookup_*, get_account_*, creates of zero events */
    SLOT_CACHED = 4,  /* exact retry: the cached reply */
    SLOT_REFUSED = 5, /* a status and an empty body */
} slot_kind_t;

typedef struct replica_slot {
    sz_message_t *message; /* NULL for expire ops and once pushed */
    uint64_t op;           /* journaled slots */
    uint64_t timestamp;    /* T */
    uint64_t appended_ns;  /* CLOCK_MONOTONIC, for commit latency */
    sz_u128 chain_head;    /* journaled slots: checksum_header of the op's entry */
    uint32_t kind;
    uint32_t status;       /* SLOT_REFUSED */
    uint32_t event_count;
    uint32_t cache_index;  /* CACHE_NONE or a pinned entry */
} replica_slot_t;

typedef struct cache_entry {
    sz_u128 client_id; /* 0: never used */
    /* The newest write sequenced for this client. */
    sz_u128 checksum_body;
    uint32_t request_number;
    uint32_t writes_in_flight;
    uint32_t pin_count; /* slots that will read this entry */
    /* The reply of the newest write applied. */
    bool reply_valid;
    sz_u128 reply_checksum_body; /* its request's, for a snapshot's sessions */
    uint32_t reply_request_number;
    uint64_t reply_op;
    uint64_t reply_timestamp;
    sz_create_result_t *results;
    uint32_t result_count;
    uint32_t result_capacity;
    /* Index and LRU links (CACHE_NONE ends). */
    uint64_t hash;
    uint32_t lru_previous; /* toward the most recent */
    uint32_t lru_next;     /* toward the least recent */
} cache_entry_t;

typedef struct replica_cache {
    cache_entry_t *entries;
    uint32_t entry_count;
    uint32_t entry_max;
    uint32_t *index; /* entry indexes by client id, linear probing; CACHE_NONE = empty */
    uint64_t index_mask;
    uint32_t lru_head; /* most recent */
    uint32_t lru_tail;
    uint64_t results_size; /* bytes of result capacity allocated */
} replica_cache_t;

struct sz_replica {
    sz_replica_config_t config;
    sz_ledger_t *ledger;
    sz_journal_t *journal;
    sz_metrics_t *metrics;
    sz_u128 cluster_id;

    replica_slot_t *slots;
    uint64_t slot_count; /* a power of two */
    uint64_t slot_pushed;
    uint64_t slot_answered;
    uint64_t slot_sequenced;
    uint64_t slot_popped;
    sz_message_t **push_batch; /* slot_count pointers */

    uint64_t op_last;        /* last op appended (recovered at open) */
    uint64_t op_durable;     /* from on_durable */
    uint64_t op_committed;   /* last op applied */
    uint64_t timestamp_last; /* last timestamp handed out, applied or not */
    sz_ledger_reservation_t reserved;
    bool appended_unsubmitted;
    bool expire_in_flight;
    bool expire_exhausted; /* the clock is past SZ_TIMESTAMP_MAX: no more expire ops */

    replica_cache_t cache;
    sz_create_result_t *scratch_results; /* replay's results */

    _Atomic uint32_t stop_requested;
    bool stopping;
    uint64_t stop_pop_budget; /* messages still to take from the ring after the stop */
    uint64_t loop_count;
    uint64_t sleep_count;
    uint64_t journal_wait_started_ns; /* 0 while passes make progress */

    int error;
    char error_message[512];
    /* Recovery: the ledger's refusal, kept apart from the journal's own problem. */
    int recover_error;
    sz_journal_problem_t recover_problem;
    uint64_t op_count_replayed;

    /* Snapshots (see "Snapshots: taking them" below). chain_head_* is the
     * checksum_header of op_last's and op_committed's entries (genesis for op 0). */
    bool snapshots_on;
    sz_u128 chain_head_committed;
    uint64_t snapshot_op_recovered;
    uint64_t snapshot_load_ns;
    uint64_t snapshot_op_last;    /* newest written or recovered from */
    uint64_t snapshot_taken_ns;   /* monotonic: the last fork, or the open */
    pid_t snapshot_child;         /* 0: none running */
    int snapshot_pipe;            /* the child's report; -1 */
    uint64_t snapshot_child_op;
    uint64_t snapshot_op_needed; /* config.snapshots.op_needed() just before the fork */
    uint64_t snapshot_started_ns;
    uint64_t snapshot_pause_ns;
    uint64_t snapshot_reap_next_ns;
    _Atomic uint32_t snapshot_requested;
};

/* ---------------------------------------------------------------------------------------
 * Small helpers. */

static uint64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static uint64_t replica_clock_ns(const sz_replica_t *replica) {
    if (replica->config.clock_now_ns != NULL) {
        return replica->config.clock_now_ns(replica->config.context);
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static uint64_t power_of_two_at_least(uint64_t value) {
    uint64_t result = 1;
    while (result < value) result <<= 1;
    return result;
}

static void metrics_add(_Atomic uint64_t *counter, uint64_t value) {
    sz_metrics_add(counter, value);
}

static const uint8_t *message_request_body(const sz_message_t *message) {
    return message->request + SZ_FRAME_HEADER_SIZE;
}

static uint8_t *message_reply_body(sz_message_t *message) {
    return message->reply + SZ_FRAME_HEADER_SIZE;
}

/* Seals a reply that repeats the request's identity (protocol.h). */
static void reply_seal(sz_message_t *message, sz_status_t status, uint64_t op, uint64_t timestamp,
                       uint32_t body_size) {
    SZ_ASSERT(body_size <= SZ_FRAME_BODY_SIZE_MAX);
    SZ_ASSERT(status == SZ_STATUS_OK || body_size == 0);
    const sz_frame_header_t *request = sz_message_request_header(message);
    sz_frame_header_t *reply = sz_message_reply_header(message);
    memset(reply, 0, sizeof(*reply));
    reply->cluster_id = request->cluster_id;
    reply->client_id = request->client_id;
    reply->trace_id = request->trace_id;
    reply->request_number = request->request_number;
    reply->operation = request->operation;
    reply->op = op;
    reply->timestamp = timestamp;
    reply->status = (uint16_t)status;
    reply->command = SZ_COMMAND_REPLY;
    reply->body_size = body_size;
    sz_frame_header_seal(reply, message_reply_body(message));
    message->reply_size = SZ_FRAME_HEADER_SIZE + body_size;
}

/* The chain head of the op just appended: the journal's checksum_last. A snapshot at op
 * N records N's; the slot keeps it until N is applied. */
static sz_u128 replica_chain_head(const sz_replica_t *replica) {
    sz_journal_info_t info;
    sz_journal_info(replica->journal, &info);
    SZ_ASSERT(info.op_last == replica->op_last);
    return info.checksum_last;
}

/* ---------------------------------------------------------------------------------------
 * The reply cache. */

static uint64_t cache_hash(sz_u128 client_id) {
    return XXH3_64bits(&client_id, sizeof(client_id));
}

static int cache_init(replica_cache_t *cache, uint32_t entry_max) {
    SZ_ASSERT(entry_max >= 1 && entry_max <= CLIENTS_MAX);
    memset(cache, 0, sizeof(*cache));
    uint64_t index_size = power_of_two_at_least(2ull * entry_max);
    cache->entries = calloc(entry_max, sizeof(cache_entry_t));
    cache->index = malloc(index_size * sizeof(uint32_t));
    if (cache->entries == NULL || cache->index == NULL) return -ENOMEM;
    memset(cache->index, 0xFF, index_size * sizeof(uint32_t)); /* CACHE_NONE */
    cache->entry_max = entry_max;
    cache->index_mask = index_size - 1;
    cache->lru_head = CACHE_NONE;
    cache->lru_tail = CACHE_NONE;
    return 0;
}

static void cache_deinit(replica_cache_t *cache) {
    if (cache->entries != NULL) {
        for (uint32_t index = 0; index < cache->entry_count; index++) {
            free(cache->entries[index].results);
        }
    }
    free(cache->entries);
    free(cache->index);
    memset(cache, 0, sizeof(*cache));
}

/* The index position holding client_id, or the empty one where it would go. The index is
 * at most half full, so the probe ends. */
static uint64_t cache_probe(const replica_cache_t *cache, sz_u128 client_id, uint64_t hash) {
    uint64_t position = hash & cache->index_mask;
    for (uint64_t probe = 0; probe <= cache->index_mask; probe++) {
        uint32_t entry = cache->index[position];
        if (entry == CACHE_NONE || cache->entries[entry].client_id == client_id) return position;
        position = (position + 1) & cache->index_mask;
    }
    SZ_ASSERT(false);
    return 0;
}

static uint32_t cache_find(const replica_cache_t *cache, sz_u128 client_id) {
    return cache->index[cache_probe(cache, client_id, cache_hash(client_id))];
}

/* Backward-shift deletion: later entries of the run move up so no probe breaks. */
static void cache_index_remove(replica_cache_t *cache, uint64_t position) {
    uint64_t mask = cache->index_mask;
    uint64_t hole = position;
    uint64_t next = (hole + 1) & mask;
    for (uint64_t probe = 0; probe <= mask && cache->index[next] != CACHE_NONE; probe++) {
        uint64_t home = cache->entries[cache->index[next]].hash & mask;
        /* The entry at next may fill the hole if the hole lies in [home, next). */
        if (((next - home) & mask) >= ((next - hole) & mask)) {
            cache->index[hole] = cache->index[next];
            hole = next;
        }
        next = (next + 1) & mask;
    }
    cache->index[hole] = CACHE_NONE;
}

static void cache_lru_unlink(replica_cache_t *cache, uint32_t index) {
    cache_entry_t *entry = &cache->entries[index];
    if (entry->lru_previous != CACHE_NONE) {
        cache->entries[entry->lru_previous].lru_next = entry->lru_next;
    } else {
        cache->lru_head = entry->lru_next;
    }
    if (entry->lru_next != CACHE_NONE) {
        cache->entries[entry->lru_next].lru_previous = entry->lru_previous;
    } else {
        cache->lru_tail = entry->lru_previous;
    }
}

static void cache_lru_push_front(replica_cache_t *cache, uint32_t index) {
    cache_entry_t *entry = &cache->entries[index];
    entry->lru_previous = CACHE_NONE;
    entry->lru_next = cache->lru_head;
    if (cache->lru_head != CACHE_NONE) cache->entries[cache->lru_head].lru_previous = index;
    cache->lru_head = index;
    if (cache->lru_tail == CACHE_NONE) cache->lru_tail = index;
}

static void cache_touch(replica_cache_t *cache, uint32_t index) {
    if (cache->lru_head == index) return;
    cache_lru_unlink(cache, index);
    cache_lru_push_front(cache, index);
}

/* An entry for a client not in the cache: a fresh one, or the least recently used one
 * that no slot needs. CACHE_NONE when every entry is pinned (the write goes uncached). */
static uint32_t cache_claim(replica_cache_t *cache, sz_u128 client_id) {
    SZ_ASSERT(client_id != 0);
    uint32_t index = CACHE_NONE;
    if (cache->entry_count < cache->entry_max) {
        index = cache->entry_count++;
    } else {
        /* Bounded by the entry count. */
        for (uint32_t candidate = cache->lru_tail; candidate != CACHE_NONE;
             candidate = cache->entries[candidate].lru_previous) {
            if (cache->entries[candidate].pin_count == 0) {
                index = candidate;
                break;
            }
        }
        if (index == CACHE_NONE) return CACHE_NONE;
        cache_entry_t *old = &cache->entries[index];
        SZ_ASSERT(old->writes_in_flight == 0);
        uint64_t position = cache_probe(cache, old->client_id, old->hash);
        SZ_ASSERT(cache->index[position] == index);
        cache_index_remove(cache, position);
        cache_lru_unlink(cache, index);
    }
    cache_entry_t *entry = &cache->entries[index];
    /* The result buffer is kept for the next client: fewer allocations. */
    sz_create_result_t *results = entry->results;
    uint32_t result_capacity = entry->result_capacity;
    *entry = (cache_entry_t){
        .client_id = client_id,
        .hash = cache_hash(client_id),
        .results = results,
        .result_capacity = result_capacity,
    };
    uint64_t position = cache_probe(cache, client_id, entry->hash);
    SZ_ASSERT(cache->index[position] == CACHE_NONE);
    cache->index[position] = index;
    cache_lru_push_front(cache, index);
    return index;
}

/* Records the reply of an applied write. Only non-ok results are kept; growing a copy is
 * the only allocation here, and only for a batch with more failures than before. */
static void cache_reply_store(replica_cache_t *cache, uint32_t index, uint32_t request_number,
                              sz_u128 checksum_body, uint64_t op, uint64_t timestamp,
                              const sz_create_result_t *results, uint32_t result_count) {
    cache_entry_t *entry = &cache->entries[index];
    SZ_ASSERT(result_count <= SZ_BATCH_EVENTS_MAX);
    entry->reply_valid = false;
    if (result_count > entry->result_capacity) {
        uint64_t capacity = power_of_two_at_least(result_count);
        if (capacity > SZ_BATCH_EVENTS_MAX) capacity = SZ_BATCH_EVENTS_MAX;
        uint64_t size_old = (uint64_t)entry->result_capacity * sizeof(sz_create_result_t);
        uint64_t size_new = capacity * sizeof(sz_create_result_t);
        if (cache->results_size - size_old + size_new > CACHE_RESULTS_SIZE_MAX) return;
        sz_create_result_t *grown = realloc(entry->results, size_new);
        if (grown == NULL) return;
        entry->results = grown;
        entry->result_capacity = (uint32_t)capacity;
        cache->results_size = cache->results_size - size_old + size_new;
    }
    if (result_count > 0) memcpy(entry->results, results, result_count * sizeof(*results));
    entry->result_count = result_count;
    entry->reply_request_number = request_number;
    entry->reply_checksum_body = checksum_body;
    entry->reply_op = op;
    entry->reply_timestamp = timestamp;
    entry->reply_valid = true;
}

/* ---------------------------------------------------------------------------------------
 * Applying ops (live and at recovery). */

static sz_batch_status_t replica_apply_op(sz_ledger_t *ledger, uint32_t operation,
                                          const void *body, uint32_t event_count,
                                          uint64_t timestamp, sz_create_result_t *results_out,
                                          uint32_t *result_count_out, uint32_t *expired_count_out) {
    *result_count_out = 0;
    *expired_count_out = 0;
    switch (operation) {
    case SZ_OPERATION_CREATE_ACCOUNTS:
        return sz_ledger_create_accounts(ledger, body, event_count, timestamp, results_out,
                                         result_count_out);
    case SZ_OPERATION_CREATE_TRANSFERS:
        return sz_ledger_create_transfers(ledger, body, event_count, timestamp, results_out,
                                          result_count_out);
    case SZ_OPERATION_EXPIRE_PENDING:
        return sz_ledger_expire_pending(ledger, timestamp, NULL, expired_count_out);
    default: SZ_ASSERT(false); return SZ_BATCH_TIMESTAMP_INVALID;
    }
}

static const char *capacity_flag(sz_batch_status_t status) {
    switch (status) {
    case SZ_BATCH_ACCOUNTS_FULL: return "--accounts-max";
    case SZ_BATCH_TRANSFERS_FULL: return "--transfers-max";
    case SZ_BATCH_PENDING_FULL: return "--pending-max";
    case SZ_BATCH_HISTORY_FULL: return "--history-max";
    default: return NULL;
    }
}

static uint32_t capacity_value(const sz_ledger_config_t *config, sz_batch_status_t status) {
    switch (status) {
    case SZ_BATCH_ACCOUNTS_FULL: return config->accounts_max;
    case SZ_BATCH_TRANSFERS_FULL: return config->transfers_max;
    case SZ_BATCH_PENDING_FULL: return config->pending_max;
    case SZ_BATCH_HISTORY_FULL: return config->history_max;
    default: return 0;
    }
}

/* on_entry at open: applies one journaled op and rebuilds the client's cache entry. */
static int replica_recover_entry(const sz_journal_header_t *header, const void *body,
                                 const sz_journal_position_t *position, void *context) {
    sz_replica_t *replica = context;
    /* After a snapshot the journal delivers only the ops after its op (op_after). */
    SZ_ASSERT(header->op == replica->op_committed + 1);
    uint32_t result_count = 0;
    uint32_t expired_count = 0;
    sz_batch_status_t status =
        replica_apply_op(replica->ledger, header->operation, body, header->event_count,
                         header->timestamp, replica->scratch_results, &result_count,
                         &expired_count);
    if (status != SZ_BATCH_APPLIED) {
        sz_journal_problem_t *problem = &replica->recover_problem;
        sz_journal_segment_name(position->segment, problem->file);
        problem->offset = position->offset;
        problem->op = header->op;
        const char *flag = capacity_flag(status);
        if (flag != NULL) {
            snprintf(problem->reason, sizeof(problem->reason),
                     "op %llu (%s, %u events) does not fit the ledger (%s): raise %s "
                     "(now %u) and start again",
                     (unsigned long long)header->op, sz_operation_name(header->operation),
                     header->event_count, sz_batch_status_name(status), flag,
                     capacity_value(&replica->config.ledger, status));
            replica->recover_error = -ENOSPC;
        } else {
            snprintf(problem->reason, sizeof(problem->reason),
                     "the ledger refused op %llu (%s, %u events): %s; this journal was not "
                     "written by a leader",
                     (unsigned long long)header->op, sz_operation_name(header->operation),
                     header->event_count, sz_batch_status_name(status));
            replica->recover_error = -EUCLEAN;
        }
        return replica->recover_error;
    }
    replica->op_committed = header->op;
    replica->op_count_replayed++;
    uint64_t span = header->event_count > 0 ? header->event_count : 1;
    replica->timestamp_last = header->timestamp + span - 1;
    if (header->client_id != 0 && header->operation != SZ_OPERATION_EXPIRE_PENDING) {
        replica_cache_t *cache = &replica->cache;
        uint32_t index = cache_find(cache, header->client_id);
        if (index == CACHE_NONE) index = cache_claim(cache, header->client_id);
        /* Nothing is pinned during recovery, so a claim always succeeds. */
        SZ_ASSERT(index != CACHE_NONE);
        cache_touch(cache, index);
        cache_entry_t *entry = &cache->entries[index];
        entry->request_number = header->request_number;
        entry->checksum_body = header->checksum_body;
        cache_reply_store(cache, index, header->request_number, header->checksum_body, header->op,
                          header->timestamp, replica->scratch_results, result_count);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Journal callbacks. */

static void replica_on_durable(uint64_t op_durable, void *context) {
    sz_replica_t *replica = context;
    SZ_ASSERT(op_durable > replica->op_durable);
    SZ_ASSERT(op_durable <= replica->op_last);
    replica->op_durable = op_durable;
}

static void replica_on_written(const sz_journal_write_report_t *report, void *context) {
    sz_replica_t *replica = context;
    sz_metrics_t *metrics = replica->metrics;
    SZ_ASSERT(report->op_first <= report->op_last);
    if (metrics == NULL) return;
    metrics_add(&metrics->journal_writes, 1);
    sz_histogram_record(&metrics->fdatasync_latency_us, report->latency_ns / NS_PER_US);
    sz_histogram_record(&metrics->commit_ops, report->op_last - report->op_first + 1);
}

/* ---------------------------------------------------------------------------------------
 * Logging: one logfmt line through config.log (start.c writes it to stderr). */

__attribute__((format(printf, 2, 3))) static void replica_log(const sz_replica_t *replica,
                                                              const char *format, ...) {
    if (replica->config.log == NULL) return;
    char line[768];
    va_list arguments;
    va_start(arguments, format);
    (void)vsnprintf(line, sizeof(line), format, arguments);
    va_end(arguments);
    replica->config.log(line, replica->config.context);
}

/* A reason for a logfmt value in quotes: quotes and newlines become spaces. */
static const char *log_quoted(char *text) {
    for (char *cursor = text; *cursor != '\0'; cursor++) {
        if (*cursor == '"' || *cursor == '\n' || *cursor == '\\') *cursor = ' ';
    }
    return text;
}

/* ---------------------------------------------------------------------------------------
 * Sessions: the reply cache in a snapshot's opaque section, as of op_committed: for every
 * client whose last applied write has its reply cached, that reply (op, T, non-ok
 * results) and its request's identity (number, body checksum). Least recently used
 * first, so restoring in order rebuilds the LRU order. Little-endian host layout; the
 * section is checksummed by the snapshot file, and still checked field by field at load
 * (a bad one makes the snapshot invalid, never an assertion). */

#define SESSIONS_MAGIC 0x53455353u /* "SSES" */
#define SESSIONS_VERSION 1u

typedef struct sessions_header {
    uint32_t magic;
    uint32_t version;
    uint32_t entry_count;
    uint32_t reserved;
} sessions_header_t;

typedef struct sessions_entry {
    sz_u128 client_id;
    sz_u128 checksum_body;
    uint64_t reply_op;
    uint64_t reply_timestamp;
    uint32_t request_number;
    uint32_t result_count; /* sz_create_result_t records follow the entry */
    uint64_t reserved;
} sessions_entry_t;

static_assert(sizeof(sessions_header_t) == 16, "sessions header");
static_assert(sizeof(sessions_entry_t) == 64, "sessions entry");
static_assert(sizeof(sz_create_result_t) == 8, "sessions results");

/* Runs in the snapshot child: reads the cache only, allocates nothing. */
static size_t sessions_size(const replica_cache_t *cache) {
    size_t size = sizeof(sessions_header_t);
    for (uint32_t index = 0; index < cache->entry_count; index++) {
        const cache_entry_t *entry = &cache->entries[index];
        if (!entry->reply_valid) continue;
        size += sizeof(sessions_entry_t) + entry->result_count * sizeof(sz_create_result_t);
    }
    return size;
}

/* Runs in the snapshot child. out has sessions_size() bytes. */
static void sessions_write(const replica_cache_t *cache, uint8_t *out, size_t size) {
    sessions_header_t header = {.magic = SESSIONS_MAGIC, .version = SESSIONS_VERSION};
    size_t offset = sizeof(header);
    /* Bounded by the entry count: the LRU list links every entry once. */
    for (uint32_t index = cache->lru_tail; index != CACHE_NONE;
         index = cache->entries[index].lru_previous) {
        const cache_entry_t *entry = &cache->entries[index];
        if (!entry->reply_valid) continue;
        sessions_entry_t record = {
            .client_id = entry->client_id,
            .checksum_body = entry->reply_checksum_body,
            .reply_op = entry->reply_op,
            .reply_timestamp = entry->reply_timestamp,
            .request_number = entry->reply_request_number,
            .result_count = entry->result_count,
        };
        size_t results_size = entry->result_count * sizeof(sz_create_result_t);
        SZ_ASSERT(offset + sizeof(record) + results_size <= size);
        memcpy(out + offset, &record, sizeof(record));
        if (results_size > 0) memcpy(out + offset + sizeof(record), entry->results, results_size);
        offset += sizeof(record) + results_size;
        header.entry_count++;
    }
    SZ_ASSERT(offset == size);
    memcpy(out, &header, sizeof(header));
}

/* Rebuilds the cache from a loaded section. Returns 0, or -EUCLEAN with reason_out. */
static int sessions_restore(sz_replica_t *replica, const uint8_t *bytes, size_t size,
                            char *reason_out, size_t reason_size) {
    size_t offset = 0;
    if (size == 0) return 0;
    sessions_header_t header;
    if (size < sizeof(header)) goto short_section;
    memcpy(&header, bytes, sizeof(header));
    if (header.magic != SESSIONS_MAGIC || header.version != SESSIONS_VERSION) {
        snprintf(reason_out, reason_size, "sessions section: unknown magic or version %u",
                 header.version);
        return -EUCLEAN;
    }
    offset = sizeof(header);
    replica_cache_t *cache = &replica->cache;
    for (uint32_t count = 0; count < header.entry_count; count++) {
        sessions_entry_t record;
        if (size - offset < sizeof(record)) goto short_section;
        memcpy(&record, bytes + offset, sizeof(record));
        offset += sizeof(record);
        size_t results_size = (size_t)record.result_count * sizeof(sz_create_result_t);
        if (record.client_id == 0 || record.result_count > SZ_BATCH_EVENTS_MAX) {
            snprintf(reason_out, reason_size,
                     "sessions section: entry %u at offset %zu is invalid", count,
                     offset - sizeof(record));
            return -EUCLEAN;
        }
        if (size - offset < results_size) goto short_section;
        if (results_size > 0) memcpy(replica->scratch_results, bytes + offset, results_size);
        offset += results_size;
        uint32_t index = cache_find(cache, record.client_id);
        /* Nothing is pinned during recovery, so a claim always succeeds (evicting the
         * least recent when the section holds more clients than clients_max). */
        if (index == CACHE_NONE) index = cache_claim(cache, record.client_id);
        SZ_ASSERT(index != CACHE_NONE);
        cache_touch(cache, index);
        cache_entry_t *entry = &cache->entries[index];
        entry->request_number = record.request_number;
        entry->checksum_body = record.checksum_body;
        cache_reply_store(cache, index, record.request_number, record.checksum_body,
                          record.reply_op, record.reply_timestamp, replica->scratch_results,
                          record.result_count);
    }
    if (offset != size) {
        snprintf(reason_out, reason_size, "sessions section: %zu bytes after the last entry",
                 size - offset);
        return -EUCLEAN;
    }
    return 0;
short_section:
    snprintf(reason_out, reason_size, "sessions section: cut short at offset %zu", offset);
    return -EUCLEAN;
}

/* ---------------------------------------------------------------------------------------
 * Snapshots: taking them.
 *
 * Design notes. Between two passes of the loop the state is exactly op_committed's (apply
 * runs op by op inside replica_answer()). There the ledger thread forks: the child has a
 * copy-on-write image of that state and writes it at leisure while the parent goes on;
 * the parent's only cost is fork() itself (page tables: the ledger is one MADV_HUGEPAGE
 * mapping, so a few thousand PMD entries for gigabytes; the gateway's messages and the
 * transfer index are MADV_DONTFORK, and so, for the fork only, are the unused tails of
 * the append-only arrays) and the copy-on-write faults of its next writes. _Fork() skips
 * the atfork handlers and malloc's locks: the child never allocates (the sessions buffer is
 * mmap'd, sz_snapshot_write() is made for this) and reports through a pipe with one
 * write(2) below PIPE_BUF.
 *
 *   [idle] --replica_snapshot_tick: due (ops, time or request)--> [forking]
 *   [forking] --replica_snapshot_start: _Fork() fails--> [idle] (snapshot_failed)
 *   [forking] --replica_snapshot_start: child forked--> [running] (pause measured)
 *   [running] --replica_snapshot_tick, every 1 ms: waitpid(WNOHANG)--> [running]
 *   [running] --replica_snapshot_reap: exited 0 with a report--> [idle] (snapshot_written)
 *   [running] --replica_snapshot_reap: failed, killed--> [idle] (snapshot_failed)
 *   [running] --sz_replica_run returning: replica_snapshot_reap(wait)--> [idle]
 *   [running] --sz_replica_close: SIGKILL, reap--> [idle]
 *
 *   the child: close every inherited fd but the two it needs (so it never holds the data
 *   directory's lock) -> sessions into an mmap -> sz_snapshot_write() -> prune to
 *   keep_count -> retention -> report -> _exit(). PR_SET_PDEATHSIG kills it if the ledger
 *   thread dies: a snapshot is either complete under its name or a *.tmp nobody loads. */

typedef struct snapshot_report {
    int32_t result;        /* 0 or a negative errno */
    uint32_t pruned_count;
    uint32_t retired_count; /* journal segments archived or deleted */
    uint32_t reserved;
    uint64_t size;         /* of the snapshot file */
    uint64_t write_ns;     /* sz_snapshot_write(), sessions included */
    char stage[16];        /* what failed: "sessions", "write", "prune", "retention" */
    sz_snapshot_problem_t problem;
} snapshot_report_t;

static_assert(sizeof(snapshot_report_t) <= PIPE_BUF, "one atomic pipe write");

/* Every inherited fd but stdin..stderr and the keep_count in keep (ascending, no
 * duplicates, -1 skipped): the data directory's lock, the io_uring, the sockets. */
static void snapshot_child_fds_close(const int *keep, uint32_t keep_count) {
    unsigned next = STDERR_FILENO + 1;
    for (uint32_t index = 0; index < keep_count; index++) {
        if (keep[index] < (int)next) continue;
        if ((unsigned)keep[index] > next) (void)close_range(next, (unsigned)keep[index] - 1, 0);
        next = (unsigned)keep[index] + 1;
    }
    (void)close_range(next, ~0u, 0);
}

static int snapshot_child_write(const sz_replica_t *replica, uint64_t op, sz_u128 chain_head,
                                snapshot_report_t *report) {
    int directory_fd = replica->config.snapshots.directory_fd;
    sz_ledger_stats_t stats;
    sz_ledger_stats(replica->ledger, &stats);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    sz_snapshot_meta_t meta = {
        .cluster_id = replica->cluster_id,
        .op = op,
        .timestamp = stats.timestamp_last,
        .chain_head = chain_head,
        .digest = sz_ledger_digest(replica->ledger),
        .created_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec,
    };
    size_t size = sessions_size(&replica->cache);
    void *sessions = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sessions == MAP_FAILED) {
        memcpy(report->stage, "sessions", sizeof("sessions"));
        return -errno;
    }
    sessions_write(&replica->cache, sessions, size);
    memcpy(report->stage, "write", sizeof("write"));
    int result = sz_snapshot_write_paced(directory_fd, replica->ledger, &meta, sessions, size,
                                         replica->config.snapshots.rate_bytes_per_s,
                                         &report->problem);
    (void)munmap(sessions, size);
    if (result < 0) return result;
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(op, name);
    struct stat status;
    if (fstatat(directory_fd, name, &status, 0) == 0) report->size = (uint64_t)status.st_size;
    return 0;
}

/* Journal segments wholly before the oldest snapshot kept: recovery needs its op + 1 on. */
static int snapshot_child_retention(const sz_replica_t *replica, snapshot_report_t *report) {
    const sz_replica_snapshots_t *config = &replica->config.snapshots;
    if (config->retention == SZ_REPLICA_RETENTION_KEEP) return 0;
    memcpy(report->stage, "retention", sizeof("retention"));
    uint64_t ops[SNAPSHOT_KEEP_MAX];
    int count = sz_snapshot_list(config->directory_fd, ops, config->keep_count);
    if (count <= 0) return count;
    uint32_t kept = (uint32_t)count < config->keep_count ? (uint32_t)count : config->keep_count;
    sz_journal_problem_t problem;
    memset(&problem, 0, sizeof(problem));
    int archive_fd = config->retention == SZ_REPLICA_RETENTION_ARCHIVE ? config->archive_fd : -1;
    /* Subscribers reading behind the oldest snapshot keep their segments too. */
    uint64_t op_keep_from = ops[kept - 1] + 1;
    if (replica->snapshot_op_needed < op_keep_from) op_keep_from = replica->snapshot_op_needed;
    int retired = sz_journal_retire(config->data_directory_fd, archive_fd, op_keep_from,
                                    &problem);
    if (retired < 0) {
        static_assert(sizeof(report->problem.reason) == sizeof(problem.reason), "reasons");
        memcpy(report->problem.reason, problem.reason, sizeof(problem.reason));
        return retired;
    }
    report->retired_count = (uint32_t)retired;
    return 0;
}

/* The child's whole life. Never returns. */
__attribute__((noreturn)) static void snapshot_child(const sz_replica_t *replica, int pipe_fd,
                                                     pid_t parent, uint64_t op,
                                                     sz_u128 chain_head) {
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(3); /* the parent died before the line above */
    /* The ledger and gateway threads come first for the CPU and the disk: the child has
     * seconds, a batch has milliseconds. Not idle classes: under full load they would
     * starve the child and let the journal's tail grow without bound. */
    (void)setpriority(PRIO_PROCESS, 0, SNAPSHOT_CHILD_NICE);
    (void)syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0,
                  (2 << 13) | 7 /* IOPRIO_CLASS_BE, lowest level */);
    const sz_replica_snapshots_t *config = &replica->config.snapshots;
    int keep[4] = {config->directory_fd, pipe_fd, -1, -1};
    if (config->retention != SZ_REPLICA_RETENTION_KEEP) {
        keep[2] = config->data_directory_fd;
        if (config->retention == SZ_REPLICA_RETENTION_ARCHIVE) keep[3] = config->archive_fd;
    }
    /* Ascending for the close: four, so a few swaps. */
    for (uint32_t pass = 0; pass < 4; pass++) {
        for (uint32_t index = 0; index + 1 < 4; index++) {
            if (keep[index] > keep[index + 1]) {
                int swap = keep[index];
                keep[index] = keep[index + 1];
                keep[index + 1] = swap;
            }
        }
    }
    snapshot_child_fds_close(keep, 4);
    uint64_t started_ns = monotonic_ns();
    snapshot_report_t report;
    memset(&report, 0, sizeof(report));
    int result = snapshot_child_write(replica, op, chain_head, &report);
    report.write_ns = monotonic_ns() - started_ns;
    if (result == 0) {
        memcpy(report.stage, "prune", sizeof("prune"));
        int pruned = sz_snapshot_prune(replica->config.snapshots.directory_fd,
                                       replica->config.snapshots.keep_count);
        if (pruned < 0) result = pruned;
        else report.pruned_count = (uint32_t)pruned;
    }
    if (result == 0) result = snapshot_child_retention(replica, &report);
    report.result = result;
    ssize_t written = write(pipe_fd, &report, sizeof(report));
    _exit(result == 0 && written == (ssize_t)sizeof(report) ? 0 : 1);
}

static void replica_snapshot_failed(sz_replica_t *replica, uint64_t op, const char *reason) {
    char quoted[512];
    snprintf(quoted, sizeof(quoted), "%s", reason);
    replica_log(replica, "level=error msg=snapshot_failed op=%llu reason=\"%s\"",
                (unsigned long long)op, log_quoted(quoted));
    if (replica->metrics != NULL) metrics_add(&replica->metrics->snapshots_failed, 1);
}

/* The unused tails of the append-only arrays (transfers, their metas, balance history),
 * from the first 2 MiB boundary past the last record to the last one inside the capacity:
 * marked MADV_DONTFORK just for the fork (advice is MADV_DOFORK after it), so the child,
 * which reads only the records below the counts, does not share them. The ledger thread's
 * appends during a snapshot then write pages of its own: no copy-on-write fault, and no
 * huge page split into 512 small ones (a write to a shared huge page splits it, and the
 * split stays: each snapshot under load left ~100k more page table entries for the next
 * fork() to copy, the pause grew from 4 ms to 17-75 ms over five snapshots). 2 MiB
 * boundaries, so the marking itself splits no huge page. */
static void replica_snapshot_tails_advise(const sz_replica_t *replica, int advice) {
    static const sz_ledger_part_t parts[] = {SZ_LEDGER_PART_TRANSFERS,
                                             SZ_LEDGER_PART_TRANSFER_METAS,
                                             SZ_LEDGER_PART_HISTORY};
    const uint64_t huge = 2ull << 20;
    sz_ledger_image_t image;
    sz_ledger_export(replica->ledger, &image);
    for (uint32_t index = 0; index < sizeof(parts) / sizeof(parts[0]); index++) {
        sz_ledger_part_t part = parts[index];
        uint64_t base = (uint64_t)sz_ledger_export_array(replica->ledger, part);
        uint64_t record_size = sz_ledger_part_record_size(part);
        uint64_t capacity = part == SZ_LEDGER_PART_HISTORY ? replica->config.ledger.history_max
                                                           : replica->config.ledger.transfers_max;
        uint64_t start = (base + image.record_counts[part] * record_size + huge - 1) / huge * huge;
        uint64_t end = (base + capacity * record_size) / huge * huge;
        /* Best effort: a refusal only costs copy-on-write faults, as before. */
        if (end > start) (void)madvise((void *)start, end - start, advice);
    }
}

static void replica_snapshot_start(sz_replica_t *replica, uint64_t now_ns) {
    SZ_ASSERT(replica->snapshot_child == 0);
    replica->snapshot_taken_ns = now_ns;
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
        char reason[128];
        snprintf(reason, sizeof(reason), "pipe: %s", strerror(errno));
        replica_snapshot_failed(replica, replica->op_committed, reason);
        return;
    }
    pid_t parent = getpid();
    const sz_replica_snapshots_t *snapshots = &replica->config.snapshots;
    replica->snapshot_op_needed = snapshots->op_needed == NULL
                                      ? UINT64_MAX
                                      : snapshots->op_needed(snapshots->op_needed_context);
    uint64_t before_ns = monotonic_ns();
    replica_snapshot_tails_advise(replica, MADV_DONTFORK);
    pid_t child = _Fork();
    if (child == 0) {
        close(pipe_fds[0]);
        snapshot_child(replica, pipe_fds[1], parent, replica->op_committed,
                       replica->chain_head_committed);
    }
    int fork_errno = errno;
    replica_snapshot_tails_advise(replica, MADV_DOFORK);
    uint64_t after_ns = monotonic_ns();
    close(pipe_fds[1]);
    if (child < 0) {
        close(pipe_fds[0]);
        char reason[128];
        snprintf(reason, sizeof(reason), "fork: %s", strerror(fork_errno));
        replica_snapshot_failed(replica, replica->op_committed, reason);
        return;
    }
    replica->snapshot_child = child;
    replica->snapshot_pipe = pipe_fds[0];
    replica->snapshot_child_op = replica->op_committed;
    replica->snapshot_started_ns = before_ns;
    replica->snapshot_pause_ns = after_ns - before_ns;
    replica->snapshot_reap_next_ns = after_ns + SNAPSHOT_REAP_INTERVAL_NS;
    uint64_t pause_us = replica->snapshot_pause_ns / NS_PER_US;
    if (replica->metrics != NULL) {
        sz_histogram_record(&replica->metrics->snapshot_pause_us, pause_us);
        if (pause_us > atomic_load_explicit(&replica->metrics->snapshot_pause_us_max,
                                            memory_order_relaxed)) {
            sz_metrics_set(&replica->metrics->snapshot_pause_us_max, pause_us);
        }
    }
    replica_log(replica, "level=info msg=snapshot_started op=%llu pid=%d pause_us=%llu",
                (unsigned long long)replica->snapshot_child_op, (int)child,
                (unsigned long long)pause_us);
}

/* Collects the child's report once it has exited (wait: block until it has). */
static void replica_snapshot_reap(sz_replica_t *replica, bool wait) {
    SZ_ASSERT(replica->snapshot_child > 0);
    int status = 0;
    pid_t done;
    do {
        done = waitpid(replica->snapshot_child, &status, wait ? 0 : WNOHANG);
    } while (done < 0 && errno == EINTR);
    if (done == 0) return;
    snapshot_report_t report;
    memset(&report, 0, sizeof(report));
    ssize_t got = read(replica->snapshot_pipe, &report, sizeof(report));
    close(replica->snapshot_pipe);
    replica->snapshot_pipe = -1;
    replica->snapshot_child = 0;
    uint64_t op = replica->snapshot_child_op;
    uint64_t duration_ns = monotonic_ns() - replica->snapshot_started_ns;
    bool exited = done > 0 && WIFEXITED(status);
    if (got == (ssize_t)sizeof(report) && exited && WEXITSTATUS(status) == 0 &&
        report.result == 0) {
        replica->snapshot_op_last = op;
        char name[SZ_SNAPSHOT_NAME_SIZE];
        sz_snapshot_name(op, name);
        replica_log(replica,
                    "level=info msg=snapshot_written op=%llu name=%s size=%llu "
                    "duration_ms=%llu write_ms=%llu pause_us=%llu pruned=%u retired=%u",
                    (unsigned long long)op, name, (unsigned long long)report.size,
                    (unsigned long long)(duration_ns / NS_PER_MS),
                    (unsigned long long)(report.write_ns / NS_PER_MS),
                    (unsigned long long)(replica->snapshot_pause_ns / NS_PER_US),
                    report.pruned_count, report.retired_count);
        if (replica->metrics != NULL) {
            metrics_add(&replica->metrics->snapshots_written, 1);
            sz_metrics_set(&replica->metrics->snapshot_op, op);
            sz_metrics_set(&replica->metrics->snapshot_size_bytes, report.size);
            sz_histogram_record(&replica->metrics->snapshot_duration_us, duration_ns / NS_PER_US);
        }
        return;
    }
    char reason[512];
    if (got == (ssize_t)sizeof(report) && report.result < 0) {
        report.stage[sizeof(report.stage) - 1] = '\0';
        report.problem.reason[sizeof(report.problem.reason) - 1] = '\0';
        snprintf(reason, sizeof(reason), "%s: %s%s%s", report.stage, strerror(-report.result),
                 report.problem.reason[0] != '\0' ? ": " : "", report.problem.reason);
    } else if (done < 0) {
        snprintf(reason, sizeof(reason), "waitpid: %s", strerror(errno));
    } else if (WIFSIGNALED(status)) {
        snprintf(reason, sizeof(reason), "the snapshot process was killed by signal %d",
                 WTERMSIG(status));
    } else {
        snprintf(reason, sizeof(reason), "the snapshot process exited with status %d",
                 exited ? WEXITSTATUS(status) : -1);
    }
    replica_snapshot_failed(replica, op, reason);
}

/* Once per loop pass: reap a finished child, or start one when a trigger is due. */
static void replica_snapshot_tick(sz_replica_t *replica) {
    if (!replica->snapshots_on || replica->stopping) return;
    uint64_t now_ns = monotonic_ns();
    if (replica->snapshot_child != 0) {
        if (now_ns < replica->snapshot_reap_next_ns) return;
        replica->snapshot_reap_next_ns = now_ns + SNAPSHOT_REAP_INTERVAL_NS;
        replica_snapshot_reap(replica, false);
        if (replica->snapshot_child != 0) return;
    }
    const sz_replica_snapshots_t *config = &replica->config.snapshots;
    bool requested =
        atomic_load_explicit(&replica->snapshot_requested, memory_order_relaxed) != 0;
    uint64_t fresh = replica->op_committed - replica->snapshot_op_last;
    bool due = requested || (config->every_ops != 0 && fresh >= config->every_ops) ||
               (config->every_ns != 0 && fresh > 0 &&
                now_ns - replica->snapshot_taken_ns >= config->every_ns);
    if (!due) return;
    /* A request at op 0 is written too (the empty ledger, chained to the superblock), so
     * whoever asked sees a snapshot; the triggers above need an applied op. */
    if (requested) atomic_store_explicit(&replica->snapshot_requested, 0, memory_order_relaxed);
    replica_snapshot_start(replica, now_ns);
}

/* How long the idle loop may sleep for the snapshots' sake (0: no limit). */
static uint64_t replica_snapshot_sleep_ns(const sz_replica_t *replica) {
    if (!replica->snapshots_on) return 0;
    if (replica->snapshot_child != 0) return SNAPSHOT_REAP_IDLE_NS;
    uint64_t every_ns = replica->config.snapshots.every_ns;
    if (every_ns == 0 || replica->op_committed == replica->snapshot_op_last) return 0;
    uint64_t elapsed_ns = monotonic_ns() - replica->snapshot_taken_ns;
    return elapsed_ns >= every_ns ? 1 : every_ns - elapsed_ns;
}

void sz_replica_snapshot_request(sz_replica_t *replica) {
    atomic_store_explicit(&replica->snapshot_requested, 1, memory_order_seq_cst);
    sz_ring_wake_consumer(replica->config.requests);
}

/* The transfer id index is written at random by every batch and never read by a snapshot
 * (sz_ledger_import rebuilds it): not forked, the ledger thread takes no copy-on-write
 * fault on it while a child runs (about one per transfer at 20M transfers, the main cost
 * of a snapshot under load), and fork copies fewer page tables. Advice only. */
static void replica_dontfork_index(const sz_replica_t *replica) {
    void *address = NULL;
    size_t size = 0;
    sz_ledger_transfer_index_memory(replica->ledger, &address, &size);
    (void)madvise(address, size, MADV_DONTFORK);
}

/* ---------------------------------------------------------------------------------------
 * Recovery from snapshots.
 *
 *   [start] --snapshots off, or sz_journal_superblock_read fails--> [full replay] (the
 *            journal open then says why)
 *   [start] --sz_snapshot_list: newest first--> [trying N]
 *   [trying N] --sz_snapshot_load fails (damaged, truncated, other cluster)--> [trying
 *              the next] (msg=snapshot_invalid)
 *   [trying N] --loaded; sessions_restore fails--> [trying the next] (snapshot_invalid)
 *   [trying N] --does not fit the capacities--> [refused] (-ENOSPC)
 *   [trying N] --replica_recover_journal after N: -EUCLEAN or -ENOENT (N's entry is not
 *              the snapshot's chain head, or the journal has no op N)--> [trying the next]
 *              (snapshot_invalid; N remembered as unusable)
 *   [trying N] --replica_recover_journal: another error--> [refused] (the journal's problem)
 *   [trying N] --journal after N applied--> [recovered]
 *   [trying the next] --none left--> [full replay] --replica_recover_journal--> [recovered]
 *   [recovered] --a verified snapshot past the journal's end was unusable--> [refused]
 *               (-EUCLEAN: the journal lost ops that only that snapshot has; loading an
 *               older state would silently drop them) */

/* Opens the journal and applies every entry after op_after (0: all of them). */
static int replica_recover_journal(sz_replica_t *replica, uint64_t op_after,
                                   sz_u128 chain_head, sz_journal_problem_t *problem) {
    sz_journal_options_t options = {
        .in_flight_max = replica->config.in_flight_max,
        .on_entry = replica_recover_entry,
        .entry_context = replica,
        .on_durable = replica_on_durable,
        .durable_context = replica,
        .on_written = replica_on_written,
        .op_after = op_after,
        .chain_head = chain_head,
    };
    replica->recover_error = 0;
    int result = sz_journal_open(replica->config.storage, &options, &replica->journal, problem);
    if (replica->recover_error != 0) {
        /* The journal overwrote the problem with its own "scan stopped": ours says more. */
        *problem = replica->recover_problem;
        result = replica->recover_error;
    }
    return result;
}

/* Back to nothing loaded, for the next candidate. */
static int replica_recover_reset(sz_replica_t *replica) {
    sz_journal_deinit(replica->journal);
    replica->journal = NULL;
    sz_ledger_deinit(replica->ledger);
    replica->ledger = NULL;
    cache_deinit(&replica->cache);
    replica->op_committed = 0;
    replica->timestamp_last = 0;
    replica->op_count_replayed = 0;
    uint32_t clients_max =
        replica->config.clients_max != 0 ? replica->config.clients_max : CLIENTS_DEFAULT;
    return cache_init(&replica->cache, clients_max);
}

static void replica_snapshot_invalid(sz_replica_t *replica, const char *name,
                                     const char *reason) {
    char quoted[512];
    snprintf(quoted, sizeof(quoted), "%s", reason);
    replica_log(replica, "level=warn msg=snapshot_invalid name=%s reason=\"%s\"", name,
                log_quoted(quoted));
}

/* Loads the snapshot of op into the replica (ledger, sessions, op, timestamp). 0, -EAGAIN
 * (invalid: logged, nothing kept), or -ENOSPC / -ENOMEM with problem filled. */
static int replica_recover_load(sz_replica_t *replica, uint64_t op, sz_u128 cluster_id,
                                sz_u128 *chain_head_out, sz_journal_problem_t *problem) {
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(op, name);
    sz_snapshot_loaded_t loaded;
    memset(&loaded, 0, sizeof(loaded));
    sz_snapshot_problem_t snapshot_problem;
    memset(&snapshot_problem, 0, sizeof(snapshot_problem));
    int result = sz_snapshot_load(replica->config.snapshots.directory_fd, name, cluster_id,
                                  &replica->config.ledger, &loaded, &snapshot_problem);
    char reason[400];
    if (result == -ENOSPC || result == -ENOMEM) {
        snprintf(problem->file, sizeof(problem->file), "%s/%.40s", SZ_SNAPSHOT_DIRECTORY, name);
        problem->op = op;
        snprintf(problem->reason, sizeof(problem->reason),
                 result == -ENOSPC ? "the snapshot does not fit the configured capacities "
                                     "(%.120s): raise --accounts-max, --transfers-max, "
                                     "--pending-max or --history-max"
                                   : "no memory to load the snapshot (%.120s)",
                 snapshot_problem.reason);
        return result;
    }
    if (result < 0) {
        /* strerror(EUCLEAN) ("Structure needs cleaning") would only confuse. */
        snprintf(reason, sizeof(reason), "%s%s%s%s",
                 snapshot_problem.reason[0] != '\0' ? snapshot_problem.reason : "cannot load",
                 result == -EUCLEAN ? "" : " (", result == -EUCLEAN ? "" : strerror(-result),
                 result == -EUCLEAN ? "" : ")");
        replica_snapshot_invalid(replica, name, reason);
        return -EAGAIN;
    }
    replica->ledger = loaded.ledger;
    if (loaded.meta.cluster_id != cluster_id) {
        /* sz_snapshot_load() takes cluster id 0 (the default cluster) as "any": ours is
         * checked here too. */
        char ours[SZ_U128_DECIMAL_SIZE], theirs[SZ_U128_DECIMAL_SIZE];
        snprintf(reason, sizeof(reason), "snapshot of another cluster (%s, expected %s)",
                 sz_u128_format(loaded.meta.cluster_id, theirs), sz_u128_format(cluster_id, ours));
        result = -EUCLEAN;
    } else if (loaded.meta.op != op) {
        snprintf(reason, sizeof(reason), "its header says op %llu",
                 (unsigned long long)loaded.meta.op);
        result = -EUCLEAN;
    } else {
        result = sessions_restore(replica, loaded.sessions, loaded.sessions_size, reason,
                                  sizeof(reason));
    }
    sz_snapshot_sessions_free(loaded.sessions, loaded.sessions_size);
    if (result < 0) {
        replica_snapshot_invalid(replica, name, reason);
        return replica_recover_reset(replica) < 0 ? -ENOMEM : -EAGAIN;
    }
    sz_ledger_stats_t stats;
    sz_ledger_stats(replica->ledger, &stats);
    replica->op_committed = op;
    replica->timestamp_last = stats.timestamp_last;
    *chain_head_out = loaded.meta.chain_head;
    return 0;
}

/* Recovers from the snapshot of op and the journal after it. 0 done; -EAGAIN: not usable
 * (logged; *unusable_out set when the journal, not the file, was the reason), try the
 * one before; another error: give up (problem filled). */
static int replica_recover_snapshot(sz_replica_t *replica, uint64_t op, sz_u128 cluster_id,
                                    bool *unusable_out, sz_journal_problem_t *problem) {
    sz_u128 chain_head = 0;
    uint64_t started_ns = monotonic_ns();
    int result = replica_recover_load(replica, op, cluster_id, &chain_head, problem);
    if (result < 0) return result;
    replica->snapshot_load_ns = monotonic_ns() - started_ns;
    result = replica_recover_journal(replica, op, chain_head, problem);
    if ((result == -EUCLEAN || result == -ENOENT) && replica->recover_error == 0) {
        /* The journal has no op N with the snapshot's chain head: another history, or a
         * journal that ends before N. The older snapshots tell which (see below). */
        char name[SZ_SNAPSHOT_NAME_SIZE];
        sz_snapshot_name(op, name);
        char reason[400];
        snprintf(reason, sizeof(reason), "the journal does not continue it: %s",
                 problem->reason);
        replica_snapshot_invalid(replica, name, reason);
        *unusable_out = true;
        memset(problem, 0, sizeof(*problem));
        return replica_recover_reset(replica) < 0 ? -ENOMEM : -EAGAIN;
    }
    if (result < 0) return result;
    replica->snapshot_op_recovered = op;
    return 0;
}

/* A verified snapshot at op N that the journal did not continue, and a journal that ends
 * before N: the journal lost ops that were durable (and acknowledged). Refused rather than
 * started from an older state, which would drop them silently. */
static int replica_recover_past_end(sz_replica_t *replica, uint64_t op_unusable,
                                    sz_journal_problem_t *problem) {
    sz_journal_info_t info;
    sz_journal_info(replica->journal, &info);
    if (op_unusable <= info.op_last) return 0;
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(op_unusable, name);
    snprintf(problem->file, sizeof(problem->file), "%s/%.40s", SZ_SNAPSHOT_DIRECTORY, name);
    problem->offset = 0;
    problem->op = op_unusable;
    snprintf(problem->reason, sizeof(problem->reason),
             "snapshot at op %llu, journal ends at op %llu: the journal lost durable "
             "ops. Restore it from a backup, or move the snapshots past op %llu out "
             "of snapshots/ to accept losing ops %llu..%llu",
             (unsigned long long)op_unusable, (unsigned long long)info.op_last,
             (unsigned long long)info.op_last, (unsigned long long)info.op_last + 1,
             (unsigned long long)op_unusable);
    return -EUCLEAN;
}

/* The state at the journal's end: from the newest snapshot that holds, else from op 1. */
static int replica_recover(sz_replica_t *replica, sz_journal_problem_t *problem) {
    replica->snapshots_on =
        replica->config.snapshots.enabled && replica->config.snapshots.directory_fd >= 0;
    sz_journal_superblock_t superblock;
    uint64_t op_unusable = 0; /* the newest verified snapshot the journal did not continue */
    if (replica->snapshots_on &&
        sz_journal_superblock_read(replica->config.storage, &superblock, NULL) == 0) {
        uint64_t ops[SNAPSHOT_LIST_MAX];
        int count = sz_snapshot_list(replica->config.snapshots.directory_fd, ops,
                                     SNAPSHOT_LIST_MAX);
        if (count < 0) {
            replica_log(replica, "level=warn msg=snapshot_list_failed error=\"%s\"",
                        strerror(-count));
        }
        int result = -EAGAIN;
        for (int index = 0; index < count && index < (int)SNAPSHOT_LIST_MAX; index++) {
            bool unusable = false;
            result = replica_recover_snapshot(replica, ops[index], superblock.cluster_id,
                                              &unusable, problem);
            if (unusable && ops[index] > op_unusable) op_unusable = ops[index];
            if (result != -EAGAIN) break;
        }
        if (result != -EAGAIN && result < 0) return result;
        if (result == 0) return replica_recover_past_end(replica, op_unusable, problem);
    }
    int result = sz_ledger_init(&replica->config.ledger, &replica->ledger);
    if (result < 0) {
        snprintf(problem->reason, sizeof(problem->reason),
                 "cannot reserve %llu bytes for the ledger's capacities: %s",
                 (unsigned long long)sz_ledger_memory_size(&replica->config.ledger),
                 strerror(-result));
        return result;
    }
    result = replica_recover_journal(replica, 0, 0, problem);
    if (result < 0) return result;
    return replica_recover_past_end(replica, op_unusable, problem);
}

/* ---------------------------------------------------------------------------------------
 * Open, close, info. */

static int replica_config_check(const sz_replica_config_t *config,
                                sz_journal_problem_t *problem) {
    const char *reason = NULL;
    if (config->storage == NULL) reason = "no storage";
    else if (config->requests == NULL || config->replies == NULL) reason = "no rings";
    else if (config->in_flight_max > SZ_JOURNAL_IN_FLIGHT_MAX) reason = "in_flight_max too large";
    else if (config->clients_max > CLIENTS_MAX) reason = "clients_max above 1048576";
    else if (config->snapshots.keep_count > SNAPSHOT_KEEP_MAX) reason = "keep_count above 1000";
    else if (config->snapshots.enabled &&
             config->snapshots.retention != SZ_REPLICA_RETENTION_KEEP &&
             (config->snapshots.data_directory_fd < 0 ||
              (config->snapshots.retention == SZ_REPLICA_RETENTION_ARCHIVE &&
               config->snapshots.archive_fd < 0))) {
        reason = "journal retention needs the data (and archive) directory";
    }
    else if (sz_ledger_memory_size(&config->ledger) == 0) {
        reason = "a ledger capacity is 0 or above the limit";
    }
    if (reason == NULL) return 0;
    if (problem != NULL) snprintf(problem->reason, sizeof(problem->reason), "%s", reason);
    return -EINVAL;
}

static int replica_allocate(sz_replica_t *replica, sz_journal_problem_t *problem) {
    const sz_replica_config_t *config = &replica->config;
    replica->slot_count = power_of_two_at_least(2 * config->requests->capacity + 2);
    if (replica->slot_count < SLOT_COUNT_MIN) replica->slot_count = SLOT_COUNT_MIN;
    if (replica->slot_count > SLOT_COUNT_MAX) replica->slot_count = SLOT_COUNT_MAX;
    replica->slots = calloc(replica->slot_count, sizeof(replica_slot_t));
    replica->push_batch = calloc(replica->slot_count, sizeof(sz_message_t *));
    replica->scratch_results = malloc(SZ_BATCH_EVENTS_MAX * sizeof(sz_create_result_t));
    uint32_t clients_max = config->clients_max != 0 ? config->clients_max : CLIENTS_DEFAULT;
    int result = cache_init(&replica->cache, clients_max);
    if (replica->slots == NULL || replica->push_batch == NULL ||
        replica->scratch_results == NULL || result < 0) {
        if (problem != NULL) {
            snprintf(problem->reason, sizeof(problem->reason), "out of memory for the replica");
        }
        return -ENOMEM;
    }
    return 0;
}

int sz_replica_open(const sz_replica_config_t *config, sz_replica_t **replica_out,
                    sz_journal_problem_t *problem_out) {
    SZ_ASSERT(config != NULL && replica_out != NULL);
    *replica_out = NULL;
    if (problem_out != NULL) memset(problem_out, 0, sizeof(*problem_out));
    int result = replica_config_check(config, problem_out);
    if (result < 0) return result;
    sz_replica_t *replica = calloc(1, sizeof(*replica));
    if (replica == NULL) return -ENOMEM;
    replica->config = *config;
    if (replica->config.snapshots.keep_count == 0) {
        replica->config.snapshots.keep_count = SNAPSHOT_KEEP_DEFAULT;
    }
    replica->metrics = config->metrics;
    replica->snapshot_pipe = -1;
    atomic_init(&replica->stop_requested, 0);
    atomic_init(&replica->snapshot_requested, 0);
    result = replica_allocate(replica, problem_out);
    if (result < 0) goto fail;
    sz_journal_problem_t problem_scratch;
    sz_journal_problem_t *problem = problem_out != NULL ? problem_out : &problem_scratch;
    memset(problem, 0, sizeof(*problem));
    result = replica_recover(replica, problem);
    if (result < 0) goto fail;
    sz_journal_info_t info;
    sz_journal_info(replica->journal, &info);
    SZ_ASSERT(info.op_last == replica->op_committed);
    replica->cluster_id = info.cluster_id;
    replica->op_last = info.op_last;
    replica->op_durable = info.op_last;
    replica->chain_head_committed = info.checksum_last;
    if (replica->snapshots_on) replica_dontfork_index(replica);
    replica->snapshot_op_last = replica->snapshot_op_recovered;
    replica->snapshot_taken_ns = monotonic_ns();
    sz_ledger_stats_t stats;
    sz_ledger_stats(replica->ledger, &stats);
    /* A snapshot's ledger brings its own last timestamp; replay's is the journal's. */
    if (replica->snapshot_op_recovered != 0 && replica->op_count_replayed == 0) {
        replica->timestamp_last = stats.timestamp_last;
    }
    SZ_ASSERT(stats.timestamp_last == replica->timestamp_last);
    if (replica->metrics != NULL) {
        sz_metrics_set(&replica->metrics->op_last, replica->op_last);
        sz_metrics_set(&replica->metrics->op_committed, replica->op_committed);
    }
    *replica_out = replica;
    return 0;
fail:
    sz_replica_close(replica);
    return result;
}

void sz_replica_close(sz_replica_t *replica) {
    if (replica == NULL) return;
    if (replica->snapshot_child > 0) {
        (void)kill(replica->snapshot_child, SIGKILL);
        replica_snapshot_reap(replica, true);
    }
    sz_journal_deinit(replica->journal);
    sz_ledger_deinit(replica->ledger);
    cache_deinit(&replica->cache);
    free(replica->slots);
    free(replica->push_batch);
    free(replica->scratch_results);
    free(replica);
}

void sz_replica_info(const sz_replica_t *replica, sz_replica_info_t *info_out) {
    SZ_ASSERT(replica != NULL && info_out != NULL);
    memset(info_out, 0, sizeof(*info_out));
    info_out->cluster_id = replica->cluster_id;
    info_out->op_last = replica->op_last;
    info_out->op_committed = replica->op_committed;
    info_out->timestamp_last = replica->timestamp_last;
    info_out->digest = sz_ledger_digest(replica->ledger);
    sz_ledger_stats(replica->ledger, &info_out->ledger);
    info_out->loop_count = replica->loop_count;
    info_out->sleep_count = replica->sleep_count;
    info_out->snapshot_op_recovered = replica->snapshot_op_recovered;
    info_out->op_count_replayed = replica->op_count_replayed;
    info_out->snapshot_load_ns = replica->snapshot_load_ns;
    info_out->snapshot_op_last = replica->snapshot_op_last;
}

const char *sz_replica_error_message(const sz_replica_t *replica) {
    return replica->error_message;
}

void sz_replica_stop(sz_replica_t *replica) {
    atomic_store_explicit(&replica->stop_requested, 1, memory_order_seq_cst);
    sz_ring_wake_consumer(replica->config.requests);
}

/* ---------------------------------------------------------------------------------------
 * Sequencing. */

static void slot_refuse(replica_slot_t *slot, sz_status_t status) {
    slot->kind = SLOT_REFUSED;
    slot->status = status;
}

static sz_status_t batch_status_reply(sz_batch_status_t status) {
    switch (status) {
    case SZ_BATCH_ACCOUNTS_FULL: return SZ_STATUS_ACCOUNTS_FULL;
    case SZ_BATCH_TRANSFERS_FULL: return SZ_STATUS_TRANSFERS_FULL;
    case SZ_BATCH_PENDING_FULL: return SZ_STATUS_PENDING_FULL;
    case SZ_BATCH_HISTORY_FULL: return SZ_STATUS_HISTORY_FULL;
    case SZ_BATCH_TOO_MANY_EVENTS: return SZ_STATUS_BODY_TOO_LARGE;
    default: SZ_ASSERT(false); return SZ_STATUS_UNAVAILABLE;
    }
}

/* The reply cache's verdict on a write: SZ_STATUS_OK to journal it (cache_index_out is its
 * client's entry or CACHE_NONE), or a refusal; SLOT_CACHED is signalled by *cached_out. */
static sz_status_t replica_sequence_cache(sz_replica_t *replica, const sz_frame_header_t *request,
                                          uint32_t *cache_index_out, bool *cached_out) {
    replica_cache_t *cache = &replica->cache;
    uint32_t index = cache_find(cache, request->client_id);
    *cache_index_out = index;
    *cached_out = false;
    if (index == CACHE_NONE) return SZ_STATUS_OK;
    const cache_entry_t *entry = &cache->entries[index];
    if (request->request_number < entry->request_number) return SZ_STATUS_REQUEST_STALE;
    if (request->request_number > entry->request_number) return SZ_STATUS_OK;
    if (request->checksum_body != entry->checksum_body) return SZ_STATUS_REQUEST_CONFLICT;
    /* An exact retry: its reply is in flight (the newest sequenced write is this one) or
     * cached. If the copy was dropped (budget), the retry is applied again. */
    if (entry->writes_in_flight > 0 ||
        (entry->reply_valid && entry->reply_request_number == request->request_number)) {
        *cached_out = true;
    }
    return SZ_STATUS_OK;
}

/* Journals one write. Returns 0, -EAGAIN (journal full: try again after a poll) or the
 * journal's error. */
static int replica_sequence_write(sz_replica_t *replica, replica_slot_t *slot,
                                  uint32_t cache_index, uint64_t clock_ns, uint64_t now_ns) {
    const sz_frame_header_t *request = sz_message_request_header(slot->message);
    sz_operation_t operation = (sz_operation_t)request->operation;
    uint32_t event_count = slot->event_count;
    sz_batch_status_t capacity = sz_ledger_capacity_check_reserved(
        replica->ledger, operation, event_count, &replica->reserved);
    if (capacity != SZ_BATCH_APPLIED) {
        slot_refuse(slot, batch_status_reply(capacity));
        return 0;
    }
    uint64_t timestamp = replica->timestamp_last + 1;
    if (clock_ns > timestamp) timestamp = clock_ns;
    if (timestamp > SZ_TIMESTAMP_MAX || replica->timestamp_last >= SZ_TIMESTAMP_MAX) {
        slot_refuse(slot, SZ_STATUS_TIMESTAMP_EXHAUSTED);
        return 0;
    }
    sz_journal_append_t entry = {
        .timestamp = timestamp,
        .operation = operation,
        .event_count = event_count,
        .client_id = request->client_id,
        .request_number = request->request_number,
        .trace_id = request->trace_id,
    };
    uint64_t op = 0;
    int result = sz_journal_append(replica->journal, &entry, message_request_body(slot->message),
                                   &op);
    if (result < 0) return result;
    SZ_ASSERT(op == replica->op_last + 1);
    replica->op_last = op;
    replica->appended_unsubmitted = true;
    replica->timestamp_last = timestamp + event_count - 1;
    if (replica->snapshots_on) slot->chain_head = replica_chain_head(replica);
    sz_ledger_reservation_add(&replica->reserved, operation, event_count, false);
    replica_cache_t *cache = &replica->cache;
    if (cache_index == CACHE_NONE) cache_index = cache_claim(cache, request->client_id);
    if (cache_index != CACHE_NONE) {
        cache_entry_t *cache_entry = &cache->entries[cache_index];
        cache_entry->request_number = request->request_number;
        cache_entry->checksum_body = request->checksum_body;
        cache_entry->writes_in_flight++;
        cache_entry->pin_count++;
        cache_touch(cache, cache_index);
    }
    slot->kind = SLOT_WRITE;
    slot->op = op;
    slot->timestamp = timestamp;
    slot->appended_ns = now_ns;
    slot->cache_index = cache_index;
    return 0;
}

/* Decides what one popped request is; journals writes. 0, -EAGAIN or an error. */
static int replica_sequence(sz_replica_t *replica, replica_slot_t *slot, uint64_t clock_ns,
                            uint64_t now_ns) {
    SZ_ASSERT(slot->kind == SLOT_NEW && slot->message != NULL);
    const sz_frame_header_t *request = sz_message_request_header(slot->message);
    /* The gateway checked the frame (message.h); these cheap checks keep a gateway bug
     * from reaching the ledger. */
    uint32_t record_size = sz_operation_request_record_size(request->operation);
    if (record_size == 0) {
        slot_refuse(slot, SZ_STATUS_OPERATION_INVALID);
        return 0;
    }
    if (request->body_size > SZ_FRAME_BODY_SIZE_MAX || request->body_size % record_size != 0 ||
        request->body_size / record_size > SZ_BATCH_EVENTS_MAX) {
        slot_refuse(slot, SZ_STATUS_BODY_SIZE_INVALID);
        return 0;
    }
    slot->event_count = request->body_size / record_size;
    if (!sz_operation_is_write(request->operation) || slot->event_count == 0) {
        bool filter = record_size == sizeof(sz_account_filter_t);
        if (filter && slot->event_count != 1) slot_refuse(slot, SZ_STATUS_BODY_SIZE_INVALID);
        else slot->kind = SLOT_READ;
        return 0;
    }
    uint32_t cache_index = CACHE_NONE;
    bool cached = false;
    sz_status_t status = replica_sequence_cache(replica, request, &cache_index, &cached);
    if (status != SZ_STATUS_OK) {
        slot_refuse(slot, status);
        return 0;
    }
    if (cached) {
        replica->cache.entries[cache_index].pin_count++;
        cache_touch(&replica->cache, cache_index);
        slot->kind = SLOT_CACHED;
        slot->cache_index = cache_index;
        return 0;
    }
    return replica_sequence_write(replica, slot, cache_index, clock_ns, now_ns);
}

/* Journals an expire op when the clock has reached the earliest expiry. */
static int replica_expire(sz_replica_t *replica, uint64_t clock_ns, uint64_t now_ns,
                          bool *progress) {
    if (replica->stopping || replica->expire_in_flight || replica->expire_exhausted) return 0;
    if (replica->slot_sequenced != replica->slot_popped) return 0; /* ops go in slot order */
    if (replica->slot_popped - replica->slot_pushed >= replica->slot_count) return 0;
    if (clock_ns < sz_ledger_expiry_next(replica->ledger)) return 0;
    uint64_t timestamp = replica->timestamp_last + 1;
    if (clock_ns > timestamp) timestamp = clock_ns;
    if (timestamp > SZ_TIMESTAMP_MAX || replica->timestamp_last >= SZ_TIMESTAMP_MAX) {
        replica->expire_exhausted = true;
        return 0;
    }
    sz_journal_append_t entry = {.timestamp = timestamp,
                                 .operation = SZ_OPERATION_EXPIRE_PENDING};
    uint64_t op = 0;
    int result = sz_journal_append(replica->journal, &entry, NULL, &op);
    if (result == -EAGAIN) return 0;
    if (result < 0) return result;
    SZ_ASSERT(op == replica->op_last + 1);
    replica->op_last = op;
    replica->appended_unsubmitted = true;
    replica->timestamp_last = timestamp;
    replica->expire_in_flight = true;
    replica_slot_t *slot = &replica->slots[replica->slot_popped & (replica->slot_count - 1)];
    *slot = (replica_slot_t){.kind = SLOT_EXPIRE, .op = op, .timestamp = timestamp,
                             .appended_ns = now_ns, .cache_index = CACHE_NONE};
    if (replica->snapshots_on) slot->chain_head = replica_chain_head(replica);
    replica->slot_popped++;
    replica->slot_sequenced++;
    *progress = true;
    return 0;
}

/* Sequences popped slots in order until one has to wait for the journal. */
static int replica_sequence_pending(sz_replica_t *replica, uint64_t clock_ns, uint64_t now_ns,
                                    bool *progress) {
    uint64_t mask = replica->slot_count - 1;
    while (replica->slot_sequenced < replica->slot_popped) {
        replica_slot_t *slot = &replica->slots[replica->slot_sequenced & mask];
        int result = replica_sequence(replica, slot, clock_ns, now_ns);
        if (result == -EAGAIN) return 0;
        if (result < 0) return result;
        replica->slot_sequenced++;
        *progress = true;
    }
    return 0;
}

/* Pops what the request ring holds (as much as the FIFO has room for). */
static bool replica_pop(sz_replica_t *replica) {
    uint64_t room = replica->slot_count - (replica->slot_popped - replica->slot_pushed);
    if (replica->stopping) room = room < replica->stop_pop_budget ? room : replica->stop_pop_budget;
    if (room == 0) return false;
    uint64_t mask = replica->slot_count - 1;
    uint64_t start = replica->slot_popped & mask;
    /* Pop into the contiguous run up to the FIFO's end; the next pass takes the rest. */
    uint64_t contiguous = replica->slot_count - start;
    uint32_t count_max = (uint32_t)(room < contiguous ? room : contiguous);
    void **messages = (void **)replica->push_batch; /* free between pushes: scratch */
    uint32_t count = sz_ring_pop(replica->config.requests, messages, count_max);
    for (uint32_t index = 0; index < count; index++) {
        replica->slots[(replica->slot_popped + index) & mask] =
            (replica_slot_t){.message = messages[index], .kind = SLOT_NEW,
                             .cache_index = CACHE_NONE};
    }
    replica->slot_popped += count;
    if (replica->stopping) replica->stop_pop_budget -= count;
    return count > 0;
}

/* Intake: sequence what waited, expiry, pop and sequence the new, submit once. */
static int replica_intake(sz_replica_t *replica, bool *progress) {
    uint64_t clock_ns = replica_clock_ns(replica);
    uint64_t now_ns = monotonic_ns();
    int result = replica_sequence_pending(replica, clock_ns, now_ns, progress);
    if (result == 0) result = replica_expire(replica, clock_ns, now_ns, progress);
    if (result == 0 && replica_pop(replica)) {
        *progress = true;
        result = replica_sequence_pending(replica, clock_ns, now_ns, progress);
    }
    if (result == 0 && replica->appended_unsubmitted) {
        replica->appended_unsubmitted = false;
        result = sz_journal_submit(replica->journal);
    }
    if (replica->metrics != NULL && *progress) {
        sz_metrics_set(&replica->metrics->op_last, replica->op_last);
    }
    return result;
}

/* ---------------------------------------------------------------------------------------
 * Answering, in slot order. */

static void metrics_results(sz_metrics_t *metrics, uint32_t operation, uint32_t event_count,
                            const sz_create_result_t *results, uint32_t result_count) {
    bool accounts = operation == SZ_OPERATION_CREATE_ACCOUNTS;
    _Atomic uint64_t *counts =
        accounts ? metrics->create_account_results : metrics->create_transfer_results;
    uint32_t count_max =
        accounts ? SZ_CREATE_ACCOUNT_RESULT_COUNT : SZ_CREATE_TRANSFER_RESULT_COUNT;
    metrics_add(&counts[0], event_count - result_count);
    for (uint32_t index = 0; index < result_count; index++) {
        if (results[index].result < count_max) metrics_add(&counts[results[index].result], 1);
    }
}

static void replica_apply_write(sz_replica_t *replica, replica_slot_t *slot) {
    sz_message_t *message = slot->message;
    const sz_frame_header_t *request = sz_message_request_header(message);
    sz_create_result_t *results = (sz_create_result_t *)message_reply_body(message);
    uint32_t result_count = 0;
    uint32_t expired_count = 0;
    sz_batch_status_t status = replica_apply_op(
        replica->ledger, request->operation, message_request_body(message), slot->event_count,
        slot->timestamp, results, &result_count, &expired_count);
    /* Capacity and timestamp were checked with every earlier op reserved: a refusal here
     * would be a journaled op that replay refuses too. */
    SZ_ASSERT(status == SZ_BATCH_APPLIED);
    SZ_ASSERT(result_count <= slot->event_count);
    sz_ledger_reservation_add(&replica->reserved, (sz_operation_t)request->operation,
                              slot->event_count, true);
    reply_seal(message, SZ_STATUS_OK, slot->op, slot->timestamp,
               result_count * (uint32_t)sizeof(sz_create_result_t));
    if (slot->cache_index != CACHE_NONE) {
        cache_entry_t *entry = &replica->cache.entries[slot->cache_index];
        SZ_ASSERT(entry->client_id == request->client_id);
        SZ_ASSERT(entry->writes_in_flight > 0 && entry->pin_count > 0);
        entry->writes_in_flight--;
        entry->pin_count--;
        cache_reply_store(&replica->cache, slot->cache_index, request->request_number,
                          request->checksum_body, slot->op, slot->timestamp, results,
                          result_count);
    }
    if (replica->metrics != NULL) {
        metrics_results(replica->metrics, request->operation, slot->event_count, results,
                        result_count);
    }
}

static void replica_apply_expire(sz_replica_t *replica, const replica_slot_t *slot) {
    SZ_ASSERT(replica->expire_in_flight);
    uint32_t result_count = 0;
    uint32_t expired_count = 0;
    sz_batch_status_t status =
        replica_apply_op(replica->ledger, SZ_OPERATION_EXPIRE_PENDING, NULL, 0, slot->timestamp,
                         NULL, &result_count, &expired_count);
    SZ_ASSERT(status == SZ_BATCH_APPLIED);
    replica->expire_in_flight = false;
    if (replica->metrics != NULL) metrics_add(&replica->metrics->expired_count, expired_count);
}

/* Runs a read against everything applied so far. */
static void replica_read(sz_replica_t *replica, replica_slot_t *slot) {
    sz_message_t *message = slot->message;
    const sz_frame_header_t *request = sz_message_request_header(message);
    const uint8_t *body = message_request_body(message);
    uint8_t *out = message_reply_body(message);
    uint32_t row_count = 0;
    switch (request->operation) {
    case SZ_OPERATION_LOOKUP_ACCOUNTS:
        row_count = sz_ledger_lookup_accounts(replica->ledger, (const sz_u128 *)body,
                                              slot->event_count, (sz_account_t *)out);
        break;
    case SZ_OPERATION_LOOKUP_TRANSFERS:
        row_count = sz_ledger_lookup_transfers(replica->ledger, (const sz_u128 *)body,
                                               slot->event_count, (sz_transfer_t *)out);
        break;
    case SZ_OPERATION_GET_ACCOUNT_TRANSFERS:
        row_count = sz_ledger_get_account_transfers(
            replica->ledger, (const sz_account_filter_t *)body, SZ_BATCH_EVENTS_MAX,
            (sz_transfer_t *)out);
        break;
    case SZ_OPERATION_GET_ACCOUNT_BALANCES:
        row_count = sz_ledger_get_account_balances(
            replica->ledger, (const sz_account_filter_t *)body, SZ_BATCH_EVENTS_MAX,
            (sz_account_balance_t *)out);
        break;
    default: SZ_ASSERT(slot->event_count == 0); break; /* a create of zero events */
    }
    SZ_ASSERT(row_count <= SZ_BATCH_EVENTS_MAX);
    uint32_t row_size = sz_operation_reply_record_size(request->operation);
    reply_seal(message, SZ_STATUS_OK, replica->op_committed, 0, row_count * row_size);
}

static void replica_reply_cached(sz_replica_t *replica, replica_slot_t *slot) {
    sz_message_t *message = slot->message;
    const sz_frame_header_t *request = sz_message_request_header(message);
    cache_entry_t *entry = &replica->cache.entries[slot->cache_index];
    SZ_ASSERT(entry->client_id == request->client_id && entry->pin_count > 0);
    entry->pin_count--;
    if (!entry->reply_valid || entry->reply_request_number != request->request_number) {
        /* The copy was dropped for the memory budget: the client retries and is applied
         * again (ids make creates idempotent). */
        reply_seal(message, SZ_STATUS_UNAVAILABLE, replica->op_committed, 0, 0);
        return;
    }
    uint32_t size = entry->result_count * (uint32_t)sizeof(sz_create_result_t);
    if (size > 0) memcpy(message_reply_body(message), entry->results, size);
    reply_seal(message, SZ_STATUS_OK, entry->reply_op, entry->reply_timestamp, size);
}

/* Answers ready slots in order, about one full batch of events per pass. */
static bool replica_answer(sz_replica_t *replica) {
    uint64_t mask = replica->slot_count - 1;
    uint64_t events = 0;
    bool progress = false;
    while (replica->slot_answered < replica->slot_sequenced && events < ANSWER_EVENTS_PER_PASS) {
        replica_slot_t *slot = &replica->slots[replica->slot_answered & mask];
        if (slot->kind == SLOT_WRITE || slot->kind == SLOT_EXPIRE) {
            if (slot->op > replica->op_durable) break;
            SZ_ASSERT(slot->op == replica->op_committed + 1);
            if (slot->kind == SLOT_WRITE) replica_apply_write(replica, slot);
            else replica_apply_expire(replica, slot);
            replica->op_committed = slot->op;
            replica->chain_head_committed = slot->chain_head;
            if (replica->metrics != NULL) {
                sz_histogram_record(&replica->metrics->commit_latency_us,
                                    (monotonic_ns() - slot->appended_ns) / NS_PER_US);
            }
        } else if (slot->kind == SLOT_READ) {
            replica_read(replica, slot);
        } else if (slot->kind == SLOT_CACHED) {
            replica_reply_cached(replica, slot);
        } else {
            SZ_ASSERT(slot->kind == SLOT_REFUSED);
            reply_seal(slot->message, (sz_status_t)slot->status, replica->op_committed, 0, 0);
        }
        events += slot->event_count > 0 ? slot->event_count : 1;
        replica->slot_answered++;
        progress = true;
    }
    if (progress && replica->metrics != NULL) {
        sz_metrics_set(&replica->metrics->op_committed, replica->op_committed);
    }
    /* Subscriptions: publish the committed op (an atomic store, a wake only if asleep). */
    if (progress && replica->config.committed != NULL) {
        replica->config.committed(replica->op_committed, replica->config.context);
    }
    return progress;
}

/* Pushes answered replies, in order, as one batch. */
static bool replica_push(sz_replica_t *replica) {
    uint64_t mask = replica->slot_count - 1;
    uint32_t count = 0;
    for (uint64_t slot = replica->slot_pushed; slot < replica->slot_answered; slot++) {
        sz_message_t *message = replica->slots[slot & mask].message;
        if (message != NULL) replica->push_batch[count++] = message;
    }
    uint32_t pushed = count > 0 ? sz_ring_push(replica->config.replies,
                                               (void *const *)replica->push_batch, count)
                                : 0;
    /* Advance over what went out, and over expire slots (no message) up to the first
     * message that did not fit. */
    uint64_t before = replica->slot_pushed;
    uint32_t remaining = pushed;
    while (replica->slot_pushed < replica->slot_answered) {
        replica_slot_t *slot = &replica->slots[replica->slot_pushed & mask];
        if (slot->message != NULL) {
            if (remaining == 0) break;
            remaining--;
            slot->message = NULL; /* the gateway's again */
        }
        replica->slot_pushed++;
    }
    SZ_ASSERT(remaining == 0);
    if (pushed > 0 && replica->config.replies_pushed != NULL) {
        replica->config.replies_pushed(replica->config.context);
    }
    return replica->slot_pushed != before;
}

/* ---------------------------------------------------------------------------------------
 * The loop. */

static int replica_fail(sz_replica_t *replica, int error) {
    SZ_ASSERT(error < 0);
    replica->error = error;
    const char *journal_message = sz_journal_error_message(replica->journal);
    snprintf(replica->error_message, sizeof(replica->error_message), "journal: %s",
             journal_message[0] != '\0' ? journal_message : strerror(-error));
    /* What was durable before the failure is still answered; nothing after it. */
    while (replica_answer(replica)) (void)replica_push(replica);
    (void)replica_push(replica);
    if (replica->snapshot_child > 0) replica_snapshot_reap(replica, true);
    return error;
}

/* Nothing moved this pass: spin while the journal works, else sleep on the ring. */
static void replica_wait(sz_replica_t *replica) {
    bool journal_busy = replica->op_durable < replica->op_last ||
                        replica->slot_sequenced < replica->slot_popped;
    if (journal_busy) {
        /* Pause first (a small write may complete within microseconds), then yield:
         * fdatasync runs in an io_uring worker thread that needs a core, and on two cores
         * both are busy with our two spinning threads. Yielding between polls cut the
         * measured write+fdatasync time from 4.3 ms to 1.0 ms on tmpfs and raised the
         * in-process ceiling from 4.7 to 9.3 M transfers/s (bench_replica). */
        uint64_t now_ns = monotonic_ns();
        if (replica->journal_wait_started_ns == 0) replica->journal_wait_started_ns = now_ns;
        if (now_ns - replica->journal_wait_started_ns < JOURNAL_SPIN_NS) {
            __builtin_ia32_pause();
        } else {
            sched_yield();
        }
        return;
    }
    if (replica->slot_pushed < replica->slot_answered) {
        /* The reply ring is full (the gateway has more messages out than it holds). */
        (void)sz_ring_wait_writable(replica->config.replies, 0, REPLY_WAIT_NS);
        return;
    }
    SZ_ASSERT(replica->slot_answered == replica->slot_sequenced);
    if (replica->stopping) return;
    /* Idle: spin a little on the ring, then sleep until a push, a stop or the expiry. */
    uint64_t spin_deadline_ns = monotonic_ns() + IDLE_SPIN_NS;
    while (monotonic_ns() < spin_deadline_ns) {
        for (uint32_t spin = 0; spin < 64; spin++) {
            if (sz_ring_occupancy(replica->config.requests) > 0) return;
            __builtin_ia32_pause();
        }
        if (atomic_load_explicit(&replica->stop_requested, memory_order_relaxed) != 0) return;
    }
    uint64_t timeout_ns = 0; /* none: no expiry pending */
    uint64_t expiry_ns = sz_ledger_expiry_next(replica->ledger);
    if (expiry_ns != UINT64_MAX && !replica->expire_exhausted) {
        uint64_t clock_ns = replica_clock_ns(replica);
        timeout_ns = expiry_ns > clock_ns ? expiry_ns - clock_ns : 1;
        if (timeout_ns > IDLE_SLEEP_EXPIRY_NS_MAX) timeout_ns = IDLE_SLEEP_EXPIRY_NS_MAX;
    }
    uint64_t snapshot_ns = replica_snapshot_sleep_ns(replica);
    if (snapshot_ns != 0 && (timeout_ns == 0 || snapshot_ns < timeout_ns)) timeout_ns = snapshot_ns;
    replica->sleep_count++;
    (void)sz_ring_wait_readable(replica->config.requests, 0, timeout_ns);
}

int sz_replica_run(sz_replica_t *replica) {
    SZ_ASSERT(replica != NULL && replica->error == 0);
    /* Bounded by sz_replica_stop() or a journal error. */
    while (true) {
        replica->loop_count++;
        if (!replica->stopping &&
            atomic_load_explicit(&replica->stop_requested, memory_order_acquire) != 0) {
            /* Take what the ring holds now; anything pushed later is not ours to answer. */
            replica->stopping = true;
            replica->stop_pop_budget = sz_ring_occupancy(replica->config.requests);
        }
        bool progress = false;
        int result = replica_intake(replica, &progress);
        if (result == 0) result = sz_journal_poll(replica->journal, false);
        if (result < 0) return replica_fail(replica, result);
        if (replica_answer(replica)) progress = true;
        if (replica_push(replica)) progress = true;
        replica_snapshot_tick(replica);
        if (replica->stopping && replica->stop_pop_budget == 0 &&
            replica->slot_pushed == replica->slot_popped) {
            break;
        }
        if (!progress) {
            replica_wait(replica);
        } else {
            replica->journal_wait_started_ns = 0;
        }
    }
    SZ_ASSERT(replica->op_committed == replica->op_last);
    /* The child dies with this thread (PR_SET_PDEATHSIG): let it finish first. */
    if (replica->snapshot_child > 0) replica_snapshot_reap(replica, true);
    int result = sz_journal_flush(replica->journal);
    if (result < 0) return replica_fail(replica, result);
    /* Stopped and drained: sz_replica_run() may be called again (tests, a pause). */
    replica->stopping = false;
    atomic_store_explicit(&replica->stop_requested, 0, memory_order_relaxed);
    return 0;
}
