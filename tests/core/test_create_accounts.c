/* test_create_accounts.c: proves that create_accounts produces every result code 0..21 of
 * SEMANTICS.md, each from at least one test named after what it proves, and that the order of
 * checks (not the numbering) decides which code wins when two checks compete.
 * How: each test runs on a fresh in-memory ledger (small capacities, fixture below), submits a
 * batch at the next timestamp, compares the whole list of {index, result} pairs it gets back,
 * and reads the accounts back with sz_ledger_lookup_accounts: an ok event stores exactly the
 * request (zero balances, the event's timestamp), a failed one stores nothing. Every test
 * ends with sz_ledger_verify(), so each also checks the ledger's invariants. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "core/ledger.h"

/* Small capacities: the tests need a few dozen records at most. */
#define TEST_CAPACITY 1024u

static sz_ledger_t *ledger;

static void ledger_setup(void) {
    const sz_ledger_config_t config = {
        .accounts_max = TEST_CAPACITY,
        .transfers_max = TEST_CAPACITY,
        .pending_max = TEST_CAPACITY,
        .history_max = TEST_CAPACITY,
        .hash_seed = 0x5eed,
    };
    int status = sz_ledger_init(&config, &ledger);
    cr_assert(status == 0, "sz_ledger_init returned %d", status);
    cr_assert(ledger != NULL);
}

/* Criterion ignores assertions in .fini, so every test ends with this call instead. */
static void ledger_verify_assert(void) {
    char message[256] = "";
    int status = sz_ledger_verify(ledger, message, sizeof(message));
    cr_assert(status == 0, "sz_ledger_verify: %s", message);
}

static void ledger_teardown(void) {
    if (ledger == NULL) return;
    sz_ledger_deinit(ledger);
    ledger = NULL;
}

TestSuite(create_accounts, .init = ledger_setup, .fini = ledger_teardown);

/* A valid account on ledger 1 with code 10; tests change one field at a time. */
static sz_account_t account_make(sz_u128 id) {
    sz_account_t account;
    memset(&account, 0, sizeof(account));
    account.id = id;
    account.ledger = 1;
    account.code = 10;
    return account;
}

/* Submits a batch at the next timestamp (above the last one), asserts it applied, and
 * returns how many results (non-ok events) it got. */
static uint32_t accounts_create(const sz_account_t *events, uint32_t event_count,
                                sz_create_result_t *results_out, uint64_t *timestamp_out) {
    uint64_t timestamp = sz_ledger_timestamp_next(ledger, 0);
    uint32_t result_count = UINT32_MAX;
    sz_batch_status_t status = sz_ledger_create_accounts(ledger, events, event_count, timestamp,
                                                         results_out, &result_count);
    cr_assert(status == SZ_BATCH_APPLIED, "batch status %s", sz_batch_status_name(status));
    cr_assert(result_count <= event_count, "result_count %u for %u events", result_count,
              event_count);
    if (timestamp_out != NULL) *timestamp_out = timestamp;
    return result_count;
}

/* The result of a one-event batch (ok when the batch got no results). */
static uint32_t account_create_one(const sz_account_t *account) {
    sz_create_result_t results[1];
    uint32_t result_count = accounts_create(account, 1, results, NULL);
    if (result_count == 0) return SZ_CREATE_ACCOUNT_OK;
    cr_assert(result_count == 1);
    cr_assert(results[0].index == 0, "index %u", results[0].index);
    cr_assert(results[0].result != SZ_CREATE_ACCOUNT_OK, "ok must not be reported");
    return results[0].result;
}

static void result_assert(uint32_t actual, uint32_t expected) {
    cr_assert(actual == expected, "result %s (%u), expected %s (%u)",
              sz_create_account_result_name(actual), actual,
              sz_create_account_result_name(expected), expected);
}

/* Compares the whole result list: same count, same indexes, same codes, in order. */
static void results_assert(const sz_create_result_t *results, uint32_t result_count,
                           const sz_create_result_t *expected, uint32_t expected_count) {
    for (uint32_t index = 0; index < result_count && index < expected_count; index++) {
        cr_assert(results[index].index == expected[index].index,
                  "result %u: index %u, expected %u", index, results[index].index,
                  expected[index].index);
        cr_assert(results[index].result == expected[index].result,
                  "result %u (event %u): %s, expected %s", index, results[index].index,
                  sz_create_account_result_name(results[index].result),
                  sz_create_account_result_name(expected[index].result));
    }
    cr_assert(result_count == expected_count, "%u results, expected %u", result_count,
              expected_count);
}

