/* replica.h: the ledger thread. It takes checked requests from the request ring,
 * sequences them (op number and timestamp), journals writes by group commit, applies each
 * op to the state machine once it is durable, and pushes replies in op order. A cluster
 * of one for now; followers will plug in between "durable" and "committed".
 *
 * Contract:
 * - sz_replica_open() runs on any thread before the server starts: it opens the journal
 *   (writable, taking the data directory's lock), replays it into a fresh ledger and
 *   rebuilds the reply cache from it. sz_replica_run() then runs on the ledger thread
 *   until sz_replica_stop(); nothing else may touch the replica meanwhile, except
 *   sz_replica_stop() and sz_replica_snapshot_request() (any thread, signal handlers
 *   too) and reading sz_metrics_t.
 * - Snapshots (when config.snapshots.enabled; directory_fd is the server's DATA/snapshots):
 *   - Recovery: sz_replica_open() loads the newest snapshot that verifies (checksums, this
 *     journal's cluster id, and its chain head against the journal's entry of its op), then
 *     replays only the journal after its op; the reply cache comes from the snapshot's
 *     sessions section plus that tail, so an exact retry across a restart still gets its
 *     cached reply. A snapshot that fails is logged (msg=snapshot_invalid) and the one
 *     before it tried; with none left, the whole journal is replayed. A snapshot whose op
 *     is past the journal's end (the journal lost durable ops) is refused: -EUCLEAN, the
 *     problem names both ops, and no older state is served. A snapshot that does not fit
 *     the configured capacities gives -ENOSPC.
 *   - Taking: between two applied ops the ledger thread fork()s; the child writes the
 *     state at op_committed with sz_snapshot_write() (the reply cache as its sessions),
 *     prunes to the newest keep_count, applies journal retention (sz_journal_retire() of
 *     the segments wholly before the oldest snapshot kept), and exits; it first closes
 *     every inherited fd it does not need (so it never holds the data directory's lock)
 *     and never allocates. Messages popped from the request ring are marked
 *     MADV_DONTFORK (the child never reads them). The ledger
 *     thread pauses only for fork() (measured: log pause_us, metrics) and never waits for
 *     the child: it reaps it with waitpid(WNOHANG) at most every millisecond and logs
 *     msg=snapshot_written (or msg=snapshot_failed with the reason). One child at a time;
 *     a trigger that comes while one runs is taken after it. Triggers: every_ops ops
 *     since the last snapshot, every_ns since the last one if any op was applied since,
 *     and sz_replica_snapshot_request() (always writes, even with no new op). The child
 *     dies with the ledger thread (PR_SET_PDEATHSIG); sz_replica_run() waits for a running
 *     child before it returns. A snapshot never fails the server: an error is logged and
 *     counted, and the next trigger tries again.
 * - Requests (sz_message_t, message.h) carry frames the gateway has fully checked. Each
 *   one gets exactly one reply pushed into the reply ring, in the order popped, unless
 *   the journal fails: then sz_replica_run() returns the error and nothing more is
 *   answered (nothing that is not durable is ever answered OK).
 * - Writes (create_*) are answered once their op is durable and applied. Reads are
 *   answered when every op before them has been applied. A write whose (client_id,
 *   request_number) is the client's last write gets that write's reply again, not a new
 *   op (REQUEST_CONFLICT if its body differs); an older request number gets
 *   REQUEST_STALE. The cache keeps the last write of at most clients_max clients (the
 *   least recently used are forgotten; ids still make their creates idempotent).
 * - A write that would not fit the ledger's capacities, counting every op not yet applied,
 *   is answered ACCOUNTS_FULL / TRANSFERS_FULL / PENDING_FULL / HISTORY_FULL without
 *   being journaled.
 * - Expiry: when the clock reaches sz_ledger_expiry_next(), the ledger thread journals an
 *   expire_pending op like any write.
 * - Waiting: the loop spins briefly, then sleeps on the request ring's futex (with a
 *   timeout for the next expiry), so an idle server uses no CPU.
 * - Errors: 0 or a negative errno; sz_replica_open() fills problem_out like
 *   sz_journal_open() and sz_replay_run().
 */
#ifndef SZ_REPLICA_H
#define SZ_REPLICA_H

#include "core/ledger.h"
#include "gateway/metrics.h"
#include "journal/journal.h"
#include "message.h"
#include "ring.h"

/* What happens to journal segments entirely before the oldest snapshot kept. */
typedef enum sz_replica_retention {
    SZ_REPLICA_RETENTION_KEEP = 0,
    SZ_REPLICA_RETENTION_ARCHIVE = 1, /* moved into archive_directory */
    SZ_REPLICA_RETENTION_DELETE = 2,
} sz_replica_retention_t;

