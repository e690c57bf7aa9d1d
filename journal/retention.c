/* retention.c: moving (or deleting) the journal segments that only hold ops below a given
 * op. Written for a forked child of the server: plain syscalls on directory descriptors,
 * no malloc, no stdio, no locks (see retention.h).
 *
 *   retiring one segment s (archive_fd >= 0)
 *
 *   [in data] --renameat(data/s, archive/s)--> [in archive] --fsync both dirs--> [done]
 *   [in data] --EXDEV: copy to archive/s.tmp, fsync, renameat to archive/s, fsync
 *              archive dir--> [in both] --unlinkat(data/s), fsync data dir--> [done]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdalign.h>
#include <stdio.h> /* renameat only: nothing of stdio is used (poisoned below) */
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "retention.h"

#pragma GCC poison malloc calloc realloc free printf fprintf snprintf sprintf

#define DIRENT_BUFFER_SIZE 8192u
#define SEGMENT_NONE UINT32_MAX
#define TMP_SUFFIX ".tmp"

static void text_copy(char *target, size_t size, const char *source) {
    size_t length = 0;
    while (source[length] != '\0' && length + 1 < size) {
        target[length] = source[length];
        length++;
    }
    target[length] = '\0';
}

static int problem_set(sz_journal_problem_t *problem, const char *file, uint64_t op, int error,
                       const char *reason) {
    if (problem == NULL) return error;
    text_copy(problem->file, sizeof(problem->file), file);
    problem->offset = 0;
    problem->op = op;
    text_copy(problem->reason, sizeof(problem->reason), reason);
    return error;
}

