/* ledger.c: the state machine of SEMANTICS.md: accounts, transfers, two-phase transfers,
 * linked chains, expiry, balance history, queries, and the running state digest.
 *
 * Design notes
 * - Accounts live inline in an open-addressing table of 128-byte slots (linear probing,
 *   load at most 0.6): finding an account is one random memory access (two adjacent cache
 *   lines), which is what bounds the apply rate with a million accounts. The slot's
 *   `reserved` field, always 0 on the wire, holds the account's newest transfer link
 *   (transfer index + 1; 0 = none) and is zeroed in everything handed out.
 * - Transfers are appended in timestamp order to a dense array, with a side array of
 *   16-byte metas (per-account backward links, history rows, pending state) and an id
 *   index of 8-byte slots {32-bit tag, 32-bit transfer index} (load at most 0.5). A miss
 *   (the usual case: a new id) never touches a transfer record.
 * - Linked chains roll back by popping the chain's records in reverse order. Removing the
 *   newest entry of a linear-probing table by clearing its slot is exact when removals run
 *   in reverse insertion order: no later key can have probed past it.
 * - Pending transfers with a timeout sit in a binary min-heap ordered by (expiry, creation
 *   timestamp), a total order, so expiry order never depends on heap layout. Entries whose
 *   transfer was posted, voided or rolled back go stale and are dropped lazily; the heap's
 *   top is always live after every op.
 * - The create loops hash ids and prefetch the slots they will touch a few events ahead
 *   (prefetch_distance), so the cache misses of many events overlap.
 * - Capacity is checked for the batch's worst case before anything applies.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "ledger.h"

#pragma GCC poison malloc calloc realloc free

/* Account table load at most 3/5: short probe sequences for 128-byte slots. */
#define ACCOUNT_LOAD_NUMERATOR 5u
#define ACCOUNT_LOAD_DENOMINATOR 3u
/* Hash ring for the prefetch lookahead: a power of two above the largest distance. */
#define LOOKAHEAD_RING_SIZE 64u
static_assert(LOOKAHEAD_RING_SIZE > SZ_LEDGER_PREFETCH_DISTANCE_MAX, "ring holds the distance");

#define NS_PER_S 1000000000ull

enum transfer_state {
    TRANSFER_STATE_NONE = 0, /* not a pending transfer */
    TRANSFER_STATE_PENDING = 1,
    TRANSFER_STATE_POSTED = 2,
    TRANSFER_STATE_VOIDED = 3,
    TRANSFER_STATE_EXPIRED = 4,
};

enum history_side {
    HISTORY_DEBIT = 1u << 0,
    HISTORY_CREDIT = 1u << 1,
};

typedef struct transfer_meta {
    uint32_t debit_previous;  /* the debit account's previous transfer link, 0 = none */
    uint32_t credit_previous; /* the credit account's previous transfer link */
    uint32_t history_index;   /* first history row of this transfer, if any */
    uint8_t state;
    uint8_t history_sides;
    uint16_t reserved;
} transfer_meta_t;
static_assert(sizeof(transfer_meta_t) == 16, "meta is 16 bytes");

typedef struct expiry_entry {
    uint64_t expires_at;
    uint64_t timestamp; /* the pending transfer's own timestamp: tie-break and identity */
    uint32_t transfer_index;
    uint32_t reserved;
} expiry_entry_t;

struct sz_ledger {
    sz_account_t *account_slots;
    uint64_t account_slot_count;
    uint32_t *account_order; /* slot of each account, in creation order */
    uint32_t account_count;
    uint32_t accounts_max;

    sz_transfer_t *transfers;
    transfer_meta_t *transfer_metas;
    uint64_t *transfer_index; /* (tag << 32) | transfer index; 0 = empty */
    uint64_t transfer_index_mask;
    uint32_t transfer_count;
    uint32_t transfers_max;

    expiry_entry_t *expiry_heap;
    uint32_t expiry_count;
    uint32_t pending_live; /* heap entries whose transfer is still pending */
    uint32_t pending_max;

    sz_account_balance_t *history;
    uint32_t history_count;
    uint32_t history_max;

    uint64_t timestamp_last;
    uint64_t op_count;
    uint64_t hash_seed;
    uint32_t prefetch_distance;
    sz_digest_t digest;

    /* Snapshot import in progress (sz_ledger_import_begin until _finish): the image. */
    bool importing;
    sz_ledger_image_t import_image;

    void *memory;
    size_t memory_size;
};

/* ---------------------------------------------------------------------------------------
 * Hashing and table probes. */

SZ_INLINE uint64_t id_hash(const sz_ledger_t *ledger, sz_u128 id) {
    return XXH3_64bits_withSeed(&id, sizeof(id), ledger->hash_seed);
}

SZ_INLINE uint64_t account_home(const sz_ledger_t *ledger, uint64_t hash) {
    return (uint64_t)(((sz_u128)hash * ledger->account_slot_count) >> 64);
}

SZ_INLINE uint32_t transfer_tag(uint64_t hash) {
    uint32_t tag = (uint32_t)(hash >> 32);
    return tag == 0 ? 1 : tag;
}

SZ_INLINE void account_prefetch(const sz_ledger_t *ledger, uint64_t hash) {
    const char *slot = (const char *)&ledger->account_slots[account_home(ledger, hash)];
    __builtin_prefetch(slot, 1, 3);
    __builtin_prefetch(slot + 64, 1, 3);
}

SZ_INLINE void transfer_index_prefetch(const sz_ledger_t *ledger, uint64_t hash) {
    __builtin_prefetch(&ledger->transfer_index[hash & ledger->transfer_index_mask], 1, 3);
}

/* The slot holding id, or the empty slot where it would go. id is never 0. */
SZ_INLINE uint64_t account_probe(const sz_ledger_t *ledger, sz_u128 id, uint64_t hash) {
    uint64_t slot = account_home(ledger, hash);
    for (uint64_t probe = 0; probe < ledger->account_slot_count; probe++) {
        const sz_account_t *account = &ledger->account_slots[slot];
        if (account->id == id || account->id == 0) return slot;
        slot++;
        if (slot == ledger->account_slot_count) slot = 0;
    }
    /* Load is capped below 1, so an empty slot always exists. */
    SZ_ASSERT(false);
    return 0;
}

SZ_INLINE sz_account_t *account_find(const sz_ledger_t *ledger, sz_u128 id, uint64_t hash) {
    if (id == 0) return NULL;
    sz_account_t *account = &ledger->account_slots[account_probe(ledger, id, hash)];
    return account->id == id ? account : NULL;
}

/* The index position holding id, or the empty position where it would go. */
SZ_INLINE uint64_t transfer_probe(const sz_ledger_t *ledger, sz_u128 id, uint64_t hash) {
    uint64_t tag = transfer_tag(hash);
    uint64_t position = hash & ledger->transfer_index_mask;
    for (uint64_t probe = 0; probe <= ledger->transfer_index_mask; probe++) {
        uint64_t entry = ledger->transfer_index[position];
        if (entry == 0) return position;
        if ((entry >> 32) == tag && ledger->transfers[(uint32_t)entry].id == id) {
            return position;
        }
        position = (position + 1) & ledger->transfer_index_mask;
    }
    SZ_ASSERT(false);
    return 0;
}

/* The transfer with this id, or NULL. */
SZ_INLINE sz_transfer_t *transfer_find(const sz_ledger_t *ledger, sz_u128 id, uint64_t hash) {
    if (id == 0) return NULL;
    uint64_t entry = ledger->transfer_index[transfer_probe(ledger, id, hash)];
    if (entry == 0) return NULL;
    return &ledger->transfers[(uint32_t)entry];
}

/* ---------------------------------------------------------------------------------------
 * Init. */

typedef struct layout {
    uint64_t account_slot_count;
    uint64_t transfer_index_size;
    size_t offset_account_order;
    size_t offset_transfers;
    size_t offset_metas;
    size_t offset_transfer_index;
    size_t offset_expiry_heap;
    size_t offset_history;
    size_t size;
} layout_t;

static size_t align_up(size_t value, size_t alignment) {
    return (value + alignment - 1) / alignment * alignment;
}

static bool config_valid(const sz_ledger_config_t *config) {
    return config->accounts_max >= 1 && config->accounts_max <= SZ_LEDGER_CAPACITY_MAX &&
           config->transfers_max >= 1 && config->transfers_max <= SZ_LEDGER_CAPACITY_MAX &&
           config->pending_max >= 1 && config->pending_max <= SZ_LEDGER_CAPACITY_MAX &&
           config->history_max >= 1 && config->history_max <= SZ_LEDGER_CAPACITY_MAX;
}

static layout_t layout_compute(const sz_ledger_config_t *config) {
    layout_t layout = {0};
    layout.account_slot_count =
        (uint64_t)config->accounts_max * ACCOUNT_LOAD_NUMERATOR / ACCOUNT_LOAD_DENOMINATOR + 1;
    layout.transfer_index_size = 2;
    while (layout.transfer_index_size < 2 * (uint64_t)config->transfers_max) {
        layout.transfer_index_size *= 2;
    }
    size_t size = align_up(layout.account_slot_count * sizeof(sz_account_t), 4096);
    layout.offset_account_order = size;
    size = align_up(size + (size_t)config->accounts_max * sizeof(uint32_t), 4096);
    layout.offset_transfers = size;
    size = align_up(size + (size_t)config->transfers_max * sizeof(sz_transfer_t), 4096);
    layout.offset_metas = size;
    size = align_up(size + (size_t)config->transfers_max * sizeof(transfer_meta_t), 4096);
    layout.offset_transfer_index = size;
    size = align_up(size + layout.transfer_index_size * sizeof(uint64_t), 4096);
    layout.offset_expiry_heap = size;
    size = align_up(size + (size_t)config->pending_max * sizeof(expiry_entry_t), 4096);
    layout.offset_history = size;
    size = align_up(size + (size_t)config->history_max * sizeof(sz_account_balance_t), 4096);
    layout.size = size;
    return layout;
}

size_t sz_ledger_memory_size(const sz_ledger_config_t *config) {
    if (!config_valid(config)) return 0;
    return layout_compute(config).size + sizeof(sz_ledger_t);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static void *memory_map(size_t size, bool prefault) {
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) return NULL;
    /* Huge pages cut the TLB misses of random table probes; advice only. */
    (void)madvise(memory, size, MADV_HUGEPAGE);
    if (prefault && madvise(memory, size, MADV_POPULATE_WRITE) != 0) {
        /* Older kernels: touch one byte a page instead. */
        for (size_t offset = 0; offset < size; offset += 4096) ((volatile char *)memory)[offset] = 0;
    }
    return memory;
}