#define RESULTS_ASSERT(results, result_count, ...)                                          \
    results_assert((results), (result_count), (const sz_create_result_t[]){__VA_ARGS__},    \
                   (uint32_t)(sizeof((const sz_create_result_t[]){__VA_ARGS__}) /           \
                              sizeof(sz_create_result_t)))

static bool account_exists(sz_u128 id) {
    sz_account_t found;
    return sz_ledger_lookup_accounts(ledger, &id, 1, &found) == 1;
}

static sz_account_t account_lookup(sz_u128 id) {
    sz_account_t found;
    memset(&found, 0, sizeof(found));
    uint32_t count = sz_ledger_lookup_accounts(ledger, &id, 1, &found);
    cr_assert(count == 1, "account not found");
    cr_assert(found.id == id);
    return found;
}

static void u128_assert_eq(sz_u128 actual, sz_u128 expected, const char *what) {
    char actual_text[SZ_U128_DECIMAL_SIZE];
    char expected_text[SZ_U128_DECIMAL_SIZE];
    cr_assert(actual == expected, "%s is %s, expected %s", what,
              sz_u128_format(actual, actual_text), sz_u128_format(expected, expected_text));
}

static void balances_assert(sz_u128 id, sz_u128 debits_pending, sz_u128 debits_posted,
                            sz_u128 credits_pending, sz_u128 credits_posted) {
    sz_account_t account = account_lookup(id);
    u128_assert_eq(account.debits_pending, debits_pending, "debits_pending");
    u128_assert_eq(account.debits_posted, debits_posted, "debits_posted");
    u128_assert_eq(account.credits_pending, credits_pending, "credits_pending");
    u128_assert_eq(account.credits_posted, credits_posted, "credits_posted");
}

/* Creates an account, asserting ok. */
static void account_create_ok(const sz_account_t *account) {
    result_assert(account_create_one(account), SZ_CREATE_ACCOUNT_OK);
}

/* ---- ok ---------------------------------------------------------------------------- */

Test(create_accounts, stores_a_valid_account_with_zero_balances_and_the_batch_timestamp) {
    sz_account_t account = account_make(1);
    account.user_data_128 = (sz_u128)0xabcdef << 64 | 7;
    account.user_data_64 = 64;
    account.user_data_32 = 32;
    account.flags = SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS | SZ_ACCOUNT_HISTORY;
    sz_create_result_t results[1];
    uint64_t timestamp = 0;
    uint32_t result_count = accounts_create(&account, 1, results, &timestamp);
    cr_assert(result_count == 0, "a fully successful batch has an empty result list");

    sz_account_t found = account_lookup(1);
    u128_assert_eq(found.user_data_128, account.user_data_128, "user_data_128");
    cr_assert(found.user_data_64 == 64);
    cr_assert(found.user_data_32 == 32);
    cr_assert(found.reserved == 0);
    cr_assert(found.ledger == 1);
    cr_assert(found.code == 10);
    cr_assert(found.flags == account.flags);
    cr_assert(found.timestamp == timestamp, "timestamp %lu, expected %lu",
              (unsigned long)found.timestamp, (unsigned long)timestamp);
    balances_assert(1, 0, 0, 0, 0);
    cr_assert(account.timestamp == 0, "the input event is never modified");
    ledger_verify_assert();
}

Test(create_accounts, gives_event_i_of_a_batch_the_timestamp_t_plus_i) {
    sz_account_t accounts[3] = {account_make(1), account_make(2), account_make(3)};
    sz_create_result_t results[3];
    uint64_t timestamp = 0;
    cr_assert(accounts_create(accounts, 3, results, &timestamp) == 0);
    for (uint32_t index = 0; index < 3; index++) {
        cr_assert(account_lookup(index + 1).timestamp == timestamp + index);
    }
    ledger_verify_assert();
}

Test(create_accounts, failed_events_still_consume_their_timestamp) {
    sz_account_t accounts[3] = {account_make(1), account_make(2), account_make(3)};
    accounts[1].ledger = 0;
    sz_create_result_t results[3];
    uint64_t timestamp = 0;
    uint32_t result_count = accounts_create(accounts, 3, results, &timestamp);
    RESULTS_ASSERT(results, result_count, {1, SZ_CREATE_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO});
    cr_assert(account_lookup(1).timestamp == timestamp);
    cr_assert(!account_exists(2));
    cr_assert(account_lookup(3).timestamp == timestamp + 2);
    ledger_verify_assert();
}

