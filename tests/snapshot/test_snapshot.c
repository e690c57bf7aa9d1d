/* test_snapshot.c: the snapshot file (snapshot/snapshot.h) on real files.
 *
 * What it proves: a snapshot loaded into a fresh ledger (other capacities, other hash seed)
 * has the writer's digest, meta and sessions, answers every lookup and query the same, and
 * stays equal to the writer while both apply the same random ops (linked chains, pending
 * transfers with timeouts, expiry, history accounts, failing events); writing works from a
 * forked child of a multi-threaded process; a bit flip anywhere (every section, its padding,
 * every header field), a truncation at many points, a missing file, a file of another
 * cluster, an unknown version and a leftover *.tmp are each refused with a clear problem
 * (never a crash); a state too large for the capacities gives -ENOSPC; list and prune keep
 * the newest and drop *.tmp; a paced write keeps to its byte rate; a writer SIGKILLed
 * at random moments never leaves a listed snapshot that fails to load. Seeds:
 * SUMZERO_SEED (printed). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "snapshot/snapshot.h"
#include "tests/snapshot/workload.h"

#define CLUSTER_ID ((sz_u128)0x1234 << 64 | 0x5678)
#define SESSIONS_SIZE 5000u

static char directory[64];
static int directory_fd = -1;
static uint8_t sessions[SESSIONS_SIZE];

static int remove_entry(const char *path, const struct stat *status, int flag, struct FTW *ftw) {
    (void)status, (void)flag, (void)ftw;
    return remove(path);
}

static void directory_setup(void) {
    snprintf(directory, sizeof(directory), "/tmp/sz_snapshot_test.XXXXXX");
    cr_assert_not_null(mkdtemp(directory));
    directory_fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cr_assert_geq(directory_fd, 0);
    for (uint32_t index = 0; index < SESSIONS_SIZE; index++) sessions[index] = (uint8_t)(index * 7);
}

static void directory_teardown(void) {
    if (directory_fd >= 0) close(directory_fd);
    nftw(directory, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(snapshot, .init = directory_setup, .fini = directory_teardown);

static sz_ledger_config_t config_make(uint64_t hash_seed, uint32_t scale) {
    return (sz_ledger_config_t){.accounts_max = 4096 * scale, .transfers_max = 65536 * scale,
                                .pending_max = 65536 * scale, .history_max = 131072 * scale,
                                .hash_seed = hash_seed};
}

static sz_ledger_t *ledger_built(workload_t *workload, uint64_t seed, uint32_t op_count) {
    sz_ledger_config_t config = config_make(1, 1);
    sz_ledger_t *ledger = NULL;
    cr_assert_eq(sz_ledger_init(&config, &ledger), 0);
    workload_init(workload, seed);
    for (uint32_t op = 0; op < op_count; op++) workload_step(workload, &ledger, 1);
    return ledger;
}

static sz_snapshot_meta_t meta_of(const sz_ledger_t *ledger, uint64_t op) {
    sz_ledger_stats_t stats;
    sz_ledger_stats(ledger, &stats);
    return (sz_snapshot_meta_t){.cluster_id = CLUSTER_ID, .op = op,
                                .timestamp = stats.timestamp_last,
                                .chain_head = ((sz_u128)op << 64) | 0xC4A1,
                                .digest = sz_ledger_digest(ledger), .created_ns = 42};
}

static void snapshot_written(const sz_ledger_t *ledger, uint64_t op) {
    sz_snapshot_meta_t meta = meta_of(ledger, op);
    sz_snapshot_problem_t problem;
    int result = sz_snapshot_write(directory_fd, ledger, &meta, sessions, SESSIONS_SIZE, &problem);
    cr_assert_eq(result, 0, "write: %d %s: %s", result, problem.name, problem.reason);
}

static void path_of(uint64_t op, char *path, size_t size) {
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(op, name);
    snprintf(path, size, "%s/%s", directory, name);
}

/* Loads op's snapshot; returns the result (problem filled), the ledger deinitialised. */
static int load_result(uint64_t op, sz_u128 cluster_id, sz_snapshot_problem_t *problem) {
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(op, name);
    sz_ledger_config_t config = config_make(9, 4);
    sz_snapshot_loaded_t loaded;
    int result = sz_snapshot_load(directory_fd, name, cluster_id, &config, &loaded, problem);
    if (result == 0) {
        sz_ledger_deinit(loaded.ledger);
        sz_snapshot_sessions_free(loaded.sessions, loaded.sessions_size);
    } else {
        cr_assert_null(loaded.ledger);
        cr_assert_null(loaded.sessions);
    }
    return result;
}

