/* test_two_phase.c: pending transfers and their resolution (post, partial post, void) and
 * expiry, as SEMANTICS.md "Effects" and the post/void order of checks describe. Each test
 * creates pending transfers in a small ledger with controlled timestamps (batches at chosen T,
 * expire ops at chosen instants around the deadline ts + timeout * 10^9), then checks the
 * per-event results, the four balances of both accounts, the stored records (lookup) and the
 * history rows, so that reserving, releasing and double resolution are proven on the state a
 * client sees, not on return codes alone. */
#include "scenario.h"

/* Accounts 1 and 2 keep history; 4 may not be debited beyond its credits. */
static void two_phase_setup(void) {
    scenario_setup();
    sz_account_t accounts[] = {
        account_make(1, SZ_ACCOUNT_HISTORY),
        account_make(2, SZ_ACCOUNT_HISTORY),
        account_make(3, 0),
        account_make(4, SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS),
    };
    accounts_create_ok(accounts, 4);
}

TestSuite(two_phase, .init = two_phase_setup, .fini = scenario_teardown);

static uint64_t deadline_of(uint64_t timestamp, uint32_t timeout) {
    return timestamp + (uint64_t)timeout * SCENARIO_NS_PER_S;
}

Test(two_phase, pending_transfer_reserves_the_amount_in_pending_balances) {
    uint64_t timestamp =
        transfer_create_one(transfer_pending(10, 1, 2, 100, 0), SZ_CREATE_TRANSFER_OK);
    balances_expect(1, 100, 0, 0, 0);
    balances_expect(2, 0, 0, 100, 0);

    sz_transfer_t stored = transfer_lookup(10);
    cr_assert_eq(stored.flags, SZ_TRANSFER_PENDING, "flags %u", stored.flags);
    assert_u128_eq(stored.amount, 100);
    cr_assert_eq(stored.timestamp, timestamp, "timestamp");

    sz_account_balance_t rows[SCENARIO_ROWS_MAX];
    sz_account_filter_t filter = filter_make(1, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    uint32_t count = sz_ledger_get_account_balances(scenario_ledger, &filter, SCENARIO_ROWS_MAX,
                                                    rows);
    cr_assert_eq(count, 1u, "one history row for the pending transfer, got %u", count);
    assert_u128_eq(rows[0].debits_pending, 100);
    assert_u128_eq(rows[0].debits_posted, 0);
    cr_assert_eq(rows[0].timestamp, timestamp, "row timestamp");
}

Test(two_phase, full_post_with_amount_zero_posts_the_whole_pending_amount) {
    transfer_create_one(transfer_pending(10, 1, 2, 100, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_post(11, 10, 0), SZ_CREATE_TRANSFER_OK);
    balances_expect(1, 0, 100, 0, 0);
    balances_expect(2, 0, 0, 0, 100);
    sz_transfer_t stored = transfer_lookup(11);
    assert_u128_eq(stored.amount, 100);
    cr_assert_eq(stored.flags, SZ_TRANSFER_POST_PENDING, "flags %u", stored.flags);
    /* The pending transfer itself is unchanged. */
    stored = transfer_lookup(10);
    cr_assert_eq(stored.flags, SZ_TRANSFER_PENDING, "flags %u", stored.flags);
    assert_u128_eq(stored.amount, 100);
}

Test(two_phase, full_post_with_the_exact_amount_posts_it) {
    transfer_create_one(transfer_pending(10, 1, 2, 100, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_post(11, 10, 100), SZ_CREATE_TRANSFER_OK);
    balances_expect(1, 0, 100, 0, 0);
    balances_expect(2, 0, 0, 0, 100);
}

Test(two_phase, partial_post_releases_the_rest) {
    transfer_create_one(transfer_pending(10, 1, 2, 100, 0), SZ_CREATE_TRANSFER_OK);
    uint64_t timestamp = transfer_create_one(transfer_post(11, 10, 30), SZ_CREATE_TRANSFER_OK);
    balances_expect(1, 0, 30, 0, 0);
    balances_expect(2, 0, 0, 0, 30);
    assert_u128_eq(transfer_lookup(11).amount, 30);

    /* The history row after the post shows the release of all 100. */
    sz_account_balance_t rows[SCENARIO_ROWS_MAX];
    sz_account_filter_t filter = filter_make(2, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    uint32_t count = sz_ledger_get_account_balances(scenario_ledger, &filter, SCENARIO_ROWS_MAX,
                                                    rows);
    cr_assert_eq(count, 2u, "rows %u", count);
    assert_u128_eq(rows[1].credits_pending, 0);
    assert_u128_eq(rows[1].credits_posted, 30);
    cr_assert_eq(rows[1].timestamp, timestamp, "row timestamp");

    /* The released 70 cannot be posted afterwards. */
    transfer_create_one(transfer_post(12, 10, 70), SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED);
    balances_expect(1, 0, 30, 0, 0);
}

Test(two_phase, post_takes_accounts_ledger_and_code_from_the_pending_transfer) {
    sz_transfer_t pending = transfer_pending(10, 1, 2, 100, 3600);
    pending.code = 7;
    pending.user_data_128 = 0xAA;
    pending.user_data_64 = 0xBB;
    pending.user_data_32 = 0xCC;
    transfer_create_one(pending, SZ_CREATE_TRANSFER_OK);

    /* Accounts, ledger and code 0 in the request; user_data_128 and _32 given, _64 not. */
    sz_transfer_t post = transfer_post(11, 10, 40);
    post.user_data_128 = 0x11;
    post.user_data_32 = 0x22;
    uint64_t timestamp = transfer_create_one(post, SZ_CREATE_TRANSFER_OK);

    sz_transfer_t stored = transfer_lookup(11);
    assert_u128_eq(stored.debit_account_id, 1);
    assert_u128_eq(stored.credit_account_id, 2);
    assert_u128_eq(stored.amount, 40);
    assert_u128_eq(stored.pending_id, 10);
    assert_u128_eq(stored.user_data_128, 0x11);
    cr_assert_eq(stored.user_data_64, 0xBBu, "user_data_64 inherited, got %lu",
                 (unsigned long)stored.user_data_64);
    cr_assert_eq(stored.user_data_32, 0x22u, "user_data_32 from the request, got %u",
                 stored.user_data_32);
    cr_assert_eq(stored.timeout, 0u, "a post has timeout 0, got %u", stored.timeout);
    cr_assert_eq(stored.ledger, SCENARIO_LEDGER, "ledger %u", stored.ledger);
    cr_assert_eq(stored.code, 7, "code inherited, got %u", stored.code);
    cr_assert_eq(stored.flags, SZ_TRANSFER_POST_PENDING, "flags %u", stored.flags);
    cr_assert_eq(stored.timestamp, timestamp, "timestamp");
}

Test(two_phase, post_may_repeat_the_pending_transfers_accounts_ledger_and_code) {
    sz_transfer_t pending = transfer_pending(10, 1, 2, 100, 0);
    pending.code = 7;
    transfer_create_one(pending, SZ_CREATE_TRANSFER_OK);
    sz_transfer_t post = transfer_post(11, 10, 0);
    post.debit_account_id = 1;
    post.credit_account_id = 2;
    post.ledger = SCENARIO_LEDGER;
    post.code = 7;
    transfer_create_one(post, SZ_CREATE_TRANSFER_OK);
    balances_expect(1, 0, 100, 0, 0);
}

Test(two_phase, void_releases_the_pending_amount_without_posting) {
    transfer_create_one(transfer_pending(10, 1, 2, 100, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_void(11, 10), SZ_CREATE_TRANSFER_OK);
    balances_expect(1, 0, 0, 0, 0);
    balances_expect(2, 0, 0, 0, 0);
    sz_transfer_t stored = transfer_lookup(11);
    cr_assert_eq(stored.flags, SZ_TRANSFER_VOID_PENDING, "flags %u", stored.flags);
    assert_u128_eq(stored.pending_id, 10);
    cr_assert_eq(history_row_count(1), 2u, "a void writes a history row");
}

Test(two_phase, posting_twice_gives_already_posted) {
    transfer_create_one(transfer_pending(10, 1, 2, 100, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_post(11, 10, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_post(12, 10, 0),
                        SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED);
    transfer_create_one(transfer_void(13, 10), SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED);
    balances_expect(1, 0, 100, 0, 0);
    balances_expect(2, 0, 0, 0, 100);
    cr_assert(!transfer_exists(12), "the second post must not be stored");
    cr_assert(!transfer_exists(13), "the void must not be stored");
}

Test(two_phase, posting_after_a_void_gives_already_voided) {
    transfer_create_one(transfer_pending(10, 1, 2, 100, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_void(11, 10), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_post(12, 10, 0),
                        SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED);
    transfer_create_one(transfer_void(13, 10), SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED);
    balances_expect(1, 0, 0, 0, 0);
    balances_expect(2, 0, 0, 0, 0);
    cr_assert(!transfer_exists(12), "the post must not be stored");
}

Test(two_phase, resolution_in_the_same_batch_sees_the_earlier_one) {
    sz_transfer_t events[] = {
        transfer_pending(10, 1, 2, 100, 0),
        transfer_post(11, 10, 60),
        transfer_void(12, 10),
    };
    uint32_t expected[] = {0, 0, SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED};
    transfers_create_expect(events, 3, expected);
    balances_expect(1, 0, 60, 0, 0);
}

Test(two_phase, pending_amount_counts_against_the_limit_until_voided) {
    transfer_create_one(transfer_plain(1, 3, 4, 100), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_pending(10, 4, 3, 80, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_pending(11, 4, 3, 30, 0), SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    transfer_create_one(transfer_plain(12, 4, 3, 30), SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    transfer_create_one(transfer_void(13, 10), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_pending(11, 4, 3, 30, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_post(14, 11, 0), SZ_CREATE_TRANSFER_OK);
    balances_expect(4, 0, 30, 0, 100);
}

Test(two_phase, expiry_next_is_the_creation_timestamp_plus_the_timeout) {
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), UINT64_MAX, "nothing waits at start");
    uint64_t timestamp =
        transfer_create_one(transfer_pending(10, 1, 2, 100, 2), SZ_CREATE_TRANSFER_OK);
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), deadline_of(timestamp, 2),
                 "expiry_next %lu, expected %lu",
                 (unsigned long)sz_ledger_expiry_next(scenario_ledger),
                 (unsigned long)deadline_of(timestamp, 2));
}

Test(two_phase, expiry_next_reports_the_earliest_deadline) {
    sz_transfer_t events[] = {
        transfer_pending(10, 1, 2, 1, 10),
        transfer_pending(11, 1, 2, 1, 5),
        transfer_pending(12, 1, 2, 1, 0), /* never expires */
        transfer_pending(13, 1, 2, 1, 7),
    };
    uint64_t timestamp = transfers_create_ok(events, 4);
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), deadline_of(timestamp + 1, 5),
                 "the deadline of transfer 11 is the earliest");
}

Test(two_phase, expiry_next_skips_resolved_pending_transfers) {
    sz_transfer_t events[] = {
        transfer_pending(10, 1, 2, 1, 10),
        transfer_pending(11, 1, 2, 1, 5),
    };
    uint64_t timestamp = transfers_create_ok(events, 2);
    transfer_create_one(transfer_void(12, 11), SZ_CREATE_TRANSFER_OK);
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), deadline_of(timestamp, 10),
                 "voided transfer 11 no longer waits; 10 is next");
    transfer_create_one(transfer_post(13, 10, 0), SZ_CREATE_TRANSFER_OK);
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), UINT64_MAX, "nothing waits any more");
    cr_assert_eq(expire_at(deadline_of(timestamp, 10)), 0u, "resolved transfers never expire");
    balances_expect(1, 0, 1, 0, 0);
}

Test(two_phase, pending_transfer_is_not_expired_one_nanosecond_before_its_deadline) {
    uint64_t timestamp =
        transfer_create_one(transfer_pending(10, 1, 2, 100, 2), SZ_CREATE_TRANSFER_OK);
    cr_assert_eq(expire_at(deadline_of(timestamp, 2) - 1), 0u, "expired too early");
    balances_expect(1, 100, 0, 0, 0);
    balances_expect(2, 0, 0, 100, 0);
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), deadline_of(timestamp, 2),
                 "still waiting");
}

