/* test_records.c: proves the small shared pieces of core/: every result code has its
 * SEMANTICS.md name at its number, and the u128 formatter and parser round-trip at the
 * edges (0, 2^64, 2^128-1) and reject what is not a number. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "core/records.h"

Test(records, result_names_follow_the_numbering_of_semantics) {
    cr_assert_str_eq(sz_create_account_result_name(0), "ok");
    cr_assert_str_eq(sz_create_account_result_name(15), "exists_with_different_flags");
    cr_assert_str_eq(sz_create_account_result_name(21), "exists");
    cr_assert_str_eq(sz_create_account_result_name(22), "unknown");
    cr_assert_str_eq(sz_create_transfer_result_name(24),
                     "transfer_must_have_the_same_ledger_as_accounts");
    cr_assert_str_eq(sz_create_transfer_result_name(46), "exists");
    cr_assert_str_eq(sz_create_transfer_result_name(55), "exceeds_debits");
    cr_assert_str_eq(sz_create_transfer_result_name(56), "unknown");
    for (uint32_t result = 0; result < SZ_CREATE_TRANSFER_RESULT_COUNT; result++) {
        cr_assert_str_neq(sz_create_transfer_result_name(result), "unknown", "code %u", result);
    }
    cr_assert_str_eq(sz_operation_name(SZ_OPERATION_CREATE_TRANSFERS), "create_transfers");
    cr_assert_str_eq(sz_operation_name(99), "unknown");
}

Test(records, u128_formats_and_parses_at_the_edges) {
    char buffer[SZ_U128_DECIMAL_SIZE];
    cr_assert_str_eq(sz_u128_format(0, buffer), "0");
    cr_assert_str_eq(sz_u128_format((sz_u128)1 << 64, buffer), "18446744073709551616");
    cr_assert_str_eq(sz_u128_format(SZ_U128_MAX, buffer),
                     "340282366920938463463374607431768211455");
    sz_u128 value = 1;
    cr_assert_eq(sz_u128_parse("340282366920938463463374607431768211455", &value), 0);
    cr_assert(value == SZ_U128_MAX);
    cr_assert_eq(sz_u128_parse("0x10", &value), 0);
    cr_assert(value == 16);
    cr_assert_eq(sz_u128_parse("340282366920938463463374607431768211456", &value), -EINVAL);
    cr_assert_eq(sz_u128_parse("", &value), -EINVAL);
    cr_assert_eq(sz_u128_parse("12a", &value), -EINVAL);
    cr_assert_eq(sz_u128_parse("0x", &value), -EINVAL);
}
