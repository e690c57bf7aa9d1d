/* test_queries.c: the read side and the batch-level contract of core/ledger.
 * - Queries (SEMANTICS.md "Queries"): a fixed ledger of three accounts and six transfers with
 *   known timestamps; lookups, get_account_transfers and get_account_balances are checked row
 *   by row (ids, order, balances after each transfer) for every filter flag, the inclusive
 *   timestamp bounds, limits, and every kind of invalid filter (which must give no rows).
 * - Capacity (ledger.h): small ledgers filled close to a capacity; a batch whose worst case
 *   does not fit is refused whole with the right status and leaves stats, digest, balances
 *   and timestamps exactly as they were, and a smaller batch still applies. Batches of
 *   SZ_BATCH_EVENTS_MAX events apply, one more is refused.
 * - Digest and verify: the digest changes with every applied batch and never with a query;
 *   two ledgers fed the same batches agree on it after every batch; sz_ledger_verify accepts a
 *   ledger that went through every kind of operation. */
#include <stdlib.h>

#include "scenario.h"

/* ---- queries ---------------------------------------------------------------------------- */

static uint64_t accounts_timestamp;
static uint64_t transfers_timestamp;

/* Accounts 1 and 2 keep history, 3 does not. Transfers 101..106 get T..T+5; 107 fails (so
 * stores nothing and writes no row) and only consumes T+6. */
static void queries_setup(void) {
    scenario_setup();
    sz_account_t accounts[] = {
        account_make(1, SZ_ACCOUNT_HISTORY),
        account_make(2, SZ_ACCOUNT_HISTORY),
        account_make(3, 0),
    };
    accounts[0].user_data_128 = 0x1111;
    accounts[0].user_data_64 = 11;
    accounts[0].user_data_32 = 1;
    accounts[2].code = 3;
    accounts_timestamp = accounts_create_ok(accounts, 3);

    sz_transfer_t transfers[] = {
        transfer_plain(101, 1, 2, 10),
        transfer_plain(102, 2, 1, 20),
        transfer_plain(103, 1, 3, 30),
        transfer_plain(104, 3, 1, 40),
        transfer_pending(105, 1, 2, 50, 0),
        transfer_plain(106, 2, 3, 60),
        transfer_plain(107, 1, 2, 0),
    };
    transfers[5].user_data_64 = 66;
    uint32_t expected[] = {0, 0, 0, 0, 0, 0, SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO};
    transfers_timestamp = transfers_create_expect(transfers, 7, expected);
}

TestSuite(queries, .init = queries_setup, .fini = scenario_teardown);

static uint32_t account_transfers(const sz_account_filter_t *filter, uint32_t row_count_max,
                                  sz_transfer_t *rows) {
    cr_assert_leq(row_count_max, SCENARIO_ROWS_MAX, "test buffer");
    memset(rows, 0xA5, sizeof(*rows) * row_count_max);
    return sz_ledger_get_account_transfers(scenario_ledger, filter, row_count_max, rows);
}

/* Checks that the rows are exactly the transfers with these ids, in this order. */
static void transfer_rows_expect(const sz_account_filter_t *filter, const sz_u128 *ids,
                                 uint32_t id_count) {
    sz_transfer_t rows[SCENARIO_ROWS_MAX];
    uint32_t count = account_transfers(filter, SCENARIO_ROWS_MAX, rows);
    cr_assert_eq(count, id_count, "%u rows, expected %u", count, id_count);
    for (uint32_t index = 0; index < count; index++) {
        cr_assert(rows[index].id == ids[index], "row %u is transfer %s, expected %s", index,
                  u128_text(rows[index].id), u128_text(ids[index]));
    }
}

static uint32_t account_balances(const sz_account_filter_t *filter, uint32_t row_count_max,
                                 sz_account_balance_t *rows) {
    cr_assert_leq(row_count_max, SCENARIO_ROWS_MAX, "test buffer");
    memset(rows, 0xA5, sizeof(*rows) * row_count_max);
    return sz_ledger_get_account_balances(scenario_ledger, filter, row_count_max, rows);
}

/* Checks that the balance rows carry exactly these timestamps (offsets from T), in order. */
static void balance_rows_expect(const sz_account_filter_t *filter, const uint64_t *offsets,
                                uint32_t offset_count) {
    sz_account_balance_t rows[SCENARIO_ROWS_MAX];
    uint32_t count = account_balances(filter, SCENARIO_ROWS_MAX, rows);
    cr_assert_eq(count, offset_count, "%u rows, expected %u", count, offset_count);
    for (uint32_t index = 0; index < count; index++) {
        cr_assert_eq(rows[index].timestamp, transfers_timestamp + offsets[index],
                     "row %u is at T+%ld, expected T+%lu", index,
                     (long)(rows[index].timestamp - transfers_timestamp),
                     (unsigned long)offsets[index]);
    }
}

static void balance_row_expect(const sz_account_balance_t *row, uint64_t offset,
                               sz_u128 debits_pending, sz_u128 debits_posted,
                               sz_u128 credits_pending, sz_u128 credits_posted) {
    cr_assert_eq(row->timestamp, transfers_timestamp + offset, "row timestamp T+%ld, expected T+%lu",
                 (long)(row->timestamp - transfers_timestamp), (unsigned long)offset);
    assert_u128_eq(row->debits_pending, debits_pending);
    assert_u128_eq(row->debits_posted, debits_posted);
    assert_u128_eq(row->credits_pending, credits_pending);
    assert_u128_eq(row->credits_posted, credits_posted);
    for (size_t index = 0; index < sizeof(row->reserved); index++) {
        cr_assert_eq(row->reserved[index], 0, "reserved byte %zu is %u", index,
                     row->reserved[index]);
    }
}

