/* test_learner.c: proves the learner's rows against the ledger itself. A seeded random
 * workload (linked chains that fail, pending transfers that are posted, voided or expire,
 * balancing and failing transfers) is applied to the learner and, independently, replayed
 * into a second ledger: the digests agree, every committed transfer row is the ledger's
 * record, each line's balance is the running sum of that account's lines, every ledger's
 * lines sum to zero after every op, the lines of each account end at its posted balances,
 * and the pending amounts created minus those resolved and expired equal the accounts'
 * pending balances. A hand-made batch checks intra-batch balances value by value.
 * SUMZERO_SEED picks the seed (printed). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "journal/replay.h"
#include "projection/learner.h"
#include "workload.h"

static const sz_ledger_config_t learner_test_config = {
    .accounts_max = 4096, .transfers_max = 1u << 18, .pending_max = 1u << 16,
    .history_max = 1024, .hash_seed = 7};

static uint64_t learner_test_seed(void) {
    const char *text = getenv("SUMZERO_SEED");
    uint64_t seed = text != NULL ? strtoull(text, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "test_learner: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    return seed;
}

typedef struct tracked_account {
    sz_u128 id;
    uint32_t ledger;
    sz_u128 debits_posted;
    sz_u128 credits_posted;
} tracked_account_t;

static tracked_account_t *tracked_find(tracked_account_t *tracked, uint32_t count, sz_u128 id) {
    for (uint32_t index = 0; index < count; index++) {
        if (tracked[index].id == id) return &tracked[index];
    }
    return NULL;
}

Test(learner, rows_agree_with_the_ledger_for_a_random_workload) {
    uint64_t seed = learner_test_seed();
    sz_workload_t workload;
    cr_assert_eq(sz_workload_build(&workload, seed, 48, 400, 120, false), 0);
    sz_learner_t *learner = NULL;
    cr_assert_eq(sz_learner_init(&learner_test_config, &learner), 0);
    sz_ledger_t *reference = NULL;
    cr_assert_eq(sz_ledger_init(&learner_test_config, &reference), 0);

    tracked_account_t tracked[64];
    memset(tracked, 0, sizeof(tracked));
    uint32_t tracked_count = workload.account_count;
    cr_assert_leq(tracked_count, 64);
    for (uint32_t index = 0; index < tracked_count; index++) {
        tracked[index].id = workload.account_ids[index];
        tracked[index].ledger = 1 + index % 2;
    }
    uint64_t transfer_rows = 0, rejected_rows = 0, expired_rows = 0, posted_lines = 0;
    uint64_t posts = 0, voids = 0, linked_failed = 0;
    sz_u128 pending_open = 0; /* created minus resolved minus expired */
    sz_replay_stats_t replay_stats = {0};
    for (uint64_t entry_index = 0; entry_index < workload.entry_count; entry_index++) {
        const sz_workload_entry_t *entry = &workload.entries[entry_index];
        sz_learner_op_t op;
        sz_journal_problem_t problem;
        int result = sz_learner_apply(learner, &entry->header, entry->body, true, &op, &problem);
        cr_assert_eq(result, 0, "op %llu: %s", (unsigned long long)entry->header.op,
                     problem.reason);
        cr_assert_eq(sz_replay_apply(reference, &entry->header, entry->body, &replay_stats,
                                     &problem), 0);
        sz_learner_dirty_clear(learner);
        const sz_ledger_t *ledger = sz_learner_ledger(learner);
        for (uint32_t index = 0; index < op.transfer_count; index++) {
            const sz_transfer_t *row = &op.transfers[index];
            sz_transfer_t stored;
            cr_assert_eq(sz_ledger_lookup_transfers(ledger, &row->id, 1, &stored), 1);
            cr_assert_eq(memcmp(&stored, row, sizeof(stored)), 0);
            cr_assert_geq(row->timestamp, entry->header.timestamp);
            if (row->flags & SZ_TRANSFER_PENDING) pending_open += row->amount;
            if (row->flags & (SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING)) {
                sz_transfer_t pending;
                cr_assert_eq(sz_ledger_lookup_transfers(ledger, &row->pending_id, 1, &pending), 1);
                pending_open -= pending.amount;
                if (row->flags & SZ_TRANSFER_POST_PENDING) posts++;
                else voids++;
            }
        }
        for (uint32_t index = 0; index < op.expired_count; index++) {
            pending_open -= op.expired[index].amount;
        }
        for (uint32_t index = 0; index < op.result_count; index++) {
            if (op.results[index].result == SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED) linked_failed++;
        }
        cr_assert_eq(op.line_count % 2, 0);
        for (uint32_t index = 0; index < op.line_count; index++) {
            const sz_learner_line_t *line = &op.lines[index];
            tracked_account_t *account = tracked_find(tracked, tracked_count, line->account_id);
            cr_assert_not_null(account);
            cr_assert_eq(account->ledger, line->ledger);
            if (line->debit) account->debits_posted += line->amount;
            else account->credits_posted += line->amount;
            cr_assert(account->debits_posted == line->debits_posted,
                      "op %llu line %u: debits_posted after the line",
                      (unsigned long long)entry->header.op, index);
            cr_assert(account->credits_posted == line->credits_posted,
                      "op %llu line %u: credits_posted after the line",
                      (unsigned long long)entry->header.op, index);
            /* Lines come in debit/credit pairs of the same transfer and amount. */
            if (index % 2 == 1) {
                cr_assert(line[-1].debit && !line->debit);
                cr_assert(line[-1].transfer_id == line->transfer_id);
                cr_assert(line[-1].amount == line->amount);
            }
        }
        /* Each ledger's lines sum to zero: per ledger, debits posted equal credits posted. */
        for (uint32_t ledger_number = 1; ledger_number <= 2; ledger_number++) {
            sz_u128 debits = 0, credits = 0;
            for (uint32_t index = 0; index < tracked_count; index++) {
                if (tracked[index].ledger != ledger_number) continue;
                debits += tracked[index].debits_posted;
                credits += tracked[index].credits_posted;
            }
            cr_assert(debits == credits, "ledger %u unbalanced after op %llu", ledger_number,
                      (unsigned long long)entry->header.op);
        }
        transfer_rows += op.transfer_count;
        rejected_rows += op.result_count;
        expired_rows += op.expired_count;
        posted_lines += op.line_count;
    }
    cr_assert_eq(sz_learner_op_last(learner), workload.entry_count);
    sz_digest_t learner_digest = sz_ledger_digest(sz_learner_ledger(learner));
    sz_digest_t reference_digest = sz_ledger_digest(reference);
    cr_assert(learner_digest.low == reference_digest.low &&
              learner_digest.high == reference_digest.high);
    sz_ledger_stats_t stats;
    sz_ledger_stats(sz_learner_ledger(learner), &stats);
    cr_assert_eq(transfer_rows, stats.transfer_count);
    cr_assert_eq(transfer_rows + rejected_rows,
                 workload.transfer_event_count + workload.account_count + 2 - stats.account_count,
                 "every event is either a row or a rejection");
    cr_assert_eq(expired_rows, replay_stats.expired_count);
    sz_u128 debits_pending = 0;
    for (uint32_t index = 0; index < tracked_count; index++) {
        sz_account_t account;
        cr_assert_eq(sz_ledger_lookup_accounts(sz_learner_ledger(learner), &tracked[index].id, 1,
                                               &account), 1);
        cr_assert(account.debits_posted == tracked[index].debits_posted);
        cr_assert(account.credits_posted == tracked[index].credits_posted);
        debits_pending += account.debits_pending;
    }
    cr_assert(pending_open == debits_pending, "pending created - resolved - expired");
    /* The workload must have exercised what it claims to. */
    cr_assert_gt(posts, 0);
    cr_assert_gt(voids, 0);
    cr_assert_gt(expired_rows, 0);
    cr_assert_gt(linked_failed, 0);
    cr_assert_gt(posted_lines, 0);
    fprintf(stderr, "test_learner: %llu transfers, %llu rejected, %llu expired, %llu posts, "
            "%llu voids, %llu lines\n", (unsigned long long)transfer_rows,
            (unsigned long long)rejected_rows, (unsigned long long)expired_rows,
            (unsigned long long)posts, (unsigned long long)voids,
            (unsigned long long)posted_lines);
    sz_ledger_deinit(reference);
    sz_learner_deinit(learner);
    sz_workload_free(&workload);
}

