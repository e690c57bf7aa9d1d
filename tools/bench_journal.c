/* bench_journal.c: `sumzero bench journal`: appends full batches (8190 x 128-byte
 * transfers per op) through the journal as fast as group commit allows and reports
 * durable MB/s, ops/s and the latency from append to the durability callback, next to a
 * plain loop of O_DIRECT pwrite + fdatasync of the same size into a preallocated file,
 * run on the same disk in the same process. The journal is a real, replayable one: op 1
 * creates the accounts, every later op creates transfers between them. */
#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "journal_tool.h"

#define BENCH_RUNS_MAX 16u
#define BENCH_ACCOUNT_COUNT 8190u

typedef struct bench_options {
    uint64_t op_count;
    uint32_t in_flight_max;
    uint32_t runs;
    const char *parent;
    bool keep;
} bench_options_t;

typedef struct bench_result {
    double megabytes_per_second;
    double ops_per_second;
    double latency_us_p50; /* write + fdatasync */
    double latency_us_p99;
    double latency_us_max;
    double durable_us_p50; /* append to durability callback (journal only) */
    double durable_us_p99;
    double durable_us_max;
} bench_result_t;

typedef struct bench_state {
    uint64_t *append_ns; /* by op */
    uint64_t *latency_ns;
    uint64_t latency_count;
    uint64_t op_reported;
} bench_state_t;

/* A storage that forwards to the real one and times each write + fdatasync from
 * submission to completion: the journal's own fdatasync latency, without the queueing
 * that append-to-durable includes. */
typedef struct timing_storage {
    sz_storage_t base;
    sz_storage_t *inner;
    uint64_t submit_ns[SZ_STORAGE_IN_FLIGHT_MAX * 2];
    uint64_t *latency_ns;
    uint64_t latency_count;
    uint64_t latency_max_count;
} timing_storage_t;

static timing_storage_t *timing_of(sz_storage_t *storage) { return (timing_storage_t *)storage; }

static int timing_file_open(sz_storage_t *storage, const char *name, uint32_t flags,
                            uint64_t size, int *file_out) {
    return sz_storage_file_open(timing_of(storage)->inner, name, flags, size, file_out);
}
static void timing_file_close(sz_storage_t *storage, int file) {
    sz_storage_file_close(timing_of(storage)->inner, file);
}
static int timing_file_remove(sz_storage_t *storage, const char *name) {
    return sz_storage_file_remove(timing_of(storage)->inner, name);
}
static int timing_file_size(sz_storage_t *storage, int file, uint64_t *size_out) {
    return sz_storage_file_size(timing_of(storage)->inner, file, size_out);
}
static int64_t timing_read(sz_storage_t *storage, int file, uint64_t offset, void *buffer,
                           uint64_t size) {
    return sz_storage_read(timing_of(storage)->inner, file, offset, buffer, size);
}
static int timing_write_sync(sz_storage_t *storage, int file, uint64_t offset,
                             const void *buffer, uint64_t size) {
    return sz_storage_write_sync(timing_of(storage)->inner, file, offset, buffer, size);
}
static int timing_submit(sz_storage_t *storage, int file, uint64_t offset, const void *buffer,
                         uint64_t size, uint64_t tag) {
    timing_storage_t *self = timing_of(storage);
    self->submit_ns[tag % (SZ_STORAGE_IN_FLIGHT_MAX * 2)] = journal_tool_clock_ns();
    int result = sz_storage_submit(self->inner, file, offset, buffer, size, tag);
    storage->in_flight_count = self->inner->in_flight_count;
    return result;
}
static int timing_reap(sz_storage_t *storage, bool wait, sz_storage_completion_t *completions_out,
                       uint32_t completion_max) {
    timing_storage_t *self = timing_of(storage);
    int count = sz_storage_reap(self->inner, wait, completions_out, completion_max);
    uint64_t now_ns = journal_tool_clock_ns();
    for (int index = 0; index < count; index++) {
        uint64_t start_ns = self->submit_ns[completions_out[index].tag % (SZ_STORAGE_IN_FLIGHT_MAX * 2)];
        if (self->latency_count < self->latency_max_count) {
            self->latency_ns[self->latency_count++] = now_ns - start_ns;
        }
    }
    storage->in_flight_count = self->inner->in_flight_count;
    return count;
}
static int timing_lock(sz_storage_t *storage) { return sz_storage_lock(timing_of(storage)->inner); }
static void timing_deinit(sz_storage_t *storage) { (void)storage; }