Test(snapshot, a_loaded_snapshot_answers_and_continues_like_the_ledger_that_wrote_it) {
    uint64_t seed = workload_seed(3);
    for (uint32_t round = 0; round < 4; round++) {
        workload_t workload;
        sz_ledger_t *original = ledger_built(&workload, seed + round, 50 + 80 * round);
        snapshot_written(original, 1000 + round);
        char name[SZ_SNAPSHOT_NAME_SIZE];
        sz_snapshot_name(1000 + round, name);
        sz_ledger_config_t config = config_make(0x77 + round, 2);
        sz_snapshot_loaded_t loaded;
        sz_snapshot_problem_t problem;
        int result = sz_snapshot_load(directory_fd, name, CLUSTER_ID, &config, &loaded, &problem);
        cr_assert_eq(result, 0, "seed %llu: load: %s at %llu: %s",
                     (unsigned long long)(seed + round), problem.name,
                     (unsigned long long)problem.offset, problem.reason);
        sz_snapshot_meta_t meta = meta_of(original, 1000 + round);
        cr_assert(loaded.meta.cluster_id == meta.cluster_id && loaded.meta.op == meta.op &&
                      loaded.meta.timestamp == meta.timestamp &&
                      loaded.meta.chain_head == meta.chain_head &&
                      loaded.meta.digest.low == meta.digest.low &&
                      loaded.meta.digest.high == meta.digest.high &&
                      loaded.meta.created_ns == meta.created_ns,
                  "meta differs");
        cr_assert_eq(loaded.sessions_size, SESSIONS_SIZE);
        cr_assert_eq(memcmp(loaded.sessions, sessions, SESSIONS_SIZE), 0, "sessions differ");
        workload_compare(&workload, original, loaded.ledger);
        sz_ledger_t *both[2] = {original, loaded.ledger};
        for (uint32_t op = 0; op < 240; op++) {
            workload_step(&workload, both, 2);
            if (op % 80 == 79) workload_compare(&workload, original, loaded.ledger);
        }
        sz_snapshot_sessions_free(loaded.sessions, loaded.sessions_size);
        sz_ledger_deinit(loaded.ledger);
        sz_ledger_deinit(original);
    }
}

Test(snapshot, an_empty_ledger_without_sessions_round_trips) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 1, 0);
    sz_snapshot_meta_t meta = meta_of(original, 0);
    sz_snapshot_problem_t problem;
    cr_assert_eq(sz_snapshot_write(directory_fd, original, &meta, NULL, 0, &problem), 0, "%s",
                 problem.reason);
    sz_ledger_config_t config = config_make(2, 1);
    sz_snapshot_loaded_t loaded;
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(0, name);
    cr_assert_str_eq(name, "snapshot.00000000000000000000");
    cr_assert_eq(sz_snapshot_load(directory_fd, name, CLUSTER_ID, &config, &loaded, &problem), 0,
                 "%s", problem.reason);
    cr_assert_null(loaded.sessions);
    workload_compare(&workload, original, loaded.ledger);
    sz_ledger_deinit(loaded.ledger);
    sz_ledger_deinit(original);
}

/* The pace: 40 MiB at 100 MiB/s cannot take less than the 0.4 s the last chunk is due at
 * (within one chunk of 8 MiB: 0.32 s); the file is the same as an unpaced one. */