int sz_ledger_init(const sz_ledger_config_t *config, sz_ledger_t **ledger_out) {
    if (!config_valid(config)) return -EINVAL;
    layout_t layout = layout_compute(config);
    sz_ledger_t *ledger = memory_map(sizeof(sz_ledger_t), false);
    if (ledger == NULL) return -ENOMEM;
    memset(ledger, 0, sizeof(*ledger));
    char *memory = memory_map(layout.size, config->prefault);
    if (memory == NULL) goto fail;
    ledger->memory = memory;
    ledger->memory_size = layout.size;
    ledger->account_slots = (sz_account_t *)memory;
    ledger->account_slot_count = layout.account_slot_count;
    ledger->account_order = (uint32_t *)(memory + layout.offset_account_order);
    ledger->accounts_max = config->accounts_max;
    ledger->transfers = (sz_transfer_t *)(memory + layout.offset_transfers);
    ledger->transfer_metas = (transfer_meta_t *)(memory + layout.offset_metas);
    ledger->transfer_index = (uint64_t *)(memory + layout.offset_transfer_index);
    ledger->transfer_index_mask = layout.transfer_index_size - 1;
    ledger->transfers_max = config->transfers_max;
    ledger->expiry_heap = (expiry_entry_t *)(memory + layout.offset_expiry_heap);
    ledger->pending_max = config->pending_max;
    ledger->history = (sz_account_balance_t *)(memory + layout.offset_history);
    ledger->history_max = config->history_max;
    ledger->hash_seed = config->hash_seed;
    ledger->prefetch_distance = SZ_LEDGER_PREFETCH_DISTANCE_DEFAULT;
    SZ_ASSERT(ledger->account_slot_count > ledger->accounts_max);
    SZ_ASSERT(ledger->transfer_index_mask + 1 >= 2 * (uint64_t)ledger->transfers_max);
    *ledger_out = ledger;
    return 0;
fail:
    sz_ledger_deinit(ledger);
    return -ENOMEM;
}

void sz_ledger_deinit(sz_ledger_t *ledger) {
    if (ledger == NULL) return;
    if (ledger->memory != NULL) munmap(ledger->memory, ledger->memory_size);
    munmap(ledger, sizeof(sz_ledger_t));
}

void sz_ledger_prefetch_set(sz_ledger_t *ledger, uint32_t distance) {
    SZ_ASSERT(distance <= SZ_LEDGER_PREFETCH_DISTANCE_MAX);
    ledger->prefetch_distance = distance;
}

uint64_t sz_ledger_timestamp_next(const sz_ledger_t *ledger, uint64_t clock_now_ns) {
    uint64_t next = ledger->timestamp_last + 1;
    return clock_now_ns > next ? clock_now_ns : next;
}

const char *sz_batch_status_name(uint32_t status) {
    switch (status) {
    case SZ_BATCH_APPLIED: return "applied";
    case SZ_BATCH_TOO_MANY_EVENTS: return "too_many_events";
    case SZ_BATCH_TIMESTAMP_INVALID: return "timestamp_invalid";
    case SZ_BATCH_ACCOUNTS_FULL: return "accounts_full";
    case SZ_BATCH_TRANSFERS_FULL: return "transfers_full";
    case SZ_BATCH_PENDING_FULL: return "pending_full";
    case SZ_BATCH_HISTORY_FULL: return "history_full";
    default: return "unknown";
    }
}

/* ---------------------------------------------------------------------------------------
 * The digest: each applied write batch folds its operation, timestamp, events and results
 * into the previous digest. */

typedef struct digest_input {
    sz_digest_t previous;
    uint64_t timestamp;
    uint32_t operation;
    uint32_t event_count;
    uint32_t result_count;
    uint32_t reserved;
    XXH128_hash_t events;
    XXH128_hash_t results;
} digest_input_t;

static void digest_fold(sz_ledger_t *ledger, sz_operation_t operation, uint64_t timestamp,
                        const void *events, size_t events_size, uint32_t event_count,
                        const void *results, size_t results_size, uint32_t result_count) {
    digest_input_t input;
    memset(&input, 0, sizeof(input));
    input.previous = ledger->digest;
    input.timestamp = timestamp;
    input.operation = (uint32_t)operation;
    input.event_count = event_count;
    input.result_count = result_count;
    input.events = XXH3_128bits(events, events_size);
    input.results = XXH3_128bits(results, results_size);
    XXH128_hash_t digest = XXH3_128bits(&input, sizeof(input));
    ledger->digest.low = digest.low64;
    ledger->digest.high = digest.high64;
}

sz_digest_t sz_ledger_digest(const sz_ledger_t *ledger) { return ledger->digest; }

/* ---------------------------------------------------------------------------------------
 * Capacity. */

static sz_batch_status_t batch_check(const sz_ledger_t *ledger, sz_operation_t operation,
                                     uint32_t event_count, uint64_t timestamp) {
    if (event_count > SZ_BATCH_EVENTS_MAX) return SZ_BATCH_TOO_MANY_EVENTS;
    if (timestamp <= ledger->timestamp_last) return SZ_BATCH_TIMESTAMP_INVALID;
    if (timestamp > SZ_TIMESTAMP_MAX) return SZ_BATCH_TIMESTAMP_INVALID;
    return sz_ledger_capacity_check(ledger, operation, event_count);
}

sz_batch_status_t sz_ledger_capacity_check(const sz_ledger_t *ledger, sz_operation_t operation,
                                           uint32_t event_count) {
    static const sz_ledger_reservation_t none = {0};
    return sz_ledger_capacity_check_reserved(ledger, operation, event_count, &none);
}

/* Counts are u32 and reservations at most a few ring's worth of batches, so the u64 sums
 * below cannot overflow. */
sz_batch_status_t sz_ledger_capacity_check_reserved(const sz_ledger_t *ledger,
                                                    sz_operation_t operation,
                                                    uint32_t event_count,
                                                    const sz_ledger_reservation_t *reserved) {
    if (event_count > SZ_BATCH_EVENTS_MAX) return SZ_BATCH_TOO_MANY_EVENTS;
    SZ_ASSERT(reserved->account_count <= UINT32_MAX && reserved->transfer_count <= UINT32_MAX);
    SZ_ASSERT(reserved->pending_count <= UINT32_MAX);
    SZ_ASSERT(reserved->history_count <= 2ull * UINT32_MAX);
    if (operation == SZ_OPERATION_CREATE_ACCOUNTS) {
        if ((uint64_t)ledger->account_count + reserved->account_count + event_count >
            ledger->accounts_max) {
            return SZ_BATCH_ACCOUNTS_FULL;
        }
    } else if (operation == SZ_OPERATION_CREATE_TRANSFERS) {
        if ((uint64_t)ledger->transfer_count + reserved->transfer_count + event_count >
            ledger->transfers_max) {
            return SZ_BATCH_TRANSFERS_FULL;
        }
        if ((uint64_t)ledger->pending_live + reserved->pending_count + event_count >
            ledger->pending_max) {
            return SZ_BATCH_PENDING_FULL;
        }
        if ((uint64_t)ledger->history_count + reserved->history_count + 2ull * event_count >
            ledger->history_max) {
            return SZ_BATCH_HISTORY_FULL;
        }
    }
    return SZ_BATCH_APPLIED;
}

void sz_ledger_reservation_add(sz_ledger_reservation_t *reservation, sz_operation_t operation,
                               uint32_t event_count, bool release) {
    SZ_ASSERT(event_count <= SZ_BATCH_EVENTS_MAX);
    sz_ledger_reservation_t batch = {0};
    if (operation == SZ_OPERATION_CREATE_ACCOUNTS) {
        batch.account_count = event_count;
    } else if (operation == SZ_OPERATION_CREATE_TRANSFERS) {
        batch.transfer_count = event_count;
        batch.pending_count = event_count;
        batch.history_count = 2ull * event_count;
    }
    if (!release) {
        reservation->account_count += batch.account_count;
        reservation->transfer_count += batch.transfer_count;
        reservation->pending_count += batch.pending_count;
        reservation->history_count += batch.history_count;
        return;
    }
    SZ_ASSERT(reservation->account_count >= batch.account_count);
    SZ_ASSERT(reservation->transfer_count >= batch.transfer_count);
    SZ_ASSERT(reservation->pending_count >= batch.pending_count);
    SZ_ASSERT(reservation->history_count >= batch.history_count);
    reservation->account_count -= batch.account_count;
    reservation->transfer_count -= batch.transfer_count;
    reservation->pending_count -= batch.pending_count;
    reservation->history_count -= batch.history_count;
}

/* ---------------------------------------------------------------------------------------
 * The expiry heap. */

SZ_INLINE bool expiry_before(const expiry_entry_t *a, const expiry_entry_t *b) {
    if (a->expires_at != b->expires_at) return a->expires_at < b->expires_at;
    return a->timestamp < b->timestamp;
}

static void expiry_sift_down(sz_ledger_t *ledger, uint32_t index) {
    expiry_entry_t *heap = ledger->expiry_heap;
    uint32_t count = ledger->expiry_count;
    while (true) {
        uint32_t smallest = index;
        uint32_t left = 2 * index + 1;
        uint32_t right = left + 1;
        if (left < count && expiry_before(&heap[left], &heap[smallest])) smallest = left;
        if (right < count && expiry_before(&heap[right], &heap[smallest])) smallest = right;
        if (smallest == index) return;
        expiry_entry_t swap = heap[index];
        heap[index] = heap[smallest];
        heap[smallest] = swap;
        index = smallest;
    }
}

static void expiry_push(sz_ledger_t *ledger, const expiry_entry_t *entry) {
    SZ_ASSERT(ledger->expiry_count < ledger->pending_max);
    expiry_entry_t *heap = ledger->expiry_heap;
    uint32_t index = ledger->expiry_count++;
    heap[index] = *entry;
    while (index > 0) {
        uint32_t parent = (index - 1) / 2;
        if (!expiry_before(&heap[index], &heap[parent])) break;
        expiry_entry_t swap = heap[index];
        heap[index] = heap[parent];
        heap[parent] = swap;
        index = parent;
    }
}

