/* test_retention.c: starting the journal after an op, and retiring early segments.
 *
 * What it proves, on real directories with 4 MiB segments: a read-only open or a replay
 * after op S with S's chain head delivers exactly ops S+1.. and reaches the digest of a full
 * replay, without needing the segments before the one holding S+1; a wrong chain head, a
 * start past the journal's end, and a start whose segment is gone are refused (-EUCLEAN,
 * -EUCLEAN, -ENOENT) with a problem; sz_journal_retire() moves to an archive (rename, or a
 * copy across filesystems) or deletes exactly the segments whose ops are all below the
 * given op, never the segment being written, also while a writer is open; after retiring,
 * a full replay fails without the archive (-ENOENT, a clear problem) and succeeds with it,
 * and a writable open after the snapshot op goes on appending; info.checksum_last is the
 * chain head of the last op; a snapshot at the last op of a segment survives a crash that
 * loses the next segment's first writes after retention. Seed: SUMZERO_SEED. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal/replay.h"
#include "journal/retention.h"
#include "ops.h"

#define OP_COUNT 6000u

static char data_path[64];
static char archive_path[64];
static char shm_path[64];
static uint64_t seed;
static sz_u128 checksum_last_written; /* the writer's info.checksum_last at the end */

static int remove_entry(const char *path, const struct stat *status, int flag, struct FTW *ftw) {
    (void)status, (void)flag, (void)ftw;
    return remove(path);
}