Test(snapshot, a_paced_write_keeps_to_its_rate_and_loads_like_an_unpaced_one) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 3, 20);
    sz_snapshot_meta_t meta = meta_of(original, 7);
    size_t blob_size = 40u << 20;
    uint8_t *blob = malloc(blob_size);
    cr_assert_not_null(blob);
    for (size_t index = 0; index < blob_size; index++) blob[index] = (uint8_t)(index * 131 >> 7);
    sz_snapshot_problem_t problem;
    struct timespec before, after;
    clock_gettime(CLOCK_MONOTONIC, &before);
    cr_assert_eq(sz_snapshot_write_paced(directory_fd, original, &meta, blob, blob_size,
                                         100u << 20, &problem),
                 0, "%s", problem.reason);
    clock_gettime(CLOCK_MONOTONIC, &after);
    double seconds = (double)(after.tv_sec - before.tv_sec) +
                     (double)(after.tv_nsec - before.tv_nsec) / 1e9;
    cr_assert_geq(seconds, 0.32, "40 MiB at 100 MiB/s took %.3f s", seconds);
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(7, name);
    sz_ledger_config_t config = config_make(2, 1);
    sz_snapshot_loaded_t loaded;
    cr_assert_eq(sz_snapshot_load(directory_fd, name, CLUSTER_ID, &config, &loaded, &problem), 0,
                 "%s", problem.reason);
    cr_assert_eq(loaded.sessions_size, blob_size);
    cr_assert_eq(memcmp(loaded.sessions, blob, blob_size), 0);
    workload_compare(&workload, original, loaded.ledger);
    sz_snapshot_sessions_free(loaded.sessions, loaded.sessions_size);
    sz_ledger_deinit(loaded.ledger);
    sz_ledger_deinit(original);
    free(blob);
}

static atomic_bool spinning;

static void *spin_thread(void *unused) {
    (void)unused;
    while (atomic_load(&spinning)) {
        void *memory = malloc(64); /* holds malloc's locks now and then, as a server does */
        free(memory);
    }
    return NULL;
}

Test(snapshot, a_forked_child_of_a_threaded_process_writes_a_loadable_snapshot) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 5, 200);
    atomic_store(&spinning, true);
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, spin_thread, NULL), 0);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        sz_snapshot_meta_t meta = meta_of(original, 77);
        sz_snapshot_problem_t problem;
        int result = sz_snapshot_write(directory_fd, original, &meta, sessions, SESSIONS_SIZE,
                                       &problem);
        _exit(result == 0 ? 0 : 1);
    }
    int status = 0;
    cr_assert_eq(waitpid(child, &status, 0), child);
    atomic_store(&spinning, false);
    pthread_join(thread, NULL);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    sz_snapshot_problem_t problem;
    cr_assert_eq(load_result(77, CLUSTER_ID, &problem), 0, "%s", problem.reason);
    sz_ledger_deinit(original);
}

/* The file's bytes, for damaging copies of it. */
static uint8_t *file_read(const char *path, size_t *size_out) {
    FILE *file = fopen(path, "rb");
    cr_assert_not_null(file);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    uint8_t *bytes = malloc((size_t)size + 1);
    cr_assert_eq(fread(bytes, 1, (size_t)size, file), (size_t)size);
    fclose(file);
    *size_out = (size_t)size;
    return bytes;
}

static void file_write(const char *path, const uint8_t *bytes, size_t size) {
    FILE *file = fopen(path, "wb");
    cr_assert_not_null(file);
    cr_assert_eq(fwrite(bytes, 1, size, file), size);
    fclose(file);
}

/* Flips one bit at offset of op's file (kept in original), expects -EUCLEAN naming what. */
static void flip_detected(const uint8_t *original, size_t size, uint64_t offset, uint32_t bit,
                          const char *what) {
    char path[256];
    path_of(9, path, sizeof(path));
    uint8_t *copy = malloc(size);
    memcpy(copy, original, size);
    copy[offset] ^= (uint8_t)(1u << bit);
    file_write(path, copy, size);
    free(copy);
    sz_snapshot_problem_t problem;
    int result = load_result(9, CLUSTER_ID, &problem);
    cr_assert_eq(result, -EUCLEAN, "flip at %llu bit %u: result %d",
                 (unsigned long long)offset, bit, result);
    cr_assert(strstr(problem.reason, what) != NULL, "flip at %llu: reason '%s' lacks '%s'",
              (unsigned long long)offset, problem.reason, what);
}

