/* learner.h: the projector's own copy of the state machine. It applies committed journal
 * entries to a private ledger, exactly as the leader did, so it knows every event's result
 * and every balance, and derives from each op the rows the sinks write: the committed
 * transfers as stored (clamped amounts, inherited fields of posts), the double-entry lines
 * with each account's balance after the line, the rejected events, the pending transfers an
 * expire op released, the accounts created, and which accounts changed.
 *
 * Contract:
 * - One thread owns a learner. sz_learner_init() reserves everything (the ledger from its
 *   capacities, and the per-op row arrays for one full batch); nothing allocates after.
 * - Entries must come in op order from op 1 without gaps (a source guarantees it);
 *   anything else is -EUCLEAN with problem_out naming the op, as is an op the ledger
 *   refuses for its timestamp; a capacity too small is -ENOSPC. Nothing is asserted on
 *   entry contents: they come from disk or the network.
 * - sz_learner_apply() with derive=false only applies (a rebuild up to the stored position);
 *   with derive=true it also fills *op_out, whose arrays stay valid until the next apply,
 *   and adds the accounts the op changed to the dirty set.
 * - Lines: one debit line and one credit line per posted amount (plain transfers and
 *   posts; pending, void and expiry post nothing). Each carries the account's
 *   debits_posted and credits_posted right after it, computed event by event inside the
 *   batch (the ledger only shows the state after the whole batch).
 * - The dirty set holds each changed or created account id once, in first-touch order,
 *   until sz_learner_dirty_clear(); it holds at most SZ_LEARNER_DIRTY_MAX ids, and apply
 *   refuses (-ENOBUFS, nothing applied) an op that could overflow it: the caller writes out
 *   and clears, then calls again. */
#ifndef SZ_LEARNER_H
#define SZ_LEARNER_H

#include <stdbool.h>

#include "core/ledger.h"
#include "journal/journal.h"

/* A create_transfers op touches at most 2 accounts per event. 2^19 dirty ids (8 MiB) is
 * far more than one projector transaction needs, and bounds the table. */
#define SZ_LEARNER_DIRTY_MAX (1u << 19)

typedef struct sz_learner_line {
    sz_u128 transfer_id;
    sz_u128 account_id;
    sz_u128 amount;
    sz_u128 debits_posted;  /* the account's, right after this line */
    sz_u128 credits_posted;
    uint64_t timestamp;     /* the transfer's */
    uint32_t ledger;
    uint16_t code;
    bool debit;             /* the debit line of the transfer, else the credit line */
} sz_learner_line_t;

typedef struct sz_learner_op {
    const sz_journal_header_t *header;
    const void *body;
    /* Non-ok events of a create op, ascending index, as the ledger returned them. */
    const sz_create_result_t *results;
    uint32_t result_count;
    const sz_account_t *accounts; /* created by this op, as stored */
    uint32_t account_count;
    const sz_transfer_t *transfers; /* committed by this op, as stored, in event order */
    uint32_t transfer_count;
    const sz_learner_line_t *lines;
    uint32_t line_count;
    const sz_transfer_t *expired; /* pending transfers this expire op released */
    uint32_t expired_count;
} sz_learner_op_t;

typedef struct sz_learner sz_learner_t;

SZ_MUST_USE int sz_learner_init(const sz_ledger_config_t *config, sz_learner_t **learner_out);
void sz_learner_deinit(sz_learner_t *learner);

SZ_MUST_USE int sz_learner_apply(sz_learner_t *learner, const sz_journal_header_t *header,
                                 const void *body, bool derive, sz_learner_op_t *op_out,
                                 sz_journal_problem_t *problem_out);

/* The last op applied (0 before the first). */
uint64_t sz_learner_op_last(const sz_learner_t *learner);
const sz_ledger_t *sz_learner_ledger(const sz_learner_t *learner);

uint32_t sz_learner_dirty_count(const sz_learner_t *learner);
const sz_u128 *sz_learner_dirty_ids(const sz_learner_t *learner);
void sz_learner_dirty_clear(sz_learner_t *learner);

#endif