Test(two_phase, pending_transfer_expires_exactly_at_its_deadline) {
    transfer_create_one(transfer_plain(1, 1, 2, 5), SZ_CREATE_TRANSFER_OK);
    uint64_t timestamp =
        transfer_create_one(transfer_pending(10, 1, 2, 100, 2), SZ_CREATE_TRANSFER_OK);
    cr_assert_eq(expire_at(deadline_of(timestamp, 2)), 1u, "one transfer expires");
    assert_u128_eq(scenario_expired_ids[0], 10);
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), UINT64_MAX, "nothing waits any more");
}

Test(two_phase, expiry_releases_pending_balances_and_writes_no_history_row) {
    transfer_create_one(transfer_plain(1, 1, 2, 5), SZ_CREATE_TRANSFER_OK);
    uint64_t timestamp =
        transfer_create_one(transfer_pending(10, 1, 2, 100, 1), SZ_CREATE_TRANSFER_OK);
    cr_assert_eq(history_row_count(1), 2u, "rows before expiry");
    cr_assert_eq(expire_at(deadline_of(timestamp, 1) + 500), 1u, "one transfer expires");

    /* The posted 5 stays; the pending 100 is released. */
    balances_expect(1, 0, 5, 0, 0);
    balances_expect(2, 0, 0, 0, 5);
    cr_assert_eq(history_row_count(1), 2u, "expiry writes no history row");
    cr_assert_eq(history_row_count(2), 2u, "expiry writes no history row");
    /* The pending transfer stays as it was created. */
    sz_transfer_t stored = transfer_lookup(10);
    cr_assert_eq(stored.flags, SZ_TRANSFER_PENDING, "flags %u", stored.flags);
    assert_u128_eq(stored.amount, 100);
}

