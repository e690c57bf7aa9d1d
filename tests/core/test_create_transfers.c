/* test_create_transfers.c: proves that create_transfers produces every result code 0..55 of
 * SEMANTICS.md, each from at least one test named after what it proves; that the order of
 * checks (not the numbering) decides the code when two checks compete, on the plain/pending
 * path and on the post/void path; and that limits and overflows hold exactly at their
 * boundary and fail one past it (balance limits, 2^128-1 balances, u64 expiry timestamps,
 * pending expiry at timestamp + timeout * 10^9).
 * How: each test runs on a fresh in-memory ledger (fixture below) holding a fixed set of
 * accounts, submits batches at the next timestamp (or at a chosen one for expiry), compares
 * the whole list of {index, result} pairs, and reads balances back with
 * sz_ledger_lookup_accounts and stored transfers with sz_ledger_lookup_transfers: ok events
 * change balances exactly as SEMANTICS.md says, failed events change nothing and store
 * nothing. Every test ends with sz_ledger_verify(), so each also checks the invariants. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "core/ledger.h"

/* Small capacities: the tests need a few dozen records at most. */
#define TEST_CAPACITY 1024u

#define NS_PER_S 1000000000ull

/* The accounts every test starts with (ledger, code, flags). */
enum {
    ACCOUNT_A = 1,              /* ledger 1, no limit */
    ACCOUNT_B = 2,              /* ledger 1, no limit */
    ACCOUNT_C = 3,              /* ledger 1, no limit */
    ACCOUNT_D = 4,              /* ledger 1, no limit */
    ACCOUNT_DEBIT_LIMITED = 5,  /* ledger 1, debits_must_not_exceed_credits */
    ACCOUNT_CREDIT_LIMITED = 6, /* ledger 1, credits_must_not_exceed_debits */
    ACCOUNT_OTHER_LEDGER = 7,   /* ledger 2, no limit */
    ACCOUNT_MISSING = 99,       /* never created */
};

#define LEDGER_MAIN 1u
#define LEDGER_OTHER 2u
#define TRANSFER_CODE 20u

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

    static const struct {
        uint32_t id;
        uint32_t ledger;
        uint16_t flags;
    } specs[] = {
        {ACCOUNT_A, LEDGER_MAIN, 0},
        {ACCOUNT_B, LEDGER_MAIN, 0},
        {ACCOUNT_C, LEDGER_MAIN, 0},
        {ACCOUNT_D, LEDGER_MAIN, 0},
        {ACCOUNT_DEBIT_LIMITED, LEDGER_MAIN, SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS},
        {ACCOUNT_CREDIT_LIMITED, LEDGER_MAIN, SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS},
        {ACCOUNT_OTHER_LEDGER, LEDGER_OTHER, 0},
    };
    enum { SPEC_COUNT = sizeof(specs) / sizeof(specs[0]) };
    sz_account_t accounts[SPEC_COUNT];
    memset(accounts, 0, sizeof(accounts));
    for (uint32_t index = 0; index < SPEC_COUNT; index++) {
        accounts[index].id = specs[index].id;
        accounts[index].ledger = specs[index].ledger;
        accounts[index].code = 10;
        accounts[index].flags = specs[index].flags;
    }
    sz_create_result_t results[SPEC_COUNT];
    uint32_t result_count = UINT32_MAX;
    sz_batch_status_t batch_status =
        sz_ledger_create_accounts(ledger, accounts, SPEC_COUNT, sz_ledger_timestamp_next(ledger, 0),
                                  results, &result_count);
    cr_assert(batch_status == SZ_BATCH_APPLIED);
    cr_assert(result_count == 0, "fixture accounts must all be created");
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

TestSuite(create_transfers, .init = ledger_setup, .fini = ledger_teardown);

/* ---- builders ---------------------------------------------------------------------- */

/* A valid plain transfer on ledger 1; tests change one field at a time. */
static sz_transfer_t transfer_make(sz_u128 id, sz_u128 debit_account_id,
                                   sz_u128 credit_account_id, sz_u128 amount) {
    sz_transfer_t transfer;
    memset(&transfer, 0, sizeof(transfer));
    transfer.id = id;
    transfer.debit_account_id = debit_account_id;
    transfer.credit_account_id = credit_account_id;
    transfer.amount = amount;
    transfer.ledger = LEDGER_MAIN;
    transfer.code = TRANSFER_CODE;
    return transfer;
}

static sz_transfer_t pending_make(sz_u128 id, sz_u128 debit_account_id,
                                  sz_u128 credit_account_id, sz_u128 amount, uint32_t timeout) {
    sz_transfer_t transfer = transfer_make(id, debit_account_id, credit_account_id, amount);
    transfer.flags = SZ_TRANSFER_PENDING;
    transfer.timeout = timeout;
    return transfer;
}

/* A post or void that gives only what it must: every other field inherits. */
static sz_transfer_t resolve_make(sz_u128 id, uint16_t flag, sz_u128 pending_id,
                                  sz_u128 amount) {
    sz_transfer_t transfer;
    memset(&transfer, 0, sizeof(transfer));
    transfer.id = id;
    transfer.flags = flag;
    transfer.pending_id = pending_id;
    transfer.amount = amount;
    return transfer;
}

static sz_transfer_t post_make(sz_u128 id, sz_u128 pending_id, sz_u128 amount) {
    return resolve_make(id, SZ_TRANSFER_POST_PENDING, pending_id, amount);
}

static sz_transfer_t void_make(sz_u128 id, sz_u128 pending_id, sz_u128 amount) {
    return resolve_make(id, SZ_TRANSFER_VOID_PENDING, pending_id, amount);
}

/* ---- submitting ---------------------------------------------------------------------- */

/* Submits a batch at the given timestamp, asserts it applied, returns the result count. */
static uint32_t transfers_create_at(const sz_transfer_t *events, uint32_t event_count,
                                    uint64_t timestamp, sz_create_result_t *results_out) {
    uint32_t result_count = UINT32_MAX;
    sz_batch_status_t status = sz_ledger_create_transfers(ledger, events, event_count, timestamp,
                                                          results_out, &result_count);
    cr_assert(status == SZ_BATCH_APPLIED, "batch status %s", sz_batch_status_name(status));
    cr_assert(result_count <= event_count, "result_count %u for %u events", result_count,
              event_count);
    return result_count;
}

/* Submits a batch at the next timestamp; its T goes to timestamp_out (may be NULL). */
static uint32_t transfers_create(const sz_transfer_t *events, uint32_t event_count,
                                 sz_create_result_t *results_out, uint64_t *timestamp_out) {
    uint64_t timestamp = sz_ledger_timestamp_next(ledger, 0);
    if (timestamp_out != NULL) *timestamp_out = timestamp;
    return transfers_create_at(events, event_count, timestamp, results_out);
}

static uint32_t result_of_one(const sz_create_result_t *results, uint32_t result_count) {
    if (result_count == 0) return SZ_CREATE_TRANSFER_OK;
    cr_assert(result_count == 1);
    cr_assert(results[0].index == 0, "index %u", results[0].index);
    cr_assert(results[0].result != SZ_CREATE_TRANSFER_OK, "ok must not be reported");
    return results[0].result;
}

/* The result of a one-event batch at the next timestamp. */
static uint32_t transfer_create_one(sz_transfer_t transfer) {
    sz_create_result_t results[1];
    return result_of_one(results, transfers_create(&transfer, 1, results, NULL));
}

static uint32_t transfer_create_one_at(sz_transfer_t transfer, uint64_t timestamp) {
    sz_create_result_t results[1];
    return result_of_one(results, transfers_create_at(&transfer, 1, timestamp, results));
}

/* ---- assertions ---------------------------------------------------------------------- */

static void result_assert(uint32_t actual, uint32_t expected) {
    cr_assert(actual == expected, "result %s (%u), expected %s (%u)",
              sz_create_transfer_result_name(actual), actual,
              sz_create_transfer_result_name(expected), expected);
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
                  sz_create_transfer_result_name(results[index].result),
                  sz_create_transfer_result_name(expected[index].result));
    }
    cr_assert(result_count == expected_count, "%u results, expected %u", result_count,
              expected_count);
}

#define RESULTS_ASSERT(results, result_count, ...)                                          \
    results_assert((results), (result_count), (const sz_create_result_t[]){__VA_ARGS__},    \
                   (uint32_t)(sizeof((const sz_create_result_t[]){__VA_ARGS__}) /           \
                              sizeof(sz_create_result_t)))

/* Creates a transfer, asserting ok. */
static void transfer_create_ok(sz_transfer_t transfer) {
    result_assert(transfer_create_one(transfer), SZ_CREATE_TRANSFER_OK);
}