typedef struct section_entry {
    uint32_t kind;
    uint32_t record_size;
    uint64_t record_count;
    uint64_t offset;
    uint64_t size;
} section_entry_t;

Test(snapshot, a_bit_flip_in_any_section_its_padding_or_the_header_is_detected) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 17, 160);
    snapshot_written(original, 9);
    char path[256];
    path_of(9, path, sizeof(path));
    size_t size = 0;
    uint8_t *bytes = file_read(path, &size);
    static const char *const names[6] = {"accounts", "transfers", "transfer_metas", "expiry",
                                         "history", "sessions"};
    for (uint32_t index = 0; index < 6; index++) {
        section_entry_t section;
        memcpy(&section, bytes + 256 + 64 * index, sizeof(section));
        cr_assert_eq(section.kind, index + 1);
        cr_assert_gt(section.size, 0, "section %s is empty: the workload is too small",
                     names[index]);
        uint64_t offsets[4] = {section.offset, section.offset + section.size / 2,
                               section.offset + section.size - 1, 0};
        for (uint32_t point = 0; point < 3; point++) {
            flip_detected(bytes, size, offsets[point], point * 3, names[index]);
        }
        if (section.size % 4096 != 0) {
            flip_detected(bytes, size, section.offset + section.size, 0, "padding");
        }
    }
    /* Every 8 bytes of the header's used part, and the reserved rest. */
    for (uint64_t offset = 0; offset < 256 + 6 * 64; offset += 8) {
        flip_detected(bytes, size, offset, (uint32_t)(offset / 8 % 8), offset >= 16 && offset < 24 ? "magic" : "header");
    }
    flip_detected(bytes, size, 4000, 1, "header");
    free(bytes);
    sz_ledger_deinit(original);
}

Test(snapshot, a_truncated_file_is_refused_at_every_cut) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 19, 120);
    snapshot_written(original, 9);
    char path[256];
    path_of(9, path, sizeof(path));
    size_t size = 0;
    uint8_t *bytes = file_read(path, &size);
    uint64_t cuts[] = {0, 1, 100, 4095, 4096, 4097, 8192, size / 3, size / 2, size - 4097,
                       size - 4096, size - 1};
    for (uint32_t index = 0; index < sizeof(cuts) / sizeof(cuts[0]); index++) {
        file_write(path, bytes, cuts[index]);
        sz_snapshot_problem_t problem;
        int result = load_result(9, CLUSTER_ID, &problem);
        cr_assert_eq(result, -EUCLEAN, "cut at %llu: %d", (unsigned long long)cuts[index], result);
        cr_assert(strstr(problem.reason, "truncated") != NULL, "cut at %llu: '%s'",
                  (unsigned long long)cuts[index], problem.reason);
    }
    /* Extended, too. */
    uint8_t *longer = calloc(1, size + 4096);
    memcpy(longer, bytes, size);
    file_write(path, longer, size + 4096);
    sz_snapshot_problem_t problem;
    cr_assert_eq(load_result(9, CLUSTER_ID, &problem), -EUCLEAN);
    free(longer);
    free(bytes);
    sz_ledger_deinit(original);
}

Test(snapshot, a_missing_file_another_cluster_and_an_unknown_version_are_refused) {
    sz_snapshot_problem_t problem;
    cr_assert_eq(load_result(404, CLUSTER_ID, &problem), -ENOENT);
    cr_assert(strstr(problem.reason, "no such snapshot") != NULL, "%s", problem.reason);
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 23, 60);
    snapshot_written(original, 9);
    cr_assert_eq(load_result(9, CLUSTER_ID + 1, &problem), -EUCLEAN);
    cr_assert(strstr(problem.reason, "another cluster") != NULL, "%s", problem.reason);
    /* Version 2 with a valid header checksum: a file from a newer build. */
    char path[256];
    path_of(9, path, sizeof(path));
    size_t size = 0;
    uint8_t *bytes = file_read(path, &size);
    uint32_t version = 2;
    memcpy(bytes + 24, &version, sizeof(version));
    XXH128_hash_t hash = XXH3_128bits(bytes + 16, 4096 - 16);
    memcpy(bytes, &hash.low64, 8);
    memcpy(bytes + 8, &hash.high64, 8);
    file_write(path, bytes, size);
    cr_assert_eq(load_result(9, CLUSTER_ID, &problem), -EUCLEAN);
    cr_assert(strstr(problem.reason, "unknown snapshot version 2") != NULL, "%s", problem.reason);
    free(bytes);
    sz_ledger_deinit(original);
}

