/* bench_snapshot.c: how long a big ledger takes to snapshot and to load (not a test; run by
 * hand). Builds a ledger of ACCOUNTS accounts and TRANSFERS transfers with core directly
 * (uniform random accounts, 1 in 16 pending with a timeout, 1 in 64 posting an earlier
 * pending, 1 in 1000 accounts with history), writes its snapshot from a forked child (as
 * the server does; reports the parent's fork() time), drops the original, loads the file
 * into a fresh prefaulted ledger (warm page cache, then cold: the file's pages dropped with
 * POSIX_FADV_DONTNEED), and checks digest, stats and a sample of lookups.
 *
 * usage: bench_snapshot [ACCOUNTS [TRANSFERS [DIR]]]   (default 1000000 20000000 .) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "snapshot/snapshot.h"

#define SAMPLE_COUNT 4096u

static uint64_t clock_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static uint64_t mix(uint64_t value) {
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ull;
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBull;
    return value ^ (value >> 31);
}

static sz_u128 transfer_id(uint64_t index) { return ((sz_u128)mix(index + 1) << 64) | (index + 1); }

static void die(const char *what, int result) {
    fprintf(stderr, "bench_snapshot: %s: %d (%s)\n", what, result, strerror(result < 0 ? -result : result));
    exit(1);
}

static void build(sz_ledger_t *ledger, uint32_t account_count, uint64_t transfer_count) {
    static sz_account_t accounts[SZ_BATCH_EVENTS_MAX];
    static sz_transfer_t transfers[SZ_BATCH_EVENTS_MAX];
    static sz_create_result_t results[SZ_BATCH_EVENTS_MAX];
    uint64_t clock = 1700000000000000000ull;
    uint32_t result_count = 0;
    for (uint32_t first = 0; first < account_count; first += SZ_BATCH_EVENTS_MAX) {
        uint32_t count = account_count - first < SZ_BATCH_EVENTS_MAX ? account_count - first
                                                                     : SZ_BATCH_EVENTS_MAX;
        memset(accounts, 0, sizeof(accounts));
        for (uint32_t index = 0; index < count; index++) {
            accounts[index].id = (sz_u128)first + index + 1;
            accounts[index].ledger = 1;
            accounts[index].code = 1;
            if ((first + index) % 1000 == 0) accounts[index].flags = SZ_ACCOUNT_HISTORY;
        }
        clock = sz_ledger_timestamp_next(ledger, clock);
        if (sz_ledger_create_accounts(ledger, accounts, count, clock, results, &result_count) !=
            SZ_BATCH_APPLIED) {
            die("create_accounts", -EPROTO);
        }
    }
    for (uint64_t first = 0; first < transfer_count; first += SZ_BATCH_EVENTS_MAX) {
        uint32_t count = transfer_count - first < SZ_BATCH_EVENTS_MAX
                             ? (uint32_t)(transfer_count - first)
                             : SZ_BATCH_EVENTS_MAX;
        memset(transfers, 0, sizeof(transfers));
        for (uint32_t index = 0; index < count; index++) {
            uint64_t number = first + index;
            uint64_t random = mix(number ^ 0xabcdef);
            sz_transfer_t *transfer = &transfers[index];
            transfer->id = transfer_id(number);
            transfer->debit_account_id = random % account_count + 1;
            transfer->credit_account_id = (random >> 20) % account_count + 1;
            if (transfer->credit_account_id == transfer->debit_account_id) {
                transfer->credit_account_id = transfer->debit_account_id % account_count + 1;
            }
            transfer->amount = random % 1000 + 1;
            transfer->ledger = 1;
            transfer->code = 1;
            if (number % 16 == 5) {
                transfer->flags = SZ_TRANSFER_PENDING;
                transfer->timeout = 3600;
            } else if (number % 64 == 38 && number > 64) {
                transfer->flags = SZ_TRANSFER_POST_PENDING;
                transfer->pending_id = transfer_id(number - 33); /* number % 16 == 5 */
                transfer->debit_account_id = 0;
                transfer->credit_account_id = 0;
                transfer->amount = 0;
                transfer->ledger = 0;
                transfer->code = 0;
            }
        }
        clock = sz_ledger_timestamp_next(ledger, clock + 1000);
        if (sz_ledger_create_transfers(ledger, transfers, count, clock, results, &result_count) !=
            SZ_BATCH_APPLIED) {
            die("create_transfers", -EPROTO);
        }
    }
}

typedef struct expected {
    sz_digest_t digest;
    sz_ledger_stats_t stats;
    sz_transfer_t transfers[SAMPLE_COUNT];
    sz_account_t accounts[SAMPLE_COUNT];
} expected_t;

static void expected_take(const sz_ledger_t *ledger, uint64_t transfer_count, uint32_t account_count,
                          expected_t *expected) {
    expected->digest = sz_ledger_digest(ledger);
    sz_ledger_stats(ledger, &expected->stats);
    for (uint32_t index = 0; index < SAMPLE_COUNT; index++) {
        sz_u128 id = transfer_id(mix(index) % transfer_count);
        sz_ledger_lookup_transfers(ledger, &id, 1, &expected->transfers[index]);
        sz_u128 account = mix(index) % account_count + 1;
        sz_ledger_lookup_accounts(ledger, &account, 1, &expected->accounts[index]);
    }
}