static const sz_storage_vtable_t timing_vtable = {
    .file_open = timing_file_open, .file_close = timing_file_close,
    .file_remove = timing_file_remove, .file_size = timing_file_size, .read = timing_read,
    .write_sync = timing_write_sync, .submit = timing_submit, .reap = timing_reap,
    .lock = timing_lock, .deinit = timing_deinit,
};

static int compare_u64(const void *left, const void *right) {
    uint64_t a = *(const uint64_t *)left, b = *(const uint64_t *)right;
    return a < b ? -1 : a > b;
}

static int compare_double(const void *left, const void *right) {
    double a = *(const double *)left, b = *(const double *)right;
    return a < b ? -1 : a > b;
}

static void bench_percentiles(uint64_t *values, uint64_t count, bench_result_t *result) {
    if (count == 0) return;
    qsort(values, count, sizeof(values[0]), compare_u64);
    result->latency_us_p50 = (double)values[count / 2] / 1e3;
    result->latency_us_p99 = (double)values[(count * 99) / 100 < count ? (count * 99) / 100 : count - 1] / 1e3;
    result->latency_us_max = (double)values[count - 1] / 1e3;
}

static void bench_on_durable(uint64_t op_durable, void *context) {
    bench_state_t *state = context;
    uint64_t now_ns = journal_tool_clock_ns();
    for (uint64_t op = state->op_reported + 1; op <= op_durable; op++) {
        state->latency_ns[state->latency_count++] = now_ns - state->append_ns[op];
    }
    state->op_reported = op_durable;
}

static void bench_body_accounts(sz_account_t *accounts) {
    memset(accounts, 0, BENCH_ACCOUNT_COUNT * sizeof(*accounts));
    for (uint32_t index = 0; index < BENCH_ACCOUNT_COUNT; index++) {
        accounts[index].id = index + 1;
        accounts[index].ledger = 1;
        accounts[index].code = 1;
    }
}

static void bench_body_transfers(sz_transfer_t *transfers, uint64_t op) {
    if (op == 2) memset(transfers, 0, SZ_BATCH_EVENTS_MAX * sizeof(*transfers));
    for (uint32_t index = 0; index < SZ_BATCH_EVENTS_MAX; index++) {
        transfers[index].amount = 1;
        transfers[index].ledger = 1;
        transfers[index].code = 1;
        uint64_t number = op * SZ_BATCH_EVENTS_MAX + index;
        transfers[index].id = number + 1;
        transfers[index].debit_account_id = number % BENCH_ACCOUNT_COUNT + 1;
        transfers[index].credit_account_id = (number + 1 + op % 7) % BENCH_ACCOUNT_COUNT + 1;
        if (transfers[index].credit_account_id == transfers[index].debit_account_id) {
            transfers[index].credit_account_id = transfers[index].debit_account_id % BENCH_ACCOUNT_COUNT + 1;
        }
    }
}

static void bench_directory_remove(const char *directory) {
    char path[4096];
    const char *fixed[] = {SZ_JOURNAL_SUPERBLOCK_NAME, "lock"};
    for (uint32_t index = 0; index < 2; index++) {
        snprintf(path, sizeof(path), "%s/%s", directory, fixed[index]);
        unlink(path);
    }
    for (uint32_t segment = 0; segment < 100000; segment++) {
        char name[SZ_STORAGE_NAME_SIZE];
        sz_journal_segment_name(segment, name);
        snprintf(path, sizeof(path), "%s/%s", directory, name);
        if (unlink(path) != 0) break;
    }
    snprintf(path, sizeof(path), "%s/plain", directory);
    unlink(path);
    rmdir(directory);
}

