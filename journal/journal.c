/* journal.c: the journal's format, recovery and group commit. Entries are packed into a
 * sector-aligned buffer; each submission is one O_DIRECT write + fdatasync that starts on
 * a fresh sector, so a torn write can only damage ops that were never acknowledged.
 *
 * Design notes. Recovery walks the hash chain from op 1. The chain's successor of an
 * entry ending at offset e is looked for at e (same write), then at e rounded up to the
 * sector (next write), then at offset 0 of the next segment (rollover). Where the chain
 * ends, the rest of the journal is searched at every 128-byte step for valid headers with
 * a higher op: each records op_durable, the highest op that was durable when it was
 * appended. If one says the missing op was durable, the gap is corruption; if none does,
 * the bytes after the end belong to writes that were in flight at a crash (a torn tail).
 *
 *   state diagram of a journal object
 *
 *   [closed] --sz_journal_open: lock, superblock, scan--> [scanned]
 *   [scanned] --scan finds corruption (tail_analyse)--> [closed] (-EUCLEAN)
 *   [scanned] --read_only--> [read_only]
 *   [scanned] --torn tail: tail_truncate, writer_start--> [writing]
 *   [writing] --append/submit/poll--> [writing]
 *   [writing] --write/sync error (write_fail)--> [stopped] (every call returns the error)
 *   [any] --sz_journal_deinit--> [closed]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "journal.h"

/* Start-up reads in large steps; at least one full entry plus a sector of slack. */
#define SCAN_BUFFER_SIZE (8u << 20)
#define SCAN_READ_SIZE (2u << 20)
static_assert(SCAN_BUFFER_SIZE >= 2 * SZ_JOURNAL_WRITE_SIZE_MAX, "scan buffer holds an entry");
/* A short write is finished by resubmitting the rest; a device that keeps falling short
 * is failing, so give up after a few. */
#define WRITE_RETRIES_MAX 4u
/* Segments are numbered from 0; a journal this long would be 10^6 GiB. */
#define SEGMENT_COUNT_MAX 1000000u
#define BUFFER_COUNT_MAX (SZ_JOURNAL_IN_FLIGHT_MAX + 1u)
/* Past the end, writes of this journal can only be found within the in-flight window
 * (writes are issued in order, each right after the previous one), so a run of zeros
 * longer than every in-flight write together ends the search: scanning the rest of a
 * 1 GiB preallocated segment at every start would cost a second. Damage beyond more
 * than SZ_JOURNAL_IN_FLIGHT_MAX consecutive lost writes goes unnoticed. */
#define TAIL_ZERO_RUN_MAX (2u * SZ_JOURNAL_IN_FLIGHT_MAX * SZ_JOURNAL_WRITE_SIZE_MAX)

typedef struct journal_write {
    uint64_t sequence;
    uint32_t segment;
    int file;
    uint64_t offset;    /* of the whole write */
    uint64_t size;      /* of the whole write */
    uint64_t size_done; /* landed so far (short writes) */
    uint64_t op_first;
    uint64_t op_last;
    uint32_t retry_count;
    bool complete;
    uint64_t submitted_ns; /* for on_written only */
} journal_write_t;

typedef struct scan_reader {
    sz_storage_t *storage; /* where the open file is: home or archive */
    sz_storage_t *home;
    sz_storage_t *archive; /* read-only opens: looked in when home lacks a segment */
    uint32_t segment;
    int file;
    uint64_t file_size;
    uint8_t *buffer;
    uint64_t buffer_offset;
    uint64_t buffer_count;
} scan_reader_t;

typedef enum entry_state {
    ENTRY_OK = 0,
    ENTRY_ZERO = 1,        /* nothing written there */
    ENTRY_END = 2,         /* beyond the end of the file */
    ENTRY_HEADER_BAD = 3,  /* bad magic, checksum or fields */
    ENTRY_BODY_BAD = 4,    /* header fine, body checksum wrong or body cut short */
    ENTRY_OP_WRONG = 5,    /* valid, but not the op the chain expects */
    ENTRY_CHAIN_WRONG = 6, /* valid, right op, but checksum_previous differs */
} entry_state_t;

struct sz_journal {
    sz_storage_t *storage;
    sz_journal_options_t options;
    sz_journal_superblock_t superblock;
    sz_u128 genesis;
    sz_journal_info_t info;
    /* Writing. */
    uint8_t *buffers[BUFFER_COUNT_MAX];
    journal_write_t writes[BUFFER_COUNT_MAX]; /* by sequence % buffer_count */
    uint32_t buffer_count;
    uint64_t write_sequence_next; /* the buffer being filled */
    uint64_t write_sequence_oldest;
    uint32_t in_flight_count;
    uint64_t fill_size;
    uint64_t fill_op_first;
    int segment_file;
    uint32_t segment;
    uint64_t segment_offset;
    uint64_t op_last;
    uint64_t op_durable;
    uint64_t timestamp_last;
    sz_u128 checksum_last;
    int error;
    char error_message[320];
};

/* The only clock in the journal, read only for on_written (metrics). */
static uint64_t clock_monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static uint64_t align_up(uint64_t value) {
    return (value + SZ_STORAGE_SECTOR_SIZE - 1) / SZ_STORAGE_SECTOR_SIZE * SZ_STORAGE_SECTOR_SIZE;
}

static sz_u128 checksum(const void *data, size_t size) {
    XXH128_hash_t hash = XXH3_128bits(data, size);
    return ((sz_u128)hash.high64 << 64) | hash.low64;
}

void sz_journal_segment_name(uint32_t segment, char name_out[SZ_STORAGE_NAME_SIZE]) {
    snprintf(name_out, SZ_STORAGE_NAME_SIZE, "journal.%06u", segment);
}

static void problem_set(sz_journal_problem_t *problem, const char *file, uint64_t offset,
                        uint64_t op, const char *reason) {
    if (problem == NULL) return;
    snprintf(problem->file, sizeof(problem->file), "%s", file);
    problem->offset = offset;
    problem->op = op;
    snprintf(problem->reason, sizeof(problem->reason), "%s", reason);
}

/* ---- superblock and format ---- */

static sz_u128 superblock_checksum(const sz_journal_superblock_t *superblock) {
    return checksum((const uint8_t *)superblock + 16, sizeof(*superblock) - 16);
}

bool sz_journal_superblock_valid(const sz_journal_superblock_t *superblock) {
    if (superblock->magic != SZ_JOURNAL_SUPERBLOCK_MAGIC) return false;
    if (superblock->checksum != superblock_checksum(superblock)) return false;
    if (superblock->version != SZ_JOURNAL_VERSION) return false;
    if (superblock->segment_size < SZ_JOURNAL_SEGMENT_SIZE_MIN) return false;
    return superblock->segment_size % SZ_STORAGE_SECTOR_SIZE == 0;
}

