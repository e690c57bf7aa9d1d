/* test_linked.c: linked chains of create_transfers and create_accounts behave as
 * SEMANTICS.md "Linked chain" says. Each test builds a small ledger, runs batches with one
 * or more chains, and checks the whole per-event result list, then the state a client would
 * see: balances and lookups (a rolled-back member must leave no trace: no balance, no record,
 * no history row, no expiry, and its id free for reuse), plus that a chain open at the end of
 * the batch, several chains in one batch, and members that depend on earlier members of the
 * same chain each give exactly the results the rules predict. */
#include "scenario.h"

/* Account 1 keeps history; 4 may not be debited beyond its credits. */
static void linked_setup(void) {
    scenario_setup();
    sz_account_t accounts[] = {
        account_make(1, SZ_ACCOUNT_HISTORY),
        account_make(2, 0),
        account_make(3, 0),
        account_make(4, SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS),
    };
    accounts_create_ok(accounts, 4);
}

TestSuite(linked, .init = linked_setup, .fini = scenario_teardown);

enum {
    FAILED = SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED,
    CHAIN_OPEN = SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN,
};

Test(linked, failed_chain_rolls_back_every_applied_member) {
    sz_transfer_t events[] = {
        transfer_linked(transfer_plain(10, 1, 2, 100)),
        transfer_linked(transfer_plain(11, 2, 3, 40)),
        transfer_linked(transfer_pending(12, 3, 1, 7, 0)),
        transfer_plain(13, 1, 99, 5), /* account 99 does not exist */
    };
    uint32_t expected[] = {FAILED, FAILED, FAILED, SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND};
    transfers_create_expect(events, 4, expected);

    balances_expect(1, 0, 0, 0, 0);
    balances_expect(2, 0, 0, 0, 0);
    balances_expect(3, 0, 0, 0, 0);
    sz_u128 ids[] = {10, 11, 12, 13};
    sz_transfer_t found[4];
    cr_assert_eq(sz_ledger_lookup_transfers(scenario_ledger, ids, 4, found), 0u,
                 "rolled-back transfers must not be found");
    cr_assert_eq(history_row_count(1), 0u, "a rolled-back transfer must leave no history row");
    sz_ledger_stats_t stats;
    sz_ledger_stats(scenario_ledger, &stats);
    cr_assert_eq(stats.transfer_count, 0u, "transfer_count %lu after a rolled-back chain",
                 (unsigned long)stats.transfer_count);
    cr_assert_eq(stats.history_count, 0u, "history_count %lu after a rolled-back chain",
                 (unsigned long)stats.history_count);
}

Test(linked, rolled_back_transfer_ids_can_be_used_again) {
    sz_transfer_t chain[] = {
        transfer_linked(transfer_plain(10, 1, 2, 100)),
        transfer_linked(transfer_pending(11, 1, 2, 50, 60)),
        transfer_plain(12, 1, 2, 0), /* amount_must_not_be_zero */
    };
    uint32_t expected[] = {FAILED, FAILED, SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO};
    transfers_create_expect(chain, 3, expected);

    /* Same ids, different accounts, amounts and flags: a trace of the rolled-back records
     * would give exists_with_different_*. */
    sz_transfer_t again[] = {
        transfer_plain(10, 3, 2, 9),
        transfer_plain(11, 2, 3, 4),
        transfer_plain(12, 2, 1, 1),
    };
    uint64_t timestamp = transfers_create_ok(again, 3);

    sz_transfer_t stored = transfer_lookup(10);
    assert_u128_eq(stored.debit_account_id, 3);
    assert_u128_eq(stored.credit_account_id, 2);
    assert_u128_eq(stored.amount, 9);
    cr_assert_eq(stored.timestamp, timestamp, "stored timestamp is the new one");
    stored = transfer_lookup(11);
    cr_assert_eq(stored.flags, 0, "the reused id holds the new plain transfer");
    assert_u128_eq(stored.amount, 4);
    balances_expect(1, 0, 0, 0, 1);
    balances_expect(2, 0, 5, 0, 9);
    balances_expect(3, 0, 9, 0, 4);
}

