/* records.h: the ledger's records, flags, operations and result codes, exactly as
 * ../shared/SEMANTICS.md lays them out. These layouts travel on the wire, in the journal
 * and in snapshots, so every one is pinned with static_assert and never changes; new
 * codes and flags get new numbers.
 * Contract: plain data; the name functions return static strings (or "unknown") and are
 * safe from any thread. */
#ifndef SZ_RECORDS_H
#define SZ_RECORDS_H

#include <assert.h>

#include "base.h"

/* A request carries at most this many events (8190 x 128 bytes is just under 1 MiB with
 * the header). */
#define SZ_BATCH_EVENTS_MAX 8190u

typedef struct sz_account {
    sz_u128 id;
    sz_u128 debits_pending;
    sz_u128 debits_posted;
    sz_u128 credits_pending;
    sz_u128 credits_posted;
    sz_u128 user_data_128;
    uint64_t user_data_64;
    uint32_t user_data_32;
    uint32_t reserved;
    uint32_t ledger;
    uint16_t code;
    uint16_t flags;
    uint64_t timestamp;
} sz_account_t;

typedef struct sz_transfer {
    sz_u128 id;
    sz_u128 debit_account_id;
    sz_u128 credit_account_id;
    sz_u128 amount;
    sz_u128 pending_id;
    sz_u128 user_data_128;
    uint64_t user_data_64;
    uint32_t user_data_32;
    uint32_t timeout;
    uint32_t ledger;
    uint16_t code;
    uint16_t flags;
    uint64_t timestamp;
} sz_transfer_t;

typedef struct sz_account_balance {
    sz_u128 debits_pending;
    sz_u128 debits_posted;
    sz_u128 credits_pending;
    sz_u128 credits_posted;
    uint64_t timestamp;
    uint8_t reserved[56];
} sz_account_balance_t;

typedef struct sz_account_filter {
    sz_u128 account_id;
    uint64_t timestamp_min;
    uint64_t timestamp_max;
    uint32_t limit;
    uint32_t flags;
    uint8_t reserved[24];
} sz_account_filter_t;

/* The result of one create event that was not ok. */
typedef struct sz_create_result {
    uint32_t index;
    uint32_t result;
} sz_create_result_t;

static_assert(sizeof(sz_account_t) == 128, "account is 128 bytes on the wire");
static_assert(offsetof(sz_account_t, user_data_128) == 80, "account layout");
static_assert(offsetof(sz_account_t, user_data_64) == 96, "account layout");
static_assert(offsetof(sz_account_t, reserved) == 108, "account layout");
static_assert(offsetof(sz_account_t, ledger) == 112, "account layout");
static_assert(offsetof(sz_account_t, code) == 116, "account layout");
static_assert(offsetof(sz_account_t, flags) == 118, "account layout");
static_assert(offsetof(sz_account_t, timestamp) == 120, "account layout");
static_assert(sizeof(sz_transfer_t) == 128, "transfer is 128 bytes on the wire");
static_assert(offsetof(sz_transfer_t, amount) == 48, "transfer layout");
static_assert(offsetof(sz_transfer_t, pending_id) == 64, "transfer layout");
static_assert(offsetof(sz_transfer_t, user_data_64) == 96, "transfer layout");
static_assert(offsetof(sz_transfer_t, timeout) == 108, "transfer layout");
static_assert(offsetof(sz_transfer_t, ledger) == 112, "transfer layout");
static_assert(offsetof(sz_transfer_t, code) == 116, "transfer layout");
static_assert(offsetof(sz_transfer_t, flags) == 118, "transfer layout");
static_assert(offsetof(sz_transfer_t, timestamp) == 120, "transfer layout");
static_assert(sizeof(sz_account_balance_t) == 128, "account balance is 128 bytes");
static_assert(offsetof(sz_account_balance_t, timestamp) == 64, "account balance layout");
static_assert(sizeof(sz_account_filter_t) == 64, "account filter is 64 bytes");
static_assert(offsetof(sz_account_filter_t, limit) == 32, "account filter layout");
static_assert(offsetof(sz_account_filter_t, flags) == 36, "account filter layout");
static_assert(sizeof(sz_create_result_t) == 8, "create result is 8 bytes");