Test(snapshot, a_state_above_the_capacities_gives_enospc) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 29, 100);
    snapshot_written(original, 9);
    sz_ledger_stats_t stats;
    sz_ledger_stats(original, &stats);
    sz_ledger_config_t config = config_make(1, 1);
    config.transfers_max = (uint32_t)stats.transfer_count - 1;
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(9, name);
    sz_snapshot_loaded_t loaded;
    sz_snapshot_problem_t problem;
    cr_assert_eq(sz_snapshot_load(directory_fd, name, CLUSTER_ID, &config, &loaded, &problem),
                 -ENOSPC);
    cr_assert(strstr(problem.reason, "capacities") != NULL, "%s", problem.reason);
    sz_ledger_deinit(original);
}

Test(snapshot, meta_that_disagrees_with_the_ledger_is_refused_and_leaves_no_file) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 31, 30);
    sz_snapshot_meta_t meta = meta_of(original, 5);
    meta.digest.low ^= 1;
    sz_snapshot_problem_t problem;
    cr_assert_eq(sz_snapshot_write(directory_fd, original, &meta, NULL, 0, &problem), -EINVAL);
    uint64_t ops[4];
    cr_assert_eq(sz_snapshot_list(directory_fd, ops, 4), 0);
    sz_ledger_deinit(original);
}

Test(snapshot, list_ignores_tmp_files_and_prune_keeps_the_newest) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 37, 20);
    uint64_t written[] = {15, 5, 20, 10};
    for (uint32_t index = 0; index < 4; index++) snapshot_written(original, written[index]);
    char path[256];
    snprintf(path, sizeof(path), "%s/snapshot.00000000000000000025.tmp", directory);
    file_write(path, (const uint8_t *)"half", 4);
    snprintf(path, sizeof(path), "%s/unrelated.txt", directory);
    file_write(path, (const uint8_t *)"keep", 4);
    uint64_t ops[8];
    cr_assert_eq(sz_snapshot_list(directory_fd, ops, 8), 4);
    cr_assert(ops[0] == 20 && ops[1] == 15 && ops[2] == 10 && ops[3] == 5);
    cr_assert_eq(sz_snapshot_list(directory_fd, ops, 2), 4);
    cr_assert(ops[0] == 20 && ops[1] == 15);
    sz_snapshot_problem_t problem;
    sz_ledger_config_t config = config_make(1, 1);
    sz_snapshot_loaded_t loaded;
    cr_assert_eq(sz_snapshot_load(directory_fd, "snapshot.00000000000000000025.tmp", CLUSTER_ID,
                                  &config, &loaded, &problem), -EUCLEAN);
    cr_assert(strstr(problem.reason, ".tmp") != NULL, "%s", problem.reason);
    cr_assert_eq(sz_snapshot_prune(directory_fd, 2), 3); /* 5, 10 and the tmp */
    cr_assert_eq(sz_snapshot_list(directory_fd, ops, 8), 2);
    cr_assert(ops[0] == 20 && ops[1] == 15);
    cr_assert_eq(access(path, F_OK), 0, "prune removed an unrelated file");
    cr_assert_eq(sz_snapshot_prune(directory_fd, 5), 0);
    cr_assert_eq(sz_snapshot_prune(directory_fd, 0), 2);
    cr_assert_eq(sz_snapshot_list(directory_fd, ops, 8), 0);
    sz_ledger_deinit(original);
}

