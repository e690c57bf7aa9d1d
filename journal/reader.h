/* reader.h: reading a journal's entries in op order from any op, while its writer may
 * still be appending: the server's subscription thread, the projector's journal source
 * and the tools use it. It never writes and never locks the directory.
 *
 * Contract:
 * - One thread uses a reader. Files are read with buffered pread (the writer's O_DIRECT
 *   writes are coherent with it). Segments are looked up in the data directory and then,
 *   if given, in the archive directory (where retention moves old segments).
 * - Every entry handed out has passed sz_journal_header_check(), its body checksum, the
 *   cluster id of the superblock, the op sequence and the hash chain to the entry before
 *   it (for the first one read, when the reader starts past op 1, to the entry before it
 *   in its segment, or to options.chain_head when given).
 * - next() returns 1 with *header_out and *body_out valid until the following call; 0 when
 *   the next entry is not there: op_limit reached (a server passes its committed op so an
 *   entry written but not yet committed is never shown), or the bytes at the read position
 *   are not (yet) a complete valid entry; calling again later reads on. An op_limit other
 *   than UINT64_MAX also vouches that every op up to it is on disk, so an op at or below
 *   it that is not a valid entry is damage; with UINT64_MAX (no limit known) damage is
 *   recognised as recovery does: a later entry records that the missing op was durable
 *   (zeros where an entry belongs read as the end). A negative errno
 *   is damage or I/O: -EUCLEAN with problem_out naming file, offset and op (for example
 *   a valid entry that does not chain to the one before, or a missing segment in the
 *   middle), -ENOENT when op_from is not in any segment found (open: retired segments;
 *   problem_out->op is then the first op available, or 0 when no segment holds one). Entries below op_from are read
 *   and checked but not handed out; op_from may be past the end (next() returns 0 until
 *   it is written). Bodies are 128-byte aligned, as records are.
 * - close() accepts NULL. */
#ifndef SZ_JOURNAL_READER_H
#define SZ_JOURNAL_READER_H

#include "journal.h"

typedef struct sz_journal_reader_options {
    const char *directory;          /* the data directory (superblock and segments) */
    const char *archive_directory;  /* NULL: none */
    uint64_t op_from;               /* the first op wanted, >= 1 */
    const sz_u128 *chain_head;      /* NULL, or the checksum_header of op_from - 1 */
} sz_journal_reader_options_t;

typedef struct sz_journal_reader sz_journal_reader_t;

SZ_MUST_USE int sz_journal_reader_open(const sz_journal_reader_options_t *options,
                                       sz_journal_reader_t **reader_out,
                                       sz_journal_problem_t *problem_out);
SZ_MUST_USE int sz_journal_reader_next(sz_journal_reader_t *reader, uint64_t op_limit,
                                       const sz_journal_header_t **header_out,
                                       const void **body_out,
                                       sz_journal_problem_t *problem_out);
/* The cluster id from the superblock. */
sz_u128 sz_journal_reader_cluster_id(const sz_journal_reader_t *reader);
void sz_journal_reader_close(sz_journal_reader_t *reader);

#endif
