/* test_journal.c: the journal's format, group commit and recovery, on the in-memory
 * fault-injecting storage (and once on the real io_uring storage). Proves that a torn tail
 * cut at any position is truncated to the last complete entry, that a flipped bit in any
 * entry before the tail is reported as corruption naming the file, offset and op, and
 * that short writes, EIO on write or fdatasync and ENOSPC reach the caller. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal/journal.h"

#define SEGMENT_SIZE SZ_JOURNAL_SEGMENT_SIZE_MIN
#define SEGMENT_0 "journal.000000"
#define ENTRY_COUNT_MAX 4096u

static const sz_u128 cluster_id = 0xC1u;

/* What on_entry saw. */
typedef struct collected {
    uint64_t ops[ENTRY_COUNT_MAX];
    sz_journal_position_t positions[ENTRY_COUNT_MAX];
    uint32_t count;
    bool contents_ok;
} collected_t;

/* Op n's body: (n % 3) events (0 for every 7th op, an expire), bytes from n. */
static uint32_t op_event_count(uint64_t op) { return op % 7 == 0 ? 0 : (uint32_t)(op % 3) + 1; }

static void op_body(uint64_t op, uint8_t *body) {
    uint32_t size = op_event_count(op) * SZ_JOURNAL_EVENT_SIZE;
    for (uint32_t index = 0; index < size; index++) body[index] = (uint8_t)(op * 31 + index);
}

static sz_journal_append_t op_entry(uint64_t op) {
    return (sz_journal_append_t){
        .timestamp = op * 1000,
        .operation = op % 7 == 0 ? SZ_OPERATION_EXPIRE_PENDING : SZ_OPERATION_CREATE_TRANSFERS,
        .event_count = op_event_count(op),
        .client_id = 7,
        .request_number = (uint32_t)op,
        .trace_id = op ^ 0xABCDu,
    };
}

static int collect(const sz_journal_header_t *header, const void *body,
                   const sz_journal_position_t *position, void *context) {
    collected_t *collected = context;
    uint8_t expected[4 * SZ_JOURNAL_EVENT_SIZE];
    op_body(header->op, expected);
    sz_journal_append_t entry = op_entry(header->op);
    if (header->body_size != entry.event_count * SZ_JOURNAL_EVENT_SIZE ||
        memcmp(body, expected, header->body_size) != 0 || header->timestamp != entry.timestamp ||
        header->request_number != entry.request_number) {
        collected->contents_ok = false;
    }
    if (collected->count < ENTRY_COUNT_MAX) {
        collected->ops[collected->count] = header->op;
        collected->positions[collected->count] = *position;
    }
    collected->count++;
    return 0;
}

static sz_storage_t *fault_storage_formatted(void) {
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_fault_init(&storage), 0);
    sz_journal_format_options_t format = {.cluster_id = cluster_id, .segment_size = SEGMENT_SIZE};
    cr_assert_eq(sz_journal_format(storage, &format), 0);
    return storage;
}

static uint64_t durable_seen;
static void on_durable(uint64_t op_durable, void *context) {
    (void)context;
    cr_assert_gt(op_durable, durable_seen, "durability is reported in op order");
    durable_seen = op_durable;
}

static int journal_open_collecting(sz_storage_t *storage, bool read_only, uint32_t in_flight_max,
                                   collected_t *collected, sz_journal_t **journal_out,
                                   sz_journal_problem_t *problem) {
    memset(collected, 0, sizeof(*collected));
    collected->contents_ok = true;
    durable_seen = 0;
    sz_journal_options_t options = {
        .read_only = read_only,
        .in_flight_max = in_flight_max,
        .on_entry = collect,
        .entry_context = collected,
        .on_durable = on_durable,
    };
    return sz_journal_open(storage, &options, journal_out, problem);
}

static int append_op(sz_journal_t *journal, uint64_t op) {
    uint8_t body[4 * SZ_JOURNAL_EVENT_SIZE];
    op_body(op, body);
    sz_journal_append_t entry = op_entry(op);
    uint64_t op_appended = 0;
    int result = sz_journal_append(journal, &entry, body, &op_appended);
    if (result == 0) cr_assert_eq(op_appended, op);
    return result;
}