/* Account flags. */
enum {
    SZ_ACCOUNT_LINKED = 1u << 0,
    SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS = 1u << 1,
    SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS = 1u << 2,
    SZ_ACCOUNT_HISTORY = 1u << 3,
    SZ_ACCOUNT_FLAGS_KNOWN = (1u << 4) - 1,
};

/* Transfer flags. */
enum {
    SZ_TRANSFER_LINKED = 1u << 0,
    SZ_TRANSFER_PENDING = 1u << 1,
    SZ_TRANSFER_POST_PENDING = 1u << 2,
    SZ_TRANSFER_VOID_PENDING = 1u << 3,
    SZ_TRANSFER_BALANCING_DEBIT = 1u << 4,
    SZ_TRANSFER_BALANCING_CREDIT = 1u << 5,
    SZ_TRANSFER_FLAGS_KNOWN = (1u << 6) - 1,
};

/* Account filter flags. */
enum {
    SZ_FILTER_DEBITS = 1u << 0,
    SZ_FILTER_CREDITS = 1u << 1,
    SZ_FILTER_REVERSED = 1u << 2,
    SZ_FILTER_FLAGS_KNOWN = (1u << 3) - 1,
};

/* Operations: the numbers are part of the wire protocol and the journal. */
typedef enum sz_operation {
    SZ_OPERATION_CREATE_ACCOUNTS = 1,
    SZ_OPERATION_CREATE_TRANSFERS = 2,
    SZ_OPERATION_LOOKUP_ACCOUNTS = 3,
    SZ_OPERATION_LOOKUP_TRANSFERS = 4,
    SZ_OPERATION_GET_ACCOUNT_TRANSFERS = 5,
    SZ_OPERATION_GET_ACCOUNT_BALANCES = 6,
    /* Internal: decided and journaled by the leader, never accepted from a client. */
    SZ_OPERATION_EXPIRE_PENDING = 64,
} sz_operation_t;

#define SZ_CREATE_ACCOUNT_RESULTS(X)                                                   \
    X(OK, ok, 0)                                                                        \
    X(LINKED_EVENT_FAILED, linked_event_failed, 1)                                      \
    X(LINKED_EVENT_CHAIN_OPEN, linked_event_chain_open, 2)                              \
    X(TIMESTAMP_MUST_BE_ZERO, timestamp_must_be_zero, 3)                                \
    X(RESERVED_FIELD, reserved_field, 4)                                                \
    X(RESERVED_FLAG, reserved_flag, 5)                                                  \
    X(ID_MUST_NOT_BE_ZERO, id_must_not_be_zero, 6)                                      \
    X(ID_MUST_NOT_BE_INT_MAX, id_must_not_be_int_max, 7)                                \
    X(FLAGS_ARE_MUTUALLY_EXCLUSIVE, flags_are_mutually_exclusive, 8)                    \
    X(DEBITS_PENDING_MUST_BE_ZERO, debits_pending_must_be_zero, 9)                      \
    X(DEBITS_POSTED_MUST_BE_ZERO, debits_posted_must_be_zero, 10)                       \
    X(CREDITS_PENDING_MUST_BE_ZERO, credits_pending_must_be_zero, 11)                   \
    X(CREDITS_POSTED_MUST_BE_ZERO, credits_posted_must_be_zero, 12)                     \
    X(LEDGER_MUST_NOT_BE_ZERO, ledger_must_not_be_zero, 13)                             \
    X(CODE_MUST_NOT_BE_ZERO, code_must_not_be_zero, 14)                                 \
    X(EXISTS_WITH_DIFFERENT_FLAGS, exists_with_different_flags, 15)                     \
    X(EXISTS_WITH_DIFFERENT_USER_DATA_128, exists_with_different_user_data_128, 16)     \
    X(EXISTS_WITH_DIFFERENT_USER_DATA_64, exists_with_different_user_data_64, 17)       \
    X(EXISTS_WITH_DIFFERENT_USER_DATA_32, exists_with_different_user_data_32, 18)       \
    X(EXISTS_WITH_DIFFERENT_LEDGER, exists_with_different_ledger, 19)                   \
    X(EXISTS_WITH_DIFFERENT_CODE, exists_with_different_code, 20)                       \
    X(EXISTS, exists, 21)

