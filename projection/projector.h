/* projector.h: the projector's loop and its check. sz_projector_run() reads committed
 * entries from a source, applies them to its learner and writes Postgres (and Kafka when
 * configured); sz_projector_verify() compares Postgres with a ledger rebuilt from the source.
 *
 * Contract:
 * - One thread calls these; sz_projector_run() starts two writer threads of its own (one
 *   per Postgres stream, postgres_sink.h) and joins them before it returns.
 * - The source must start at op 1: the projector rebuilds its ledger from the beginning,
 *   writing nothing to a stream for ops at or below that stream's stored position, and
 *   writes every op after it (Kafka: every op after Kafka's stored position).
 * - A batch holds up to batch_rows_max rows (transfers + lines + rejected + expired), or
 *   what arrived in batch_ms_max, or what arrived before the source went idle; each stream
 *   commits its part of it in one transaction with its position (and the transfers stream
 *   with Kafka's delivered position): a crash loses nothing and repeats nothing.
 * - Postgres unreachable or failing: the writer retries with backoff (50 ms doubling to
 *   retry_ms_max) until it works or *stop becomes non-zero; the learner waits meanwhile
 *   (at most one more batch is encoded).
 * - Returns 0 when the source ended (a journal source, follow = false) and everything read
 *   is committed (and delivered to Kafka, waiting up to 10 s), or when *stop was set
 *   (after committing what it could); a negative errno otherwise, with error_out saying
 *   what. A position that does not match (another projector, or a database of another
 *   journal or cluster) is -ESTALE.
 * - stats_out is written by the calling thread while it runs, except retry_count, which
 *   the writers increment atomically (tests read it with __atomic_load_n).
 * - sz_projector_verify() returns 0 if everything matches, 1 on a mismatch (the report names
 *   each), or a negative errno if it could not check. */
#ifndef SZ_PROJECTOR_H
#define SZ_PROJECTOR_H

#include <signal.h>
#include <stdio.h>

#include "core/ledger.h"
#include "kafka.h"
#include "source.h"

#define SZ_PROJECTOR_BATCH_ROWS_DEFAULT 1000000u
#define SZ_PROJECTOR_BATCH_MS_DEFAULT 500u
#define SZ_PROJECTOR_RETRY_MS_DEFAULT 5000u

typedef struct sz_projector_options {
    sz_source_t *source;          /* from op 1 */
    const char *conninfo;         /* libpq connection string */
    sz_ledger_config_t ledger;    /* at least the server's capacities */
    const sz_kafka_config_t *kafka; /* NULL: no Kafka */
    uint32_t batch_rows_max;      /* 0: default */
    uint32_t batch_ms_max;        /* 0: default */
    uint32_t retry_ms_max;        /* 0: default */
    bool follow;                  /* false: return at the end of the source */
    const volatile sig_atomic_t *stop; /* may be NULL */
    FILE *log;                    /* one line per event worth telling (NULL: silent) */
} sz_projector_options_t;

typedef struct sz_projector_stats {
    uint64_t op_last;             /* the last op applied */
    uint64_t op_position;         /* the last op both streams committed */
    uint64_t op_resumed;          /* the lower stream position found at start */
    uint64_t op_written_count;    /* ops written by this run */
    uint64_t transfer_count;      /* transfer rows written by this run */
    uint64_t line_count;
    uint64_t rejected_count;
    uint64_t expired_count;
    uint64_t batch_count;
    uint64_t retry_count;         /* failed transactions or connects retried */
    uint64_t commit_ns[2];        /* time each stream's writer spent committing (transfers,
                                     entries), retries included */
    uint64_t rebuild_ns;          /* time to rebuild up to the stored position */
    uint64_t write_ns;            /* time from the first op written to the end */
} sz_projector_stats_t;

SZ_MUST_USE int sz_projector_run(const sz_projector_options_t *options,
                                 sz_projector_stats_t *stats_out, char *error_out,
                                 size_t error_size);

SZ_MUST_USE int sz_projector_verify(const sz_projector_options_t *options, FILE *report,
                                    char *error_out, size_t error_size);

#endif