Test(queries, lookup_accounts_returns_existing_accounts_in_request_order) {
    sz_u128 ids[] = {3, 77, 1, 0, SZ_U128_MAX, 2};
    sz_account_t accounts[6];
    memset(accounts, 0xFF, sizeof(accounts));
    uint32_t count = sz_ledger_lookup_accounts(scenario_ledger, ids, 6, accounts);
    cr_assert_eq(count, 3u, "%u accounts found, expected 3", count);

    assert_u128_eq(accounts[0].id, 3);
    cr_assert_eq(accounts[0].code, 3, "code %u", accounts[0].code);
    cr_assert_eq(accounts[0].flags, 0, "flags %u", accounts[0].flags);
    cr_assert_eq(accounts[0].timestamp, accounts_timestamp + 2, "timestamp");
    assert_u128_eq(accounts[0].debits_posted, 40);
    assert_u128_eq(accounts[0].credits_posted, 90);

    assert_u128_eq(accounts[1].id, 1);
    assert_u128_eq(accounts[1].user_data_128, 0x1111);
    cr_assert_eq(accounts[1].user_data_64, 11u, "user_data_64");
    cr_assert_eq(accounts[1].user_data_32, 1u, "user_data_32");
    cr_assert_eq(accounts[1].ledger, SCENARIO_LEDGER, "ledger");
    cr_assert_eq(accounts[1].code, SCENARIO_CODE, "code");
    cr_assert_eq(accounts[1].flags, SZ_ACCOUNT_HISTORY, "flags %u", accounts[1].flags);
    cr_assert_eq(accounts[1].timestamp, accounts_timestamp, "timestamp");
    assert_u128_eq(accounts[1].debits_pending, 50);
    assert_u128_eq(accounts[1].debits_posted, 40);
    assert_u128_eq(accounts[1].credits_pending, 0);
    assert_u128_eq(accounts[1].credits_posted, 60);

    assert_u128_eq(accounts[2].id, 2);
    assert_u128_eq(accounts[2].debits_pending, 0);
    assert_u128_eq(accounts[2].debits_posted, 80);
    assert_u128_eq(accounts[2].credits_pending, 50);
    assert_u128_eq(accounts[2].credits_posted, 10);
}

Test(queries, lookup_accounts_writes_reserved_as_zero) {
    sz_u128 ids[] = {1, 2, 3};
    sz_account_t accounts[3];
    memset(accounts, 0xFF, sizeof(accounts));
    cr_assert_eq(sz_ledger_lookup_accounts(scenario_ledger, ids, 3, accounts), 3u, "found");
    for (uint32_t index = 0; index < 3; index++) {
        cr_assert_eq(accounts[index].reserved, 0u, "account %u reserved is 0x%x", index + 1,
                     accounts[index].reserved);
    }
}

Test(queries, lookup_transfers_returns_existing_transfers_in_request_order) {
    sz_u128 ids[] = {106, 107, 101, 999, 0, 105};
    sz_transfer_t transfers[6];
    memset(transfers, 0xFF, sizeof(transfers));
    uint32_t count = sz_ledger_lookup_transfers(scenario_ledger, ids, 6, transfers);
    cr_assert_eq(count, 3u, "%u transfers found, expected 3 (107 failed, 999 and 0 missing)",
                 count);

    assert_u128_eq(transfers[0].id, 106);
    assert_u128_eq(transfers[0].debit_account_id, 2);
    assert_u128_eq(transfers[0].credit_account_id, 3);
    assert_u128_eq(transfers[0].amount, 60);
    cr_assert_eq(transfers[0].user_data_64, 66u, "user_data_64");
    cr_assert_eq(transfers[0].timestamp, transfers_timestamp + 5, "timestamp");

    assert_u128_eq(transfers[1].id, 101);
    assert_u128_eq(transfers[1].amount, 10);
    cr_assert_eq(transfers[1].timestamp, transfers_timestamp, "timestamp");

    assert_u128_eq(transfers[2].id, 105);
    cr_assert_eq(transfers[2].flags, SZ_TRANSFER_PENDING, "flags %u", transfers[2].flags);
    assert_u128_eq(transfers[2].pending_id, 0);
    cr_assert_eq(transfers[2].timestamp, transfers_timestamp + 4, "timestamp");
}

Test(queries, lookups_of_only_missing_ids_return_nothing) {
    sz_u128 ids[] = {4, 5};
    sz_account_t accounts[2];
    sz_transfer_t transfers[2];
    cr_assert_eq(sz_ledger_lookup_accounts(scenario_ledger, ids, 2, accounts), 0u, "accounts");
    cr_assert_eq(sz_ledger_lookup_transfers(scenario_ledger, ids, 2, transfers), 0u,
                 "transfers");
    cr_assert_eq(sz_ledger_lookup_accounts(scenario_ledger, ids, 0, accounts), 0u,
                 "no ids, no accounts");
}

Test(queries, account_transfers_with_debits_only_lists_the_debits) {
    sz_account_filter_t filter = filter_make(1, SZ_FILTER_DEBITS);
    sz_u128 ids[] = {101, 103, 105};
    transfer_rows_expect(&filter, ids, 3);
}

