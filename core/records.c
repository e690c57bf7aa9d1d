/* records.c: names of result codes and operations, the u128 decimal formatter and
 * parser, and the always-on assertion's failure path. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "records.h"

void sz_assert_fail(const char *expression, const char *file, int line) {
    fprintf(stderr, "level=fatal msg=assert_failed expr=\"%s\" file=%s line=%d\n", expression,
            file, line);
    fflush(stderr);
    abort();
}

#define RESULT_NAME(upper, lower, number) [number] = #lower,
static const char *const create_account_result_names[] = {
    SZ_CREATE_ACCOUNT_RESULTS(RESULT_NAME)};
static const char *const create_transfer_result_names[] = {
    SZ_CREATE_TRANSFER_RESULTS(RESULT_NAME)};
#undef RESULT_NAME

const char *sz_create_account_result_name(uint32_t result) {
    if (result >= SZ_CREATE_ACCOUNT_RESULT_COUNT) return "unknown";
    return create_account_result_names[result];
}

const char *sz_create_transfer_result_name(uint32_t result) {
    if (result >= SZ_CREATE_TRANSFER_RESULT_COUNT) return "unknown";
    return create_transfer_result_names[result];
}

const char *sz_operation_name(uint32_t operation) {
    switch (operation) {
    case SZ_OPERATION_CREATE_ACCOUNTS: return "create_accounts";
    case SZ_OPERATION_CREATE_TRANSFERS: return "create_transfers";
    case SZ_OPERATION_LOOKUP_ACCOUNTS: return "lookup_accounts";
    case SZ_OPERATION_LOOKUP_TRANSFERS: return "lookup_transfers";
    case SZ_OPERATION_GET_ACCOUNT_TRANSFERS: return "get_account_transfers";
    case SZ_OPERATION_GET_ACCOUNT_BALANCES: return "get_account_balances";
    case SZ_OPERATION_EXPIRE_PENDING: return "expire_pending";
    default: return "unknown";
    }
}

char *sz_u128_format(sz_u128 value, char *buffer) {
    char digits[SZ_U128_DECIMAL_SIZE];
    size_t digit_count = 0;
    do {
        SZ_ASSERT(digit_count < SZ_U128_DECIMAL_SIZE - 1);
        digits[digit_count++] = (char)('0' + (int)(value % 10));
        value /= 10;
    } while (value != 0);
    for (size_t index = 0; index < digit_count; index++) {
        buffer[index] = digits[digit_count - 1 - index];
    }
    buffer[digit_count] = '\0';
    return buffer;
}

int sz_u128_parse(const char *text, sz_u128 *value_out) {
    if (text == NULL || text[0] == '\0') return -EINVAL;
    unsigned base = 10;
    if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        base = 16;
        text += 2;
        if (text[0] == '\0') return -EINVAL;
    }
    sz_u128 value = 0;
    for (const char *cursor = text; *cursor != '\0'; cursor++) {
        unsigned digit;
        char c = *cursor;
        if (c >= '0' && c <= '9') {
            digit = (unsigned)(c - '0');
        } else if (base == 16 && c >= 'a' && c <= 'f') {
            digit = (unsigned)(c - 'a' + 10);
        } else if (base == 16 && c >= 'A' && c <= 'F') {
            digit = (unsigned)(c - 'A' + 10);
        } else {
            return -EINVAL;
        }
        sz_u128 next;
        if (__builtin_mul_overflow(value, (sz_u128)base, &next)) return -EINVAL;
        if (__builtin_add_overflow(next, (sz_u128)digit, &next)) return -EINVAL;
        value = next;
    }
    *value_out = value;
    return 0;
}
