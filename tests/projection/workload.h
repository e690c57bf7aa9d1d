/* workload.h: a seeded random workload of journal entries for the projection tests and the
 * projection benchmark: accounts on two ledgers (some with limits), then create_transfers
 * batches mixing plain, pending (with timeouts), posted (full and partial), voided,
 * balancing, linked (some chains failing) and failing transfers, and expire ops, with
 * timestamps that cross a month boundary (so two monthly partitions fill).
 * Also an in-memory sz_source_t over the entries, and writing them to a real journal.
 *
 * Contract: header-only; tests and tools only; nothing here asserts (callers check). */
#ifndef SZ_TEST_WORKLOAD_H
#define SZ_TEST_WORKLOAD_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "journal/journal.h"
#include "projection/source.h"

typedef struct sz_workload_entry {
    sz_journal_header_t header;
    void *body;
} sz_workload_entry_t;

typedef struct sz_workload {
    sz_workload_entry_t *entries;
    uint64_t entry_count;
    uint64_t entry_capacity;
    uint64_t transfer_event_count;
    uint64_t state;
    uint64_t timestamp_last;
    sz_u128 cluster_id;
    sz_u128 *account_ids;
    uint32_t account_count;
    sz_u128 *pending_ids;
    uint32_t pending_count;
    uint32_t pending_capacity;
    uint64_t transfer_id_next;
} sz_workload_t;

/* 2026-01-31 23:58:00 UTC: the workload crosses into February. */
#define SZ_WORKLOAD_TIME_START_NS 1769903880000000000ull