typedef struct sz_replica_snapshots {
    bool enabled;          /* false: none taken, none loaded (full replay at open) */
    int directory_fd;
    uint64_t every_ops;    /* 0: not by op count */
    uint64_t every_ns;     /* 0: not by time */
    uint32_t keep_count;   /* snapshots kept by the pruning after each one (0 for 3, at
                              most 1000) */
    uint64_t rate_bytes_per_s; /* the child writes at most this fast, 0: unpaced (see
                                  sz_snapshot_write_paced) */
    sz_replica_retention_t retention; /* applied by the child after each snapshot */
    int data_directory_fd; /* retention: the data directory, whose segments it retires */
    int archive_fd;        /* SZ_REPLICA_RETENTION_ARCHIVE: where they go */
    /* May be NULL. Any thread: the oldest op a reader other than recovery still needs
     * (the stream thread's subscribers), UINT64_MAX for none. Read just before each fork;
     * retention keeps the segment holding it. */
    uint64_t (*op_needed)(void *context);
    void *op_needed_context;
} sz_replica_snapshots_t;

typedef struct sz_replica_config {
    sz_ledger_config_t ledger;
    sz_storage_t *storage;     /* the data directory, formatted; borrowed */
    uint32_t in_flight_max;    /* journal writes in flight, 0 for the default */
    uint32_t clients_max;      /* reply cache entries; 0 for 1024 */
    sz_ring_t *requests;       /* popped by the ledger thread */
    sz_ring_t *replies;        /* pushed by the ledger thread */
    /* Called on the ledger thread after replies were pushed (to wake the gateway). */
    void (*replies_pushed)(void *context);
    void *context;
    sz_metrics_t *metrics;     /* may be NULL */
    /* The time source (ns since the Unix epoch); NULL for CLOCK_REALTIME. A deterministic
     * simulator passes its own. */
    uint64_t (*clock_now_ns)(void *context);
    sz_replica_snapshots_t snapshots;
    /* One logfmt line without its newline ("level=info msg=..."), on the thread that
     * opens or runs the replica; NULL to stay silent. */
    void (*log)(const char *line, void *context);
    /* Subscriptions (helper stream): may be NULL; called on the ledger thread with the
     * new op_committed once per pass that committed ops (not per op); must not block. */
    void (*committed)(uint64_t op_committed, void *context);
} sz_replica_config_t;

typedef struct sz_replica_info {
    sz_u128 cluster_id;
    uint64_t op_last;      /* recovered (after open) or last sequenced */
    uint64_t op_committed;
    uint64_t timestamp_last;
    sz_digest_t digest;
    sz_ledger_stats_t ledger;
    uint64_t loop_count;  /* passes of sz_replica_run()'s loop (to measure its cost) */
    uint64_t sleep_count; /* times it slept on the request ring's futex */
    uint64_t snapshot_op_recovered; /* the snapshot sz_replica_open() started from, 0: none */
    uint64_t op_count_replayed;     /* journal ops replayed by sz_replica_open() */
    uint64_t snapshot_load_ns;      /* of which loading the snapshot took this long */
    uint64_t snapshot_op_last;      /* the newest snapshot written (or recovered from) */
} sz_replica_info_t;

typedef struct sz_replica sz_replica_t;

SZ_MUST_USE int sz_replica_open(const sz_replica_config_t *config, sz_replica_t **replica_out,
                                sz_journal_problem_t *problem_out);
/* The ledger thread's loop. Returns 0 after sz_replica_stop() once every popped request
 * has been answered and the journal flushed, or the journal's error (the message is in
 * sz_replica_error_message()). After sz_replica_stop() it takes what the request ring
 * holds at that moment and pops nothing after it. After a return of 0 it may be run
 * again; after an error, only closed. */
SZ_MUST_USE int sz_replica_run(sz_replica_t *replica);
/* Any thread: asks the loop to finish what it has and return. */
void sz_replica_stop(sz_replica_t *replica);
/* Any thread, async-signal-safe (SIGUSR1): asks for a snapshot as soon as possible. */
void sz_replica_snapshot_request(sz_replica_t *replica);
/* Accepts NULL. Not while sz_replica_run() is running. */
void sz_replica_close(sz_replica_t *replica);

void sz_replica_info(const sz_replica_t *replica, sz_replica_info_t *info_out);
const char *sz_replica_error_message(const sz_replica_t *replica);

#endif
