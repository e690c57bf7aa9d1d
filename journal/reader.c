/* reader.c: reads a journal's entries in op order from any op while its writer may still
 * be appending (the subscription stream, the projector's journal source, tools). Plain
 * buffered pread on the segment files; nothing is written and nothing is locked.
 *
 * Design notes. Open reads the superblock, lists the segments of the data directory and
 * of the archive directory, and starts at offset 0 of the last segment whose first entry
 * is at or before op_from (segment 0 starts at op 1 and chains to the superblock); entries
 * before op_from are read, checked and skipped. The successor of an entry ending at
 * offset e is looked for where the writer can have put it, as recovery does: at e (same
 * write), at e rounded up to the sector (next write), at offset 0 of the next segment.
 *
 * When it is at none of them, the reader decides between "not written yet" and damage:
 * - op_limit given (not UINT64_MAX): the caller says every op up to it is on disk (a
 *   server's committed op), so a missing op at or below it is damage;
 * - op_limit UINT64_MAX: as recovery, damage needs evidence: a later valid entry whose
 *   op_durable says the missing op had been durable. The search for it runs only when
 *   the bytes where the entry should be are not zeros (a flipped bit, or a write landing
 *   while we read); zeros read as the end of what is written.
 * A region that failed is read again from the file once before deciding, so a buffer
 * filled before the writer's bytes landed never counts as damage.
 *
 *   state diagram of a reader
 *
 *   [closed] --open: superblock, segment list, locate op_from--> [skipping]
 *   [skipping] --next: entry below op_from (checked, not handed out)--> [skipping]
 *   [skipping] --next: entry op_from--> [reading]
 *   [reading] --next: entry found--> [reading] (returns 1)
 *   [reading] --next: op_limit reached or nothing written yet--> [reading] (returns 0)
 *   [any] --next: damage or I/O--> [failed] (every later next returns the error)
 *   [any] --close--> [closed]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "reader.h"

/* One entry (at most 1 MiB) plus the sector it may start in; reads of up to this size
 * stream the page cache in large steps. A server holds one buffer per subscriber, so it is
 * kept at two writes' worth. */
#define READER_BUFFER_SIZE (2u * SZ_JOURNAL_WRITE_SIZE_MAX)
static_assert(READER_BUFFER_SIZE >= SZ_STORAGE_SECTOR_SIZE + SZ_JOURNAL_ENTRY_SIZE_MAX,
              "the reader's buffer holds any entry");
/* As in journal.c: segments are numbered below a million ("journal.NNNNNN"). */
#define SEGMENT_COUNT_MAX 1000000u
/* Evidence of damage lies within the writes that were in flight together; a longer run of
 * zeros ends the search (journal.c's TAIL_ZERO_RUN_MAX). */
#define EVIDENCE_ZERO_RUN_MAX (2u * SZ_JOURNAL_IN_FLIGHT_MAX * SZ_JOURNAL_WRITE_SIZE_MAX)
#define PATH_SIZE 4096u
/* Reads start small and double while the reader streams forward, so a reader at the tail
 * of a live journal, which rereads the end for every new entry, reads little each time. */
#define READ_SIZE_MIN (64u << 10)

typedef enum entry_state {
    ENTRY_OK = 0,
    ENTRY_ZERO = 1,
    ENTRY_END = 2,
    ENTRY_HEADER_BAD = 3,
    ENTRY_BODY_BAD = 4,
    ENTRY_OP_WRONG = 5,
    ENTRY_CHAIN_WRONG = 6,
    ENTRY_SEGMENT_MISSING = 7,
} entry_state_t;

struct sz_journal_reader {
    char directory[PATH_SIZE];
    char archive_directory[PATH_SIZE]; /* "" when none */
    sz_u128 cluster_id;
    sz_u128 genesis; /* the superblock's checksum: op 1's checksum_previous */
    uint64_t op_from;
    bool chain_head_given;
    sz_u128 chain_head;
    /* Where op_next is expected. */
    uint32_t segment;
    int file;
    uint64_t file_size;
    int next_file; /* segment + 1, opened once it exists */
    uint64_t next_file_size;
    uint64_t offset;
    uint64_t op_next;
    bool chain_known; /* false only before the first entry of a segment found at open */
    sz_u128 checksum_last;
    int error; /* sticky once damage or I/O failed a next() */
    sz_journal_problem_t problem;
    /* The file's bytes [buffer_offset, buffer_offset + buffer_count). */
    uint8_t *buffer;
    uint64_t read_size;
    uint64_t buffer_offset;
    uint64_t buffer_count;
};

