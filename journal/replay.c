/* replay.c: feeds journal entries to the state machine in op order with their own
 * timestamps, so a replay reaches the same state and digest as the leader had. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "replay.h"

typedef struct replay_context {
    sz_ledger_t *ledger;
    const sz_replay_options_t *options;
    sz_replay_stats_t *stats;
    sz_journal_problem_t problem;
    int error;
} replay_context_t;

/* Results of one batch: the ledger writes at most one per event. */
static sz_create_result_t replay_results[SZ_BATCH_EVENTS_MAX];

int sz_replay_apply(sz_ledger_t *ledger, const sz_journal_header_t *header, const void *body,
                    sz_replay_stats_t *stats, sz_journal_problem_t *problem_out) {
    SZ_ASSERT(ledger != NULL && header != NULL && stats != NULL);
    SZ_ASSERT(header->body_size == header->event_count * SZ_JOURNAL_EVENT_SIZE);
    uint32_t result_count = 0;
    uint32_t expired_count = 0;
    sz_batch_status_t status = SZ_BATCH_APPLIED;
    switch (header->operation) {
    case SZ_OPERATION_CREATE_ACCOUNTS:
        status = sz_ledger_create_accounts(ledger, body, header->event_count, header->timestamp,
                                           replay_results, &result_count);
        if (status == SZ_BATCH_APPLIED) stats->account_event_count += header->event_count;
        break;
    case SZ_OPERATION_CREATE_TRANSFERS:
        status = sz_ledger_create_transfers(ledger, body, header->event_count, header->timestamp,
                                            replay_results, &result_count);
        if (status == SZ_BATCH_APPLIED) {
            stats->transfer_event_count += header->event_count;
            stats->transfer_failed_count += result_count;
        }
        break;
    case SZ_OPERATION_EXPIRE_PENDING:
        status = sz_ledger_expire_pending(ledger, header->timestamp, NULL, &expired_count);
        if (status == SZ_BATCH_APPLIED) stats->expired_count += expired_count;
        break;
    default:
        /* The journal checked the header; an unknown operation cannot reach here. */
        SZ_ASSERT(false);
    }
    if (status != SZ_BATCH_APPLIED) {
        if (problem_out != NULL) {
            problem_out->op = header->op;
            snprintf(problem_out->reason, sizeof(problem_out->reason),
                     "the ledger refused op %llu (%s, %u events): %s",
                     (unsigned long long)header->op, sz_operation_name(header->operation),
                     header->event_count, sz_batch_status_name(status));
        }
        return status == SZ_BATCH_TIMESTAMP_INVALID || status == SZ_BATCH_TOO_MANY_EVENTS
                   ? -EUCLEAN
                   : -ENOSPC;
    }
    SZ_ASSERT(result_count <= header->event_count);
    stats->op_count++;
    stats->op_last = header->op;
    stats->chain_head = header->checksum_header;
    stats->timestamp_last = header->timestamp;
    return 0;
}

static int replay_on_entry(const sz_journal_header_t *header, const void *body,
                           const sz_journal_position_t *position, void *context_raw) {
    replay_context_t *context = context_raw;
    if (context->options->until_op != 0 && header->op > context->options->until_op) return 1;
    if (context->options->until_timestamp != 0 &&
        header->timestamp > context->options->until_timestamp) {
        return 1;
    }
    int result = sz_replay_apply(context->ledger, header, body, context->stats, &context->problem);
    if (result < 0) {
        sz_journal_segment_name(position->segment, context->problem.file);
        context->problem.offset = position->offset;
        context->error = result;
    }
    return result;
}

int sz_replay_run(sz_storage_t *storage, const sz_replay_options_t *options, sz_ledger_t *ledger,
                  sz_replay_stats_t *stats_out, sz_journal_problem_t *problem_out) {
    SZ_ASSERT(storage != NULL && options != NULL && ledger != NULL && stats_out != NULL);
    memset(stats_out, 0, sizeof(*stats_out));
    replay_context_t context = {.ledger = ledger, .options = options, .stats = stats_out};
    sz_journal_options_t journal_options = {
        .read_only = true,
        .on_entry = replay_on_entry,
        .entry_context = &context,
        .op_after = options->op_after,
        .chain_head = options->chain_head,
        .archive = options->archive,
    };
    sz_journal_t *journal = NULL;
    int result = sz_journal_open(storage, &journal_options, &journal, problem_out);
    if (context.error != 0) {
        if (problem_out != NULL) *problem_out = context.problem;
        return context.error;
    }
    if (result < 0) return result;
    sz_journal_deinit(journal);
    return 0;
}