static void u128_assert_eq(sz_u128 actual, sz_u128 expected, const char *what) {
    char actual_text[SZ_U128_DECIMAL_SIZE];
    char expected_text[SZ_U128_DECIMAL_SIZE];
    cr_assert(actual == expected, "%s is %s, expected %s", what,
              sz_u128_format(actual, actual_text), sz_u128_format(expected, expected_text));
}

static sz_account_t account_lookup(sz_u128 id) {
    sz_account_t found;
    memset(&found, 0, sizeof(found));
    cr_assert(sz_ledger_lookup_accounts(ledger, &id, 1, &found) == 1, "account not found");
    return found;
}

static void balances_assert(sz_u128 id, sz_u128 debits_pending, sz_u128 debits_posted,
                            sz_u128 credits_pending, sz_u128 credits_posted) {
    sz_account_t account = account_lookup(id);
    char id_text[SZ_U128_DECIMAL_SIZE];
    char what[96];
    sz_u128_format(id, id_text);
    snprintf(what, sizeof(what), "account %s debits_pending", id_text);
    u128_assert_eq(account.debits_pending, debits_pending, what);
    snprintf(what, sizeof(what), "account %s debits_posted", id_text);
    u128_assert_eq(account.debits_posted, debits_posted, what);
    snprintf(what, sizeof(what), "account %s credits_pending", id_text);
    u128_assert_eq(account.credits_pending, credits_pending, what);
    snprintf(what, sizeof(what), "account %s credits_posted", id_text);
    u128_assert_eq(account.credits_posted, credits_posted, what);
}

static bool transfer_exists(sz_u128 id) {
    sz_transfer_t found;
    return sz_ledger_lookup_transfers(ledger, &id, 1, &found) == 1;
}

static sz_transfer_t transfer_lookup(sz_u128 id) {
    sz_transfer_t found;
    memset(&found, 0, sizeof(found));
    cr_assert(sz_ledger_lookup_transfers(ledger, &id, 1, &found) == 1, "transfer not found");
    return found;
}

/* Asserts that an event got the result and changed nothing: the stored transfer with its
 * id (if any) and the balances of every ledger-1 account. */
static void transfer_rejected_assert(sz_transfer_t transfer, uint32_t expected) {
    static const sz_u128 ids[] = {ACCOUNT_A, ACCOUNT_B, ACCOUNT_C, ACCOUNT_D,
                                  ACCOUNT_DEBIT_LIMITED, ACCOUNT_CREDIT_LIMITED};
    enum { ID_COUNT = sizeof(ids) / sizeof(ids[0]) };
    sz_account_t before[ID_COUNT];
    cr_assert(sz_ledger_lookup_accounts(ledger, ids, ID_COUNT, before) == ID_COUNT);
    sz_transfer_t stored_before;
    memset(&stored_before, 0, sizeof(stored_before));
    bool existed = sz_ledger_lookup_transfers(ledger, &transfer.id, 1, &stored_before) == 1;

    result_assert(transfer_create_one(transfer), expected);

    sz_account_t after[ID_COUNT];
    cr_assert(sz_ledger_lookup_accounts(ledger, ids, ID_COUNT, after) == ID_COUNT);
    cr_assert(memcmp(before, after, sizeof(before)) == 0, "a failed event changed balances");
    sz_transfer_t stored_after;
    memset(&stored_after, 0, sizeof(stored_after));
    bool exists_now = sz_ledger_lookup_transfers(ledger, &transfer.id, 1, &stored_after) == 1;
    cr_assert(existed == exists_now, "a failed event stored or removed a transfer");
    cr_assert(memcmp(&stored_before, &stored_after, sizeof(stored_before)) == 0,
              "a failed event changed the stored transfer");
}

/* Gives account id credits_posted = amount (from account D, which has no limit). */
static void account_fund(uint64_t transfer_id, sz_u128 id, sz_u128 amount) {
    transfer_create_ok(transfer_make(transfer_id, ACCOUNT_D, id, amount));
}

/* ---- ok and effects ------------------------------------------------------------------ */

Test(create_transfers, a_plain_transfer_moves_posted_balances_and_is_stored_as_given) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 100);
    transfer.user_data_128 = 128;
    transfer.user_data_64 = 64;
    transfer.user_data_32 = 32;
    sz_create_result_t results[1];
    uint64_t timestamp = 0;
    cr_assert(transfers_create(&transfer, 1, results, &timestamp) == 0,
              "a fully successful batch has an empty result list");
    balances_assert(ACCOUNT_A, 0, 100, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, 100);
    sz_transfer_t stored = transfer_lookup(10);
    sz_transfer_t expected = transfer;
    expected.timestamp = timestamp;
    cr_assert(memcmp(&stored, &expected, sizeof(stored)) == 0, "stored transfer differs");
    cr_assert(transfer.timestamp == 0, "the input event is never modified");
    ledger_verify_assert();
}

Test(create_transfers, event_i_gets_timestamp_t_plus_i_and_failed_events_consume_theirs) {
    sz_transfer_t transfers[3] = {transfer_make(10, ACCOUNT_A, ACCOUNT_B, 1),
                                  transfer_make(11, ACCOUNT_A, ACCOUNT_B, 0),
                                  transfer_make(12, ACCOUNT_A, ACCOUNT_B, 2)};
    sz_create_result_t results[3];
    uint64_t timestamp = 0;
    uint32_t result_count = transfers_create(transfers, 3, results, &timestamp);
    RESULTS_ASSERT(results, result_count, {1, SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO});
    cr_assert(transfer_lookup(10).timestamp == timestamp);
    cr_assert(!transfer_exists(11));
    cr_assert(transfer_lookup(12).timestamp == timestamp + 2);
    balances_assert(ACCOUNT_A, 0, 3, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, 3);
    ledger_verify_assert();
}

Test(create_transfers, a_pending_transfer_reserves_pending_balances) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    balances_assert(ACCOUNT_A, 100, 0, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 100, 0);
    cr_assert(transfer_lookup(10).flags == SZ_TRANSFER_PENDING);
    ledger_verify_assert();
}

Test(create_transfers, a_transfer_of_the_maximum_amount_is_accepted) {
    transfer_create_ok(transfer_make(10, ACCOUNT_A, ACCOUNT_B, SZ_U128_MAX));
    balances_assert(ACCOUNT_A, 0, SZ_U128_MAX, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, SZ_U128_MAX);
    ledger_verify_assert();
}

Test(create_transfers, ids_one_and_one_below_int_max_are_accepted) {
    transfer_create_ok(transfer_make(1, ACCOUNT_A, ACCOUNT_B, 1));
    transfer_create_ok(transfer_make(SZ_U128_MAX - 1, ACCOUNT_A, ACCOUNT_B, 1));
    cr_assert(transfer_exists(1));
    cr_assert(transfer_exists(SZ_U128_MAX - 1));
    ledger_verify_assert();
}

/* ---- linked chains (1, 2) ------------------------------------------------------------ */

Test(create_transfers, a_linked_chain_applies_in_order_and_members_see_earlier_effects) {
    sz_transfer_t transfers[2] = {transfer_make(10, ACCOUNT_D, ACCOUNT_DEBIT_LIMITED, 100),
                                  transfer_make(11, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 100)};
    transfers[0].flags = SZ_TRANSFER_LINKED;
    sz_create_result_t results[2];
    cr_assert(transfers_create(transfers, 2, results, NULL) == 0);
    balances_assert(ACCOUNT_DEBIT_LIMITED, 0, 100, 0, 100);
    balances_assert(ACCOUNT_C, 0, 0, 0, 100);
    ledger_verify_assert();
}