Test(two_phase, expire_op_expires_in_deadline_order) {
    sz_transfer_t events[] = {
        transfer_pending(10, 1, 2, 1, 5), /* deadline T + 5 s */
        transfer_pending(11, 1, 2, 2, 3), /* T + 1 + 3 s */
        transfer_pending(12, 1, 2, 4, 5), /* T + 2 + 5 s */
        transfer_pending(13, 1, 2, 8, 3), /* T + 3 + 3 s */
        transfer_pending(14, 1, 2, 16, 9), /* T + 4 + 9 s: not yet */
    };
    uint64_t timestamp = transfers_create_ok(events, 5);
    cr_assert_eq(expire_at(deadline_of(timestamp + 2, 5)), 4u, "four deadlines have passed");
    sz_u128 order[] = {11, 13, 10, 12};
    for (uint32_t index = 0; index < 4; index++) {
        assert_u128_eq(scenario_expired_ids[index], order[index]);
    }
    balances_expect(1, 16, 0, 0, 0);
    balances_expect(2, 0, 0, 16, 0);
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), deadline_of(timestamp + 4, 9),
                 "transfer 14 is next");
}

Test(two_phase, pending_transfer_without_timeout_never_expires) {
    uint64_t timestamp =
        transfer_create_one(transfer_pending(10, 1, 2, 100, 0), SZ_CREATE_TRANSFER_OK);
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), UINT64_MAX, "nothing to expire");
    cr_assert_eq(expire_at(deadline_of(timestamp, UINT32_MAX)), 0u, "nothing expires");
    balances_expect(1, 100, 0, 0, 0);
    transfer_create_one(transfer_post(11, 10, 0), SZ_CREATE_TRANSFER_OK);
    balances_expect(1, 0, 100, 0, 0);
}

