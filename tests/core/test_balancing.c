/* test_balancing.c: balancing transfers clamp their amount as SEMANTICS.md "Balancing" says:
 * balancing_debit to the debit account's credits_posted - (debits_posted + debits_pending),
 * balancing_credit to the credit account's debits_posted - (credits_posted + credits_pending),
 * both to the smaller, amount 0 meaning 2^64-1, a clamp to 0 refused with exceeds_credits /
 * exceeds_debits. Each test funds accounts with plain or pending transfers, sends a balancing
 * transfer, and checks the stored amount (lookup_transfers and get_account_transfers) and the
 * balances of both accounts, so the clamp is proven on what was really booked. */
#include "scenario.h"

/* 1 may not be debited beyond its credits, 2 not credited beyond its debits; 3, 4, 5 have no
 * limit; 9 is the outside world that funds them. */
static void balancing_setup(void) {
    scenario_setup();
    sz_account_t accounts[] = {
        account_make(1, SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS),
        account_make(2, SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS),
        account_make(3, 0),
        account_make(4, 0),
        account_make(5, 0),
        account_make(9, 0),
    };
    accounts_create_ok(accounts, 6);
}

TestSuite(balancing, .init = balancing_setup, .fini = scenario_teardown);

static sz_transfer_t balancing(sz_transfer_t transfer, uint16_t flags) {
    transfer.flags |= flags;
    return transfer;
}

#define DEBIT SZ_TRANSFER_BALANCING_DEBIT
#define CREDIT SZ_TRANSFER_BALANCING_CREDIT

Test(balancing, balancing_debit_clamps_to_the_debit_accounts_available_credit) {
    transfer_create_one(transfer_plain(1, 9, 1, 100), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 1, 3, 150), DEBIT), SZ_CREATE_TRANSFER_OK);

    assert_u128_eq(transfer_lookup(10).amount, 100);
    balances_expect(1, 0, 100, 0, 100);
    balances_expect(3, 0, 0, 0, 100);

    /* The account query shows the same clamped amount. */
    sz_transfer_t rows[SCENARIO_ROWS_MAX];
    sz_account_filter_t filter = filter_make(1, SZ_FILTER_DEBITS);
    cr_assert_eq(sz_ledger_get_account_transfers(scenario_ledger, &filter, SCENARIO_ROWS_MAX,
                                                 rows),
                 1u, "one debit of account 1");
    assert_u128_eq(rows[0].id, 10);
    assert_u128_eq(rows[0].amount, 100);
}

Test(balancing, balancing_debit_keeps_an_amount_below_the_available_credit) {
    transfer_create_one(transfer_plain(1, 9, 1, 100), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 1, 3, 30), DEBIT), SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(10).amount, 30);
    /* Amount 0: whatever is left. */
    transfer_create_one(balancing(transfer_plain(11, 1, 3, 0), DEBIT), SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(11).amount, 70);
    balances_expect(1, 0, 100, 0, 100);
}

Test(balancing, balancing_debit_counts_pending_debits_as_used) {
    transfer_create_one(transfer_plain(1, 9, 1, 100), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_pending(2, 1, 3, 40, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 1, 3, 0), DEBIT), SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(10).amount, 60);
    balances_expect(1, 40, 60, 0, 100);
}

Test(balancing, balancing_credit_clamps_to_the_credit_accounts_available_debit) {
    transfer_create_one(transfer_plain(1, 2, 9, 80), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 3, 2, 200), CREDIT), SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(10).amount, 80);
    balances_expect(2, 0, 80, 0, 80);
    balances_expect(3, 0, 80, 0, 0);
}

Test(balancing, balancing_credit_counts_pending_credits_as_used) {
    transfer_create_one(transfer_plain(1, 2, 9, 80), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_pending(2, 3, 2, 30, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 3, 2, 0), CREDIT), SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(10).amount, 50);
    balances_expect(2, 0, 80, 30, 50);
}

