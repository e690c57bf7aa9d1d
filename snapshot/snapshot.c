/* snapshot.c: writing a ledger's state to one checksummed file (from a forked child of the
 * server, so: no malloc, no stdio, no locks) and loading it into a fresh ledger; listing and
 * pruning a directory of snapshots. The format is in docs/SNAPSHOT.md.
 *
 * Design notes
 * - Speed: the big parts (transfers, metas, expiry heap, history) are written straight from
 *   the ledger's arrays and read straight back into the fresh ledger's arrays, in chunks of
 *   CHUNK_SIZE, each hashed (streaming XXH3-128) while it is still in the cache. Only the
 *   accounts go through a buffer: they live scattered in the id table and are gathered (or
 *   re-inserted) in creation order. The id tables are rebuilt by core on load.
 * - Writing starts the write-back of every WRITEBACK_SIZE bytes as it goes
 *   (sync_file_range) and waits for the chunk before that one: at most two chunks
 *   (16 MiB) are dirty or in flight and the final fdatasync finds almost nothing. The
 *   written pages stay cached (clean, so the kernel drops them first under pressure):
 *   the server's own memory is anonymous and its journal O_DIRECT, and a restart loads
 *   the newest snapshot from the cache in about half the time it takes from the disk.
 *   Measured (issue 5, 3.3 GB under 400k transfers/s): with one sync_file_range(WRITE) per
 *   64 MiB and no wait, the server's journal group commit (O_DIRECT write + fdatasync)
 *   went from ~1 ms to ~7.4 ms mean, up to 32 ms, because each of its device flushes also
 *   had to carry the snapshot's writes; a child that only slept (copy-on-write alone)
 *   left it unchanged.
 * - sz_snapshot_write_paced() also sleeps to a byte rate (the server's default is 400
 *   MiB/s): unpaced, even bounded chunks leave each journal flush some tens of MB of
 *   snapshot to carry.
 * - Crash safety: NAME.tmp is written, fdatasynced, renamed to NAME, and the directory is
 *   fsynced; only names without ".tmp" are ever listed or loaded.
 * - Loading never asserts on file bytes: every header field, the section table, every
 *   checksum and then the ledger's structure are checked, each failure naming the section
 *   and offset.
 *
 *   the write path (sz_snapshot_write)
 *
 *   [start] --meta matches ledger, openat NAME.tmp--> [open]
 *   [open] --write sections from offset 4096 (hash each chunk)--> [sections written]
 *   [sections written] --pwrite header at 0, fdatasync--> [durable tmp]
 *   [durable tmp] --renameat NAME.tmp NAME, fsync dir--> [done]
 *   [any] --error: unlink NAME.tmp--> [failed] (-errno, problem_out)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h> /* renameat only: nothing of stdio is used (poisoned below) */
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "snapshot.h"

#pragma GCC poison malloc calloc realloc free printf fprintf snprintf sprintf

#define SNAPSHOT_MAGIC 0x48534E50414E535Aull /* "ZSNAPNSH" little-endian */
#define SNAPSHOT_VERSION 1u
#define SNAPSHOT_BLOCK_SIZE 4096u
#define SNAPSHOT_HEADER_SIZE SNAPSHOT_BLOCK_SIZE
#define SNAPSHOT_SECTION_COUNT 6u
#define SNAPSHOT_SECTION_SESSIONS 6u /* kinds 1..5 are the ledger parts + 1 */
/* Read, hash and write in chunks that stay in the cache between hashing and copying. */
#define CHUNK_SIZE (2u << 20)
#define ACCOUNTS_PER_CHUNK (CHUNK_SIZE / sizeof(sz_account_t))
#define WRITEBACK_SIZE (8ull << 20)
/* Loading asks the kernel to read this far ahead of the copy (a cold file reads at the
 * disk's speed while the CPU hashes and inserts). */
#define READAHEAD_SIZE (64ull << 20)
#define NAME_PREFIX "snapshot."
#define NAME_DIGITS 20u
#define TMP_SUFFIX ".tmp"
/* list and prune: names read per getdents64 call, and the newest ops prune can keep. */
#define DIRENT_BUFFER_SIZE 8192u
#define PRUNE_KEEP_MAX 1024u

typedef struct snapshot_section {
    uint32_t kind;
    uint32_t record_size;
    uint64_t record_count;
    uint64_t offset; /* in the file, a multiple of SNAPSHOT_BLOCK_SIZE */
    uint64_t size;   /* record_count * record_size; zeros pad it to a block */
    sz_u128 checksum; /* XXH3-128 of the size bytes */
    uint64_t reserved[2];
} snapshot_section_t;
static_assert(sizeof(snapshot_section_t) == 64, "section entry is 64 bytes");