/* Appends op_count ops; returns 0 or a negative errno, printing what failed. */
static int bench_journal_append_all(sz_journal_t *journal, const bench_options_t *options,
                                    bench_state_t *state, uint8_t *body) {
    for (uint64_t op = 1; op <= options->op_count; op++) {
        sz_journal_append_t entry = {
            .timestamp = 1000000000ull + op * 8192,
            .operation = op == 1 ? SZ_OPERATION_CREATE_ACCOUNTS : SZ_OPERATION_CREATE_TRANSFERS,
            .event_count = op == 1 ? BENCH_ACCOUNT_COUNT : SZ_BATCH_EVENTS_MAX,
            .client_id = 1,
            .request_number = (uint32_t)op,
        };
        if (op == 1) bench_body_accounts((sz_account_t *)body);
        else bench_body_transfers((sz_transfer_t *)body, op);
        state->append_ns[op] = journal_tool_clock_ns();
        int result = sz_journal_append(journal, &entry, body, NULL);
        /* Bounded: each wait completes a write or fails. */
        while (result == -EAGAIN) {
            result = sz_journal_poll(journal, true);
            if (result == 0) result = sz_journal_append(journal, &entry, body, NULL);
        }
        if (result == 0) result = sz_journal_submit(journal);
        if (result == 0) result = sz_journal_poll(journal, false);
        if (result < 0) {
            fprintf(stderr, "sumzero bench journal: append of op %llu failed: %s %s\n",
                    (unsigned long long)op, strerror(-result), sz_journal_error_message(journal));
            return result;
        }
    }
    return sz_journal_flush(journal);
}

static int bench_journal_run(const char *directory, const bench_options_t *options,
                             bench_result_t *result_out) {
    sz_storage_t *real = NULL;
    int result = sz_storage_uring_init(directory, &real);
    if (result < 0) return result;
    timing_storage_t timing = {.base = {.vtable = &timing_vtable}, .inner = real,
                               .latency_ns = calloc(options->op_count * 2, sizeof(uint64_t)),
                               .latency_max_count = options->op_count * 2};
    sz_storage_t *storage = &timing.base;
    sz_journal_format_options_t format = {.cluster_id = 1};
    result = timing.latency_ns == NULL ? -ENOMEM : sz_journal_format(storage, &format);
    bench_state_t state = {
        .append_ns = calloc(options->op_count + 1, sizeof(uint64_t)),
        .latency_ns = calloc(options->op_count + 1, sizeof(uint64_t)),
    };
    uint8_t *body = aligned_alloc(64, SZ_JOURNAL_BODY_SIZE_MAX);
    sz_journal_t *journal = NULL;
    if (state.append_ns == NULL || state.latency_ns == NULL || body == NULL) result = -ENOMEM;
    if (result == 0) memset(body, 0, SZ_JOURNAL_BODY_SIZE_MAX);
    sz_journal_options_t journal_options = {.in_flight_max = options->in_flight_max,
                                            .on_durable = bench_on_durable,
                                            .durable_context = &state};
    sz_journal_problem_t problem;
    if (result == 0) result = sz_journal_open(storage, &journal_options, &journal, &problem);
    uint64_t start_ns = journal_tool_clock_ns();
    if (result == 0) result = bench_journal_append_all(journal, options, &state, body);
    uint64_t elapsed_ns = journal_tool_clock_ns() - start_ns;
    if (result == 0) {
        double bytes = (double)options->op_count * SZ_JOURNAL_ENTRY_SIZE_MAX;
        result_out->megabytes_per_second = bytes / 1e6 / ((double)elapsed_ns / 1e9);
        result_out->ops_per_second = (double)options->op_count / ((double)elapsed_ns / 1e9);
        bench_result_t durable = {0};
        bench_percentiles(state.latency_ns, state.latency_count, &durable);
        result_out->durable_us_p50 = durable.latency_us_p50;
        result_out->durable_us_p99 = durable.latency_us_p99;
        result_out->durable_us_max = durable.latency_us_max;
        bench_percentiles(timing.latency_ns, timing.latency_count, result_out);
    }
    sz_journal_deinit(journal);
    sz_storage_deinit(real);
    free(timing.latency_ns);
    free(state.append_ns);
    free(state.latency_ns);
    free(body);
    return result;
}