Test(balancing, both_flags_clamp_to_the_credit_side_when_it_is_smaller) {
    transfer_create_one(transfer_plain(1, 9, 1, 100), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_plain(2, 2, 9, 80), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 1, 2, 0), DEBIT | CREDIT),
                        SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(10).amount, 80);
    balances_expect(1, 0, 80, 0, 100);
    balances_expect(2, 0, 80, 0, 80);
}

Test(balancing, both_flags_clamp_to_the_debit_side_when_it_is_smaller) {
    transfer_create_one(transfer_plain(1, 9, 1, 50), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_plain(2, 2, 9, 80), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 1, 2, 1000), DEBIT | CREDIT),
                        SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(10).amount, 50);
    balances_expect(1, 0, 50, 0, 50);
    balances_expect(2, 0, 80, 0, 50);
}

Test(balancing, both_flags_keep_an_amount_below_both_sides) {
    transfer_create_one(transfer_plain(1, 9, 1, 50), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_plain(2, 2, 9, 80), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 1, 2, 7), DEBIT | CREDIT),
                        SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(10).amount, 7);
}

Test(balancing, debit_clamp_to_zero_gives_exceeds_credits_and_stores_nothing) {
    transfer_create_one(balancing(transfer_plain(10, 3, 4, 100), DEBIT),
                        SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    cr_assert(!transfer_exists(10), "a refused balancing transfer must not be stored");
    balances_expect(3, 0, 0, 0, 0);
    balances_expect(4, 0, 0, 0, 0);

    /* Fully used: credits 100, debits 100 (half of it pending). */
    transfer_create_one(transfer_plain(1, 9, 3, 100), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_plain(2, 3, 4, 50), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_pending(3, 3, 4, 50, 0), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 3, 4, 0), DEBIT),
                        SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    balances_expect(3, 50, 50, 0, 100);
}

Test(balancing, debit_clamp_of_an_overdrawn_account_is_zero_not_a_wrap) {
    /* Account 5 has no limit: debits 50 above credits 20. */
    transfer_create_one(transfer_plain(1, 5, 4, 50), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_plain(2, 9, 5, 20), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 5, 4, 0), DEBIT),
                        SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    cr_assert(!transfer_exists(10), "a refused balancing transfer must not be stored");
    balances_expect(5, 0, 50, 0, 20);
}

Test(balancing, credit_clamp_to_zero_gives_exceeds_debits_and_stores_nothing) {
    transfer_create_one(balancing(transfer_plain(10, 3, 4, 100), CREDIT),
                        SZ_CREATE_TRANSFER_EXCEEDS_DEBITS);
    cr_assert(!transfer_exists(10), "a refused balancing transfer must not be stored");
    balances_expect(3, 0, 0, 0, 0);
    balances_expect(4, 0, 0, 0, 0);

    /* Overdrawn the other way: credits 50 above debits 20. */
    transfer_create_one(transfer_plain(1, 9, 5, 50), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(transfer_plain(2, 5, 9, 20), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(11, 3, 5, 0), CREDIT),
                        SZ_CREATE_TRANSFER_EXCEEDS_DEBITS);
    balances_expect(5, 0, 20, 0, 50);
}

Test(balancing, both_flags_with_only_the_credit_side_at_zero_give_exceeds_debits) {
    transfer_create_one(transfer_plain(1, 9, 1, 100), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 1, 4, 0), DEBIT | CREDIT),
                        SZ_CREATE_TRANSFER_EXCEEDS_DEBITS);
    cr_assert(!transfer_exists(10), "a refused balancing transfer must not be stored");
    balances_expect(1, 0, 0, 0, 100);
}

Test(balancing, amount_zero_asks_for_at_most_two_to_the_64_minus_one) {
    sz_u128 plenty = (sz_u128)1 << 70;
    transfer_create_one(transfer_plain(1, 9, 3, plenty), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 3, 4, 0), DEBIT), SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(10).amount, (sz_u128)UINT64_MAX);
    balances_expect(3, 0, UINT64_MAX, 0, plenty);

    transfer_create_one(transfer_plain(2, 4, 9, plenty), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(11, 5, 4, 0), CREDIT), SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(11).amount, (sz_u128)UINT64_MAX);
}

