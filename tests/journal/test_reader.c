/* test_reader.c: the journal reader on real journals written through the journal API (io_uring
 * storage, 4 MiB segments, in a temporary directory). Proves that it hands out every entry
 * exactly as written from op 1 and from any op (segment boundaries included), that it
 * follows a journal while a writer thread appends and never shows an op above op_limit,
 * that a flipped bit anywhere in an entry is -EUCLEAN naming its op and offset and the
 * entry is never handed out, that a missing segment in the middle is damage, and that
 * segments moved to an archive directory are read from there. Seeded (SUMZERO_SEED). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal/reader.h"
#include "ops.h"

#define SEGMENT_SIZE SZ_JOURNAL_SEGMENT_SIZE_MIN
#define OP_COUNT_MAX 8192u
#define JOURNAL_OPS 6000u

static const sz_u128 cluster_id = 0x5EAull;

/* What a read-only open of the journal found: the reference the reader is compared to. */
typedef struct reference {
    uint64_t op_count;
    sz_journal_position_t positions[OP_COUNT_MAX + 1]; /* by op */
    sz_u128 checksums[OP_COUNT_MAX + 1];               /* checksum_header by op */
    uint64_t op_durable_max;                           /* the highest op_durable recorded */
} reference_t;

static reference_t reference;
static char directory[64];
static uint64_t seed;

static uint64_t seed_get(void) {
    const char *text = getenv("SUMZERO_SEED");
    uint64_t value = text != NULL ? strtoull(text, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "test_reader: SUMZERO_SEED=%llu\n", (unsigned long long)value);
    return value;
}

static void directory_make(void) {
    snprintf(directory, sizeof(directory), "/tmp/sz_test_reader_XXXXXX");
    cr_assert_not_null(mkdtemp(directory));
    seed = seed_get();
}

static void directory_remove(void) {
    char command[160];
    snprintf(command, sizeof(command), "rm -rf '%s' '%s.archive'", directory, directory);
    cr_assert_eq(system(command), 0);
}

/* Appends ops op_first..op_last with the ops.h workload, submitting every few appends so
 * writes hold one to several entries. Returns the journal still open. */
static void journal_append_ops(sz_journal_t *journal, uint64_t op_first, uint64_t op_last) {
    static uint8_t events[OPS_EVENTS_MAX * SZ_JOURNAL_EVENT_SIZE];
    for (uint64_t op = op_first; op <= op_last; op++) {
        sz_journal_append_t entry;
        ops_generate(seed, op, &entry, events);
        uint64_t op_appended = 0;
        int result = sz_journal_append(journal, &entry, events, &op_appended);
        /* Bounded: each poll completes a write or fails. */
        while (result == -EAGAIN) {
            cr_assert_eq(sz_journal_poll(journal, true), 0);
            result = sz_journal_append(journal, &entry, events, &op_appended);
        }
        cr_assert_eq(result, 0);
        cr_assert_eq(op_appended, op);
        if (ops_mix(seed + op) % 4 == 0) cr_assert_eq(sz_journal_submit(journal), 0);
        cr_assert_eq(sz_journal_poll(journal, false), 0);
    }
}

static int reference_collect(const sz_journal_header_t *header, const void *body,
                             const sz_journal_position_t *position, void *context) {
    (void)body;
    (void)context;
    if (header->op > OP_COUNT_MAX) return -ERANGE;
    reference.positions[header->op] = *position;
    reference.checksums[header->op] = header->checksum_header;
    reference.op_count = header->op;
    if (header->op_durable > reference.op_durable_max) {
        reference.op_durable_max = header->op_durable;
    }
    return 0;
}

static void reference_build(void) {
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_uring_init(directory, &storage), 0);
    sz_journal_options_t options = {.read_only = true, .on_entry = reference_collect};
    sz_journal_t *journal = NULL;
    memset(&reference, 0, sizeof(reference));
    cr_assert_eq(sz_journal_open(storage, &options, &journal, NULL), 0);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
}

