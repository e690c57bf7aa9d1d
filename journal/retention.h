/* retention.h: retiring the journal segments that a snapshot has made unnecessary for
 * recovery: moving them to an archive directory (point-in-time recovery from op 1 then
 * reads them there: sz_journal_options_t.archive, `sumzero replay --archive`) or deleting
 * them.
 *
 * Contract:
 * - A function of directory descriptors, not of an open journal: callable from any process
 *   or thread, while the server appends, and from a forked child of the multi-threaded
 *   server (no malloc, no stdio, no locks: directory listing by getdents64, copies by
 *   copy_file_range or sendfile, problems formatted by hand).
 * - op_keep_from is the first op a restart needs (a snapshot at op S: S + 1). Segment s is
 *   retired only when segment s + 1 exists in the data directory and begins with a valid
 *   entry of the superblock's cluster whose op is below op_keep_from: then every op in s is
 *   below op_keep_from - 1, and the segment holding op_keep_from - 1 stays. That op is the
 *   restart's anchor: if a crash tears away a not yet durable op_keep_from that began the
 *   next segment, the restart still finds op_keep_from - 1 and checks it against the
 *   snapshot's chain head. Segments are retired in ascending order from the lowest present,
 *   stopping at the first that does not qualify; the segment being written (whose
 *   successor is empty) is never retired.
 * - archive_fd >= 0: each segment is renamed into the archive directory (same filesystem),
 *   or, across filesystems, copied to NAME.tmp there, fsynced, renamed to NAME, the archive
 *   directory fsynced, and only then removed from the data directory; both directories are
 *   fsynced. A crash leaves each segment in the data directory, the archive, or both (both
 *   is harmless: a read-only open prefers the data directory's). archive_fd < 0: deleted.
 * - Returns the count retired (0 when nothing qualifies) or a negative errno with
 *   problem_out (may be NULL) naming the segment; -EUCLEAN when the superblock is damaged.
 *   Segments retired before an error stay retired. */
#ifndef SZ_JOURNAL_RETENTION_H
#define SZ_JOURNAL_RETENTION_H

#include "journal.h"

SZ_MUST_USE int sz_journal_retire(int directory_fd, int archive_fd, uint64_t op_keep_from,
                                  sz_journal_problem_t *problem_out);

#endif