Test(create_transfers, linked_event_failed_rolls_back_applied_members_of_a_failed_chain) {
    sz_transfer_t transfers[3] = {transfer_make(10, ACCOUNT_A, ACCOUNT_B, 100),
                                  pending_make(11, ACCOUNT_A, ACCOUNT_C, 50, 0),
                                  transfer_make(12, ACCOUNT_A, ACCOUNT_B, 0)};
    transfers[0].flags |= SZ_TRANSFER_LINKED;
    transfers[1].flags |= SZ_TRANSFER_LINKED;
    sz_create_result_t results[3];
    uint32_t result_count = transfers_create(transfers, 3, results, NULL);
    RESULTS_ASSERT(results, result_count, {0, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED},
                   {1, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED},
                   {2, SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO});
    cr_assert(!transfer_exists(10));
    cr_assert(!transfer_exists(11));
    balances_assert(ACCOUNT_A, 0, 0, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, 0);
    balances_assert(ACCOUNT_C, 0, 0, 0, 0);
    /* The rolled-back ids were never stored, so they can be created now. */
    transfer_create_ok(transfer_make(10, ACCOUNT_A, ACCOUNT_B, 7));
    balances_assert(ACCOUNT_A, 0, 7, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, members_after_the_failure_get_linked_event_failed_unchecked) {
    sz_transfer_t transfers[5] = {
        transfer_make(10, ACCOUNT_A, ACCOUNT_B, 1), transfer_make(11, ACCOUNT_A, ACCOUNT_B, 1),
        transfer_make(0, 0, 0, 0), transfer_make(13, ACCOUNT_A, ACCOUNT_B, 1),
        transfer_make(14, ACCOUNT_A, ACCOUNT_B, 5)};
    transfers[0].flags = SZ_TRANSFER_LINKED;
    transfers[1].flags = SZ_TRANSFER_LINKED;
    transfers[1].debit_account_id = ACCOUNT_MISSING; /* the failure */
    transfers[2].flags = SZ_TRANSFER_LINKED;         /* invalid everywhere, unchecked */
    transfers[3].timestamp = 1;                      /* last member: unchecked too */
    /* transfers[4] is a chain of its own and applies. */
    sz_create_result_t results[5];
    uint32_t result_count = transfers_create(transfers, 5, results, NULL);
    RESULTS_ASSERT(results, result_count, {0, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED},
                   {1, SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND},
                   {2, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED},
                   {3, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED});
    cr_assert(!transfer_exists(10));
    cr_assert(!transfer_exists(13));
    cr_assert(transfer_exists(14));
    balances_assert(ACCOUNT_A, 0, 5, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, 5);
    ledger_verify_assert();
}

Test(create_transfers, a_failed_chain_rolls_back_a_pending_transfer_and_its_post) {
    sz_transfer_t transfers[3] = {pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 60),
                                  post_make(11, 10, 40),
                                  transfer_make(12, ACCOUNT_A, ACCOUNT_MISSING, 1)};
    transfers[0].flags |= SZ_TRANSFER_LINKED;
    transfers[1].flags |= SZ_TRANSFER_LINKED;
    sz_create_result_t results[3];
    uint32_t result_count = transfers_create(transfers, 3, results, NULL);
    RESULTS_ASSERT(results, result_count, {0, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED},
                   {1, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED},
                   {2, SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND});
    cr_assert(!transfer_exists(10));
    cr_assert(!transfer_exists(11));
    balances_assert(ACCOUNT_A, 0, 0, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, 0);
    /* Nothing of the pending transfer is left to expire. */
    cr_assert(sz_ledger_expiry_next(ledger) == UINT64_MAX);
    result_assert(transfer_create_one(post_make(13, 10, 0)),
                  SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_FOUND);
    ledger_verify_assert();
}

Test(create_transfers, a_failed_chain_rolls_back_a_void_and_the_transfer_stays_pending) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    sz_transfer_t transfers[2] = {void_make(11, 10, 0),
                                  transfer_make(12, ACCOUNT_A, ACCOUNT_A, 1)};
    transfers[0].flags |= SZ_TRANSFER_LINKED;
    sz_create_result_t results[2];
    uint32_t result_count = transfers_create(transfers, 2, results, NULL);
    RESULTS_ASSERT(results, result_count, {0, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED},
                   {1, SZ_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT});
    cr_assert(!transfer_exists(11));
    balances_assert(ACCOUNT_A, 100, 0, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 100, 0);
    transfer_create_ok(post_make(13, 10, 0));
    balances_assert(ACCOUNT_A, 0, 100, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, 100);
    ledger_verify_assert();
}

Test(create_transfers, linked_on_the_last_event_gives_linked_event_chain_open) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 1);
    transfer.flags = SZ_TRANSFER_LINKED;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN);
    ledger_verify_assert();
}

Test(create_transfers, an_open_chain_fails_its_earlier_members) {
    sz_transfer_t transfers[3] = {transfer_make(10, ACCOUNT_A, ACCOUNT_B, 1),
                                  transfer_make(11, ACCOUNT_A, ACCOUNT_B, 2),
                                  transfer_make(12, ACCOUNT_A, ACCOUNT_B, 4)};
    transfers[1].flags = SZ_TRANSFER_LINKED;
    transfers[2].flags = SZ_TRANSFER_LINKED;
    sz_create_result_t results[3];
    uint32_t result_count = transfers_create(transfers, 3, results, NULL);
    RESULTS_ASSERT(results, result_count, {1, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED},
                   {2, SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN});
    cr_assert(transfer_exists(10));
    cr_assert(!transfer_exists(11));
    cr_assert(!transfer_exists(12));
    balances_assert(ACCOUNT_A, 0, 1, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, linked_event_chain_open_wins_inside_a_chain_that_already_failed) {
    sz_transfer_t transfers[3] = {transfer_make(10, ACCOUNT_A, ACCOUNT_B, 0),
                                  transfer_make(11, ACCOUNT_A, ACCOUNT_B, 2),
                                  transfer_make(12, ACCOUNT_A, ACCOUNT_B, 4)};
    transfers[0].flags = SZ_TRANSFER_LINKED;
    transfers[1].flags = SZ_TRANSFER_LINKED;
    transfers[2].flags = SZ_TRANSFER_LINKED;
    sz_create_result_t results[3];
    uint32_t result_count = transfers_create(transfers, 3, results, NULL);
    RESULTS_ASSERT(results, result_count, {0, SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO},
                   {1, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED},
                   {2, SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN});
    balances_assert(ACCOUNT_A, 0, 0, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, linked_event_chain_open_wins_over_the_events_own_checks) {
    sz_transfer_t transfer = transfer_make(0, 0, 0, 0);
    transfer.flags = SZ_TRANSFER_LINKED | (1u << 15);
    transfer.timestamp = 5;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN);
    ledger_verify_assert();
}

/* ---- header checks (3..7) ------------------------------------------------------------ */

Test(create_transfers, rejected_when_timestamp_is_not_zero) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 1);
    transfer.timestamp = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_TIMESTAMP_MUST_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, timestamp_must_be_zero_wins_over_reserved_flag) {
    sz_transfer_t transfer = transfer_make(0, 0, 0, 0);
    transfer.timestamp = UINT64_MAX;
    transfer.flags = 1u << 6;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_TIMESTAMP_MUST_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_any_unknown_flag_bit_is_set) {
    for (uint32_t bit = 6; bit < 16; bit++) {
        sz_transfer_t transfer = transfer_make(100 + bit, ACCOUNT_A, ACCOUNT_B, 1);
        transfer.flags = (uint16_t)(1u << bit);
        transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_RESERVED_FLAG);
    }
    ledger_verify_assert();
}

Test(create_transfers, reserved_flag_wins_over_id_zero_on_both_paths) {
    sz_transfer_t transfer = transfer_make(0, ACCOUNT_A, ACCOUNT_B, 1);
    transfer.flags = SZ_TRANSFER_PENDING | (1u << 7);
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_RESERVED_FLAG);
    transfer = post_make(0, 0, 0);
    transfer.flags |= SZ_TRANSFER_VOID_PENDING | (1u << 12);
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_RESERVED_FLAG);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_id_is_zero) {
    transfer_rejected_assert(transfer_make(0, ACCOUNT_A, ACCOUNT_B, 1),
                             SZ_CREATE_TRANSFER_ID_MUST_NOT_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_id_is_int_max) {
    transfer_rejected_assert(transfer_make(SZ_U128_MAX, ACCOUNT_A, ACCOUNT_B, 1),
                             SZ_CREATE_TRANSFER_ID_MUST_NOT_BE_INT_MAX);
    ledger_verify_assert();
}

Test(create_transfers, id_checks_win_over_flags_are_mutually_exclusive) {
    sz_transfer_t transfer = post_make(0, 10, 0);
    transfer.flags |= SZ_TRANSFER_VOID_PENDING;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_ID_MUST_NOT_BE_ZERO);
    transfer.id = SZ_U128_MAX;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_ID_MUST_NOT_BE_INT_MAX);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_post_and_void_are_combined_with_each_other_or_others) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    const uint16_t flag_sets[] = {
        SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING,
        SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_PENDING,
        SZ_TRANSFER_VOID_PENDING | SZ_TRANSFER_PENDING,
        SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_BALANCING_DEBIT,
        SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_BALANCING_CREDIT,
        SZ_TRANSFER_VOID_PENDING | SZ_TRANSFER_BALANCING_DEBIT,
        SZ_TRANSFER_VOID_PENDING | SZ_TRANSFER_BALANCING_CREDIT,
    };
    for (uint32_t index = 0; index < sizeof(flag_sets) / sizeof(flag_sets[0]); index++) {
        sz_transfer_t transfer = post_make(20 + index, 10, 0);
        transfer.flags = flag_sets[index];
        transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE);
    }
    balances_assert(ACCOUNT_A, 100, 0, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, flags_are_mutually_exclusive_wins_over_the_pending_id_checks) {
    sz_transfer_t transfer = post_make(10, 0, 0);
    transfer.flags |= SZ_TRANSFER_VOID_PENDING;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE);
    transfer.pending_id = SZ_U128_MAX;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE);
    transfer.pending_id = transfer.id;
    transfer.timeout = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE);
    ledger_verify_assert();
}