Test(queries, account_transfers_with_credits_only_lists_the_credits) {
    sz_account_filter_t filter = filter_make(1, SZ_FILTER_CREDITS);
    sz_u128 ids[] = {102, 104};
    transfer_rows_expect(&filter, ids, 2);
}

Test(queries, account_transfers_with_both_flags_lists_all_in_timestamp_order) {
    sz_account_filter_t filter = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    sz_u128 ids[] = {101, 102, 103, 104, 105};
    transfer_rows_expect(&filter, ids, 5);

    sz_transfer_t rows[SCENARIO_ROWS_MAX];
    uint32_t count = account_transfers(&filter, SCENARIO_ROWS_MAX, rows);
    cr_assert_eq(count, 5u, "rows");
    assert_u128_eq(rows[2].debit_account_id, 1);
    assert_u128_eq(rows[2].credit_account_id, 3);
    assert_u128_eq(rows[2].amount, 30);
    cr_assert_eq(rows[2].timestamp, transfers_timestamp + 2, "timestamp");
}

Test(queries, account_transfers_reversed_lists_newest_first) {
    sz_account_filter_t filter =
        filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS | SZ_FILTER_REVERSED);
    sz_u128 ids[] = {105, 104, 103, 102, 101};
    transfer_rows_expect(&filter, ids, 5);

    filter.flags = SZ_FILTER_DEBITS | SZ_FILTER_REVERSED;
    sz_u128 debit_ids[] = {105, 103, 101};
    transfer_rows_expect(&filter, debit_ids, 3);
}

Test(queries, account_transfers_timestamp_bounds_are_inclusive) {
    sz_account_filter_t filter = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    filter.timestamp_min = transfers_timestamp + 1;
    filter.timestamp_max = transfers_timestamp + 3;
    sz_u128 middle[] = {102, 103, 104};
    transfer_rows_expect(&filter, middle, 3);

    filter.timestamp_min = transfers_timestamp + 2;
    filter.timestamp_max = transfers_timestamp + 2;
    sz_u128 one[] = {103};
    transfer_rows_expect(&filter, one, 1);

    filter.timestamp_min = transfers_timestamp + 3; /* max 0: open above */
    filter.timestamp_max = 0;
    sz_u128 from[] = {104, 105};
    transfer_rows_expect(&filter, from, 2);

    filter.timestamp_min = 0; /* min 0: open below */
    filter.timestamp_max = transfers_timestamp + 1;
    sz_u128 until[] = {101, 102};
    transfer_rows_expect(&filter, until, 2);

    filter.timestamp_min = transfers_timestamp + 1;
    filter.timestamp_max = transfers_timestamp + 3;
    filter.flags |= SZ_FILTER_REVERSED;
    sz_u128 middle_reversed[] = {104, 103, 102};
    transfer_rows_expect(&filter, middle_reversed, 3);

    /* A window between two transfers of the account is empty, not an error. */
    filter.timestamp_min = transfers_timestamp + 5;
    filter.timestamp_max = transfers_timestamp + 6;
    transfer_rows_expect(&filter, NULL, 0);
}

Test(queries, account_transfers_stop_at_the_limit) {
    sz_account_filter_t filter = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    filter.limit = 2;
    sz_u128 first[] = {101, 102};
    transfer_rows_expect(&filter, first, 2);

    filter.flags |= SZ_FILTER_REVERSED;
    sz_u128 last[] = {105, 104};
    transfer_rows_expect(&filter, last, 2);

    filter.limit = 5;
    filter.flags = SZ_FILTER_CREDITS;
    sz_u128 all_credits[] = {102, 104};
    transfer_rows_expect(&filter, all_credits, 2);

    /* The caller's buffer is a limit too. */
    filter = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    sz_transfer_t rows[SCENARIO_ROWS_MAX];
    uint32_t count = account_transfers(&filter, 3, rows);
    cr_assert_eq(count, 3u, "row_count_max 3 gave %u rows", count);
    assert_u128_eq(rows[2].id, 103);
    cr_assert(rows[3].id != 104, "a row was written past row_count_max");
}

/* Every kind of invalid filter of SEMANTICS.md, each a valid filter with one thing broken. */
static uint32_t invalid_filters_make(sz_account_filter_t *filters) {
    sz_account_filter_t valid = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    uint32_t count = 0;
    filters[count] = valid;
    filters[count++].account_id = 0;
    filters[count] = valid;
    filters[count++].account_id = SZ_U128_MAX;
    filters[count] = valid;
    filters[count++].limit = 0;
    filters[count] = valid;
    filters[count++].flags = 0;
    filters[count] = valid;
    filters[count++].flags = SZ_FILTER_REVERSED;
    filters[count] = valid;
    filters[count].timestamp_min = transfers_timestamp + 3;
    filters[count++].timestamp_max = transfers_timestamp + 1;
    filters[count] = valid;
    filters[count++].flags |= 1u << 3;
    filters[count] = valid;
    filters[count++].flags |= 1u << 31;
    filters[count] = valid;
    filters[count++].reserved[0] = 1;
    filters[count] = valid;
    filters[count++].reserved[23] = 0x80;
    return count;
}