Test(linked, rolled_back_accounts_are_not_found_and_their_ids_can_be_used_again) {
    sz_account_t chain[] = {
        account_linked(account_make(100, SZ_ACCOUNT_HISTORY)),
        account_linked(account_make(101, 0)),
        account_make(102, 0),
    };
    chain[2].code = 0;
    uint32_t expected[] = {SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED,
                           SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED,
                           SZ_CREATE_ACCOUNT_CODE_MUST_NOT_BE_ZERO};
    accounts_create_expect(chain, 3, expected);

    cr_assert(!account_exists(100), "rolled-back account 100 found");
    cr_assert(!account_exists(101), "rolled-back account 101 found");
    cr_assert(!account_exists(102), "failed account 102 found");
    sz_ledger_stats_t stats;
    sz_ledger_stats(scenario_ledger, &stats);
    cr_assert_eq(stats.account_count, 4u, "account_count %lu", (unsigned long)stats.account_count);
    transfer_create_one(transfer_plain(10, 1, 100, 5),
                        SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND);

    /* Different flags, ledger and user data than the rolled-back one: created, not
     * exists_with_different_*. */
    sz_account_t again[] = {account_make(100, 0), account_make(101, 0)};
    again[0].ledger = 2;
    again[0].user_data_64 = 77;
    accounts_create_ok(again, 2);
    sz_account_t stored = account_lookup(100);
    cr_assert_eq(stored.ledger, 2u, "ledger %u", stored.ledger);
    cr_assert_eq(stored.flags, 0, "flags %u", stored.flags);
    cr_assert_eq(stored.user_data_64, 77u, "user_data_64");
}

Test(linked, account_chain_applies_whole_when_every_member_is_ok) {
    sz_account_t chain[] = {
        account_linked(account_make(200, 0)),
        account_linked(account_make(201, 0)),
        account_make(202, 0),
        account_make(203, 0),
    };
    uint64_t timestamp = accounts_create_ok(chain, 4);
    for (uint32_t index = 0; index < 4; index++) {
        sz_account_t stored = account_lookup(200 + index);
        cr_assert_eq(stored.timestamp, timestamp + index, "account %u timestamp", 200 + index);
    }
}

Test(linked, account_chain_member_sees_an_earlier_member_with_the_same_id) {
    /* Both carry `linked` (flags are compared first, linked included), so the second differs
     * from the first in user_data_64 only. */
    sz_account_t chain[] = {
        account_linked(account_make(100, 0)),
        account_linked(account_make(100, 0)),
        account_make(101, 0),
    };
    chain[1].user_data_64 = 5;
    uint32_t expected[] = {SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED,
                           SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_64,
                           SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED};
    accounts_create_expect(chain, 3, expected);
    cr_assert(!account_exists(100), "account 100 must be rolled back");
    cr_assert(!account_exists(101), "account 101 belongs to the failed chain");
}

Test(linked, account_chain_open_at_batch_end_fails) {
    sz_account_t events[] = {
        account_make(100, 0),
        account_linked(account_make(101, 0)),
        account_linked(account_make(102, 0)),
    };
    uint32_t expected[] = {SZ_CREATE_ACCOUNT_OK, SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED,
                           SZ_CREATE_ACCOUNT_LINKED_EVENT_CHAIN_OPEN};
    accounts_create_expect(events, 3, expected);
    cr_assert(account_exists(100), "account 100 is outside the open chain and applies");
    cr_assert(!account_exists(101), "account 101 must be rolled back");
    cr_assert(!account_exists(102), "account 102 must not be created");
}