Test(create_transfers, pending_may_combine_with_both_balancing_flags) {
    account_fund(1, ACCOUNT_A, 100);
    transfer_create_ok(transfer_make(2, ACCOUNT_C, ACCOUNT_D, 100));
    sz_transfer_t transfer = pending_make(10, ACCOUNT_A, ACCOUNT_C, 0, 0);
    transfer.flags |= SZ_TRANSFER_BALANCING_DEBIT | SZ_TRANSFER_BALANCING_CREDIT;
    transfer_create_ok(transfer);
    u128_assert_eq(transfer_lookup(10).amount, 100, "amount");
    balances_assert(ACCOUNT_A, 100, 0, 0, 100);
    balances_assert(ACCOUNT_C, 0, 100, 100, 0);
    ledger_verify_assert();
}

/* ---- account ids and plain-path field checks (8..20) --------------------------------- */

Test(create_transfers, rejected_when_debit_account_id_is_zero) {
    transfer_rejected_assert(transfer_make(10, 0, 0, 0),
                             SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_debit_account_id_is_int_max) {
    transfer_rejected_assert(transfer_make(10, SZ_U128_MAX, 0, 0),
                             SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_credit_account_id_is_zero) {
    transfer_rejected_assert(transfer_make(10, ACCOUNT_A, 0, 0),
                             SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_credit_account_id_is_int_max) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, SZ_U128_MAX, 0);
    transfer.pending_id = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_debit_and_credit_account_are_the_same) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_A, 1);
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT);
    transfer.pending_id = 7;
    transfer.amount = 0;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_plain_or_pending_transfer_names_a_pending_id) {
    transfer_create_ok(pending_make(5, ACCOUNT_A, ACCOUNT_B, 10, 0));
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 1);
    transfer.pending_id = 5;
    transfer.timeout = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_PENDING_ID_MUST_BE_ZERO);
    transfer.flags = SZ_TRANSFER_PENDING;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_PENDING_ID_MUST_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_plain_transfer_has_a_timeout) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 0);
    transfer.timeout = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER);
    transfer.flags = SZ_TRANSFER_BALANCING_DEBIT;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_amount_is_zero_without_a_balancing_flag) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 0);
    transfer.ledger = 0;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO);
    transfer = pending_make(10, ACCOUNT_A, ACCOUNT_B, 0, 5);
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_ledger_is_zero) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 1);
    transfer.ledger = 0;
    transfer.code = 0;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_LEDGER_MUST_NOT_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_code_is_zero) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_MISSING, ACCOUNT_B, 1);
    transfer.code = 0;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_CODE_MUST_NOT_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_the_debit_account_does_not_exist) {
    transfer_rejected_assert(transfer_make(10, ACCOUNT_MISSING, ACCOUNT_MISSING + 1, 1),
                             SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_the_credit_account_does_not_exist) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_OTHER_LEDGER, ACCOUNT_MISSING, 1);
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_the_accounts_are_on_different_ledgers) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_OTHER_LEDGER, 1);
    transfer.ledger = 3;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_the_transfer_ledger_differs_from_the_accounts_ledger) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 1);
    transfer.ledger = LEDGER_OTHER;
    transfer_rejected_assert(transfer,
                             SZ_CREATE_TRANSFER_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS);
    ledger_verify_assert();
}

/* ---- exists on the plain/pending path (36..46) --------------------------------------- */

/* The pending transfer the plain-path exists tests retry. */
static sz_transfer_t transfer_existing(void) {
    sz_transfer_t transfer = pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 3600);
    transfer.user_data_128 = 128;
    transfer.user_data_64 = 64;
    transfer.user_data_32 = 32;
    transfer_create_ok(transfer);
    return transfer;
}

Test(create_transfers, exists_when_the_same_transfer_is_created_again) {
    sz_transfer_t transfer = transfer_existing();
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS);
    balances_assert(ACCOUNT_A, 100, 0, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, exists_for_a_duplicate_later_in_the_same_batch) {
    sz_transfer_t transfers[3] = {transfer_make(10, ACCOUNT_A, ACCOUNT_B, 5),
                                  transfer_make(10, ACCOUNT_A, ACCOUNT_B, 5),
                                  transfer_make(10, ACCOUNT_A, ACCOUNT_B, 6)};
    sz_create_result_t results[3];
    uint64_t timestamp = 0;
    uint32_t result_count = transfers_create(transfers, 3, results, &timestamp);
    RESULTS_ASSERT(results, result_count, {1, SZ_CREATE_TRANSFER_EXISTS},
                   {2, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT});
    cr_assert(transfer_lookup(10).timestamp == timestamp);
    balances_assert(ACCOUNT_A, 0, 5, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, exists_wins_over_a_limit_the_retry_would_now_exceed) {
    account_fund(1, ACCOUNT_DEBIT_LIMITED, 100);
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 100);
    transfer_create_ok(transfer);
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS);
    balances_assert(ACCOUNT_DEBIT_LIMITED, 0, 100, 0, 100);
    ledger_verify_assert();
}

Test(create_transfers, exists_wins_over_an_overflow_the_retry_would_now_cause) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, SZ_U128_MAX);
    transfer_create_ok(transfer);
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS);
    ledger_verify_assert();
}

Test(create_transfers, a_retry_naming_a_missing_account_gets_not_found_instead_of_exists) {
    sz_transfer_t transfer = transfer_existing();
    transfer.debit_account_id = ACCOUNT_MISSING;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND);
    transfer.debit_account_id = ACCOUNT_A;
    transfer.credit_account_id = ACCOUNT_MISSING;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND);
    ledger_verify_assert();
}

Test(create_transfers, a_retry_failing_validation_gets_the_validation_code_not_exists) {
    sz_transfer_t transfer = transfer_existing();
    transfer.ledger = LEDGER_OTHER;
    transfer_rejected_assert(transfer,
                             SZ_CREATE_TRANSFER_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS);
    transfer.ledger = LEDGER_MAIN;
    transfer.amount = 0;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_flags_wins_over_every_other_difference) {
    sz_transfer_t transfer = transfer_existing();
    transfer.flags = 0;
    transfer.timeout = 0;
    transfer.debit_account_id = ACCOUNT_C;
    transfer.credit_account_id = ACCOUNT_D;
    transfer.amount = 1;
    transfer.user_data_128 = 1;
    transfer.code = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_FLAGS);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_debit_account_id_wins_over_credit_account_id) {
    sz_transfer_t transfer = transfer_existing();
    transfer.debit_account_id = ACCOUNT_C;
    transfer.credit_account_id = ACCOUNT_D;
    transfer.amount = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_credit_account_id_wins_over_amount) {
    sz_transfer_t transfer = transfer_existing();
    transfer.credit_account_id = ACCOUNT_D;
    transfer.amount = 1;
    transfer.code = 1;
    transfer_rejected_assert(transfer,
                             SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_amount_wins_over_user_data_128) {
    sz_transfer_t transfer = transfer_existing();
    transfer.amount = 101;
    transfer.user_data_128 = 0;
    transfer.timeout = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_user_data_128_wins_over_user_data_64) {
    sz_transfer_t transfer = transfer_existing();
    transfer.user_data_128 = (sz_u128)128 << 64;
    transfer.user_data_64 = 0;
    transfer.code = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_128);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_user_data_64_wins_over_user_data_32) {
    sz_transfer_t transfer = transfer_existing();
    transfer.user_data_64 = UINT64_MAX;
    transfer.user_data_32 = 0;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_64);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_user_data_32_wins_over_timeout) {
    sz_transfer_t transfer = transfer_existing();
    transfer.user_data_32 = 33;
    transfer.timeout = 7200;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_32);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_timeout_wins_over_code) {
    sz_transfer_t transfer = transfer_existing();
    transfer.timeout = 0;
    transfer.code = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_TIMEOUT);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_code_when_only_the_code_differs) {
    sz_transfer_t transfer = transfer_existing();
    transfer.code = TRANSFER_CODE + 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_CODE);
    ledger_verify_assert();
}