Test(two_phase, post_one_nanosecond_before_the_deadline_succeeds) {
    uint64_t timestamp =
        transfer_create_one(transfer_pending(10, 1, 2, 100, 1), SZ_CREATE_TRANSFER_OK);
    sz_transfer_t post = transfer_post(11, 10, 0);
    uint32_t expected = SZ_CREATE_TRANSFER_OK;
    transfers_create_expect_at(&post, 1, deadline_of(timestamp, 1) - 1, &expected);
    balances_expect(1, 0, 100, 0, 0);
    balances_expect(2, 0, 0, 0, 100);
    cr_assert_eq(expire_at(deadline_of(timestamp, 1)), 0u, "a posted transfer never expires");
    balances_expect(1, 0, 100, 0, 0);
}

Test(two_phase, post_at_the_deadline_before_the_expire_op_gets_expired_and_stores_nothing) {
    uint64_t timestamp =
        transfer_create_one(transfer_pending(10, 1, 2, 100, 1), SZ_CREATE_TRANSFER_OK);
    uint64_t deadline_ns = deadline_of(timestamp, 1);
    sz_transfer_t post = transfer_post(11, 10, 0);
    uint32_t expected = SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED;
    transfers_create_expect_at(&post, 1, deadline_ns, &expected);

    cr_assert(!transfer_exists(11), "the expired post must not be stored");
    balances_expect(1, 100, 0, 0, 0); /* the expire op has not run yet */
    sz_ledger_stats_t stats;
    sz_ledger_stats(scenario_ledger, &stats);
    cr_assert_eq(stats.transfer_count, 1u, "transfer_count %lu",
                 (unsigned long)stats.transfer_count);

    cr_assert_eq(expire_at(deadline_ns + 1), 1u, "the expire op still expires it");
    balances_expect(1, 0, 0, 0, 0);
    /* The id of the refused post is free. */
    transfer_create_one(transfer_plain(11, 1, 2, 3), SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(11).amount, 3);
}

