/* test_tools_retention.c: `sumzero replay` and `sumzero inspect` after retention. A journal
 * of several 4 MiB segments is written through the journal API, a snapshot is written by
 * `sumzero replay --until-op --write-snapshot`, and the segments before it are moved to an
 * archive with sz_journal_retire(). Then: replay and inspect of the data directory alone
 * fail with exit 66 and a line saying the first segment is missing; with --archive both
 * work from op 1 (point-in-time recovery) and replay reaches the digest the journal had
 * before retention; replay --snapshot needs no archive and reaches it too. The binary is
 * SUMZERO_BIN (set by meson). Seed: SUMZERO_SEED. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal/retention.h"
#include "ops.h"

#define OP_COUNT 6000u
#define SNAPSHOT_OP 3500u

static char work[64];
static uint64_t seed;

static int remove_entry(const char *path, const struct stat *status, int flag, struct FTW *ftw) {
    (void)status, (void)flag, (void)ftw;
    return remove(path);
}

static void setup(void) {
    const char *text = getenv("SUMZERO_SEED");
    seed = text ? strtoull(text, NULL, 0) : 13;
    fprintf(stderr, "test_tools_retention: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    snprintf(work, sizeof(work), "/tmp/sz_tools_retention.XXXXXX");
    cr_assert_not_null(mkdtemp(work));
}

static void teardown(void) { nftw(work, remove_entry, 8, FTW_DEPTH | FTW_PHYS); }

/* Runs the shell command; returns its exit code, output (stdout + stderr) in output. */
static int run(char *output, size_t output_size, const char *format, ...) {
    const char *binary = getenv("SUMZERO_BIN");
    cr_assert_not_null(binary, "SUMZERO_BIN is not set (meson sets it)");
    char arguments[1024], command[2048];
    va_list list;
    va_start(list, format);
    vsnprintf(arguments, sizeof(arguments), format, list);
    va_end(list);
    snprintf(command, sizeof(command), "%s %s 2>&1", binary, arguments);
    FILE *pipe = popen(command, "r");
    cr_assert_not_null(pipe);
    size_t length = fread(output, 1, output_size - 1, pipe);
    output[length] = '\0';
    int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void journal_written(const char *path) {
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_uring_init(path, &storage), 0);
    sz_journal_format_options_t format = {.cluster_id = 9,
                                          .segment_size = SZ_JOURNAL_SEGMENT_SIZE_MIN};
    cr_assert_eq(sz_journal_format(storage, &format), 0);
    sz_journal_options_t options = {.in_flight_max = 3};
    sz_journal_t *journal = NULL;
    cr_assert_eq(sz_journal_open(storage, &options, &journal, NULL), 0);
    static uint8_t events[OPS_EVENTS_MAX * SZ_JOURNAL_EVENT_SIZE];
    for (uint64_t op = 1; op <= OP_COUNT; op++) {
        sz_journal_append_t entry;
        ops_generate(seed, op, &entry, events);
        int result = sz_journal_append(journal, &entry, events, NULL);
        while (result == -EAGAIN) {
            cr_assert_eq(sz_journal_poll(journal, true), 0);
            result = sz_journal_append(journal, &entry, events, NULL);
        }
        cr_assert_eq(result, 0);
        if (op % 40 == 0) cr_assert_eq(sz_journal_submit(journal), 0);
    }
    cr_assert_eq(sz_journal_flush(journal), 0);
    sz_journal_deinit(journal);
    sz_storage_deinit(storage);
}

static void digest_line(const char *output, char *line, size_t size) {
    const char *found = strstr(output, "digest=");
    cr_assert_not_null(found, "no digest in: %s", output);
    size_t length = strcspn(found, "\n");
    cr_assert_lt(length, size);
    memcpy(line, found, length);
    line[length] = '\0';
}

TestSuite(tools_retention, .init = setup, .fini = teardown);

Test(tools_retention, replay_and_inspect_find_retired_segments_in_the_archive) {
    char data[128], archive[128], snapshots[128];
    snprintf(data, sizeof(data), "%s/data", work);
    snprintf(archive, sizeof(archive), "%s/archive", work);
    snprintf(snapshots, sizeof(snapshots), "%s/snapshots", work);
    cr_assert_eq(mkdir(data, 0755), 0);
    cr_assert_eq(mkdir(archive, 0755), 0);
    cr_assert_eq(mkdir(snapshots, 0755), 0);
    journal_written(data);
    static char output[65536];
    char digest[128], digest_after[128];
    const char *capacities = "--accounts-max 1024 --transfers-max 200000 --pending-max 65536 "
                             "--history-max 1024";
    cr_assert_eq(run(output, sizeof(output), "replay %s %s", capacities, data), 0, "%s", output);
    digest_line(output, digest, sizeof(digest));
    cr_assert_eq(run(output, sizeof(output), "replay %s --until-op %u --write-snapshot %s %s",
                     capacities, SNAPSHOT_OP, snapshots, data), 0, "%s", output);

    int directory_fd = open(data, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int archive_fd = open(archive, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    sz_journal_problem_t problem;
    int retired = sz_journal_retire(directory_fd, archive_fd, SNAPSHOT_OP + 1, &problem);
    close(directory_fd);
    close(archive_fd);
    cr_assert_gt(retired, 0, "retire: %d %s", retired, problem.reason);

    cr_assert_eq(run(output, sizeof(output), "replay %s %s", capacities, data), 66, "%s", output);
    cr_assert(strstr(output, "missing") != NULL, "%s", output);
    cr_assert_eq(run(output, sizeof(output), "inspect --limit 1 %s", data), 66, "%s", output);

    cr_assert_eq(run(output, sizeof(output), "replay %s --archive %s %s", capacities, archive,
                     data), 0, "%s", output);
    cr_assert(strstr(output, "ops=6000 ") != NULL, "%s", output);
    digest_line(output, digest_after, sizeof(digest_after));
    cr_assert_str_eq(digest_after, digest);
    cr_assert_eq(run(output, sizeof(output), "replay %s --archive %s --until-op 10 %s",
                     capacities, archive, data), 0, "%s", output);
    cr_assert(strstr(output, "op_last=10 ") != NULL, "%s", output);

    cr_assert_eq(run(output, sizeof(output), "replay %s --snapshot %s/snapshot.%020u %s",
                     capacities, snapshots, SNAPSHOT_OP, data), 0, "%s", output);
    cr_assert(strstr(output, "ops=2500 ") != NULL, "%s", output);
    digest_line(output, digest_after, sizeof(digest_after));
    cr_assert_str_eq(digest_after, digest);

    cr_assert_eq(run(output, sizeof(output), "inspect --limit 1 --archive %s %s", archive, data),
                 0, "%s", output);
    cr_assert(strstr(output, "entries=6000 ") != NULL, "%s", output);
    cr_assert(strstr(output, "chain=ok") != NULL, "%s", output);
}
