/* replay.h: rebuilding the state from the journal: every op, in order, applied to a
 * ledger through core/ with the op's own timestamp, exactly as the leader applied it.
 *
 * Contract:
 * - One thread; the ledger is the caller's (initialised with enough capacity) and is
 *   only ever fed through sz_ledger_create_accounts / create_transfers / expire_pending.
 * - sz_replay_run() opens the journal read-only (no lock, nothing written) and returns 0,
 *   a journal error (-EUCLEAN corruption, -ENOENT not formatted, I/O), or for an op the
 *   ledger refuses: -ENOSPC (a capacity too small: problem names the op and what is
 *   full) or -EUCLEAN (timestamps out of order, so the journal is not a leader's).
 * - Starting after an op (options.op_after, chain_head) skips the earlier segments unread,
 *   so they may be retired; options.archive finds retired segments for a replay from op 1.
 * - The same journal replayed into equal ledgers gives equal digests. */
#ifndef SZ_REPLAY_H
#define SZ_REPLAY_H

#include "core/ledger.h"
#include "journal.h"

typedef struct sz_replay_options {
    uint64_t until_op;        /* 0: every op; else stop after this op */
    uint64_t until_timestamp; /* 0: every op; else stop before an op stamped after it */
    /* Start after this op (0: from op 1), the ledger holding the state at it (a loaded
     * snapshot's); chain_head is that op's checksum_header: see sz_journal_options_t. */
    uint64_t op_after;
    sz_u128 chain_head;
    sz_storage_t *archive; /* NULL, or where retired segments are (read-only) */
} sz_replay_options_t;

typedef struct sz_replay_stats {
    uint64_t op_count;             /* ops applied */
    uint64_t op_last;              /* the last op applied */
    sz_u128 chain_head;            /* its checksum_header (0 when no op was applied) */
    uint64_t timestamp_last;       /* its timestamp */
    uint64_t account_event_count;  /* events of create_accounts ops */
    uint64_t transfer_event_count; /* events of create_transfers ops */
    uint64_t transfer_failed_count; /* of those, events whose result was not ok */
    uint64_t expired_count;        /* pending transfers expired by expire ops */
} sz_replay_stats_t;

/* Applies one journal entry (already verified by the journal). Returns 0, -ENOSPC or
 * -EUCLEAN as above, with problem_out naming the op. */
SZ_MUST_USE int sz_replay_apply(sz_ledger_t *ledger, const sz_journal_header_t *header,
                                const void *body, sz_replay_stats_t *stats,
                                sz_journal_problem_t *problem_out);

SZ_MUST_USE int sz_replay_run(sz_storage_t *storage, const sz_replay_options_t *options,
                              sz_ledger_t *ledger, sz_replay_stats_t *stats_out,
                              sz_journal_problem_t *problem_out);

#endif
