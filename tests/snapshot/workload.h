/* workload.h: a seeded random workload applied to several ledgers at once, and a
 * comparison of everything a client can observe of two ledgers. For the tests of ledger
 * images (tests/core/test_image.c) and snapshots (tests/snapshot/): a ledger restored from
 * an image must answer and continue exactly like the one that made it.
 *
 * The ops: create_accounts (some with the history flag, some in linked chains that fail
 * and roll back), create_transfers (plain, linked chains with a failing member, pending
 * with and without timeouts, posts and voids of earlier pendings, balancing, invalid
 * events), and expire ops as the clock passes pending timeouts. Header-only; for tests. */
#ifndef SZ_TESTS_SNAPSHOT_WORKLOAD_H
#define SZ_TESTS_SNAPSHOT_WORKLOAD_H

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ledger.h"

#define WORKLOAD_BATCH_MAX 64u
#define WORKLOAD_ROWS_MAX 256u

typedef struct workload {
    uint64_t random;
    uint64_t clock_ns;
    uint64_t account_id_next;
    uint64_t transfer_id_next;
} workload_t;

static inline uint64_t workload_next(workload_t *workload) {
    uint64_t value = (workload->random += 0x9E3779B97F4A7C15ull);
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ull;
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBull;
    return value ^ (value >> 31);
}

/* SUMZERO_SEED, or the given default; printed so a failure can be rerun. */
static inline uint64_t workload_seed(uint64_t seed_default) {
    const char *text = getenv("SUMZERO_SEED");
    uint64_t seed = text != NULL ? strtoull(text, NULL, 0) : seed_default;
    fprintf(stderr, "workload seed %" PRIu64 " (rerun with SUMZERO_SEED=%" PRIu64 ")\n", seed,
            seed);
    return seed;
}

static inline void workload_init(workload_t *workload, uint64_t seed) {
    *workload = (workload_t){.random = seed, .clock_ns = 1700000000000000000ull,
                             .account_id_next = 1, .transfer_id_next = 1};
}

static inline sz_u128 workload_account_any(workload_t *workload) {
    /* Mostly existing accounts, sometimes one that does not exist yet. */
    return workload_next(workload) % (workload->account_id_next + 2) + 1;
}

static inline uint32_t workload_accounts(workload_t *workload, sz_account_t *events) {
    uint32_t count = (uint32_t)(workload_next(workload) % 8) + 1;
    memset(events, 0, sizeof(*events) * count);
    for (uint32_t index = 0; index < count; index++) {
        uint64_t value = workload_next(workload);
        sz_account_t *account = &events[index];
        account->id = workload->account_id_next++;
        account->ledger = 1;
        account->code = (uint16_t)(value % 3 + 1);
        account->user_data_64 = value;
        if (value % 4 == 0) account->flags |= SZ_ACCOUNT_HISTORY;
        if (value % 9 == 0) account->flags |= SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS;
        if (value % 5 == 0 && index + 1 < count) account->flags |= SZ_ACCOUNT_LINKED;
        if (value % 23 == 0) account->code = 0; /* fails: a chain it is in rolls back */
    }
    return count;
}

static inline void workload_transfer(workload_t *workload, sz_transfer_t *transfer,
                                     bool last) {
    uint64_t value = workload_next(workload);
    memset(transfer, 0, sizeof(*transfer));
    transfer->id = workload->transfer_id_next++;
    transfer->debit_account_id = workload_account_any(workload);
    transfer->credit_account_id = workload_account_any(workload);
    transfer->amount = value % 1000 + 1;
    transfer->ledger = 1;
    transfer->code = 1;
    transfer->user_data_32 = (uint32_t)value;
    uint32_t kind = (uint32_t)((value >> 16) % 16);
    if (kind < 4) {
        transfer->flags = SZ_TRANSFER_PENDING;
        transfer->timeout = kind == 0 ? 0 : (uint32_t)((value >> 24) % 4) + 1;
    } else if (kind < 7) {
        /* Post (or void) a recent transfer, which may not be pending. */
        uint64_t back = (value >> 24) % 40 + 1;
        transfer->pending_id = transfer->id > back ? transfer->id - back : 1;
        transfer->flags = kind == 6 ? SZ_TRANSFER_VOID_PENDING : SZ_TRANSFER_POST_PENDING;
        transfer->debit_account_id = 0;
        transfer->credit_account_id = 0;
        transfer->amount = kind == 5 ? transfer->amount % 50 : 0;
        transfer->ledger = 0;
        transfer->code = 0;
    } else if (kind == 7) {
        transfer->flags = SZ_TRANSFER_BALANCING_DEBIT;
    } else if (kind == 8) {
        transfer->id = (value >> 24) % transfer->id + 1; /* a retry or a collision */
    }
    if ((value >> 40) % 4 == 0 && !last) transfer->flags |= SZ_TRANSFER_LINKED;
}

static inline uint32_t workload_transfers(workload_t *workload, sz_transfer_t *events) {
    uint32_t count = (uint32_t)(workload_next(workload) % WORKLOAD_BATCH_MAX) + 1;
    for (uint32_t index = 0; index < count; index++) {
        workload_transfer(workload, &events[index], index + 1 == count);
    }
    return count;
}