static void expiry_pop(sz_ledger_t *ledger) {
    SZ_ASSERT(ledger->expiry_count > 0);
    ledger->expiry_count--;
    ledger->expiry_heap[0] = ledger->expiry_heap[ledger->expiry_count];
    expiry_sift_down(ledger, 0);
}

/* An entry is live while its transfer exists (not rolled back) and is still pending. */
static bool expiry_live(const sz_ledger_t *ledger, const expiry_entry_t *entry) {
    if (entry->transfer_index >= ledger->transfer_count) return false;
    if (ledger->transfers[entry->transfer_index].timestamp != entry->timestamp) return false;
    return ledger->transfer_metas[entry->transfer_index].state == TRANSFER_STATE_PENDING;
}

/* Drops stale entries from the top so that the top, if any, is live. */
static void expiry_trim(sz_ledger_t *ledger) {
    while (ledger->expiry_count > 0 && !expiry_live(ledger, &ledger->expiry_heap[0])) {
        expiry_pop(ledger);
    }
}

/* Drops every stale entry and rebuilds the heap: makes room for a batch. */
static void expiry_compact(sz_ledger_t *ledger) {
    uint32_t kept = 0;
    for (uint32_t index = 0; index < ledger->expiry_count; index++) {
        if (expiry_live(ledger, &ledger->expiry_heap[index])) {
            ledger->expiry_heap[kept++] = ledger->expiry_heap[index];
        }
    }
    ledger->expiry_count = kept;
    for (uint32_t index = kept / 2; index-- > 0;) expiry_sift_down(ledger, index);
    SZ_ASSERT(ledger->expiry_count == ledger->pending_live);
}

uint64_t sz_ledger_expiry_next(const sz_ledger_t *ledger) {
    if (ledger->expiry_count == 0) return UINT64_MAX;
    SZ_ASSERT_DEBUG(expiry_live(ledger, &ledger->expiry_heap[0]));
    return ledger->expiry_heap[0].expires_at;
}

/* ---------------------------------------------------------------------------------------
 * create_accounts. */

static uint32_t account_create(sz_ledger_t *ledger, const sz_account_t *event, uint64_t hash,
                               uint64_t timestamp) {
    if (event->reserved != 0) return SZ_CREATE_ACCOUNT_RESERVED_FIELD;
    if ((event->flags & ~SZ_ACCOUNT_FLAGS_KNOWN) != 0) return SZ_CREATE_ACCOUNT_RESERVED_FLAG;
    if (event->id == 0) return SZ_CREATE_ACCOUNT_ID_MUST_NOT_BE_ZERO;
    if (event->id == SZ_U128_MAX) return SZ_CREATE_ACCOUNT_ID_MUST_NOT_BE_INT_MAX;
    if ((event->flags & SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) != 0 &&
        (event->flags & SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS) != 0) {
        return SZ_CREATE_ACCOUNT_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    }
    if (event->debits_pending != 0) return SZ_CREATE_ACCOUNT_DEBITS_PENDING_MUST_BE_ZERO;
    if (event->debits_posted != 0) return SZ_CREATE_ACCOUNT_DEBITS_POSTED_MUST_BE_ZERO;
    if (event->credits_pending != 0) return SZ_CREATE_ACCOUNT_CREDITS_PENDING_MUST_BE_ZERO;
    if (event->credits_posted != 0) return SZ_CREATE_ACCOUNT_CREDITS_POSTED_MUST_BE_ZERO;
    if (event->ledger == 0) return SZ_CREATE_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO;
    if (event->code == 0) return SZ_CREATE_ACCOUNT_CODE_MUST_NOT_BE_ZERO;

    uint64_t slot = account_probe(ledger, event->id, hash);
    sz_account_t *account = &ledger->account_slots[slot];
    if (account->id == event->id) {
        if (account->flags != event->flags) return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_FLAGS;
        if (account->user_data_128 != event->user_data_128) {
            return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_128;
        }
        if (account->user_data_64 != event->user_data_64) {
            return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_64;
        }
        if (account->user_data_32 != event->user_data_32) {
            return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_32;
        }
        if (account->ledger != event->ledger) return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_LEDGER;
        if (account->code != event->code) return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_CODE;
        return SZ_CREATE_ACCOUNT_EXISTS;
    }
    SZ_ASSERT(account->id == 0);
    SZ_ASSERT(ledger->account_count < ledger->accounts_max);
    *account = *event;
    account->timestamp = timestamp;
    account->reserved = 0;
    ledger->account_order[ledger->account_count++] = (uint32_t)slot;
    return SZ_CREATE_ACCOUNT_OK;
}

/* Removes the newest account (linked chain rollback). */
static void account_undo_last(sz_ledger_t *ledger) {
    SZ_ASSERT(ledger->account_count > 0);
    uint32_t slot = ledger->account_order[--ledger->account_count];
    sz_account_t *account = &ledger->account_slots[slot];
    SZ_ASSERT(account->id != 0);
    SZ_ASSERT(account->reserved == 0); /* no transfer can touch it inside the batch */
    memset(account, 0, sizeof(*account));
}

/* The chain bookkeeping shared by both create loops (SEMANTICS.md "Linked chain"). */
typedef struct chain {
    bool open;
    bool broken;
    uint32_t start;
    uint32_t applied;
} chain_t;

typedef struct results {
    sz_create_result_t *items;
    uint32_t count;
} results_t;

SZ_INLINE void results_push(results_t *results, uint32_t index, uint32_t result) {
    results->items[results->count].index = index;
    results->items[results->count].result = result;
    results->count++;
}

/* The checks every event gets first; returns 0 (ok) to go on to the event's own checks. */
SZ_INLINE uint32_t chain_begin(chain_t *chain, bool linked, uint32_t index, uint32_t count,
                               uint64_t event_timestamp) {
    if (linked && !chain->open) {
        chain->open = true;
        chain->broken = false;
        chain->start = index;
        chain->applied = 0;
    }
    /* Codes 1..3 mean the same in both operations. */
    if (linked && index == count - 1) return SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN;
    if (chain->broken) return SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED;
    if (event_timestamp != 0) return SZ_CREATE_TRANSFER_TIMESTAMP_MUST_BE_ZERO;
    return 0;
}

/* Records the event's result; on a chain's first failure returns how many applied members
 * the caller must roll back (newest first) before going on. */
SZ_INLINE uint32_t chain_end(chain_t *chain, results_t *results, bool linked, uint32_t index,
                             uint32_t result) {
    uint32_t rollback_count = 0;
    if (result == 0) {
        if (chain->open) chain->applied++;
    } else {
        if (chain->open && !chain->broken) {
            chain->broken = true;
            rollback_count = chain->applied;
            for (uint32_t member = chain->start; member < index; member++) {
                results_push(results, member, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED);
            }
        }
        results_push(results, index, result);
    }
    if (chain->open && (!linked || result == SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN)) {
        chain->open = false;
        chain->broken = false;
    }
    return rollback_count;
}

static_assert((int)SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED ==
                  (int)SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED, "shared chain codes");
static_assert((int)SZ_CREATE_ACCOUNT_LINKED_EVENT_CHAIN_OPEN ==
                  (int)SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN, "shared chain codes");
static_assert((int)SZ_CREATE_ACCOUNT_TIMESTAMP_MUST_BE_ZERO ==
                  (int)SZ_CREATE_TRANSFER_TIMESTAMP_MUST_BE_ZERO, "shared chain codes");

sz_batch_status_t sz_ledger_create_accounts(sz_ledger_t *ledger, const sz_account_t *events,
                                            uint32_t event_count, uint64_t timestamp,
                                            sz_create_result_t *results_out,
                                            uint32_t *result_count_out) {
    sz_batch_status_t status =
        batch_check(ledger, SZ_OPERATION_CREATE_ACCOUNTS, event_count, timestamp);
    *result_count_out = 0;
    if (status != SZ_BATCH_APPLIED) return status;

    uint64_t hashes[LOOKAHEAD_RING_SIZE];
    uint32_t distance = ledger->prefetch_distance;
    results_t results = {.items = results_out, .count = 0};
    chain_t chain = {0};
    for (uint32_t ahead = 0; ahead < distance && ahead < event_count; ahead++) {
        hashes[ahead] = id_hash(ledger, events[ahead].id);
        account_prefetch(ledger, hashes[ahead]);
    }
    for (uint32_t index = 0; index < event_count; index++) {
        uint32_t ahead = index + distance;
        if (ahead < event_count) {
            hashes[ahead % LOOKAHEAD_RING_SIZE] = id_hash(ledger, events[ahead].id);
            account_prefetch(ledger, hashes[ahead % LOOKAHEAD_RING_SIZE]);
        }
        if (distance == 0) hashes[index % LOOKAHEAD_RING_SIZE] = id_hash(ledger, events[index].id);
        const sz_account_t *event = &events[index];
        bool linked = (event->flags & SZ_ACCOUNT_LINKED) != 0;
        uint32_t result = chain_begin(&chain, linked, index, event_count, event->timestamp);
        if (result == 0) {
            result = account_create(ledger, event, hashes[index % LOOKAHEAD_RING_SIZE],
                                    timestamp + index);
        }
        uint32_t rollback_count = chain_end(&chain, &results, linked, index, result);
        for (uint32_t member = 0; member < rollback_count; member++) account_undo_last(ledger);
    }
    ledger->timestamp_last = timestamp + event_count - 1;
    if (event_count == 0) ledger->timestamp_last = timestamp;
    ledger->op_count++;
    digest_fold(ledger, SZ_OPERATION_CREATE_ACCOUNTS, timestamp, events,
                (size_t)event_count * sizeof(*events), event_count, results.items,
                (size_t)results.count * sizeof(sz_create_result_t), results.count);
    *result_count_out = results.count;
    return SZ_BATCH_APPLIED;
}

/* ---------------------------------------------------------------------------------------
 * create_transfers. */

typedef struct transfer_hashes {
    uint64_t id;
    uint64_t debit;
    uint64_t credit;
    uint64_t pending;
} transfer_hashes_t;

SZ_INLINE void transfer_hashes_compute(const sz_ledger_t *ledger, const sz_transfer_t *event,
                                       transfer_hashes_t *hashes) {
    hashes->id = id_hash(ledger, event->id);
    if ((event->flags & (SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING)) != 0) {
        hashes->pending = id_hash(ledger, event->pending_id);
        hashes->debit = 0;
        hashes->credit = 0;
    } else {
        hashes->debit = id_hash(ledger, event->debit_account_id);
        hashes->credit = id_hash(ledger, event->credit_account_id);
        hashes->pending = 0;
    }
}