/* count ops, each in its own write (flushed one by one). */
static void write_ops_one_per_write(sz_storage_t *storage, uint64_t count) {
    collected_t collected;
    sz_journal_t *journal = NULL;
    cr_assert_eq(journal_open_collecting(storage, false, 1, &collected, &journal, NULL), 0);
    sz_journal_info_t info;
    sz_journal_info(journal, &info);
    for (uint64_t op = info.op_last + 1; op <= info.op_last + count; op++) {
        cr_assert_eq(append_op(journal, op), 0);
        cr_assert_eq(sz_journal_flush(journal), 0);
        cr_assert_eq(durable_seen, op);
    }
    sz_journal_deinit(journal);
    sz_storage_fault_unlock(storage);
}

static uint64_t reopen_op_last(sz_storage_t *storage, bool read_only, int *result_out,
                               sz_journal_problem_t *problem) {
    collected_t collected;
    sz_journal_t *journal = NULL;
    int result = journal_open_collecting(storage, read_only, 0, &collected, &journal, problem);
    *result_out = result;
    if (result != 0) return 0;
    cr_assert(collected.contents_ok, "every entry found has the contents that were appended");
    sz_journal_info_t info;
    sz_journal_info(journal, &info);
    cr_assert_eq(info.op_last, collected.count);
    for (uint32_t index = 0; index < collected.count; index++) {
        cr_assert_eq(collected.ops[index], index + 1);
    }
    sz_journal_deinit(journal);
    if (!read_only) sz_storage_fault_unlock(storage);
    return info.op_last;
}

Test(journal, format_then_open_finds_an_empty_journal) {
    sz_storage_t *storage = fault_storage_formatted();
    int result = 0;
    cr_assert_eq(reopen_op_last(storage, false, &result, NULL), 0);
    cr_assert_eq(result, 0);
    sz_journal_format_options_t format = {.cluster_id = cluster_id, .segment_size = SEGMENT_SIZE};
    cr_assert_eq(sz_journal_format(storage, &format), -EEXIST);
    sz_storage_deinit(storage);
}

Test(journal, unformatted_directory_is_refused_with_enoent) {
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_fault_init(&storage), 0);
    sz_journal_t *journal = NULL;
    sz_journal_problem_t problem;
    sz_journal_options_t options = {.read_only = true};
    cr_assert_eq(sz_journal_open(storage, &options, &journal, &problem), -ENOENT);
    cr_assert_str_eq(problem.file, "superblock");
    sz_storage_deinit(storage);
}

Test(journal, appended_entries_come_back_in_order_across_segments) {
    sz_storage_t *storage = fault_storage_formatted();
    collected_t collected;
    sz_journal_t *journal = NULL;
    cr_assert_eq(journal_open_collecting(storage, false, 3, &collected, &journal, NULL), 0);
    /* Full batches roll over the small segments several times. */
    static uint8_t big[SZ_JOURNAL_BODY_SIZE_MAX];
    memset(big, 0x5A, sizeof(big));
    uint64_t op = 0;
    for (uint32_t round = 0; round < 12; round++) {
        sz_journal_append_t entry = {.timestamp = (round + 1) * 1000000ull,
                                     .operation = SZ_OPERATION_CREATE_TRANSFERS,
                                     .event_count = SZ_BATCH_EVENTS_MAX};
        int result = sz_journal_append(journal, &entry, big, &op);
        while (result == -EAGAIN) {
            cr_assert_eq(sz_journal_poll(journal, true), 0);
            result = sz_journal_append(journal, &entry, big, &op);
        }
        cr_assert_eq(result, 0);
    }
    cr_assert_eq(sz_journal_flush(journal), 0);
    cr_assert_eq(durable_seen, 12);
    sz_journal_deinit(journal);
    sz_storage_fault_unlock(storage);
    cr_assert_eq(journal_open_collecting(storage, true, 0, &collected, &journal, NULL), 0);
    cr_assert_eq(collected.count, 12);
    cr_assert_gt(collected.positions[11].segment, 1, "the entries span several segments");
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
}