/* ---- balancing ----------------------------------------------------------------------- */

Test(create_transfers, balancing_debit_clamps_the_amount_to_the_debit_accounts_credit_left) {
    account_fund(1, ACCOUNT_A, 100);
    transfer_create_ok(transfer_make(2, ACCOUNT_A, ACCOUNT_C, 20));
    transfer_create_ok(pending_make(3, ACCOUNT_A, ACCOUNT_C, 10, 0));
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 1000);
    transfer.flags = SZ_TRANSFER_BALANCING_DEBIT;
    transfer_create_ok(transfer);
    u128_assert_eq(transfer_lookup(10).amount, 70, "stored amount");
    balances_assert(ACCOUNT_A, 10, 90, 0, 100);
    balances_assert(ACCOUNT_B, 0, 0, 0, 70);
    ledger_verify_assert();
}

Test(create_transfers, balancing_debit_keeps_an_amount_below_what_is_left) {
    account_fund(1, ACCOUNT_A, 100);
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 99);
    transfer.flags = SZ_TRANSFER_BALANCING_DEBIT;
    transfer_create_ok(transfer);
    u128_assert_eq(transfer_lookup(10).amount, 99, "stored amount");
    transfer.id = 11;
    transfer_create_ok(transfer);
    u128_assert_eq(transfer_lookup(11).amount, 1, "stored amount");
    balances_assert(ACCOUNT_A, 0, 100, 0, 100);
    ledger_verify_assert();
}

Test(create_transfers, balancing_with_amount_zero_requests_at_most_two_to_the_64_minus_one) {
    const sz_u128 funded = ((sz_u128)1 << 64) + 5;
    account_fund(1, ACCOUNT_A, funded);
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 0);
    transfer.flags = SZ_TRANSFER_BALANCING_DEBIT;
    transfer_create_ok(transfer);
    u128_assert_eq(transfer_lookup(10).amount, UINT64_MAX, "stored amount");
    transfer.id = 11;
    transfer_create_ok(transfer);
    u128_assert_eq(transfer_lookup(11).amount, 6, "stored amount");
    balances_assert(ACCOUNT_A, 0, funded, 0, funded);
    ledger_verify_assert();
}

Test(create_transfers, balancing_debit_with_no_credit_left_gives_exceeds_credits) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 0);
    transfer.flags = SZ_TRANSFER_BALANCING_DEBIT;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    /* Debits above credits clamp to 0 too (never a negative amount). */
    transfer_create_ok(transfer_make(1, ACCOUNT_A, ACCOUNT_C, 50));
    account_fund(2, ACCOUNT_A, 30);
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    ledger_verify_assert();
}

Test(create_transfers, balancing_credit_clamps_the_amount_to_the_credit_accounts_debit_left) {
    transfer_create_ok(transfer_make(1, ACCOUNT_C, ACCOUNT_D, 100));
    transfer_create_ok(transfer_make(2, ACCOUNT_A, ACCOUNT_C, 20));
    transfer_create_ok(pending_make(3, ACCOUNT_A, ACCOUNT_C, 10, 0));
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_B, ACCOUNT_C, 0);
    transfer.flags = SZ_TRANSFER_BALANCING_CREDIT;
    transfer_create_ok(transfer);
    u128_assert_eq(transfer_lookup(10).amount, 70, "stored amount");
    balances_assert(ACCOUNT_C, 0, 100, 10, 90);
    balances_assert(ACCOUNT_B, 0, 70, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, balancing_credit_with_no_debit_left_gives_exceeds_debits) {
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_B, ACCOUNT_C, 0);
    transfer.flags = SZ_TRANSFER_BALANCING_CREDIT;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXCEEDS_DEBITS);
    ledger_verify_assert();
}

Test(create_transfers, both_balancing_flags_clamp_to_the_smaller_amount_left) {
    account_fund(1, ACCOUNT_A, 70);
    transfer_create_ok(transfer_make(2, ACCOUNT_C, ACCOUNT_D, 40));
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_C, 0);
    transfer.flags = SZ_TRANSFER_BALANCING_DEBIT | SZ_TRANSFER_BALANCING_CREDIT;
    transfer_create_ok(transfer);
    u128_assert_eq(transfer_lookup(10).amount, 40, "stored amount");
    balances_assert(ACCOUNT_A, 0, 40, 0, 70);
    balances_assert(ACCOUNT_C, 0, 40, 0, 40);
    ledger_verify_assert();
}

Test(create_transfers, a_pending_balancing_transfer_reserves_what_is_left) {
    account_fund(1, ACCOUNT_A, 100);
    sz_transfer_t transfer = pending_make(10, ACCOUNT_A, ACCOUNT_B, 0, 0);
    transfer.flags |= SZ_TRANSFER_BALANCING_DEBIT;
    transfer_create_ok(transfer);
    u128_assert_eq(transfer_lookup(10).amount, 100, "stored amount");
    balances_assert(ACCOUNT_A, 100, 0, 0, 100);
    transfer.id = 11;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    ledger_verify_assert();
}

Test(create_transfers, a_balancing_retry_gets_exists_although_nothing_is_left_to_balance) {
    account_fund(1, ACCOUNT_A, 100);
    sz_transfer_t transfer = transfer_make(10, ACCOUNT_A, ACCOUNT_B, 0);
    transfer.flags = SZ_TRANSFER_BALANCING_DEBIT;
    transfer_create_ok(transfer);
    /* The amount is an upper limit (0: none): a retry asking for at least what was booked
     * is the same request (TigerBeetle 0.15); asking for less is a different one. */
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS);
    transfer.amount = 100;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS);
    transfer.amount = 150;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS);
    transfer.amount = 99;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT);
    balances_assert(ACCOUNT_A, 0, 100, 0, 100);
    ledger_verify_assert();
}

/* ---- overflows (47..53) -------------------------------------------------------------- */

Test(create_transfers, overflows_debits_pending_one_past_the_maximum) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, SZ_U128_MAX - 1, 0));
    transfer_create_ok(pending_make(11, ACCOUNT_A, ACCOUNT_C, 1, 0));
    balances_assert(ACCOUNT_A, SZ_U128_MAX, 0, 0, 0);
    transfer_rejected_assert(pending_make(12, ACCOUNT_A, ACCOUNT_C, 1, 0),
                             SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS_PENDING);
    ledger_verify_assert();
}

Test(create_transfers, overflows_credits_pending_one_past_the_maximum) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, SZ_U128_MAX - 1, 0));
    transfer_create_ok(pending_make(11, ACCOUNT_C, ACCOUNT_B, 1, 0));
    balances_assert(ACCOUNT_B, 0, 0, SZ_U128_MAX, 0);
    transfer_rejected_assert(pending_make(12, ACCOUNT_C, ACCOUNT_B, 1, 0),
                             SZ_CREATE_TRANSFER_OVERFLOWS_CREDITS_PENDING);
    ledger_verify_assert();
}

Test(create_transfers, overflows_debits_posted_one_past_the_maximum) {
    transfer_create_ok(transfer_make(10, ACCOUNT_A, ACCOUNT_C, SZ_U128_MAX - 1));
    transfer_create_ok(transfer_make(11, ACCOUNT_A, ACCOUNT_B, 1));
    balances_assert(ACCOUNT_A, 0, SZ_U128_MAX, 0, 0);
    transfer_rejected_assert(transfer_make(12, ACCOUNT_A, ACCOUNT_B, 1),
                             SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS_POSTED);
    ledger_verify_assert();
}

Test(create_transfers, overflows_credits_posted_one_past_the_maximum) {
    transfer_create_ok(transfer_make(10, ACCOUNT_A, ACCOUNT_C, SZ_U128_MAX - 1));
    transfer_create_ok(transfer_make(11, ACCOUNT_B, ACCOUNT_C, 1));
    balances_assert(ACCOUNT_C, 0, 0, 0, SZ_U128_MAX);
    transfer_rejected_assert(transfer_make(12, ACCOUNT_B, ACCOUNT_C, 1),
                             SZ_CREATE_TRANSFER_OVERFLOWS_CREDITS_POSTED);
    ledger_verify_assert();
}

Test(create_transfers, a_pending_transfer_is_checked_for_posted_overflow_too) {
    transfer_create_ok(transfer_make(10, ACCOUNT_A, ACCOUNT_C, SZ_U128_MAX));
    transfer_rejected_assert(pending_make(11, ACCOUNT_A, ACCOUNT_B, 1, 0),
                             SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS_POSTED);
    ledger_verify_assert();
}