SZ_INLINE void transfer_prefetch(const sz_ledger_t *ledger, const sz_transfer_t *event,
                                 const transfer_hashes_t *hashes) {
    transfer_index_prefetch(ledger, hashes->id);
    if ((event->flags & (SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING)) != 0) {
        transfer_index_prefetch(ledger, hashes->pending);
    } else {
        account_prefetch(ledger, hashes->debit);
        account_prefetch(ledger, hashes->credit);
    }
}

/* Links the new transfer into both accounts' histories and writes balance rows. */
SZ_INLINE void transfer_record(sz_ledger_t *ledger, const sz_transfer_t *transfer,
                               uint64_t index_position, uint64_t hash, sz_account_t *debit,
                               sz_account_t *credit, uint8_t state) {
    uint32_t transfer_index = ledger->transfer_count;
    SZ_ASSERT(transfer_index < ledger->transfers_max);
    SZ_ASSERT(ledger->transfer_index[index_position] == 0);
    ledger->transfers[transfer_index] = *transfer;
    transfer_meta_t *meta = &ledger->transfer_metas[transfer_index];
    meta->debit_previous = debit->reserved;
    meta->credit_previous = credit->reserved;
    meta->history_index = ledger->history_count;
    meta->state = state;
    meta->history_sides = 0;
    meta->reserved = 0;
    debit->reserved = transfer_index + 1;
    credit->reserved = transfer_index + 1;
    ledger->transfer_index[index_position] = ((uint64_t)transfer_tag(hash) << 32) | transfer_index;
    ledger->transfer_count++;
    const sz_account_t *sides[2] = {debit, credit};
    for (uint32_t side = 0; side < 2; side++) {
        if ((sides[side]->flags & SZ_ACCOUNT_HISTORY) == 0) continue;
        SZ_ASSERT(ledger->history_count < ledger->history_max);
        sz_account_balance_t *row = &ledger->history[ledger->history_count++];
        memset(row, 0, sizeof(*row));
        row->debits_pending = sides[side]->debits_pending;
        row->debits_posted = sides[side]->debits_posted;
        row->credits_pending = sides[side]->credits_pending;
        row->credits_posted = sides[side]->credits_posted;
        row->timestamp = transfer->timestamp;
        meta->history_sides |= (uint8_t)(side == 0 ? HISTORY_DEBIT : HISTORY_CREDIT);
    }
}

static uint32_t transfer_exists(const sz_transfer_t *event, const sz_transfer_t *existing) {
    if (existing->flags != event->flags) return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_FLAGS;
    if (existing->debit_account_id != event->debit_account_id) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID;
    }
    if (existing->credit_account_id != event->credit_account_id) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID;
    }
    /* With a balancing flag the request's amount is an upper limit (0: none) and the
     * stored amount the clamped one: a faithful retry asks for at least what was booked,
     * so only a request below it differs (as TigerBeetle 0.15). */
    bool balancing =
        (event->flags & (SZ_TRANSFER_BALANCING_DEBIT | SZ_TRANSFER_BALANCING_CREDIT)) != 0;
    if (balancing ? (event->amount != 0 && event->amount < existing->amount)
                  : existing->amount != event->amount) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT;
    }
    if (existing->user_data_128 != event->user_data_128) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_128;
    }
    if (existing->user_data_64 != event->user_data_64) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_64;
    }
    if (existing->user_data_32 != event->user_data_32) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_32;
    }
    if (existing->timeout != event->timeout) return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_TIMEOUT;
    if (existing->code != event->code) return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_CODE;
    return SZ_CREATE_TRANSFER_EXISTS;
}

SZ_INLINE bool sum_overflows(sz_u128 a, sz_u128 b) {
    sz_u128 sum;
    return __builtin_add_overflow(a, b, &sum);
}

SZ_INLINE sz_u128 subtract_saturating(sz_u128 a, sz_u128 b) { return a > b ? a - b : 0; }

SZ_INLINE sz_u128 add_saturating(sz_u128 a, sz_u128 b) {
    sz_u128 sum;
    return __builtin_add_overflow(a, b, &sum) ? SZ_U128_MAX : sum;
}

/* The plain and pending path of SEMANTICS.md, after the common and id checks. */
static uint32_t transfer_create_plain(sz_ledger_t *ledger, const sz_transfer_t *event,
                                      const transfer_hashes_t *hashes, uint64_t timestamp) {
    uint16_t flags = event->flags;
    bool pending = (flags & SZ_TRANSFER_PENDING) != 0;
    bool balancing_debit = (flags & SZ_TRANSFER_BALANCING_DEBIT) != 0;
    bool balancing_credit = (flags & SZ_TRANSFER_BALANCING_CREDIT) != 0;
    if (event->debit_account_id == 0) return SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO;
    if (event->debit_account_id == SZ_U128_MAX) {
        return SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX;
    }
    if (event->credit_account_id == 0) return SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO;
    if (event->credit_account_id == SZ_U128_MAX) {
        return SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX;
    }
    if (event->debit_account_id == event->credit_account_id) {
        return SZ_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT;
    }
    if (event->pending_id != 0) return SZ_CREATE_TRANSFER_PENDING_ID_MUST_BE_ZERO;
    if (!pending && event->timeout != 0) {
        return SZ_CREATE_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER;
    }
    if (!balancing_debit && !balancing_credit && event->amount == 0) {
        return SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO;
    }
    if (event->ledger == 0) return SZ_CREATE_TRANSFER_LEDGER_MUST_NOT_BE_ZERO;
    if (event->code == 0) return SZ_CREATE_TRANSFER_CODE_MUST_NOT_BE_ZERO;
    sz_account_t *debit = account_find(ledger, event->debit_account_id, hashes->debit);
    if (debit == NULL) return SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND;
    sz_account_t *credit = account_find(ledger, event->credit_account_id, hashes->credit);
    if (credit == NULL) return SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND;
    if (debit->ledger != credit->ledger) return SZ_CREATE_TRANSFER_ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER;
    if (event->ledger != debit->ledger) {
        return SZ_CREATE_TRANSFER_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS;
    }
    uint64_t position = transfer_probe(ledger, event->id, hashes->id);
    uint64_t entry = ledger->transfer_index[position];
    if (entry != 0) return transfer_exists(event, &ledger->transfers[(uint32_t)entry]);

    sz_u128 amount = event->amount;
    if ((balancing_debit || balancing_credit) && amount == 0) amount = UINT64_MAX;
    if (balancing_debit) {
        sz_u128 balance = add_saturating(debit->debits_posted, debit->debits_pending);
        sz_u128 available = subtract_saturating(debit->credits_posted, balance);
        if (available < amount) amount = available;
        if (amount == 0) return SZ_CREATE_TRANSFER_EXCEEDS_CREDITS;
    }
    if (balancing_credit) {
        sz_u128 balance = add_saturating(credit->credits_posted, credit->credits_pending);
        sz_u128 available = subtract_saturating(credit->debits_posted, balance);
        if (available < amount) amount = available;
        if (amount == 0) return SZ_CREATE_TRANSFER_EXCEEDS_DEBITS;
    }
    if (pending) {
        if (sum_overflows(amount, debit->debits_pending)) {
            return SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS_PENDING;
        }
        if (sum_overflows(amount, credit->credits_pending)) {
            return SZ_CREATE_TRANSFER_OVERFLOWS_CREDITS_PENDING;
        }
    }
    if (sum_overflows(amount, debit->debits_posted)) return SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS_POSTED;
    if (sum_overflows(amount, credit->credits_posted)) {
        return SZ_CREATE_TRANSFER_OVERFLOWS_CREDITS_POSTED;
    }
    /* pending + posted never overflows: every transfer checks it below. */
    sz_u128 debits = debit->debits_pending + debit->debits_posted;
    sz_u128 credits = credit->credits_pending + credit->credits_posted;
    SZ_ASSERT(debits >= debit->debits_posted);
    SZ_ASSERT(credits >= credit->credits_posted);
    if (sum_overflows(amount, debits)) return SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS;
    if (sum_overflows(amount, credits)) return SZ_CREATE_TRANSFER_OVERFLOWS_CREDITS;
    uint64_t timeout_ns = (uint64_t)event->timeout * NS_PER_S;
    if (timestamp > UINT64_MAX - timeout_ns) return SZ_CREATE_TRANSFER_OVERFLOWS_TIMEOUT;
    if ((debit->flags & SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) != 0 &&
        debits + amount > debit->credits_posted) {
        return SZ_CREATE_TRANSFER_EXCEEDS_CREDITS;
    }
    if ((credit->flags & SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS) != 0 &&
        credits + amount > credit->debits_posted) {
        return SZ_CREATE_TRANSFER_EXCEEDS_DEBITS;
    }

    if (pending) {
        debit->debits_pending += amount;
        credit->credits_pending += amount;
    } else {
        debit->debits_posted += amount;
        credit->credits_posted += amount;
    }
    sz_transfer_t stored = *event;
    stored.amount = amount;
    stored.timestamp = timestamp;
    uint32_t transfer_index = ledger->transfer_count;
    transfer_record(ledger, &stored, position, hashes->id, debit, credit,
                    pending ? TRANSFER_STATE_PENDING : TRANSFER_STATE_NONE);
    if (pending && event->timeout != 0) {
        expiry_entry_t expiry = {.expires_at = timestamp + timeout_ns,
                                 .timestamp = timestamp,
                                 .transfer_index = transfer_index,
                                 .reserved = 0};
        expiry_push(ledger, &expiry);
        ledger->pending_live++;
    }
    return SZ_CREATE_TRANSFER_OK;
}

SZ_INLINE uint64_t transfer_expires_at(const sz_transfer_t *transfer) {
    SZ_ASSERT(transfer->timeout != 0);
    return transfer->timestamp + (uint64_t)transfer->timeout * NS_PER_S;
}