Test(create_accounts, accepts_ids_one_below_int_max_and_one) {
    sz_account_t accounts[2] = {account_make(1), account_make(SZ_U128_MAX - 1)};
    sz_create_result_t results[2];
    cr_assert(accounts_create(accounts, 2, results, NULL) == 0);
    cr_assert(account_exists(1));
    cr_assert(account_exists(SZ_U128_MAX - 1));
    ledger_verify_assert();
}

Test(create_accounts, accepts_each_single_known_flag) {
    const uint16_t flags[] = {SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS,
                              SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS, SZ_ACCOUNT_HISTORY};
    for (uint32_t index = 0; index < 3; index++) {
        sz_account_t account = account_make(index + 1);
        account.flags = flags[index];
        account_create_ok(&account);
        cr_assert(account_lookup(index + 1).flags == flags[index]);
    }
    ledger_verify_assert();
}

/* ---- linked chains (1, 2) ------------------------------------------------------------ */

Test(create_accounts, linked_chain_succeeds_as_a_whole) {
    sz_account_t accounts[3] = {account_make(1), account_make(2), account_make(3)};
    accounts[0].flags = SZ_ACCOUNT_LINKED;
    accounts[1].flags = SZ_ACCOUNT_LINKED;
    sz_create_result_t results[3];
    cr_assert(accounts_create(accounts, 3, results, NULL) == 0);
    for (uint32_t index = 0; index < 3; index++) cr_assert(account_exists(index + 1));
    cr_assert(account_lookup(1).flags == SZ_ACCOUNT_LINKED, "linked is stored as given");
    ledger_verify_assert();
}

Test(create_accounts, linked_event_failed_for_an_applied_member_of_a_chain_that_fails) {
    sz_account_t accounts[2] = {account_make(1), account_make(2)};
    accounts[0].flags = SZ_ACCOUNT_LINKED;
    accounts[1].code = 0;
    sz_create_result_t results[2];
    uint32_t result_count = accounts_create(accounts, 2, results, NULL);
    RESULTS_ASSERT(results, result_count, {0, SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED},
                   {1, SZ_CREATE_ACCOUNT_CODE_MUST_NOT_BE_ZERO});
    cr_assert(!account_exists(1), "the applied member is rolled back");
    cr_assert(!account_exists(2));
    ledger_verify_assert();
}

Test(create_accounts, members_after_the_failure_get_linked_event_failed_unchecked) {
    sz_account_t accounts[5] = {account_make(1), account_make(2), account_make(0),
                                account_make(4), account_make(5)};
    accounts[0].flags = SZ_ACCOUNT_LINKED;
    accounts[1].flags = SZ_ACCOUNT_LINKED;
    accounts[1].reserved = 1; /* fails: reserved_field */
    accounts[2].flags = SZ_ACCOUNT_LINKED; /* id 0 but unchecked */
    accounts[3].timestamp = 99; /* last member, timestamp wrong but unchecked */
    /* accounts[4] is a chain of its own and applies. */
    sz_create_result_t results[5];
    uint32_t result_count = accounts_create(accounts, 5, results, NULL);
    RESULTS_ASSERT(results, result_count, {0, SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED},
                   {1, SZ_CREATE_ACCOUNT_RESERVED_FIELD},
                   {2, SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED},
                   {3, SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED});
    cr_assert(!account_exists(1));
    cr_assert(!account_exists(2));
    cr_assert(!account_exists(4));
    cr_assert(account_exists(5), "the next chain is independent of the failed one");
    ledger_verify_assert();
}

Test(create_accounts, a_rolled_back_id_can_be_created_again) {
    sz_account_t accounts[2] = {account_make(1), account_make(2)};
    accounts[0].flags = SZ_ACCOUNT_LINKED;
    accounts[1].ledger = 0;
    sz_create_result_t results[2];
    cr_assert(accounts_create(accounts, 2, results, NULL) == 2);
    sz_account_t retry = account_make(1);
    account_create_ok(&retry);
    cr_assert(account_exists(1));
    ledger_verify_assert();
}

Test(create_accounts, linked_on_the_last_event_gives_linked_event_chain_open) {
    sz_account_t account = account_make(1);
    account.flags = SZ_ACCOUNT_LINKED;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_LINKED_EVENT_CHAIN_OPEN);
    cr_assert(!account_exists(1));
    ledger_verify_assert();
}