Test(create_transfers, overflows_debits_when_pending_plus_posted_passes_the_maximum) {
    const sz_u128 half = (sz_u128)1 << 127;
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, half, 0));
    transfer_create_ok(transfer_make(11, ACCOUNT_A, ACCOUNT_C, half - 2));
    transfer_create_ok(transfer_make(12, ACCOUNT_A, ACCOUNT_C, 1));
    balances_assert(ACCOUNT_A, half, half - 1, 0, 0); /* sum is exactly 2^128-1 */
    transfer_rejected_assert(transfer_make(13, ACCOUNT_A, ACCOUNT_C, 1),
                             SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS);
    ledger_verify_assert();
}

Test(create_transfers, overflows_credits_when_pending_plus_posted_passes_the_maximum) {
    const sz_u128 half = (sz_u128)1 << 127;
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, half, 0));
    transfer_create_ok(transfer_make(11, ACCOUNT_C, ACCOUNT_B, half - 2));
    transfer_create_ok(transfer_make(12, ACCOUNT_C, ACCOUNT_B, 1));
    balances_assert(ACCOUNT_B, 0, 0, half, half - 1);
    transfer_rejected_assert(transfer_make(13, ACCOUNT_C, ACCOUNT_B, 1),
                             SZ_CREATE_TRANSFER_OVERFLOWS_CREDITS);
    ledger_verify_assert();
}

Test(create_transfers, overflows_timeout_one_past_the_last_u64_nanosecond) {
    /* Event 0 expires at exactly UINT64_MAX (accepted); events 1 and 2 one ns later
     * would pass it. Event 2 would also exceed its limit: overflows_timeout wins. */
    const uint64_t timestamp = UINT64_MAX - NS_PER_S;
    sz_transfer_t transfers[3] = {pending_make(10, ACCOUNT_A, ACCOUNT_B, 1, 1),
                                  pending_make(11, ACCOUNT_A, ACCOUNT_B, 1, 1),
                                  pending_make(12, ACCOUNT_DEBIT_LIMITED, ACCOUNT_B, 1, 1)};
    sz_create_result_t results[3];
    uint32_t result_count = transfers_create_at(transfers, 3, timestamp, results);
    RESULTS_ASSERT(results, result_count, {1, SZ_CREATE_TRANSFER_OVERFLOWS_TIMEOUT},
                   {2, SZ_CREATE_TRANSFER_OVERFLOWS_TIMEOUT});
    cr_assert(transfer_lookup(10).timestamp == timestamp);
    cr_assert(!transfer_exists(11));
    cr_assert(!transfer_exists(12));
    balances_assert(ACCOUNT_A, 1, 0, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 1, 0);
    balances_assert(ACCOUNT_DEBIT_LIMITED, 0, 0, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, the_largest_timeout_is_accepted_when_it_fits) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 1, UINT32_MAX));
    sz_transfer_t stored = transfer_lookup(10);
    cr_assert(stored.timeout == UINT32_MAX);
    cr_assert(sz_ledger_expiry_next(ledger) == stored.timestamp + (uint64_t)UINT32_MAX * NS_PER_S);
    ledger_verify_assert();
}

Test(create_transfers, an_overflow_wins_over_exceeds_credits) {
    account_fund(1, ACCOUNT_DEBIT_LIMITED, SZ_U128_MAX);
    transfer_create_ok(transfer_make(10, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, SZ_U128_MAX));
    transfer_rejected_assert(transfer_make(11, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 1),
                             SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS_POSTED);
    ledger_verify_assert();
}

/* ---- limits (54, 55) ----------------------------------------------------------------- */

Test(create_transfers, rejected_when_debits_would_exceed_credits) {
    transfer_rejected_assert(transfer_make(10, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 1),
                             SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    transfer_rejected_assert(pending_make(10, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 1, 0),
                             SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    ledger_verify_assert();
}

Test(create_transfers, debits_may_reach_credits_exactly_and_one_more_exceeds_them) {
    account_fund(1, ACCOUNT_DEBIT_LIMITED, 100);
    transfer_rejected_assert(transfer_make(10, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 101),
                             SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    transfer_create_ok(transfer_make(10, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 100));
    balances_assert(ACCOUNT_DEBIT_LIMITED, 0, 100, 0, 100);
    transfer_rejected_assert(transfer_make(11, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 1),
                             SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    ledger_verify_assert();
}

Test(create_transfers, pending_debits_count_against_the_credit_limit) {
    account_fund(1, ACCOUNT_DEBIT_LIMITED, 100);
    transfer_create_ok(pending_make(10, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 60, 0));
    transfer_rejected_assert(transfer_make(11, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 41),
                             SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    transfer_create_ok(transfer_make(11, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 40));
    balances_assert(ACCOUNT_DEBIT_LIMITED, 60, 40, 0, 100);
    /* Voiding the reservation gives the room back. */
    transfer_create_ok(void_make(12, 10, 0));
    transfer_create_ok(transfer_make(13, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 60));
    balances_assert(ACCOUNT_DEBIT_LIMITED, 0, 100, 0, 100);
    ledger_verify_assert();
}

Test(create_transfers, pending_credits_do_not_count_as_credit_for_the_limit) {
    transfer_create_ok(pending_make(1, ACCOUNT_D, ACCOUNT_DEBIT_LIMITED, 100, 0));
    transfer_rejected_assert(transfer_make(10, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 1),
                             SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    ledger_verify_assert();
}

Test(create_transfers, credits_may_reach_debits_exactly_and_one_more_exceeds_them) {
    transfer_create_ok(transfer_make(1, ACCOUNT_CREDIT_LIMITED, ACCOUNT_D, 100));
    transfer_rejected_assert(transfer_make(10, ACCOUNT_A, ACCOUNT_CREDIT_LIMITED, 101),
                             SZ_CREATE_TRANSFER_EXCEEDS_DEBITS);
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_CREDIT_LIMITED, 30, 0));
    transfer_rejected_assert(transfer_make(11, ACCOUNT_A, ACCOUNT_CREDIT_LIMITED, 71),
                             SZ_CREATE_TRANSFER_EXCEEDS_DEBITS);
    transfer_create_ok(transfer_make(11, ACCOUNT_A, ACCOUNT_CREDIT_LIMITED, 70));
    balances_assert(ACCOUNT_CREDIT_LIMITED, 0, 100, 30, 70);
    transfer_rejected_assert(transfer_make(12, ACCOUNT_A, ACCOUNT_CREDIT_LIMITED, 1),
                             SZ_CREATE_TRANSFER_EXCEEDS_DEBITS);
    ledger_verify_assert();
}

Test(create_transfers, exceeds_credits_wins_over_exceeds_debits) {
    transfer_rejected_assert(transfer_make(10, ACCOUNT_DEBIT_LIMITED, ACCOUNT_CREDIT_LIMITED, 1),
                             SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    ledger_verify_assert();
}

/* ---- post and void: effects ---------------------------------------------------------- */

Test(create_transfers, posting_with_amount_zero_posts_the_full_amount_and_inherits_fields) {
    sz_transfer_t pending = pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 3600);
    pending.user_data_128 = 1;
    pending.user_data_64 = 2;
    pending.user_data_32 = 3;
    transfer_create_ok(pending);
    sz_create_result_t results[1];
    uint64_t timestamp = 0;
    sz_transfer_t post = post_make(11, 10, 0);
    cr_assert(transfers_create(&post, 1, results, &timestamp) == 0);
    balances_assert(ACCOUNT_A, 0, 100, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, 100);
    sz_transfer_t stored = transfer_lookup(11);
    u128_assert_eq(stored.debit_account_id, ACCOUNT_A, "debit_account_id");
    u128_assert_eq(stored.credit_account_id, ACCOUNT_B, "credit_account_id");
    u128_assert_eq(stored.amount, 100, "amount");
    u128_assert_eq(stored.pending_id, 10, "pending_id");
    u128_assert_eq(stored.user_data_128, 1, "user_data_128");
    cr_assert(stored.user_data_64 == 2);
    cr_assert(stored.user_data_32 == 3);
    cr_assert(stored.timeout == 0);
    cr_assert(stored.ledger == LEDGER_MAIN);
    cr_assert(stored.code == TRANSFER_CODE);
    cr_assert(stored.flags == SZ_TRANSFER_POST_PENDING);
    cr_assert(stored.timestamp == timestamp);
    sz_transfer_t pending_stored = transfer_lookup(10);
    cr_assert(pending_stored.flags == SZ_TRANSFER_PENDING, "the pending record is unchanged");
    u128_assert_eq(pending_stored.amount, 100, "pending amount");
    ledger_verify_assert();
}

Test(create_transfers, posting_part_of_a_pending_transfer_releases_the_rest) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    sz_transfer_t post = post_make(11, 10, 30);
    post.user_data_128 = 9;
    post.debit_account_id = ACCOUNT_A;
    post.ledger = LEDGER_MAIN;
    post.code = TRANSFER_CODE;
    transfer_create_ok(post);
    balances_assert(ACCOUNT_A, 0, 30, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, 30);
    sz_transfer_t stored = transfer_lookup(11);
    u128_assert_eq(stored.amount, 30, "amount");
    u128_assert_eq(stored.user_data_128, 9, "user_data_128 from the request");
    ledger_verify_assert();
}

Test(create_transfers, posting_exactly_the_pending_amount_succeeds_and_one_more_exceeds_it) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_rejected_assert(post_make(11, 10, 101),
                             SZ_CREATE_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT);
    transfer_create_ok(post_make(11, 10, 100));
    balances_assert(ACCOUNT_A, 0, 100, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, voiding_releases_the_pending_balances) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(pending_make(11, ACCOUNT_A, ACCOUNT_B, 50, 0));
    transfer_create_ok(void_make(12, 10, 0));
    transfer_create_ok(void_make(13, 11, 50));
    balances_assert(ACCOUNT_A, 0, 0, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, 0);
    u128_assert_eq(transfer_lookup(12).amount, 100, "void amount 0 means the pending amount");
    u128_assert_eq(transfer_lookup(13).amount, 50, "void amount");
    ledger_verify_assert();
}

Test(create_transfers, a_post_spends_its_reservation_without_a_new_limit_check) {
    /* A new transfer of 100 would exceed the limit now (100 pending + 100 > 100 credits);
     * the post only turns the reservation into a posted debit. */
    account_fund(1, ACCOUNT_DEBIT_LIMITED, 100);
    transfer_create_ok(pending_make(10, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 100, 0));
    transfer_rejected_assert(transfer_make(11, ACCOUNT_DEBIT_LIMITED, ACCOUNT_C, 100),
                             SZ_CREATE_TRANSFER_EXCEEDS_CREDITS);
    transfer_create_ok(post_make(11, 10, 0));
    balances_assert(ACCOUNT_DEBIT_LIMITED, 0, 100, 0, 100);
    balances_assert(ACCOUNT_C, 0, 0, 0, 100);
    ledger_verify_assert();
}

/* ---- post and void: checks (13..17, 25..35) ------------------------------------------ */

Test(create_transfers, rejected_when_a_post_or_void_has_no_pending_id) {
    transfer_rejected_assert(post_make(10, 0, 0), SZ_CREATE_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO);
    sz_transfer_t transfer = void_make(10, 0, 0);
    transfer.timeout = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_post_or_void_pending_id_is_int_max) {
    transfer_rejected_assert(post_make(10, SZ_U128_MAX, 0),
                             SZ_CREATE_TRANSFER_PENDING_ID_MUST_NOT_BE_INT_MAX);
    transfer_rejected_assert(void_make(10, SZ_U128_MAX, 0),
                             SZ_CREATE_TRANSFER_PENDING_ID_MUST_NOT_BE_INT_MAX);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_post_names_itself_as_its_pending_transfer) {
    sz_transfer_t transfer = post_make(10, 10, 0);
    transfer.timeout = 5;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_PENDING_ID_MUST_BE_DIFFERENT);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_post_or_void_has_a_timeout) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    sz_transfer_t transfer = post_make(11, 10, 0);
    transfer.timeout = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER);
    transfer = void_make(11, 10, 0);
    transfer.timeout = UINT32_MAX;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER);
    ledger_verify_assert();
}