Test(queries, account_transfers_with_an_invalid_filter_give_no_rows) {
    sz_account_filter_t valid = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    sz_transfer_t rows[SCENARIO_ROWS_MAX];
    cr_assert_eq(account_transfers(&valid, SCENARIO_ROWS_MAX, rows), 5u, "the valid filter");

    sz_account_filter_t filters[16];
    uint32_t filter_count = invalid_filters_make(filters);
    for (uint32_t index = 0; index < filter_count; index++) {
        uint32_t count = account_transfers(&filters[index], SCENARIO_ROWS_MAX, rows);
        cr_assert_eq(count, 0u, "invalid filter %u gave %u rows", index, count);
    }
    /* Valid but unknown account: no rows either. */
    valid.account_id = 42;
    cr_assert_eq(account_transfers(&valid, SCENARIO_ROWS_MAX, rows), 0u, "unknown account");
}

Test(queries, account_balances_give_one_row_per_transfer_with_the_balances_after_it) {
    sz_account_filter_t filter = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    sz_account_balance_t rows[SCENARIO_ROWS_MAX];
    uint32_t count = account_balances(&filter, SCENARIO_ROWS_MAX, rows);
    cr_assert_eq(count, 5u, "account 1: %u rows, expected 5 (transfer 107 failed)", count);
    balance_row_expect(&rows[0], 0, 0, 10, 0, 0);
    balance_row_expect(&rows[1], 1, 0, 10, 0, 20);
    balance_row_expect(&rows[2], 2, 0, 40, 0, 20);
    balance_row_expect(&rows[3], 3, 0, 40, 0, 60);
    balance_row_expect(&rows[4], 4, 50, 40, 0, 60);

    filter.account_id = 2;
    count = account_balances(&filter, SCENARIO_ROWS_MAX, rows);
    cr_assert_eq(count, 4u, "account 2: %u rows, expected 4", count);
    balance_row_expect(&rows[0], 0, 0, 0, 0, 10);
    balance_row_expect(&rows[1], 1, 0, 20, 0, 10);
    balance_row_expect(&rows[2], 4, 0, 20, 50, 10);
    balance_row_expect(&rows[3], 5, 0, 80, 50, 10);
}

Test(queries, account_balances_follow_later_batches) {
    transfer_create_one(transfer_post(108, 105, 20), SZ_CREATE_TRANSFER_OK);
    uint64_t timestamp = transfer_create_one(transfer_plain(109, 3, 1, 1), SZ_CREATE_TRANSFER_OK);
    sz_account_filter_t filter = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    sz_account_balance_t rows[SCENARIO_ROWS_MAX];
    uint32_t count = account_balances(&filter, SCENARIO_ROWS_MAX, rows);
    cr_assert_eq(count, 7u, "rows %u", count);
    balance_row_expect(&rows[5], timestamp - 1 - transfers_timestamp, 0, 60, 0, 60);
    balance_row_expect(&rows[6], timestamp - transfers_timestamp, 0, 60, 0, 61);
}

Test(queries, account_balances_are_empty_for_an_account_without_history) {
    sz_account_filter_t filter = filter_make(3, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    sz_account_balance_t rows[SCENARIO_ROWS_MAX];
    cr_assert_eq(account_balances(&filter, SCENARIO_ROWS_MAX, rows), 0u,
                 "account 3 has no history flag");
    /* Its transfers are still listed. */
    sz_u128 ids[] = {103, 104, 106};
    transfer_rows_expect(&filter, ids, 3);
}

Test(queries, account_balances_follow_the_debit_and_credit_flags) {
    sz_account_filter_t filter = filter_make(1, SZ_FILTER_DEBITS);
    uint64_t debits[] = {0, 2, 4};
    balance_rows_expect(&filter, debits, 3);

    filter.flags = SZ_FILTER_CREDITS;
    uint64_t credits[] = {1, 3};
    balance_rows_expect(&filter, credits, 2);
}

Test(queries, account_balances_follow_bounds_limit_and_order) {
    sz_account_filter_t filter =
        filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS | SZ_FILTER_REVERSED);
    uint64_t reversed[] = {4, 3, 2, 1, 0};
    balance_rows_expect(&filter, reversed, 5);

    filter.timestamp_min = transfers_timestamp + 1;
    filter.timestamp_max = transfers_timestamp + 3;
    uint64_t window_reversed[] = {3, 2, 1};
    balance_rows_expect(&filter, window_reversed, 3);

    filter.flags = SZ_FILTER_DEBITS | SZ_FILTER_CREDITS;
    filter.limit = 2;
    uint64_t window_first[] = {1, 2};
    balance_rows_expect(&filter, window_first, 2);

    filter.timestamp_min = transfers_timestamp + 4;
    filter.timestamp_max = transfers_timestamp + 4;
    sz_account_balance_t rows[SCENARIO_ROWS_MAX];
    cr_assert_eq(account_balances(&filter, SCENARIO_ROWS_MAX, rows), 1u, "one row at T+4");
    balance_row_expect(&rows[0], 4, 50, 40, 0, 60);
}

Test(queries, account_balances_with_an_invalid_filter_give_no_rows) {
    sz_account_filter_t valid = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    sz_account_balance_t rows[SCENARIO_ROWS_MAX];
    cr_assert_eq(account_balances(&valid, SCENARIO_ROWS_MAX, rows), 5u, "the valid filter");

    sz_account_filter_t filters[16];
    uint32_t filter_count = invalid_filters_make(filters);
    for (uint32_t index = 0; index < filter_count; index++) {
        uint32_t count = account_balances(&filters[index], SCENARIO_ROWS_MAX, rows);
        cr_assert_eq(count, 0u, "invalid filter %u gave %u rows", index, count);
    }
}