static void setup(void) {
    const char *text = getenv("SUMZERO_SEED");
    seed = text ? strtoull(text, NULL, 0) : 11;
    fprintf(stderr, "test_retention: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    snprintf(data_path, sizeof(data_path), "/tmp/sz_retention_data.XXXXXX");
    snprintf(archive_path, sizeof(archive_path), "/tmp/sz_retention_archive.XXXXXX");
    cr_assert_not_null(mkdtemp(data_path));
    cr_assert_not_null(mkdtemp(archive_path));
    shm_path[0] = '\0';
}

static void teardown(void) {
    nftw(data_path, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    nftw(archive_path, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    if (shm_path[0] != '\0') nftw(shm_path, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(retention, .init = setup, .fini = teardown);

static sz_storage_t *storage_of(const char *path) {
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_uring_init(path, &storage), 0);
    return storage;
}

static void append_ops(sz_journal_t *journal, uint64_t op_first, uint64_t op_last) {
    static uint8_t events[OPS_EVENTS_MAX * SZ_JOURNAL_EVENT_SIZE];
    for (uint64_t op = op_first; op <= op_last; op++) {
        sz_journal_append_t entry;
        ops_generate(seed, op, &entry, events);
        uint64_t op_appended = 0;
        int result = sz_journal_append(journal, &entry, events, &op_appended);
        while (result == -EAGAIN) {
            cr_assert_eq(sz_journal_poll(journal, true), 0);
            result = sz_journal_append(journal, &entry, events, &op_appended);
        }
        cr_assert_eq(result, 0);
        cr_assert_eq(op_appended, op);
        if (op % 40 == 0) cr_assert_eq(sz_journal_submit(journal), 0);
    }
    cr_assert_eq(sz_journal_flush(journal), 0);
}

/* Formats data_path and appends ops 1..op_count; leaves the journal open if asked. */
static sz_journal_t *journal_written(sz_storage_t *storage, uint64_t op_count, bool keep_open) {
    sz_journal_format_options_t format = {.cluster_id = 5,
                                          .segment_size = SZ_JOURNAL_SEGMENT_SIZE_MIN};
    cr_assert_eq(sz_journal_format(storage, &format), 0);
    sz_journal_options_t options = {.in_flight_max = 3};
    sz_journal_t *journal = NULL;
    cr_assert_eq(sz_journal_open(storage, &options, &journal, NULL), 0);
    append_ops(journal, 1, op_count);
    sz_journal_info_t info;
    sz_journal_info(journal, &info);
    cr_assert_geq(info.op_last, op_count);
    checksum_last_written = info.checksum_last;
    if (keep_open) return journal;
    sz_journal_deinit(journal);
    return NULL;
}

typedef struct head_context {
    uint64_t op;
    sz_u128 checksum_header;
    uint64_t delivered;
    uint64_t op_first_delivered;
} head_context_t;

static int head_on_entry(const sz_journal_header_t *header, const void *body,
                         const sz_journal_position_t *position, void *context_raw) {
    (void)body, (void)position;
    head_context_t *context = context_raw;
    if (context->delivered++ == 0) context->op_first_delivered = header->op;
    if (header->op == context->op) context->checksum_header = header->checksum_header;
    return 0;
}

/* The checksum_header of op (a snapshot at op would carry it). */
static sz_u128 chain_head_of(sz_storage_t *storage, uint64_t op) {
    head_context_t context = {.op = op};
    sz_journal_options_t options = {.read_only = true, .on_entry = head_on_entry,
                                    .entry_context = &context};
    sz_journal_t *journal = NULL;
    cr_assert_eq(sz_journal_open(storage, &options, &journal, NULL), 0);
    sz_journal_deinit(journal);
    cr_assert_neq(context.checksum_header, 0);
    return context.checksum_header;
}

static sz_digest_t digest_direct(uint64_t op_count) {
    sz_ledger_t *ledger = ops_ledger();
    for (uint64_t op = 1; op <= op_count; op++) ops_apply(ledger, seed, op);
    sz_digest_t digest = sz_ledger_digest(ledger);
    sz_ledger_deinit(ledger);
    return digest;
}

/* Replays after op_after into a ledger holding ops 1..op_after (as a snapshot would). */
static int replay_after(sz_storage_t *storage, uint64_t op_after, sz_u128 chain_head,
                        sz_storage_t *archive, sz_digest_t *digest_out,
                        sz_replay_stats_t *stats_out, sz_journal_problem_t *problem) {
    sz_ledger_t *ledger = ops_ledger();
    for (uint64_t op = 1; op <= op_after; op++) ops_apply(ledger, seed, op);
    sz_replay_options_t options = {.op_after = op_after, .chain_head = chain_head,
                                   .archive = archive};
    int result = sz_replay_run(storage, &options, ledger, stats_out, problem);
    *digest_out = sz_ledger_digest(ledger);
    sz_ledger_deinit(ledger);
    return result;
}

static uint32_t segment_count(const char *path) {
    uint32_t count = 0;
    for (uint32_t segment = 0; segment < 64; segment++) {
        char file[128];
        snprintf(file, sizeof(file), "%s/journal.%06u", path, segment);
        if (access(file, F_OK) == 0) count++;
    }
    return count;
}

static bool segment_exists(const char *path, uint32_t segment) {
    char file[128];
    snprintf(file, sizeof(file), "%s/journal.%06u", path, segment);
    return access(file, F_OK) == 0;
}

Test(retention, a_replay_after_an_op_delivers_only_the_later_ops_and_reaches_the_full_digest) {
    sz_storage_t *storage = storage_of(data_path);
    journal_written(storage, OP_COUNT, false);
    cr_assert_geq(segment_count(data_path), 4, "the workload spans several segments");
    cr_assert(checksum_last_written == chain_head_of(storage, OP_COUNT),
              "info.checksum_last is the last op's checksum_header");
    sz_digest_t full = digest_direct(OP_COUNT);
    uint64_t starts[] = {1, 17, 2500, OP_COUNT - 1, OP_COUNT};
    for (uint32_t index = 0; index < sizeof(starts) / sizeof(starts[0]); index++) {
        uint64_t op_after = starts[index];
        sz_digest_t digest;
        sz_replay_stats_t stats;
        sz_journal_problem_t problem;
        int result = replay_after(storage, op_after, chain_head_of(storage, op_after), NULL,
                                  &digest, &stats, &problem);
        cr_assert_eq(result, 0, "after %llu: %s", (unsigned long long)op_after, problem.reason);
        cr_assert_eq(stats.op_count, OP_COUNT - op_after);
        cr_assert(digest.low == full.low && digest.high == full.high, "after %llu",
                  (unsigned long long)op_after);
    }
    sz_storage_deinit(storage);
}

Test(retention, a_wrong_chain_head_or_a_start_past_the_end_is_refused) {
    sz_storage_t *storage = storage_of(data_path);
    journal_written(storage, 800, false);
    sz_digest_t digest;
    sz_replay_stats_t stats;
    sz_journal_problem_t problem;
    sz_u128 head = chain_head_of(storage, 300);
    cr_assert_eq(replay_after(storage, 300, head ^ 1, NULL, &digest, &stats, &problem), -EUCLEAN);
    cr_assert(strstr(problem.reason, "chain head") != NULL, "%s", problem.reason);
    cr_assert_eq(replay_after(storage, 900, head, NULL, &digest, &stats, &problem), -EUCLEAN);
    cr_assert(strstr(problem.reason, "ends at op 800") != NULL, "%s", problem.reason);
    sz_storage_deinit(storage);
}

/* Retires below the segment holding op_keep_from; returns how many went. */
static int retire(const char *archive, uint64_t op_keep_from) {
    int directory_fd = open(data_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int archive_fd = archive != NULL ? open(archive, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    cr_assert_geq(directory_fd, 0);
    sz_journal_problem_t problem;
    int result = sz_journal_retire(directory_fd, archive_fd, op_keep_from, &problem);
    cr_assert_geq(result, 0, "retire: %d %s: %s", result, problem.file, problem.reason);
    close(directory_fd);
    if (archive_fd >= 0) close(archive_fd);
    return result;
}

static void retired_journal_recovers(const char *archive) {
    sz_storage_t *storage = storage_of(data_path);
    journal_written(storage, OP_COUNT, false);
    uint32_t before = segment_count(data_path);
    uint64_t snapshot_op = 3000;
    sz_u128 head = chain_head_of(storage, snapshot_op);
    sz_u128 head_late = chain_head_of(storage, 5000);
    int retired = retire(archive, snapshot_op + 1);
    cr_assert_gt(retired, 0);
    cr_assert_eq(segment_count(data_path), before - (uint32_t)retired);
    cr_assert(!segment_exists(data_path, 0));
    if (archive != NULL) cr_assert_eq(segment_count(archive), (uint32_t)retired);
    cr_assert_eq(retire(archive, snapshot_op + 1), 0, "a second pass retires nothing");
    sz_digest_t full = digest_direct(OP_COUNT);
    sz_digest_t digest;
    sz_replay_stats_t stats;
    sz_journal_problem_t problem;
    int result = replay_after(storage, snapshot_op, head, NULL, &digest, &stats, &problem);
    cr_assert_eq(result, 0, "%s", problem.reason);
    cr_assert(digest.low == full.low && digest.high == full.high);
    /* From op 1: only with the archive. */
    result = replay_after(storage, 0, 0, NULL, &digest, &stats, &problem);
    cr_assert_eq(result, -ENOENT);
    cr_assert(strstr(problem.reason, "missing") != NULL, "%s", problem.reason);
    if (archive != NULL) {
        sz_storage_t *archive_storage = storage_of(archive);
        result = replay_after(storage, 0, 0, archive_storage, &digest, &stats, &problem);
        cr_assert_eq(result, 0, "%s", problem.reason);
        cr_assert_eq(stats.op_count, OP_COUNT);
        cr_assert(digest.low == full.low && digest.high == full.high);
        sz_storage_deinit(archive_storage);
    }
    /* A start whose segment is gone. */
    result = replay_after(storage, 5, head_late, NULL, &digest, &stats, &problem);
    cr_assert_eq(result, -ENOENT, "%d %s", result, problem.reason);
    /* The server restarts from the snapshot: a writable open after it goes on. */
    sz_journal_options_t options = {.op_after = snapshot_op, .chain_head = head};
    sz_journal_t *journal = NULL;
    result = sz_journal_open(storage, &options, &journal, &problem);
    cr_assert_eq(result, 0, "%s", problem.reason);
    append_ops(journal, OP_COUNT + 1, OP_COUNT + 300);
    sz_journal_deinit(journal);
    result = replay_after(storage, snapshot_op, head, NULL, &digest, &stats, &problem);
    cr_assert_eq(result, 0, "%s", problem.reason);
    full = digest_direct(OP_COUNT + 300);
    cr_assert(digest.low == full.low && digest.high == full.high);
    sz_storage_deinit(storage);
}

Test(retention, retired_segments_move_to_the_archive_and_recovery_uses_it) {
    retired_journal_recovers(archive_path);
}

Test(retention, retired_segments_can_be_deleted) { retired_journal_recovers(NULL); }

Test(retention, a_copy_across_filesystems_archives_the_same_bytes) {
    struct stat data_status, shm_status;
    if (stat("/dev/shm", &shm_status) != 0 || stat(data_path, &data_status) != 0 ||
        shm_status.st_dev == data_status.st_dev) {
        cr_skip_test("no second filesystem (/dev/shm) to archive to");
    }
    snprintf(shm_path, sizeof(shm_path), "/dev/shm/sz_retention_archive.XXXXXX");
    cr_assert_not_null(mkdtemp(shm_path));
    retired_journal_recovers(shm_path);
}

Test(retention, the_segment_being_written_is_never_retired) {
    sz_storage_t *storage = storage_of(data_path);
    sz_journal_t *journal = journal_written(storage, OP_COUNT, true);
    /* The writer preallocates the segment after the one it writes. */
    uint32_t segment_current = 0;
    while (segment_exists(data_path, segment_current + 2)) segment_current++;
    cr_assert_gt(segment_current, 0);
    int retired = retire(archive_path, UINT64_MAX);
    cr_assert_eq(retired, (int)segment_current, "retired %d of segments 0..%u: every full "
                 "segment, not the current one", retired, segment_current);
    cr_assert(segment_exists(data_path, segment_current));
    append_ops(journal, OP_COUNT + 1, OP_COUNT + 2500);
    cr_assert(segment_exists(data_path, segment_current + 2), "the writer rolled over meanwhile");
    sz_journal_deinit(journal);
    sz_storage_t *archive = storage_of(archive_path);
    sz_digest_t digest;
    sz_replay_stats_t stats;
    sz_journal_problem_t problem;
    cr_assert_eq(replay_after(storage, 0, 0, archive, &digest, &stats, &problem), 0, "%s",
                 problem.reason);
    sz_digest_t full = digest_direct(OP_COUNT + 2500);
    cr_assert(digest.low == full.low && digest.high == full.high);
    sz_storage_deinit(archive);
    sz_storage_deinit(storage);
}

typedef struct boundary_context {
    uint32_t segment;
    uint64_t op_last_of_first_segment; /* the last op of segment `segment` */
    sz_u128 checksum_header;
} boundary_context_t;

static int boundary_on_entry(const sz_journal_header_t *header, const void *body,
                             const sz_journal_position_t *position, void *context_raw) {
    (void)body;
    boundary_context_t *context = context_raw;
    if (position->segment == context->segment) {
        context->op_last_of_first_segment = header->op;
        context->checksum_header = header->checksum_header;
    }
    return 0;
}

Test(retention, a_snapshot_at_a_segments_last_op_survives_losing_the_next_segment) {
    sz_storage_t *storage = storage_of(data_path);
    journal_written(storage, OP_COUNT, false);
    /* The snapshot op S is the last op of segment 2; S + 1 begins segment 3. */
    boundary_context_t context = {.segment = 2};
    sz_journal_options_t read_options = {.read_only = true, .on_entry = boundary_on_entry,
                                         .entry_context = &context};
    sz_journal_t *journal = NULL;
    cr_assert_eq(sz_journal_open(storage, &read_options, &journal, NULL), 0);
    sz_journal_deinit(journal);
    uint64_t snapshot_op = context.op_last_of_first_segment;
    cr_assert_gt(snapshot_op, 0);
    cr_assert(segment_exists(data_path, 4), "the workload reaches segment 4");
    cr_assert_eq(retire(archive_path, snapshot_op + 1), 2, "segments 0 and 1 go, 2 holds S");
    /* A crash before S + 1 was durable: segment 3's writes never landed, none after it. */
    sz_storage_deinit(storage);
    for (uint32_t segment = 3; segment_exists(data_path, segment); segment++) {
        char file[128];
        snprintf(file, sizeof(file), "%s/journal.%06u", data_path, segment);
        if (segment == 3) {
            cr_assert_eq(truncate(file, 0), 0);
            cr_assert_eq(truncate(file, SZ_JOURNAL_SEGMENT_SIZE_MIN), 0);
        } else {
            cr_assert_eq(unlink(file), 0);
        }
    }
    storage = storage_of(data_path);
    sz_journal_options_t options = {.op_after = snapshot_op, .chain_head = context.checksum_header};
    sz_journal_problem_t problem;
    cr_assert_eq(sz_journal_open(storage, &options, &journal, &problem), 0, "%s", problem.reason);
    sz_journal_info_t info;
    sz_journal_info(journal, &info);
    cr_assert_eq(info.op_last, snapshot_op);
    cr_assert(info.checksum_last == context.checksum_header);
    append_ops(journal, snapshot_op + 1, snapshot_op + 100);
    sz_journal_deinit(journal);
    sz_digest_t digest;
    sz_replay_stats_t stats;
    cr_assert_eq(replay_after(storage, snapshot_op, context.checksum_header, NULL, &digest, &stats,
                              &problem), 0, "%s", problem.reason);
    cr_assert_eq(stats.op_count, 100);
    sz_digest_t full = digest_direct(snapshot_op + 100);
    cr_assert(digest.low == full.low && digest.high == full.high);
    sz_storage_deinit(storage);
}