static inline uint64_t sz_workload_random(sz_workload_t *workload) {
    /* splitmix64 */
    uint64_t z = (workload->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t sz_workload_below(sz_workload_t *workload, uint64_t bound) {
    return sz_workload_random(workload) % bound;
}

static inline int sz_workload_push(sz_workload_t *workload, sz_operation_t operation,
                                   void *body, uint32_t event_count, uint64_t advance_ns) {
    if (workload->entry_count == workload->entry_capacity) {
        uint64_t capacity = workload->entry_capacity == 0 ? 256 : workload->entry_capacity * 2;
        sz_workload_entry_t *entries = realloc(workload->entries, capacity * sizeof(*entries));
        if (entries == NULL) return -ENOMEM;
        workload->entries = entries;
        workload->entry_capacity = capacity;
    }
    sz_workload_entry_t *entry = &workload->entries[workload->entry_count];
    memset(entry, 0, sizeof(*entry));
    uint64_t timestamp = workload->timestamp_last + 1 + advance_ns;
    entry->header.cluster_id = workload->cluster_id;
    entry->header.op = workload->entry_count + 1;
    entry->header.timestamp = timestamp;
    entry->header.event_count = event_count;
    entry->header.body_size = event_count * SZ_JOURNAL_EVENT_SIZE;
    entry->header.operation = (uint8_t)operation;
    entry->header.version = SZ_JOURNAL_VERSION;
    entry->header.magic = SZ_JOURNAL_ENTRY_MAGIC;
    entry->header.trace_id = workload->entry_count + 1000;
    entry->body = body;
    workload->timestamp_last = timestamp + (event_count > 0 ? event_count - 1 : 0);
    workload->entry_count++;
    return 0;
}

static inline sz_u128 sz_workload_account(sz_workload_t *workload, uint32_t ledger) {
    /* Accounts alternate ledgers 1 and 2 by index. */
    uint32_t index = (uint32_t)sz_workload_below(workload, workload->account_count / 2) * 2 +
                     (ledger - 1);
    return workload->account_ids[index];
}

static inline void sz_workload_pending_add(sz_workload_t *workload, sz_u128 id) {
    if (workload->pending_count == workload->pending_capacity) {
        /* Forget the oldest half: posts of them would only fail more. */
        memmove(workload->pending_ids, workload->pending_ids + workload->pending_capacity / 2,
                (workload->pending_capacity / 2) * sizeof(sz_u128));
        workload->pending_count = workload->pending_capacity / 2;
    }
    workload->pending_ids[workload->pending_count++] = id;
}

static inline void sz_workload_transfer(sz_workload_t *workload, sz_transfer_t *transfer,
                                        bool simple) {
    memset(transfer, 0, sizeof(*transfer));
    uint32_t ledger = 1 + (uint32_t)sz_workload_below(workload, 2);
    transfer->id = ((sz_u128)(workload->transfer_id_next % 7) << 80) + workload->transfer_id_next;
    workload->transfer_id_next++;
    transfer->ledger = ledger;
    transfer->code = 1 + (uint16_t)sz_workload_below(workload, 3);
    transfer->debit_account_id = sz_workload_account(workload, ledger);
    do {
        transfer->credit_account_id = sz_workload_account(workload, ledger);
    } while (transfer->credit_account_id == transfer->debit_account_id);
    transfer->amount = 1 + sz_workload_below(workload, 1000);
    transfer->user_data_128 = sz_workload_below(workload, 100);
    transfer->user_data_64 = sz_workload_random(workload);
    transfer->user_data_32 = (uint32_t)sz_workload_random(workload);
    if (simple) return;
    uint64_t kind = sz_workload_below(workload, 100);
    if (kind < 15) {
        transfer->flags = SZ_TRANSFER_PENDING;
        transfer->timeout = (uint32_t)sz_workload_below(workload, 4); /* 0: never expires */
        sz_workload_pending_add(workload, transfer->id);
    } else if (kind < 25 && workload->pending_count > 0) {
        transfer->flags = SZ_TRANSFER_POST_PENDING;
        transfer->pending_id = workload->pending_ids[sz_workload_below(workload, workload->pending_count)];
        transfer->amount = sz_workload_below(workload, 2) == 0 ? 0 : 1 + sz_workload_below(workload, 600);
        transfer->debit_account_id = 0;
        transfer->credit_account_id = 0;
        transfer->ledger = 0;
        transfer->code = 0;
    } else if (kind < 32 && workload->pending_count > 0) {
        transfer->flags = SZ_TRANSFER_VOID_PENDING;
        transfer->pending_id = workload->pending_ids[sz_workload_below(workload, workload->pending_count)];
        transfer->amount = 0;
        transfer->debit_account_id = 0;
        transfer->credit_account_id = 0;
        transfer->ledger = 0;
        transfer->code = 0;
    } else if (kind < 36) {
        transfer->flags = sz_workload_below(workload, 2) ? SZ_TRANSFER_BALANCING_DEBIT
                                                         : SZ_TRANSFER_BALANCING_CREDIT;
        transfer->amount = sz_workload_below(workload, 2) ? 0 : 1 + sz_workload_below(workload, 5000);
    } else if (kind < 38) {
        transfer->credit_account_id = 0xDEADull; /* credit_account_not_found */
    } else if (kind < 40) {
        transfer->id = workload->transfer_id_next - 2; /* exists / exists_with_different_* */
    } else if (kind < 41) {
        transfer->amount = ((sz_u128)1 << 120) + 7; /* big numbers; often overflows */
    }
}

/* Fills one create_transfers batch of count transfers (random kinds, and linked chains
 * of 2..4 unless simple). Tests that send batches as they go (against a live server) call
 * it directly after sz_workload_build() made the accounts. */
static inline void sz_workload_batch_fill(sz_workload_t *workload, sz_transfer_t *transfers,
                                          uint32_t count, bool simple) {
    for (uint32_t index = 0; index < count; index++) {
        sz_workload_transfer(workload, &transfers[index], simple);
    }
    /* Linked chains of 2..4 (the last member closes the chain). */
    for (uint32_t index = 0; !simple && index + 4 < count; index++) {
        if (sz_workload_below(workload, 100) >= 8) continue;
        uint32_t length = 2 + (uint32_t)sz_workload_below(workload, 3);
        for (uint32_t member = 0; member + 1 < length; member++) {
            transfers[index + member].flags |= SZ_TRANSFER_LINKED;
        }
        index += length;
    }
    workload->transfer_event_count += count;
}

/* Builds the workload: seed, how many transfer batches, events per batch at most. */
static inline int sz_workload_build(sz_workload_t *workload, uint64_t seed,
                                    uint32_t account_count, uint32_t batch_count,
                                    uint32_t batch_events_max, bool simple) {
    memset(workload, 0, sizeof(*workload));
    workload->state = seed;
    workload->cluster_id = ((sz_u128)0x5A << 64) | 0x1234;
    workload->timestamp_last = SZ_WORKLOAD_TIME_START_NS;
    workload->transfer_id_next = 1;
    workload->account_count = account_count < 8 ? 8 : account_count & ~1u;
    workload->account_ids = calloc(workload->account_count, sizeof(sz_u128));
    workload->pending_capacity = 4096;
    workload->pending_ids = calloc(workload->pending_capacity, sizeof(sz_u128));
    if (workload->account_ids == NULL || workload->pending_ids == NULL) return -ENOMEM;
    /* Accounts: in batches of at most a full batch, two failing ones in the first. */
    for (uint32_t first = 0; first < workload->account_count; first += SZ_BATCH_EVENTS_MAX - 2) {
        uint32_t count = workload->account_count - first;
        if (count > SZ_BATCH_EVENTS_MAX - 2) count = SZ_BATCH_EVENTS_MAX - 2;
        uint32_t extra = first == 0 ? 2 : 0;
        sz_account_t *accounts = calloc(count + extra, sizeof(sz_account_t));
        if (accounts == NULL) return -ENOMEM;
        for (uint32_t index = 0; index < count; index++) {
            uint32_t number = first + index;
            sz_account_t *account = &accounts[index];
            /* Half the ids beyond 64 bits, so NUMERIC encoding meets big values. */
            account->id = (number % 2 ? ((sz_u128)(number + 1) << 64) : 0) + number + 1;
            account->ledger = 1 + number % 2;
            account->code = 10;
            account->user_data_64 = number;
            if (!simple && number % 8 == 3) account->flags = SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS;
            if (!simple && number % 8 == 5) account->flags = SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS;
            workload->account_ids[number] = account->id;
        }
        if (extra) {
            accounts[count] = accounts[0]; /* exists */
            accounts[count + 1] = accounts[1];
            accounts[count + 1].id = 999999;
            accounts[count + 1].ledger = 0; /* ledger_must_not_be_zero */
        }
        int result = sz_workload_push(workload, SZ_OPERATION_CREATE_ACCOUNTS, accounts,
                                      count + extra, 1000);
        if (result < 0) return result;
    }
    for (uint32_t batch = 0; batch < batch_count; batch++) {
        /* Simple workloads (benchmarks) use full batches. */
        uint32_t count = simple ? batch_events_max
                                : 1 + (uint32_t)sz_workload_below(workload, batch_events_max);
        sz_transfer_t *transfers = calloc(count, sizeof(sz_transfer_t));
        if (transfers == NULL) return -ENOMEM;
        sz_workload_batch_fill(workload, transfers, count, simple);
        /* About 50 ms of wall time per batch in simple mode, 700 ms otherwise, so that
         * pending timeouts of 1..3 s expire in the random workload. */
        int result = sz_workload_push(workload, SZ_OPERATION_CREATE_TRANSFERS, transfers, count,
                                      simple ? 50000000ull : 700000000ull);
        if (result < 0) return result;
        if (!simple && batch % 4 == 3) {
            result = sz_workload_push(workload, SZ_OPERATION_EXPIRE_PENDING, NULL, 0, 0);
            if (result < 0) return result;
        }
    }
    return 0;
}

static inline void sz_workload_free(sz_workload_t *workload) {
    for (uint64_t index = 0; index < workload->entry_count; index++) {
        free(workload->entries[index].body);
    }
    free(workload->entries);
    free(workload->account_ids);
    free(workload->pending_ids);
    memset(workload, 0, sizeof(*workload));
}

/* An in-memory source over a workload's entries (it does not check checksums: they are
 * the journal's, and these entries were never journaled). */
typedef struct sz_workload_source {
    sz_source_t source;
    const sz_workload_t *workload;
    uint64_t index;
    uint64_t end; /* entries handed out stop here (tests move it to simulate arrivals) */
} sz_workload_source_t;

static inline int sz_workload_source_next(sz_source_t *source,
                                          const sz_journal_header_t **header_out,
                                          const void **body_out, int timeout_ms) {
    (void)timeout_ms;
    sz_workload_source_t *memory = (sz_workload_source_t *)source;
    if (memory->index >= __atomic_load_n(&memory->end, __ATOMIC_ACQUIRE)) return -ENODATA;
    const sz_workload_entry_t *entry = &memory->workload->entries[memory->index++];
    *header_out = &entry->header;
    *body_out = entry->body;
    return 1;
}

static inline void sz_workload_source_close(sz_source_t *source) { (void)source; }

static inline void sz_workload_source_init(sz_workload_source_t *source,
                                           const sz_workload_t *workload) {
    memset(source, 0, sizeof(*source));
    source->source.next = sz_workload_source_next;
    source->source.close = sz_workload_source_close;
    source->workload = workload;
    source->end = workload->entry_count;
}

/* Writes the workload to a new journal in directory (formatted here, 32 MiB segments). */
static inline int sz_workload_journal_write(const sz_workload_t *workload, const char *directory) {
    sz_storage_t *storage = NULL;
    int result = sz_storage_uring_init(directory, &storage);
    if (result < 0) return result;
    sz_journal_format_options_t format = {.cluster_id = workload->cluster_id,
                                          .segment_size = 32u << 20};
    result = sz_journal_format(storage, &format);
    sz_journal_t *journal = NULL;
    sz_journal_options_t options = {0};
    if (result == 0) result = sz_journal_open(storage, &options, &journal, NULL);
    for (uint64_t index = 0; result == 0 && index < workload->entry_count; index++) {
        const sz_workload_entry_t *entry = &workload->entries[index];
        sz_journal_append_t append = {
            .timestamp = entry->header.timestamp,
            .operation = (sz_operation_t)entry->header.operation,
            .event_count = entry->header.event_count,
            .trace_id = entry->header.trace_id,
        };
        uint64_t op = 0;
        for (;;) {
            result = sz_journal_append(journal, &append, entry->body, &op);
            if (result != -EAGAIN) break;
            result = sz_journal_poll(journal, true);
            if (result < 0) break;
        }
    }
    if (result == 0) result = sz_journal_flush(journal);
    sz_journal_deinit(journal);
    storage->vtable->deinit(storage);
    return result;
}

#endif