Test(journal, many_small_entries_share_group_commits) {
    sz_storage_t *storage = fault_storage_formatted();
    collected_t collected;
    sz_journal_t *journal = NULL;
    cr_assert_eq(journal_open_collecting(storage, false, 2, &collected, &journal, NULL), 0);
    for (uint64_t op = 1; op <= 3000; op++) {
        int result = append_op(journal, op);
        while (result == -EAGAIN) {
            cr_assert_eq(sz_journal_poll(journal, true), 0);
            result = append_op(journal, op);
        }
        cr_assert_eq(result, 0);
        if (op % 50 == 0) cr_assert_eq(sz_journal_submit(journal), 0);
    }
    cr_assert_eq(sz_journal_flush(journal), 0);
    cr_assert_eq(durable_seen, 3000);
    cr_assert_lt(sz_storage_fault_submission_count(storage), 100, "group commit batches ops");
    sz_journal_deinit(journal);
    sz_storage_fault_unlock(storage);
    int result = 0;
    cr_assert_eq(reopen_op_last(storage, true, &result, NULL), 3000);
    sz_storage_deinit(storage);
}

/* Offsets of the entries of a journal written one op per write. */
static void entry_extents(sz_storage_t *storage, uint64_t *offsets, uint64_t *ends,
                          uint32_t count) {
    collected_t collected;
    sz_journal_t *journal = NULL;
    cr_assert_eq(journal_open_collecting(storage, true, 0, &collected, &journal, NULL), 0);
    cr_assert_eq(collected.count, count);
    for (uint32_t index = 0; index < count; index++) {
        offsets[index] = collected.positions[index].offset;
        ends[index] = offsets[index] + SZ_JOURNAL_HEADER_SIZE +
                      op_event_count(index + 1) * SZ_JOURNAL_EVENT_SIZE;
    }
    sz_journal_deinit(journal);
}

#define SMALL_COUNT 8u

Test(journal, torn_tail_at_every_position_is_truncated_to_the_last_complete_entry) {
    sz_storage_t *storage = fault_storage_formatted();
    write_ops_one_per_write(storage, SMALL_COUNT);
    uint64_t offsets[SMALL_COUNT], ends[SMALL_COUNT];
    entry_extents(storage, offsets, ends, SMALL_COUNT);
    uint64_t size = 0;
    uint8_t *data = sz_storage_fault_file_data(storage, SEGMENT_0, &size);
    uint64_t end = ends[SMALL_COUNT - 1];
    uint8_t *pristine = malloc(end);
    memcpy(pristine, data, end);
    /* The last write may land partly: cut at every 16 bytes of it, zeros or garbage after. */
    for (uint32_t garbage = 0; garbage < 2; garbage++) {
        for (uint64_t cut = offsets[SMALL_COUNT - 1]; cut <= end; cut += 16) {
            memcpy(data, pristine, end);
            for (uint64_t index = cut; index < end; index++) {
                data[index] = garbage ? (uint8_t)(index * 131 + 7) : 0;
            }
            int result = 0;
            sz_journal_problem_t problem;
            uint64_t op_last = reopen_op_last(storage, false, &result, &problem);
            cr_assert_eq(result, 0, "cut at %llu: %s", (unsigned long long)cut, problem.reason);
            cr_assert_eq(op_last, cut == end ? SMALL_COUNT : SMALL_COUNT - 1,
                         "cut at %llu", (unsigned long long)cut);
        }
    }
    /* Every earlier entry cut anywhere, as when the whole tail since it was in flight. */
    for (uint32_t entry = 0; entry < SMALL_COUNT; entry++) {
        for (uint64_t cut = offsets[entry]; cut < ends[entry]; cut += 64) {
            memcpy(data, pristine, end);
            memset(data + cut, 0, end - cut);
            int result = 0;
            uint64_t op_last = reopen_op_last(storage, true, &result, NULL);
            cr_assert_eq(result, 0);
            cr_assert_eq(op_last, entry, "cut at %llu keeps the %u entries before it",
                         (unsigned long long)cut, entry);
        }
    }
    free(pristine);
    sz_storage_deinit(storage);
}

