/* ledger.h: the state machine. Accounts and transfers in memory, applied one batch at a
 * time exactly as ../shared/SEMANTICS.md says, with a running state digest.
 *
 * Contract:
 * - One thread owns a ledger: nothing here locks. Every function is deterministic: the
 *   same sequence of calls with the same arguments gives the same results, the same state
 *   and the same digest. No clock (timestamps come in the call), no I/O, no randomness.
 * - sz_ledger_init() reserves all memory from the configured capacities (one anonymous
 *   mapping); nothing allocates after it. sz_ledger_deinit() accepts a half-built ledger.
 * - Write batches (create_*, expire) take the op's timestamp. For a create batch of n
 *   events the caller passes T (see sz_ledger_timestamp_next()) and event i gets T + i.
 *   Input events are never modified: the stored records are copies.
 * - A write batch either applies (SZ_BATCH_APPLIED: per-event results written) or is
 *   refused whole (any other status: nothing applied, state, timestamps and digest
 *   unchanged). Capacity is checked against the batch's worst case before anything
 *   applies: a create_transfers batch of n events needs room for n transfers, n pending
 *   timeouts and 2n history rows, so the last few thousand records of a capacity are
 *   only usable by smaller batches.
 * - Queries never change the state and never fail: an invalid filter gives no rows.
 * - Results of create batches: only the events that were not ok, as {index, result},
 *   ascending; the count is returned through result_count_out.
 */
#ifndef SZ_LEDGER_H
#define SZ_LEDGER_H

#include "records.h"

typedef struct sz_ledger_config {
    uint32_t accounts_max;
    uint32_t transfers_max;
    /* Pending transfers with a timeout that may be waiting for expiry at once. Pending
     * transfers without a timeout need no room here. */
    uint32_t pending_max;
    /* AccountBalance rows kept for accounts with the history flag. */
    uint32_t history_max;
    /* Seeds the id hash: layout only, never results, so any value is correct. */
    uint64_t hash_seed;
    /* Touch every page at init so that no page fault ever lands in a batch (servers and
     * benchmarks); tests leave it off and pay only for what they use. */
    bool prefault;
} sz_ledger_config_t;

/* Every capacity must be at least one and at most this. */
#define SZ_LEDGER_CAPACITY_MAX (UINT32_MAX / 4u)

/* The highest timestamp a write batch may take: room for a full batch below 2^64 (ns since
 * the Unix epoch: the year 2554). */
#define SZ_TIMESTAMP_MAX (UINT64_MAX - SZ_BATCH_EVENTS_MAX)

typedef enum sz_batch_status {
    SZ_BATCH_APPLIED = 0,
    SZ_BATCH_TOO_MANY_EVENTS = 1, /* more than SZ_BATCH_EVENTS_MAX events */
    SZ_BATCH_TIMESTAMP_INVALID = 2, /* not above the last timestamp, or above SZ_TIMESTAMP_MAX */
    SZ_BATCH_ACCOUNTS_FULL = 3,
    SZ_BATCH_TRANSFERS_FULL = 4,
    SZ_BATCH_PENDING_FULL = 5,
    SZ_BATCH_HISTORY_FULL = 6,
} sz_batch_status_t;

const char *sz_batch_status_name(uint32_t status);

/* A pending transfer expired by an expire op. */
#define SZ_EXPIRE_EVENTS_MAX SZ_BATCH_EVENTS_MAX

typedef struct sz_digest {
    uint64_t low;
    uint64_t high;
} sz_digest_t;

typedef struct sz_ledger_stats {
    uint64_t account_count;
    uint64_t transfer_count;
    uint64_t pending_count;  /* entries in the expiry queue, including stale ones */
    uint64_t history_count;
    uint64_t memory_size;    /* bytes reserved by sz_ledger_init() */
    uint64_t op_count;       /* write batches applied (refused ones not counted) */
    uint64_t timestamp_last; /* the last timestamp given to an event, 0 at start */
} sz_ledger_stats_t;

typedef struct sz_ledger sz_ledger_t;

/* Bytes sz_ledger_init() would reserve for this configuration (0 if it is invalid). */
size_t sz_ledger_memory_size(const sz_ledger_config_t *config);

/* Returns 0, -EINVAL for a capacity of 0 or above SZ_LEDGER_CAPACITY_MAX, or -ENOMEM. */
SZ_MUST_USE int sz_ledger_init(const sz_ledger_config_t *config, sz_ledger_t **ledger_out);
void sz_ledger_deinit(sz_ledger_t *ledger);

/* T for the next create batch: max(timestamp_last + 1, clock_now_ns). Pure. */
uint64_t sz_ledger_timestamp_next(const sz_ledger_t *ledger, uint64_t clock_now_ns);

/* The status a write batch of this operation and size would get for capacity and
 * size, without applying it (lets the leader refuse before journaling). */
sz_batch_status_t sz_ledger_capacity_check(const sz_ledger_t *ledger, sz_operation_t operation,
                                           uint32_t event_count);

