/* ops.h: a deterministic workload for the journal tests: op n's operation, timestamp and
 * events are a pure function of (seed, n), so a test can regenerate what a writer
 * appended and apply it to a ledger directly. Op 1 creates the accounts; later ops create
 * transfers (some pending with a timeout, some posting or voiding earlier ones), and every
 * 10th op is an expire op. Header-only; for tests. */
#ifndef SZ_TEST_JOURNAL_OPS_H
#define SZ_TEST_JOURNAL_OPS_H

#include <string.h>

#include "core/ledger.h"
#include "journal/journal.h"

#define OPS_ACCOUNT_COUNT 64u
#define OPS_EVENTS_MAX 32u

static inline uint64_t ops_mix(uint64_t value) {
    value ^= value >> 33;
    value *= 0xff51afd7ed558ccdull;
    value ^= value >> 33;
    value *= 0xc4ceb9fe1a85ec53ull;
    return value ^ (value >> 33);
}

/* Fills events (room for OPS_EVENTS_MAX) and entry for op; returns the body size. */
static inline uint32_t ops_generate(uint64_t seed, uint64_t op, sz_journal_append_t *entry,
                                    uint8_t *events) {
    uint64_t random = ops_mix(seed ^ (op * 0x9E3779B97F4A7C15ull));
    /* Timestamps in seconds-wide steps, so pending timeouts of a few seconds expire. */
    *entry = (sz_journal_append_t){.timestamp = 1000000000000ull + op * 300000000ull,
                                   .client_id = seed, .request_number = (uint32_t)op,
                                   .trace_id = random};
    if (op == 1) {
        entry->operation = SZ_OPERATION_CREATE_ACCOUNTS;
        entry->event_count = OPS_ACCOUNT_COUNT < OPS_EVENTS_MAX ? OPS_ACCOUNT_COUNT : OPS_EVENTS_MAX;
        sz_account_t *accounts = (sz_account_t *)events;
        memset(accounts, 0, entry->event_count * sizeof(*accounts));
        for (uint32_t index = 0; index < entry->event_count; index++) {
            accounts[index] = (sz_account_t){.id = index + 1, .ledger = 1, .code = 1,
                                             .user_data_64 = seed};
        }
        return entry->event_count * SZ_JOURNAL_EVENT_SIZE;
    }
    if (op % 10 == 0) {
        entry->operation = SZ_OPERATION_EXPIRE_PENDING;
        entry->event_count = 0;
        return 0;
    }
    entry->operation = SZ_OPERATION_CREATE_TRANSFERS;
    entry->event_count = (uint32_t)(random % OPS_EVENTS_MAX) + 1;
    sz_transfer_t *transfers = (sz_transfer_t *)events;
    memset(transfers, 0, entry->event_count * sizeof(*transfers));
    for (uint32_t index = 0; index < entry->event_count; index++) {
        uint64_t value = ops_mix(random + index);
        sz_transfer_t *transfer = &transfers[index];
        transfer->id = op * 1000 + index;
        transfer->debit_account_id = value % 32 + 1;
        transfer->credit_account_id = (value >> 8) % 32 + 1;
        transfer->amount = (value >> 16) % 100 + 1;
        transfer->ledger = 1;
        transfer->code = 1;
        uint32_t kind = (uint32_t)((value >> 24) % 8);
        if (kind == 0) {
            transfer->flags = SZ_TRANSFER_PENDING;
            transfer->timeout = (uint32_t)((value >> 32) % 3) + 1;
        } else if (kind == 1 || kind == 2) {
            /* Post or void a pending transfer of a few ops ago (it may not exist). */
            uint64_t earlier = op > 3 ? op - 1 - (value >> 40) % 3 : 1;
            transfer->pending_id = earlier * 1000 + (value >> 48) % OPS_EVENTS_MAX;
            transfer->flags = kind == 1 ? SZ_TRANSFER_POST_PENDING : SZ_TRANSFER_VOID_PENDING;
            transfer->amount = 0;
            transfer->debit_account_id = 0;
            transfer->credit_account_id = 0;
            transfer->ledger = 0;
            transfer->code = 0;
        }
    }
    return entry->event_count * SZ_JOURNAL_EVENT_SIZE;
}

static inline sz_ledger_t *ops_ledger(void) {
    sz_ledger_config_t config = {.accounts_max = 1024, .transfers_max = 1u << 20,
                                 .pending_max = 1u << 18, .history_max = 1024};
    sz_ledger_t *ledger = NULL;
    SZ_ASSERT(sz_ledger_init(&config, &ledger) == 0);
    return ledger;
}

/* Applies op directly, as the leader would have. */
static inline void ops_apply(sz_ledger_t *ledger, uint64_t seed, uint64_t op) {
    static uint8_t events[OPS_EVENTS_MAX * SZ_JOURNAL_EVENT_SIZE];
    static sz_create_result_t results[OPS_EVENTS_MAX];
    sz_journal_append_t entry;
    ops_generate(seed, op, &entry, events);
    uint32_t count = 0;
    sz_batch_status_t status = SZ_BATCH_APPLIED;
    if (entry.operation == SZ_OPERATION_CREATE_ACCOUNTS) {
        status = sz_ledger_create_accounts(ledger, (const sz_account_t *)events, entry.event_count,
                                           entry.timestamp, results, &count);
    } else if (entry.operation == SZ_OPERATION_CREATE_TRANSFERS) {
        status = sz_ledger_create_transfers(ledger, (const sz_transfer_t *)events,
                                            entry.event_count, entry.timestamp, results, &count);
    } else {
        status = sz_ledger_expire_pending(ledger, entry.timestamp, NULL, &count);
    }
    SZ_ASSERT(status == SZ_BATCH_APPLIED);
}

#endif