#define SZ_CREATE_TRANSFER_RESULTS(X)                                                  \
    X(OK, ok, 0)                                                                        \
    X(LINKED_EVENT_FAILED, linked_event_failed, 1)                                      \
    X(LINKED_EVENT_CHAIN_OPEN, linked_event_chain_open, 2)                              \
    X(TIMESTAMP_MUST_BE_ZERO, timestamp_must_be_zero, 3)                                \
    X(RESERVED_FLAG, reserved_flag, 4)                                                  \
    X(ID_MUST_NOT_BE_ZERO, id_must_not_be_zero, 5)                                      \
    X(ID_MUST_NOT_BE_INT_MAX, id_must_not_be_int_max, 6)                                \
    X(FLAGS_ARE_MUTUALLY_EXCLUSIVE, flags_are_mutually_exclusive, 7)                    \
    X(DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO, debit_account_id_must_not_be_zero, 8)          \
    X(DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX, debit_account_id_must_not_be_int_max, 9)    \
    X(CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO, credit_account_id_must_not_be_zero, 10)       \
    X(CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX, credit_account_id_must_not_be_int_max, 11) \
    X(ACCOUNTS_MUST_BE_DIFFERENT, accounts_must_be_different, 12)                       \
    X(PENDING_ID_MUST_BE_ZERO, pending_id_must_be_zero, 13)                             \
    X(PENDING_ID_MUST_NOT_BE_ZERO, pending_id_must_not_be_zero, 14)                     \
    X(PENDING_ID_MUST_NOT_BE_INT_MAX, pending_id_must_not_be_int_max, 15)               \
    X(PENDING_ID_MUST_BE_DIFFERENT, pending_id_must_be_different, 16)                   \
    X(TIMEOUT_RESERVED_FOR_PENDING_TRANSFER, timeout_reserved_for_pending_transfer, 17) \
    X(AMOUNT_MUST_NOT_BE_ZERO, amount_must_not_be_zero, 18)                             \
    X(LEDGER_MUST_NOT_BE_ZERO, ledger_must_not_be_zero, 19)                             \
    X(CODE_MUST_NOT_BE_ZERO, code_must_not_be_zero, 20)                                 \
    X(DEBIT_ACCOUNT_NOT_FOUND, debit_account_not_found, 21)                             \
    X(CREDIT_ACCOUNT_NOT_FOUND, credit_account_not_found, 22)                           \
    X(ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER, accounts_must_have_the_same_ledger, 23)       \
    X(TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS,                                   \
      transfer_must_have_the_same_ledger_as_accounts, 24)                               \
    X(PENDING_TRANSFER_NOT_FOUND, pending_transfer_not_found, 25)                       \
    X(PENDING_TRANSFER_NOT_PENDING, pending_transfer_not_pending, 26)                   \
    X(PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID,                                  \
      pending_transfer_has_different_debit_account_id, 27)                              \
    X(PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID,                                 \
      pending_transfer_has_different_credit_account_id, 28)                             \
    X(PENDING_TRANSFER_HAS_DIFFERENT_LEDGER, pending_transfer_has_different_ledger, 29) \
    X(PENDING_TRANSFER_HAS_DIFFERENT_CODE, pending_transfer_has_different_code, 30)     \
    X(EXCEEDS_PENDING_TRANSFER_AMOUNT, exceeds_pending_transfer_amount, 31)             \
    X(PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT, pending_transfer_has_different_amount, 32) \
    X(PENDING_TRANSFER_ALREADY_POSTED, pending_transfer_already_posted, 33)             \
    X(PENDING_TRANSFER_ALREADY_VOIDED, pending_transfer_already_voided, 34)             \
    X(PENDING_TRANSFER_EXPIRED, pending_transfer_expired, 35)                           \
    X(EXISTS_WITH_DIFFERENT_FLAGS, exists_with_different_flags, 36)                     \
    X(EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID, exists_with_different_debit_account_id, 37) \
    X(EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID, exists_with_different_credit_account_id, 38) \
    X(EXISTS_WITH_DIFFERENT_AMOUNT, exists_with_different_amount, 39)                   \
    X(EXISTS_WITH_DIFFERENT_PENDING_ID, exists_with_different_pending_id, 40)           \
    X(EXISTS_WITH_DIFFERENT_USER_DATA_128, exists_with_different_user_data_128, 41)     \
    X(EXISTS_WITH_DIFFERENT_USER_DATA_64, exists_with_different_user_data_64, 42)       \
    X(EXISTS_WITH_DIFFERENT_USER_DATA_32, exists_with_different_user_data_32, 43)       \
    X(EXISTS_WITH_DIFFERENT_TIMEOUT, exists_with_different_timeout, 44)                 \
    X(EXISTS_WITH_DIFFERENT_CODE, exists_with_different_code, 45)                       \
    X(EXISTS, exists, 46)                                                               \
    X(OVERFLOWS_DEBITS_PENDING, overflows_debits_pending, 47)                           \
    X(OVERFLOWS_CREDITS_PENDING, overflows_credits_pending, 48)                         \
    X(OVERFLOWS_DEBITS_POSTED, overflows_debits_posted, 49)                             \
    X(OVERFLOWS_CREDITS_POSTED, overflows_credits_posted, 50)                           \
    X(OVERFLOWS_DEBITS, overflows_debits, 51)                                           \
    X(OVERFLOWS_CREDITS, overflows_credits, 52)                                         \
    X(OVERFLOWS_TIMEOUT, overflows_timeout, 53)                                         \
    X(EXCEEDS_CREDITS, exceeds_credits, 54)                                             \
    X(EXCEEDS_DEBITS, exceeds_debits, 55)