static sz_u128 checksum(const void *data, size_t size) {
    XXH128_hash_t hash = XXH3_128bits(data, size);
    return ((sz_u128)hash.high64 << 64) | hash.low64;
}

static uint64_t align_up(uint64_t value) {
    return (value + SZ_STORAGE_SECTOR_SIZE - 1) / SZ_STORAGE_SECTOR_SIZE * SZ_STORAGE_SECTOR_SIZE;
}

static bool bytes_zero(const uint8_t *bytes, size_t size) {
    SZ_ASSERT(size > 0);
    return bytes[0] == 0 && memcmp(bytes, bytes + 1, size - 1) == 0;
}

static void problem_set(sz_journal_problem_t *problem, uint32_t segment, uint64_t offset,
                        uint64_t op, const char *reason) {
    if (problem == NULL) return;
    if (segment == UINT32_MAX) {
        snprintf(problem->file, sizeof(problem->file), "%s", SZ_JOURNAL_SUPERBLOCK_NAME);
    } else {
        sz_journal_segment_name(segment, problem->file);
    }
    problem->offset = offset;
    problem->op = op;
    snprintf(problem->reason, sizeof(problem->reason), "%s", reason);
}

static const char *entry_state_describe(entry_state_t state) {
    switch (state) {
    case ENTRY_OK: return "valid";
    case ENTRY_ZERO: return "missing (zeros)";
    case ENTRY_END: return "missing (end of file)";
    case ENTRY_HEADER_BAD: return "header checksum mismatch or invalid header";
    case ENTRY_BODY_BAD: return "body checksum mismatch";
    case ENTRY_OP_WRONG: return "unexpected op number";
    case ENTRY_CHAIN_WRONG: return "hash chain broken (checksum_previous differs)";
    case ENTRY_SEGMENT_MISSING: return "missing (the next segment is in neither directory)";
    }
    return "unknown";
}

/* Reads until size bytes or the end of the file; returns the count or -errno. */
static int64_t read_full(int file, uint64_t offset, uint8_t *buffer, uint64_t size) {
    uint64_t done = 0;
    /* Bounded: each pass reads at least one byte or ends. */
    while (done < size) {
        ssize_t count = pread(file, buffer + done, size - done, (off_t)(offset + done));
        if (count < 0 && errno == EINTR) continue;
        if (count < 0) return -errno;
        if (count == 0) break;
        done += (uint64_t)count;
    }
    return (int64_t)done;
}

/* ---- files ---- */

static int file_open_in(const char *directory, const char *name, int *file_out,
                        uint64_t *size_out) {
    char path[PATH_SIZE + SZ_STORAGE_NAME_SIZE + 2];
    snprintf(path, sizeof(path), "%s/%s", directory, name);
    int file = open(path, O_RDONLY | O_CLOEXEC);
    if (file < 0) return -errno;
    struct stat status;
    if (fstat(file, &status) < 0) {
        int result = -errno;
        close(file);
        return result;
    }
    *file_out = file;
    *size_out = (uint64_t)status.st_size;
    return 0;
}

/* The data directory first, then the archive; once more in the data directory in case
 * retention moved the file between the two looks. -ENOENT when in neither. */