Test(journal, truncated_tail_is_zeroed_and_the_chain_goes_on) {
    sz_storage_t *storage = fault_storage_formatted();
    write_ops_one_per_write(storage, SMALL_COUNT);
    uint64_t offsets[SMALL_COUNT], ends[SMALL_COUNT];
    entry_extents(storage, offsets, ends, SMALL_COUNT);
    uint8_t *data = sz_storage_fault_file_data(storage, SEGMENT_0, NULL);
    /* Tear the last entry's body: its header stays valid. */
    data[ends[SMALL_COUNT - 1] - 1] ^= 0xFF;
    int result = 0;
    cr_assert_eq(reopen_op_last(storage, false, &result, NULL), SMALL_COUNT - 1);
    cr_assert_eq(result, 0);
    for (uint64_t index = offsets[SMALL_COUNT - 1]; index < ends[SMALL_COUNT - 1]; index++) {
        cr_assert_eq(data[index], 0, "the torn entry is zeroed");
    }
    write_ops_one_per_write(storage, 5);
    cr_assert_eq(reopen_op_last(storage, true, &result, NULL), SMALL_COUNT - 1 + 5);
    sz_storage_deinit(storage);
}

Test(journal, flipped_bit_before_the_tail_is_corruption_naming_file_offset_and_op) {
    sz_storage_t *storage = fault_storage_formatted();
    write_ops_one_per_write(storage, SMALL_COUNT);
    uint64_t offsets[SMALL_COUNT], ends[SMALL_COUNT];
    entry_extents(storage, offsets, ends, SMALL_COUNT);
    uint8_t *data = sz_storage_fault_file_data(storage, SEGMENT_0, NULL);
    for (uint32_t entry = 0; entry < SMALL_COUNT; entry++) {
        for (uint64_t position = offsets[entry]; position < ends[entry]; position++) {
            uint8_t bit = (uint8_t)(1u << (position % 8));
            data[position] ^= bit;
            int result = 0;
            sz_journal_problem_t problem;
            uint64_t op_last = reopen_op_last(storage, true, &result, &problem);
            data[position] ^= bit;
            if (entry + 1 < SMALL_COUNT) {
                cr_assert_eq(result, -EUCLEAN, "flip at %llu is corruption",
                             (unsigned long long)position);
                cr_assert_str_eq(problem.file, SEGMENT_0);
                cr_assert_eq(problem.offset, offsets[entry]);
                cr_assert_eq(problem.op, entry + 1);
            } else {
                /* The last write is the tail: indistinguishable from a torn write. */
                cr_assert_eq(result, 0);
                cr_assert_eq(op_last, SMALL_COUNT - 1);
            }
        }
    }
    sz_storage_deinit(storage);
}

Test(journal, lost_write_in_the_middle_is_corruption) {
    sz_storage_t *storage = fault_storage_formatted();
    write_ops_one_per_write(storage, SMALL_COUNT);
    uint64_t offsets[SMALL_COUNT], ends[SMALL_COUNT];
    entry_extents(storage, offsets, ends, SMALL_COUNT);
    uint8_t *data = sz_storage_fault_file_data(storage, SEGMENT_0, NULL);
    memset(data + offsets[3], 0, ends[3] - offsets[3]);
    int result = 0;
    sz_journal_problem_t problem;
    reopen_op_last(storage, false, &result, &problem);
    cr_assert_eq(result, -EUCLEAN);
    cr_assert_eq(problem.op, 4);
    cr_assert_eq(problem.offset, offsets[3]);
    cr_assert(strstr(problem.reason, "missing") != NULL, "%s", problem.reason);
    sz_storage_deinit(storage);
}