static int segment_create(sz_storage_t *storage, uint32_t segment, uint64_t size) {
    char name[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(segment, name);
    int file = -1;
    int result = sz_storage_file_open(storage, name, SZ_STORAGE_OPEN_CREATE, size, &file);
    if (result == -EEXIST) return 0;
    if (result < 0) return result;
    sz_storage_file_close(storage, file);
    return 0;
}

int sz_journal_format(sz_storage_t *storage, const sz_journal_format_options_t *options) {
    SZ_ASSERT(storage != NULL && options != NULL);
    uint64_t segment_size = options->segment_size ? options->segment_size
                                                  : SZ_JOURNAL_SEGMENT_SIZE_DEFAULT;
    if (segment_size < SZ_JOURNAL_SEGMENT_SIZE_MIN) return -EINVAL;
    if (segment_size % SZ_STORAGE_SECTOR_SIZE != 0) return -EINVAL;
    uint8_t *block = aligned_alloc(SZ_STORAGE_SECTOR_SIZE, 2 * SZ_STORAGE_SECTOR_SIZE);
    if (block == NULL) return -ENOMEM;
    memset(block, 0, 2 * SZ_STORAGE_SECTOR_SIZE);
    sz_journal_superblock_t superblock = {
        .magic = SZ_JOURNAL_SUPERBLOCK_MAGIC,
        .version = SZ_JOURNAL_VERSION,
        .replica_index = options->replica_index,
        .cluster_id = options->cluster_id,
        .segment_size = segment_size,
    };
    superblock.checksum = superblock_checksum(&superblock);
    SZ_ASSERT(sz_journal_superblock_valid(&superblock));
    memcpy(block, &superblock, sizeof(superblock));
    memcpy(block + SZ_STORAGE_SECTOR_SIZE, &superblock, sizeof(superblock));
    int file = -1;
    /* Formatted already: touch nothing (retention may have removed segment 0 on purpose). */
    int result = sz_storage_file_open(storage, SZ_JOURNAL_SUPERBLOCK_NAME,
                                      SZ_STORAGE_OPEN_READ_ONLY, 0, &file);
    if (result == 0) {
        sz_storage_file_close(storage, file);
        result = -EEXIST;
        goto done;
    }
    if (result != -ENOENT) goto done;
    /* The segment first: a superblock is the mark of a complete format. */
    result = segment_create(storage, 0, segment_size);
    if (result < 0) goto done;
    result = sz_storage_file_open(storage, SZ_JOURNAL_SUPERBLOCK_NAME, SZ_STORAGE_OPEN_CREATE,
                                  2 * SZ_STORAGE_SECTOR_SIZE, &file);
    if (result < 0) goto done;
    result = sz_storage_write_sync(storage, file, 0, block, 2 * SZ_STORAGE_SECTOR_SIZE);
    sz_storage_file_close(storage, file);
done:
    free(block);
    return result;
}

static int superblock_read(sz_journal_t *journal, sz_journal_problem_t *problem) {
    int file = -1;
    uint32_t flags = SZ_STORAGE_OPEN_READ_ONLY;
    int result = sz_storage_file_open(journal->storage, SZ_JOURNAL_SUPERBLOCK_NAME, flags, 0,
                                      &file);
    if (result < 0) {
        problem_set(problem, SZ_JOURNAL_SUPERBLOCK_NAME, 0, 0,
                    result == -ENOENT ? "no superblock: the directory is not formatted"
                                      : "cannot open the superblock");
        return result;
    }
    uint8_t block[2 * SZ_STORAGE_SECTOR_SIZE];
    int64_t count = sz_storage_read(journal->storage, file, 0, block, sizeof(block));
    sz_storage_file_close(journal->storage, file);
    if (count < 0) {
        problem_set(problem, SZ_JOURNAL_SUPERBLOCK_NAME, 0, 0, "cannot read the superblock");
        return (int)count;
    }
    /* Either copy will do: they are written together and only once. */
    for (uint64_t copy = 0; copy < 2; copy++) {
        uint64_t offset = copy * SZ_STORAGE_SECTOR_SIZE;
        if ((uint64_t)count < offset + sizeof(sz_journal_superblock_t)) break;
        sz_journal_superblock_t superblock;
        memcpy(&superblock, block + offset, sizeof(superblock));
        if (sz_journal_superblock_valid(&superblock)) {
            journal->superblock = superblock;
            journal->genesis = superblock.checksum;
            return 0;
        }
    }
    problem_set(problem, SZ_JOURNAL_SUPERBLOCK_NAME, 0, 0,
                "both superblock copies are damaged (checksum, magic or version)");
    return -EUCLEAN;
}

int sz_journal_superblock_read(sz_storage_t *storage, sz_journal_superblock_t *superblock_out,
                               sz_journal_problem_t *problem_out) {
    SZ_ASSERT(storage != NULL && superblock_out != NULL);
    sz_journal_t journal = {.storage = storage};
    int result = superblock_read(&journal, problem_out);
    if (result == 0) *superblock_out = journal.superblock;
    return result;
}

/* ---- reading entries ---- */

int sz_journal_header_check(const sz_journal_header_t *header) {
    if (header->magic != SZ_JOURNAL_ENTRY_MAGIC) return -EUCLEAN;
    if (header->version != SZ_JOURNAL_VERSION) return -EUCLEAN;
    if (header->checksum_header != checksum((const uint8_t *)header + 16,
                                            SZ_JOURNAL_HEADER_SIZE - 16)) {
        return -EUCLEAN;
    }
    if (header->event_count > SZ_BATCH_EVENTS_MAX) return -EUCLEAN;
    if (header->body_size != header->event_count * SZ_JOURNAL_EVENT_SIZE) return -EUCLEAN;
    if (header->op == 0 || header->op_durable >= header->op) return -EUCLEAN;
    switch (header->operation) {
    case SZ_OPERATION_CREATE_ACCOUNTS:
    case SZ_OPERATION_CREATE_TRANSFERS: return 0;
    case SZ_OPERATION_EXPIRE_PENDING: return header->event_count == 0 ? 0 : -EUCLEAN;
    default: return -EUCLEAN;
    }
}

static int reader_open(scan_reader_t *reader, uint32_t segment) {
    char name[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(segment, name);
    reader->storage = reader->home;
    int result = sz_storage_file_open(reader->storage, name, SZ_STORAGE_OPEN_READ_ONLY, 0,
                                      &reader->file);
    if (result == -ENOENT && reader->archive != NULL) {
        reader->storage = reader->archive;
        result = sz_storage_file_open(reader->storage, name, SZ_STORAGE_OPEN_READ_ONLY, 0,
                                      &reader->file);
    }
    if (result < 0) return result;
    result = sz_storage_file_size(reader->storage, reader->file, &reader->file_size);
    if (result < 0) {
        sz_storage_file_close(reader->storage, reader->file);
        reader->file = -1;
        return result;
    }
    reader->segment = segment;
    reader->buffer_offset = 0;
    reader->buffer_count = 0;
    return 0;
}

static void reader_close(scan_reader_t *reader) {
    if (reader->file >= 0) sz_storage_file_close(reader->storage, reader->file);
    reader->file = -1;
}

/* Points view_out at [offset, offset + size) of the file: -ENODATA past its end. */
static int reader_view(scan_reader_t *reader, uint64_t offset, uint64_t size, bool read_ahead,
                       const uint8_t **view_out) {
    SZ_ASSERT(size <= SCAN_BUFFER_SIZE - SZ_STORAGE_SECTOR_SIZE);
    if (offset + size > reader->file_size) return -ENODATA;
    if (offset < reader->buffer_offset ||
        offset + size > reader->buffer_offset + reader->buffer_count) {
        uint64_t start = offset / SZ_STORAGE_SECTOR_SIZE * SZ_STORAGE_SECTOR_SIZE;
        /* Reads of a few MiB keep the page cache streaming without touching the whole
         * buffer for a small journal. */
        uint64_t read_size = offset - start + size + (read_ahead ? SCAN_READ_SIZE : 0);
        if (read_size > SCAN_BUFFER_SIZE) read_size = SCAN_BUFFER_SIZE;
        int64_t count = sz_storage_read(reader->storage, reader->file, start, reader->buffer,
                                        read_size);
        if (count < 0) return (int)count;
        reader->buffer_offset = start;
        reader->buffer_count = (uint64_t)count;
        if (offset + size > start + (uint64_t)count) return -EIO; /* the file shrank */
    }
    *view_out = reader->buffer + (offset - reader->buffer_offset);
    return 0;
}

/* memcmp against itself shifted by one byte: all bytes equal to the first, at memcmp speed. */
static bool bytes_zero(const uint8_t *bytes, size_t size) {
    SZ_ASSERT(size > 0);
    return bytes[0] == 0 && memcmp(bytes, bytes + 1, size - 1) == 0;
}

/* Reads and classifies the entry at offset against what the chain expects. On
 * ENTRY_OK, header_out and body_out describe it (body valid until the next read). */
static int entry_read(const sz_journal_t *journal, scan_reader_t *reader, uint64_t offset,
                      uint64_t op_expected, sz_u128 checksum_previous,
                      sz_journal_header_t *header_out, const uint8_t **body_out,
                      entry_state_t *state_out) {
    /* Entries up to op_after (a snapshot's op) are only links of the chain: their headers
     * are checked and chained (a header's checksum covers its body's checksum), their
     * bodies are neither read nor checksummed, so a restart does not read the segment
     * prefix before the snapshot (a second per GiB). replay --verify reads them all. */
    bool header_only = op_expected <= journal->options.op_after;
    const uint8_t *view = NULL;
    int result = reader_view(reader, offset, SZ_JOURNAL_HEADER_SIZE, !header_only, &view);
    if (result == -ENODATA) {
        *state_out = ENTRY_END;
        return 0;
    }
    if (result < 0) return result;
    memcpy(header_out, view, SZ_JOURNAL_HEADER_SIZE);
    if (bytes_zero(view, SZ_JOURNAL_HEADER_SIZE)) {
        *state_out = ENTRY_ZERO;
        return 0;
    }
    if (sz_journal_header_check(header_out) < 0 ||
        header_out->cluster_id != journal->superblock.cluster_id) {
        *state_out = ENTRY_HEADER_BAD;
        return 0;
    }
    if (header_only && header_out->op == op_expected) {
        if (offset + SZ_JOURNAL_HEADER_SIZE + header_out->body_size > reader->file_size) {
            *state_out = ENTRY_BODY_BAD;
        } else if (header_out->checksum_previous != checksum_previous) {
            *state_out = ENTRY_CHAIN_WRONG;
        } else {
            *state_out = ENTRY_OK;
            *body_out = NULL;
        }
        return 0;
    }
    result = reader_view(reader, offset + SZ_JOURNAL_HEADER_SIZE, header_out->body_size, true,
                         &view);
    if (result == -ENODATA) {
        *state_out = ENTRY_BODY_BAD;
        return 0;
    }
    if (result < 0) return result;
    if (checksum(view, header_out->body_size) != header_out->checksum_body) {
        *state_out = ENTRY_BODY_BAD;
    } else if (header_out->op != op_expected) {
        *state_out = ENTRY_OP_WRONG;
    } else if (header_out->checksum_previous != checksum_previous) {
        *state_out = ENTRY_CHAIN_WRONG;
    } else {
        *state_out = ENTRY_OK;
        *body_out = view;
    }
    return 0;
}

static const char *entry_state_describe(entry_state_t state) {
    switch (state) {
    case ENTRY_OK: return "valid";
    case ENTRY_ZERO: return "missing (zeros)";
    case ENTRY_END: return "missing (end of file)";
    case ENTRY_HEADER_BAD: return "header checksum mismatch or invalid header";
    case ENTRY_BODY_BAD: return "body checksum mismatch";
    case ENTRY_OP_WRONG: return "unexpected op number (lost or misdirected write)";
    case ENTRY_CHAIN_WRONG: return "hash chain broken (checksum_previous differs)";
    }
    return "unknown";
}

/* ---- recovery ---- */

typedef struct scan_state {
    scan_reader_t reader; /* the segment the chain is in */
    scan_reader_t probe;  /* the next segment, looked at on rollover */
    uint64_t op_last;
    sz_u128 checksum_last;
    uint64_t timestamp_last;
    uint64_t entry_count;
    uint32_t segment_first;
    sz_journal_position_t end;
    bool stopped;
    uint64_t nonzero_end;       /* in the end segment, past the end */
    uint64_t tail_size;         /* non-zero bytes after the end */
    bool later_segments;        /* segments after the end one exist */
    const char *failure;        /* why the scan failed, when it is not an I/O error */
    bool evidence;              /* a later entry says the missing op was durable */
    sz_journal_position_t evidence_position;
    uint64_t evidence_op;
} scan_state_t;

static int scan_deliver(sz_journal_t *journal, scan_state_t *scan,
                        const sz_journal_header_t *header, const uint8_t *body,
                        sz_journal_position_t position) {
    scan->op_last = header->op;
    scan->checksum_last = header->checksum_header;
    uint64_t event_span = header->event_count > 0 ? header->event_count : 1;
    scan->timestamp_last = header->timestamp + event_span - 1;
    scan->entry_count++;
    if (header->op <= journal->options.op_after) {
        /* Before the start: checked, not delivered; the start op anchors the chain. */
        if (header->op == journal->options.op_after &&
            header->checksum_header != journal->options.chain_head) {
            scan->failure = "the entry of the start op does not match the given chain head "
                            "(the snapshot is not of this journal)";
            return -EUCLEAN;
        }
        return 0;
    }
    if (journal->options.on_entry == NULL) return 0;
    int result = journal->options.on_entry(header, body, &position, journal->options.entry_context);
    if (result > 0) {
        /* Stopping early leaves the rest unverified: only readers may do it. */
        if (!journal->options.read_only) return -EINVAL;
        scan->stopped = true;
    }
    return result < 0 ? result : 0;
}

/* ---- starting after an op: finding the segment that holds it ---- */

typedef struct segment_list {
    uint32_t *segments; /* ascending, no duplicates */
    uint32_t count;
    uint32_t capacity;
    int error;
} segment_list_t;

int sz_journal_segment_parse(const char *name, uint32_t *segment_out) {
    static const char prefix[] = "journal.";
    if (strncmp(name, prefix, sizeof(prefix) - 1) != 0) return -EINVAL;
    const char *digits = name + sizeof(prefix) - 1;
    uint64_t value = 0;
    size_t count = 0;
    for (; digits[count] != '\0'; count++) {
        if (digits[count] < '0' || digits[count] > '9' || count >= 9) return -EINVAL;
        value = value * 10 + (uint64_t)(digits[count] - '0');
    }
    if (count < 6 || value >= SEGMENT_COUNT_MAX) return -EINVAL;
    *segment_out = (uint32_t)value;
    return 0;
}

static int segment_list_on_name(const char *name, void *context_raw) {
    segment_list_t *list = context_raw;
    uint32_t segment = 0;
    if (sz_journal_segment_parse(name, &segment) < 0) return 0;
    if (list->count == list->capacity) {
        uint32_t capacity = list->capacity == 0 ? 64 : list->capacity * 2;
        uint32_t *grown = realloc(list->segments, capacity * sizeof(uint32_t));
        if (grown == NULL) return -ENOMEM;
        list->segments = grown;
        list->capacity = capacity;
    }
    list->segments[list->count++] = segment;
    return 0;
}

static int segment_compare(const void *left, const void *right) {
    uint32_t a = *(const uint32_t *)left, b = *(const uint32_t *)right;
    return a < b ? -1 : a > b;
}

/* The segments present in the data directory and (read-only) the archive, ascending. */
static int segment_list_read(const scan_reader_t *reader, segment_list_t *list) {
    int result = sz_storage_list(reader->home, segment_list_on_name, list);
    if (result == 0 && reader->archive != NULL) {
        result = sz_storage_list(reader->archive, segment_list_on_name, list);
    }
    if (result < 0) return result;
    qsort(list->segments, list->count, sizeof(uint32_t), segment_compare);
    uint32_t kept = 0;
    for (uint32_t index = 0; index < list->count; index++) {
        if (kept == 0 || list->segments[kept - 1] != list->segments[index]) {
            list->segments[kept++] = list->segments[index];
        }
    }
    list->count = kept;
    return 0;
}

/* The first header of a segment; *valid_out false when it holds none that checks out (an
 * empty preallocated segment, or damage the scan will report). */
static int segment_first_header(const sz_journal_t *journal, scan_reader_t *reader,
                                uint32_t segment, sz_journal_header_t *header_out,
                                bool *valid_out) {
    *valid_out = false;
    int result = reader_open(reader, segment);
    if (result < 0) return result;
    const uint8_t *view = NULL;
    result = reader_view(reader, 0, SZ_JOURNAL_HEADER_SIZE, false, &view);
    if (result == 0) {
        memcpy(header_out, view, SZ_JOURNAL_HEADER_SIZE);
        *valid_out = sz_journal_header_check(header_out) == 0 &&
                     header_out->cluster_id == journal->superblock.cluster_id;
    }
    reader_close(reader);
    return result == -ENODATA ? 0 : result;
}

/* Binary search (first ops grow with the segment number) for the last segment whose
 * first op is at most op_after + 1. */
static int scan_start_search(sz_journal_t *journal, scan_state_t *scan,
                             const segment_list_t *list, uint32_t *found_out,
                             sz_journal_header_t *header_out) {
    uint64_t op_wanted = journal->options.op_after + 1;
    uint32_t low = 0, high = list->count;
    bool found = false;
    /* Bounded: the range halves every pass. */
    while (low < high) {
        uint32_t middle = low + (high - low) / 2;
        sz_journal_header_t header;
        bool valid = false;
        int result = segment_first_header(journal, &scan->probe, list->segments[middle], &header,
                                          &valid);
        if (result < 0) return result;
        if (valid && header.op <= op_wanted) {
            found = true;
            *found_out = middle;
            *header_out = header;
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    return found ? 0 : -ENOENT;
}

/* Where the scan starts: segment 0 from the superblock's chain, or, after options.op_after,
 * the segment holding op_after + 1 with the chain anchored in it. */
static int scan_start(sz_journal_t *journal, scan_state_t *scan, uint32_t *segment_out,
                      sz_journal_problem_t *problem) {
    const sz_journal_options_t *options = &journal->options;
    char name[SZ_STORAGE_NAME_SIZE];
    *segment_out = 0;
    if (options->op_after == 0 && options->chain_head != 0 &&
        options->chain_head != journal->genesis) {
        problem_set(problem, SZ_JOURNAL_SUPERBLOCK_NAME, 0, 0,
                    "the chain head given for op 0 is not this journal's superblock checksum");
        return -EUCLEAN;
    }
    if (options->op_after == 0) {
        sz_journal_segment_name(0, name);
        int result = reader_open(&scan->probe, 0);
        if (result != -ENOENT) {
            if (result == 0) reader_close(&scan->probe);
            return result == 0 ? 0 : result;
        }
    }
    segment_list_t list = {0};
    int result = segment_list_read(&scan->reader, &list);
    if (result < 0) {
        problem_set(problem, "", 0, options->op_after + 1, "cannot list the journal's segments");
        free(list.segments);
        return result;
    }
    if (options->op_after == 0) {
        /* Segment 0 is missing: a journal that never had one is empty; one whose early
         * segments were retired needs a start op or the archive. */
        free(list.segments);
        if (list.count == 0) return 0;
        problem_set(problem, name, 0, 1,
                    "the first segment is missing (retired?): give the archive directory or "
                    "start from a snapshot");
        return -ENOENT;
    }
    sz_journal_header_t header;
    uint32_t found = 0;
    result = list.count == 0 ? -ENOENT : scan_start_search(journal, scan, &list, &found, &header);
    if (result == 0) *segment_out = list.segments[found];
    free(list.segments);
    if (result < 0) {
        problem_set(problem, "", 0, options->op_after + 1,
                    result == -ENOENT ? "no segment holds the start op (retired without an "
                                        "archive, or the journal is too short)"
                                      : "cannot read the segments' first headers");
        return result;
    }
    if (header.op == options->op_after + 1) {
        if (header.checksum_previous != options->chain_head) {
            sz_journal_segment_name(*segment_out, name);
            problem_set(problem, name, 0, header.op,
                        "the first entry after the start op does not chain to the given chain "
                        "head (the snapshot is not of this journal)");
            return -EUCLEAN;
        }
        scan->op_last = options->op_after;
        scan->checksum_last = options->chain_head;
        return 0;
    }
    /* Mid-segment: anchored on the segment's first entry; op_after's entry is checked
     * against chain_head when the scan passes it (scan_deliver). */
    scan->op_last = header.op - 1;
    scan->checksum_last = header.checksum_previous;
    return 0;
}

/* Finds the chain's next entry after offset: same write, next write, next segment. */
static int scan_next(sz_journal_t *journal, scan_state_t *scan, uint64_t *offset,
                     sz_journal_header_t *header, const uint8_t **body, bool *found_out) {
    entry_state_t state = ENTRY_END;
    uint64_t op_expected = scan->op_last + 1;
    int result = entry_read(journal, &scan->reader, *offset, op_expected, scan->checksum_last,
                            header, body, &state);
    if (result < 0 || state == ENTRY_OK) goto done;
    if (*offset % SZ_STORAGE_SECTOR_SIZE != 0) {
        result = entry_read(journal, &scan->reader, align_up(*offset), op_expected,
                            scan->checksum_last, header, body, &state);
        if (result < 0) goto done;
        if (state == ENTRY_OK) {
            *offset = align_up(*offset);
            goto done;
        }
    }
    if (scan->reader.segment + 1 >= SEGMENT_COUNT_MAX) goto done;
    result = reader_open(&scan->probe, scan->reader.segment + 1);
    if (result == -ENOENT) {
        result = 0;
        goto done;
    }
    if (result < 0) goto done;
    result = entry_read(journal, &scan->probe, 0, op_expected, scan->checksum_last, header, body,
                        &state);
    if (result < 0 || state != ENTRY_OK) {
        reader_close(&scan->probe);
        goto done;
    }
    /* Rollover: the probe becomes the reader, keeping both buffers. */
    scan_reader_t old = scan->reader;
    scan->reader = scan->probe;
    scan->probe = old;
    reader_close(&scan->probe);
    *offset = 0;
done:
    *found_out = result == 0 && state == ENTRY_OK;
    return result;
}

static int scan_chain(sz_journal_t *journal, scan_state_t *scan, sz_journal_problem_t *problem) {
    scan->checksum_last = journal->genesis;
    char name[SZ_STORAGE_NAME_SIZE];
    uint32_t segment_first = 0;
    int result = scan_start(journal, scan, &segment_first, problem);
    if (result < 0) return result;
    scan->segment_first = segment_first;
    result = reader_open(&scan->reader, segment_first);
    if (result == -ENOENT) {
        scan->end = (sz_journal_position_t){.segment = segment_first, .offset = 0};
        return 0;
    }
    uint64_t offset = 0;
    /* Bounded: every pass consumes one entry of a finite journal or ends the walk. */
    while (result == 0 && !scan->stopped) {
        sz_journal_header_t header;
        const uint8_t *body = NULL;
        bool found = false;
        result = scan_next(journal, scan, &offset, &header, &body, &found);
        if (result < 0 || !found) break;
        sz_journal_position_t position = {.segment = scan->reader.segment, .offset = offset};
        result = scan_deliver(journal, scan, &header, body, position);
        offset += SZ_JOURNAL_HEADER_SIZE + header.body_size;
    }
    scan->end = (sz_journal_position_t){.segment = scan->reader.segment, .offset = offset};
    if (result < 0) {
        sz_journal_segment_name(scan->reader.segment, name);
        char reason[256];
        if (scan->failure != NULL) {
            snprintf(reason, sizeof(reason), "%s", scan->failure);
            problem_set(problem, name, offset, scan->op_last, reason);
        } else {
            snprintf(reason, sizeof(reason), "scan stopped: %s", strerror(-result));
            problem_set(problem, name, offset, scan->op_last + 1, reason);
        }
        return result;
    }
    if (scan->op_last < journal->options.op_after) {
        sz_journal_segment_name(scan->end.segment, name);
        char reason[256];
        snprintf(reason, sizeof(reason),
                 "the journal ends at op %llu, before op %llu it should start after",
                 (unsigned long long)scan->op_last, (unsigned long long)journal->options.op_after);
        problem_set(problem, name, scan->end.offset, scan->op_last + 1, reason);
        return -EUCLEAN;
    }
    return 0;
}

/* Looks at every 128-byte step of [start, end of file) for headers of later ops. */
static int tail_scan_segment(sz_journal_t *journal, scan_state_t *scan, scan_reader_t *reader,
                             uint64_t start, bool end_segment, bool *quiet_out) {
    uint64_t block = start / SZ_STORAGE_SECTOR_SIZE * SZ_STORAGE_SECTOR_SIZE;
    uint64_t zero_run = 0;
    *quiet_out = false;
    for (; block + SZ_STORAGE_SECTOR_SIZE <= reader->file_size; block += SZ_STORAGE_SECTOR_SIZE) {
        const uint8_t *view = NULL;
        int result = reader_view(reader, block, SZ_STORAGE_SECTOR_SIZE, true, &view);
        if (result < 0) return result;
        if (bytes_zero(view, SZ_STORAGE_SECTOR_SIZE)) {
            zero_run += SZ_STORAGE_SECTOR_SIZE;
            if (zero_run >= TAIL_ZERO_RUN_MAX) {
                *quiet_out = true;
                return 0;
            }
            continue;
        }
        zero_run = 0;
        uint64_t step_first = block < start ? start - block : 0;
        bool nonzero = false;
        for (uint64_t step = step_first; step < SZ_STORAGE_SECTOR_SIZE;
             step += SZ_JOURNAL_HEADER_SIZE) {
            if (!bytes_zero(view + step, SZ_JOURNAL_HEADER_SIZE)) nonzero = true;
            sz_journal_header_t header;
            memcpy(&header, view + step, sizeof(header));
            if (header.magic != SZ_JOURNAL_ENTRY_MAGIC) continue;
            if (sz_journal_header_check(&header) < 0) continue;
            if (header.cluster_id != journal->superblock.cluster_id) continue;
            if (header.op <= scan->op_last || header.op_durable <= scan->op_last) continue;
            if (!scan->evidence) {
                scan->evidence = true;
                scan->evidence_position =
                    (sz_journal_position_t){.segment = reader->segment, .offset = block + step};
                scan->evidence_op = header.op;
            }
        }
        if (!nonzero) continue;
        scan->tail_size += SZ_STORAGE_SECTOR_SIZE;
        if (end_segment) scan->nonzero_end = block + SZ_STORAGE_SECTOR_SIZE;
    }
    return 0;
}

static int tail_scan(sz_journal_t *journal, scan_state_t *scan) {
    int result = 0;
    bool quiet = false;
    if (scan->reader.file >= 0) {
        result = tail_scan_segment(journal, scan, &scan->reader, scan->end.offset, true, &quiet);
        if (result < 0) return result;
    }
    for (uint32_t segment = scan->end.segment + 1; segment < SEGMENT_COUNT_MAX; segment++) {
        result = reader_open(&scan->probe, segment);
        if (result == -ENOENT) return 0;
        if (result < 0) return result;
        scan->later_segments = true;
        /* A quiet stretch in the end segment means no rollover came after it (a rollover
         * leaves less than one write free), so later segments only need a look if the
         * scan above was not quiet; they are still removed on truncation. */
        if (!quiet) result = tail_scan_segment(journal, scan, &scan->probe, 0, false, &quiet);
        reader_close(&scan->probe);
        if (result < 0) return result;
    }
    return 0;
}

/* Names the damaged entry: where the missing op should have been and what is there. */
static void tail_describe(sz_journal_t *journal, scan_state_t *scan,
                          sz_journal_problem_t *problem) {
    uint64_t op_missing = scan->op_last + 1;
    sz_journal_position_t candidates[3] = {
        scan->end,
        {.segment = scan->end.segment, .offset = align_up(scan->end.offset)},
        {.segment = scan->end.segment + 1, .offset = 0},
    };
    /* Nothing there at all: a whole write is missing, and writes start on a sector. */
    sz_journal_position_t where = candidates[1];
    entry_state_t state = ENTRY_ZERO;
    for (uint32_t index = 0; index < 3; index++) {
        if (index == 1 && candidates[1].offset == candidates[0].offset) continue;
        scan_reader_t *reader = &scan->reader;
        if (index == 2) {
            if (reader_open(&scan->probe, candidates[2].segment) < 0) break;
            reader = &scan->probe;
        }
        sz_journal_header_t header;
        const uint8_t *body = NULL;
        entry_state_t found = ENTRY_END;
        if (reader->file < 0 ||
            entry_read(journal, reader, candidates[index].offset, op_missing, scan->checksum_last,
                       &header, &body, &found) < 0) {
            found = ENTRY_END;
        }
        if (index == 2) reader_close(&scan->probe);
        if (found != ENTRY_ZERO && found != ENTRY_END) {
            where = candidates[index];
            state = found;
            break;
        }
    }
    char name[SZ_STORAGE_NAME_SIZE];
    char evidence_name[SZ_STORAGE_NAME_SIZE];
    char reason[256];
    sz_journal_segment_name(where.segment, name);
    sz_journal_segment_name(scan->evidence_position.segment, evidence_name);
    snprintf(reason, sizeof(reason),
             "entry %s, but op %llu at %s offset %llu was appended after op %llu was durable",
             entry_state_describe(state), (unsigned long long)scan->evidence_op, evidence_name,
             (unsigned long long)scan->evidence_position.offset,
             (unsigned long long)op_missing);
    problem_set(problem, name, where.offset, op_missing, reason);
}

/* ---- writing ---- */

static void write_fail(sz_journal_t *journal, int error, const journal_write_t *write,
                       const char *what) {
    SZ_ASSERT(error < 0);
    if (journal->error != 0) return;
    journal->error = error;
    char name[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(write->segment, name);
    snprintf(journal->error_message, sizeof(journal->error_message),
             "%s on %s at offset %llu size %llu (ops %llu..%llu): %s; nothing after op %llu "
             "is acknowledged",
             what, name, (unsigned long long)write->offset, (unsigned long long)write->size,
             (unsigned long long)write->op_first, (unsigned long long)write->op_last,
             strerror(-error), (unsigned long long)journal->op_durable);
}

static int segment_open_writable(sz_journal_t *journal, uint32_t segment) {
    SZ_ASSERT(segment < SEGMENT_COUNT_MAX);
    char name[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(segment, name);
    int result = segment_create(journal->storage, segment, journal->superblock.segment_size);
    if (result < 0) return result;
    result = sz_storage_file_open(journal->storage, name, 0, 0, &journal->segment_file);
    if (result < 0) return result;
    journal->segment = segment;
    /* Preallocate the next one now, not in the middle of a commit. */
    return segment_create(journal->storage, segment + 1, journal->superblock.segment_size);
}

/* Applies one storage completion to its write. */
static void reap_one(sz_journal_t *journal, const sz_storage_completion_t *completion) {
    journal_write_t *write = &journal->writes[completion->tag % journal->buffer_count];
    SZ_ASSERT(write->sequence == completion->tag);
    SZ_ASSERT(!write->complete);
    uint64_t remaining = write->size - write->size_done;
    if (completion->write_result < 0) {
        write_fail(journal, completion->write_result, write, "write failed");
        return;
    }
    if ((uint64_t)completion->write_result < remaining) {
        write->size_done += (uint64_t)completion->write_result;
        if (completion->write_result % SZ_STORAGE_SECTOR_SIZE != 0 ||
            write->retry_count >= WRITE_RETRIES_MAX) {
            write_fail(journal, -EIO, write, "short write");
            return;
        }
        write->retry_count++;
        const uint8_t *buffer = journal->buffers[write->sequence % journal->buffer_count];
        int result = sz_storage_submit(journal->storage, write->file,
                                       write->offset + write->size_done,
                                       buffer + write->size_done, write->size - write->size_done,
                                       write->sequence);
        if (result < 0) write_fail(journal, result, write, "write resubmission failed");
        return;
    }
    SZ_ASSERT((uint64_t)completion->write_result == remaining);
    if (completion->sync_result < 0) {
        write_fail(journal, completion->sync_result, write, "fdatasync failed");
        return;
    }
    write->size_done = write->size;
    write->complete = true;
}

/* Reaps completions and reports durability in op order; never submits. */
static int journal_reap(sz_journal_t *journal, bool wait) {
    sz_storage_completion_t completions[SZ_STORAGE_IN_FLIGHT_MAX];
    bool waiting = wait && journal->in_flight_count > 0;
    int count = sz_storage_reap(journal->storage, waiting, completions, SZ_STORAGE_IN_FLIGHT_MAX);
    if (count < 0) {
        journal_write_t *oldest =
            &journal->writes[journal->write_sequence_oldest % journal->buffer_count];
        write_fail(journal, count, oldest, "io_uring wait failed");
        return count;
    }
    for (int index = 0; index < count; index++) reap_one(journal, &completions[index]);
    if (journal->error != 0) return journal->error;
    uint64_t op_durable_before = journal->op_durable;
    uint64_t now_ns = 0; /* read once, only when a write completed */
    while (journal->in_flight_count > 0) {
        journal_write_t *oldest =
            &journal->writes[journal->write_sequence_oldest % journal->buffer_count];
        if (!oldest->complete) break;
        SZ_ASSERT(oldest->op_last > journal->op_durable);
        if (journal->options.on_written != NULL) {
            if (now_ns == 0) now_ns = clock_monotonic_ns();
            sz_journal_write_report_t report = {
                .op_first = oldest->op_first,
                .op_last = oldest->op_last,
                .size = oldest->size,
                .latency_ns = now_ns - oldest->submitted_ns,
            };
            journal->options.on_written(&report, journal->options.durable_context);
        }
        journal->op_durable = oldest->op_last;
        journal->write_sequence_oldest++;
        journal->in_flight_count--;
    }
    SZ_ASSERT(journal->op_durable <= journal->op_last);
    if (journal->op_durable != op_durable_before && journal->options.on_durable != NULL) {
        journal->options.on_durable(journal->op_durable, journal->options.durable_context);
    }
    return 0;
}

static int segment_rollover(sz_journal_t *journal) {
    /* Drain first so no write refers to the segment being closed (once a segment). */
    while (journal->in_flight_count > 0) {
        int result = journal_reap(journal, true);
        if (result < 0) return result;
    }
    sz_storage_file_close(journal->storage, journal->segment_file);
    journal->segment_file = -1;
    journal->segment_offset = 0;
    return segment_open_writable(journal, journal->segment + 1);
}

/* Submits the buffer being filled as one write + fdatasync, if a slot is free. */
static int submit_fill(sz_journal_t *journal) {
    if (journal->error != 0) return journal->error;
    if (journal->fill_size == 0) return 0;
    if (journal->in_flight_count == journal->options.in_flight_max) return 0;
    uint64_t size = align_up(journal->fill_size);
    uint8_t *buffer = journal->buffers[journal->write_sequence_next % journal->buffer_count];
    /* Padding is zeroed so no stale bytes reach the disk. */
    memset(buffer + journal->fill_size, 0, size - journal->fill_size);
    if (journal->segment_offset + size > journal->superblock.segment_size) {
        int result = segment_rollover(journal);
        if (result < 0) return result;
    }
    journal_write_t *write = &journal->writes[journal->write_sequence_next % journal->buffer_count];
    *write = (journal_write_t){
        .sequence = journal->write_sequence_next,
        .segment = journal->segment,
        .file = journal->segment_file,
        .offset = journal->segment_offset,
        .size = size,
        .op_first = journal->fill_op_first,
        .op_last = journal->op_last,
        .submitted_ns = journal->options.on_written != NULL ? clock_monotonic_ns() : 0,
    };
    SZ_ASSERT(write->op_first <= write->op_last);
    int result = sz_storage_submit(journal->storage, write->file, write->offset, buffer, size,
                                   write->sequence);
    if (result < 0) {
        write_fail(journal, result, write, "write submission failed");
        return result;
    }
    journal->in_flight_count++;
    journal->write_sequence_next++;
    journal->segment_offset += size;
    journal->fill_size = 0;
    return 0;
}

int sz_journal_append(sz_journal_t *journal, const sz_journal_append_t *entry, const void *body,
                      uint64_t *op_out) {
    SZ_ASSERT(journal != NULL && entry != NULL);
    SZ_ASSERT(!journal->options.read_only);
    if (journal->error != 0) return journal->error;
    if (entry->operation != SZ_OPERATION_CREATE_ACCOUNTS &&
        entry->operation != SZ_OPERATION_CREATE_TRANSFERS &&
        entry->operation != SZ_OPERATION_EXPIRE_PENDING) {
        return -EINVAL;
    }
    if (entry->event_count > SZ_BATCH_EVENTS_MAX) return -EMSGSIZE;
    if (entry->operation == SZ_OPERATION_EXPIRE_PENDING && entry->event_count != 0) {
        return -EMSGSIZE;
    }
    uint64_t body_size = (uint64_t)entry->event_count * SZ_JOURNAL_EVENT_SIZE;
    uint64_t entry_size = SZ_JOURNAL_HEADER_SIZE + body_size;
    if (journal->fill_size + entry_size > SZ_JOURNAL_WRITE_SIZE_MAX) {
        int result = submit_fill(journal);
        if (result < 0) return result;
        if (journal->fill_size != 0) return -EAGAIN;
    }
    SZ_ASSERT(journal->fill_size + entry_size <= SZ_JOURNAL_WRITE_SIZE_MAX);
    sz_journal_header_t header = {
        .checksum_body = checksum(body_size ? body : "", body_size),
        .checksum_previous = journal->checksum_last,
        .cluster_id = journal->superblock.cluster_id,
        .client_id = entry->client_id,
        .trace_id = entry->trace_id,
        .op = journal->op_last + 1,
        .timestamp = entry->timestamp,
        .op_durable = journal->op_durable,
        .request_number = entry->request_number,
        .body_size = (uint32_t)body_size,
        .event_count = entry->event_count,
        .operation = (uint8_t)entry->operation,
        .version = SZ_JOURNAL_VERSION,
        .magic = SZ_JOURNAL_ENTRY_MAGIC,
    };
    header.checksum_header = checksum((const uint8_t *)&header + 16, SZ_JOURNAL_HEADER_SIZE - 16);
    /* Paired with the check at recovery: what we write must pass it. */
    SZ_ASSERT(sz_journal_header_check(&header) == 0);
    uint8_t *buffer = journal->buffers[journal->write_sequence_next % journal->buffer_count];
    if (journal->fill_size == 0) journal->fill_op_first = header.op;
    memcpy(buffer + journal->fill_size, &header, SZ_JOURNAL_HEADER_SIZE);
    if (body_size) memcpy(buffer + journal->fill_size + SZ_JOURNAL_HEADER_SIZE, body, body_size);
    journal->fill_size += entry_size;
    journal->op_last = header.op;
    journal->checksum_last = header.checksum_header;
    journal->timestamp_last = entry->timestamp + (entry->event_count ? entry->event_count : 1) - 1;
    if (op_out != NULL) *op_out = header.op;
    return 0;
}

int sz_journal_submit(sz_journal_t *journal) {
    SZ_ASSERT(journal != NULL && !journal->options.read_only);
    return submit_fill(journal);
}

int sz_journal_poll(sz_journal_t *journal, bool wait) {
    SZ_ASSERT(journal != NULL && !journal->options.read_only);
    if (journal->error != 0) return journal->error;
    int result = journal_reap(journal, wait);
    if (result < 0) return result;
    return submit_fill(journal);
}

int sz_journal_flush(sz_journal_t *journal) {
    SZ_ASSERT(journal != NULL && !journal->options.read_only);
    int result = submit_fill(journal);
    /* Bounded: each pass completes at least one write or fails. */
    while (result == 0 && journal->op_durable < journal->op_last) {
        result = sz_journal_poll(journal, true);
    }
    return result;
}

/* ---- open and close ---- */

/* Zeroes what a crash left after the end, so no stale entry can meet a future chain. */
static int tail_truncate(sz_journal_t *journal, const scan_state_t *scan) {
    uint8_t *zeros = journal->buffers[0];
    memset(zeros, 0, SZ_JOURNAL_WRITE_SIZE_MAX);
    uint64_t offset = align_up(scan->end.offset);
    /* Bounded by the segment size. */
    while (offset < scan->nonzero_end) {
        uint64_t size = scan->nonzero_end - offset;
        if (size > SZ_JOURNAL_WRITE_SIZE_MAX) size = SZ_JOURNAL_WRITE_SIZE_MAX;
        int result = sz_storage_write_sync(journal->storage, journal->segment_file, offset, zeros,
                                           size);
        if (result < 0) return result;
        offset += size;
    }
    for (uint32_t segment = scan->end.segment + 1; segment < SEGMENT_COUNT_MAX; segment++) {
        char name[SZ_STORAGE_NAME_SIZE];
        sz_journal_segment_name(segment, name);
        int result = sz_storage_file_remove(journal->storage, name);
        if (result == -ENOENT) break;
        if (result < 0) return result;
    }
    return 0;
}

static int writer_start(sz_journal_t *journal, const scan_state_t *scan,
                        sz_journal_problem_t *problem) {
    char name[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(scan->end.segment, name);
    journal->buffer_count = journal->options.in_flight_max + 1;
    for (uint32_t index = 0; index < journal->buffer_count; index++) {
        journal->buffers[index] = aligned_alloc(SZ_STORAGE_SECTOR_SIZE, SZ_JOURNAL_WRITE_SIZE_MAX);
        if (journal->buffers[index] == NULL) return -ENOMEM;
    }
    int result = segment_open_writable(journal, scan->end.segment);
    if (result == 0 && (scan->nonzero_end > 0 || scan->later_segments)) {
        result = tail_truncate(journal, scan);
        /* The later segments are gone: the next one comes back empty. */
        if (result == 0) result = segment_create(journal->storage, scan->end.segment + 1,
                                                 journal->superblock.segment_size);
    }
    /* What the scan found may still sit in a volatile cache after a crash: make it durable
     * before anyone builds on it. */
    if (result == 0) result = sz_storage_write_sync(journal->storage, journal->segment_file, 0,
                                                    journal->buffers[0], 0);
    if (result < 0) {
        problem_set(problem, name, scan->end.offset, scan->op_last + 1,
                    "cannot prepare the segment for writing (create, truncate or sync failed)");
        return result;
    }
    journal->segment_offset = align_up(scan->end.offset);
    journal->op_last = scan->op_last;
    journal->op_durable = scan->op_last;
    journal->checksum_last = scan->checksum_last;
    journal->timestamp_last = scan->timestamp_last;
    return 0;
}

static int journal_recover(sz_journal_t *journal, scan_state_t *scan,
                           sz_journal_problem_t *problem) {
    int result = scan_chain(journal, scan, problem);
    if (result < 0 || scan->stopped) return result;
    result = tail_scan(journal, scan);
    if (result < 0) {
        char name[SZ_STORAGE_NAME_SIZE];
        sz_journal_segment_name(scan->end.segment, name);
        problem_set(problem, name, scan->end.offset, scan->op_last + 1,
                    "cannot read the journal after its last entry");
        return result;
    }
    if (scan->evidence) {
        tail_describe(journal, scan, problem);
        return -EUCLEAN;
    }
    return 0;
}

int sz_journal_open(sz_storage_t *storage, const sz_journal_options_t *options,
                    sz_journal_t **journal_out, sz_journal_problem_t *problem_out) {
    SZ_ASSERT(storage != NULL && options != NULL && journal_out != NULL);
    if (problem_out != NULL) memset(problem_out, 0, sizeof(*problem_out));
    if (options->in_flight_max > SZ_JOURNAL_IN_FLIGHT_MAX) return -EINVAL;
    sz_journal_t *journal = calloc(1, sizeof(*journal));
    if (journal == NULL) return -ENOMEM;
    journal->storage = storage;
    journal->options = *options;
    if (journal->options.in_flight_max == 0) journal->options.in_flight_max = SZ_JOURNAL_IN_FLIGHT_DEFAULT;
    journal->segment_file = -1;
    sz_storage_t *archive = options->read_only ? options->archive : NULL;
    scan_state_t scan = {
        .reader = {.storage = storage, .home = storage, .archive = archive, .file = -1},
        .probe = {.storage = storage, .home = storage, .archive = archive, .file = -1},
    };
    int result = 0;
    if (!options->read_only) {
        result = sz_storage_lock(storage);
        if (result < 0) {
            problem_set(problem_out, "lock", 0, 0,
                        "the data directory is locked by another sumzero process");
            goto fail;
        }
    }
    result = superblock_read(journal, problem_out);
    if (result < 0) goto fail;
    scan.reader.buffer = aligned_alloc(SZ_STORAGE_SECTOR_SIZE, SCAN_BUFFER_SIZE);
    scan.probe.buffer = aligned_alloc(SZ_STORAGE_SECTOR_SIZE, SCAN_BUFFER_SIZE);
    if (scan.reader.buffer == NULL || scan.probe.buffer == NULL) {
        result = -ENOMEM;
        goto fail;
    }
    result = journal_recover(journal, &scan, problem_out);
    if (result < 0) goto fail;
    if (!options->read_only) {
        result = writer_start(journal, &scan, problem_out);
        if (result < 0) goto fail;
    } else {
        journal->op_last = scan.op_last;
        journal->op_durable = scan.op_last;
        journal->timestamp_last = scan.timestamp_last;
        journal->checksum_last = scan.checksum_last;
    }
    journal->info = (sz_journal_info_t){
        .cluster_id = journal->superblock.cluster_id,
        .replica_index = journal->superblock.replica_index,
        .version = journal->superblock.version,
        .segment_size = journal->superblock.segment_size,
        .entry_count_found = scan.entry_count,
        .end = scan.end,
        .segment_first = scan.segment_first,
        .scan_stopped = scan.stopped,
        .tail_torn = scan.tail_size > 0,
        .tail_size = scan.tail_size,
    };
    reader_close(&scan.reader);
    reader_close(&scan.probe);
    free(scan.reader.buffer);
    free(scan.probe.buffer);
    *journal_out = journal;
    return 0;
fail:
    reader_close(&scan.reader);
    reader_close(&scan.probe);
    free(scan.reader.buffer);
    free(scan.probe.buffer);
    sz_journal_deinit(journal);
    return result;
}

void sz_journal_deinit(sz_journal_t *journal) {
    if (journal == NULL) return;
    /* The buffers of in-flight writes are ours: wait for the kernel to let go of them. */
    sz_storage_completion_t completions[SZ_STORAGE_IN_FLIGHT_MAX];
    while (journal->storage->in_flight_count > 0) {
        if (sz_storage_reap(journal->storage, true, completions, SZ_STORAGE_IN_FLIGHT_MAX) < 0) break;
    }
    if (journal->segment_file >= 0) sz_storage_file_close(journal->storage, journal->segment_file);
    for (uint32_t index = 0; index < BUFFER_COUNT_MAX; index++) free(journal->buffers[index]);
    free(journal);
}

void sz_journal_info(const sz_journal_t *journal, sz_journal_info_t *info_out) {
    SZ_ASSERT(journal != NULL && info_out != NULL);
    *info_out = journal->info;
    info_out->op_last = journal->op_last;
    info_out->checksum_last = journal->checksum_last;
    info_out->op_durable = journal->op_durable;
    info_out->timestamp_last = journal->timestamp_last;
}

const char *sz_journal_error_message(const sz_journal_t *journal) {
    return journal->error_message;
}