Test(balancing, explicit_amount_above_two_to_the_64_is_kept_when_covered) {
    sz_u128 plenty = (sz_u128)1 << 70;
    sz_u128 asked = ((sz_u128)1 << 65) + 3;
    transfer_create_one(transfer_plain(1, 9, 3, plenty), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 3, 4, asked), DEBIT), SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(10).amount, asked);
    balances_expect(3, 0, asked, 0, plenty);
}

Test(balancing, balancing_pending_transfer_reserves_the_clamped_amount) {
    transfer_create_one(transfer_plain(1, 9, 1, 100), SZ_CREATE_TRANSFER_OK);
    sz_transfer_t pending = balancing(transfer_pending(10, 1, 3, 150, 0), DEBIT);
    transfer_create_one(pending, SZ_CREATE_TRANSFER_OK);
    sz_transfer_t stored = transfer_lookup(10);
    assert_u128_eq(stored.amount, 100);
    cr_assert_eq(stored.flags, SZ_TRANSFER_PENDING | DEBIT, "flags %u", stored.flags);
    balances_expect(1, 100, 0, 0, 100);
    balances_expect(3, 0, 0, 100, 0);

    /* The reservation uses up the room for another balancing debit. */
    transfer_create_one(balancing(transfer_plain(11, 1, 3, 0), DEBIT),
                        SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    /* The pending amount is the clamped one: posting more is refused, amount 0 posts it. */
    transfer_create_one(transfer_post(12, 10, 150),
                        SZ_CREATE_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT);
    transfer_create_one(transfer_post(12, 10, 0), SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(12).amount, 100);
    balances_expect(1, 0, 100, 0, 100);
    balances_expect(3, 0, 0, 0, 100);
}

Test(balancing, balancing_credit_pending_transfer_reserves_the_clamped_amount) {
    transfer_create_one(transfer_plain(1, 2, 9, 80), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_pending(10, 3, 2, 0, 60), CREDIT),
                        SZ_CREATE_TRANSFER_OK);
    assert_u128_eq(transfer_lookup(10).amount, 80);
    balances_expect(2, 0, 80, 80, 0);
    transfer_create_one(balancing(transfer_plain(11, 3, 2, 1), CREDIT),
                        SZ_CREATE_TRANSFER_EXCEEDS_DEBITS);
    transfer_create_one(transfer_void(12, 10), SZ_CREATE_TRANSFER_OK);
    balances_expect(2, 0, 80, 0, 0);
}

Test(balancing, balancing_sees_an_earlier_event_of_the_same_batch) {
    sz_transfer_t events[] = {
        transfer_plain(1, 9, 3, 100),
        balancing(transfer_plain(10, 3, 4, 0), DEBIT),
        balancing(transfer_plain(11, 3, 4, 0), DEBIT),
    };
    uint32_t expected[] = {0, 0, SZ_CREATE_TRANSFER_EXCEEDS_CREDITS};
    transfers_create_expect(events, 3, expected);
    assert_u128_eq(transfer_lookup(10).amount, 100);
    balances_expect(3, 0, 100, 0, 100);
}

Test(balancing, retry_asking_less_than_the_booked_amount_gets_exists_with_different_amount) {
    /* SEMANTICS.md compares amount in the exists checks with no balancing exception, and even
     * TigerBeetle 0.15's exception (a retry's amount is an upper limit) only covers requests
     * of 0 or at least the booked amount: asking 50 when 100 was booked is a different
     * request. */
    transfer_create_one(transfer_plain(1, 9, 1, 100), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 1, 3, 150), DEBIT), SZ_CREATE_TRANSFER_OK);
    transfer_create_one(balancing(transfer_plain(10, 1, 3, 50), DEBIT),
                        SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT);
    assert_u128_eq(transfer_lookup(10).amount, 100);
    balances_expect(1, 0, 100, 0, 100);
}