typedef struct snapshot_header {
    sz_u128 checksum; /* XXH3-128 of bytes 16..4095 */
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    sz_u128 cluster_id;
    uint64_t op;
    uint64_t timestamp;
    sz_u128 chain_head;
    uint64_t digest_low;
    uint64_t digest_high;
    uint64_t created_ns;
    uint64_t file_size;
    uint64_t ledger_op_count;
    uint64_t pending_live;
    uint32_t section_count;
    uint32_t reserved_a;
    uint8_t reserved_b[120];
    snapshot_section_t sections[SNAPSHOT_SECTION_COUNT];
    uint8_t reserved_c[SNAPSHOT_HEADER_SIZE - 256 - SNAPSHOT_SECTION_COUNT * 64];
} snapshot_header_t;
static_assert(sizeof(snapshot_header_t) == SNAPSHOT_HEADER_SIZE, "header is one block");
static_assert(SNAPSHOT_SECTION_COUNT <= SZ_SNAPSHOT_SECTIONS_MAX, "info holds every section");
static_assert(offsetof(snapshot_header_t, cluster_id) == 32, "header layout");
static_assert(offsetof(snapshot_header_t, op) == 48, "header layout");
static_assert(offsetof(snapshot_header_t, chain_head) == 64, "header layout");
static_assert(offsetof(snapshot_header_t, file_size) == 104, "header layout");
static_assert(offsetof(snapshot_header_t, section_count) == 128, "header layout");
static_assert(offsetof(snapshot_header_t, sections) == 256, "header layout");

/* ---- text without stdio: problems are formatted by hand (%s, %llu, %x for u128) ---- */

static void text_append(char *text, size_t size, size_t *length, const char *piece) {
    while (*piece != '\0' && *length + 1 < size) text[(*length)++] = *piece++;
    text[*length] = '\0';
}

static void text_append_u64(char *text, size_t size, size_t *length, uint64_t value) {
    char digits[24];
    size_t count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    char piece[24];
    for (size_t index = 0; index < count; index++) piece[index] = digits[count - 1 - index];
    piece[count] = '\0';
    text_append(text, size, length, piece);
}

static void text_append_hex128(char *text, size_t size, size_t *length, sz_u128 value) {
    char piece[33];
    for (int index = 31; index >= 0; index--) {
        piece[index] = "0123456789abcdef"[(uint32_t)(value & 15)];
        value >>= 4;
    }
    piece[32] = '\0';
    text_append(text, size, length, piece);
}

/* format: %s (string), %llu (uint64_t), %x (sz_u128 in hex). */
static void text_format(char *text, size_t size, const char *format, va_list arguments) {
    size_t length = 0;
    text[0] = '\0';
    for (const char *cursor = format; *cursor != '\0'; cursor++) {
        char piece[2] = {*cursor, '\0'};
        if (*cursor != '%') {
            text_append(text, size, &length, piece);
        } else if (strncmp(cursor, "%s", 2) == 0) {
            text_append(text, size, &length, va_arg(arguments, const char *));
            cursor += 1;
        } else if (strncmp(cursor, "%llu", 4) == 0) {
            text_append_u64(text, size, &length, va_arg(arguments, uint64_t));
            cursor += 3;
        } else if (strncmp(cursor, "%x", 2) == 0) {
            text_append_hex128(text, size, &length, va_arg(arguments, sz_u128));
            cursor += 1;
        } else {
            text_append(text, size, &length, piece);
        }
    }
}

static int problem_set(sz_snapshot_problem_t *problem, const char *name, uint64_t offset,
                       int error, const char *format, ...) {
    if (problem == NULL) return error;
    size_t length = 0;
    problem->name[0] = '\0';
    text_append(problem->name, sizeof(problem->name), &length, name);
    problem->offset = offset;
    va_list arguments;
    va_start(arguments, format);
    text_format(problem->reason, sizeof(problem->reason), format, arguments);
    va_end(arguments);
    return error;
}

void sz_snapshot_name(uint64_t op, char name_out[SZ_SNAPSHOT_NAME_SIZE]) {
    size_t length = 0;
    name_out[0] = '\0';
    text_append(name_out, SZ_SNAPSHOT_NAME_SIZE, &length, NAME_PREFIX);
    for (int digit = (int)NAME_DIGITS - 1; digit >= 0; digit--) {
        name_out[length + (size_t)digit] = (char)('0' + op % 10);
        op /= 10;
    }
    name_out[length + NAME_DIGITS] = '\0';
}

static sz_u128 hash_value(XXH128_hash_t hash) { return ((sz_u128)hash.high64 << 64) | hash.low64; }

static sz_u128 header_checksum(const snapshot_header_t *header) {
    return hash_value(XXH3_128bits((const uint8_t *)header + 16, sizeof(*header) - 16));
}

static uint64_t block_align(uint64_t value) {
    return (value + SNAPSHOT_BLOCK_SIZE - 1) / SNAPSHOT_BLOCK_SIZE * SNAPSHOT_BLOCK_SIZE;
}

static const char *section_name(uint32_t kind) {
    if (kind == SNAPSHOT_SECTION_SESSIONS) return "sessions";
    if (kind >= 1 && kind <= SZ_LEDGER_PART_COUNT) return sz_ledger_part_name(kind - 1);
    return "unknown";
}

/* The section table of a state: kinds 1..6 in order, each on its own blocks. */
static uint64_t sections_lay_out(const sz_ledger_image_t *image, size_t sessions_size,
                                 snapshot_section_t *sections) {
    uint64_t offset = SNAPSHOT_HEADER_SIZE;
    for (uint32_t index = 0; index < SNAPSHOT_SECTION_COUNT; index++) {
        snapshot_section_t *section = &sections[index];
        memset(section, 0, sizeof(*section));
        section->kind = index + 1;
        if (index < SZ_LEDGER_PART_COUNT) {
            section->record_size = sz_ledger_part_record_size(index);
            section->record_count = image->record_counts[index];
        } else {
            section->record_size = 1;
            section->record_count = sessions_size;
        }
        section->offset = offset;
        section->size = section->record_count * section->record_size;
        offset += block_align(section->size);
    }
    return offset;
}

