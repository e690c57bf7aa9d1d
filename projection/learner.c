/* learner.c: applies committed ops to the projector's private ledger and derives the rows
 * of each op (learner.h).
 *
 * The ledger only shows balances after a whole batch, but a line needs the balance right
 * after its own event. So after a create_transfers batch applies, the learner takes the
 * final balances of every touched account, undoes the effects of the batch's committed
 * transfers in reverse order (which walks back through exactly the states the ledger went
 * through, so nothing underflows), and then redoes them in order, writing a line at each
 * posted amount. Failed events (including every member of a failed linked chain) left no
 * effect, so only committed transfers take part. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "learner.h"

/* Distinct accounts one batch can touch: two per event. The table is twice that, so it is
 * at most half full. */
#define LEARNER_BATCH_ACCOUNTS_MAX (2u * SZ_BATCH_EVENTS_MAX)
#define LEARNER_BATCH_SLOTS (1u << 15)
#define LEARNER_DIRTY_SLOTS (2u * SZ_LEARNER_DIRTY_MAX)

static_assert(LEARNER_BATCH_SLOTS >= 2u * LEARNER_BATCH_ACCOUNTS_MAX, "batch table load");

typedef struct learner_balance {
    sz_u128 account_id; /* 0: empty slot */
    sz_u128 debits_pending;
    sz_u128 debits_posted;
    sz_u128 credits_pending;
    sz_u128 credits_posted;
} learner_balance_t;

struct sz_learner {
    sz_ledger_t *ledger;
    uint64_t op_last;
    sz_create_result_t results[SZ_BATCH_EVENTS_MAX];
    sz_account_t accounts[SZ_BATCH_EVENTS_MAX];
    sz_transfer_t transfers[SZ_BATCH_EVENTS_MAX];
    sz_u128 pending_amounts[SZ_BATCH_EVENTS_MAX]; /* of posts and voids, by transfer index */
    sz_learner_line_t lines[2u * SZ_BATCH_EVENTS_MAX];
    sz_u128 expired_ids[SZ_EXPIRE_EVENTS_MAX];
    sz_transfer_t expired[SZ_EXPIRE_EVENTS_MAX];
    /* Running balances of the accounts of the current batch. */
    learner_balance_t batch[LEARNER_BATCH_SLOTS];
    uint32_t batch_used[LEARNER_BATCH_ACCOUNTS_MAX];
    uint32_t batch_used_count;
    /* Dirty set: ids in first-touch order, and an open-addressing index over them. */
    sz_u128 dirty_ids[SZ_LEARNER_DIRTY_MAX];
    uint32_t dirty_count;
    uint32_t dirty_slots[LEARNER_DIRTY_SLOTS]; /* 0 empty, else index + 1 */
};