/* Room already promised to write batches that are sequenced but not yet applied (a
 * leader journals ahead of applying): each counted at its worst case, as above (n
 * accounts; or n transfers, n pending and 2n history rows). */
typedef struct sz_ledger_reservation {
    uint64_t account_count;
    uint64_t transfer_count;
    uint64_t pending_count;
    uint64_t history_count;
} sz_ledger_reservation_t;

/* sz_ledger_capacity_check() for a batch that will apply after every reserved one: if it
 * passes, the batch cannot be refused for capacity when its turn comes, whatever the
 * batches before it do. Pure. */
sz_batch_status_t sz_ledger_capacity_check_reserved(const sz_ledger_t *ledger,
                                                    sz_operation_t operation,
                                                    uint32_t event_count,
                                                    const sz_ledger_reservation_t *reserved);

/* Adds (or, with release, takes back) a batch's worst case to a reservation. */
void sz_ledger_reservation_add(sz_ledger_reservation_t *reservation, sz_operation_t operation,
                               uint32_t event_count, bool release);

/* results_out must have room for event_count entries. */
sz_batch_status_t sz_ledger_create_accounts(sz_ledger_t *ledger, const sz_account_t *events,
                                            uint32_t event_count, uint64_t timestamp,
                                            sz_create_result_t *results_out,
                                            uint32_t *result_count_out);
sz_batch_status_t sz_ledger_create_transfers(sz_ledger_t *ledger, const sz_transfer_t *events,
                                             uint32_t event_count, uint64_t timestamp,
                                             sz_create_result_t *results_out,
                                             uint32_t *result_count_out);

/* How many events ahead the create loops hash and prefetch accounts and ids (default
 * SZ_LEDGER_PREFETCH_DISTANCE_DEFAULT); 0 turns prefetching off (for benchmarks). Layout
 * only: results and digest do not depend on it. */
#define SZ_LEDGER_PREFETCH_DISTANCE_MAX 32u
#define SZ_LEDGER_PREFETCH_DISTANCE_DEFAULT 12u
void sz_ledger_prefetch_set(sz_ledger_t *ledger, uint32_t distance);

/* The earliest expiry (ns) among pending transfers still waiting, or UINT64_MAX if none.
 * The leader runs an expire op when its clock reaches it. */
uint64_t sz_ledger_expiry_next(const sz_ledger_t *ledger);

/* Expires, in (expiry time, creation timestamp) order, up to SZ_EXPIRE_EVENTS_MAX pending
 * transfers whose expiry is at or before timestamp, releasing their pending amounts.
 * timestamp must be above the last timestamp and at most SZ_TIMESTAMP_MAX (it is consumed
 * like a one-event batch).
 * The ids of the expired transfers go to expired_ids_out (room for SZ_EXPIRE_EVENTS_MAX,
 * may be NULL) and their count to expired_count_out. */
sz_batch_status_t sz_ledger_expire_pending(sz_ledger_t *ledger, uint64_t timestamp,
                                           sz_u128 *expired_ids_out,
                                           uint32_t *expired_count_out);

/* Lookups write the records that exist, in request order, and return how many. The
 * returned accounts and transfers are exactly what a client sees. */
uint32_t sz_ledger_lookup_accounts(const sz_ledger_t *ledger, const sz_u128 *ids,
                                   uint32_t id_count, sz_account_t *accounts_out);
uint32_t sz_ledger_lookup_transfers(const sz_ledger_t *ledger, const sz_u128 *ids,
                                    uint32_t id_count, sz_transfer_t *transfers_out);

/* At most min(filter->limit, row_count_max, SZ_BATCH_EVENTS_MAX) rows: one reply's worth;
 * page with timestamp_min / timestamp_max for more. */
uint32_t sz_ledger_get_account_transfers(const sz_ledger_t *ledger,
                                         const sz_account_filter_t *filter,
                                         uint32_t row_count_max, sz_transfer_t *transfers_out);
uint32_t sz_ledger_get_account_balances(const sz_ledger_t *ledger,
                                        const sz_account_filter_t *filter,
                                        uint32_t row_count_max,
                                        sz_account_balance_t *balances_out);

/* The running XXH3-128 state digest: changes with every applied batch (its operation,
 * timestamp, events and results); equal digests mean equal op histories. */
sz_digest_t sz_ledger_digest(const sz_ledger_t *ledger);

void sz_ledger_stats(const sz_ledger_t *ledger, sz_ledger_stats_t *stats_out);

/* Checks every invariant: per ledger, the sums of debits_posted and credits_posted are
 * equal and so are the sums of debits_pending and credits_pending; no account breaks its
 * limit flag; the indexes agree with the records. Returns 0 or -EUCLEAN, and on failure
 * writes one line naming the broken invariant to message_out (if not NULL). Linear in the
 * state: for tests, replay --verify and debug builds. */
SZ_MUST_USE int sz_ledger_verify(const sz_ledger_t *ledger, char *message_out,
                                 size_t message_size);