Test(linked, chain_open_at_batch_end_fails_only_the_open_chain) {
    sz_transfer_t events[] = {
        transfer_plain(10, 1, 2, 100),
        transfer_linked(transfer_plain(11, 2, 3, 30)),
        transfer_linked(transfer_plain(12, 3, 1, 20)),
    };
    uint32_t expected[] = {SZ_CREATE_TRANSFER_OK, FAILED, CHAIN_OPEN};
    transfers_create_expect(events, 3, expected);
    balances_expect(1, 0, 100, 0, 0);
    balances_expect(2, 0, 0, 0, 100);
    balances_expect(3, 0, 0, 0, 0);
    cr_assert(transfer_exists(10), "transfer 10 applies");
    cr_assert(!transfer_exists(11), "transfer 11 must be rolled back");
    cr_assert(!transfer_exists(12), "transfer 12 must not be created");
}

Test(linked, single_linked_event_at_batch_end_gets_chain_open) {
    transfer_create_one(transfer_linked(transfer_plain(10, 1, 2, 100)), CHAIN_OPEN);
    balances_expect(1, 0, 0, 0, 0);
    cr_assert(!transfer_exists(10), "transfer 10 must not be created");

    sz_account_t account = account_linked(account_make(100, 0));
    uint32_t expected = SZ_CREATE_ACCOUNT_LINKED_EVENT_CHAIN_OPEN;
    accounts_create_expect(&account, 1, &expected);
    cr_assert(!account_exists(100), "account 100 must not be created");
}

Test(linked, chain_open_wins_over_linked_event_failed_on_the_last_event) {
    sz_transfer_t events[] = {
        transfer_linked(transfer_plain(10, 1, 2, 100)),
        transfer_linked(transfer_plain(11, 98, 2, 100)), /* debit account missing */
        transfer_linked(transfer_plain(12, 1, 2, 100)),
    };
    uint32_t expected[] = {FAILED, SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND, CHAIN_OPEN};
    transfers_create_expect(events, 3, expected);
    balances_expect(1, 0, 0, 0, 0);
    cr_assert(!transfer_exists(10), "transfer 10 must be rolled back");
}

Test(linked, members_after_the_failure_get_linked_event_failed_unchecked) {
    sz_transfer_t events[] = {
        transfer_linked(transfer_plain(10, 1, 2, 100)),
        transfer_linked(transfer_plain(11, 1, 2, 0)), /* amount_must_not_be_zero */
        transfer_linked(transfer_plain(0, 1, 2, 5)),  /* id 0: not checked any more */
        transfer_linked(transfer_plain(13, 1, 2, 5)),
        transfer_plain(14, 1, 2, 5), /* valid, but in the failed chain */
    };
    events[3].timestamp = 12345; /* timestamp_must_be_zero comes after linked_event_failed */
    uint32_t expected[] = {FAILED, SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO, FAILED, FAILED,
                           FAILED};
    transfers_create_expect(events, 5, expected);
    balances_expect(1, 0, 0, 0, 0);
    cr_assert(!transfer_exists(14), "transfer 14 belongs to the failed chain");
}

Test(linked, several_chains_in_one_batch_fail_or_apply_independently) {
    sz_transfer_t events[] = {
        /* chain A: applies */
        transfer_linked(transfer_plain(1, 1, 2, 1)),
        transfer_plain(2, 2, 3, 2),
        /* chain B: fails on its second member */
        transfer_linked(transfer_plain(3, 1, 3, 4)),
        transfer_linked(transfer_plain(4, 1, 1, 8)), /* accounts_must_be_different */
        transfer_plain(5, 3, 1, 16),
        /* chain C: applies */
        transfer_linked(transfer_plain(6, 3, 1, 32)),
        transfer_plain(7, 1, 2, 64),
        /* not linked: applies */
        transfer_plain(8, 2, 1, 128),
    };
    uint32_t expected[] = {0, 0, FAILED, SZ_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT, FAILED,
                           0, 0, 0};
    uint64_t timestamp = transfers_create_expect(events, 8, expected);

    /* Only 1, 2, 6, 7, 8 moved money. */
    balances_expect(1, 0, 1 + 64, 0, 32 + 128);
    balances_expect(2, 0, 2 + 128, 0, 1 + 64);
    balances_expect(3, 0, 32, 0, 2);
    sz_u128 applied[] = {1, 2, 6, 7, 8};
    uint32_t applied_index[] = {0, 1, 5, 6, 7};
    for (uint32_t index = 0; index < 5; index++) {
        sz_transfer_t stored = transfer_lookup(applied[index]);
        /* Failed events consume their timestamps: event i keeps T + i. */
        cr_assert_eq(stored.timestamp, timestamp + applied_index[index],
                     "transfer %s timestamp", u128_text(applied[index]));
    }
    cr_assert(!transfer_exists(3), "chain B member 3 must be rolled back");
    cr_assert(!transfer_exists(4), "chain B member 4 failed");
    cr_assert(!transfer_exists(5), "chain B member 5 must not be created");
}

