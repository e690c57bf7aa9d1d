/* scenario.h: helpers for the scenario tests of core/ledger (test_linked, test_two_phase,
 * test_balancing, test_queries). One ledger per test (Criterion runs each test in its own
 * process), record builders with the defaults every scenario uses (ledger 1, code 1), batch
 * runners that insist the batch applied and compare every event's result, and lookups that
 * fail the test with the id in the message.
 * Everything is static inline so a test file that uses part of it builds warning-free. */
#ifndef SZ_TESTS_CORE_SCENARIO_H
#define SZ_TESTS_CORE_SCENARIO_H

#include <criterion/criterion.h>
#include <string.h>

#include "core/ledger.h"

#define SCENARIO_LEDGER 1u
#define SCENARIO_CODE 1u
/* The wall clock the scenarios pretend to read (November 2023), so timestamps look real and
 * every timestamp arithmetic in a test is far from 0 and from UINT64_MAX. */
#define SCENARIO_CLOCK_NS UINT64_C(1700000000000000000)
#define SCENARIO_NS_PER_S UINT64_C(1000000000)
/* Rows a query in these tests may return: more than any scenario creates. */
#define SCENARIO_ROWS_MAX 64u

static sz_ledger_t *scenario_ledger;
/* Room for the results of the largest batch the ledger accepts, and one more event so a
 * refused oversize batch cannot write past the end. */
static sz_create_result_t scenario_results[SZ_BATCH_EVENTS_MAX + 1];
static sz_u128 scenario_expired_ids[SZ_EXPIRE_EVENTS_MAX];

/* Decimal text of a u128 for failure messages; four rotating buffers so one message can
 * hold several. */
static inline const char *u128_text(sz_u128 value) {
    static char buffers[4][SZ_U128_DECIMAL_SIZE];
    static unsigned next;
    next = (next + 1) % 4;
    return sz_u128_format(value, buffers[next]);
}