/* Exactly size bytes at offset, or -ENODATA when the file is shorter. */
static int file_read_at(int directory_fd, const char *name, uint64_t offset, void *target,
                        size_t size) {
    int fd = openat(directory_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t count = pread(fd, target, size, (off_t)offset);
    int result = count < 0 ? -errno : (size_t)count < size ? -ENODATA : 0;
    close(fd);
    return result;
}

static int cluster_read(int directory_fd, sz_u128 *cluster_id_out) {
    /* Either copy will do, as at open. */
    for (uint64_t copy = 0; copy < 2; copy++) {
        sz_journal_superblock_t superblock;
        int result = file_read_at(directory_fd, SZ_JOURNAL_SUPERBLOCK_NAME,
                                  copy * SZ_STORAGE_SECTOR_SIZE, &superblock, sizeof(superblock));
        if (result < 0 && result != -ENODATA) return result;
        if (result < 0) continue;
        XXH128_hash_t hash = XXH3_128bits((const uint8_t *)&superblock + 16,
                                          sizeof(superblock) - 16);
        sz_u128 checksum = ((sz_u128)hash.high64 << 64) | hash.low64;
        if (superblock.magic == SZ_JOURNAL_SUPERBLOCK_MAGIC && superblock.checksum == checksum) {
            *cluster_id_out = superblock.cluster_id;
            return 0;
        }
    }
    return -EUCLEAN;
}

/* The lowest segment number in the directory, or SEGMENT_NONE. */
static int segment_lowest(int directory_fd, uint32_t *segment_out) {
    *segment_out = SEGMENT_NONE;
    int fd = openat(directory_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    alignas(8) char buffer[DIRENT_BUFFER_SIZE];
    int result = 0;
    /* Bounded by the directory: each call returns new entries or 0 at its end. */
    while (true) {
        ssize_t count = getdents64(fd, buffer, sizeof(buffer));
        if (count < 0) result = -errno;
        if (count <= 0) break;
        for (ssize_t offset = 0; offset < count;) {
            const struct dirent64 *entry = (const struct dirent64 *)(buffer + offset);
            uint32_t segment = 0;
            if (sz_journal_segment_parse(entry->d_name, &segment) == 0 && segment < *segment_out) {
                *segment_out = segment;
            }
            offset += entry->d_reclen;
        }
    }
    close(fd);
    return result;
}

/* Whether segment s + 1 starts with a valid entry of the cluster below op_keep_from. */
static int segment_retirable(int directory_fd, uint32_t segment, sz_u128 cluster_id,
                             uint64_t op_keep_from, bool *retirable_out) {
    *retirable_out = false;
    char name[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(segment + 1, name);
    sz_journal_header_t header;
    int result = file_read_at(directory_fd, name, 0, &header, sizeof(header));
    if (result == -ENOENT || result == -ENODATA) return 0;
    if (result < 0) return result;
    *retirable_out = sz_journal_header_check(&header) == 0 && header.cluster_id == cluster_id &&
                     header.op < op_keep_from;
    return 0;
}

/* Copies the whole file in the kernel (no buffer of ours). */
static int file_copy(int source_fd, int target_fd, uint64_t size) {
    uint64_t done = 0;
    bool ranges = true;
    /* Bounded: every pass copies bytes or fails. */
    while (done < size) {
        size_t chunk = size - done > (1u << 30) ? (1u << 30) : (size_t)(size - done);
        ssize_t count = -1;
        if (ranges) {
            loff_t source_offset = (loff_t)done, target_offset = (loff_t)done;
            count = copy_file_range(source_fd, &source_offset, target_fd, &target_offset, chunk, 0);
            if (count < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                              errno == EOPNOTSUPP)) {
                ranges = false;
                continue;
            }
        } else {
            off_t source_offset = (off_t)done;
            if (lseek(target_fd, (off_t)done, SEEK_SET) < 0) return -errno;
            count = sendfile(target_fd, source_fd, &source_offset, chunk);
        }
        if (count < 0 && errno == EINTR) continue;
        if (count < 0) return -errno;
        if (count == 0) return -EIO; /* the source shrank */
        done += (uint64_t)count;
    }
    return 0;
}

/* Across filesystems: archive/NAME.tmp, fsync, rename, fsync the archive directory. */
static int segment_copy(int directory_fd, int archive_fd, const char *name) {
    char name_tmp[SZ_STORAGE_NAME_SIZE + sizeof(TMP_SUFFIX)];
    text_copy(name_tmp, sizeof(name_tmp), name);
    text_copy(name_tmp + strlen(name_tmp), sizeof(TMP_SUFFIX), TMP_SUFFIX);
    int source_fd = openat(directory_fd, name, O_RDONLY | O_CLOEXEC);
    if (source_fd < 0) return -errno;
    int target_fd = openat(archive_fd, name_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int result = target_fd < 0 ? -errno : 0;
    struct stat status;
    if (result == 0 && fstat(source_fd, &status) != 0) result = -errno;
    if (result == 0) result = file_copy(source_fd, target_fd, (uint64_t)status.st_size);
    if (result == 0 && fsync(target_fd) != 0) result = -errno;
    if (target_fd >= 0 && close(target_fd) != 0 && result == 0) result = -errno;
    close(source_fd);
    if (result == 0 && renameat(archive_fd, name_tmp, archive_fd, name) != 0) result = -errno;
    if (result == 0 && fsync(archive_fd) != 0) result = -errno;
    if (result < 0) (void)unlinkat(archive_fd, name_tmp, 0);
    return result;
}

static int segment_retire(int directory_fd, int archive_fd, uint32_t segment,
                          sz_journal_problem_t *problem) {
    char name[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(segment, name);
    if (archive_fd >= 0) {
        if (renameat(directory_fd, name, archive_fd, name) == 0) {
            if (fsync(archive_fd) != 0) {
                return problem_set(problem, name, 0, -errno, "fsync of the archive failed");
            }
        } else if (errno == EXDEV) {
            int result = segment_copy(directory_fd, archive_fd, name);
            if (result < 0) {
                return problem_set(problem, name, 0, result, "copy to the archive failed");
            }
            if (unlinkat(directory_fd, name, 0) != 0) {
                return problem_set(problem, name, 0, -errno, "removal after the copy failed");
            }
        } else {
            return problem_set(problem, name, 0, -errno, "move to the archive failed");
        }
    } else if (unlinkat(directory_fd, name, 0) != 0) {
        return problem_set(problem, name, 0, -errno, "removal failed");
    }
    if (fsync(directory_fd) != 0) {
        return problem_set(problem, name, 0, -errno, "fsync of the data directory failed");
    }
    return 0;
}

int sz_journal_retire(int directory_fd, int archive_fd, uint64_t op_keep_from,
                      sz_journal_problem_t *problem_out) {
    if (problem_out != NULL) memset(problem_out, 0, sizeof(*problem_out));
    sz_u128 cluster_id = 0;
    int result = cluster_read(directory_fd, &cluster_id);
    if (result < 0) {
        return problem_set(problem_out, SZ_JOURNAL_SUPERBLOCK_NAME, 0, result,
                           result == -EUCLEAN ? "both superblock copies are damaged"
                                              : "cannot read the superblock");
    }
    uint32_t segment = SEGMENT_NONE;
    result = segment_lowest(directory_fd, &segment);
    if (result < 0) return problem_set(problem_out, "", 0, result, "cannot list the directory");
    int retired = 0;
    /* Bounded by the segments present: each pass retires one or stops. */
    while (segment != SEGMENT_NONE && segment + 1 != SEGMENT_NONE) {
        bool retirable = false;
        result = segment_retirable(directory_fd, segment, cluster_id, op_keep_from, &retirable);
        if (result < 0) {
            char name[SZ_STORAGE_NAME_SIZE];
            sz_journal_segment_name(segment + 1, name);
            return problem_set(problem_out, name, 0, result, "cannot read the first header");
        }
        if (!retirable) break;
        result = segment_retire(directory_fd, archive_fd, segment, problem_out);
        if (result < 0) return result;
        retired++;
        segment++;
    }
    return retired;
}