static uint32_t post_or_void_exists(const sz_transfer_t *event, const sz_transfer_t *existing,
                                    const sz_transfer_t *pending, sz_u128 amount) {
    if (existing->flags != event->flags) return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_FLAGS;
    if (existing->amount != amount) return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT;
    if (existing->pending_id != event->pending_id) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_PENDING_ID;
    }
    sz_u128 user_data_128 = event->user_data_128 != 0 ? event->user_data_128 : pending->user_data_128;
    uint64_t user_data_64 = event->user_data_64 != 0 ? event->user_data_64 : pending->user_data_64;
    uint32_t user_data_32 = event->user_data_32 != 0 ? event->user_data_32 : pending->user_data_32;
    if (existing->user_data_128 != user_data_128) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_128;
    }
    if (existing->user_data_64 != user_data_64) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_64;
    }
    if (existing->user_data_32 != user_data_32) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_32;
    }
    return SZ_CREATE_TRANSFER_EXISTS;
}

/* The post and void path of SEMANTICS.md, after the common and id checks. */
static uint32_t transfer_create_post_or_void(sz_ledger_t *ledger, const sz_transfer_t *event,
                                             const transfer_hashes_t *hashes,
                                             uint64_t timestamp) {
    uint16_t flags = event->flags;
    bool post = (flags & SZ_TRANSFER_POST_PENDING) != 0;
    bool void_ = (flags & SZ_TRANSFER_VOID_PENDING) != 0;
    if (post && void_) return SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    if ((flags & SZ_TRANSFER_PENDING) != 0) return SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    if ((flags & SZ_TRANSFER_BALANCING_DEBIT) != 0) {
        return SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    }
    if ((flags & SZ_TRANSFER_BALANCING_CREDIT) != 0) {
        return SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    }
    if (event->pending_id == 0) return SZ_CREATE_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO;
    if (event->pending_id == SZ_U128_MAX) return SZ_CREATE_TRANSFER_PENDING_ID_MUST_NOT_BE_INT_MAX;
    if (event->pending_id == event->id) return SZ_CREATE_TRANSFER_PENDING_ID_MUST_BE_DIFFERENT;
    if (event->timeout != 0) return SZ_CREATE_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER;
    sz_transfer_t *pending = transfer_find(ledger, event->pending_id, hashes->pending);
    if (pending == NULL) return SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_FOUND;
    if ((pending->flags & SZ_TRANSFER_PENDING) == 0) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_PENDING;
    }
    if (event->debit_account_id != 0 && event->debit_account_id != pending->debit_account_id) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID;
    }
    if (event->credit_account_id != 0 && event->credit_account_id != pending->credit_account_id) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID;
    }
    if (event->ledger != 0 && event->ledger != pending->ledger) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_LEDGER;
    }
    if (event->code != 0 && event->code != pending->code) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CODE;
    }
    sz_u128 amount = event->amount != 0 ? event->amount : pending->amount;
    if (amount > pending->amount) return SZ_CREATE_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT;
    if (void_ && amount < pending->amount) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT;
    }
    uint64_t position = transfer_probe(ledger, event->id, hashes->id);
    uint64_t entry = ledger->transfer_index[position];
    if (entry != 0) {
        return post_or_void_exists(event, &ledger->transfers[(uint32_t)entry], pending, amount);
    }
    uint32_t pending_index = (uint32_t)(pending - ledger->transfers);
    transfer_meta_t *pending_meta = &ledger->transfer_metas[pending_index];
    if (pending_meta->state == TRANSFER_STATE_POSTED) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED;
    }
    if (pending_meta->state == TRANSFER_STATE_VOIDED) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED;
    }
    if (pending_meta->state == TRANSFER_STATE_EXPIRED) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED;
    }
    SZ_ASSERT(pending_meta->state == TRANSFER_STATE_PENDING);
    if (pending->timeout != 0 && timestamp >= transfer_expires_at(pending)) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED;
    }

    sz_account_t *debit = account_find(ledger, pending->debit_account_id,
                                       id_hash(ledger, pending->debit_account_id));
    sz_account_t *credit = account_find(ledger, pending->credit_account_id,
                                        id_hash(ledger, pending->credit_account_id));
    SZ_ASSERT(debit != NULL);
    SZ_ASSERT(credit != NULL);
    SZ_ASSERT(debit->debits_pending >= pending->amount);
    SZ_ASSERT(credit->credits_pending >= pending->amount);
    debit->debits_pending -= pending->amount;
    credit->credits_pending -= pending->amount;
    if (post) {
        SZ_ASSERT(!sum_overflows(debit->debits_posted, amount));
        SZ_ASSERT(!sum_overflows(credit->credits_posted, amount));
        debit->debits_posted += amount;
        credit->credits_posted += amount;
    }
    pending_meta->state = post ? TRANSFER_STATE_POSTED : TRANSFER_STATE_VOIDED;
    if (pending->timeout != 0) {
        SZ_ASSERT(ledger->pending_live > 0);
        ledger->pending_live--;
    }

    sz_transfer_t stored = *event;
    stored.debit_account_id = pending->debit_account_id;
    stored.credit_account_id = pending->credit_account_id;
    stored.ledger = pending->ledger;
    stored.code = pending->code;
    stored.amount = amount;
    stored.timeout = 0;
    stored.timestamp = timestamp;
    if (stored.user_data_128 == 0) stored.user_data_128 = pending->user_data_128;
    if (stored.user_data_64 == 0) stored.user_data_64 = pending->user_data_64;
    if (stored.user_data_32 == 0) stored.user_data_32 = pending->user_data_32;
    transfer_record(ledger, &stored, position, hashes->id, debit, credit, TRANSFER_STATE_NONE);
    return SZ_CREATE_TRANSFER_OK;
}

SZ_INLINE uint32_t transfer_create(sz_ledger_t *ledger, const sz_transfer_t *event,
                                   const transfer_hashes_t *hashes, uint64_t timestamp) {
    if ((event->flags & ~SZ_TRANSFER_FLAGS_KNOWN) != 0) return SZ_CREATE_TRANSFER_RESERVED_FLAG;
    if (event->id == 0) return SZ_CREATE_TRANSFER_ID_MUST_NOT_BE_ZERO;
    if (event->id == SZ_U128_MAX) return SZ_CREATE_TRANSFER_ID_MUST_NOT_BE_INT_MAX;
    if ((event->flags & (SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING)) != 0) {
        return transfer_create_post_or_void(ledger, event, hashes, timestamp);
    }
    return transfer_create_plain(ledger, event, hashes, timestamp);
}

/* Removes the newest transfer and reverses its effects (linked chain rollback). */
static void transfer_undo_last(sz_ledger_t *ledger) {
    SZ_ASSERT(ledger->transfer_count > 0);
    uint32_t transfer_index = ledger->transfer_count - 1;
    const sz_transfer_t *transfer = &ledger->transfers[transfer_index];
    const transfer_meta_t *meta = &ledger->transfer_metas[transfer_index];
    sz_account_t *debit = account_find(ledger, transfer->debit_account_id,
                                       id_hash(ledger, transfer->debit_account_id));
    sz_account_t *credit = account_find(ledger, transfer->credit_account_id,
                                        id_hash(ledger, transfer->credit_account_id));
    SZ_ASSERT(debit != NULL && debit->reserved == transfer_index + 1);
    SZ_ASSERT(credit != NULL && credit->reserved == transfer_index + 1);
    uint16_t flags = transfer->flags;
    if ((flags & (SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING)) != 0) {
        sz_transfer_t *pending =
            transfer_find(ledger, transfer->pending_id, id_hash(ledger, transfer->pending_id));
        SZ_ASSERT(pending != NULL);
        transfer_meta_t *pending_meta = &ledger->transfer_metas[pending - ledger->transfers];
        SZ_ASSERT(pending_meta->state == TRANSFER_STATE_POSTED ||
                  pending_meta->state == TRANSFER_STATE_VOIDED);
        pending_meta->state = TRANSFER_STATE_PENDING;
        if (pending->timeout != 0) ledger->pending_live++;
        debit->debits_pending += pending->amount;
        credit->credits_pending += pending->amount;
        if ((flags & SZ_TRANSFER_POST_PENDING) != 0) {
            debit->debits_posted -= transfer->amount;
            credit->credits_posted -= transfer->amount;
        }
    } else if ((flags & SZ_TRANSFER_PENDING) != 0) {
        SZ_ASSERT(meta->state == TRANSFER_STATE_PENDING);
        debit->debits_pending -= transfer->amount;
        credit->credits_pending -= transfer->amount;
        /* Its heap entry goes stale: the index will be reused with another timestamp. */
        if (transfer->timeout != 0) ledger->pending_live--;
    } else {
        debit->debits_posted -= transfer->amount;
        credit->credits_posted -= transfer->amount;
    }
    debit->reserved = meta->debit_previous;
    credit->reserved = meta->credit_previous;
    ledger->history_count -= (uint32_t)__builtin_popcount(meta->history_sides);
    uint64_t position = transfer_probe(ledger, transfer->id, id_hash(ledger, transfer->id));
    SZ_ASSERT((uint32_t)ledger->transfer_index[position] == transfer_index);
    ledger->transfer_index[position] = 0;
    ledger->transfer_count--;
}

sz_batch_status_t sz_ledger_create_transfers(sz_ledger_t *ledger, const sz_transfer_t *events,
                                             uint32_t event_count, uint64_t timestamp,
                                             sz_create_result_t *results_out,
                                             uint32_t *result_count_out) {
    sz_batch_status_t status =
        batch_check(ledger, SZ_OPERATION_CREATE_TRANSFERS, event_count, timestamp);
    *result_count_out = 0;
    if (status != SZ_BATCH_APPLIED) return status;
    if ((uint64_t)ledger->expiry_count + event_count > ledger->pending_max) {
        expiry_compact(ledger);
    }

    transfer_hashes_t hashes[LOOKAHEAD_RING_SIZE];
    uint32_t distance = ledger->prefetch_distance;
    results_t results = {.items = results_out, .count = 0};
    chain_t chain = {0};
    for (uint32_t ahead = 0; ahead < distance && ahead < event_count; ahead++) {
        transfer_hashes_compute(ledger, &events[ahead], &hashes[ahead]);
        transfer_prefetch(ledger, &events[ahead], &hashes[ahead]);
    }
    for (uint32_t index = 0; index < event_count; index++) {
        uint32_t ahead = index + distance;
        if (ahead < event_count) {
            transfer_hashes_t *slot = &hashes[ahead % LOOKAHEAD_RING_SIZE];
            transfer_hashes_compute(ledger, &events[ahead], slot);
            transfer_prefetch(ledger, &events[ahead], slot);
        }
        transfer_hashes_t *event_hashes = &hashes[index % LOOKAHEAD_RING_SIZE];
        if (distance == 0) transfer_hashes_compute(ledger, &events[index], event_hashes);
        const sz_transfer_t *event = &events[index];
        bool linked = (event->flags & SZ_TRANSFER_LINKED) != 0;
        uint32_t result = chain_begin(&chain, linked, index, event_count, event->timestamp);
        if (result == 0) result = transfer_create(ledger, event, event_hashes, timestamp + index);
        uint32_t rollback_count = chain_end(&chain, &results, linked, index, result);
        for (uint32_t member = 0; member < rollback_count; member++) transfer_undo_last(ledger);
    }
    expiry_trim(ledger);
    ledger->timestamp_last = timestamp + event_count - 1;
    if (event_count == 0) ledger->timestamp_last = timestamp;
    ledger->op_count++;
    digest_fold(ledger, SZ_OPERATION_CREATE_TRANSFERS, timestamp, events,
                (size_t)event_count * sizeof(*events), event_count, results.items,
                (size_t)results.count * sizeof(sz_create_result_t), results.count);
    *result_count_out = results.count;
    return SZ_BATCH_APPLIED;
}