/* A formatted journal of op_count ops, closed, with its reference. */
static void journal_write(uint64_t op_count) {
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_uring_init(directory, &storage), 0);
    sz_journal_format_options_t format = {.cluster_id = cluster_id, .segment_size = SEGMENT_SIZE};
    cr_assert_eq(sz_journal_format(storage, &format), 0);
    sz_journal_options_t options = {0};
    sz_journal_t *journal = NULL;
    cr_assert_eq(sz_journal_open(storage, &options, &journal, NULL), 0);
    journal_append_ops(journal, 1, op_count);
    cr_assert_eq(sz_journal_flush(journal), 0);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
    reference_build();
    cr_assert_eq(reference.op_count, op_count);
    cr_assert_gt(reference.positions[op_count].segment, 1, "the journal spans 3+ segments");
}

/* The entry is exactly what the workload appended for its op. */
static void entry_assert(const sz_journal_header_t *header, const void *body, uint64_t op) {
    static uint8_t events[OPS_EVENTS_MAX * SZ_JOURNAL_EVENT_SIZE];
    sz_journal_append_t entry;
    uint32_t body_size = ops_generate(seed, op, &entry, events);
    cr_assert_eq(header->op, op);
    cr_assert_eq(sz_journal_header_check(header), 0);
    cr_assert(header->checksum_header == reference.checksums[op], "op %llu",
              (unsigned long long)op);
    cr_assert(header->cluster_id == cluster_id);
    cr_assert_eq(header->body_size, body_size);
    cr_assert_eq(header->operation, (uint8_t)entry.operation);
    cr_assert_eq(header->timestamp, entry.timestamp);
    cr_assert_eq(header->trace_id, entry.trace_id);
    if (body_size > 0) {
        cr_assert_eq(memcmp(body, events, body_size), 0, "op %llu body", (unsigned long long)op);
    }
    cr_assert_eq((uintptr_t)body % 128, 0, "bodies are aligned as records");
}

static sz_journal_reader_t *reader_open_at(uint64_t op_from, const char *archive) {
    sz_journal_reader_options_t options = {.directory = directory, .archive_directory = archive,
                                           .op_from = op_from};
    sz_journal_reader_t *reader = NULL;
    sz_journal_problem_t problem;
    int result = sz_journal_reader_open(&options, &reader, &problem);
    cr_assert_eq(result, 0, "open at op %llu: %s %s", (unsigned long long)op_from, problem.file,
                 problem.reason);
    cr_assert(sz_journal_reader_cluster_id(reader) == cluster_id);
    return reader;
}

/* Reads from op_from to the end and checks every entry; returns the count read. */
static uint64_t reader_read_all(sz_journal_reader_t *reader, uint64_t op_from, uint64_t op_limit) {
    uint64_t op = op_from;
    for (;;) {
        const sz_journal_header_t *header = NULL;
        const void *body = NULL;
        sz_journal_problem_t problem;
        int result = sz_journal_reader_next(reader, op_limit, &header, &body, &problem);
        cr_assert_geq(result, 0, "op %llu: %s offset %llu: %s", (unsigned long long)op,
                      problem.file, (unsigned long long)problem.offset, problem.reason);
        if (result == 0) break;
        entry_assert(header, body, op);
        op++;
    }
    return op - op_from;
}

Test(reader, reads_every_entry_of_a_journal_from_op_1_across_segments,
     .init = directory_make, .fini = directory_remove) {
    journal_write(JOURNAL_OPS);
    sz_journal_reader_t *reader = reader_open_at(1, NULL);
    cr_assert_eq(reader_read_all(reader, 1, UINT64_MAX), JOURNAL_OPS);
    /* At the end it keeps answering "nothing yet". */
    const sz_journal_header_t *header = NULL;
    const void *body = NULL;
    cr_assert_eq(sz_journal_reader_next(reader, UINT64_MAX, &header, &body, NULL), 0);
    sz_journal_reader_close(reader);
    /* With the committed op as the limit, it stops there. */
    reader = reader_open_at(1, NULL);
    cr_assert_eq(reader_read_all(reader, 1, JOURNAL_OPS), JOURNAL_OPS);
    cr_assert_eq(sz_journal_reader_next(reader, JOURNAL_OPS, &header, &body, NULL), 0);
    sz_journal_reader_close(reader);
    sz_journal_reader_close(NULL);
}