Test(create_accounts, an_open_chain_fails_its_earlier_members) {
    sz_account_t accounts[3] = {account_make(1), account_make(2), account_make(3)};
    accounts[1].flags = SZ_ACCOUNT_LINKED;
    accounts[2].flags = SZ_ACCOUNT_LINKED;
    sz_create_result_t results[3];
    uint32_t result_count = accounts_create(accounts, 3, results, NULL);
    RESULTS_ASSERT(results, result_count, {1, SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED},
                   {2, SZ_CREATE_ACCOUNT_LINKED_EVENT_CHAIN_OPEN});
    cr_assert(account_exists(1), "account 1 is not part of the open chain");
    cr_assert(!account_exists(2));
    cr_assert(!account_exists(3));
    ledger_verify_assert();
}

Test(create_accounts, linked_event_chain_open_wins_inside_a_chain_that_already_failed) {
    sz_account_t accounts[3] = {account_make(1), account_make(2), account_make(3)};
    accounts[0].flags = SZ_ACCOUNT_LINKED;
    accounts[0].ledger = 0;
    accounts[1].flags = SZ_ACCOUNT_LINKED;
    accounts[2].flags = SZ_ACCOUNT_LINKED;
    sz_create_result_t results[3];
    uint32_t result_count = accounts_create(accounts, 3, results, NULL);
    RESULTS_ASSERT(results, result_count, {0, SZ_CREATE_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO},
                   {1, SZ_CREATE_ACCOUNT_LINKED_EVENT_FAILED},
                   {2, SZ_CREATE_ACCOUNT_LINKED_EVENT_CHAIN_OPEN});
    for (uint32_t index = 0; index < 3; index++) cr_assert(!account_exists(index + 1));
    ledger_verify_assert();
}

Test(create_accounts, linked_event_chain_open_wins_over_the_events_own_checks) {
    sz_account_t account = account_make(0);
    account.flags = SZ_ACCOUNT_LINKED | (1u << 15);
    account.timestamp = 1;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_LINKED_EVENT_CHAIN_OPEN);
    ledger_verify_assert();
}

/* ---- timestamp, reserved field and flag (3, 4, 5) ------------------------------------- */

Test(create_accounts, rejected_when_timestamp_is_not_zero) {
    sz_account_t account = account_make(1);
    account.timestamp = 1;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_TIMESTAMP_MUST_BE_ZERO);
    cr_assert(!account_exists(1));
    ledger_verify_assert();
}

Test(create_accounts, timestamp_must_be_zero_wins_over_reserved_field_and_reserved_flag) {
    sz_account_t account = account_make(0);
    account.timestamp = UINT64_MAX;
    account.reserved = 1;
    account.flags = 1u << 4;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_TIMESTAMP_MUST_BE_ZERO);
    ledger_verify_assert();
}

Test(create_accounts, rejected_when_the_reserved_field_is_not_zero) {
    sz_account_t account = account_make(1);
    account.reserved = 0x80000000u;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_RESERVED_FIELD);
    cr_assert(!account_exists(1));
    ledger_verify_assert();
}

Test(create_accounts, reserved_field_wins_over_reserved_flag) {
    sz_account_t account = account_make(1);
    account.reserved = 1;
    account.flags = 1u << 4;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_RESERVED_FIELD);
    ledger_verify_assert();
}

Test(create_accounts, rejected_when_any_unknown_flag_bit_is_set) {
    for (uint32_t bit = 4; bit < 16; bit++) {
        sz_account_t account = account_make(bit);
        account.flags = (uint16_t)(1u << bit);
        result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_RESERVED_FLAG);
        cr_assert(!account_exists(bit), "bit %u", bit);
    }
    ledger_verify_assert();
}

Test(create_accounts, reserved_flag_wins_over_id_zero) {
    sz_account_t account = account_make(0);
    account.flags = SZ_ACCOUNT_HISTORY | (1u << 9);
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_RESERVED_FLAG);
    ledger_verify_assert();
}

/* ---- id (6, 7) ------------------------------------------------------------------------- */

Test(create_accounts, rejected_when_id_is_zero) {
    sz_account_t account = account_make(0);
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_ID_MUST_NOT_BE_ZERO);
    ledger_verify_assert();
}

Test(create_accounts, id_zero_wins_over_mutually_exclusive_flags) {
    sz_account_t account = account_make(0);
    account.flags =
        SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS | SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_ID_MUST_NOT_BE_ZERO);
    ledger_verify_assert();
}

