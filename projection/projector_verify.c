/* projector_verify.c: `sumzero project --verify` (projector.h): rebuilds the ledger from the
 * source up to the position stored in Postgres, counting what the projector must have
 * written, and compares: row counts per table, no transfer twice, every ledger's lines
 * summing to zero, every account's balances, and every account's lines summing to its
 * posted balance. Read-only on both sides. */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "learner.h"
#include "postgres_sink.h"
#include "projector.h"

typedef struct verify_counts {
    uint64_t transfer_count;
    uint64_t line_count;
    uint64_t rejected_count;
    uint64_t expired_count;
} verify_counts_t;

typedef struct verify {
    FILE *report;
    sz_postgres_t *sink;
    sz_learner_t *learner;
    uint64_t mismatch_count;
    sz_u128 cluster_id; /* stored with the positions; 0 before the first commit */
    char *error;
    size_t error_size;
} verify_t;

/* Applies ops up to op_until, counting transfers, rejected and expired of ops up to
 * positions->postgres_op and lines of ops up to positions->entries_op. */
static int verify_rebuild(verify_t *verify, sz_source_t *source, uint64_t op_until,
                          const sz_postgres_positions_t *positions, verify_counts_t *counts) {
    while (sz_learner_op_last(verify->learner) < op_until) {
        const sz_journal_header_t *header = NULL;
        const void *body = NULL;
        int result = sz_source_next(source, &header, &body, 1000);
        if (result == 0) continue;
        if (result == -ENODATA) {
            snprintf(verify->error, verify->error_size,
                     "the source ends at op %" PRIu64 " but Postgres holds ops up to %" PRIu64,
                     sz_learner_op_last(verify->learner), op_until);
            return -EUCLEAN;
        }
        if (result < 0) {
            snprintf(verify->error, verify->error_size, "%s", source->error_message);
            return result;
        }
        if (verify->cluster_id != 0 && header->cluster_id != verify->cluster_id) {
            char stored[SZ_U128_DECIMAL_SIZE], found[SZ_U128_DECIMAL_SIZE];
            snprintf(verify->error, verify->error_size,
                     "postgres holds the projection of cluster %s, the source is cluster %s",
                     sz_u128_format(verify->cluster_id, stored),
                     sz_u128_format(header->cluster_id, found));
            return -ESTALE;
        }
        sz_learner_op_t op;
        sz_journal_problem_t problem;
        result = sz_learner_apply(verify->learner, header, body, true, &op, &problem);
        if (result < 0) {
            snprintf(verify->error, verify->error_size, "%s", problem.reason);
            return result;
        }
        sz_learner_dirty_clear(verify->learner);
        if (header->op <= positions->postgres_op) {
            counts->transfer_count += op.transfer_count;
            counts->rejected_count += op.result_count;
            counts->expired_count += op.expired_count;
        }
        if (header->op <= positions->entries_op) counts->line_count += op.line_count;
    }
    return 0;
}

static int verify_count(verify_t *verify, const char *what, const char *sql, uint64_t expected) {
    char text[64];
    int result = sz_postgres_query_value(verify->sink, sql, text, sizeof(text));
    if (result < 0) {
        snprintf(verify->error, verify->error_size, "%s", sz_postgres_error_message(verify->sink));
        return result;
    }
    uint64_t found = strtoull(text, NULL, 10);
    bool ok = found == expected;
    fprintf(verify->report, "%-44s postgres %" PRIu64 ", ledger %" PRIu64 "  %s\n", what, found,
            expected, ok ? "ok" : "MISMATCH");
    if (!ok) verify->mismatch_count++;
    return 0;
}

/* Compares one account row with the ledger's account: true if equal; else reports it
 * (the first ten). */