/* ---- writing ---- */

typedef struct writer {
    int fd;
    uint64_t offset;
    uint64_t writeback_offset; /* write-back started below this */
    uint64_t settled_offset;   /* written back, waited for and dropped below this */
    uint64_t rate_bytes_per_s; /* 0: unpaced */
    uint64_t paced_offset;     /* the pace is counted from here ... */
    uint64_t paced_ns;         /* ... and this monotonic time */
    uint8_t *buffer;           /* CHUNK_SIZE, from mmap */
    XXH3_state_t hash;
    const char *name;
    sz_snapshot_problem_t *problem;
} writer_t;

static uint64_t writer_now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

/* Called every WRITEBACK_SIZE bytes: starts the write-back of the bytes written since the
 * last call, waits for the chunk before (so at most two chunks are dirty or in flight),
 * then sleeps to the pace.
 * All advice: a failure only costs speed, the final fdatasync is what counts. */
static void writer_settle(writer_t *writer) {
    (void)sync_file_range(writer->fd, (off_t)writer->writeback_offset,
                          (off_t)(writer->offset - writer->writeback_offset),
                          SYNC_FILE_RANGE_WRITE);
    if (writer->writeback_offset > writer->settled_offset) {
        off_t length = (off_t)(writer->writeback_offset - writer->settled_offset);
        (void)sync_file_range(writer->fd, (off_t)writer->settled_offset, length,
                              SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                  SYNC_FILE_RANGE_WAIT_AFTER);
        writer->settled_offset = writer->writeback_offset;
    }
    writer->writeback_offset = writer->offset;
    if (writer->rate_bytes_per_s == 0) return;
    /* Bounded: one sleep to the instant these bytes are due at the pace. */
    sz_u128 written_ns = (sz_u128)(writer->offset - writer->paced_offset) * 1000000000u;
    uint64_t due_ns = writer->paced_ns + (uint64_t)(written_ns / writer->rate_bytes_per_s);
    uint64_t now_ns = writer_now_ns();
    if (due_ns <= now_ns) return;
    struct timespec due = {.tv_sec = (time_t)(due_ns / 1000000000ull),
                           .tv_nsec = (long)(due_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR) {
    }
}

static int writer_write(writer_t *writer, const void *data, size_t size) {
    const uint8_t *bytes = data;
    /* Bounded: every pass writes at least one byte or fails. */
    while (size > 0) {
        ssize_t count = write(writer->fd, bytes, size);
        if (count < 0 && errno == EINTR) continue;
        if (count <= 0) {
            int error = count < 0 ? -errno : -EIO;
            return problem_set(writer->problem, writer->name, writer->offset, error,
                               "write failed (disk full or I/O error)");
        }
        bytes += count;
        size -= (size_t)count;
        writer->offset += (uint64_t)count;
    }
    if (writer->offset - writer->writeback_offset >= WRITEBACK_SIZE) writer_settle(writer);
    return 0;
}

/* Hashes and writes data, in chunks so each is hashed and copied while in the cache. */
static int writer_section_data(writer_t *writer, const void *data, uint64_t size) {
    const uint8_t *bytes = data;
    for (uint64_t done = 0; done < size;) {
        uint64_t chunk = size - done < CHUNK_SIZE ? size - done : CHUNK_SIZE;
        (void)XXH3_128bits_update(&writer->hash, bytes + done, chunk);
        int result = writer_write(writer, bytes + done, chunk);
        if (result < 0) return result;
        done += chunk;
    }
    return 0;
}

static int writer_section(writer_t *writer, const sz_ledger_t *ledger,
                          snapshot_section_t *section, const void *sessions) {
    SZ_ASSERT(writer->offset == section->offset);
    (void)XXH3_128bits_reset(&writer->hash);
    int result = 0;
    if (section->kind == SZ_LEDGER_PART_ACCOUNTS + 1) {
        sz_account_t *accounts = (sz_account_t *)writer->buffer;
        for (uint64_t first = 0; first < section->record_count && result == 0;) {
            uint32_t count = sz_ledger_export_accounts(ledger, (uint32_t)first,
                                                       ACCOUNTS_PER_CHUNK, accounts);
            SZ_ASSERT(count > 0);
            result = writer_section_data(writer, accounts, (uint64_t)count * sizeof(*accounts));
            first += count;
        }
    } else if (section->kind == SNAPSHOT_SECTION_SESSIONS) {
        if (section->size > 0) result = writer_section_data(writer, sessions, section->size);
    } else {
        result = writer_section_data(writer, sz_ledger_export_array(ledger, section->kind - 1),
                                     section->size);
    }
    if (result < 0) return result;
    section->checksum = hash_value(XXH3_128bits_digest(&writer->hash));
    uint64_t padding = block_align(section->size) - section->size;
    if (padding == 0) return 0;
    memset(writer->buffer, 0, padding);
    return writer_write(writer, writer->buffer, padding);
}

static int writer_header(writer_t *writer, const sz_snapshot_meta_t *meta,
                         const sz_ledger_image_t *image, const snapshot_section_t *sections,
                         uint64_t file_size) {
    snapshot_header_t *header = (snapshot_header_t *)writer->buffer;
    memset(header, 0, sizeof(*header));
    header->magic = SNAPSHOT_MAGIC;
    header->version = SNAPSHOT_VERSION;
    header->header_size = SNAPSHOT_HEADER_SIZE;
    header->cluster_id = meta->cluster_id;
    header->op = meta->op;
    header->timestamp = meta->timestamp;
    header->chain_head = meta->chain_head;
    header->digest_low = image->digest.low;
    header->digest_high = image->digest.high;
    header->created_ns = meta->created_ns;
    header->file_size = file_size;
    header->ledger_op_count = image->op_count;
    header->pending_live = image->pending_live;
    header->section_count = SNAPSHOT_SECTION_COUNT;
    memcpy(header->sections, sections, sizeof(header->sections));
    header->checksum = header_checksum(header);
    ssize_t count = pwrite(writer->fd, header, sizeof(*header), 0);
    if (count != (ssize_t)sizeof(*header)) {
        int error = count < 0 ? -errno : -EIO;
        return problem_set(writer->problem, writer->name, 0, error, "header write failed");
    }
    return 0;
}

static int writer_finish(int directory_fd, writer_t *writer, const char *name_tmp,
                         const char *name) {
    if (fdatasync(writer->fd) != 0) {
        return problem_set(writer->problem, name_tmp, 0, -errno, "fdatasync failed");
    }
    int result = close(writer->fd);
    writer->fd = -1;
    if (result != 0) return problem_set(writer->problem, name_tmp, 0, -errno, "close failed");
    if (renameat(directory_fd, name_tmp, directory_fd, name) != 0) {
        return problem_set(writer->problem, name, 0, -errno, "rename from .tmp failed");
    }
    if (fsync(directory_fd) != 0) {
        return problem_set(writer->problem, name, 0, -errno, "directory fsync failed");
    }
    return 0;
}

static int write_checked(const sz_ledger_t *ledger, const sz_snapshot_meta_t *meta,
                         const sz_ledger_image_t *image, size_t sessions_size,
                         const void *sessions, const char *name,
                         sz_snapshot_problem_t *problem) {
    if (meta->timestamp != image->timestamp_last || meta->digest.low != image->digest.low ||
        meta->digest.high != image->digest.high) {
        return problem_set(problem, name, 0, -EINVAL,
                           "meta disagrees with the ledger (timestamp or digest)");
    }
    if (sessions_size > 0 && sessions == NULL) {
        return problem_set(problem, name, 0, -EINVAL, "sessions missing");
    }
    (void)ledger;
    return 0;
}

int sz_snapshot_write(int directory_fd, const sz_ledger_t *ledger, const sz_snapshot_meta_t *meta,
                      const void *sessions, size_t sessions_size,
                      sz_snapshot_problem_t *problem_out) {
    return sz_snapshot_write_paced(directory_fd, ledger, meta, sessions, sessions_size, 0,
                                   problem_out);
}

int sz_snapshot_write_paced(int directory_fd, const sz_ledger_t *ledger,
                            const sz_snapshot_meta_t *meta, const void *sessions,
                            size_t sessions_size, uint64_t rate_bytes_per_s,
                            sz_snapshot_problem_t *problem_out) {
    SZ_ASSERT(ledger != NULL && meta != NULL);
    char name[SZ_SNAPSHOT_NAME_SIZE];
    char name_tmp[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(meta->op, name);
    size_t length = strlen(name);
    memcpy(name_tmp, name, length);
    memcpy(name_tmp + length, TMP_SUFFIX, sizeof(TMP_SUFFIX));
    sz_ledger_image_t image;
    sz_ledger_export(ledger, &image);
    int result = write_checked(ledger, meta, &image, sessions_size, sessions, name, problem_out);
    if (result < 0) return result;
    snapshot_section_t sections[SNAPSHOT_SECTION_COUNT];
    uint64_t file_size = sections_lay_out(&image, sessions_size, sections);
    writer_t writer = {.fd = -1, .offset = SNAPSHOT_HEADER_SIZE,
                       .writeback_offset = SNAPSHOT_HEADER_SIZE,
                       .settled_offset = SNAPSHOT_HEADER_SIZE,
                       .rate_bytes_per_s = rate_bytes_per_s,
                       .paced_offset = SNAPSHOT_HEADER_SIZE, .paced_ns = writer_now_ns(),
                       .name = name_tmp, .problem = problem_out};
    void *buffer = mmap(NULL, CHUNK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    if (buffer == MAP_FAILED) return problem_set(problem_out, name, 0, -ENOMEM, "mmap failed");
    writer.buffer = buffer;
    writer.fd = openat(directory_fd, name_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (writer.fd < 0) {
        result = problem_set(problem_out, name_tmp, 0, -errno, "cannot create the file");
        goto done;
    }
    /* Room reserved up front: no ENOSPC half way, fewer extents. Advice only. */
    (void)fallocate(writer.fd, 0, 0, (off_t)file_size);
    if (lseek(writer.fd, SNAPSHOT_HEADER_SIZE, SEEK_SET) != (off_t)SNAPSHOT_HEADER_SIZE) {
        result = problem_set(problem_out, name_tmp, 0, -errno, "seek failed");
        goto done;
    }
    for (uint32_t index = 0; index < SNAPSHOT_SECTION_COUNT && result == 0; index++) {
        result = writer_section(&writer, ledger, &sections[index], sessions);
    }
    if (result == 0) SZ_ASSERT(writer.offset == file_size);
    if (result == 0) result = writer_header(&writer, meta, &image, sections, file_size);
    if (result == 0) result = writer_finish(directory_fd, &writer, name_tmp, name);
done:
    if (writer.fd >= 0) close(writer.fd);
    if (result < 0) (void)unlinkat(directory_fd, name_tmp, 0);
    munmap(buffer, CHUNK_SIZE);
    return result;
}

typedef enum name_kind { NAME_OTHER = 0, NAME_COMPLETE = 1, NAME_TMP = 2 } name_kind_t;
static name_kind_t name_parse(const char *name, uint64_t *op_out);

/* ---- loading ---- */

/* The header, one chunk, and one block for padding checks. */
#define LOADER_MEMORY_SIZE (SNAPSHOT_HEADER_SIZE + CHUNK_SIZE + SNAPSHOT_BLOCK_SIZE)

typedef struct loader {
    int fd;
    const char *name;
    uint8_t *buffer;  /* CHUNK_SIZE, from mmap */
    uint8_t *padding; /* SNAPSHOT_BLOCK_SIZE, from mmap */
    uint64_t readahead_end; /* the kernel was asked to read ahead up to here */
    XXH3_state_t hash;
    sz_snapshot_problem_t *problem;
    char message[200];
} loader_t;

/* Reads exactly size bytes at offset: a short read is a truncated file. */
static int loader_read(loader_t *loader, uint64_t offset, void *target, uint64_t size,
                       const char *what) {
    /* Keep the disk busy while we copy, hash and insert: ask for the next window early. */
    if (offset + size + READAHEAD_SIZE / 2 > loader->readahead_end) {
        if (loader->readahead_end < offset) loader->readahead_end = offset;
        (void)posix_fadvise(loader->fd, (off_t)loader->readahead_end, READAHEAD_SIZE,
                            POSIX_FADV_WILLNEED);
        loader->readahead_end += READAHEAD_SIZE;
    }
    uint8_t *bytes = target;
    for (uint64_t done = 0; done < size;) {
        ssize_t count = pread(loader->fd, bytes + done, size - done, (off_t)(offset + done));
        if (count < 0 && errno == EINTR) continue;
        if (count < 0) {
            return problem_set(loader->problem, loader->name, offset + done, -errno,
                               "read of %s failed", what);
        }
        if (count == 0) {
            return problem_set(loader->problem, loader->name, offset + done, -EUCLEAN,
                               "truncated: %s ends early", what);
        }
        done += (uint64_t)count;
    }
    return 0;
}

static int header_check(loader_t *loader, const snapshot_header_t *header, sz_u128 cluster_id,
                        uint64_t file_size) {
    if (header->magic != SNAPSHOT_MAGIC) {
        return problem_set(loader->problem, loader->name, 8, -EUCLEAN,
                           "not a sumzero snapshot (bad magic)");
    }
    if (header->checksum != header_checksum(header)) {
        return problem_set(loader->problem, loader->name, 0, -EUCLEAN,
                           "header checksum mismatch (damaged header)");
    }
    if (header->version != SNAPSHOT_VERSION || header->header_size != SNAPSHOT_HEADER_SIZE) {
        return problem_set(loader->problem, loader->name, 24, -EUCLEAN,
                           "unknown snapshot version %llu (this build reads version %llu)",
                           (uint64_t)header->version, (uint64_t)SNAPSHOT_VERSION);
    }
    if (header->cluster_id != cluster_id) {
        return problem_set(loader->problem, loader->name, 32, -EUCLEAN,
                           "snapshot of another cluster (%x, expected %x)", header->cluster_id,
                           cluster_id);
    }
    if (header->file_size != file_size) {
        return problem_set(loader->problem, loader->name, file_size, -EUCLEAN,
                           "truncated or extended: the header says %llu bytes, the file has %llu",
                           header->file_size, file_size);
    }
    if (header->section_count != SNAPSHOT_SECTION_COUNT) {
        return problem_set(loader->problem, loader->name, 128, -EUCLEAN,
                           "%llu sections, expected %llu", (uint64_t)header->section_count,
                           (uint64_t)SNAPSHOT_SECTION_COUNT);
    }
    return 0;
}

/* The section table must be the one sections_lay_out() gives for its counts. */
static int sections_check(loader_t *loader, const snapshot_header_t *header,
                          sz_ledger_image_t *image_out) {
    memset(image_out, 0, sizeof(*image_out));
    uint64_t offset = SNAPSHOT_HEADER_SIZE;
    for (uint32_t index = 0; index < SNAPSHOT_SECTION_COUNT; index++) {
        const snapshot_section_t *section = &header->sections[index];
        uint32_t record_size = index < SZ_LEDGER_PART_COUNT ? sz_ledger_part_record_size(index) : 1;
        if (section->kind != index + 1 || section->record_size != record_size ||
            section->record_count > UINT32_MAX || section->offset != offset ||
            section->size != section->record_count * record_size ||
            section->offset + block_align(section->size) > header->file_size) {
            return problem_set(loader->problem, loader->name, 256 + 64 * (uint64_t)index,
                               -EUCLEAN, "section table entry %llu (%s) is inconsistent",
                               (uint64_t)index, section_name(index + 1));
        }
        if (index < SZ_LEDGER_PART_COUNT) image_out->record_counts[index] = section->record_count;
        offset += block_align(section->size);
    }
    image_out->pending_live = header->pending_live;
    image_out->op_count = header->ledger_op_count;
    image_out->timestamp_last = header->timestamp;
    image_out->digest = (sz_digest_t){.low = header->digest_low, .high = header->digest_high};
    return 0;
}

/* The section's checksum, then its padding: zeros up to the next block, so that no byte
 * of the file goes unchecked. */
static int section_checksum_check(loader_t *loader, const snapshot_section_t *section) {
    sz_u128 actual = hash_value(XXH3_128bits_digest(&loader->hash));
    if (actual != section->checksum) {
        return problem_set(loader->problem, loader->name, section->offset, -EUCLEAN,
                           "section %s checksum mismatch (bytes %llu..%llu damaged)",
                           section_name(section->kind), section->offset,
                           section->offset + section->size);
    }
    uint64_t padding = block_align(section->size) - section->size;
    if (padding == 0) return 0;
    uint64_t offset = section->offset + section->size;
    int result = loader_read(loader, offset, loader->padding, padding, "padding");
    if (result < 0) return result;
    for (uint64_t index = 0; index < padding; index++) {
        if (loader->padding[index] != 0) {
            return problem_set(loader->problem, loader->name, offset + index, -EUCLEAN,
                               "padding after section %s is not zero (damaged)",
                               section_name(section->kind));
        }
    }
    return 0;
}

/* Reads section bytes into target (straight into the ledger's array), hashing each chunk. */
static int loader_section_array(loader_t *loader, const snapshot_section_t *section,
                                void *target) {
    uint8_t *bytes = target;
    (void)XXH3_128bits_reset(&loader->hash);
    for (uint64_t done = 0; done < section->size;) {
        uint64_t chunk = section->size - done < CHUNK_SIZE ? section->size - done : CHUNK_SIZE;
        int result = loader_read(loader, section->offset + done, bytes + done, chunk,
                                 section_name(section->kind));
        if (result < 0) return result;
        (void)XXH3_128bits_update(&loader->hash, bytes + done, chunk);
        done += chunk;
    }
    return section_checksum_check(loader, section);
}

/* Accounts: read in chunks and re-inserted. A damaged chunk may fail the import before
 * the checksum is known: the checksum's verdict comes first, as it names the cause. */
static int loader_section_accounts(loader_t *loader, const snapshot_section_t *section,
                                   sz_ledger_t *ledger) {
    (void)XXH3_128bits_reset(&loader->hash);
    int import_result = 0;
    for (uint64_t done = 0; done < section->size;) {
        uint64_t chunk = section->size - done;
        if (chunk > ACCOUNTS_PER_CHUNK * sizeof(sz_account_t)) {
            chunk = ACCOUNTS_PER_CHUNK * sizeof(sz_account_t);
        }
        int result = loader_read(loader, section->offset + done, loader->buffer, chunk,
                                 "accounts");
        if (result < 0) return result;
        (void)XXH3_128bits_update(&loader->hash, loader->buffer, chunk);
        if (import_result == 0) {
            import_result = sz_ledger_import_accounts(
                ledger, (const sz_account_t *)loader->buffer,
                (uint32_t)(chunk / sizeof(sz_account_t)), loader->message,
                sizeof(loader->message));
        }
        done += chunk;
    }
    int result = section_checksum_check(loader, section);
    if (result < 0) return result;
    if (import_result < 0) {
        return problem_set(loader->problem, loader->name, section->offset, -EUCLEAN,
                           "accounts: %s", loader->message);
    }
    return 0;
}

static int loader_sessions(loader_t *loader, const snapshot_section_t *section,
                           sz_snapshot_loaded_t *loaded) {
    if (section->size == 0) return 0;
    void *sessions = mmap(NULL, section->size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sessions == MAP_FAILED) {
        return problem_set(loader->problem, loader->name, section->offset, -ENOMEM,
                           "no memory for the sessions");
    }
    loaded->sessions = sessions;
    loaded->sessions_size = section->size;
    return loader_section_array(loader, section, sessions);
}

static int loader_ledger(loader_t *loader, const snapshot_header_t *header,
                         const sz_ledger_image_t *image, sz_ledger_t *ledger,
                         sz_snapshot_loaded_t *loaded) {
    int result = sz_ledger_import_begin(ledger, image, loader->message, sizeof(loader->message));
    if (result == -ENOSPC) {
        return problem_set(loader->problem, loader->name, 256, -ENOSPC,
                           "the state does not fit the configured capacities: %s",
                           loader->message);
    }
    if (result < 0) {
        return problem_set(loader->problem, loader->name, 256, -EUCLEAN, "ledger counts: %s",
                           loader->message);
    }
    for (uint32_t index = 0; index < SNAPSHOT_SECTION_COUNT; index++) {
        const snapshot_section_t *section = &header->sections[index];
        if (index == SZ_LEDGER_PART_ACCOUNTS) {
            result = loader_section_accounts(loader, section, ledger);
        } else if (index < SZ_LEDGER_PART_COUNT) {
            result = loader_section_array(loader, section, sz_ledger_import_array(ledger, index));
        } else {
            result = loader_sessions(loader, section, loaded);
        }
        if (result < 0) return result;
    }
    result = sz_ledger_import_finish(ledger, loader->message, sizeof(loader->message));
    if (result < 0) {
        return problem_set(loader->problem, loader->name, SNAPSHOT_HEADER_SIZE, -EUCLEAN,
                           "the ledger's structure is broken: %s", loader->message);
    }
    /* Paired with the write: the loaded ledger carries the digest the header names. */
    sz_digest_t digest = sz_ledger_digest(ledger);
    SZ_ASSERT(digest.low == header->digest_low && digest.high == header->digest_high);
    return 0;
}

/* Opens name and reads and checks its header and section table into header (a block of
 * loader memory). cluster_id NULL accepts any cluster (sz_snapshot_info only: 0 is a
 * cluster id like any other, so loading always names the one it wants). */
static int loader_open(loader_t *loader, int directory_fd, const sz_u128 *cluster_id,
                       snapshot_header_t *header, sz_ledger_image_t *image_out) {
    uint64_t op_unused = 0;
    if (name_parse(loader->name, &op_unused) == NAME_TMP) {
        return problem_set(loader->problem, loader->name, 0, -EUCLEAN,
                           "an unfinished snapshot (.tmp): never loaded");
    }
    loader->fd = openat(directory_fd, loader->name, O_RDONLY | O_CLOEXEC);
    if (loader->fd < 0) {
        return problem_set(loader->problem, loader->name, 0, -errno,
                           errno == ENOENT ? "no such snapshot" : "cannot open the snapshot");
    }
    struct stat status;
    if (fstat(loader->fd, &status) != 0) {
        return problem_set(loader->problem, loader->name, 0, -errno, "fstat failed");
    }
    int result = loader_read(loader, 0, header, SNAPSHOT_HEADER_SIZE, "the header");
    if (result == 0) {
        result = header_check(loader, header, cluster_id == NULL ? header->cluster_id : *cluster_id,
                              (uint64_t)status.st_size);
    }
    if (result == 0) result = sections_check(loader, header, image_out);
    return result;
}

static void *loader_memory(loader_t *loader) {
    void *memory = mmap(NULL, LOADER_MEMORY_SIZE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return NULL;
    loader->buffer = (uint8_t *)memory + SNAPSHOT_HEADER_SIZE;
    loader->padding = loader->buffer + CHUNK_SIZE;
    return memory;
}

int sz_snapshot_load(int directory_fd, const char *name, sz_u128 cluster_id,
                     const sz_ledger_config_t *config, sz_snapshot_loaded_t *loaded_out,
                     sz_snapshot_problem_t *problem_out) {
    SZ_ASSERT(name != NULL && config != NULL && loaded_out != NULL);
    memset(loaded_out, 0, sizeof(*loaded_out));
    if (problem_out != NULL) memset(problem_out, 0, sizeof(*problem_out));
    loader_t loader = {.fd = -1, .name = name, .problem = problem_out};
    sz_ledger_t *ledger = NULL;
    snapshot_header_t *header = loader_memory(&loader);
    if (header == NULL) return problem_set(problem_out, name, 0, -ENOMEM, "mmap failed");
    sz_ledger_image_t image;
    int result = loader_open(&loader, directory_fd, &cluster_id, header, &image);
    if (result < 0) goto done;
    result = sz_ledger_init(config, &ledger);
    if (result < 0) {
        result = problem_set(problem_out, name, 0, result,
                             "cannot reserve the ledger (invalid capacities or no memory)");
        goto done;
    }
    (void)posix_fadvise(loader.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    result = loader_ledger(&loader, header, &image, ledger, loaded_out);
    if (result < 0) goto done;
    loaded_out->ledger = ledger;
    loaded_out->meta = (sz_snapshot_meta_t){
        .cluster_id = header->cluster_id, .op = header->op, .timestamp = header->timestamp,
        .chain_head = header->chain_head,
        .digest = {.low = header->digest_low, .high = header->digest_high},
        .created_ns = header->created_ns};
    ledger = NULL;
done:
    if (result < 0) {
        sz_snapshot_sessions_free(loaded_out->sessions, loaded_out->sessions_size);
        memset(loaded_out, 0, sizeof(*loaded_out));
    }
    sz_ledger_deinit(ledger);
    munmap(header, LOADER_MEMORY_SIZE);
    if (loader.fd >= 0) close(loader.fd);
    return result;
}

int sz_snapshot_info(int directory_fd, const char *name, sz_u128 cluster_id,
                     sz_snapshot_info_t *info_out, sz_snapshot_problem_t *problem_out) {
    SZ_ASSERT(name != NULL && info_out != NULL);
    memset(info_out, 0, sizeof(*info_out));
    if (problem_out != NULL) memset(problem_out, 0, sizeof(*problem_out));
    loader_t loader = {.fd = -1, .name = name, .problem = problem_out};
    snapshot_header_t *header = loader_memory(&loader);
    if (header == NULL) return problem_set(problem_out, name, 0, -ENOMEM, "mmap failed");
    sz_ledger_image_t image;
    int result = loader_open(&loader, directory_fd, cluster_id == 0 ? NULL : &cluster_id,
                             header, &image);
    if (result == 0) {
        info_out->meta = (sz_snapshot_meta_t){
            .cluster_id = header->cluster_id, .op = header->op, .timestamp = header->timestamp,
            .chain_head = header->chain_head,
            .digest = {.low = header->digest_low, .high = header->digest_high},
            .created_ns = header->created_ns};
        info_out->version = header->version;
        info_out->file_size = header->file_size;
        info_out->ledger_op_count = header->ledger_op_count;
        info_out->pending_live = header->pending_live;
        info_out->section_count = SNAPSHOT_SECTION_COUNT;
        for (uint32_t index = 0; index < SNAPSHOT_SECTION_COUNT; index++) {
            const snapshot_section_t *section = &header->sections[index];
            info_out->sections[index] = (sz_snapshot_section_info_t){
                .name = section_name(section->kind), .record_size = section->record_size,
                .record_count = section->record_count, .offset = section->offset,
                .size = section->size, .checksum = section->checksum};
        }
    }
    munmap(header, LOADER_MEMORY_SIZE);
    if (loader.fd >= 0) close(loader.fd);
    return result;
}

void sz_snapshot_sessions_free(void *sessions, size_t sessions_size) {
    if (sessions != NULL && sessions_size > 0) munmap(sessions, sessions_size);
}

/* ---- listing and pruning (getdents64 on a private descriptor: no malloc) ---- */

static name_kind_t name_parse(const char *name, uint64_t *op_out) {
    size_t prefix = sizeof(NAME_PREFIX) - 1;
    if (strncmp(name, NAME_PREFIX, prefix) != 0) return NAME_OTHER;
    uint64_t op = 0;
    for (size_t index = 0; index < NAME_DIGITS; index++) {
        char digit = name[prefix + index];
        if (digit < '0' || digit > '9') return NAME_OTHER;
        uint64_t value = (uint64_t)(digit - '0');
        if (op > (UINT64_MAX - value) / 10) return NAME_OTHER;
        op = op * 10 + value;
    }
    *op_out = op;
    const char *rest = name + prefix + NAME_DIGITS;
    if (*rest == '\0') return NAME_COMPLETE;
    if (strcmp(rest, TMP_SUFFIX) == 0) return NAME_TMP;
    return NAME_OTHER;
}

typedef int (*name_fn)(const char *name, name_kind_t kind, uint64_t op, void *context);

/* Calls fn for every snapshot name (complete or tmp) in the directory. */
static int directory_walk(int directory_fd, name_fn fn, void *context) {
    int fd = openat(directory_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    alignas(8) char buffer[DIRENT_BUFFER_SIZE];
    int result = 0;
    /* Bounded by the directory's size: each call returns new entries or 0 at the end. */
    while (result == 0) {
        ssize_t count = getdents64(fd, buffer, sizeof(buffer));
        if (count < 0) result = -errno;
        if (count <= 0) break;
        for (ssize_t offset = 0; offset < count && result == 0;) {
            const struct dirent64 *entry = (const struct dirent64 *)(buffer + offset);
            uint64_t op = 0;
            name_kind_t kind = name_parse(entry->d_name, &op);
            if (kind != NAME_OTHER) result = fn(entry->d_name, kind, op, context);
            offset += entry->d_reclen;
        }
    }
    close(fd);
    return result;
}

typedef struct list_context {
    uint64_t *ops;     /* newest first */
    uint32_t op_max;
    uint32_t stored;
    uint64_t found;
} list_context_t;

static int list_on_name(const char *name, name_kind_t kind, uint64_t op, void *context_raw) {
    list_context_t *context = context_raw;
    (void)name;
    if (kind != NAME_COMPLETE) return 0;
    context->found++;
    /* Insertion into the sorted top op_max. */
    uint32_t position = context->stored;
    while (position > 0 && context->ops[position - 1] < op) position--;
    if (position >= context->op_max) return 0;
    uint32_t last = context->stored < context->op_max ? context->stored : context->op_max - 1;
    for (uint32_t index = last; index > position; index--) {
        context->ops[index] = context->ops[index - 1];
    }
    context->ops[position] = op;
    if (context->stored < context->op_max) context->stored++;
    return 0;
}

int sz_snapshot_list(int directory_fd, uint64_t *ops_out, uint32_t op_max) {
    list_context_t context = {.ops = ops_out, .op_max = op_max};
    int result = directory_walk(directory_fd, list_on_name, &context);
    if (result < 0) return result;
    return context.found > INT32_MAX ? INT32_MAX : (int)context.found;
}

typedef struct prune_context {
    int directory_fd;
    uint64_t op_oldest_kept; /* complete snapshots below it go */
    int removed;
} prune_context_t;

static int prune_on_name(const char *name, name_kind_t kind, uint64_t op, void *context_raw) {
    prune_context_t *context = context_raw;
    if (kind == NAME_COMPLETE && op >= context->op_oldest_kept) return 0;
    if (unlinkat(context->directory_fd, name, 0) != 0) return errno == ENOENT ? 0 : -errno;
    context->removed++;
    return 0;
}

int sz_snapshot_prune(int directory_fd, uint32_t keep_count) {
    uint64_t ops[PRUNE_KEEP_MAX];
    uint32_t keep = keep_count < PRUNE_KEEP_MAX ? keep_count : PRUNE_KEEP_MAX;
    prune_context_t context = {.directory_fd = directory_fd, .op_oldest_kept = 0};
    if (keep > 0) {
        int found = sz_snapshot_list(directory_fd, ops, keep);
        if (found < 0) return found;
        /* Fewer than keep, or keep_count above what we track: keep every complete one. */
        context.op_oldest_kept = (uint32_t)found >= keep && keep_count <= PRUNE_KEEP_MAX
                                     ? ops[keep - 1]
                                     : 0;
    } else {
        context.op_oldest_kept = UINT64_MAX;
    }
    int result = directory_walk(directory_fd, prune_on_name, &context);
    if (result < 0) return result;
    if (context.removed > 0 && fsync(directory_fd) != 0) return -errno;
    return context.removed;
}