/* ---------------------------------------------------------------------------------------
 * Expiry. */

sz_batch_status_t sz_ledger_expire_pending(sz_ledger_t *ledger, uint64_t timestamp,
                                           sz_u128 *expired_ids_out,
                                           uint32_t *expired_count_out) {
    *expired_count_out = 0;
    if (timestamp <= ledger->timestamp_last || timestamp > SZ_TIMESTAMP_MAX) {
        return SZ_BATCH_TIMESTAMP_INVALID;
    }
    uint32_t expired_count = 0;
    /* Folded into the digest: which transfers this op expired. */
    XXH3_state_t expired_hash;
    XXH3_128bits_reset(&expired_hash);
    while (ledger->expiry_count > 0 && expired_count < SZ_EXPIRE_EVENTS_MAX) {
        expiry_entry_t top = ledger->expiry_heap[0];
        if (top.expires_at > timestamp) break;
        expiry_pop(ledger);
        if (!expiry_live(ledger, &top)) continue;
        sz_transfer_t *pending = &ledger->transfers[top.transfer_index];
        sz_account_t *debit = account_find(ledger, pending->debit_account_id,
                                           id_hash(ledger, pending->debit_account_id));
        sz_account_t *credit = account_find(ledger, pending->credit_account_id,
                                            id_hash(ledger, pending->credit_account_id));
        SZ_ASSERT(debit != NULL && credit != NULL);
        SZ_ASSERT(debit->debits_pending >= pending->amount);
        SZ_ASSERT(credit->credits_pending >= pending->amount);
        debit->debits_pending -= pending->amount;
        credit->credits_pending -= pending->amount;
        ledger->transfer_metas[top.transfer_index].state = TRANSFER_STATE_EXPIRED;
        SZ_ASSERT(ledger->pending_live > 0);
        ledger->pending_live--;
        if (expired_ids_out != NULL) expired_ids_out[expired_count] = pending->id;
        (void)XXH3_128bits_update(&expired_hash, &pending->id, sizeof(pending->id));
        expired_count++;
    }
    expiry_trim(ledger);
    ledger->timestamp_last = timestamp;
    ledger->op_count++;
    XXH128_hash_t expired = XXH3_128bits_digest(&expired_hash);
    digest_fold(ledger, SZ_OPERATION_EXPIRE_PENDING, timestamp, &expired, sizeof(expired),
                expired_count, NULL, 0, 0);
    *expired_count_out = expired_count;
    return SZ_BATCH_APPLIED;
}

/* ---------------------------------------------------------------------------------------
 * Queries. */

uint32_t sz_ledger_lookup_accounts(const sz_ledger_t *ledger, const sz_u128 *ids,
                                   uint32_t id_count, sz_account_t *accounts_out) {
    uint32_t found = 0;
    for (uint32_t index = 0; index < id_count; index++) {
        const sz_account_t *account = account_find(ledger, ids[index], id_hash(ledger, ids[index]));
        if (account == NULL) continue;
        accounts_out[found] = *account;
        accounts_out[found].reserved = 0; /* our transfer link, never shown */
        found++;
    }
    return found;
}

uint32_t sz_ledger_lookup_transfers(const sz_ledger_t *ledger, const sz_u128 *ids,
                                    uint32_t id_count, sz_transfer_t *transfers_out) {
    uint32_t found = 0;
    for (uint32_t index = 0; index < id_count; index++) {
        const sz_transfer_t *transfer =
            transfer_find(ledger, ids[index], id_hash(ledger, ids[index]));
        if (transfer != NULL) transfers_out[found++] = *transfer;
    }
    return found;
}

static bool filter_valid(const sz_account_filter_t *filter) {
    if (filter->account_id == 0 || filter->account_id == SZ_U128_MAX) return false;
    if (filter->limit == 0) return false;
    if ((filter->flags & (SZ_FILTER_DEBITS | SZ_FILTER_CREDITS)) == 0) return false;
    if ((filter->flags & ~(uint32_t)SZ_FILTER_FLAGS_KNOWN) != 0) return false;
    uint64_t timestamp_max = filter->timestamp_max == 0 ? UINT64_MAX : filter->timestamp_max;
    if (filter->timestamp_min > timestamp_max) return false;
    for (size_t index = 0; index < sizeof(filter->reserved); index++) {
        if (filter->reserved[index] != 0) return false;
    }
    return true;
}

static void matches_reverse(uint32_t *matches, uint32_t begin, uint32_t end) {
    while (end > begin + 1) {
        end--;
        uint32_t swap = matches[begin];
        matches[begin] = matches[end];
        matches[end] = swap;
        begin++;
    }
}

/* Finds the filter's transfers of an account, as (transfer index << 1 | is_credit), in the
 * filter's order; returns the count (at most row_count_max, itself at most
 * SZ_BATCH_EVENTS_MAX). Walks the account's newest-first list, so a query costs the
 * account's transfers newer than timestamp_min (plus the rows for descending order). */
static uint32_t account_matches(const sz_ledger_t *ledger, const sz_account_filter_t *filter,
                                uint32_t row_count_max, const sz_account_t **account_out,
                                uint32_t *matches) {
    *account_out = NULL;
    if (!filter_valid(filter)) return 0;
    const sz_account_t *account =
        account_find(ledger, filter->account_id, id_hash(ledger, filter->account_id));
    if (account == NULL) return 0;
    *account_out = account;
    uint32_t capacity = filter->limit < row_count_max ? filter->limit : row_count_max;
    if (capacity > SZ_BATCH_EVENTS_MAX) capacity = SZ_BATCH_EVENTS_MAX;
    if (capacity == 0) return 0;
    uint64_t timestamp_max = filter->timestamp_max == 0 ? UINT64_MAX : filter->timestamp_max;
    bool reversed = (filter->flags & SZ_FILTER_REVERSED) != 0;
    uint64_t matched = 0;
    uint32_t link = account->reserved;
    while (link != 0) {
        uint32_t transfer_index = link - 1;
        SZ_ASSERT(transfer_index < ledger->transfer_count);
        const sz_transfer_t *transfer = &ledger->transfers[transfer_index];
        const transfer_meta_t *meta = &ledger->transfer_metas[transfer_index];
        bool is_credit = transfer->credit_account_id == account->id;
        SZ_ASSERT(is_credit || transfer->debit_account_id == account->id);
        uint32_t next = is_credit ? meta->credit_previous : meta->debit_previous;
        SZ_ASSERT(next < link); /* strictly older: the walk ends */
        link = next;
        if (transfer->timestamp > timestamp_max) continue;
        if (transfer->timestamp < filter->timestamp_min) break;
        if ((filter->flags & (is_credit ? SZ_FILTER_CREDITS : SZ_FILTER_DEBITS)) == 0) continue;
        matches[matched % capacity] = transfer_index << 1 | (uint32_t)is_credit;
        matched++;
        if (reversed && matched == capacity) break;
    }
    if (reversed) return (uint32_t)matched;
    /* Ascending: the ring holds the oldest `capacity` matches; see the header of this
     * function. Reversing both halves around the ring's start puts them oldest first. */
    if (matched <= capacity) {
        matches_reverse(matches, 0, (uint32_t)matched);
        return (uint32_t)matched;
    }
    uint32_t start = (uint32_t)(matched % capacity);
    matches_reverse(matches, 0, start);
    matches_reverse(matches, start, capacity);
    return capacity;
}

uint32_t sz_ledger_get_account_transfers(const sz_ledger_t *ledger,
                                         const sz_account_filter_t *filter,
                                         uint32_t row_count_max, sz_transfer_t *transfers_out) {
    uint32_t matches[SZ_BATCH_EVENTS_MAX];
    const sz_account_t *account;
    uint32_t count = account_matches(ledger, filter, row_count_max, &account, matches);
    for (uint32_t index = 0; index < count; index++) {
        transfers_out[index] = ledger->transfers[matches[index] >> 1];
    }
    return count;
}

uint32_t sz_ledger_get_account_balances(const sz_ledger_t *ledger,
                                        const sz_account_filter_t *filter,
                                        uint32_t row_count_max,
                                        sz_account_balance_t *balances_out) {
    uint32_t matches[SZ_BATCH_EVENTS_MAX];
    const sz_account_t *account;
    uint32_t count = account_matches(ledger, filter, row_count_max, &account, matches);
    if (account == NULL || (account->flags & SZ_ACCOUNT_HISTORY) == 0) return 0;
    for (uint32_t index = 0; index < count; index++) {
        const transfer_meta_t *meta = &ledger->transfer_metas[matches[index] >> 1];
        bool is_credit = (matches[index] & 1) != 0;
        uint32_t row = meta->history_index;
        if (is_credit) {
            SZ_ASSERT((meta->history_sides & HISTORY_CREDIT) != 0);
            if ((meta->history_sides & HISTORY_DEBIT) != 0) row++;
        } else {
            SZ_ASSERT((meta->history_sides & HISTORY_DEBIT) != 0);
        }
        SZ_ASSERT(row < ledger->history_count);
        balances_out[index] = ledger->history[row];
    }
    return count;
}