/* ---- capacity --------------------------------------------------------------------------- */

TestSuite(capacity, .fini = scenario_teardown);

typedef struct ledger_snapshot {
    sz_ledger_stats_t stats;
    sz_digest_t digest;
    uint64_t timestamp_next;
    uint64_t expiry_next;
} ledger_snapshot_t;

static ledger_snapshot_t snapshot_take(void) {
    ledger_snapshot_t snapshot;
    memset(&snapshot, 0, sizeof(snapshot));
    sz_ledger_stats(scenario_ledger, &snapshot.stats);
    snapshot.digest = sz_ledger_digest(scenario_ledger);
    snapshot.timestamp_next = sz_ledger_timestamp_next(scenario_ledger, 0);
    snapshot.expiry_next = sz_ledger_expiry_next(scenario_ledger);
    return snapshot;
}

static void snapshot_expect_unchanged(const ledger_snapshot_t *before) {
    ledger_snapshot_t after = snapshot_take();
    cr_assert_eq(after.stats.account_count, before->stats.account_count, "account_count");
    cr_assert_eq(after.stats.transfer_count, before->stats.transfer_count, "transfer_count");
    cr_assert_eq(after.stats.pending_count, before->stats.pending_count, "pending_count");
    cr_assert_eq(after.stats.history_count, before->stats.history_count, "history_count");
    cr_assert_eq(after.stats.op_count, before->stats.op_count, "op_count");
    cr_assert_eq(after.stats.timestamp_last, before->stats.timestamp_last, "timestamp_last");
    cr_assert_eq(after.digest.low, before->digest.low, "digest changed");
    cr_assert_eq(after.digest.high, before->digest.high, "digest changed");
    cr_assert_eq(after.timestamp_next, before->timestamp_next, "timestamp_next");
    cr_assert_eq(after.expiry_next, before->expiry_next, "expiry_next");
}

static sz_batch_status_t transfers_try(const sz_transfer_t *events, uint32_t event_count) {
    uint32_t result_count = 0;
    return sz_ledger_create_transfers(scenario_ledger, events, event_count,
                                      scenario_timestamp_next(), scenario_results,
                                      &result_count);
}

static sz_batch_status_t accounts_try(const sz_account_t *events, uint32_t event_count) {
    uint32_t result_count = 0;
    return sz_ledger_create_accounts(scenario_ledger, events, event_count,
                                     scenario_timestamp_next(), scenario_results, &result_count);
}

static void status_expect(sz_batch_status_t actual, sz_batch_status_t expected) {
    cr_assert_eq(actual, expected, "status %s, expected %s", sz_batch_status_name(actual),
                 sz_batch_status_name(expected));
}

/* Accounts 1 and 2 (with the given flags) in a ledger with this config. */
static void capacity_open(sz_ledger_config_t config, uint16_t account_flags) {
    scenario_open(&config);
    sz_account_t accounts[] = {account_make(1, account_flags), account_make(2, account_flags)};
    accounts_create_ok(accounts, 2);
}

Test(capacity, accounts_batch_over_capacity_is_refused_and_changes_nothing) {
    sz_ledger_config_t config = scenario_config_default();
    config.accounts_max = 4;
    capacity_open(config, 0);
    sz_account_t third = account_make(3, 0);
    accounts_create_ok(&third, 1);

    ledger_snapshot_t before = snapshot_take();
    sz_account_t events[] = {account_make(4, 0), account_make(5, 0)};
    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_ACCOUNTS, 2),
                  SZ_BATCH_ACCOUNTS_FULL);
    status_expect(accounts_try(events, 2), SZ_BATCH_ACCOUNTS_FULL);
    snapshot_expect_unchanged(&before);
    cr_assert(!account_exists(4), "account 4 of a refused batch");
    cr_assert(!account_exists(5), "account 5 of a refused batch");

    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_ACCOUNTS, 1),
                  SZ_BATCH_APPLIED);
    accounts_create_ok(events, 1);
    cr_assert(account_exists(4), "account 4 of the smaller batch");
    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_ACCOUNTS, 1),
                  SZ_BATCH_ACCOUNTS_FULL);
}

Test(capacity, accounts_capacity_is_judged_on_the_worst_case_even_for_retries) {
    sz_ledger_config_t config = scenario_config_default();
    config.accounts_max = 3;
    capacity_open(config, 0);
    /* Both are retries that would only get `exists`, but the check comes before applying. */
    ledger_snapshot_t before = snapshot_take();
    sz_account_t retries[] = {account_make(1, 0), account_make(2, 0)};
    status_expect(accounts_try(retries, 2), SZ_BATCH_ACCOUNTS_FULL);
    snapshot_expect_unchanged(&before);
}