Test(linked, chain_member_sees_the_effect_of_an_earlier_member_on_a_limit) {
    /* Account 4 has no credits: alone, the debit is refused. */
    transfer_create_one(transfer_plain(9, 4, 3, 100), SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);

    sz_transfer_t chain[] = {
        transfer_linked(transfer_plain(10, 2, 4, 100)),
        transfer_plain(11, 4, 3, 100),
    };
    transfers_create_ok(chain, 2);
    balances_expect(4, 0, 100, 0, 100);
    balances_expect(3, 0, 0, 0, 100);
}

Test(linked, later_member_breaking_a_limit_rolls_back_the_earlier_members) {
    transfer_create_one(transfer_plain(1, 2, 4, 100), SZ_CREATE_TRANSFER_OK);

    /* Each debit alone fits in 100, both do not: the second sees the first. */
    sz_transfer_t chain[] = {
        transfer_linked(transfer_plain(10, 4, 3, 60)),
        transfer_plain(11, 4, 3, 60),
    };
    uint32_t chain_expected[] = {FAILED, SZ_CREATE_TRANSFER_EXCEEDS_CREDITS};
    transfers_create_expect(chain, 2, chain_expected);
    balances_expect(4, 0, 0, 0, 100);
    balances_expect(3, 0, 0, 0, 0);

    /* The same two unlinked: the first applies, the second still sees it. */
    sz_transfer_t unlinked[] = {
        transfer_plain(10, 4, 3, 60),
        transfer_plain(11, 4, 3, 60),
    };
    uint32_t unlinked_expected[] = {SZ_CREATE_TRANSFER_OK, SZ_CREATE_TRANSFER_EXCEEDS_CREDITS};
    transfers_create_expect(unlinked, 2, unlinked_expected);
    balances_expect(4, 0, 60, 0, 100);
    balances_expect(3, 0, 0, 0, 60);
}

Test(linked, chain_member_with_the_id_of_an_earlier_member_sees_it) {
    /* Both carry `linked` (flags are compared first), so they differ in amount only. */
    sz_transfer_t chain[] = {
        transfer_linked(transfer_plain(10, 1, 2, 100)),
        transfer_linked(transfer_plain(10, 1, 2, 50)),
        transfer_plain(11, 1, 2, 1),
    };
    uint32_t expected[] = {FAILED, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT, FAILED};
    transfers_create_expect(chain, 3, expected);
    cr_assert(!transfer_exists(10), "transfer 10 must be rolled back");
    balances_expect(1, 0, 0, 0, 0);
    balances_expect(2, 0, 0, 0, 0);
}

Test(linked, chain_can_create_and_post_a_pending_transfer) {
    sz_transfer_t chain[] = {
        transfer_linked(transfer_pending(30, 1, 2, 100, 0)),
        transfer_post(31, 30, 0),
    };
    transfers_create_ok(chain, 2);
    balances_expect(1, 0, 100, 0, 0);
    balances_expect(2, 0, 0, 0, 100);
}

