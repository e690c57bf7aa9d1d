/* journal.h: the append-only journal of committed ops: a checksummed superblock and
 * preallocated segment files of hash-chained entries, written by group commit (one
 * O_DIRECT write linked to one fdatasync per submission, a bounded number in flight).
 *
 * Contract:
 * - One thread owns a journal (the ledger thread, or a tool): nothing here locks. A
 *   writable journal holds the data directory's lock until sz_journal_deinit().
 * - Every fallible function returns 0 or a negative errno. Damage on disk is never an
 *   assertion: sz_journal_open() returns -EUCLEAN and fills a sz_journal_problem_t naming
 *   the file, offset and op; a superblock that is missing gives -ENOENT, a directory
 *   locked by another writer -EWOULDBLOCK.
 * - Ops are numbered from 1 without gaps. sz_journal_append() copies the entry into the
 *   current group-commit buffer (the caller keeps its body); everything appended since
 *   the last submission goes out as one write when the caller calls sz_journal_submit(),
 *   when the buffer is full, or when sz_journal_poll() finds a free slot. At most
 *   in_flight_max writes are in flight; when the window and the buffer are both full,
 *   append returns -EAGAIN and the caller polls.
 * - Durability: on_durable(op_durable) is called from sz_journal_poll() (or flush, or an
 *   append that had to drain at a segment boundary) with the highest op such that it
 *   and every op before it are on disk (write complete and fdatasync returned 0). Ops are
 *   never reported out of order. The first failed write, short write that cannot be
 *   finished, or fdatasync error stops the journal: nothing more is reported durable,
 *   and every later call returns that error; sz_journal_error_message() says what failed.
 * - Recovery at open: every entry is checked (header and body XXH3-128, op sequence, the
 *   hash chain to the previous header). Where the chain ends, the rest of the journal is
 *   searched for later entries: if one of them records (op_durable) that the missing op
 *   had been durable, this is corruption (-EUCLEAN); otherwise the end is a torn tail of
 *   writes that were never acknowledged, and a writable open zeroes it. A read-only open
 *   changes nothing on disk. Consequence: damage inside the last in_flight_max writes is
 *   indistinguishable from a torn write and is truncated; anywhere before, it is
 *   corruption.
 * - Starting after an op (options.op_after, chain_head): the early segments are skipped
 *   unread, so they may be missing (retention); a read-only open also finds segments in
 *   options.archive. Everything after op_after is checked as above.
 * - Limits: an entry carries at most SZ_BATCH_EVENTS_MAX 128-byte events; a group commit
 *   is at most SZ_JOURNAL_WRITE_SIZE_MAX bytes; segments are at least
 *   SZ_JOURNAL_SEGMENT_SIZE_MIN. */
#ifndef SZ_JOURNAL_H
#define SZ_JOURNAL_H

#include "core/records.h"
#include "storage.h"

#define SZ_JOURNAL_VERSION 1u
#define SZ_JOURNAL_HEADER_SIZE 128u
#define SZ_JOURNAL_EVENT_SIZE 128u
#define SZ_JOURNAL_BODY_SIZE_MAX (SZ_BATCH_EVENTS_MAX * SZ_JOURNAL_EVENT_SIZE)
#define SZ_JOURNAL_ENTRY_SIZE_MAX (SZ_JOURNAL_HEADER_SIZE + SZ_JOURNAL_BODY_SIZE_MAX)
/* One full batch per write, sector padded: exactly 1 MiB. Smaller entries share it. */
#define SZ_JOURNAL_WRITE_SIZE_MAX                                                       \
    ((SZ_JOURNAL_ENTRY_SIZE_MAX + SZ_STORAGE_SECTOR_SIZE - 1) / SZ_STORAGE_SECTOR_SIZE *   \
     SZ_STORAGE_SECTOR_SIZE)
/* 2 to 4 writes in flight keep the device busy while one fdatasync waits; more only
 * widens the window a crash can tear. */
#define SZ_JOURNAL_IN_FLIGHT_MAX 4u
#define SZ_JOURNAL_IN_FLIGHT_DEFAULT 3u
#define SZ_JOURNAL_SEGMENT_SIZE_MIN (4u * SZ_JOURNAL_WRITE_SIZE_MAX)
#define SZ_JOURNAL_SEGMENT_SIZE_DEFAULT (1ull << 30)
#define SZ_JOURNAL_SUPERBLOCK_NAME "superblock"
#define SZ_JOURNAL_ENTRY_MAGIC 0x4A5Au /* "ZJ" */
#define SZ_JOURNAL_SUPERBLOCK_MAGIC 0x004F52455A4D5553ull /* "SUMZERO" */

/* On disk, little-endian, 128 bytes before each body. checksum_header covers bytes
 * 16..127 (so also the body checksum and the previous entry's header checksum). */