/* The baseline: what the disk does with the same writes and nothing else. */
static int bench_plain_run(const char *directory, const bench_options_t *options,
                           bench_result_t *result_out) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/plain", directory);
    uint64_t size = SZ_JOURNAL_WRITE_SIZE_MAX;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    int result = 0;
    uint64_t *latency_ns = calloc(options->op_count, sizeof(uint64_t));
    uint8_t *buffer = aligned_alloc(SZ_STORAGE_SECTOR_SIZE, size);
    if (latency_ns == NULL || buffer == NULL) result = -ENOMEM;
    if (result == 0 && fallocate(fd, 0, 0, (off_t)(size * options->op_count)) != 0) result = -errno;
    if (result == 0 && fsync(fd) != 0) result = -errno;
    if (result == 0) memset(buffer, 0x5A, size);
    uint64_t start_ns = journal_tool_clock_ns();
    for (uint64_t index = 0; result == 0 && index < options->op_count; index++) {
        if (pwrite(fd, buffer, size, (off_t)(index * size)) != (ssize_t)size) {
            result = -EIO;
            break;
        }
        uint64_t sync_start_ns = journal_tool_clock_ns();
        if (fdatasync(fd) != 0) result = -errno;
        latency_ns[index] = journal_tool_clock_ns() - sync_start_ns;
    }
    uint64_t elapsed_ns = journal_tool_clock_ns() - start_ns;
    if (result == 0) {
        double bytes = (double)options->op_count * SZ_JOURNAL_ENTRY_SIZE_MAX;
        result_out->megabytes_per_second = bytes / 1e6 / ((double)elapsed_ns / 1e9);
        result_out->ops_per_second = (double)options->op_count / ((double)elapsed_ns / 1e9);
        bench_percentiles(latency_ns, options->op_count, result_out);
    }
    close(fd);
    unlink(path);
    free(latency_ns);
    free(buffer);
    return result;
}

static void bench_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero bench journal [--ops N] [--in-flight N] [--runs N] [--dir PARENT] "
            "[--keep]\n"
            "  --ops N        full batches (8190 x 128 bytes) per run (default 1000, about 1 GB)\n"
            "  --in-flight N  group-commit writes in flight, 1..%u (default %u)\n"
            "  --runs N       runs of each loop; medians are reported (default 3)\n"
            "  --dir PARENT   where the scratch data directories go (default .)\n"
            "  --keep         keep the last run's data directory (for replay and inspect)\n",
            SZ_JOURNAL_IN_FLIGHT_MAX, SZ_JOURNAL_IN_FLIGHT_DEFAULT);
}