Test(reader, starts_at_any_op_including_both_sides_of_a_segment_boundary,
     .init = directory_make, .fini = directory_remove) {
    journal_write(JOURNAL_OPS);
    uint64_t ops[16] = {1, 2, JOURNAL_OPS - 1, JOURNAL_OPS, JOURNAL_OPS + 1};
    uint32_t count = 5;
    for (uint64_t op = 2; op <= JOURNAL_OPS && count < 12; op++) {
        if (reference.positions[op].segment != reference.positions[op - 1].segment) {
            ops[count++] = op - 1; /* the last op of a segment */
            ops[count++] = op;     /* the first op of the next */
        }
    }
    cr_assert_geq(count, 9);
    while (count < 16) {
        ops[count] = ops_mix(seed + count) % JOURNAL_OPS + 1;
        count++;
    }
    for (uint32_t index = 0; index < count; index++) {
        sz_journal_reader_t *reader = reader_open_at(ops[index], NULL);
        uint64_t expected = ops[index] <= JOURNAL_OPS ? JOURNAL_OPS + 1 - ops[index] : 0;
        cr_assert_eq(reader_read_all(reader, ops[index], JOURNAL_OPS), expected, "from op %llu",
                     (unsigned long long)ops[index]);
        sz_journal_reader_close(reader);
    }
}

Test(reader, checks_the_first_entry_against_a_given_chain_head,
     .init = directory_make, .fini = directory_remove) {
    journal_write(JOURNAL_OPS);
    uint64_t op_from = 1500;
    sz_journal_reader_options_t options = {.directory = directory, .op_from = op_from,
                                           .chain_head = &reference.checksums[op_from - 1]};
    sz_journal_reader_t *reader = NULL;
    cr_assert_eq(sz_journal_reader_open(&options, &reader, NULL), 0);
    cr_assert_eq(reader_read_all(reader, op_from, UINT64_MAX), JOURNAL_OPS + 1 - op_from);
    sz_journal_reader_close(reader);
    sz_u128 wrong = reference.checksums[op_from - 2];
    options.chain_head = &wrong;
    cr_assert_eq(sz_journal_reader_open(&options, &reader, NULL), 0);
    const sz_journal_header_t *header = NULL;
    const void *body = NULL;
    sz_journal_problem_t problem;
    cr_assert_eq(sz_journal_reader_next(reader, UINT64_MAX, &header, &body, &problem), -EUCLEAN);
    cr_assert_eq(problem.op, op_from);
    sz_journal_reader_close(reader);
}

Test(reader, open_fails_cleanly_on_a_directory_that_is_not_a_journal,
     .init = directory_make, .fini = directory_remove) {
    sz_journal_reader_options_t options = {.directory = directory, .op_from = 1};
    sz_journal_reader_t *reader = NULL;
    sz_journal_problem_t problem;
    cr_assert_eq(sz_journal_reader_open(&options, &reader, &problem), -ENOENT);
    cr_assert_null(reader);
    cr_assert_str_eq(problem.file, "superblock");
    options.op_from = 0;
    cr_assert_eq(sz_journal_reader_open(&options, &reader, &problem), -EINVAL);
}

/* ---- following a live journal ---- */

typedef struct follow {
    _Atomic uint64_t op_durable;
    _Atomic bool done;
    uint64_t op_last;
} follow_t;