Test(journal, crash_with_writes_in_flight_keeps_every_acknowledged_op) {
    uint64_t seed = getenv("SUMZERO_SEED") ? strtoull(getenv("SUMZERO_SEED"), NULL, 0) : 42;
    printf("crash_with_writes_in_flight: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    sz_storage_t *storage = fault_storage_formatted();
    uint64_t state = seed;
    uint64_t acknowledged = 0;
    for (uint32_t crash = 0; crash < 200; crash++) {
        collected_t collected;
        sz_journal_t *journal = NULL;
        sz_journal_problem_t problem;
        int result = journal_open_collecting(storage, false, 4, &collected, &journal, &problem);
        cr_assert_eq(result, 0, "crash %u: %s at %s+%llu", crash, problem.reason, problem.file,
                     (unsigned long long)problem.offset);
        cr_assert(collected.contents_ok);
        sz_journal_info_t info;
        sz_journal_info(journal, &info);
        cr_assert_geq(info.op_last, acknowledged, "crash %u lost an acknowledged op", crash);
        acknowledged = info.op_last;
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t steps = (uint32_t)(state >> 33) % 40 + 1;
        for (uint32_t step = 0; step < steps; step++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t action = (uint32_t)(state >> 33) % 4;
            if (action < 2) {
                result = append_op(journal, info.op_last + 1);
                if (result == 0) info.op_last++;
                else cr_assert_eq(result, -EAGAIN);
            } else if (action == 2) {
                cr_assert_eq(sz_journal_submit(journal), 0);
            } else {
                cr_assert_eq(sz_journal_poll(journal, false), 0);
            }
        }
        if (durable_seen > acknowledged) acknowledged = durable_seen;
        sz_storage_fault_crash(storage, state);
        sz_journal_deinit(journal);
    }
    cr_assert_gt(acknowledged, 100);
    sz_storage_deinit(storage);
}

/* Opens a journal on a fresh storage with one fault armed and appends 6 ops, one write
 * each; returns the first error flush gave (0 if none). */
static int run_with_fault(sz_storage_fault_t fault, uint64_t *durable_out,
                          sz_journal_t **journal_out, sz_storage_t **storage_out) {
    sz_storage_t *storage = fault_storage_formatted();
    cr_assert_eq(sz_storage_fault_arm(storage, &fault), 0);
    collected_t collected;
    sz_journal_t *journal = NULL;
    cr_assert_eq(journal_open_collecting(storage, false, 2, &collected, &journal, NULL), 0);
    int error = 0;
    for (uint64_t op = 1; op <= 6 && error == 0; op++) {
        error = append_op(journal, op);
        if (error == 0) error = sz_journal_flush(journal);
    }
    *durable_out = durable_seen;
    *journal_out = journal;
    *storage_out = storage;
    return error;
}

static void assert_stopped(sz_journal_t *journal, int error) {
    cr_assert_eq(append_op(journal, 100), error, "a stopped journal refuses appends");
    cr_assert_eq(sz_journal_poll(journal, false), error);
    cr_assert_eq(sz_journal_flush(journal), error);
    cr_assert_neq(sz_journal_error_message(journal)[0], '\0');
}

Test(journal, eio_on_write_reaches_the_caller_and_stops_acknowledgement) {
    uint64_t durable = 0;
    sz_journal_t *journal = NULL;
    sz_storage_t *storage = NULL;
    sz_storage_fault_t fault = {.kind = SZ_STORAGE_FAULT_WRITE_ERROR, .at_submission = 2,
                                .error = EIO};
    cr_assert_eq(run_with_fault(fault, &durable, &journal, &storage), -EIO);
    cr_assert_eq(durable, 2, "ops before the failed write stay acknowledged, none after");
    assert_stopped(journal, -EIO);
    cr_assert(strstr(sz_journal_error_message(journal), "write failed") != NULL);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
}

Test(journal, eio_on_fdatasync_reaches_the_caller_and_stops_acknowledgement) {
    uint64_t durable = 0;
    sz_journal_t *journal = NULL;
    sz_storage_t *storage = NULL;
    sz_storage_fault_t fault = {.kind = SZ_STORAGE_FAULT_SYNC_ERROR, .at_submission = 3,
                                .error = EIO};
    cr_assert_eq(run_with_fault(fault, &durable, &journal, &storage), -EIO);
    cr_assert_eq(durable, 3);
    assert_stopped(journal, -EIO);
    cr_assert(strstr(sz_journal_error_message(journal), "fdatasync failed") != NULL,
              "%s", sz_journal_error_message(journal));
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
}

Test(journal, enospc_on_write_reaches_the_caller) {
    uint64_t durable = 0;
    sz_journal_t *journal = NULL;
    sz_storage_t *storage = NULL;
    sz_storage_fault_t fault = {.kind = SZ_STORAGE_FAULT_WRITE_ERROR, .at_submission = 0,
                                .error = ENOSPC};
    cr_assert_eq(run_with_fault(fault, &durable, &journal, &storage), -ENOSPC);
    cr_assert_eq(durable, 0);
    assert_stopped(journal, -ENOSPC);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
}

Test(journal, enospc_at_submission_reaches_the_caller) {
    uint64_t durable = 0;
    sz_journal_t *journal = NULL;
    sz_storage_t *storage = NULL;
    sz_storage_fault_t fault = {.kind = SZ_STORAGE_FAULT_SUBMIT_ERROR, .at_submission = 1,
                                .error = ENOSPC};
    cr_assert_eq(run_with_fault(fault, &durable, &journal, &storage), -ENOSPC);
    cr_assert_eq(durable, 1);
    assert_stopped(journal, -ENOSPC);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
}

Test(journal, short_write_is_finished_by_writing_the_rest) {
    sz_storage_t *storage = fault_storage_formatted();
    sz_storage_fault_t fault = {.kind = SZ_STORAGE_FAULT_SHORT_WRITE, .at_submission = 0,
                                .short_size = SZ_STORAGE_SECTOR_SIZE};
    cr_assert_eq(sz_storage_fault_arm(storage, &fault), 0);
    collected_t collected;
    sz_journal_t *journal = NULL;
    cr_assert_eq(journal_open_collecting(storage, false, 2, &collected, &journal, NULL), 0);
    /* 40 small ops: one write of more than one sector. */
    for (uint64_t op = 1; op <= 40; op++) cr_assert_eq(append_op(journal, op), 0);
    cr_assert_eq(sz_journal_flush(journal), 0);
    cr_assert_eq(durable_seen, 40);
    cr_assert_eq(sz_storage_fault_submission_count(storage), 2, "one write and its remainder");
    sz_journal_deinit(journal);
    sz_storage_fault_unlock(storage);
    int result = 0;
    cr_assert_eq(reopen_op_last(storage, true, &result, NULL), 40);
    sz_storage_deinit(storage);
}

Test(journal, short_write_then_enospc_reaches_the_caller) {
    sz_storage_t *storage = fault_storage_formatted();
    sz_storage_fault_t short_fault = {.kind = SZ_STORAGE_FAULT_SHORT_WRITE, .at_submission = 0,
                                      .short_size = SZ_STORAGE_SECTOR_SIZE};
    sz_storage_fault_t full = {.kind = SZ_STORAGE_FAULT_WRITE_ERROR, .at_submission = 1,
                               .error = ENOSPC};
    cr_assert_eq(sz_storage_fault_arm(storage, &short_fault), 0);
    cr_assert_eq(sz_storage_fault_arm(storage, &full), 0);
    collected_t collected;
    sz_journal_t *journal = NULL;
    cr_assert_eq(journal_open_collecting(storage, false, 2, &collected, &journal, NULL), 0);
    for (uint64_t op = 1; op <= 40; op++) cr_assert_eq(append_op(journal, op), 0);
    cr_assert_eq(sz_journal_flush(journal), -ENOSPC);
    cr_assert_eq(durable_seen, 0);
    assert_stopped(journal, -ENOSPC);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
}

Test(journal, short_write_that_is_not_sector_aligned_is_an_error) {
    sz_storage_t *storage = fault_storage_formatted();
    sz_storage_fault_t fault = {.kind = SZ_STORAGE_FAULT_SHORT_WRITE, .at_submission = 0,
                                .short_size = 100};
    cr_assert_eq(sz_storage_fault_arm(storage, &fault), 0);
    collected_t collected;
    sz_journal_t *journal = NULL;
    cr_assert_eq(journal_open_collecting(storage, false, 2, &collected, &journal, NULL), 0);
    cr_assert_eq(append_op(journal, 1), 0);
    cr_assert_eq(sz_journal_flush(journal), -EIO);
    assert_stopped(journal, -EIO);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
}

Test(journal, second_writer_is_refused_by_the_lock_but_readers_are_not) {
    sz_storage_t *storage = fault_storage_formatted();
    collected_t collected;
    sz_journal_t *writer = NULL, *second = NULL, *reader = NULL;
    sz_journal_problem_t problem;
    cr_assert_eq(journal_open_collecting(storage, false, 0, &collected, &writer, NULL), 0);
    cr_assert_eq(journal_open_collecting(storage, false, 0, &collected, &second, &problem),
                 -EWOULDBLOCK);
    cr_assert(strstr(problem.reason, "locked") != NULL);
    cr_assert_eq(journal_open_collecting(storage, true, 0, &collected, &reader, NULL), 0);
    sz_journal_deinit(reader);
    sz_journal_deinit(writer);
    sz_storage_deinit(storage);
}

Test(journal, one_damaged_superblock_copy_is_tolerated_two_are_not) {
    sz_storage_t *storage = fault_storage_formatted();
    write_ops_one_per_write(storage, 3);
    uint8_t *data = sz_storage_fault_file_data(storage, "superblock", NULL);
    data[40] ^= 1;
    int result = 0;
    cr_assert_eq(reopen_op_last(storage, true, &result, NULL), 3);
    cr_assert_eq(result, 0);
    data[SZ_STORAGE_SECTOR_SIZE + 40] ^= 1;
    sz_journal_problem_t problem;
    reopen_op_last(storage, true, &result, &problem);
    cr_assert_eq(result, -EUCLEAN);
    cr_assert_str_eq(problem.file, "superblock");
    sz_storage_deinit(storage);
}

Test(journal, real_storage_appends_through_io_uring_and_recovers) {
    char directory[] = "/tmp/sz_test_journal_XXXXXX";
    cr_assert_not_null(mkdtemp(directory));
    sz_storage_t *storage = NULL;
    int result = sz_storage_uring_init(directory, &storage);
    if (result == -ENOSYS || result == -EPERM) {
        fprintf(stderr, "io_uring unavailable (%s): skipping\n", strerror(-result));
        exit(77);
    }
    cr_assert_eq(result, 0);
    sz_journal_format_options_t format = {.cluster_id = cluster_id, .segment_size = SEGMENT_SIZE};
    cr_assert_eq(sz_journal_format(storage, &format), 0);
    collected_t collected;
    sz_journal_t *journal = NULL;
    cr_assert_eq(journal_open_collecting(storage, false, 3, &collected, &journal, NULL), 0);
    for (uint64_t op = 1; op <= 500; op++) {
        result = append_op(journal, op);
        while (result == -EAGAIN) {
            cr_assert_eq(sz_journal_poll(journal, true), 0);
            result = append_op(journal, op);
        }
        cr_assert_eq(result, 0);
        if (op % 7 == 0) cr_assert_eq(sz_journal_poll(journal, false), 0);
    }
    cr_assert_eq(sz_journal_flush(journal), 0);
    cr_assert_eq(durable_seen, 500);
    /* Another storage object on the same directory: the lock holds across descriptors. */
    sz_storage_t *other = NULL;
    cr_assert_eq(sz_storage_uring_init(directory, &other), 0);
    sz_journal_t *second = NULL;
    cr_assert_eq(journal_open_collecting(other, false, 0, &collected, &second, NULL), -EWOULDBLOCK);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
    cr_assert_eq(reopen_op_last(other, true, &result, NULL), 500);
    cr_assert_eq(result, 0);
    sz_storage_deinit(other);
    char command[128];
    snprintf(command, sizeof(command), "rm -rf %s", directory);
    cr_assert_eq(system(command), 0);
}