static bool verify_account_row(verify_t *verify, const PGresult *result, uint64_t differing) {
    const sz_ledger_t *ledger = sz_learner_ledger(verify->learner);
    sz_u128 values[5];
    bool parsed = true;
    for (int column = 0; column < 5; column++) {
        parsed = parsed && sz_u128_parse(PQgetvalue(result, 0, column), &values[column]) == 0;
    }
    sz_account_t account;
    bool found = parsed && sz_ledger_lookup_accounts(ledger, &values[0], 1, &account) == 1;
    bool equal = found && account.debits_pending == values[1] &&
                 account.debits_posted == values[2] && account.credits_pending == values[3] &&
                 account.credits_posted == values[4] &&
                 strtoull(PQgetvalue(result, 0, 5), NULL, 10) == account.ledger &&
                 strtoull(PQgetvalue(result, 0, 6), NULL, 10) == account.code &&
                 strtoull(PQgetvalue(result, 0, 7), NULL, 10) == account.flags;
    if (!equal && differing < 10) {
        fprintf(verify->report, "  account %s: %s\n", PQgetvalue(result, 0, 0),
                !parsed  ? "a value that is not a u128"
                : !found ? "not in the ledger"
                         : "balances or fields differ from the ledger's");
    }
    return equal;
}

/* Compares every account row with the ledger's account, one row at a time (libpq's
 * single-row mode), so millions of accounts never sit in memory at once. */
static int verify_accounts(verify_t *verify) {
    PGconn *connection = sz_postgres_connection(verify->sink);
    if (PQsendQuery(connection, "SELECT id, debits_pending, debits_posted, credits_pending, "
                                "credits_posted, ledger, code, flags FROM sumzero.accounts") != 1 ||
        PQsetSingleRowMode(connection) != 1) {
        snprintf(verify->error, verify->error_size, "postgres: read the accounts: %s",
                 PQerrorMessage(connection));
        return -EIO;
    }
    uint64_t differing = 0;
    uint64_t rows = 0;
    int outcome = 0;
    PGresult *result;
    while ((result = PQgetResult(connection)) != NULL) {
        ExecStatusType status = PQresultStatus(result);
        if (status == PGRES_SINGLE_TUPLE) {
            if (!verify_account_row(verify, result, differing)) differing++;
            rows++;
        } else if (status != PGRES_TUPLES_OK && outcome == 0) {
            snprintf(verify->error, verify->error_size, "postgres: read the accounts: %s",
                     PQresultErrorMessage(result));
            outcome = -EIO;
        }
        PQclear(result);
    }
    if (outcome < 0) return outcome;
    fprintf(verify->report, "%-44s %" PRIu64 " of %" PRIu64 " differ  %s\n", "account balances",
            differing, rows, differing == 0 ? "ok" : "MISMATCH");
    if (differing != 0) verify->mismatch_count++;
    return 0;
}

static int verify_zero(verify_t *verify, const char *what, const char *sql) {
    char text[64];
    int result = sz_postgres_query_value(verify->sink, sql, text, sizeof(text));
    if (result < 0) {
        snprintf(verify->error, verify->error_size, "%s", sz_postgres_error_message(verify->sink));
        return result;
    }
    bool ok = strcmp(text, "0") == 0;
    fprintf(verify->report, "%-44s %s found  %s\n", what, text, ok ? "ok" : "MISMATCH");
    if (!ok) verify->mismatch_count++;
    return 0;
}

static int verify_count_ops(verify_t *verify, const char *what, const char *table,
                            uint64_t op_position, uint64_t expected) {
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM sumzero.%s WHERE op <= %" PRIu64, table,
             op_position);
    int result = verify_count(verify, what, sql, expected);
    if (result < 0) return result;
    char beyond[128];
    snprintf(beyond, sizeof(beyond), "%s beyond the position", table);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM sumzero.%s WHERE op > %" PRIu64, table,
             op_position);
    return verify_count(verify, beyond, sql, 0);
}