Test(create_accounts, rejected_when_id_is_int_max) {
    sz_account_t account = account_make(SZ_U128_MAX);
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_ID_MUST_NOT_BE_INT_MAX);
    cr_assert(!account_exists(SZ_U128_MAX));
    ledger_verify_assert();
}

Test(create_accounts, id_int_max_wins_over_mutually_exclusive_flags) {
    sz_account_t account = account_make(SZ_U128_MAX);
    account.flags =
        SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS | SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_ID_MUST_NOT_BE_INT_MAX);
    ledger_verify_assert();
}

/* ---- flags, balances, ledger, code (8..14) ------------------------------------------- */

Test(create_accounts, rejected_when_both_balance_limit_flags_are_set) {
    sz_account_t account = account_make(1);
    account.flags = SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS |
                    SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS | SZ_ACCOUNT_HISTORY;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_FLAGS_ARE_MUTUALLY_EXCLUSIVE);
    cr_assert(!account_exists(1));
    ledger_verify_assert();
}

Test(create_accounts, flags_are_mutually_exclusive_wins_over_nonzero_balances) {
    sz_account_t account = account_make(1);
    account.flags =
        SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS | SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS;
    account.debits_pending = 1;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_FLAGS_ARE_MUTUALLY_EXCLUSIVE);
    ledger_verify_assert();
}

Test(create_accounts, rejected_when_debits_pending_is_not_zero) {
    sz_account_t account = account_make(1);
    account.debits_pending = 1;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_DEBITS_PENDING_MUST_BE_ZERO);
    cr_assert(!account_exists(1));
    ledger_verify_assert();
}

Test(create_accounts, debits_pending_wins_over_the_other_balances) {
    sz_account_t account = account_make(1);
    account.debits_pending = SZ_U128_MAX;
    account.debits_posted = 1;
    account.credits_pending = 1;
    account.credits_posted = 1;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_DEBITS_PENDING_MUST_BE_ZERO);
    ledger_verify_assert();
}

Test(create_accounts, rejected_when_debits_posted_is_not_zero) {
    sz_account_t account = account_make(1);
    account.debits_posted = (sz_u128)1 << 127;
    account.credits_pending = 1;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_DEBITS_POSTED_MUST_BE_ZERO);
    ledger_verify_assert();
}

Test(create_accounts, rejected_when_credits_pending_is_not_zero) {
    sz_account_t account = account_make(1);
    account.credits_pending = 1;
    account.credits_posted = 1;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_CREDITS_PENDING_MUST_BE_ZERO);
    ledger_verify_assert();
}

Test(create_accounts, rejected_when_credits_posted_is_not_zero) {
    sz_account_t account = account_make(1);
    account.credits_posted = 1;
    account.ledger = 0;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_CREDITS_POSTED_MUST_BE_ZERO);
    cr_assert(!account_exists(1));
    ledger_verify_assert();
}

Test(create_accounts, rejected_when_ledger_is_zero) {
    sz_account_t account = account_make(1);
    account.ledger = 0;
    account.code = 0;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO);
    cr_assert(!account_exists(1));
    ledger_verify_assert();
}

Test(create_accounts, rejected_when_code_is_zero) {
    sz_account_t account = account_make(1);
    account.code = 0;
    result_assert(account_create_one(&account), SZ_CREATE_ACCOUNT_CODE_MUST_NOT_BE_ZERO);
    cr_assert(!account_exists(1));
    ledger_verify_assert();
}

/* ---- exists (15..21) ----------------------------------------------------------------- */

/* Creates the account every exists test retries. */
static sz_account_t account_existing(void) {
    sz_account_t account = account_make(7);
    account.user_data_128 = 128;
    account.user_data_64 = 64;
    account.user_data_32 = 32;
    account.flags = SZ_ACCOUNT_HISTORY;
    account_create_ok(&account);
    return account;
}

/* Asserts that a retry got the result and left the stored account as it was. */
static void account_retry_assert(const sz_account_t *retry, uint32_t expected) {
    sz_account_t before = account_lookup(retry->id);
    result_assert(account_create_one(retry), expected);
    sz_account_t after = account_lookup(retry->id);
    cr_assert(memcmp(&before, &after, sizeof(before)) == 0, "the stored account changed");
}

Test(create_accounts, exists_when_the_same_account_is_created_again) {
    sz_account_t account = account_existing();
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_EXISTS);
    ledger_verify_assert();
}