void sz_ledger_stats(const sz_ledger_t *ledger, sz_ledger_stats_t *stats_out) {
    memset(stats_out, 0, sizeof(*stats_out));
    stats_out->account_count = ledger->account_count;
    stats_out->transfer_count = ledger->transfer_count;
    stats_out->pending_count = ledger->expiry_count;
    stats_out->history_count = ledger->history_count;
    stats_out->memory_size = ledger->memory_size + sizeof(sz_ledger_t);
    stats_out->op_count = ledger->op_count;
    stats_out->timestamp_last = ledger->timestamp_last;
}

/* ---------------------------------------------------------------------------------------
 * Invariants. */

typedef struct ledger_sums {
    uint32_t ledger;
    bool used;
    /* Sums modulo 2^128 of debits minus credits: zero exactly when the sums are equal,
     * since every real sum is below 2^128 per account and wraps consistently. */
    sz_u128 posted_difference;
    sz_u128 pending_difference;
} ledger_sums_t;

/* Enough for the ledgers of one pass; more distinct ledgers take more passes. */
#define VERIFY_LEDGERS_MAX 1024u

static int verify_fail(char *message_out, size_t message_size, const char *format,
                       unsigned long long value) {
    if (message_out != NULL && message_size > 0) {
        snprintf(message_out, message_size, format, value);
    }
    return -EUCLEAN;
}

/* Sums the ledgers whose number falls in this pass's partition; returns false when the
 * partition holds more ledgers than the table (the caller then uses more passes). */
static bool verify_ledger_pass(const sz_ledger_t *ledger, uint32_t pass, uint32_t pass_count,
                               ledger_sums_t *sums, uint32_t *bad_ledger_out) {
    memset(sums, 0, sizeof(ledger_sums_t) * VERIFY_LEDGERS_MAX);
    for (uint32_t order = 0; order < ledger->account_count; order++) {
        const sz_account_t *account = &ledger->account_slots[ledger->account_order[order]];
        if (account->ledger % pass_count != pass) continue;
        uint32_t slot = (account->ledger / pass_count * 2654435761u) % VERIFY_LEDGERS_MAX;
        uint32_t probe = 0;
        while (sums[slot].used && sums[slot].ledger != account->ledger) {
            slot = (slot + 1) % VERIFY_LEDGERS_MAX;
            if (++probe == VERIFY_LEDGERS_MAX) return false;
        }
        sums[slot].used = true;
        sums[slot].ledger = account->ledger;
        sums[slot].posted_difference += account->debits_posted - account->credits_posted;
        sums[slot].pending_difference += account->debits_pending - account->credits_pending;
    }
    *bad_ledger_out = 0;
    for (uint32_t slot = 0; slot < VERIFY_LEDGERS_MAX; slot++) {
        if (!sums[slot].used) continue;
        if (sums[slot].posted_difference != 0 || sums[slot].pending_difference != 0) {
            *bad_ledger_out = sums[slot].ledger;
            break;
        }
    }
    return true;
}

int sz_ledger_verify(const sz_ledger_t *ledger, char *message_out, size_t message_size) {
    for (uint32_t order = 0; order < ledger->account_count; order++) {
        const sz_account_t *account = &ledger->account_slots[ledger->account_order[order]];
        if (account_find(ledger, account->id, id_hash(ledger, account->id)) != account) {
            return verify_fail(message_out, message_size,
                               "account index disagrees at creation order %llu", order);
        }
        if ((account->flags & SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) != 0 &&
            account->debits_pending + account->debits_posted > account->credits_posted) {
            return verify_fail(message_out, message_size,
                               "account at creation order %llu has debits above credits",
                               order);
        }
        if ((account->flags & SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS) != 0 &&
            account->credits_pending + account->credits_posted > account->debits_posted) {
            return verify_fail(message_out, message_size,
                               "account at creation order %llu has credits above debits",
                               order);
        }
    }
    for (uint32_t index = 0; index < ledger->transfer_count; index++) {
        const sz_transfer_t *transfer = &ledger->transfers[index];
        if (transfer_find(ledger, transfer->id, id_hash(ledger, transfer->id)) != transfer) {
            return verify_fail(message_out, message_size, "transfer index disagrees at %llu",
                               index);
        }
        if (index > 0 && transfer->timestamp <= ledger->transfers[index - 1].timestamp) {
            return verify_fail(message_out, message_size,
                               "transfer timestamps not increasing at %llu", index);
        }
    }
    ledger_sums_t sums[VERIFY_LEDGERS_MAX];
    for (uint32_t pass_count = 1; pass_count != 0; pass_count *= 2) {
        bool fits = true;
        for (uint32_t pass = 0; pass < pass_count && fits; pass++) {
            uint32_t bad_ledger = 0;
            fits = verify_ledger_pass(ledger, pass, pass_count, sums, &bad_ledger);
            if (fits && bad_ledger != 0) {
                return verify_fail(message_out, message_size,
                                   "ledger %llu: debits and credits do not balance", bad_ledger);
            }
        }
        if (fits) return 0;
    }
    SZ_ASSERT(false); /* 2^32 passes hold one ledger each */
    return -EUCLEAN;
}

/* ---------------------------------------------------------------------------------------
 * Snapshots: export in place, import into a fresh ledger, rebuild the id tables. */

static_assert(sizeof(transfer_meta_t) == 16, "snapshot part record size");
static_assert(sizeof(expiry_entry_t) == 24, "snapshot part record size");

/* Lookahead of the rebuild loops: enough misses in flight to hide memory latency. */
#define IMPORT_LOOKAHEAD 16u
static_assert(IMPORT_LOOKAHEAD < LOOKAHEAD_RING_SIZE, "ring holds the lookahead");

uint32_t sz_ledger_part_record_size(sz_ledger_part_t part) {
    switch (part) {
    case SZ_LEDGER_PART_ACCOUNTS: return sizeof(sz_account_t);
    case SZ_LEDGER_PART_TRANSFERS: return sizeof(sz_transfer_t);
    case SZ_LEDGER_PART_TRANSFER_METAS: return sizeof(transfer_meta_t);
    case SZ_LEDGER_PART_EXPIRY: return sizeof(expiry_entry_t);
    case SZ_LEDGER_PART_HISTORY: return sizeof(sz_account_balance_t);
    default: return 0;
    }
}

const char *sz_ledger_part_name(sz_ledger_part_t part) {
    switch (part) {
    case SZ_LEDGER_PART_ACCOUNTS: return "accounts";
    case SZ_LEDGER_PART_TRANSFERS: return "transfers";
    case SZ_LEDGER_PART_TRANSFER_METAS: return "transfer_metas";
    case SZ_LEDGER_PART_EXPIRY: return "expiry";
    case SZ_LEDGER_PART_HISTORY: return "history";
    default: return "unknown";
    }
}

void sz_ledger_transfer_index_memory(const sz_ledger_t *ledger, void **address_out,
                                     size_t *size_out) {
    size_t size = (size_t)(ledger->transfer_index_mask + 1) * sizeof(uint64_t);
    SZ_ASSERT((uintptr_t)ledger->transfer_index % 4096 == 0);
    *address_out = ledger->transfer_index;
    *size_out = align_up(size, 4096);
}

void sz_ledger_export(const sz_ledger_t *ledger, sz_ledger_image_t *image_out) {
    SZ_ASSERT(!ledger->importing);
    memset(image_out, 0, sizeof(*image_out));
    image_out->record_counts[SZ_LEDGER_PART_ACCOUNTS] = ledger->account_count;
    image_out->record_counts[SZ_LEDGER_PART_TRANSFERS] = ledger->transfer_count;
    image_out->record_counts[SZ_LEDGER_PART_TRANSFER_METAS] = ledger->transfer_count;
    image_out->record_counts[SZ_LEDGER_PART_EXPIRY] = ledger->expiry_count;
    image_out->record_counts[SZ_LEDGER_PART_HISTORY] = ledger->history_count;
    image_out->pending_live = ledger->pending_live;
    image_out->op_count = ledger->op_count;
    image_out->timestamp_last = ledger->timestamp_last;
    image_out->digest = ledger->digest;
}

/* The array of a part, const or not (accounts have none: they live in the id table). */
static void *part_array(const sz_ledger_t *ledger, sz_ledger_part_t part) {
    switch (part) {
    case SZ_LEDGER_PART_TRANSFERS: return ledger->transfers;
    case SZ_LEDGER_PART_TRANSFER_METAS: return ledger->transfer_metas;
    case SZ_LEDGER_PART_EXPIRY: return ledger->expiry_heap;
    case SZ_LEDGER_PART_HISTORY: return ledger->history;
    default: SZ_ASSERT(false); return NULL;
    }
}

const void *sz_ledger_export_array(const sz_ledger_t *ledger, sz_ledger_part_t part) {
    SZ_ASSERT(part != SZ_LEDGER_PART_ACCOUNTS);
    return part_array(ledger, part);
}

uint32_t sz_ledger_export_accounts(const sz_ledger_t *ledger, uint32_t first, uint32_t count,
                                   sz_account_t *accounts_out) {
    if (first >= ledger->account_count) return 0;
    if (count > ledger->account_count - first) count = ledger->account_count - first;
    for (uint32_t index = 0; index < count; index++) {
        if (index + IMPORT_LOOKAHEAD < count) {
            uint32_t slot = ledger->account_order[first + index + IMPORT_LOOKAHEAD];
            __builtin_prefetch(&ledger->account_slots[slot], 0, 0);
            __builtin_prefetch((const char *)&ledger->account_slots[slot] + 64, 0, 0);
        }
        accounts_out[index] = ledger->account_slots[ledger->account_order[first + index]];
    }
    return count;
}