static int bench_parse(int argc, char **argv, bench_options_t *options) {
    static const struct option long_options[] = {
        {"ops", required_argument, NULL, 'o'},   {"in-flight", required_argument, NULL, 'i'},
        {"runs", required_argument, NULL, 'r'},  {"dir", required_argument, NULL, 'd'},
        {"keep", no_argument, NULL, 'k'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    int option;
    uint64_t value = 0;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (option) {
        case 'o':
            if (!journal_tool_u64(optarg, &value) || value < 2 || value > 1000000) goto usage;
            options->op_count = value;
            break;
        case 'i':
            if (!journal_tool_u64(optarg, &value) || value < 1 || value > SZ_JOURNAL_IN_FLIGHT_MAX) goto usage;
            options->in_flight_max = (uint32_t)value;
            break;
        case 'r':
            if (!journal_tool_u64(optarg, &value) || value < 1 || value > BENCH_RUNS_MAX) goto usage;
            options->runs = (uint32_t)value;
            break;
        case 'd': options->parent = optarg; break;
        case 'k': options->keep = true; break;
        case 'h': bench_usage(stdout); return -1;
        default: goto usage;
        }
    }
    if (optind == argc) return EX_OK;
usage:
    fprintf(stderr, "sumzero bench journal: bad or out-of-range argument; see --help\n");
    return EX_USAGE;
}

static void bench_print(const char *name, const bench_result_t *results, uint32_t runs,
                        bool durable) {
    double columns[8][BENCH_RUNS_MAX];
    for (uint32_t run = 0; run < runs; run++) {
        columns[0][run] = results[run].megabytes_per_second;
        columns[1][run] = results[run].ops_per_second;
        columns[2][run] = results[run].latency_us_p50;
        columns[3][run] = results[run].latency_us_p99;
        columns[4][run] = results[run].latency_us_max;
        columns[5][run] = results[run].durable_us_p50;
        columns[6][run] = results[run].durable_us_p99;
        columns[7][run] = results[run].durable_us_max;
    }
    for (uint32_t column = 0; column < 8; column++) {
        qsort(columns[column], runs, sizeof(double), compare_double);
    }
    printf("%-8s durable MB/s=%.0f (min %.0f max %.0f) ops/s=%.0f transfers/s=%.0f\n", name,
           columns[0][runs / 2], columns[0][0], columns[0][runs - 1], columns[1][runs / 2],
           columns[1][runs / 2] * SZ_BATCH_EVENTS_MAX);
    printf("%-8s %s us p50=%.0f p99=%.0f max=%.0f\n", name,
           durable ? "write+fdatasync (linked, in flight)" : "fdatasync after pwrite",
           columns[2][runs / 2], columns[3][runs / 2], columns[4][runs / 2]);
    if (durable) {
        printf("%-8s append to durability callback us p50=%.0f p99=%.0f max=%.0f\n", name,
               columns[5][runs / 2], columns[6][runs / 2], columns[7][runs / 2]);
    }
}

static double median_of(const bench_result_t *results, uint32_t runs) {
    double values[BENCH_RUNS_MAX];
    for (uint32_t run = 0; run < runs; run++) values[run] = results[run].megabytes_per_second;
    qsort(values, runs, sizeof(double), compare_double);
    return values[runs / 2];
}

int sz_command_bench_journal(int argc, char **argv) {
    bench_options_t options = {.op_count = 1000, .in_flight_max = SZ_JOURNAL_IN_FLIGHT_DEFAULT,
                               .runs = 3, .parent = "."};
    int parsed = bench_parse(argc, argv, &options);
    if (parsed != EX_OK) return parsed < 0 ? EX_OK : parsed;
    bench_result_t journal_results[BENCH_RUNS_MAX] = {0}, plain_results[BENCH_RUNS_MAX] = {0};
    char directory[4096] = "";
    printf("bench journal: %llu ops of %u x 128 bytes (%u bytes a write), %u in flight, "
           "median of %u runs\n", (unsigned long long)options.op_count, SZ_BATCH_EVENTS_MAX,
           (unsigned)SZ_JOURNAL_WRITE_SIZE_MAX, options.in_flight_max, options.runs);
    for (uint32_t run = 0; run < options.runs; run++) {
        snprintf(directory, sizeof(directory), "%s/sumzero-bench-journal-XXXXXX", options.parent);
        if (mkdtemp(directory) == NULL) {
            fprintf(stderr, "sumzero bench journal: cannot create a directory in %s: %s\n",
                    options.parent, strerror(errno));
            return EX_CANTCREAT;
        }
        int result = bench_plain_run(directory, &options, &plain_results[run]);
        if (result == 0) result = bench_journal_run(directory, &options, &journal_results[run]);
        if (result < 0) {
            fprintf(stderr, "sumzero bench journal: run %u in %s failed: %s\n", run, directory,
                    strerror(-result));
            bench_directory_remove(directory);
            return EX_IOERR;
        }
        bool last = run + 1 == options.runs;
        if (!(last && options.keep)) bench_directory_remove(directory);
    }
    bench_print("plain", plain_results, options.runs, false);
    bench_print("journal", journal_results, options.runs, true);
    printf("journal/plain bandwidth: %.0f%% (medians of %u runs; percentiles are medians of "
           "each run's)\n", 100.0 * median_of(journal_results, options.runs) /
           median_of(plain_results, options.runs), options.runs);
    if (options.keep) printf("kept: %s (try `sumzero replay %s`)\n", directory, directory);
    return EX_OK;
}
