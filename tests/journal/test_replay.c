/* test_replay.c: replay determinism. A journal of accounts, transfers, pending
 * transfers with timeouts, posts, voids and expire ops is written through the journal,
 * then replayed twice (same digest), compared with the same ops applied directly (same
 * digest), and replayed up to an op and up to a timestamp (the digest of that prefix). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "journal/replay.h"
#include "ops.h"

#define OP_COUNT 400u

static uint64_t test_seed(void) {
    const char *text = getenv("SUMZERO_SEED");
    uint64_t seed = text ? strtoull(text, NULL, 0) : 7;
    printf("test_replay: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    return seed;
}

static sz_storage_t *journal_written(uint64_t seed, uint64_t op_count) {
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_fault_init(&storage), 0);
    sz_journal_format_options_t format = {.cluster_id = 3,
                                          .segment_size = SZ_JOURNAL_SEGMENT_SIZE_MIN};
    cr_assert_eq(sz_journal_format(storage, &format), 0);
    sz_journal_options_t options = {.in_flight_max = 3};
    sz_journal_t *journal = NULL;
    cr_assert_eq(sz_journal_open(storage, &options, &journal, NULL), 0);
    static uint8_t events[OPS_EVENTS_MAX * SZ_JOURNAL_EVENT_SIZE];
    for (uint64_t op = 1; op <= op_count; op++) {
        sz_journal_append_t entry;
        ops_generate(seed, op, &entry, events);
        int result = sz_journal_append(journal, &entry, events, NULL);
        while (result == -EAGAIN) {
            cr_assert_eq(sz_journal_poll(journal, true), 0);
            result = sz_journal_append(journal, &entry, events, NULL);
        }
        cr_assert_eq(result, 0);
        if (op % 5 == 0) cr_assert_eq(sz_journal_submit(journal), 0);
    }
    cr_assert_eq(sz_journal_flush(journal), 0);
    sz_journal_deinit(journal);
    sz_storage_fault_unlock(storage);
    return storage;
}

static sz_digest_t replay_digest(sz_storage_t *storage, sz_replay_options_t options,
                                 sz_replay_stats_t *stats) {
    sz_ledger_t *ledger = ops_ledger();
    sz_journal_problem_t problem;
    int result = sz_replay_run(storage, &options, ledger, stats, &problem);
    cr_assert_eq(result, 0, "%s", problem.reason);
    char message[256];
    cr_assert_eq(sz_ledger_verify(ledger, message, sizeof(message)), 0, "%s", message);
    sz_digest_t digest = sz_ledger_digest(ledger);
    sz_ledger_deinit(ledger);
    return digest;
}

static sz_digest_t direct_digest(uint64_t seed, uint64_t op_count) {
    sz_ledger_t *ledger = ops_ledger();
    for (uint64_t op = 1; op <= op_count; op++) ops_apply(ledger, seed, op);
    sz_digest_t digest = sz_ledger_digest(ledger);
    sz_ledger_deinit(ledger);
    return digest;
}

Test(replay, replaying_twice_gives_the_same_digest_as_applying_directly) {
    uint64_t seed = test_seed();
    sz_storage_t *storage = journal_written(seed, OP_COUNT);
    sz_replay_stats_t first_stats, second_stats;
    sz_digest_t first = replay_digest(storage, (sz_replay_options_t){0}, &first_stats);
    sz_digest_t second = replay_digest(storage, (sz_replay_options_t){0}, &second_stats);
    sz_digest_t direct = direct_digest(seed, OP_COUNT);
    cr_assert_eq(first_stats.op_count, OP_COUNT);
    cr_assert_gt(first_stats.expired_count, 0, "the workload expires pending transfers");
    cr_assert(first.low == second.low && first.high == second.high);
    cr_assert(first.low == direct.low && first.high == direct.high);
    sz_storage_deinit(storage);
}

Test(replay, until_op_and_until_timestamp_stop_at_that_point) {
    uint64_t seed = test_seed();
    sz_storage_t *storage = journal_written(seed, OP_COUNT);
    sz_replay_stats_t stats;
    sz_digest_t until_op = replay_digest(storage, (sz_replay_options_t){.until_op = 123}, &stats);
    cr_assert_eq(stats.op_last, 123);
    sz_digest_t direct = direct_digest(seed, 123);
    cr_assert(until_op.low == direct.low && until_op.high == direct.high);
    sz_journal_append_t entry;
    static uint8_t events[OPS_EVENTS_MAX * SZ_JOURNAL_EVENT_SIZE];
    ops_generate(seed, 123, &entry, events);
    sz_digest_t until_timestamp =
        replay_digest(storage, (sz_replay_options_t){.until_timestamp = entry.timestamp + 1},
                      &stats);
    cr_assert_eq(stats.op_last, 123);
    cr_assert(until_timestamp.low == direct.low && until_timestamp.high == direct.high);
    sz_storage_deinit(storage);
}

Test(replay, a_capacity_too_small_is_an_error_naming_the_op) {
    uint64_t seed = test_seed();
    sz_storage_t *storage = journal_written(seed, 50);
    sz_ledger_config_t config = {.accounts_max = 8, .transfers_max = 1024, .pending_max = 1024,
                                 .history_max = 16};
    sz_ledger_t *ledger = NULL;
    cr_assert_eq(sz_ledger_init(&config, &ledger), 0);
    sz_replay_stats_t stats;
    sz_journal_problem_t problem;
    sz_replay_options_t options = {0};
    cr_assert_eq(sz_replay_run(storage, &options, ledger, &stats, &problem), -ENOSPC);
    cr_assert_eq(problem.op, 1);
    sz_ledger_deinit(ledger);
    sz_storage_deinit(storage);
}