int sz_ledger_import_begin(sz_ledger_t *ledger, const sz_ledger_image_t *image,
                           char *message_out, size_t message_size) {
    if (ledger->importing || ledger->op_count != 0 || ledger->account_count != 0 ||
        ledger->transfer_count != 0 || ledger->timestamp_last != 0) {
        return -EINVAL;
    }
    const uint64_t *counts = image->record_counts;
    const uint64_t capacities[SZ_LEDGER_PART_COUNT] = {
        ledger->accounts_max, ledger->transfers_max, ledger->transfers_max, ledger->pending_max,
        ledger->history_max};
    for (uint32_t part = 0; part < SZ_LEDGER_PART_COUNT; part++) {
        if (counts[part] > capacities[part]) {
            if (message_out != NULL && message_size > 0) {
                snprintf(message_out, message_size, "%s: %llu records, capacity %llu",
                         sz_ledger_part_name(part), (unsigned long long)counts[part],
                         (unsigned long long)capacities[part]);
            }
            return -ENOSPC;
        }
    }
    if (counts[SZ_LEDGER_PART_TRANSFER_METAS] != counts[SZ_LEDGER_PART_TRANSFERS]) {
        return verify_fail(message_out, message_size, "%llu transfer metas for the transfers",
                           counts[SZ_LEDGER_PART_TRANSFER_METAS]);
    }
    if (image->pending_live > counts[SZ_LEDGER_PART_EXPIRY]) {
        return verify_fail(message_out, message_size, "%llu live pending above the queue",
                           image->pending_live);
    }
    if (image->op_count == 0 && (counts[SZ_LEDGER_PART_ACCOUNTS] != 0 ||
                                 image->timestamp_last != 0)) {
        return verify_fail(message_out, message_size, "state without ops (%llu accounts)",
                           counts[SZ_LEDGER_PART_ACCOUNTS]);
    }
    ledger->importing = true;
    ledger->import_image = *image;
    ledger->transfer_count = (uint32_t)counts[SZ_LEDGER_PART_TRANSFERS];
    ledger->expiry_count = (uint32_t)counts[SZ_LEDGER_PART_EXPIRY];
    ledger->history_count = (uint32_t)counts[SZ_LEDGER_PART_HISTORY];
    return 0;
}

void *sz_ledger_import_array(sz_ledger_t *ledger, sz_ledger_part_t part) {
    SZ_ASSERT(ledger->importing);
    SZ_ASSERT(part != SZ_LEDGER_PART_ACCOUNTS);
    return part_array(ledger, part);
}

/* Checks one imported account and puts it in its slot. */
static int import_account(sz_ledger_t *ledger, const sz_account_t *account, uint64_t hash,
                          char *message_out, size_t message_size) {
    uint64_t order = ledger->account_count;
    if (account->id == 0 || account->id == SZ_U128_MAX) {
        return verify_fail(message_out, message_size, "account %llu has a reserved id", order);
    }
    if (account->reserved > ledger->import_image.record_counts[SZ_LEDGER_PART_TRANSFERS]) {
        return verify_fail(message_out, message_size,
                           "account %llu links to a transfer that does not exist", order);
    }
    if (account->timestamp == 0 || account->timestamp > ledger->import_image.timestamp_last ||
        (order > 0 && account->timestamp <= ledger->account_slots[ledger->account_order[order - 1]]
                                                 .timestamp)) {
        return verify_fail(message_out, message_size,
                           "account %llu has a timestamp out of order", order);
    }
    uint64_t slot = account_probe(ledger, account->id, hash);
    if (ledger->account_slots[slot].id != 0) {
        return verify_fail(message_out, message_size, "account %llu has a duplicate id", order);
    }
    ledger->account_slots[slot] = *account;
    ledger->account_order[ledger->account_count++] = (uint32_t)slot;
    return 0;
}

int sz_ledger_import_accounts(sz_ledger_t *ledger, const sz_account_t *accounts,
                              uint32_t count, char *message_out, size_t message_size) {
    SZ_ASSERT(ledger->importing);
    if ((uint64_t)ledger->account_count + count >
        ledger->import_image.record_counts[SZ_LEDGER_PART_ACCOUNTS]) {
        return verify_fail(message_out, message_size, "more accounts than the image's %llu",
                           ledger->import_image.record_counts[SZ_LEDGER_PART_ACCOUNTS]);
    }
    uint64_t hashes[LOOKAHEAD_RING_SIZE];
    for (uint32_t ahead = 0; ahead < IMPORT_LOOKAHEAD && ahead < count; ahead++) {
        hashes[ahead] = id_hash(ledger, accounts[ahead].id);
        account_prefetch(ledger, hashes[ahead]);
    }
    for (uint32_t index = 0; index < count; index++) {
        uint32_t ahead = index + IMPORT_LOOKAHEAD;
        if (ahead < count) {
            hashes[ahead % LOOKAHEAD_RING_SIZE] = id_hash(ledger, accounts[ahead].id);
            account_prefetch(ledger, hashes[ahead % LOOKAHEAD_RING_SIZE]);
        }
        int result = import_account(ledger, &accounts[index], hashes[index % LOOKAHEAD_RING_SIZE],
                                    message_out, message_size);
        if (result < 0) return result;
    }
    return 0;
}

/* Checks transfer index's record and meta, and enters its id in the id table. */
static int import_transfer(sz_ledger_t *ledger, uint32_t transfer_index, uint64_t hash,
                           char *message_out, size_t message_size) {
    const sz_transfer_t *transfer = &ledger->transfers[transfer_index];
    const transfer_meta_t *meta = &ledger->transfer_metas[transfer_index];
    if (transfer->id == 0 || transfer->id == SZ_U128_MAX) {
        return verify_fail(message_out, message_size, "transfer %llu has a reserved id",
                           transfer_index);
    }
    if (transfer->timestamp > ledger->import_image.timestamp_last ||
        (transfer_index > 0 && transfer->timestamp <= ledger->transfers[transfer_index - 1].timestamp)) {
        return verify_fail(message_out, message_size,
                           "transfer %llu has a timestamp out of order", transfer_index);
    }
    if (meta->debit_previous > transfer_index || meta->credit_previous > transfer_index ||
        meta->state > TRANSFER_STATE_EXPIRED ||
        (meta->history_sides & ~(uint32_t)(HISTORY_DEBIT | HISTORY_CREDIT)) != 0 ||
        (uint64_t)meta->history_index + (uint32_t)__builtin_popcount(meta->history_sides) >
            ledger->history_count) {
        return verify_fail(message_out, message_size,
                           "transfer %llu has a meta record out of range", transfer_index);
    }
    uint64_t position = transfer_probe(ledger, transfer->id, hash);
    if (ledger->transfer_index[position] != 0) {
        return verify_fail(message_out, message_size, "transfer %llu has a duplicate id",
                           transfer_index);
    }
    ledger->transfer_index[position] = ((uint64_t)transfer_tag(hash) << 32) | transfer_index;
    return 0;
}

/* The id table of the transfers, rebuilt in creation order (which also makes the table
 * the writer's own when the capacities and hash seed are the same). */
static int import_transfers(sz_ledger_t *ledger, uint64_t *pending_timeout_count_out,
                            char *message_out, size_t message_size) {
    uint32_t count = ledger->transfer_count;
    uint64_t hashes[LOOKAHEAD_RING_SIZE];
    uint64_t pending_timeout_count = 0;
    for (uint32_t ahead = 0; ahead < IMPORT_LOOKAHEAD && ahead < count; ahead++) {
        hashes[ahead] = id_hash(ledger, ledger->transfers[ahead].id);
        transfer_index_prefetch(ledger, hashes[ahead]);
    }
    for (uint32_t index = 0; index < count; index++) {
        uint32_t ahead = index + IMPORT_LOOKAHEAD;
        if (ahead < count) {
            hashes[ahead % LOOKAHEAD_RING_SIZE] = id_hash(ledger, ledger->transfers[ahead].id);
            transfer_index_prefetch(ledger, hashes[ahead % LOOKAHEAD_RING_SIZE]);
        }
        int result = import_transfer(ledger, index, hashes[index % LOOKAHEAD_RING_SIZE],
                                     message_out, message_size);
        if (result < 0) return result;
        if (ledger->transfer_metas[index].state == TRANSFER_STATE_PENDING &&
            ledger->transfers[index].timeout != 0) {
            pending_timeout_count++;
        }
    }
    *pending_timeout_count_out = pending_timeout_count;
    return 0;
}

/* The heap as the writer left it: ordered, its top live, one live entry per pending
 * transfer with a timeout, each at that transfer's expiry. */
static int import_expiry(sz_ledger_t *ledger, uint64_t pending_timeout_count,
                         char *message_out, size_t message_size) {
    uint64_t live_count = 0;
    for (uint32_t index = 0; index < ledger->expiry_count; index++) {
        const expiry_entry_t *entry = &ledger->expiry_heap[index];
        if (index > 0 && expiry_before(entry, &ledger->expiry_heap[(index - 1) / 2])) {
            return verify_fail(message_out, message_size, "expiry entry %llu breaks the heap",
                               index);
        }
        if (!expiry_live(ledger, entry)) continue;
        const sz_transfer_t *transfer = &ledger->transfers[entry->transfer_index];
        uint64_t timeout_ns = (uint64_t)transfer->timeout * NS_PER_S;
        if (transfer->timeout == 0 || (transfer->flags & SZ_TRANSFER_PENDING) == 0 ||
            transfer->timestamp > UINT64_MAX - timeout_ns ||
            entry->expires_at != transfer->timestamp + timeout_ns) {
            return verify_fail(message_out, message_size,
                               "expiry entry %llu does not match its transfer", index);
        }
        live_count++;
    }
    if (ledger->expiry_count > 0 && !expiry_live(ledger, &ledger->expiry_heap[0])) {
        return verify_fail(message_out, message_size, "the expiry queue's top is stale (%llu)",
                           ledger->expiry_count);
    }
    if (live_count != ledger->import_image.pending_live || live_count != pending_timeout_count) {
        return verify_fail(message_out, message_size,
                           "%llu live expiry entries disagree with the pending transfers",
                           live_count);
    }
    return 0;
}

int sz_ledger_import_finish(sz_ledger_t *ledger, char *message_out, size_t message_size) {
    SZ_ASSERT(ledger->importing);
    const sz_ledger_image_t *image = &ledger->import_image;
    if (ledger->account_count != image->record_counts[SZ_LEDGER_PART_ACCOUNTS]) {
        return verify_fail(message_out, message_size, "%llu accounts imported, fewer than said",
                           ledger->account_count);
    }
    uint64_t pending_timeout_count = 0;
    int result = import_transfers(ledger, &pending_timeout_count, message_out, message_size);
    if (result < 0) return result;
    result = import_expiry(ledger, pending_timeout_count, message_out, message_size);
    if (result < 0) return result;
    ledger->pending_live = (uint32_t)image->pending_live;
    ledger->op_count = image->op_count;
    ledger->timestamp_last = image->timestamp_last;
    ledger->digest = image->digest;
    ledger->importing = false;
    return 0;
}