typedef struct sz_journal_header {
    sz_u128 checksum_header;
    sz_u128 checksum_body;
    sz_u128 checksum_previous; /* op 1: the superblock's checksum */
    sz_u128 cluster_id;
    sz_u128 client_id;
    uint64_t trace_id;
    uint64_t op;
    uint64_t timestamp;  /* T of a create batch (event i gets T + i); the expire time */
    uint64_t op_durable; /* highest op durable when this entry was appended */
    uint32_t request_number;
    uint32_t body_size;
    uint32_t event_count;
    uint8_t operation;
    uint8_t version;
    uint16_t magic;
} sz_journal_header_t;

static_assert(sizeof(sz_journal_header_t) == SZ_JOURNAL_HEADER_SIZE, "journal header");
static_assert(offsetof(sz_journal_header_t, checksum_body) == 16, "journal header");
static_assert(offsetof(sz_journal_header_t, cluster_id) == 48, "journal header");
static_assert(offsetof(sz_journal_header_t, trace_id) == 80, "journal header");
static_assert(offsetof(sz_journal_header_t, op) == 88, "journal header");
static_assert(offsetof(sz_journal_header_t, op_durable) == 104, "journal header");
static_assert(offsetof(sz_journal_header_t, request_number) == 112, "journal header");
static_assert(offsetof(sz_journal_header_t, event_count) == 120, "journal header");
static_assert(offsetof(sz_journal_header_t, operation) == 124, "journal header");
static_assert(offsetof(sz_journal_header_t, magic) == 126, "journal header");

/* On disk: two copies, at 0 and at SZ_STORAGE_SECTOR_SIZE of the superblock file, each
 * 128 bytes followed by zeros. checksum covers bytes 16..127. */
typedef struct sz_journal_superblock {
    sz_u128 checksum;
    uint64_t magic;
    uint32_t version;
    uint8_t replica_index;
    uint8_t reserved_a[3];
    sz_u128 cluster_id;
    uint64_t segment_size;
    uint8_t reserved[72];
} sz_journal_superblock_t;

static_assert(sizeof(sz_journal_superblock_t) == 128, "superblock");
static_assert(offsetof(sz_journal_superblock_t, cluster_id) == 32, "superblock");
static_assert(offsetof(sz_journal_superblock_t, segment_size) == 48, "superblock");

typedef struct sz_journal_format_options {
    sz_u128 cluster_id;
    uint8_t replica_index;
    uint64_t segment_size; /* 0: SZ_JOURNAL_SEGMENT_SIZE_DEFAULT; a multiple of the sector */
} sz_journal_format_options_t;

/* Where an entry lives. */
typedef struct sz_journal_position {
    uint32_t segment;
    uint64_t offset;
} sz_journal_position_t;

/* What is wrong, for the one-line error of a tool. */
typedef struct sz_journal_problem {
    char file[SZ_STORAGE_NAME_SIZE];
    uint64_t offset;
    uint64_t op;
    char reason[256];
} sz_journal_problem_t;

/* Called for every valid entry found at open, in op order. Return 0 to go on, > 0 to stop
 * (read-only opens only), < 0 to fail the open with that error. */
typedef int (*sz_journal_entry_fn)(const sz_journal_header_t *header, const void *body,
                                   const sz_journal_position_t *position, void *context);
typedef void (*sz_journal_durable_fn)(uint64_t op_durable, void *context);

/* One completed group commit, for metrics. latency_ns runs from its submission to the
 * reap that found its write and fdatasync complete (CLOCK_MONOTONIC), so it also holds
 * any time the owner spent before polling. */
typedef struct sz_journal_write_report {
    uint64_t op_first;
    uint64_t op_last;
    uint64_t size;       /* bytes written, sector padded */
    uint64_t latency_ns; /* write + fdatasync */
} sz_journal_write_report_t;
typedef void (*sz_journal_written_fn)(const sz_journal_write_report_t *report, void *context);

typedef struct sz_journal_options {
    bool read_only;
    uint32_t in_flight_max; /* 1..SZ_JOURNAL_IN_FLIGHT_MAX; 0 for the default */
    sz_journal_entry_fn on_entry; /* may be NULL */
    void *entry_context;
    sz_journal_durable_fn on_durable; /* may be NULL */
    void *durable_context;
    /* May be NULL; called like on_durable, once per completed write, in order, before the
     * on_durable call that reports its ops (durable_context is its context). */
    sz_journal_written_fn on_written;
    /* Start after op_after (0: from op 1), e.g. a snapshot's op. The segment holding
     * op_after + 1 is found from the segments' first headers; the segments before it are
     * neither read nor needed (they may have been retired), and entries before op_after + 1
     * in its segment are checked but not delivered. chain_head is the checksum_header of
     * op op_after (a snapshot's chain head): the journal must hold op_after with it, or the
     * open fails with -EUCLEAN; a journal that ends before op_after also gives -EUCLEAN, a
     * journal without the segment holding op_after + 1 -ENOENT. With op_after 0, a non-zero
     * chain_head must be the superblock's checksum. */
    uint64_t op_after;
    sz_u128 chain_head;
    /* Read-only opens only: segments missing from storage are read from here (the archive
     * directory retention moves segments to); NULL for none. Borrowed like storage. */
    sz_storage_t *archive;
} sz_journal_options_t;