static void follow_on_durable(uint64_t op_durable, void *context) {
    follow_t *follow = context;
    atomic_store_explicit(&follow->op_durable, op_durable, memory_order_release);
}

static void *follow_writer(void *context) {
    follow_t *follow = context;
    sz_storage_t *storage = NULL;
    SZ_ASSERT(sz_storage_uring_init(directory, &storage) == 0);
    sz_journal_options_t options = {.on_durable = follow_on_durable, .durable_context = follow};
    sz_journal_t *journal = NULL;
    SZ_ASSERT(sz_journal_open(storage, &options, &journal, NULL) == 0);
    /* In slices, so readers meet the tail many times. */
    for (uint64_t op = 1; op <= follow->op_last; op += 50) {
        uint64_t last = op + 49 < follow->op_last ? op + 49 : follow->op_last;
        journal_append_ops(journal, op, last);
        SZ_ASSERT(sz_journal_submit(journal) == 0);
    }
    SZ_ASSERT(sz_journal_flush(journal) == 0);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
    atomic_store_explicit(&follow->done, true, memory_order_release);
    return NULL;
}

Test(reader, follows_a_journal_being_appended_and_never_shows_an_op_above_the_limit,
     .init = directory_make, .fini = directory_remove, .timeout = 60) {
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_uring_init(directory, &storage), 0);
    sz_journal_format_options_t format = {.cluster_id = cluster_id, .segment_size = SEGMENT_SIZE};
    cr_assert_eq(sz_journal_format(storage, &format), 0);
    sz_storage_deinit(storage);
    static follow_t follow;
    follow = (follow_t){.op_last = 4000};
    /* One reader limited by the durable op (as a server passes its committed op) and one
     * unlimited (as a journal-directory source), both following the writer. */
    sz_journal_reader_t *limited = reader_open_at(1, NULL);
    sz_journal_reader_t *unlimited = reader_open_at(1, NULL);
    pthread_t writer;
    cr_assert_eq(pthread_create(&writer, NULL, follow_writer, &follow), 0);
    uint64_t op_limited = 1;
    uint64_t op_unlimited = 1;
    uint64_t zero_count = 0;
    /* Bounded by the test's timeout; each pass reads what is there. */
    while (op_limited <= follow.op_last || op_unlimited <= follow.op_last) {
        bool done = atomic_load_explicit(&follow.done, memory_order_acquire);
        uint64_t limit = atomic_load_explicit(&follow.op_durable, memory_order_acquire);
        const sz_journal_header_t *header = NULL;
        const void *body = NULL;
        sz_journal_problem_t problem;
        int result = sz_journal_reader_next(limited, limit, &header, &body, &problem);
        cr_assert_geq(result, 0, "%s %llu: %s", problem.file, (unsigned long long)problem.offset,
                      problem.reason);
        if (result == 1) {
            cr_assert_leq(header->op, limit, "never above the limit");
            cr_assert_eq(header->op, op_limited);
            op_limited++;
        }
        result = sz_journal_reader_next(unlimited, UINT64_MAX, &header, &body, &problem);
        cr_assert_geq(result, 0, "%s %llu: %s", problem.file, (unsigned long long)problem.offset,
                      problem.reason);
        if (result == 1) {
            cr_assert_eq(header->op, op_unlimited);
            op_unlimited++;
        } else {
            zero_count++;
            cr_assert(!done || op_unlimited > follow.op_last, "op %llu is on disk",
                      (unsigned long long)op_unlimited);
        }
    }
    cr_assert_eq(pthread_join(writer, NULL), 0);
    fprintf(stderr, "test_reader: followed %llu ops, met the tail %llu times\n",
            (unsigned long long)follow.op_last, (unsigned long long)zero_count);
    sz_journal_reader_close(limited);
    sz_journal_reader_close(unlimited);
    /* Everything read live matches the journal as a read-only open sees it. */
    reference_build();
    sz_journal_reader_t *reader = reader_open_at(1, NULL);
    cr_assert_eq(reader_read_all(reader, 1, UINT64_MAX), follow.op_last);
    sz_journal_reader_close(reader);
}