static uint64_t learner_hash(sz_u128 id) {
    uint64_t low = (uint64_t)id;
    uint64_t high = (uint64_t)(id >> 64);
    uint64_t hash = (low ^ (high * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
    return hash ^ (hash >> 31);
}

int sz_learner_init(const sz_ledger_config_t *config, sz_learner_t **learner_out) {
    SZ_ASSERT(config != NULL && learner_out != NULL);
    *learner_out = NULL;
    sz_learner_t *learner = calloc(1, sizeof(*learner));
    if (learner == NULL) return -ENOMEM;
    int result = sz_ledger_init(config, &learner->ledger);
    if (result < 0) {
        free(learner);
        return result;
    }
    *learner_out = learner;
    return 0;
}

void sz_learner_deinit(sz_learner_t *learner) {
    if (learner == NULL) return;
    sz_ledger_deinit(learner->ledger);
    free(learner);
}

uint64_t sz_learner_op_last(const sz_learner_t *learner) { return learner->op_last; }
const sz_ledger_t *sz_learner_ledger(const sz_learner_t *learner) { return learner->ledger; }
uint32_t sz_learner_dirty_count(const sz_learner_t *learner) { return learner->dirty_count; }
const sz_u128 *sz_learner_dirty_ids(const sz_learner_t *learner) { return learner->dirty_ids; }

void sz_learner_dirty_clear(sz_learner_t *learner) {
    /* Clearing by the ids keeps the cost proportional to what was dirtied. */
    for (uint32_t index = 0; index < learner->dirty_count; index++) {
        uint64_t slot = learner_hash(learner->dirty_ids[index]) & (LEARNER_DIRTY_SLOTS - 1);
        while (learner->dirty_slots[slot] != 0) {
            learner->dirty_slots[slot] = 0;
            slot = (slot + 1) & (LEARNER_DIRTY_SLOTS - 1);
        }
    }
    learner->dirty_count = 0;
}

static void learner_dirty_add(sz_learner_t *learner, sz_u128 id) {
    uint64_t slot = learner_hash(id) & (LEARNER_DIRTY_SLOTS - 1);
    for (uint32_t probe = 0; probe < LEARNER_DIRTY_SLOTS; probe++) {
        uint32_t entry = learner->dirty_slots[slot];
        if (entry == 0) break;
        if (learner->dirty_ids[entry - 1] == id) return;
        slot = (slot + 1) & (LEARNER_DIRTY_SLOTS - 1);
    }
    /* apply() checked the room before the op. */
    SZ_ASSERT(learner->dirty_count < SZ_LEARNER_DIRTY_MAX);
    SZ_ASSERT(learner->dirty_slots[slot] == 0);
    learner->dirty_ids[learner->dirty_count] = id;
    learner->dirty_count++;
    learner->dirty_slots[slot] = learner->dirty_count;
}

/* The batch's running balance of an account, loaded from the ledger on first use. */
static learner_balance_t *learner_balance(sz_learner_t *learner, sz_u128 id) {
    uint64_t slot = learner_hash(id) & (LEARNER_BATCH_SLOTS - 1);
    while (learner->batch[slot].account_id != 0) {
        if (learner->batch[slot].account_id == id) return &learner->batch[slot];
        slot = (slot + 1) & (LEARNER_BATCH_SLOTS - 1);
    }
    SZ_ASSERT(learner->batch_used_count < LEARNER_BATCH_ACCOUNTS_MAX);
    sz_account_t account;
    /* A committed transfer's accounts exist: the ledger checked them. */
    SZ_ASSERT(sz_ledger_lookup_accounts(learner->ledger, &id, 1, &account) == 1);
    learner_balance_t *balance = &learner->batch[slot];
    balance->account_id = id;
    balance->debits_pending = account.debits_pending;
    balance->debits_posted = account.debits_posted;
    balance->credits_pending = account.credits_pending;
    balance->credits_posted = account.credits_posted;
    learner->batch_used[learner->batch_used_count++] = (uint32_t)slot;
    return balance;
}

static void learner_batch_clear(sz_learner_t *learner) {
    for (uint32_t index = 0; index < learner->batch_used_count; index++) {
        learner->batch[learner->batch_used[index]].account_id = 0;
    }
    learner->batch_used_count = 0;
}

/* Applies (sign +1) or undoes (sign -1) one committed transfer on the running balances;
 * returns true if it posted an amount. Wrapping arithmetic is exact here: undoing in
 * reverse order only revisits states the ledger had. */
static bool learner_effect(learner_balance_t *debit, learner_balance_t *credit,
                           const sz_transfer_t *transfer, sz_u128 pending_amount, bool undo) {
    sz_u128 amount = transfer->amount;
    if (transfer->flags & (SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING)) {
        bool post = (transfer->flags & SZ_TRANSFER_POST_PENDING) != 0;
        if (undo) {
            debit->debits_pending += pending_amount;
            credit->credits_pending += pending_amount;
            if (post) {
                debit->debits_posted -= amount;
                credit->credits_posted -= amount;
            }
        } else {
            debit->debits_pending -= pending_amount;
            credit->credits_pending -= pending_amount;
            if (post) {
                debit->debits_posted += amount;
                credit->credits_posted += amount;
            }
        }
        return post && amount != 0;
    }
    if (transfer->flags & SZ_TRANSFER_PENDING) {
        debit->debits_pending += undo ? -amount : amount;
        credit->credits_pending += undo ? -amount : amount;
        return false;
    }
    debit->debits_posted += undo ? -amount : amount;
    credit->credits_posted += undo ? -amount : amount;
    return amount != 0;
}

static void learner_line(sz_learner_line_t *line, const sz_transfer_t *transfer,
                         const learner_balance_t *balance, bool debit) {
    line->transfer_id = transfer->id;
    line->account_id = balance->account_id;
    line->amount = transfer->amount;
    line->debits_posted = balance->debits_posted;
    line->credits_posted = balance->credits_posted;
    line->timestamp = transfer->timestamp;
    line->ledger = transfer->ledger;
    line->code = transfer->code;
    line->debit = debit;
}

static void learner_derive_transfers(sz_learner_t *learner, const sz_transfer_t *events,
                                     uint32_t event_count, uint32_t result_count,
                                     sz_learner_op_t *op) {
    uint32_t result_index = 0;
    uint32_t count = 0;
    for (uint32_t index = 0; index < event_count; index++) {
        if (result_index < result_count && learner->results[result_index].index == index) {
            result_index++;
            continue;
        }
        sz_transfer_t *stored = &learner->transfers[count];
        /* An ok event was stored under its id by this very batch. */
        SZ_ASSERT(sz_ledger_lookup_transfers(learner->ledger, &events[index].id, 1, stored) == 1);
        learner->pending_amounts[count] = 0;
        if (stored->flags & (SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING)) {
            sz_transfer_t pending;
            SZ_ASSERT(sz_ledger_lookup_transfers(learner->ledger, &stored->pending_id, 1,
                                                 &pending) == 1);
            learner->pending_amounts[count] = pending.amount;
        }
        count++;
    }
    SZ_ASSERT(result_index == result_count);
    SZ_ASSERT(count + result_count == event_count);
    /* Back from the final balances to the ones before the batch... */
    for (uint32_t index = count; index-- > 0;) {
        const sz_transfer_t *transfer = &learner->transfers[index];
        learner_balance_t *debit = learner_balance(learner, transfer->debit_account_id);
        learner_balance_t *credit = learner_balance(learner, transfer->credit_account_id);
        learner_effect(debit, credit, transfer, learner->pending_amounts[index], true);
    }
    /* ...then forward again, event by event, writing the lines. */
    uint32_t line_count = 0;
    for (uint32_t index = 0; index < count; index++) {
        const sz_transfer_t *transfer = &learner->transfers[index];
        learner_balance_t *debit = learner_balance(learner, transfer->debit_account_id);
        learner_balance_t *credit = learner_balance(learner, transfer->credit_account_id);
        if (learner_effect(debit, credit, transfer, learner->pending_amounts[index], false)) {
            learner_line(&learner->lines[line_count++], transfer, debit, true);
            learner_line(&learner->lines[line_count++], transfer, credit, false);
        }
        learner_dirty_add(learner, transfer->debit_account_id);
        learner_dirty_add(learner, transfer->credit_account_id);
    }
    /* Forward from the start must land on the ledger's own final balances. */
    for (uint32_t index = 0; index < learner->batch_used_count; index++) {
        const learner_balance_t *balance = &learner->batch[learner->batch_used[index]];
        sz_account_t account;
        SZ_ASSERT(sz_ledger_lookup_accounts(learner->ledger, &balance->account_id, 1, &account));
        SZ_ASSERT(account.debits_posted == balance->debits_posted);
        SZ_ASSERT(account.credits_posted == balance->credits_posted);
        SZ_ASSERT(account.debits_pending == balance->debits_pending);
        SZ_ASSERT(account.credits_pending == balance->credits_pending);
    }
    learner_batch_clear(learner);
    op->transfers = learner->transfers;
    op->transfer_count = count;
    op->lines = learner->lines;
    op->line_count = line_count;
}

static void learner_derive_accounts(sz_learner_t *learner, const sz_account_t *events,
                                    uint32_t event_count, uint32_t result_count,
                                    sz_learner_op_t *op) {
    uint32_t result_index = 0;
    uint32_t count = 0;
    for (uint32_t index = 0; index < event_count; index++) {
        if (result_index < result_count && learner->results[result_index].index == index) {
            result_index++;
            continue;
        }
        SZ_ASSERT(sz_ledger_lookup_accounts(learner->ledger, &events[index].id, 1,
                                            &learner->accounts[count]) == 1);
        learner_dirty_add(learner, events[index].id);
        count++;
    }
    SZ_ASSERT(result_index == result_count);
    op->accounts = learner->accounts;
    op->account_count = count;
}

static void learner_derive_expired(sz_learner_t *learner, uint32_t expired_count,
                                   sz_learner_op_t *op) {
    for (uint32_t index = 0; index < expired_count; index++) {
        sz_transfer_t *pending = &learner->expired[index];
        SZ_ASSERT(sz_ledger_lookup_transfers(learner->ledger, &learner->expired_ids[index], 1,
                                             pending) == 1);
        learner_dirty_add(learner, pending->debit_account_id);
        learner_dirty_add(learner, pending->credit_account_id);
    }
    op->expired = learner->expired;
    op->expired_count = expired_count;
}

static int learner_refused(const sz_journal_header_t *header, sz_batch_status_t status,
                           sz_journal_problem_t *problem_out) {
    if (problem_out != NULL) {
        memset(problem_out, 0, sizeof(*problem_out));
        problem_out->op = header->op;
        snprintf(problem_out->reason, sizeof(problem_out->reason),
                 "the projector's ledger refused op %llu (%s, %u events): %s",
                 (unsigned long long)header->op, sz_operation_name(header->operation),
                 header->event_count, sz_batch_status_name(status));
    }
    return status == SZ_BATCH_TIMESTAMP_INVALID || status == SZ_BATCH_TOO_MANY_EVENTS
               ? -EUCLEAN
               : -ENOSPC;
}

static int learner_problem(const sz_journal_header_t *header, const char *reason,
                           sz_journal_problem_t *problem_out) {
    if (problem_out != NULL) {
        memset(problem_out, 0, sizeof(*problem_out));
        problem_out->op = header->op;
        snprintf(problem_out->reason, sizeof(problem_out->reason), "op %llu: %s",
                 (unsigned long long)header->op, reason);
    }
    return -EUCLEAN;
}

int sz_learner_apply(sz_learner_t *learner, const sz_journal_header_t *header,
                     const void *body, bool derive, sz_learner_op_t *op_out,
                     sz_journal_problem_t *problem_out) {
    SZ_ASSERT(learner != NULL && header != NULL);
    SZ_ASSERT(!derive || op_out != NULL);
    if (header->op != learner->op_last + 1) {
        return learner_problem(header, "not the op after the last one applied", problem_out);
    }
    if (header->event_count > SZ_BATCH_EVENTS_MAX ||
        header->body_size != header->event_count * SZ_JOURNAL_EVENT_SIZE) {
        return learner_problem(header, "body size does not match its event count", problem_out);
    }
    if (derive && learner->dirty_count + 2u * SZ_BATCH_EVENTS_MAX > SZ_LEARNER_DIRTY_MAX) {
        return -ENOBUFS;
    }
    if (derive) {
        memset(op_out, 0, sizeof(*op_out));
        op_out->header = header;
        op_out->body = body;
        op_out->results = learner->results;
    }
    uint32_t result_count = 0;
    uint32_t expired_count = 0;
    sz_batch_status_t status;
    switch (header->operation) {
    case SZ_OPERATION_CREATE_ACCOUNTS:
        status = sz_ledger_create_accounts(learner->ledger, body, header->event_count,
                                           header->timestamp, learner->results, &result_count);
        if (status == SZ_BATCH_APPLIED && derive) {
            learner_derive_accounts(learner, body, header->event_count, result_count, op_out);
        }
        break;
    case SZ_OPERATION_CREATE_TRANSFERS:
        status = sz_ledger_create_transfers(learner->ledger, body, header->event_count,
                                            header->timestamp, learner->results, &result_count);
        if (status == SZ_BATCH_APPLIED && derive) {
            learner_derive_transfers(learner, body, header->event_count, result_count, op_out);
        }
        break;
    case SZ_OPERATION_EXPIRE_PENDING:
        status = sz_ledger_expire_pending(learner->ledger, header->timestamp,
                                          learner->expired_ids, &expired_count);
        if (status == SZ_BATCH_APPLIED && derive) {
            learner_derive_expired(learner, expired_count, op_out);
        }
        break;
    default:
        return learner_problem(header, "an operation that is not journaled", problem_out);
    }
    if (status != SZ_BATCH_APPLIED) return learner_refused(header, status, problem_out);
    if (derive) op_out->result_count = result_count;
    learner->op_last = header->op;
    return 0;
}