Test(create_transfers, timeout_on_a_post_wins_over_pending_transfer_not_found) {
    sz_transfer_t transfer = post_make(11, 12345, 0);
    transfer.timeout = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_the_pending_transfer_does_not_exist) {
    transfer_rejected_assert(post_make(11, 12345, 0),
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_FOUND);
    transfer_rejected_assert(void_make(11, 12345, 0),
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_FOUND);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_the_named_transfer_is_not_pending) {
    transfer_create_ok(transfer_make(10, ACCOUNT_A, ACCOUNT_B, 100));
    sz_transfer_t transfer = post_make(11, 10, 0);
    transfer.debit_account_id = ACCOUNT_C;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_PENDING);
    /* A post is not pending either. */
    transfer_create_ok(pending_make(20, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(post_make(21, 20, 0));
    transfer_rejected_assert(void_make(22, 21, 0), SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_PENDING);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_post_names_a_different_debit_account) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    sz_transfer_t transfer = post_make(11, 10, 101);
    transfer.debit_account_id = ACCOUNT_C;
    transfer.credit_account_id = ACCOUNT_C;
    transfer_rejected_assert(transfer,
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_post_names_a_different_credit_account) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    sz_transfer_t transfer = void_make(11, 10, 0);
    transfer.debit_account_id = ACCOUNT_A;
    transfer.credit_account_id = ACCOUNT_C;
    transfer.ledger = LEDGER_OTHER;
    transfer_rejected_assert(transfer,
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_post_names_a_different_ledger) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    sz_transfer_t transfer = post_make(11, 10, 0);
    transfer.credit_account_id = ACCOUNT_B;
    transfer.ledger = LEDGER_OTHER;
    transfer.code = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_LEDGER);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_post_names_a_different_code) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    sz_transfer_t transfer = post_make(11, 10, 1000);
    transfer.code = TRANSFER_CODE + 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CODE);
    ledger_verify_assert();
}

Test(create_transfers, a_post_repeating_the_pending_fields_is_accepted) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    sz_transfer_t transfer = post_make(11, 10, 100);
    transfer.debit_account_id = ACCOUNT_A;
    transfer.credit_account_id = ACCOUNT_B;
    transfer.ledger = LEDGER_MAIN;
    transfer.code = TRANSFER_CODE;
    transfer_create_ok(transfer);
    balances_assert(ACCOUNT_B, 0, 0, 0, 100);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_void_asks_for_more_than_the_pending_amount) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_rejected_assert(void_make(11, 10, 101),
                             SZ_CREATE_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_a_void_names_less_than_the_pending_amount) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_rejected_assert(void_make(11, 10, 99),
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT);
    transfer_rejected_assert(void_make(11, 10, 1),
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_the_pending_transfer_is_already_posted) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(post_make(11, 10, 40));
    transfer_rejected_assert(post_make(12, 10, 0),
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED);
    transfer_rejected_assert(void_make(12, 10, 0),
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED);
    balances_assert(ACCOUNT_A, 0, 40, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, rejected_when_the_pending_transfer_is_already_voided) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(void_make(11, 10, 0));
    transfer_rejected_assert(post_make(12, 10, 0),
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED);
    transfer_rejected_assert(void_make(12, 10, 100),
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED);
    balances_assert(ACCOUNT_A, 0, 0, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, a_second_resolution_in_the_same_batch_sees_the_first) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    sz_transfer_t transfers[2] = {post_make(11, 10, 0), void_make(12, 10, 0)};
    sz_create_result_t results[2];
    uint32_t result_count = transfers_create(transfers, 2, results, NULL);
    RESULTS_ASSERT(results, result_count,
                   {1, SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED});
    balances_assert(ACCOUNT_A, 0, 100, 0, 0);
    ledger_verify_assert();
}

/* ---- post and void: order of checks -------------------------------------------------- */

Test(create_transfers, pending_transfer_not_found_wins_over_exists) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(post_make(11, 10, 0));
    transfer_rejected_assert(post_make(11, 12345, 0),
                             SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_FOUND);
    ledger_verify_assert();
}

Test(create_transfers, pending_transfer_not_pending_wins_over_different_fields) {
    transfer_create_ok(transfer_make(10, ACCOUNT_A, ACCOUNT_B, 100));
    sz_transfer_t transfer = post_make(11, 10, 500);
    transfer.debit_account_id = ACCOUNT_C;
    transfer.code = 1;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_PENDING);
    ledger_verify_assert();
}

Test(create_transfers, exceeds_pending_transfer_amount_wins_over_exists) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(post_make(11, 10, 30));
    transfer_rejected_assert(post_make(11, 10, 101),
                             SZ_CREATE_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT);
    ledger_verify_assert();
}

Test(create_transfers, a_retried_post_gets_exists_not_already_posted) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(post_make(11, 10, 30));
    transfer_rejected_assert(post_make(11, 10, 30), SZ_CREATE_TRANSFER_EXISTS);
    balances_assert(ACCOUNT_A, 0, 30, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, a_retried_void_gets_exists_not_already_voided) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(void_make(11, 10, 0));
    transfer_rejected_assert(void_make(11, 10, 0), SZ_CREATE_TRANSFER_EXISTS);
    transfer_rejected_assert(void_make(11, 10, 100), SZ_CREATE_TRANSFER_EXISTS);
    ledger_verify_assert();
}