Test(create_accounts, exists_for_a_duplicate_later_in_the_same_batch) {
    sz_account_t accounts[3] = {account_make(1), account_make(1), account_make(1)};
    accounts[2].code = 11;
    sz_create_result_t results[3];
    uint64_t timestamp = 0;
    uint32_t result_count = accounts_create(accounts, 3, results, &timestamp);
    RESULTS_ASSERT(results, result_count, {1, SZ_CREATE_ACCOUNT_EXISTS},
                   {2, SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_CODE});
    sz_account_t found = account_lookup(1);
    cr_assert(found.timestamp == timestamp, "the first event's record stays");
    cr_assert(found.code == 10);
    ledger_verify_assert();
}

Test(create_accounts, exists_ignores_the_balances_the_account_has_built_up) {
    sz_account_t accounts[2] = {account_make(1), account_make(2)};
    sz_create_result_t results[2];
    cr_assert(accounts_create(accounts, 2, results, NULL) == 0);
    sz_transfer_t transfer;
    memset(&transfer, 0, sizeof(transfer));
    transfer.id = 100;
    transfer.debit_account_id = 1;
    transfer.credit_account_id = 2;
    transfer.amount = 250;
    transfer.ledger = 1;
    transfer.code = 1;
    uint32_t result_count = UINT32_MAX;
    sz_batch_status_t status = sz_ledger_create_transfers(
        ledger, &transfer, 1, sz_ledger_timestamp_next(ledger, 0), results, &result_count);
    cr_assert(status == SZ_BATCH_APPLIED);
    cr_assert(result_count == 0);

    account_retry_assert(&accounts[0], SZ_CREATE_ACCOUNT_EXISTS);
    account_retry_assert(&accounts[1], SZ_CREATE_ACCOUNT_EXISTS);
    balances_assert(1, 0, 250, 0, 0);
    balances_assert(2, 0, 0, 0, 250);
    ledger_verify_assert();
}

Test(create_accounts, exists_with_different_flags_when_only_the_flags_differ) {
    sz_account_t account = account_existing();
    account.flags = SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS | SZ_ACCOUNT_HISTORY;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_FLAGS);
    ledger_verify_assert();
}

Test(create_accounts, exists_with_different_flags_wins_over_every_other_difference) {
    sz_account_t account = account_existing();
    account.flags = 0;
    account.user_data_128 = 1;
    account.user_data_64 = 1;
    account.user_data_32 = 1;
    account.ledger = 2;
    account.code = 2;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_FLAGS);
    ledger_verify_assert();
}

Test(create_accounts, exists_with_different_user_data_128_wins_over_user_data_64) {
    sz_account_t account = account_existing();
    account.user_data_128 = (sz_u128)128 << 64;
    account.user_data_64 = 1;
    account.user_data_32 = 1;
    account.ledger = 2;
    account.code = 2;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_128);
    ledger_verify_assert();
}

Test(create_accounts, exists_with_different_user_data_64_wins_over_user_data_32) {
    sz_account_t account = account_existing();
    account.user_data_64 = 0;
    account.user_data_32 = 1;
    account.ledger = 2;
    account.code = 2;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_64);
    ledger_verify_assert();
}

Test(create_accounts, exists_with_different_user_data_32_wins_over_ledger) {
    sz_account_t account = account_existing();
    account.user_data_32 = UINT32_MAX;
    account.ledger = 2;
    account.code = 2;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_32);
    ledger_verify_assert();
}

Test(create_accounts, exists_with_different_ledger_wins_over_code) {
    sz_account_t account = account_existing();
    account.ledger = 2;
    account.code = 2;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_LEDGER);
    ledger_verify_assert();
}

Test(create_accounts, exists_with_different_code_when_only_the_code_differs) {
    sz_account_t account = account_existing();
    account.code = 11;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_CODE);
    ledger_verify_assert();
}

Test(create_accounts, validation_wins_over_exists_for_an_existing_id) {
    const sz_account_t existing = account_existing();
    sz_account_t account = existing;
    account.code = 0;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_CODE_MUST_NOT_BE_ZERO);
    account = existing;
    account.credits_posted = 1;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_CREDITS_POSTED_MUST_BE_ZERO);
    account = existing;
    account.reserved = 1;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_RESERVED_FIELD);
    account = existing;
    account.timestamp = account_lookup(existing.id).timestamp;
    account_retry_assert(&account, SZ_CREATE_ACCOUNT_TIMESTAMP_MUST_BE_ZERO);
    ledger_verify_assert();
}