static int segment_open(const sz_journal_reader_t *reader, uint32_t segment, int *file_out,
                        uint64_t *size_out) {
    char name[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(segment, name);
    int result = file_open_in(reader->directory, name, file_out, size_out);
    if (result != -ENOENT || reader->archive_directory[0] == 0) return result;
    result = file_open_in(reader->archive_directory, name, file_out, size_out);
    if (result != -ENOENT) return result;
    return file_open_in(reader->directory, name, file_out, size_out);
}

static int superblock_read(sz_journal_reader_t *reader, sz_journal_problem_t *problem) {
    int file = -1;
    uint64_t size = 0;
    int result = file_open_in(reader->directory, SZ_JOURNAL_SUPERBLOCK_NAME, &file, &size);
    if (result < 0) {
        problem_set(problem, UINT32_MAX, 0, 0,
                    result == -ENOENT ? "no superblock: the directory is not formatted"
                                      : "cannot open the superblock");
        return result;
    }
    uint8_t block[2 * SZ_STORAGE_SECTOR_SIZE];
    int64_t count = read_full(file, 0, block, sizeof(block));
    close(file);
    if (count < 0) {
        problem_set(problem, UINT32_MAX, 0, 0, "cannot read the superblock");
        return (int)count;
    }
    for (uint64_t copy = 0; copy < 2; copy++) {
        uint64_t offset = copy * SZ_STORAGE_SECTOR_SIZE;
        if ((uint64_t)count < offset + sizeof(sz_journal_superblock_t)) break;
        sz_journal_superblock_t superblock;
        memcpy(&superblock, block + offset, sizeof(superblock));
        if (!sz_journal_superblock_valid(&superblock)) continue;
        reader->cluster_id = superblock.cluster_id;
        reader->genesis = superblock.checksum;
        return 0;
    }
    problem_set(problem, UINT32_MAX, 0, 0,
                "both superblock copies are damaged (checksum, magic or version)");
    return -EUCLEAN;
}


/* Widens [*first, *last] by the segments in directory; a missing directory adds none. */
static int segments_list(const char *directory, uint32_t *first, uint32_t *last,
                         bool *found) {
    DIR *listing = opendir(directory);
    if (listing == NULL) return errno == ENOENT ? 0 : -errno;
    /* Bounded by the directory's size. */
    for (struct dirent *item = readdir(listing); item != NULL; item = readdir(listing)) {
        uint32_t segment = 0;
        if (sz_journal_segment_parse(item->d_name, &segment) < 0) continue;
        if (!*found || segment < *first) *first = segment;
        if (!*found || segment > *last) *last = segment;
        *found = true;
    }
    closedir(listing);
    return 0;
}

/* ---- the buffer ---- */

static void buffer_drop(sz_journal_reader_t *reader) {
    reader->buffer_offset = 0;
    reader->buffer_count = 0;
}

/* Points view_out at [offset, offset + size) of the current segment: -ENODATA past its
 * end. */
static int view(sz_journal_reader_t *reader, uint64_t offset, uint64_t size,
                const uint8_t **view_out) {
    SZ_ASSERT(size <= READER_BUFFER_SIZE - SZ_STORAGE_SECTOR_SIZE);
    SZ_ASSERT(reader->file >= 0);
    if (offset + size > reader->file_size) {
        /* A segment found while its writer was still preallocating it looked short. */
        struct stat status;
        if (fstat(reader->file, &status) < 0) return -errno;
        reader->file_size = (uint64_t)status.st_size;
        if (offset + size > reader->file_size) return -ENODATA;
    }
    if (offset < reader->buffer_offset ||
        offset + size > reader->buffer_offset + reader->buffer_count) {
        uint64_t start = offset / SZ_STORAGE_SECTOR_SIZE * SZ_STORAGE_SECTOR_SIZE;
        uint64_t read_size = reader->read_size;
        if (read_size < offset - start + size) read_size = offset - start + size;
        if (start + read_size > reader->file_size) read_size = reader->file_size - start;
        if (reader->read_size < READER_BUFFER_SIZE) reader->read_size *= 2;
        int64_t count = read_full(reader->file, start, reader->buffer, read_size);
        if (count < 0) return (int)count;
        reader->buffer_offset = start;
        reader->buffer_count = (uint64_t)count;
        if (offset + size > start + (uint64_t)count) {
            buffer_drop(reader);
            return -ENODATA; /* the file is shorter than it was */
        }
    }
    *view_out = reader->buffer + (offset - reader->buffer_offset);
    return 0;
}

/* Classifies the bytes at offset of the current segment against op_next and the chain. */
static int entry_read(sz_journal_reader_t *reader, uint64_t offset,
                      const sz_journal_header_t **header_out, const void **body_out,
                      entry_state_t *state_out) {
    const uint8_t *bytes = NULL;
    int result = view(reader, offset, SZ_JOURNAL_HEADER_SIZE, &bytes);
    if (result == -ENODATA) {
        *state_out = ENTRY_END;
        return 0;
    }
    if (result < 0) return result;
    const sz_journal_header_t *header = (const sz_journal_header_t *)bytes;
    if (bytes_zero(bytes, SZ_JOURNAL_HEADER_SIZE)) {
        *state_out = ENTRY_ZERO;
        return 0;
    }
    if (sz_journal_header_check(header) < 0 || header->cluster_id != reader->cluster_id) {
        *state_out = ENTRY_HEADER_BAD;
        return 0;
    }
    /* The whole entry in one view; a refill reads the header again, so it must not have
     * changed (it cannot once written, unless the file is being damaged under us). */
    sz_journal_header_t header_copy;
    memcpy(&header_copy, bytes, sizeof(header_copy));
    uint32_t body_size = header_copy.body_size;
    result = view(reader, offset, SZ_JOURNAL_HEADER_SIZE + body_size, &bytes);
    if (result == -ENODATA) {
        *state_out = ENTRY_BODY_BAD;
        return 0;
    }
    if (result < 0) return result;
    if (memcmp(bytes, &header_copy, sizeof(header_copy)) != 0) {
        *state_out = ENTRY_HEADER_BAD;
        return 0;
    }
    header = (const sz_journal_header_t *)bytes;
    bytes += SZ_JOURNAL_HEADER_SIZE;
    if (checksum(bytes, body_size) != header->checksum_body) {
        *state_out = ENTRY_BODY_BAD;
    } else if (header->op != reader->op_next) {
        *state_out = ENTRY_OP_WRONG;
    } else if (reader->chain_known && header->checksum_previous != reader->checksum_last) {
        *state_out = ENTRY_CHAIN_WRONG;
    } else {
        *state_out = ENTRY_OK;
        *header_out = header;
        *body_out = bytes;
    }
    return 0;
}

/* ---- locating the next entry ---- */

static void segment_switch(sz_journal_reader_t *reader) {
    SZ_ASSERT(reader->next_file >= 0);
    close(reader->file);
    reader->file = reader->next_file;
    reader->file_size = reader->next_file_size;
    reader->next_file = -1;
    reader->segment++;
    reader->offset = 0;
    buffer_drop(reader);
}

/* The first header of the next segment, if that segment exists yet. */
static int next_segment_probe(sz_journal_reader_t *reader, entry_state_t *state_out) {
    *state_out = ENTRY_SEGMENT_MISSING;
    if (reader->segment + 1 >= SEGMENT_COUNT_MAX) return 0;
    if (reader->next_file < 0) {
        int result = segment_open(reader, reader->segment + 1, &reader->next_file,
                                  &reader->next_file_size);
        if (result == -ENOENT) return 0;
        if (result < 0) return result;
    }
    sz_journal_header_t header;
    int64_t count = read_full(reader->next_file, 0, (uint8_t *)&header, sizeof(header));
    if (count < 0) return (int)count;
    if ((uint64_t)count < sizeof(header)) {
        *state_out = ENTRY_END;
    } else if (bytes_zero((const uint8_t *)&header, sizeof(header))) {
        *state_out = ENTRY_ZERO;
    } else if (sz_journal_header_check(&header) < 0 || header.cluster_id != reader->cluster_id) {
        *state_out = ENTRY_HEADER_BAD;
    } else if (header.op != reader->op_next) {
        *state_out = ENTRY_OP_WRONG;
    } else if (reader->chain_known && header.checksum_previous != reader->checksum_last) {
        *state_out = ENTRY_CHAIN_WRONG;
    } else {
        *state_out = ENTRY_OK;
    }
    return 0;
}

/* What was found where op_next should be, for the decision and the problem report. */
typedef struct locate_outcome {
    entry_state_t at_end;     /* at offset */
    entry_state_t at_aligned; /* at offset rounded up to the sector */
    entry_state_t at_next;    /* at offset 0 of the next segment */
} locate_outcome_t;

static int locate(sz_journal_reader_t *reader, const sz_journal_header_t **header_out,
                  const void **body_out, locate_outcome_t *outcome, bool *found_out) {
    *found_out = false;
    *outcome = (locate_outcome_t){ENTRY_END, ENTRY_END, ENTRY_END};
    int result = entry_read(reader, reader->offset, header_out, body_out, &outcome->at_end);
    if (result < 0) return result;
    if (outcome->at_end == ENTRY_OK) {
        *found_out = true;
        return 0;
    }
    uint64_t aligned = align_up(reader->offset);
    outcome->at_aligned = outcome->at_end;
    if (aligned != reader->offset) {
        result = entry_read(reader, aligned, header_out, body_out, &outcome->at_aligned);
        if (result < 0) return result;
        if (outcome->at_aligned == ENTRY_OK) {
            reader->offset = aligned;
            *found_out = true;
            return 0;
        }
    }
    result = next_segment_probe(reader, &outcome->at_next);
    if (result < 0 || outcome->at_next != ENTRY_OK) return result;
    /* The header is right: move over and read the whole entry from there. */
    segment_switch(reader);
    result = entry_read(reader, 0, header_out, body_out, &outcome->at_next);
    if (result < 0) return result;
    outcome->at_end = outcome->at_aligned = outcome->at_next;
    *found_out = outcome->at_next == ENTRY_OK;
    return 0;
}

static bool state_written(entry_state_t state) {
    return state != ENTRY_ZERO && state != ENTRY_END && state != ENTRY_SEGMENT_MISSING;
}

/* Looks at every 128-byte step of file from start for a valid header of a later op that
 * records op_next as durable. Bounded by the file and by a run of zeros (quiet_out). Uses
 * the reader's buffer as scratch. */
static int evidence_find(sz_journal_reader_t *reader, int file, uint64_t file_size,
                         uint64_t start, uint64_t *offset_out, uint64_t *op_out,
                         bool *found_out, bool *quiet_out) {
    *found_out = false;
    *quiet_out = false;
    buffer_drop(reader);
    uint64_t zero_run = 0;
    uint64_t chunk = start / SZ_STORAGE_SECTOR_SIZE * SZ_STORAGE_SECTOR_SIZE;
    for (; chunk < file_size; chunk += READER_BUFFER_SIZE) {
        int64_t count = read_full(file, chunk, reader->buffer, READER_BUFFER_SIZE);
        if (count < 0) return (int)count;
        for (uint64_t block = 0; block + SZ_STORAGE_SECTOR_SIZE <= (uint64_t)count;
             block += SZ_STORAGE_SECTOR_SIZE) {
            const uint8_t *bytes = reader->buffer + block;
            if (bytes_zero(bytes, SZ_STORAGE_SECTOR_SIZE)) {
                zero_run += SZ_STORAGE_SECTOR_SIZE;
                if (zero_run < EVIDENCE_ZERO_RUN_MAX) continue;
                *quiet_out = true;
                return 0;
            }
            zero_run = 0;
            for (uint64_t step = 0; step < SZ_STORAGE_SECTOR_SIZE; step += SZ_JOURNAL_HEADER_SIZE) {
                if (chunk + block + step < start) continue;
                sz_journal_header_t header;
                memcpy(&header, bytes + step, sizeof(header));
                if (header.magic != SZ_JOURNAL_ENTRY_MAGIC) continue;
                if (sz_journal_header_check(&header) < 0) continue;
                if (header.cluster_id != reader->cluster_id) continue;
                if (header.op <= reader->op_next || header.op_durable < reader->op_next) continue;
                *offset_out = chunk + block + step;
                *op_out = header.op;
                *found_out = true;
                return 0;
            }
        }
        if ((uint64_t)count < READER_BUFFER_SIZE) break;
    }
    return 0;
}

/* Nothing valid where op_next belongs: damage (-EUCLEAN, problem filled) or not yet (0). */
static int missing_decide(sz_journal_reader_t *reader, uint64_t op_limit,
                          const locate_outcome_t *outcome) {
    entry_state_t state = outcome->at_end;
    uint64_t offset = reader->offset;
    if (!state_written(state) && state_written(outcome->at_aligned)) {
        state = outcome->at_aligned;
        offset = align_up(reader->offset);
    }
    char reason[256];
    if (op_limit != UINT64_MAX) {
        /* The caller vouches that op_next is on disk. */
        if (!state_written(state) && outcome->at_next == ENTRY_SEGMENT_MISSING) {
            state = ENTRY_SEGMENT_MISSING;
        } else if (!state_written(state) && state_written(outcome->at_next)) {
            state = outcome->at_next;
        }
        snprintf(reason, sizeof(reason), "entry %s, but op %llu is below the limit %llu",
                 entry_state_describe(state), (unsigned long long)reader->op_next,
                 (unsigned long long)op_limit);
        problem_set(&reader->problem, reader->segment, offset, reader->op_next, reason);
        return -EUCLEAN;
    }
    if (!state_written(state)) return 0;
    uint64_t evidence_offset = 0;
    uint64_t evidence_op = 0;
    bool found = false;
    bool quiet = false;
    int result = evidence_find(reader, reader->file, reader->file_size, offset,
                               &evidence_offset, &evidence_op, &found, &quiet);
    const char *where = "this segment";
    /* Writes that came after it may have gone to the next segment. */
    if (result == 0 && !found && !quiet && reader->next_file >= 0) {
        result = evidence_find(reader, reader->next_file, reader->next_file_size, 0,
                               &evidence_offset, &evidence_op, &found, &quiet);
        where = "the next segment";
    }
    buffer_drop(reader);
    if (result < 0) return result;
    if (!found) return 0;
    snprintf(reason, sizeof(reason),
             "entry %s, but op %llu at offset %llu of %s was appended after op %llu was durable",
             entry_state_describe(state), (unsigned long long)evidence_op,
             (unsigned long long)evidence_offset, where, (unsigned long long)reader->op_next);
    problem_set(&reader->problem, reader->segment, offset, reader->op_next, reason);
    return -EUCLEAN;
}

/* ---- the interface ---- */

/* Finds the last segment whose first entry is at or before op_from. */
static int reader_locate(sz_journal_reader_t *reader, uint32_t first, uint32_t last,
                         sz_journal_problem_t *problem) {
    uint64_t op_first_seen = 0;
    /* Bounded by the segment count; from the newest down, so a reader of recent ops opens
     * one or two files. */
    for (uint32_t segment = last + 1; segment-- > first;) {
        int file = -1;
        uint64_t size = 0;
        int result = segment_open(reader, segment, &file, &size);
        if (result == -ENOENT) continue; /* a gap: reading through it will say so */
        if (result < 0) {
            problem_set(problem, segment, 0, reader->op_from, "cannot open the segment");
            return result;
        }
        sz_journal_header_t header;
        int64_t count = read_full(file, 0, (uint8_t *)&header, sizeof(header));
        bool valid = count == (int64_t)sizeof(header) && sz_journal_header_check(&header) == 0 &&
                     header.cluster_id == reader->cluster_id;
        bool start = segment == 0 || (valid && header.op <= reader->op_from);
        if (count < 0) {
            close(file);
            problem_set(problem, segment, 0, reader->op_from, "cannot read the segment");
            return (int)count;
        }
        if (valid) op_first_seen = header.op;
        if (!start) {
            close(file);
            continue;
        }
        reader->segment = segment;
        reader->file = file;
        reader->file_size = size;
        reader->offset = 0;
        reader->op_next = segment == 0 ? 1 : header.op;
        /* Op 1 chains to the superblock; a later first entry of a segment is checked
         * against the chain head, if given, when it is op_from (next()). */
        reader->chain_known = reader->op_next == 1;
        reader->checksum_last = reader->genesis;
        return 0;
    }
    char reason[256];
    snprintf(reason, sizeof(reason),
             "op %llu is before the first op available (%llu); older segments were retired",
             (unsigned long long)reader->op_from, (unsigned long long)op_first_seen);
    /* The problem's op is the first op available (0 if none), for a server's answer. */
    problem_set(problem, first, 0, op_first_seen, reason);
    return -ENOENT;
}

int sz_journal_reader_open(const sz_journal_reader_options_t *options,
                           sz_journal_reader_t **reader_out, sz_journal_problem_t *problem_out) {
    SZ_ASSERT(options != NULL && reader_out != NULL);
    if (problem_out != NULL) memset(problem_out, 0, sizeof(*problem_out));
    if (options->directory == NULL || options->op_from == 0) return -EINVAL;
    if (strlen(options->directory) >= PATH_SIZE) return -ENAMETOOLONG;
    if (options->archive_directory != NULL && strlen(options->archive_directory) >= PATH_SIZE) {
        return -ENAMETOOLONG;
    }
    sz_journal_reader_t *reader = calloc(1, sizeof(*reader));
    if (reader == NULL) return -ENOMEM;
    reader->file = -1;
    reader->next_file = -1;
    snprintf(reader->directory, sizeof(reader->directory), "%s", options->directory);
    if (options->archive_directory != NULL) {
        snprintf(reader->archive_directory, sizeof(reader->archive_directory), "%s",
                 options->archive_directory);
    }
    reader->op_from = options->op_from;
    reader->chain_head_given = options->chain_head != NULL;
    if (options->chain_head != NULL) reader->chain_head = *options->chain_head;
    reader->buffer = aligned_alloc(SZ_STORAGE_SECTOR_SIZE, READER_BUFFER_SIZE);
    reader->read_size = READ_SIZE_MIN;
    int result = reader->buffer == NULL ? -ENOMEM : superblock_read(reader, problem_out);
    if (result < 0) goto fail;
    uint32_t first = 0;
    uint32_t last = 0;
    bool found = false;
    result = segments_list(reader->directory, &first, &last, &found);
    if (result == 0 && reader->archive_directory[0] != 0) {
        result = segments_list(reader->archive_directory, &first, &last, &found);
    }
    if (result < 0) {
        problem_set(problem_out, 0, 0, options->op_from, "cannot list the segments");
        goto fail;
    }
    if (!found) {
        problem_set(problem_out, 0, 0, 0, "no journal segment found");
        result = -ENOENT;
        goto fail;
    }
    result = reader_locate(reader, first, last, problem_out);
    if (result < 0) goto fail;
    SZ_ASSERT(reader->file >= 0 && reader->op_next <= reader->op_from);
    *reader_out = reader;
    return 0;
fail:
    sz_journal_reader_close(reader);
    return result;
}

int sz_journal_reader_next(sz_journal_reader_t *reader, uint64_t op_limit,
                           const sz_journal_header_t **header_out, const void **body_out,
                           sz_journal_problem_t *problem_out) {
    SZ_ASSERT(reader != NULL && header_out != NULL && body_out != NULL);
    SZ_ASSERT(reader->file >= 0);
    int result = reader->error;
    /* Bounded: each pass consumes one entry below op_from (a segment holds finitely many)
     * or returns. */
    while (result == 0) {
        if (reader->op_next > op_limit) return 0;
        const sz_journal_header_t *header = NULL;
        const void *body = NULL;
        locate_outcome_t outcome;
        bool found = false;
        result = locate(reader, &header, &body, &outcome, &found);
        if (result == 0 && !found) {
            /* The buffer may predate the writer's bytes: look at the file once more. */
            buffer_drop(reader);
            reader->read_size = READ_SIZE_MIN;
            result = locate(reader, &header, &body, &outcome, &found);
        }
        if (result < 0) {
            problem_set(&reader->problem, reader->segment, reader->offset, reader->op_next,
                        "cannot read the segment");
            break;
        }
        if (!found) {
            result = missing_decide(reader, op_limit, &outcome);
            if (result == 0) return 0;
            break;
        }
        SZ_ASSERT(header->op == reader->op_next);
        if (header->op == reader->op_from && reader->chain_head_given &&
            header->checksum_previous != reader->chain_head) {
            problem_set(&reader->problem, reader->segment, reader->offset, header->op,
                        "the entry does not chain to the given chain head");
            result = -EUCLEAN;
            break;
        }
        reader->offset += SZ_JOURNAL_HEADER_SIZE + header->body_size;
        reader->op_next++;
        reader->checksum_last = header->checksum_header;
        reader->chain_known = true;
        if (header->op < reader->op_from) continue;
        *header_out = header;
        *body_out = body;
        return 1;
    }
    SZ_ASSERT(result < 0);
    reader->error = result;
    if (problem_out != NULL) *problem_out = reader->problem;
    return result;
}

sz_u128 sz_journal_reader_cluster_id(const sz_journal_reader_t *reader) {
    SZ_ASSERT(reader != NULL);
    return reader->cluster_id;
}

void sz_journal_reader_close(sz_journal_reader_t *reader) {
    if (reader == NULL) return;
    if (reader->file >= 0) close(reader->file);
    if (reader->next_file >= 0) close(reader->next_file);
    free(reader->buffer);
    free(reader);
}
