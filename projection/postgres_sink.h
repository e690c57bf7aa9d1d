/* postgres_sink.h: the projector's Postgres sink. Creates the schema of docs/PROJECTION.md
 * if absent, and writes the learner's rows in batches: one transaction per batch, every
 * table through COPY (binary), and the stream's position updated in that same
 * transaction, so what Postgres holds is always exactly the ops up to the stored position.
 *
 * Two streams, each with its own position row, so that two connections (two Postgres
 * backends, the two cores) write at once: "postgres" carries transfers, rejected events and
 * expirations (and the Kafka position); "entries" carries the double-entry lines and the
 * accounts (created rows and balance updates), so lines and balances always agree.
 * The projector's position is the lower of the two.
 *
 * Contract:
 * - One thread uses a sink (libpq connections are not shared); batches are separate
 *   objects, so the projector encodes the next batch while a writer thread commits one.
 * - A batch collects the rows of ops op_first..op_last in order (sz_postgres_batch_add_op),
 *   then the current rows of the accounts they changed (sz_postgres_batch_add_accounts,
 *   read from the learner's ledger at op_last), then sz_postgres_commit() writes it.
 * - sz_postgres_commit() first locks the position row and checks it: equal to op_first - 1,
 *   it writes and commits; already equal to op_last (an earlier commit whose answer was lost
 *   with the connection), it only reports success; anything else is -ESTALE (another
 *   projector, or a database that is not this journal's): nothing is written.
 *   Any other failure (Postgres down, a statement failing) rolls back and returns a negative
 *   errno with the batch kept intact: calling commit again (after sz_postgres_connect())
 *   retries the same transaction. -ENOTCONN means the connection is gone.
 * - The Kafka position is a row of the position table too, written by the transfers
 *   stream's transactions (kafka_op of the batch; 0 leaves it as it is).
 * - Sessions use synchronous_commit=off: a Postgres crash may lose the last transactions,
 *   but rows and position together, so the projector resumes from the older position.
 * - Errors: 0 or a negative errno; sz_postgres_error_message() says what failed in one line. */
#ifndef SZ_POSTGRES_SINK_H
#define SZ_POSTGRES_SINK_H

#include "learner.h"

typedef struct sz_postgres sz_postgres_t;
typedef struct sz_postgres_batch sz_postgres_batch_t;

typedef enum sz_postgres_stream {
    SZ_POSTGRES_STREAM_TRANSFERS = 0, /* position row "postgres" */
    SZ_POSTGRES_STREAM_ENTRIES = 1,   /* position row "entries" */
} sz_postgres_stream_t;

typedef struct sz_postgres_positions {
    uint64_t postgres_op; /* transfers, rejected, expirations of ops up to this one; 0: none */
    uint64_t entries_op;  /* lines and accounts of ops up to this one; 0: none */
    uint64_t kafka_op;    /* ops up to this one were delivered to Kafka; 0: none */
    sz_u128 cluster_id;   /* of the journal projected; 0 before the first commit */
} sz_postgres_positions_t;

typedef struct sz_postgres_batch_stats {
    uint64_t op_first;
    uint64_t op_last;
    uint64_t transfer_count;
    uint64_t line_count;
    uint64_t rejected_count;
    uint64_t expired_count;
    uint64_t account_count;
    uint64_t byte_count;
} sz_postgres_batch_stats_t;

/* Allocates the sink; does not connect. conninfo is libpq's (a URI or key=value). */
SZ_MUST_USE int sz_postgres_open(const char *conninfo, sz_postgres_t **sink_out);
void sz_postgres_close(sz_postgres_t *sink);

/* (Re)connects, creates the schema if absent and prepares the session. */
SZ_MUST_USE int sz_postgres_connect(sz_postgres_t *sink);
bool sz_postgres_connected(const sz_postgres_t *sink);
SZ_MUST_USE int sz_postgres_positions_read(sz_postgres_t *sink,
                                           sz_postgres_positions_t *positions_out);

/* A batch is plain memory (no connection): one thread may encode one batch while another
 * commits a different one. */
SZ_MUST_USE int sz_postgres_batch_init(sz_postgres_stream_t stream,
                                       sz_postgres_batch_t **batch_out);
void sz_postgres_batch_free(sz_postgres_batch_t *batch);
/* Empties the batch; it will follow op_after (its stream's position in Postgres). A batch
 * encodes only its stream's tables; add_accounts is for the entries stream, kafka_op for
 * the transfers stream. */
void sz_postgres_batch_begin(sz_postgres_batch_t *batch, uint64_t op_after, sz_u128 cluster_id);
SZ_MUST_USE int sz_postgres_batch_add_op(sz_postgres_batch_t *batch, const sz_learner_op_t *op);
SZ_MUST_USE int sz_postgres_batch_add_accounts(sz_postgres_batch_t *batch,
                                               const sz_account_t *accounts,
                                               uint32_t account_count);
void sz_postgres_batch_kafka_op(sz_postgres_batch_t *batch, uint64_t kafka_op);
void sz_postgres_batch_stats(const sz_postgres_batch_t *batch,
                             sz_postgres_batch_stats_t *stats_out);
/* True if the batch has nothing to write (no op and no Kafka position change). */
bool sz_postgres_batch_empty(const sz_postgres_batch_t *batch);
/* What made add_op / add_accounts fail (out of memory, a timestamp beyond bigint). */
const char *sz_postgres_batch_error_message(const sz_postgres_batch_t *batch);

SZ_MUST_USE int sz_postgres_commit(sz_postgres_t *sink, const sz_postgres_batch_t *batch);

/* Runs one SQL statement that returns a single value and copies its text (tests, verify). */
SZ_MUST_USE int sz_postgres_query_value(sz_postgres_t *sink, const char *sql, char *value_out,
                                        size_t value_size);
/* The underlying libpq connection (PGconn *) for --verify's queries; NULL if none. */
void *sz_postgres_connection(sz_postgres_t *sink);

const char *sz_postgres_error_message(const sz_postgres_t *sink);

#endif