Test(capacity, transfers_batch_over_capacity_is_refused_and_changes_nothing) {
    sz_ledger_config_t config = scenario_config_default();
    config.transfers_max = 4;
    capacity_open(config, 0);
    sz_transfer_t first[] = {
        transfer_plain(1, 1, 2, 1),
        transfer_plain(2, 1, 2, 1),
        transfer_plain(3, 1, 2, 1),
    };
    transfers_create_ok(first, 3);

    ledger_snapshot_t before = snapshot_take();
    sz_transfer_t events[] = {transfer_plain(4, 1, 2, 1), transfer_plain(5, 1, 2, 1)};
    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_TRANSFERS, 2),
                  SZ_BATCH_TRANSFERS_FULL);
    status_expect(transfers_try(events, 2), SZ_BATCH_TRANSFERS_FULL);
    snapshot_expect_unchanged(&before);
    balances_expect(1, 0, 3, 0, 0);
    balances_expect(2, 0, 0, 0, 3);
    cr_assert(!transfer_exists(4), "transfer 4 of a refused batch");

    transfers_create_ok(events, 1);
    balances_expect(1, 0, 4, 0, 0);
    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_TRANSFERS, 1),
                  SZ_BATCH_TRANSFERS_FULL);
}

Test(capacity, pending_capacity_counts_every_event_of_the_batch) {
    sz_ledger_config_t config = scenario_config_default();
    config.pending_max = 3;
    capacity_open(config, 0);
    sz_transfer_t pendings[] = {
        transfer_pending(1, 1, 2, 1, 60),
        transfer_pending(2, 1, 2, 1, 60),
    };
    transfers_create_ok(pendings, 2);

    /* Plain transfers need no expiry, but the worst case of two events is two timeouts. */
    ledger_snapshot_t before = snapshot_take();
    sz_transfer_t events[] = {transfer_plain(3, 1, 2, 1), transfer_plain(4, 1, 2, 1)};
    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_TRANSFERS, 2),
                  SZ_BATCH_PENDING_FULL);
    status_expect(transfers_try(events, 2), SZ_BATCH_PENDING_FULL);
    snapshot_expect_unchanged(&before);
    balances_expect(1, 2, 0, 0, 0);

    transfers_create_ok(events, 1);
    balances_expect(1, 2, 1, 0, 0);
}

Test(capacity, rolled_back_post_keeps_its_pending_transfer_counted) {
    sz_ledger_config_t config = scenario_config_default();
    config.pending_max = 3;
    capacity_open(config, 0);
    transfer_create_one(transfer_pending(1, 1, 2, 5, 60), SZ_CREATE_TRANSFER_OK);
    sz_transfer_t chain[] = {
        transfer_linked(transfer_post(2, 1, 0)),
        transfer_plain(3, 1, 1, 1), /* accounts_must_be_different */
    };
    uint32_t expected[] = {SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED,
                           SZ_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT};
    transfers_create_expect(chain, 2, expected);
    balances_expect(1, 5, 0, 0, 0);

    /* Transfer 1 still waits for expiry: two slots left, not three. */
    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_TRANSFERS, 3),
                  SZ_BATCH_PENDING_FULL);
    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_TRANSFERS, 2),
                  SZ_BATCH_APPLIED);
}

Test(capacity, history_capacity_counts_two_rows_per_event) {
    sz_ledger_config_t config = scenario_config_default();
    config.history_max = 7;
    capacity_open(config, SZ_ACCOUNT_HISTORY);
    sz_transfer_t first[] = {transfer_plain(1, 1, 2, 1), transfer_plain(2, 2, 1, 1)};
    transfers_create_ok(first, 2);
    sz_ledger_stats_t stats;
    sz_ledger_stats(scenario_ledger, &stats);
    cr_assert_eq(stats.history_count, 4u, "history_count %lu", (unsigned long)stats.history_count);

    ledger_snapshot_t before = snapshot_take();
    sz_transfer_t events[] = {transfer_plain(3, 1, 2, 1), transfer_plain(4, 1, 2, 1)};
    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_TRANSFERS, 2),
                  SZ_BATCH_HISTORY_FULL);
    status_expect(transfers_try(events, 2), SZ_BATCH_HISTORY_FULL);
    snapshot_expect_unchanged(&before);
    cr_assert_eq(history_row_count(1), 2u, "account 1 rows");

    transfers_create_ok(events, 1);
    cr_assert_eq(history_row_count(1), 3u, "account 1 rows");
    cr_assert_eq(history_row_count(2), 3u, "account 2 rows");
}

static sz_ledger_config_t config_for_full_batches(void) {
    sz_ledger_config_t config = scenario_config_default();
    config.accounts_max = 4 * SZ_BATCH_EVENTS_MAX;
    config.transfers_max = 4 * SZ_BATCH_EVENTS_MAX;
    config.pending_max = 4 * SZ_BATCH_EVENTS_MAX;
    config.history_max = 8 * SZ_BATCH_EVENTS_MAX;
    return config;
}

Test(capacity, transfer_batch_of_the_maximum_size_applies_and_one_more_is_refused) {
    capacity_open(config_for_full_batches(), 0);
    uint32_t event_count = SZ_BATCH_EVENTS_MAX + 1;
    sz_transfer_t *events = calloc(event_count, sizeof(*events));
    cr_assert_not_null(events, "calloc");
    for (uint32_t index = 0; index < event_count; index++) {
        events[index] = transfer_plain(index + 1, 1, 2, 1);
    }

    ledger_snapshot_t before = snapshot_take();
    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_TRANSFERS,
                                           event_count),
                  SZ_BATCH_TOO_MANY_EVENTS);
    status_expect(transfers_try(events, event_count), SZ_BATCH_TOO_MANY_EVENTS);
    snapshot_expect_unchanged(&before);
    balances_expect(1, 0, 0, 0, 0);

    transfers_create_ok(events, SZ_BATCH_EVENTS_MAX);
    balances_expect(1, 0, SZ_BATCH_EVENTS_MAX, 0, 0);
    balances_expect(2, 0, 0, 0, SZ_BATCH_EVENTS_MAX);
    free(events);
}