static void expected_check(const sz_ledger_t *ledger, uint64_t transfer_count, uint32_t account_count,
                           const expected_t *expected) {
    sz_digest_t digest = sz_ledger_digest(ledger);
    sz_ledger_stats_t stats;
    sz_ledger_stats(ledger, &stats);
    if (digest.low != expected->digest.low || digest.high != expected->digest.high) die("digest", -EUCLEAN);
    if (stats.transfer_count != expected->stats.transfer_count ||
        stats.account_count != expected->stats.account_count ||
        stats.pending_count != expected->stats.pending_count ||
        stats.history_count != expected->stats.history_count ||
        stats.op_count != expected->stats.op_count) {
        die("stats", -EUCLEAN);
    }
    for (uint32_t index = 0; index < SAMPLE_COUNT; index++) {
        sz_u128 id = transfer_id(mix(index) % transfer_count);
        sz_transfer_t transfer;
        if (sz_ledger_lookup_transfers(ledger, &id, 1, &transfer) != 1 ||
            memcmp(&transfer, &expected->transfers[index], sizeof(transfer)) != 0) {
            die("transfer lookup", -EUCLEAN);
        }
        sz_u128 account_id = mix(index) % account_count + 1;
        sz_account_t account;
        if (sz_ledger_lookup_accounts(ledger, &account_id, 1, &account) != 1 ||
            memcmp(&account, &expected->accounts[index], sizeof(account)) != 0) {
            die("account lookup", -EUCLEAN);
        }
    }
}

static void load_timed(int directory_fd, const char *name, const sz_ledger_config_t *config,
                       const char *label, uint64_t transfer_count, uint32_t account_count,
                       const expected_t *expected) {
    sz_snapshot_loaded_t loaded;
    sz_snapshot_problem_t problem;
    uint64_t start_ns = clock_ns();
    int result = sz_snapshot_load(directory_fd, name, 1, config, &loaded, &problem);
    uint64_t load_ns = clock_ns() - start_ns;
    if (result < 0) {
        fprintf(stderr, "load: %s at %llu: %s\n", problem.name, (unsigned long long)problem.offset,
                problem.reason);
        die("load", result);
    }
    expected_check(loaded.ledger, transfer_count, account_count, expected);
    printf("load_%s_seconds=%.3f (prefaulted ledger init included; digest, stats and %u lookups "
           "equal)\n", label, (double)load_ns / 1e9, SAMPLE_COUNT);
    start_ns = clock_ns();
    sz_ledger_deinit(loaded.ledger);
    printf("deinit_seconds=%.3f\n", (double)(clock_ns() - start_ns) / 1e9);
}

int main(int argc, char **argv) {
    uint32_t account_count = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 0) : 1000000u;
    uint64_t transfer_count = argc > 2 ? strtoull(argv[2], NULL, 0) : 20000000u;
    const char *directory = argc > 3 ? argv[3] : ".";
    sz_ledger_config_t config = {.accounts_max = account_count,
                                 .transfers_max = (uint32_t)transfer_count + SZ_BATCH_EVENTS_MAX,
                                 .pending_max = (uint32_t)(transfer_count / 16) + 2 * SZ_BATCH_EVENTS_MAX,
                                 .history_max = (uint32_t)(transfer_count / 400) + 4 * SZ_BATCH_EVENTS_MAX,
                                 .hash_seed = 7, .prefault = true};
    sz_ledger_t *ledger = NULL;
    uint64_t start_ns = clock_ns();
    int result = sz_ledger_init(&config, &ledger);
    if (result < 0) die("init", result);
    printf("init_prefault_seconds=%.3f memory_bytes=%zu\n", (double)(clock_ns() - start_ns) / 1e9,
           sz_ledger_memory_size(&config));
    start_ns = clock_ns();
    build(ledger, account_count, transfer_count);
    double build_seconds = (double)(clock_ns() - start_ns) / 1e9;
    printf("build_seconds=%.3f transfers_per_second=%.0f\n", build_seconds,
           (double)transfer_count / build_seconds);
    static expected_t expected;
    expected_take(ledger, transfer_count, account_count, &expected);
    printf("state: accounts=%llu transfers=%llu pending_queue=%llu history=%llu ops=%llu\n",
           (unsigned long long)expected.stats.account_count,
           (unsigned long long)expected.stats.transfer_count,
           (unsigned long long)expected.stats.pending_count,
           (unsigned long long)expected.stats.history_count,
           (unsigned long long)expected.stats.op_count);

    int directory_fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd < 0) die("open directory", -errno);
    sz_snapshot_meta_t meta = {.cluster_id = 1, .op = expected.stats.op_count,
                               .timestamp = expected.stats.timestamp_last, .chain_head = 42,
                               .digest = expected.digest, .created_ns = 0};
    start_ns = clock_ns();
    pid_t child = fork();
    uint64_t fork_ns = clock_ns() - start_ns;
    if (child < 0) die("fork", -errno);
    if (child == 0) {
        sz_snapshot_problem_t problem;
        int written = sz_snapshot_write(directory_fd, ledger, &meta, NULL, 0, &problem);
        if (written < 0) fprintf(stderr, "write: %s: %s\n", problem.name, problem.reason);
        _exit(written == 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(child, &status, 0);
    uint64_t write_ns = clock_ns() - start_ns;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("write", -EIO);
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(meta.op, name);
    struct stat file_status;
    if (fstatat(directory_fd, name, &file_status, 0) != 0) die("stat", -errno);
    printf("write_seconds=%.3f (forked child, fdatasync and rename included) fork_seconds=%.4f "
           "file_bytes=%lld\n", (double)write_ns / 1e9, (double)fork_ns / 1e9,
           (long long)file_status.st_size);
    sz_ledger_deinit(ledger);

    load_timed(directory_fd, name, &config, "warm", transfer_count, account_count, &expected);
    int fd = openat(directory_fd, name, O_RDONLY);
    if (fd >= 0) {
        (void)fdatasync(fd);
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    load_timed(directory_fd, name, &config, "cold", transfer_count, account_count, &expected);
    if (getenv("BENCH_KEEP") == NULL) unlinkat(directory_fd, name, 0);
    close(directory_fd);
    return 0;
}