#define SZ_RESULT_ENUM_ACCOUNT(upper, lower, number) SZ_CREATE_ACCOUNT_##upper = number,
#define SZ_RESULT_ENUM_TRANSFER(upper, lower, number) SZ_CREATE_TRANSFER_##upper = number,
typedef enum sz_create_account_result {
    SZ_CREATE_ACCOUNT_RESULTS(SZ_RESULT_ENUM_ACCOUNT) SZ_CREATE_ACCOUNT_RESULT_COUNT
} sz_create_account_result_t;
typedef enum sz_create_transfer_result {
    SZ_CREATE_TRANSFER_RESULTS(SZ_RESULT_ENUM_TRANSFER) SZ_CREATE_TRANSFER_RESULT_COUNT
} sz_create_transfer_result_t;
#undef SZ_RESULT_ENUM_ACCOUNT
#undef SZ_RESULT_ENUM_TRANSFER

static_assert(SZ_CREATE_ACCOUNT_RESULT_COUNT == 22, "create_accounts results 0..21");
static_assert(SZ_CREATE_TRANSFER_RESULT_COUNT == 56, "create_transfers results 0..55");

/* "ok", "exists", ...; "unknown" for a number that has no name. */
const char *sz_create_account_result_name(uint32_t result);
const char *sz_create_transfer_result_name(uint32_t result);
/* "create_accounts", ...; "unknown" for a number that has no name. */
const char *sz_operation_name(uint32_t operation);

#endif