/* A ledger big enough that writing its snapshot takes tens of milliseconds. */
static sz_ledger_t *ledger_big(void) {
    sz_ledger_config_t config = {.accounts_max = 1024, .transfers_max = 1u << 18,
                                 .pending_max = 16384, .history_max = 16384, .hash_seed = 3};
    sz_ledger_t *ledger = NULL;
    cr_assert_eq(sz_ledger_init(&config, &ledger), 0);
    static sz_account_t accounts[1000];
    static sz_transfer_t transfers[SZ_BATCH_EVENTS_MAX];
    static sz_create_result_t results[SZ_BATCH_EVENTS_MAX];
    memset(accounts, 0, sizeof(accounts));
    for (uint32_t index = 0; index < 1000; index++) {
        accounts[index] = (sz_account_t){.id = index + 1, .ledger = 1, .code = 1};
    }
    uint32_t count = 0;
    uint64_t clock = 1700000000000000000ull;
    cr_assert_eq(sz_ledger_create_accounts(ledger, accounts, 1000, clock, results, &count), 0);
    for (uint32_t batch = 0; batch < 30; batch++) {
        memset(transfers, 0, sizeof(transfers));
        for (uint32_t index = 0; index < SZ_BATCH_EVENTS_MAX; index++) {
            uint64_t number = (uint64_t)batch * SZ_BATCH_EVENTS_MAX + index;
            transfers[index] = (sz_transfer_t){.id = number + 1, .debit_account_id = number % 1000 + 1,
                                               .credit_account_id = (number * 7 + 1) % 1000 + 1,
                                               .amount = 5, .ledger = 1, .code = 1};
            if (transfers[index].credit_account_id == transfers[index].debit_account_id) {
                transfers[index].credit_account_id = transfers[index].debit_account_id % 1000 + 1;
            }
        }
        clock = sz_ledger_timestamp_next(ledger, clock + SZ_BATCH_EVENTS_MAX);
        cr_assert_eq(sz_ledger_create_transfers(ledger, transfers, SZ_BATCH_EVENTS_MAX, clock,
                                                results, &count), 0);
    }
    return ledger;
}

static uint64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

Test(snapshot, a_writer_killed_at_any_moment_never_leaves_a_listed_snapshot_that_fails) {
    uint64_t seed = workload_seed(41);
    workload_t random;
    workload_init(&random, seed);
    sz_ledger_t *ledger = ledger_big();
    /* How long one write takes here, to spread the kills over it. */
    uint64_t start_ns = monotonic_ns();
    snapshot_written(ledger, 1);
    uint64_t write_ns = monotonic_ns() - start_ns;
    cr_assert_eq(sz_snapshot_prune(directory_fd, 0), 1);
    uint32_t complete = 0, torn = 0;
    for (uint32_t kill_index = 0; kill_index < 24; kill_index++) {
        pid_t child = fork();
        cr_assert_geq(child, 0);
        if (child == 0) {
            sz_snapshot_meta_t meta = meta_of(ledger, 100 + kill_index);
            sz_snapshot_problem_t problem;
            _exit(sz_snapshot_write(directory_fd, ledger, &meta, sessions, SESSIONS_SIZE,
                                    &problem) == 0 ? 0 : 1);
        }
        /* A random moment within (and a little beyond) one write: spin, never sleep. */
        uint64_t deadline_ns = monotonic_ns() + workload_next(&random) % (write_ns * 5 / 4 + 1);
        while (monotonic_ns() < deadline_ns) {
        }
        kill(child, SIGKILL);
        int status = 0;
        cr_assert_eq(waitpid(child, &status, 0), child);
        uint64_t ops[64];
        int found = sz_snapshot_list(directory_fd, ops, 64);
        cr_assert_geq(found, 0);
        for (int index = 0; index < found; index++) {
            sz_snapshot_problem_t problem;
            cr_assert_eq(load_result(ops[index], CLUSTER_ID, &problem), 0,
                         "kill %u: listed snapshot %llu does not load: %s", kill_index,
                         (unsigned long long)ops[index], problem.reason);
        }
        bool listed = false;
        for (int index = 0; index < found; index++) listed |= ops[index] == 100 + kill_index;
        if (listed) {
            complete++;
        } else {
            torn++;
        }
        cr_assert_geq(sz_snapshot_prune(directory_fd, 64), 0); /* drops any .tmp left */
    }
    fprintf(stderr, "killed writers: %u finished, %u cut short (one write: %.1f ms)\n", complete,
            torn, (double)write_ns / 1e6);
    sz_ledger_deinit(ledger);
}
