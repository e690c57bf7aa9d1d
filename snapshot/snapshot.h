/* snapshot.h: a consistent image of the whole state at a committed op, in one checksummed
 * file, so that recovery loads it and replays only the journal after it.
 *
 * Contract (the file format is in docs/SNAPSHOT.md):
 * - A snapshot holds the ledger (accounts, transfers, the pending index, balance history,
 *   the last timestamp, the state digest), the op it was taken after, that op's journal
 *   chain head (the checksum_header of its entry; the superblock's checksum for op 0), the
 *   cluster id, and one opaque section of the caller's (the replica's client sessions).
 *   Header and every section carry an XXH3-128 checksum; loading checks all of them.
 * - Files live in one directory (the server's is DATA/snapshots) and are named
 *   "snapshot.%020" PRIu64 by op, so names sort by op. sz_snapshot_write() writes
 *   NAME.tmp, fsyncs it, renames it to NAME and fsyncs the directory: a crash at any
 *   point leaves either no NAME or a complete one. Leftover *.tmp files are never loaded
 *   (sz_snapshot_prune() removes them).
 * - Writing is made to run in a forked child of a multi-threaded process: it never calls
 *   malloc, stdio or locks (buffers come from mmap), only reads the ledger through
 *   const accessors, and reports errors through its return value and problem_out.
 * - Loading builds a fresh ledger with the caller's capacities; it refuses (-ENOSPC) a
 *   snapshot that does not fit them. The loaded ledger has the digest and stats of the
 *   one that was written, and applying the same ops to both keeps them equal.
 * - Errors: 0 or a negative errno. A file that is damaged, truncated, of another cluster
 *   or of an unknown version gives -EUCLEAN with problem_out saying what and where (the
 *   section and offset); a missing file -ENOENT. Nothing here asserts on file bytes.
 * - Also safe in a forked child: sz_snapshot_list() and sz_snapshot_prune() (getdents64,
 *   no malloc). Loading allocates only with mmap and is for the process that keeps the
 *   ledger. A name ending in ".tmp" is refused by load (-EUCLEAN). */
#ifndef SZ_SNAPSHOT_H
#define SZ_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "core/ledger.h"

#define SZ_SNAPSHOT_NAME_SIZE 64u
#define SZ_SNAPSHOT_DIRECTORY "snapshots"

typedef struct sz_snapshot_meta {
    sz_u128 cluster_id;
    uint64_t op;             /* the last op applied to the ledger (0: the empty ledger) */
    uint64_t timestamp;      /* the ledger's last timestamp */
    sz_u128 chain_head;      /* checksum_header of op's journal entry */
    sz_digest_t digest;      /* the ledger's digest at op (checked against the loaded one) */
    uint64_t created_ns;     /* wall clock when taken: for operators only */
} sz_snapshot_meta_t;

typedef struct sz_snapshot_problem {
    char name[SZ_SNAPSHOT_NAME_SIZE];
    uint64_t offset;
    char reason[256];
} sz_snapshot_problem_t;

/* "snapshot.00000000000000001234" */
void sz_snapshot_name(uint64_t op, char name_out[SZ_SNAPSHOT_NAME_SIZE]);

/* Writes the snapshot of ledger (whose state is meta->op's) into directory_fd, durably,
 * as described above. sessions (may be NULL when sessions_size is 0) is stored as is. */
SZ_MUST_USE int sz_snapshot_write(int directory_fd, const sz_ledger_t *ledger,
                                  const sz_snapshot_meta_t *meta, const void *sessions,
                                  size_t sessions_size, sz_snapshot_problem_t *problem_out);

/* sz_snapshot_write() at no more than rate_bytes_per_s (0: as fast as the disk goes), so a
 * server's own journal writes and flushes do not wait behind the snapshot's: the data goes
 * out in small chunks, each written back and dropped from the page cache before the next
 * but one. */
SZ_MUST_USE int sz_snapshot_write_paced(int directory_fd, const sz_ledger_t *ledger,
                                        const sz_snapshot_meta_t *meta, const void *sessions,
                                        size_t sessions_size, uint64_t rate_bytes_per_s,
                                        sz_snapshot_problem_t *problem_out);

typedef struct sz_snapshot_loaded {
    sz_snapshot_meta_t meta;
    sz_ledger_t *ledger;   /* the caller's: sz_ledger_deinit() */
    void *sessions;        /* the caller's: sz_snapshot_sessions_free(); NULL if empty */
    size_t sessions_size;
} sz_snapshot_loaded_t;

/* Loads and verifies one file. cluster_id must match the file's. */
SZ_MUST_USE int sz_snapshot_load(int directory_fd, const char *name, sz_u128 cluster_id,
                                 const sz_ledger_config_t *config,
                                 sz_snapshot_loaded_t *loaded_out,
                                 sz_snapshot_problem_t *problem_out);
void sz_snapshot_sessions_free(void *sessions, size_t sessions_size);

/* What a snapshot's header says, for tools (sumzero inspect). */
#define SZ_SNAPSHOT_SECTIONS_MAX 8u
typedef struct sz_snapshot_section_info {
    const char *name; /* "accounts", "transfers", ... (static) */
    uint32_t record_size;
    uint64_t record_count;
    uint64_t offset;
    uint64_t size;
    sz_u128 checksum;
} sz_snapshot_section_info_t;

typedef struct sz_snapshot_info {
    sz_snapshot_meta_t meta;
    uint32_t version;
    uint64_t file_size;
    uint64_t ledger_op_count;
    uint64_t pending_live;
    uint32_t section_count;
    sz_snapshot_section_info_t sections[SZ_SNAPSHOT_SECTIONS_MAX];
} sz_snapshot_info_t;

/* Reads and checks the header alone (magic, checksum, version, cluster, file size, section
 * table), not the sections: errors as for load. cluster_id 0 accepts any cluster. */
SZ_MUST_USE int sz_snapshot_info(int directory_fd, const char *name, sz_u128 cluster_id,
                                 sz_snapshot_info_t *info_out,
                                 sz_snapshot_problem_t *problem_out);

/* The ops of the complete snapshots in the directory (by name; not verified), newest
 * first. Returns the count found (at most op_max are written) or a negative errno. */
SZ_MUST_USE int sz_snapshot_list(int directory_fd, uint64_t *ops_out, uint32_t op_max);

/* Removes every snapshot but the newest keep_count, and every *.tmp. Returns the count
 * removed or a negative errno. keep_count above 1024 keeps every snapshot (only *.tmp go).
 * Never call it while a write into the same directory is under way (it removes *.tmp). */
SZ_MUST_USE int sz_snapshot_prune(int directory_fd, uint32_t keep_count);

#endif