Test(capacity, account_batch_of_the_maximum_size_applies_and_one_more_is_refused) {
    capacity_open(config_for_full_batches(), 0);
    uint32_t event_count = SZ_BATCH_EVENTS_MAX + 1;
    sz_account_t *events = calloc(event_count, sizeof(*events));
    cr_assert_not_null(events, "calloc");
    for (uint32_t index = 0; index < event_count; index++) {
        events[index] = account_make(index + 100, 0);
    }

    ledger_snapshot_t before = snapshot_take();
    status_expect(sz_ledger_capacity_check(scenario_ledger, SZ_OPERATION_CREATE_ACCOUNTS,
                                           event_count),
                  SZ_BATCH_TOO_MANY_EVENTS);
    status_expect(accounts_try(events, event_count), SZ_BATCH_TOO_MANY_EVENTS);
    snapshot_expect_unchanged(&before);

    accounts_create_ok(events, SZ_BATCH_EVENTS_MAX);
    sz_ledger_stats_t stats;
    sz_ledger_stats(scenario_ledger, &stats);
    cr_assert_eq(stats.account_count, 2u + SZ_BATCH_EVENTS_MAX, "account_count %lu",
                 (unsigned long)stats.account_count);
    cr_assert(account_exists(100 + SZ_BATCH_EVENTS_MAX - 1), "last account of the batch");
    cr_assert(!account_exists(100 + SZ_BATCH_EVENTS_MAX), "the event past the batch");
    free(events);
}

/* ---- digest and verify ------------------------------------------------------------------ */

TestSuite(digest, .fini = scenario_teardown);

#define SCRIPT_STEP_COUNT 6u

/* One step of a script that touches every kind of operation: accounts, plain, pending, a
 * failed chain, post, balancing, expiry, void. Runs on scenario_ledger; deterministic, so two
 * ledgers with the same history get the same batches. */
static void script_step(uint32_t step) {
    switch (step) {
    case 0: {
        sz_account_t accounts[] = {
            account_make(1, SZ_ACCOUNT_HISTORY),
            account_make(2, SZ_ACCOUNT_HISTORY),
            account_make(3, SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS),
            account_make(4, 0),
        };
        accounts_create_ok(accounts, 4);
        break;
    }
    case 1: {
        sz_transfer_t transfers[] = {
            transfer_plain(10, 1, 2, 100),
            transfer_plain(11, 2, 3, 50),
            transfer_linked(transfer_plain(12, 3, 4, 10)),
            transfer_plain(13, 3, 4, 100),
            transfer_pending(14, 1, 4, 30, 1),
            transfer_pending(15, 2, 4, 20, 0),
        };
        uint32_t expected[] = {0, 0, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED,
                               SZ_CREATE_TRANSFER_EXCEEDS_CREDITS, 0, 0};
        transfers_create_expect(transfers, 6, expected);
        break;
    }
    case 2: {
        sz_transfer_t transfers[] = {
            transfer_post(16, 15, 5),
            transfer_plain(17, 3, 1, 0),
        };
        transfers[1].flags = SZ_TRANSFER_BALANCING_DEBIT;
        transfers_create_ok(transfers, 2);
        break;
    }
    case 3: {
        /* Well past transfer 14's deadline (its timeout is 1 s). */
        uint64_t timestamp = scenario_timestamp_next() + 2 * SCENARIO_NS_PER_S;
        cr_assert_eq(expire_at(timestamp), 1u, "transfer 14 expires");
        break;
    }
    case 4: {
        sz_transfer_t transfers[] = {
            transfer_pending(18, 1, 2, 7, 0),
            transfer_void(19, 18),
            transfer_plain(20, 1, 2, 0), /* amount_must_not_be_zero */
        };
        uint32_t expected[] = {0, 0, SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO};
        transfers_create_expect(transfers, 3, expected);
        break;
    }
    case 5: {
        /* Every event fails (exists): still an applied batch. */
        sz_account_t accounts[] = {account_make(1, SZ_ACCOUNT_HISTORY)};
        uint32_t expected[] = {SZ_CREATE_ACCOUNT_EXISTS};
        accounts_create_expect(accounts, 1, expected);
        break;
    }
    default:
        cr_assert_fail("no step %u", step);
    }
}

static void verify_expect_ok(void) {
    char message[256] = {0};
    int rc = sz_ledger_verify(scenario_ledger, message, sizeof(message));
    cr_assert_eq(rc, 0, "sz_ledger_verify returned %d: %s", rc, message);
}

static int digest_compare(sz_digest_t left, sz_digest_t right) {
    return left.low == right.low && left.high == right.high;
}

Test(digest, verify_accepts_a_healthy_ledger_after_every_kind_of_operation) {
    scenario_setup();
    verify_expect_ok();
    for (uint32_t step = 0; step < SCRIPT_STEP_COUNT; step++) {
        script_step(step);
        verify_expect_ok();
    }
    /* The script did move money: the check above ran on a non-trivial state. */
    balances_expect(1, 0, 100, 0, 50);
    balances_expect(3, 0, 50, 0, 50);
    balances_expect(4, 0, 0, 0, 5);
}