Test(linked, rolled_back_post_or_void_leaves_the_pending_transfer_pending) {
    transfer_create_one(transfer_pending(30, 1, 2, 100, 0), SZ_CREATE_TRANSFER_OK);

    sz_transfer_t post_chain[] = {
        transfer_linked(transfer_post(31, 30, 0)),
        transfer_plain(32, 1, 99, 1),
    };
    uint32_t expected[] = {FAILED, SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND};
    transfers_create_expect(post_chain, 2, expected);
    balances_expect(1, 100, 0, 0, 0);
    balances_expect(2, 0, 0, 100, 0);
    cr_assert(!transfer_exists(31), "rolled-back post must not be found");

    sz_transfer_t void_chain[] = {
        transfer_linked(transfer_void(33, 30)),
        transfer_plain(34, 1, 99, 1),
    };
    transfers_create_expect(void_chain, 2, expected);
    balances_expect(1, 100, 0, 0, 0);
    cr_assert(!transfer_exists(33), "rolled-back void must not be found");

    /* Neither already_posted nor already_voided: the pending transfer is untouched. */
    transfer_create_one(transfer_post(31, 30, 0), SZ_CREATE_TRANSFER_OK);
    balances_expect(1, 0, 100, 0, 0);
    balances_expect(2, 0, 0, 0, 100);
}

Test(linked, rolled_back_pending_transfer_never_expires) {
    sz_transfer_t chain[] = {
        transfer_linked(transfer_pending(40, 1, 2, 100, 1)),
        transfer_plain(41, 1, 1, 1), /* accounts_must_be_different */
    };
    uint32_t expected[] = {FAILED, SZ_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT};
    uint64_t timestamp = transfers_create_expect(chain, 2, expected);
    uint64_t deadline_ns = timestamp + 1 * SCENARIO_NS_PER_S;
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), UINT64_MAX,
                 "a rolled-back pending transfer is not waiting for expiry");

    /* The same id, pending again but without a timeout, before the old deadline. */
    transfer_create_one(transfer_pending(40, 1, 2, 70, 0), SZ_CREATE_TRANSFER_OK);
    cr_assert_eq(expire_at(deadline_ns + 1), 0u, "nothing may expire");
    balances_expect(1, 70, 0, 0, 0);
    balances_expect(2, 0, 0, 70, 0);

    /* Still pending, so it can be posted after the old deadline. */
    transfer_create_one(transfer_post(42, 40, 0), SZ_CREATE_TRANSFER_OK);
    balances_expect(1, 0, 70, 0, 0);
    balances_expect(2, 0, 0, 0, 70);
}

Test(linked, rolled_back_pending_transfer_never_expires_even_behind_a_live_one) {
    /* A live pending transfer with an earlier deadline keeps the rolled-back one's expiry
     * entry, if any, buried in the queue until after its id has been reused. */
    uint64_t live_timestamp =
        transfer_create_one(transfer_pending(50, 1, 2, 1, 1), SZ_CREATE_TRANSFER_OK);
    sz_transfer_t chain[] = {
        transfer_linked(transfer_pending(40, 1, 2, 100, 2)),
        transfer_plain(41, 1, 1, 1), /* accounts_must_be_different */
    };
    uint32_t expected[] = {FAILED, SZ_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT};
    uint64_t timestamp = transfers_create_expect(chain, 2, expected);
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), live_timestamp + SCENARIO_NS_PER_S,
                 "transfer 50 is the only one waiting");

    transfer_create_one(transfer_pending(40, 1, 2, 70, 0), SZ_CREATE_TRANSFER_OK);
    cr_assert_eq(expire_at(timestamp + 2 * SCENARIO_NS_PER_S), 1u, "only transfer 50 expires");
    assert_u128_eq(scenario_expired_ids[0], 50);
    balances_expect(1, 70, 0, 0, 0);
    cr_assert_eq(sz_ledger_expiry_next(scenario_ledger), UINT64_MAX, "nothing waits any more");

    transfer_create_one(transfer_post(42, 40, 0), SZ_CREATE_TRANSFER_OK);
    balances_expect(1, 0, 70, 0, 0);
}