Test(two_phase, void_whose_own_timestamp_reaches_the_deadline_gets_expired) {
    uint64_t timestamp =
        transfer_create_one(transfer_pending(10, 1, 2, 100, 1), SZ_CREATE_TRANSFER_OK);
    /* The batch starts 1 ns before the deadline; the void is event 1, at the deadline. */
    sz_transfer_t events[] = {
        transfer_plain(11, 3, 1, 5),
        transfer_void(12, 10),
    };
    uint32_t expected[] = {SZ_CREATE_TRANSFER_OK, SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED};
    transfers_create_expect_at(events, 2, deadline_of(timestamp, 1) - 1, expected);
    cr_assert(!transfer_exists(12), "the expired void must not be stored");
    balances_expect(1, 100, 0, 0, 5);
}

Test(two_phase, post_or_void_after_the_expire_op_gets_expired) {
    uint64_t timestamp =
        transfer_create_one(transfer_pending(10, 1, 2, 100, 1), SZ_CREATE_TRANSFER_OK);
    cr_assert_eq(expire_at(deadline_of(timestamp, 1)), 1u, "expired");
    transfer_create_one(transfer_post(11, 10, 0), SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED);
    transfer_create_one(transfer_void(12, 10), SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED);
    cr_assert(!transfer_exists(11), "the post must not be stored");
    cr_assert(!transfer_exists(12), "the void must not be stored");
    balances_expect(1, 0, 0, 0, 0);
    balances_expect(2, 0, 0, 0, 0);
}