/* The entries stream, with the ledger at its position: lines and accounts. */
static int verify_entries(verify_t *verify, uint64_t op_position, const verify_counts_t *counts) {
    sz_ledger_stats_t ledger_stats;
    sz_ledger_stats(sz_learner_ledger(verify->learner), &ledger_stats);
    int result = verify_count_ops(verify, "entries (lines)", "entries", op_position,
                                  counts->line_count);
    if (result == 0) {
        result = verify_count(verify, "accounts", "SELECT count(*) FROM sumzero.accounts",
                              ledger_stats.account_count);
    }
    if (result == 0) {
        result = verify_zero(verify, "ledgers whose lines do not sum to zero",
                             "SELECT count(*) FROM (SELECT ledger FROM sumzero.entries GROUP BY "
                             "ledger HAVING sum(amount) <> 0) AS unbalanced");
    }
    if (result == 0) {
        result = verify_zero(
            verify, "accounts whose lines miss their balance",
            "SELECT count(*) FROM sumzero.accounts a LEFT JOIN (SELECT account_id, sum(amount) "
            "AS total FROM sumzero.entries GROUP BY account_id) e ON e.account_id = a.id WHERE "
            "coalesce(e.total, 0) <> a.credits_posted - a.debits_posted");
    }
    if (result == 0) result = verify_accounts(verify);
    return result;
}

/* The transfers stream: transfers, rejected events, expirations. */
static int verify_transfers(verify_t *verify, uint64_t op_position, const verify_counts_t *counts) {
    int result = verify_count_ops(verify, "transfers", "transfers", op_position,
                                  counts->transfer_count);
    if (result == 0) {
        result = verify_count_ops(verify, "rejected events", "rejected", op_position,
                                  counts->rejected_count);
    }
    if (result == 0) {
        result = verify_count_ops(verify, "expired pending transfers", "expirations",
                                  op_position, counts->expired_count);
    }
    if (result == 0) {
        result = verify_zero(verify, "transfer ids written twice",
                             "SELECT count(*) FROM (SELECT id FROM sumzero.transfers GROUP BY id "
                             "HAVING count(*) > 1) AS twice");
    }
    return result;
}

static int verify_compare(verify_t *verify, sz_source_t *source,
                          const sz_postgres_positions_t *positions) {
    verify_counts_t counts;
    memset(&counts, 0, sizeof(counts));
    uint64_t op_last = positions->postgres_op > positions->entries_op ? positions->postgres_op
                                                                     : positions->entries_op;
    /* The ledger must stand at the entries position to compare balances. */
    int result = verify_rebuild(verify, source, positions->entries_op, positions, &counts);
    if (result == 0) result = verify_entries(verify, positions->entries_op, &counts);
    if (result == 0) result = verify_rebuild(verify, source, op_last, positions, &counts);
    if (result == 0) result = verify_transfers(verify, positions->postgres_op, &counts);
    return result;
}

int sz_projector_verify(const sz_projector_options_t *options, FILE *report, char *error_out,
                        size_t error_size) {
    SZ_ASSERT(options != NULL && options->source != NULL && report != NULL);
    error_out[0] = 0;
    verify_t verify = {.report = report, .error = error_out, .error_size = error_size};
    int result = sz_learner_init(&options->ledger, &verify.learner);
    if (result < 0) {
        snprintf(error_out, error_size, "cannot reserve the ledger: %s", strerror(-result));
        return result;
    }
    result = sz_postgres_open(options->conninfo, &verify.sink);
    if (result == 0) result = sz_postgres_connect(verify.sink);
    sz_postgres_positions_t positions;
    if (result == 0) result = sz_postgres_positions_read(verify.sink, &positions);
    if (result < 0 && error_out[0] == 0) {
        snprintf(error_out, error_size, "%s",
                 verify.sink != NULL ? sz_postgres_error_message(verify.sink) : "out of memory");
    }
    if (result == 0) verify.cluster_id = positions.cluster_id;
    if (result == 0) {
        fprintf(report,
                "verify: postgres holds transfers of ops 1..%" PRIu64 ", lines and accounts of "
                "ops 1..%" PRIu64 "; rebuilding the ledger\n",
                positions.postgres_op, positions.entries_op);
        result = verify_compare(&verify, options->source, &positions);
    }
    if (result == 0) {
        fprintf(report, "verify: %s (%" PRIu64 " mismatches) at ops %" PRIu64 " and %" PRIu64 "\n",
                verify.mismatch_count == 0 ? "ok" : "FAILED", verify.mismatch_count,
                positions.postgres_op, positions.entries_op);
        result = verify.mismatch_count == 0 ? 0 : 1;
    }
    sz_postgres_close(verify.sink);
    sz_learner_deinit(verify.learner);
    return result;
}