Test(create_transfers, a_post_retry_with_amount_zero_means_the_pending_amount) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(post_make(11, 10, 0));
    transfer_rejected_assert(post_make(11, 10, 100), SZ_CREATE_TRANSFER_EXISTS);
    transfer_rejected_assert(post_make(11, 10, 0), SZ_CREATE_TRANSFER_EXISTS);

    transfer_create_ok(pending_make(20, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(post_make(21, 20, 30));
    transfer_rejected_assert(post_make(21, 20, 0),
                             SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_flags_for_a_void_retrying_a_post) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(post_make(11, 10, 30));
    sz_transfer_t transfer = void_make(11, 10, 0);
    transfer.user_data_64 = 5;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_FLAGS);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_flags_for_a_post_reusing_a_plain_transfer_id) {
    transfer_create_ok(transfer_make(11, ACCOUNT_A, ACCOUNT_B, 100));
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_rejected_assert(post_make(11, 10, 0), SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_FLAGS);
    balances_assert(ACCOUNT_A, 100, 100, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_amount_for_a_post_retry) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(post_make(11, 10, 30));
    sz_transfer_t transfer = post_make(11, 10, 40);
    transfer.user_data_128 = 5;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_pending_id_for_a_post_retry) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(pending_make(20, ACCOUNT_A, ACCOUNT_B, 100, 0));
    transfer_create_ok(post_make(11, 10, 0));
    sz_transfer_t transfer = post_make(11, 20, 0);
    transfer.user_data_128 = 5;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_PENDING_ID);
    balances_assert(ACCOUNT_A, 100, 100, 0, 0);
    ledger_verify_assert();
}

/* The pending transfer with user data 7/8/9 and its post 11 that inherited them. */
static void post_with_inherited_user_data(void) {
    sz_transfer_t pending = pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0);
    pending.user_data_128 = 7;
    pending.user_data_64 = 8;
    pending.user_data_32 = 9;
    transfer_create_ok(pending);
    transfer_create_ok(post_make(11, 10, 0));
}

Test(create_transfers, a_post_retry_with_user_data_zero_or_the_inherited_value_gets_exists) {
    post_with_inherited_user_data();
    transfer_rejected_assert(post_make(11, 10, 0), SZ_CREATE_TRANSFER_EXISTS);
    sz_transfer_t transfer = post_make(11, 10, 0);
    transfer.user_data_128 = 7;
    transfer.user_data_64 = 8;
    transfer.user_data_32 = 9;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_user_data_128_for_a_post_retry) {
    post_with_inherited_user_data();
    sz_transfer_t transfer = post_make(11, 10, 0);
    transfer.user_data_128 = 70;
    transfer.user_data_64 = 80;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_128);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_user_data_64_for_a_post_retry) {
    post_with_inherited_user_data();
    sz_transfer_t transfer = post_make(11, 10, 0);
    transfer.user_data_64 = 80;
    transfer.user_data_32 = 90;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_64);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_user_data_32_for_a_post_retry) {
    post_with_inherited_user_data();
    sz_transfer_t transfer = post_make(11, 10, 0);
    transfer.user_data_32 = 90;
    transfer_rejected_assert(transfer, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_32);
    ledger_verify_assert();
}

Test(create_transfers, user_data_zero_on_a_retry_means_the_pending_value_not_the_posted_one) {
    sz_transfer_t pending = pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 0);
    pending.user_data_128 = 7;
    transfer_create_ok(pending);
    sz_transfer_t post = post_make(11, 10, 0);
    post.user_data_128 = 5;
    transfer_create_ok(post);
    u128_assert_eq(transfer_lookup(11).user_data_128, 5, "user_data_128 from the request");
    transfer_rejected_assert(post, SZ_CREATE_TRANSFER_EXISTS);
    post.user_data_128 = 0;
    transfer_rejected_assert(post, SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_128);
    ledger_verify_assert();
}

/* ---- expiry (35) --------------------------------------------------------------------- */

/* Creates pending transfer 10 (A -> B, 100) with a timeout of one second and returns its
 * expiry time in ns. */
static uint64_t pending_with_one_second_timeout(void) {
    transfer_create_ok(pending_make(10, ACCOUNT_A, ACCOUNT_B, 100, 1));
    uint64_t expires_at = transfer_lookup(10).timestamp + NS_PER_S;
    cr_assert(sz_ledger_expiry_next(ledger) == expires_at);
    return expires_at;
}

Test(create_transfers, a_post_one_nanosecond_before_expiry_is_accepted) {
    uint64_t expires_at = pending_with_one_second_timeout();
    result_assert(transfer_create_one_at(post_make(11, 10, 0), expires_at - 1),
                  SZ_CREATE_TRANSFER_OK);
    balances_assert(ACCOUNT_A, 0, 100, 0, 0);
    cr_assert(transfer_lookup(11).timestamp == expires_at - 1);
    ledger_verify_assert();
}

Test(create_transfers, a_post_at_the_expiry_time_gets_expired_before_the_expiry_op_runs) {
    uint64_t expires_at = pending_with_one_second_timeout();
    result_assert(transfer_create_one_at(post_make(11, 10, 0), expires_at),
                  SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED);
    cr_assert(!transfer_exists(11), "nothing of the failed post is stored");
    balances_assert(ACCOUNT_A, 100, 0, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 100, 0);
    transfer_rejected_assert(void_make(11, 10, 0), SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED);
    ledger_verify_assert();
}

Test(create_transfers, the_expiry_op_releases_pending_balances_at_and_not_before_the_expiry) {
    uint64_t expires_at = pending_with_one_second_timeout();
    sz_u128 ids[SZ_EXPIRE_EVENTS_MAX];
    uint32_t expired_count = UINT32_MAX;
    cr_assert(sz_ledger_expire_pending(ledger, expires_at - 1, ids, &expired_count) ==
              SZ_BATCH_APPLIED);
    cr_assert(expired_count == 0, "expired %u before the expiry time", expired_count);
    balances_assert(ACCOUNT_A, 100, 0, 0, 0);
    cr_assert(sz_ledger_expire_pending(ledger, expires_at, ids, &expired_count) ==
              SZ_BATCH_APPLIED);
    cr_assert(expired_count == 1, "expired %u at the expiry time", expired_count);
    u128_assert_eq(ids[0], 10, "expired id");
    balances_assert(ACCOUNT_A, 0, 0, 0, 0);
    balances_assert(ACCOUNT_B, 0, 0, 0, 0);
    cr_assert(sz_ledger_expiry_next(ledger) == UINT64_MAX);
    transfer_rejected_assert(post_make(11, 10, 0), SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED);
    transfer_rejected_assert(void_make(11, 10, 0), SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED);
    ledger_verify_assert();
}

Test(create_transfers, already_posted_wins_over_expired) {
    uint64_t expires_at = pending_with_one_second_timeout();
    transfer_create_ok(post_make(11, 10, 0));
    result_assert(transfer_create_one_at(post_make(12, 10, 0), expires_at + 5),
                  SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED);
    uint32_t expired_count = UINT32_MAX;
    cr_assert(sz_ledger_expire_pending(ledger, expires_at + 10, NULL, &expired_count) ==
              SZ_BATCH_APPLIED);
    cr_assert(expired_count == 0, "a posted transfer never expires");
    balances_assert(ACCOUNT_A, 0, 100, 0, 0);
    ledger_verify_assert();
}

Test(create_transfers, already_voided_wins_over_expired) {
    uint64_t expires_at = pending_with_one_second_timeout();
    transfer_create_ok(void_make(11, 10, 0));
    result_assert(transfer_create_one_at(post_make(12, 10, 0), expires_at + 5),
                  SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED);
    ledger_verify_assert();
}

Test(create_transfers, a_retried_post_after_the_expiry_time_gets_exists) {
    uint64_t expires_at = pending_with_one_second_timeout();
    transfer_create_ok(post_make(11, 10, 0));
    result_assert(transfer_create_one_at(post_make(11, 10, 0), expires_at + 5),
                  SZ_CREATE_TRANSFER_EXISTS);
    ledger_verify_assert();
}

Test(create_transfers, exists_with_different_amount_wins_over_expired) {
    uint64_t expires_at = pending_with_one_second_timeout();
    transfer_create_ok(post_make(11, 10, 30));
    result_assert(transfer_create_one_at(post_make(11, 10, 40), expires_at + 5),
                  SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT);
    ledger_verify_assert();
}