/* ---- damage ---- */

static void file_flip(const char *name, uint64_t offset, uint8_t mask) {
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", directory, name);
    int file = open(path, O_RDWR);
    cr_assert_geq(file, 0);
    uint8_t byte = 0;
    cr_assert_eq(pread(file, &byte, 1, (off_t)offset), 1);
    byte ^= mask;
    cr_assert_eq(pwrite(file, &byte, 1, (off_t)offset), 1);
    close(file);
}

/* Reads from op 1 and expects every op before the damaged one, then -EUCLEAN naming it.
 * Without a limit, damage is only recognisable when a later entry records the damaged op
 * as durable (as at recovery); otherwise the reader must stop there and answer 0. */
static void damage_expect(uint64_t op_damaged, uint64_t op_limit) {
    bool evidence = reference.op_durable_max >= op_damaged;
    sz_journal_reader_t *reader = reader_open_at(1, NULL);
    uint64_t op = 1;
    int result = 0;
    sz_journal_problem_t problem;
    for (;;) {
        const sz_journal_header_t *header = NULL;
        const void *body = NULL;
        result = sz_journal_reader_next(reader, op_limit, &header, &body, &problem);
        if (result != 1) break;
        cr_assert_lt(header->op, op_damaged, "the damaged entry is never handed out");
        entry_assert(header, body, op);
        op++;
    }
    cr_assert_eq(op, op_damaged);
    if (op_limit == UINT64_MAX && !evidence) {
        cr_assert_eq(result, 0, "no evidence after op %llu: it reads as the end",
                     (unsigned long long)op_damaged);
        sz_journal_reader_close(reader);
        return;
    }
    cr_assert_eq(result, -EUCLEAN, "op %llu damaged, limit %llu", (unsigned long long)op_damaged,
                 (unsigned long long)op_limit);
    cr_assert_eq(problem.op, op_damaged);
    char name[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(reference.positions[op_damaged].segment, name);
    cr_assert_str_eq(problem.file, name);
    cr_assert_eq(problem.offset, reference.positions[op_damaged].offset, "%s", problem.reason);
    /* It stays failed. */
    const sz_journal_header_t *header = NULL;
    const void *body = NULL;
    cr_assert_eq(sz_journal_reader_next(reader, op_limit, &header, &body, NULL), -EUCLEAN);
    sz_journal_reader_close(reader);
}

Test(reader, detects_a_flipped_bit_in_any_part_of_an_entry_and_names_its_op_and_offset,
     .init = directory_make, .fini = directory_remove, .timeout = 60) {
    journal_write(JOURNAL_OPS);
    /* Header fields, the previous checksum, and the body; ops spread over the journal. */
    for (uint32_t trial = 0; trial < 8; trial++) {
        uint64_t op = ops_mix(seed + trial * 7919) % (JOURNAL_OPS - 100) + 2;
        if (op % 10 == 0) op++; /* expire ops have no body; keep bodies in play */
        uint64_t within = trial % 3 == 0 ? 40                          /* checksum_previous */
                          : trial % 3 == 1 ? 90                        /* op */
                                           : SZ_JOURNAL_HEADER_SIZE + 5; /* body */
        char name[SZ_STORAGE_NAME_SIZE];
        sz_journal_segment_name(reference.positions[op].segment, name);
        uint64_t offset = reference.positions[op].offset + within;
        uint8_t mask = (uint8_t)(1u << (ops_mix(seed + trial) % 8));
        file_flip(name, offset, mask);
        damage_expect(op, JOURNAL_OPS);      /* a server's committed op vouches for it */
        damage_expect(op, UINT64_MAX); /* later entries are the evidence */
        file_flip(name, offset, mask);
        sz_journal_reader_t *reader = reader_open_at(1, NULL);
        cr_assert_eq(reader_read_all(reader, 1, JOURNAL_OPS), JOURNAL_OPS, "repaired");
        sz_journal_reader_close(reader);
    }
}

Test(reader, reports_a_missing_segment_in_the_middle_as_damage,
     .init = directory_make, .fini = directory_remove) {
    journal_write(JOURNAL_OPS);
    uint32_t segment_last = reference.positions[JOURNAL_OPS].segment;
    cr_assert_geq(segment_last, 2);
    char from[128];
    char to[128];
    snprintf(from, sizeof(from), "%s/journal.000001", directory);
    snprintf(to, sizeof(to), "%s/moved.000001", directory);
    cr_assert_eq(rename(from, to), 0);
    uint64_t op_missing = 1;
    while (reference.positions[op_missing].segment < 1) op_missing++;
    sz_journal_reader_t *reader = reader_open_at(1, NULL);
    uint64_t op = 1;
    int result = 0;
    sz_journal_problem_t problem;
    for (;;) {
        const sz_journal_header_t *header = NULL;
        const void *body = NULL;
        result = sz_journal_reader_next(reader, JOURNAL_OPS, &header, &body, &problem);
        if (result != 1) break;
        op++;
    }
    cr_assert_eq(result, -EUCLEAN);
    cr_assert_eq(op, op_missing);
    cr_assert_eq(problem.op, op_missing);
    cr_assert_not_null(strstr(problem.reason, "segment"), "%s", problem.reason);
    sz_journal_reader_close(reader);
    /* Ops after the gap are still readable on their own. */
    uint64_t op_after = op_missing;
    while (reference.positions[op_after].segment < 2) op_after++;
    reader = reader_open_at(op_after, NULL);
    cr_assert_eq(reader_read_all(reader, op_after, JOURNAL_OPS), JOURNAL_OPS + 1 - op_after);
    sz_journal_reader_close(reader);
}

Test(reader, reads_early_segments_from_the_archive_directory,
     .init = directory_make, .fini = directory_remove) {
    journal_write(JOURNAL_OPS);
    char archive[96];
    snprintf(archive, sizeof(archive), "%s.archive", directory);
    cr_assert_eq(mkdir(archive, 0700), 0);
    for (uint32_t segment = 0; segment < 2; segment++) {
        char name[SZ_STORAGE_NAME_SIZE];
        char from[192];
        char to[192];
        sz_journal_segment_name(segment, name);
        snprintf(from, sizeof(from), "%s/%s", directory, name);
        snprintf(to, sizeof(to), "%s/%s", archive, name);
        cr_assert_eq(rename(from, to), 0);
    }
    sz_journal_reader_t *reader = reader_open_at(1, archive);
    cr_assert_eq(reader_read_all(reader, 1, JOURNAL_OPS), JOURNAL_OPS);
    sz_journal_reader_close(reader);
    reader = reader_open_at(2, archive);
    cr_assert_eq(reader_read_all(reader, 2, JOURNAL_OPS), JOURNAL_OPS - 1);
    sz_journal_reader_close(reader);
    /* Without the archive, the early ops are gone: -ENOENT says which op is first. */
    uint64_t op_first = 1;
    while (reference.positions[op_first].segment < 2) op_first++;
    sz_journal_reader_options_t options = {.directory = directory, .op_from = 1};
    sz_journal_problem_t problem;
    cr_assert_eq(sz_journal_reader_open(&options, &reader, &problem), -ENOENT);
    char expected[64];
    snprintf(expected, sizeof(expected), "(%llu)", (unsigned long long)op_first);
    cr_assert_not_null(strstr(problem.reason, expected), "%s", problem.reason);
    cr_assert_eq(problem.op, op_first, "the problem names the first op available");
    reader = reader_open_at(op_first, NULL);
    cr_assert_eq(reader_read_all(reader, op_first, JOURNAL_OPS), JOURNAL_OPS + 1 - op_first);
    sz_journal_reader_close(reader);
}