static sz_journal_header_t learner_header(uint64_t op, sz_operation_t operation, uint32_t count,
                                          uint64_t timestamp) {
    sz_journal_header_t header;
    memset(&header, 0, sizeof(header));
    header.op = op;
    header.operation = (uint8_t)operation;
    header.event_count = count;
    header.body_size = count * SZ_JOURNAL_EVENT_SIZE;
    header.timestamp = timestamp;
    return header;
}

Test(learner, lines_carry_the_balance_after_each_event_inside_one_batch) {
    sz_learner_t *learner = NULL;
    cr_assert_eq(sz_learner_init(&learner_test_config, &learner), 0);
    sz_account_t accounts[3];
    memset(accounts, 0, sizeof(accounts));
    for (uint32_t index = 0; index < 3; index++) {
        accounts[index].id = 1 + index;
        accounts[index].ledger = 1;
        accounts[index].code = 1;
    }
    sz_journal_header_t header = learner_header(1, SZ_OPERATION_CREATE_ACCOUNTS, 3, 1000);
    sz_learner_op_t op;
    cr_assert_eq(sz_learner_apply(learner, &header, accounts, true, &op, NULL), 0);
    cr_assert_eq(op.account_count, 3);
    cr_assert_eq(sz_learner_dirty_count(learner), 3);
    sz_learner_dirty_clear(learner);

    /* 1->2 100; pending 2->3 50; post it with 30; 1->2 7 linked to a failing one. */
    sz_transfer_t transfers[5];
    memset(transfers, 0, sizeof(transfers));
    transfers[0] = (sz_transfer_t){.id = 10, .debit_account_id = 1, .credit_account_id = 2,
                                   .amount = 100, .ledger = 1, .code = 1};
    transfers[1] = (sz_transfer_t){.id = 11, .debit_account_id = 2, .credit_account_id = 3,
                                   .amount = 50, .ledger = 1, .code = 1,
                                   .flags = SZ_TRANSFER_PENDING};
    transfers[2] = (sz_transfer_t){.id = 12, .pending_id = 11, .amount = 30,
                                   .flags = SZ_TRANSFER_POST_PENDING};
    transfers[3] = (sz_transfer_t){.id = 13, .debit_account_id = 1, .credit_account_id = 2,
                                   .amount = 7, .ledger = 1, .code = 1,
                                   .flags = SZ_TRANSFER_LINKED};
    transfers[4] = (sz_transfer_t){.id = 14, .debit_account_id = 1, .credit_account_id = 99,
                                   .amount = 7, .ledger = 1, .code = 1};
    header = learner_header(2, SZ_OPERATION_CREATE_TRANSFERS, 5, 2000);
    cr_assert_eq(sz_learner_apply(learner, &header, transfers, true, &op, NULL), 0);
    cr_assert_eq(op.transfer_count, 3);
    cr_assert_eq(op.result_count, 2);
    cr_assert_eq(op.results[0].result, SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED);
    cr_assert_eq(op.results[1].result, SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND);
    cr_assert_eq(op.line_count, 4);
    /* Transfer 10: account 1 debited 100, account 2 credited 100. */
    cr_assert(op.lines[0].account_id == 1 && op.lines[0].debit && op.lines[0].amount == 100);
    cr_assert(op.lines[0].debits_posted == 100 && op.lines[0].credits_posted == 0);
    cr_assert(op.lines[1].account_id == 2 && !op.lines[1].debit);
    cr_assert(op.lines[1].credits_posted == 100 && op.lines[1].debits_posted == 0);
    /* The post (stored with the pending's accounts) posts 30 from 2 to 3. */
    cr_assert(op.lines[2].transfer_id == 12 && op.lines[2].account_id == 2);
    cr_assert(op.lines[2].debits_posted == 30 && op.lines[2].credits_posted == 100);
    cr_assert(op.lines[3].account_id == 3 && op.lines[3].credits_posted == 30);
    cr_assert_eq(op.lines[2].timestamp, 2002);
    cr_assert(op.transfers[2].debit_account_id == 2 && op.transfers[2].amount == 30);
    cr_assert_eq(sz_learner_dirty_count(learner), 3);

    /* A journal entry out of order is refused, not asserted. */
    header = learner_header(5, SZ_OPERATION_EXPIRE_PENDING, 0, 3000);
    sz_journal_problem_t problem;
    cr_assert_eq(sz_learner_apply(learner, &header, NULL, true, &op, &problem), -EUCLEAN);
    cr_assert_eq(problem.op, 5);
    sz_learner_deinit(learner);
}
