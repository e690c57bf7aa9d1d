/* base.h: the few things every sumzero module shares: the u128 type, always-on
 * assertions, branch hints, and the u128 decimal formatter and parser.
 * Contract: header-only except sz_u128_format()/sz_u128_parse() (core/records.c) and
 * sz_assert_fail() (core/records.c); safe from any thread; nothing allocates. */
#ifndef SZ_BASE_H
#define SZ_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

__extension__ typedef unsigned __int128 sz_u128;

#define SZ_U128_MAX (~(sz_u128)0)

/* Enough for 2^128-1 in decimal (39 digits) and the terminating zero. */
#define SZ_U128_DECIMAL_SIZE 40

#define sz_likely(x) __builtin_expect(!!(x), 1)
#define sz_unlikely(x) __builtin_expect(!!(x), 0)

/* Forced inlining: gcc 12 drops __builtin_prefetch in small helpers it chooses not to
 * inline, so every helper that prefetches must carry this. */
#define SZ_INLINE static inline __attribute__((always_inline))

#define SZ_MUST_USE __attribute__((warn_unused_result))

__attribute__((noreturn, cold)) void sz_assert_fail(const char *expression, const char *file,
                                                     int line);

/* Always on, release builds too: a broken invariant in a ledger must stop it, never go on
 * with wrong balances. Never used on outside input. */
#define SZ_ASSERT(x)                                                                    \
    do {                                                                                \
        if (sz_unlikely(!(x))) sz_assert_fail(#x, __FILE__, __LINE__);                  \
    } while (0)

/* Expensive checks (sums over every account, table scans): debug and CI builds only. */
#ifdef SZ_DEBUG_ASSERTIONS
#define SZ_ASSERT_DEBUG(x) SZ_ASSERT(x)
#else
#define SZ_ASSERT_DEBUG(x) ((void)sizeof(x))
#endif

/* Writes the decimal form of value into buffer (at least SZ_U128_DECIMAL_SIZE bytes) and
 * returns buffer. */
char *sz_u128_format(sz_u128 value, char *buffer);

/* Parses a decimal (or 0x-prefixed hexadecimal) u128 that fills the whole string.
 * Returns 0, or -EINVAL for an empty string, a stray character or an overflow. */
SZ_MUST_USE int sz_u128_parse(const char *text, sz_u128 *value_out);

#endif