/* ---------------------------------------------------------------------------------------
 * Snapshots: the state as a few scalars and five parts of fixed-size records, read in
 * place by snapshot/ and loaded straight back into a fresh ledger.
 *
 * - Export never copies the arrays: sz_ledger_export_array() points into the ledger (valid
 *   until its next write batch or deinit). Accounts live inside the id table, so they are
 *   copied out in creation order, a run at a time, with sz_ledger_export_accounts(). Export
 *   only reads (safe in a forked child: no allocation, no formatting, no locks).
 * - Import fills a fresh ledger (initialised, no batch applied): sz_ledger_import_begin()
 *   with the exported scalars, then each array written in full at sz_ledger_import_array()
 *   and the accounts appended in creation order with sz_ledger_import_accounts(), in any
 *   order of parts, then sz_ledger_import_finish(). The id tables are layout (they depend
 *   on the capacities and the hash seed) and are rebuilt, so the loading ledger's
 *   capacities and hash seed may differ from the writer's as long as the state fits.
 * - The result has the exporter's digest, stats (memory_size is the loader's own), answers
 *   and future: the same ops applied to both give the same results and digests.
 * - Import never asserts on the records: what cannot be a ledger's state (a duplicate or
 *   reserved id, a link or history row out of range, timestamps out of order, a broken
 *   heap, counts that disagree) gives -EUCLEAN with one line in message_out, and the
 *   ledger must then only be deinitialised. It checks structure, not balances:
 *   sz_ledger_verify() does that.
 * - The layouts of the meta and expiry records are internal: a file format records
 *   SZ_LEDGER_PART record sizes and must change its version when they change. */

typedef enum sz_ledger_part {
    SZ_LEDGER_PART_ACCOUNTS = 0,       /* sz_account_t, creation order; `reserved` holds the
                                          account's newest transfer link (index + 1) */
    SZ_LEDGER_PART_TRANSFERS = 1,      /* sz_transfer_t, creation (= timestamp) order */
    SZ_LEDGER_PART_TRANSFER_METAS = 2, /* one per transfer: account list links, history
                                          rows, pending state */
    SZ_LEDGER_PART_EXPIRY = 3,         /* the expiry heap in heap order, stale entries too */
    SZ_LEDGER_PART_HISTORY = 4,        /* sz_account_balance_t rows */
    SZ_LEDGER_PART_COUNT = 5,
} sz_ledger_part_t;

typedef struct sz_ledger_image {
    uint64_t record_counts[SZ_LEDGER_PART_COUNT];
    uint64_t pending_live; /* expiry entries still pending (checked at import) */
    uint64_t op_count;
    uint64_t timestamp_last;
    sz_digest_t digest;
} sz_ledger_image_t;

/* The memory of the transfer id table: layout only (rebuilt by import, never exported), so
 * a process that forks a snapshot writer may keep it out of the child (MADV_DONTFORK).
 * Page aligned; a part of the ledger's own mapping. */
void sz_ledger_transfer_index_memory(const sz_ledger_t *ledger, void **address_out,
                                     size_t *size_out);

/* Bytes per record of a part (128, 128, 16, 24, 128), and its name ("accounts"...). */
uint32_t sz_ledger_part_record_size(sz_ledger_part_t part);
const char *sz_ledger_part_name(sz_ledger_part_t part);

void sz_ledger_export(const sz_ledger_t *ledger, sz_ledger_image_t *image_out);
/* The records of an array part (not accounts), record_counts[part] of them. */
const void *sz_ledger_export_array(const sz_ledger_t *ledger, sz_ledger_part_t part);
/* Copies accounts [first, first + count) in creation order, links included; returns how
 * many exist in that range. */
uint32_t sz_ledger_export_accounts(const sz_ledger_t *ledger, uint32_t first, uint32_t count,
                                   sz_account_t *accounts_out);

/* -EINVAL if the ledger is not fresh, -ENOSPC if a count exceeds its capacity, -EUCLEAN
 * if the counts disagree (metas and transfers, live and queued pending). */
SZ_MUST_USE int sz_ledger_import_begin(sz_ledger_t *ledger, const sz_ledger_image_t *image,
                                       char *message_out, size_t message_size);
/* Where the image's record_counts[part] records of an array part go (not accounts). */
void *sz_ledger_import_array(sz_ledger_t *ledger, sz_ledger_part_t part);
/* Appends accounts in creation order: -EUCLEAN for a duplicate or reserved id, a link
 * beyond the image's transfers, or more accounts than the image said. */
SZ_MUST_USE int sz_ledger_import_accounts(sz_ledger_t *ledger, const sz_account_t *accounts,
                                          uint32_t count, char *message_out,
                                          size_t message_size);
/* Rebuilds the transfer id table, checks every part's structure and sets the scalars. */
SZ_MUST_USE int sz_ledger_import_finish(sz_ledger_t *ledger, char *message_out,
                                        size_t message_size);

#endif