Test(digest, digest_changes_with_every_applied_batch_and_never_with_a_query) {
    scenario_setup();
    sz_digest_t seen[SCRIPT_STEP_COUNT + 1];
    seen[0] = sz_ledger_digest(scenario_ledger);
    for (uint32_t step = 0; step < SCRIPT_STEP_COUNT; step++) {
        script_step(step);
        sz_digest_t digest = sz_ledger_digest(scenario_ledger);
        for (uint32_t earlier = 0; earlier <= step; earlier++) {
            cr_assert(!digest_compare(digest, seen[earlier]),
                      "digest after step %u equals the one after step %d", step,
                      (int)earlier - 1);
        }
        seen[step + 1] = digest;

        /* Queries of every kind leave it alone. */
        sz_u128 ids[] = {1, 2, 10, 14};
        sz_account_t accounts[4];
        sz_transfer_t transfers[SCENARIO_ROWS_MAX];
        sz_account_balance_t rows[SCENARIO_ROWS_MAX];
        sz_account_filter_t filter = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
        (void)sz_ledger_lookup_accounts(scenario_ledger, ids, 4, accounts);
        (void)sz_ledger_lookup_transfers(scenario_ledger, ids, 4, transfers);
        (void)sz_ledger_get_account_transfers(scenario_ledger, &filter, SCENARIO_ROWS_MAX,
                                              transfers);
        (void)sz_ledger_get_account_balances(scenario_ledger, &filter, SCENARIO_ROWS_MAX, rows);
        (void)sz_ledger_expiry_next(scenario_ledger);
        cr_assert(digest_compare(sz_ledger_digest(scenario_ledger), digest),
                  "a query changed the digest after step %u", step);
    }
}

/* Runs the script on two ledgers side by side and compares digests after every step. */
static void script_on_two_ledgers(const sz_ledger_config_t *left_config,
                                  const sz_ledger_config_t *right_config) {
    sz_ledger_t *left = NULL;
    sz_ledger_t *right = NULL;
    cr_assert_eq(sz_ledger_init(left_config, &left), 0, "init left");
    cr_assert_eq(sz_ledger_init(right_config, &right), 0, "init right");
    cr_assert(digest_compare(sz_ledger_digest(left), sz_ledger_digest(right)),
              "fresh ledgers differ");
    for (uint32_t step = 0; step < SCRIPT_STEP_COUNT; step++) {
        scenario_ledger = left;
        script_step(step);
        scenario_ledger = right;
        script_step(step);
        cr_assert(digest_compare(sz_ledger_digest(left), sz_ledger_digest(right)),
                  "digests differ after step %u", step);
    }

    /* One different batch: the digests part. */
    sz_transfer_t left_transfer = transfer_plain(30, 1, 2, 1);
    sz_transfer_t right_transfer = transfer_plain(30, 1, 2, 2);
    scenario_ledger = left;
    transfer_create_one(left_transfer, SZ_CREATE_TRANSFER_OK);
    scenario_ledger = right;
    transfer_create_one(right_transfer, SZ_CREATE_TRANSFER_OK);
    cr_assert(!digest_compare(sz_ledger_digest(left), sz_ledger_digest(right)),
              "different batches, equal digests");

    scenario_ledger = NULL;
    sz_ledger_deinit(left);
    sz_ledger_deinit(right);
}

Test(digest, two_ledgers_fed_the_same_batches_have_equal_digests) {
    sz_ledger_config_t config = scenario_config_default();
    script_on_two_ledgers(&config, &config);
}

Test(digest, digest_does_not_depend_on_the_hash_seed_or_capacities) {
    /* The seed only lays out the id tables, and capacities only bound them (ledger.h): a
     * follower configured differently must still agree on the digest. */
    sz_ledger_config_t left = scenario_config_default();
    sz_ledger_config_t right = scenario_config_default();
    right.hash_seed = 12345;
    right.accounts_max = 4096;
    right.transfers_max = 8192;
    script_on_two_ledgers(&left, &right);
}

Test(capacity, timestamps_are_accepted_up_to_the_ceiling_and_refused_one_past) {
    scenario_setup();
    sz_account_t account = account_make(7, 0);
    uint32_t result_count = 0;
    sz_u128 expired[SZ_EXPIRE_EVENTS_MAX];
    /* One past the ceiling: refused whole, for creates and for the expire op alike. */
    status_expect(sz_ledger_create_accounts(scenario_ledger, &account, 1, SZ_TIMESTAMP_MAX + 1,
                                            scenario_results, &result_count),
                  SZ_BATCH_TIMESTAMP_INVALID);
    status_expect(sz_ledger_expire_pending(scenario_ledger, SZ_TIMESTAMP_MAX + 1, expired,
                                           &result_count),
                  SZ_BATCH_TIMESTAMP_INVALID);
    ledger_snapshot_t before = snapshot_take();
    cr_assert_eq(before.stats.op_count, 0, "nothing applied");
    /* At the ceiling: a full batch still fits below 2^64. */
    status_expect(sz_ledger_create_accounts(scenario_ledger, &account, 1, SZ_TIMESTAMP_MAX,
                                            scenario_results, &result_count),
                  SZ_BATCH_APPLIED);
    cr_assert_eq(result_count, 0);
    sz_account_t found;
    sz_u128 id = 7;
    cr_assert_eq(sz_ledger_lookup_accounts(scenario_ledger, &id, 1, &found), 1);
    cr_assert_eq(found.timestamp, SZ_TIMESTAMP_MAX);
}