#define assert_u128_eq(actual, expected)                                                  \
    do {                                                                                  \
        sz_u128 actual_value_ = (actual);                                                 \
        sz_u128 expected_value_ = (expected);                                             \
        if (actual_value_ != expected_value_) {                                           \
            cr_assert_fail("%s is %s, expected %s (%s)", #actual, u128_text(actual_value_), \
                           u128_text(expected_value_), #expected);                        \
        }                                                                                 \
    } while (0)

static inline sz_ledger_config_t scenario_config_default(void) {
    sz_ledger_config_t config = {
        .accounts_max = 256,
        .transfers_max = 1024,
        .pending_max = 1024,
        .history_max = 4096,
        .hash_seed = UINT64_C(0x5eed5eed5eed5eed),
    };
    return config;
}

static inline void scenario_open(const sz_ledger_config_t *config) {
    int rc = sz_ledger_init(config, &scenario_ledger);
    cr_assert_eq(rc, 0, "sz_ledger_init returned %d", rc);
    cr_assert_not_null(scenario_ledger, "sz_ledger_init gave no ledger");
}

static inline void scenario_setup(void) {
    sz_ledger_config_t config = scenario_config_default();
    scenario_open(&config);
}

static inline void scenario_teardown(void) {
    if (scenario_ledger != NULL) sz_ledger_deinit(scenario_ledger);
    scenario_ledger = NULL;
}

static inline sz_account_t account_make(sz_u128 id, uint16_t flags) {
    sz_account_t account;
    memset(&account, 0, sizeof(account));
    account.id = id;
    account.ledger = SCENARIO_LEDGER;
    account.code = SCENARIO_CODE;
    account.flags = flags;
    return account;
}

static inline sz_transfer_t transfer_plain(sz_u128 id, sz_u128 debit_account_id,
                                           sz_u128 credit_account_id, sz_u128 amount) {
    sz_transfer_t transfer;
    memset(&transfer, 0, sizeof(transfer));
    transfer.id = id;
    transfer.debit_account_id = debit_account_id;
    transfer.credit_account_id = credit_account_id;
    transfer.amount = amount;
    transfer.ledger = SCENARIO_LEDGER;
    transfer.code = SCENARIO_CODE;
    return transfer;
}

static inline sz_transfer_t transfer_pending(sz_u128 id, sz_u128 debit_account_id,
                                             sz_u128 credit_account_id, sz_u128 amount,
                                             uint32_t timeout) {
    sz_transfer_t transfer = transfer_plain(id, debit_account_id, credit_account_id, amount);
    transfer.flags = SZ_TRANSFER_PENDING;
    transfer.timeout = timeout;
    return transfer;
}

/* A post or void that names only the pending transfer: accounts, ledger and code 0 are
 * inherited from it. amount 0 means the pending amount. */
static inline sz_transfer_t transfer_resolve(sz_u128 id, sz_u128 pending_id, sz_u128 amount,
                                             uint16_t flags) {
    sz_transfer_t transfer;
    memset(&transfer, 0, sizeof(transfer));
    transfer.id = id;
    transfer.pending_id = pending_id;
    transfer.amount = amount;
    transfer.flags = flags;
    return transfer;
}

static inline sz_transfer_t transfer_post(sz_u128 id, sz_u128 pending_id, sz_u128 amount) {
    return transfer_resolve(id, pending_id, amount, SZ_TRANSFER_POST_PENDING);
}

static inline sz_transfer_t transfer_void(sz_u128 id, sz_u128 pending_id) {
    return transfer_resolve(id, pending_id, 0, SZ_TRANSFER_VOID_PENDING);
}

static inline sz_transfer_t transfer_linked(sz_transfer_t transfer) {
    transfer.flags |= SZ_TRANSFER_LINKED;
    return transfer;
}

static inline sz_account_t account_linked(sz_account_t account) {
    account.flags |= SZ_ACCOUNT_LINKED;
    return account;
}

/* Turns the sparse result list into one result per event and compares it with expected
 * (NULL: every event ok). Also checks the list's own shape: ascending indexes, in range,
 * never an explicit ok. */
static inline void results_expect(const sz_create_result_t *results, uint32_t result_count,
                                  uint32_t event_count, const uint32_t *expected,
                                  const char *(*result_name)(uint32_t)) {
    cr_assert_leq(result_count, event_count, "%u results for %u events", result_count,
                  event_count);
    uint32_t result_index = 0;
    for (uint32_t event_index = 0; event_index < event_count; event_index++) {
        uint32_t actual = 0;
        if (result_index < result_count && results[result_index].index == event_index) {
            actual = results[result_index].result;
            cr_assert_neq(actual, 0u, "event %u is listed with result ok", event_index);
            result_index++;
        }
        uint32_t wanted = expected == NULL ? 0u : expected[event_index];
        cr_assert_eq(actual, wanted, "event %u: got %s (%u), expected %s (%u)", event_index,
                     result_name(actual), actual, result_name(wanted), wanted);
    }
    cr_assert_eq(result_index, result_count,
                 "result list is not ascending or names an index past the batch");
}

/* The T the leader would give the next create batch with the scenario clock. */
static inline uint64_t scenario_timestamp_next(void) {
    return sz_ledger_timestamp_next(scenario_ledger, SCENARIO_CLOCK_NS);
}

/* Applies a create_accounts batch at the next timestamp; returns its T. */
static inline uint64_t accounts_create_expect(const sz_account_t *events, uint32_t event_count,
                                              const uint32_t *expected) {
    uint64_t timestamp = scenario_timestamp_next();
    uint32_t result_count = UINT32_MAX;
    sz_batch_status_t status = sz_ledger_create_accounts(
        scenario_ledger, events, event_count, timestamp, scenario_results, &result_count);
    cr_assert_eq(status, SZ_BATCH_APPLIED, "create_accounts batch refused: %s",
                 sz_batch_status_name(status));
    results_expect(scenario_results, result_count, event_count, expected,
                   sz_create_account_result_name);
    return timestamp;
}

static inline uint64_t accounts_create_ok(const sz_account_t *events, uint32_t event_count) {
    return accounts_create_expect(events, event_count, NULL);
}

/* Applies a create_transfers batch at the given T (event i gets T + i). */
static inline void transfers_create_expect_at(const sz_transfer_t *events, uint32_t event_count,
                                              uint64_t timestamp, const uint32_t *expected) {
    uint32_t result_count = UINT32_MAX;
    sz_batch_status_t status = sz_ledger_create_transfers(
        scenario_ledger, events, event_count, timestamp, scenario_results, &result_count);
    cr_assert_eq(status, SZ_BATCH_APPLIED, "create_transfers batch refused: %s",
                 sz_batch_status_name(status));
    results_expect(scenario_results, result_count, event_count, expected,
                   sz_create_transfer_result_name);
}

/* Applies a create_transfers batch at the next timestamp; returns its T. */
static inline uint64_t transfers_create_expect(const sz_transfer_t *events, uint32_t event_count,
                                               const uint32_t *expected) {
    uint64_t timestamp = scenario_timestamp_next();
    transfers_create_expect_at(events, event_count, timestamp, expected);
    return timestamp;
}

static inline uint64_t transfers_create_ok(const sz_transfer_t *events, uint32_t event_count) {
    return transfers_create_expect(events, event_count, NULL);
}

/* One transfer alone in its batch; returns its timestamp. */
static inline uint64_t transfer_create_one(sz_transfer_t transfer, uint32_t expected) {
    return transfers_create_expect(&transfer, 1, &expected);
}

/* Runs an expire op at timestamp; returns how many pending transfers it expired (their ids
 * are in scenario_expired_ids). */
static inline uint32_t expire_at(uint64_t timestamp) {
    uint32_t expired_count = UINT32_MAX;
    sz_batch_status_t status = sz_ledger_expire_pending(scenario_ledger, timestamp,
                                                        scenario_expired_ids, &expired_count);
    cr_assert_eq(status, SZ_BATCH_APPLIED, "expire op refused: %s",
                 sz_batch_status_name(status));
    cr_assert_leq(expired_count, SZ_EXPIRE_EVENTS_MAX, "expired_count %u", expired_count);
    return expired_count;
}

static inline bool account_exists(sz_u128 id) {
    sz_account_t account;
    return sz_ledger_lookup_accounts(scenario_ledger, &id, 1, &account) == 1;
}

static inline sz_account_t account_lookup(sz_u128 id) {
    sz_account_t account;
    memset(&account, 0, sizeof(account));
    uint32_t count = sz_ledger_lookup_accounts(scenario_ledger, &id, 1, &account);
    cr_assert_eq(count, 1u, "account %s not found", u128_text(id));
    assert_u128_eq(account.id, id);
    return account;
}

static inline bool transfer_exists(sz_u128 id) {
    sz_transfer_t transfer;
    return sz_ledger_lookup_transfers(scenario_ledger, &id, 1, &transfer) == 1;
}

static inline sz_transfer_t transfer_lookup(sz_u128 id) {
    sz_transfer_t transfer;
    memset(&transfer, 0, sizeof(transfer));
    uint32_t count = sz_ledger_lookup_transfers(scenario_ledger, &id, 1, &transfer);
    cr_assert_eq(count, 1u, "transfer %s not found", u128_text(id));
    assert_u128_eq(transfer.id, id);
    return transfer;
}

/* Checks all four balances of an account (looked up as a client would). */
static inline void balances_expect(sz_u128 id, sz_u128 debits_pending, sz_u128 debits_posted,
                                   sz_u128 credits_pending, sz_u128 credits_posted) {
    sz_account_t account = account_lookup(id);
    cr_assert(account.debits_pending == debits_pending,
              "account %s debits_pending %s, expected %s", u128_text(id),
              u128_text(account.debits_pending), u128_text(debits_pending));
    cr_assert(account.debits_posted == debits_posted, "account %s debits_posted %s, expected %s",
              u128_text(id), u128_text(account.debits_posted), u128_text(debits_posted));
    cr_assert(account.credits_pending == credits_pending,
              "account %s credits_pending %s, expected %s", u128_text(id),
              u128_text(account.credits_pending), u128_text(credits_pending));
    cr_assert(account.credits_posted == credits_posted,
              "account %s credits_posted %s, expected %s", u128_text(id),
              u128_text(account.credits_posted), u128_text(credits_posted));
}

/* A valid filter over every transfer of the account, ascending. */
static inline sz_account_filter_t filter_make(sz_u128 account_id, uint32_t flags) {
    sz_account_filter_t filter;
    memset(&filter, 0, sizeof(filter));
    filter.account_id = account_id;
    filter.limit = SCENARIO_ROWS_MAX;
    filter.flags = flags;
    return filter;
}

static inline uint32_t history_row_count(sz_u128 account_id) {
    sz_account_balance_t rows[SCENARIO_ROWS_MAX];
    sz_account_filter_t filter = filter_make(account_id, SZ_FILTER_DEBITS | SZ_FILTER_CREDITS);
    return sz_ledger_get_account_balances(scenario_ledger, &filter, SCENARIO_ROWS_MAX, rows);
}

#endif