/* Applies the next op to every ledger and checks they agree on its outcome. */
static inline void workload_step(workload_t *workload, sz_ledger_t **ledgers,
                                 uint32_t ledger_count) {
    static sz_account_t accounts[WORKLOAD_BATCH_MAX];
    static sz_transfer_t transfers[WORKLOAD_BATCH_MAX];
    static sz_create_result_t results[2][WORKLOAD_BATCH_MAX];
    static sz_u128 expired[2][SZ_EXPIRE_EVENTS_MAX];
    workload->clock_ns += workload_next(workload) % 400000000ull;
    uint64_t kind = workload->account_id_next < 8 ? 0 : workload_next(workload) % 10;
    uint32_t counts[2] = {0, 0};
    sz_batch_status_t statuses[2] = {0, 0};
    uint32_t count = 0;
    if (kind == 0) count = workload_accounts(workload, accounts);
    if (kind >= 2) count = workload_transfers(workload, transfers);
    for (uint32_t index = 0; index < ledger_count; index++) {
        sz_ledger_t *ledger = ledgers[index];
        uint32_t slot = index == 0 ? 0 : 1;
        uint64_t timestamp = sz_ledger_timestamp_next(ledger, workload->clock_ns);
        if (kind == 0) {
            statuses[slot] = sz_ledger_create_accounts(ledger, accounts, count, timestamp,
                                                       results[slot], &counts[slot]);
        } else if (kind == 1) {
            statuses[slot] = sz_ledger_expire_pending(ledger, timestamp, expired[slot],
                                                      &counts[slot]);
        } else {
            statuses[slot] = sz_ledger_create_transfers(ledger, transfers, count, timestamp,
                                                        results[slot], &counts[slot]);
        }
        if (index == 0) continue;
        cr_assert_eq(statuses[1], statuses[0], "ledger %u batch status differs", index);
        cr_assert_eq(counts[1], counts[0], "ledger %u result count differs", index);
        size_t size = kind == 1 ? sizeof(sz_u128) : sizeof(sz_create_result_t);
        const void *first = kind == 1 ? (const void *)expired[0] : (const void *)results[0];
        const void *other = kind == 1 ? (const void *)expired[1] : (const void *)results[1];
        cr_assert_eq(memcmp(first, other, size * counts[0]), 0, "ledger %u results differ",
                     index);
    }
}

/* Everything observable: digest, stats, every record, every query (a few filters), the
 * next expiry, and the invariants. */
static inline void workload_compare(const workload_t *workload, const sz_ledger_t *expected,
                                    const sz_ledger_t *actual) {
    static sz_account_t accounts[2];
    static sz_transfer_t transfers[2][WORKLOAD_ROWS_MAX];
    static sz_account_balance_t balances[2][WORKLOAD_ROWS_MAX];
    sz_digest_t digest_expected = sz_ledger_digest(expected);
    sz_digest_t digest_actual = sz_ledger_digest(actual);
    cr_assert(digest_expected.low == digest_actual.low && digest_expected.high == digest_actual.high,
              "digests differ");
    sz_ledger_stats_t stats[2];
    sz_ledger_stats(expected, &stats[0]);
    sz_ledger_stats(actual, &stats[1]);
    stats[0].memory_size = stats[1].memory_size = 0;
    cr_assert_eq(memcmp(&stats[0], &stats[1], sizeof(stats[0])), 0, "stats differ");
    cr_assert_eq(sz_ledger_expiry_next(expected), sz_ledger_expiry_next(actual));
    for (uint64_t id = 0; id <= workload->account_id_next + 1; id++) {
        sz_u128 key = id;
        uint32_t found = sz_ledger_lookup_accounts(expected, &key, 1, &accounts[0]);
        cr_assert_eq(sz_ledger_lookup_accounts(actual, &key, 1, &accounts[1]), found);
        cr_assert_eq(memcmp(&accounts[0], &accounts[1], found * sizeof(sz_account_t)), 0,
                     "account %" PRIu64 " differs", id);
        for (uint32_t flags = 1; flags <= SZ_FILTER_FLAGS_KNOWN; flags++) {
            sz_account_filter_t filter = {.account_id = key, .limit = WORKLOAD_ROWS_MAX,
                                          .flags = flags,
                                          .timestamp_min = flags == 3 ? 1700000000500000000ull : 0};
            uint32_t rows = sz_ledger_get_account_transfers(expected, &filter, WORKLOAD_ROWS_MAX,
                                                            transfers[0]);
            cr_assert_eq(sz_ledger_get_account_transfers(actual, &filter, WORKLOAD_ROWS_MAX,
                                                         transfers[1]), rows);
            cr_assert_eq(memcmp(transfers[0], transfers[1], rows * sizeof(sz_transfer_t)), 0,
                         "account %" PRIu64 " transfers differ", id);
            rows = sz_ledger_get_account_balances(expected, &filter, WORKLOAD_ROWS_MAX,
                                                  balances[0]);
            cr_assert_eq(sz_ledger_get_account_balances(actual, &filter, WORKLOAD_ROWS_MAX,
                                                        balances[1]), rows);
            cr_assert_eq(memcmp(balances[0], balances[1], rows * sizeof(sz_account_balance_t)),
                         0, "account %" PRIu64 " balances differ", id);
        }
    }
    for (uint64_t id = 0; id <= workload->transfer_id_next + 1; id++) {
        sz_u128 key = id;
        uint32_t found = sz_ledger_lookup_transfers(expected, &key, 1, &transfers[0][0]);
        cr_assert_eq(sz_ledger_lookup_transfers(actual, &key, 1, &transfers[1][0]), found);
        cr_assert_eq(memcmp(&transfers[0][0], &transfers[1][0], found * sizeof(sz_transfer_t)),
                     0, "transfer %" PRIu64 " differs", id);
    }
    char message[256] = "";
    cr_assert_eq(sz_ledger_verify(actual, message, sizeof(message)), 0, "verify: %s", message);
}

#endif