/* What one append carries besides the body. */
typedef struct sz_journal_append {
    uint64_t timestamp;
    sz_operation_t operation; /* create_accounts, create_transfers or expire_pending */
    uint32_t event_count;     /* 0 for expire_pending */
    sz_u128 client_id;
    uint32_t request_number;
    uint64_t trace_id;
} sz_journal_append_t;

typedef struct sz_journal_info {
    sz_u128 cluster_id;
    uint32_t replica_index;
    uint32_t version;
    uint64_t segment_size;
    uint64_t op_last;    /* last op appended (or found at open) */
    /* checksum_header of op_last: the chain head a snapshot at op_last records (the
     * superblock's checksum for an empty journal). Read it after each append to know
     * the chain head of every op. */
    sz_u128 checksum_last;
    uint64_t op_durable; /* last op known durable */
    uint64_t timestamp_last;
    uint64_t entry_count_found; /* entries found by the scan at open */
    sz_journal_position_t end;  /* where the chain ended at open */
    bool scan_stopped;          /* on_entry asked to stop */
    uint32_t segment_first;     /* the first segment the scan read */
    bool tail_torn;             /* bytes after the end were discarded (or would be) */
    uint64_t tail_size;         /* how many non-zero bytes that tail held */
} sz_journal_info_t;

typedef struct sz_journal sz_journal_t;

/* Writes the superblock and preallocates the first segment. -EEXIST if formatted. */
SZ_MUST_USE int sz_journal_format(sz_storage_t *storage,
                                  const sz_journal_format_options_t *options);

/* Checks one superblock copy (magic, checksum, version, segment size): true if valid. */
bool sz_journal_superblock_valid(const sz_journal_superblock_t *superblock);

/* Reads the superblock alone (either valid copy): -ENOENT when not formatted, -EUCLEAN
 * when both copies are damaged. For tools: the cluster id, and the chain head of op 0
 * (superblock_out->checksum). */
SZ_MUST_USE int sz_journal_superblock_read(sz_storage_t *storage,
                                           sz_journal_superblock_t *superblock_out,
                                           sz_journal_problem_t *problem_out);

/* problem_out (may be NULL) is filled on -EUCLEAN and on I/O errors. The journal borrows
 * storage, which must outlive it. */
SZ_MUST_USE int sz_journal_open(sz_storage_t *storage, const sz_journal_options_t *options,
                                sz_journal_t **journal_out, sz_journal_problem_t *problem_out);
/* Waits for in-flight writes (their buffers are the journal's), then frees everything.
 * Accepts NULL. */
void sz_journal_deinit(sz_journal_t *journal);

/* Returns 0 (op_out gets the op number), -EAGAIN (window and buffer full: poll, retry),
 * -EMSGSIZE (body too large or not event_count * 128), -EINVAL (bad operation), or the
 * error that stopped the journal. */
SZ_MUST_USE int sz_journal_append(sz_journal_t *journal, const sz_journal_append_t *entry,
                                  const void *body, uint64_t *op_out);
/* Starts the group commit of everything appended, if a slot is free. */
SZ_MUST_USE int sz_journal_submit(sz_journal_t *journal);
/* Reaps completions (blocking for one if wait and anything is in flight), reports
 * durability, and submits pending appends into freed slots. */
SZ_MUST_USE int sz_journal_poll(sz_journal_t *journal, bool wait);
/* Submits and waits until every appended op is durable. */
SZ_MUST_USE int sz_journal_flush(sz_journal_t *journal);

void sz_journal_info(const sz_journal_t *journal, sz_journal_info_t *info_out);
/* "" while healthy; else one line: what failed, where, which ops. */
const char *sz_journal_error_message(const sz_journal_t *journal);

/* "journal.000042" */
void sz_journal_segment_name(uint32_t segment, char name_out[SZ_STORAGE_NAME_SIZE]);
/* The segment number of a segment's file name, or -EINVAL for any other name. */
SZ_MUST_USE int sz_journal_segment_parse(const char *name, uint32_t *segment_out);

/* Checks one header on its own (magic, version, checksum, sizes, operation). Returns 0
 * or -EUCLEAN. For tools and tests. */
SZ_MUST_USE int sz_journal_header_check(const sz_journal_header_t *header);

#endif
