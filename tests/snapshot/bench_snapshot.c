/* bench_snapshot.c: how long a big ledger takes to snapshot and to load (not a test; run by
 * hand). Builds a ledger of ACCOUNTS accounts and TRANSFERS transfers with core directly
 * (uniform random accounts, 1 in 16 pending with a timeout, 1 in 64 posting an earlier
 * pending, 1 in 1000 accounts with history), writes its snapshot from a forked child (as
 * the server does; reports the parent's fork() time), drops the original, loads the file
 * into a fresh prefaulted ledger (warm page cache, then cold: the file's pages dropped with
 * POSIX_FADV_DONTNEED), and checks digest, stats and a sample of lookups.
 * With BENCH_JOURNAL=DIR (an empty directory), every batch is also journaled there, a tail
 * of BENCH_TAIL transfers (default 1000000) follows the snapshot, and the two restarts are
 * timed: snapshot load + replay of the tail (chain head checked), and full replay.
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

#include "journal/replay.h"
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

typedef struct bench_journal {
    sz_storage_t *storage;
    sz_journal_t *journal;
} bench_journal_t;

static void journal_append(bench_journal_t *journal, sz_operation_t operation, uint64_t timestamp,
                           const void *events, uint32_t count) {
    if (journal == NULL) return;
    sz_journal_append_t entry = {.timestamp = timestamp, .operation = operation,
                                 .event_count = count};
    int result = sz_journal_append(journal->journal, &entry, events, NULL);
    while (result == -EAGAIN) {
        result = sz_journal_poll(journal->journal, true);
        if (result == 0) result = sz_journal_append(journal->journal, &entry, events, NULL);
    }
    if (result == 0) result = sz_journal_submit(journal->journal);
    if (result == 0) result = sz_journal_poll(journal->journal, false);
    if (result < 0) die("journal append", result);
}

static uint64_t bench_clock = 1700000000000000000ull;

static void build_accounts(sz_ledger_t *ledger, uint32_t account_count, bench_journal_t *journal) {
    static sz_account_t accounts[SZ_BATCH_EVENTS_MAX];
    static sz_create_result_t results[SZ_BATCH_EVENTS_MAX];
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
        bench_clock = sz_ledger_timestamp_next(ledger, bench_clock);
        if (sz_ledger_create_accounts(ledger, accounts, count, bench_clock, results,
                                      &result_count) != SZ_BATCH_APPLIED) {
            die("create_accounts", -EPROTO);
        }
        journal_append(journal, SZ_OPERATION_CREATE_ACCOUNTS, bench_clock, accounts, count);
    }
}

/* Transfers number_first .. number_end - 1. */
static void build_transfers(sz_ledger_t *ledger, uint32_t account_count, uint64_t number_first,
                            uint64_t number_end, bench_journal_t *journal) {
    static sz_transfer_t transfers[SZ_BATCH_EVENTS_MAX];
    static sz_create_result_t results[SZ_BATCH_EVENTS_MAX];
    uint32_t result_count = 0;
    for (uint64_t first = number_first; first < number_end; first += SZ_BATCH_EVENTS_MAX) {
        uint32_t count = number_end - first < SZ_BATCH_EVENTS_MAX ? (uint32_t)(number_end - first)
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
        bench_clock = sz_ledger_timestamp_next(ledger, bench_clock + 1000);
        if (sz_ledger_create_transfers(ledger, transfers, count, bench_clock, results,
                                       &result_count) != SZ_BATCH_APPLIED) {
            die("create_transfers", -EPROTO);
        }
        journal_append(journal, SZ_OPERATION_CREATE_TRANSFERS, bench_clock, transfers, count);
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

/* Restart from the snapshot + the journal tail, then by full replay; both must reach the
 * digest the writer had at the end of the tail. */
static void restart_timed(sz_storage_t *storage, int directory_fd, const char *name,
                          const sz_ledger_config_t *config, const sz_snapshot_meta_t *meta,
                          uint64_t tail_count, sz_digest_t digest_final) {
    sz_snapshot_loaded_t loaded;
    sz_snapshot_problem_t problem;
    uint64_t start_ns = clock_ns();
    int result = sz_snapshot_load(directory_fd, name, 1, config, &loaded, &problem);
    if (result < 0) die(problem.reason, result);
    uint64_t load_ns = clock_ns() - start_ns;
    sz_replay_options_t options = {.op_after = meta->op, .chain_head = meta->chain_head};
    sz_replay_stats_t stats;
    sz_journal_problem_t journal_problem;
    result = sz_replay_run(storage, &options, loaded.ledger, &stats, &journal_problem);
    if (result < 0) die(journal_problem.reason, result);
    uint64_t total_ns = clock_ns() - start_ns;
    sz_digest_t digest = sz_ledger_digest(loaded.ledger);
    if (digest.low != digest_final.low || digest.high != digest_final.high) die("restart digest", -EUCLEAN);
    printf("restart_from_snapshot_seconds=%.3f (load %.3f + replay of %llu ops, %llu transfers, "
           "after op %llu; digest equal)\n", (double)total_ns / 1e9, (double)load_ns / 1e9,
           (unsigned long long)stats.op_count, (unsigned long long)tail_count,
           (unsigned long long)meta->op);
    sz_ledger_deinit(loaded.ledger);
    sz_ledger_t *ledger = NULL;
    start_ns = clock_ns();
    result = sz_ledger_init(config, &ledger);
    if (result < 0) die("init", result);
    sz_replay_options_t full = {0};
    result = sz_replay_run(storage, &full, ledger, &stats, &journal_problem);
    if (result < 0) die(journal_problem.reason, result);
    total_ns = clock_ns() - start_ns;
    digest = sz_ledger_digest(ledger);
    if (digest.low != digest_final.low || digest.high != digest_final.high) die("replay digest", -EUCLEAN);
    printf("restart_by_full_replay_seconds=%.3f (%llu ops, prefaulted ledger init included; digest "
           "equal)\n", (double)total_ns / 1e9, (unsigned long long)stats.op_count);
    sz_ledger_deinit(ledger);
}

int main(int argc, char **argv) {
    uint32_t account_count = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 0) : 1000000u;
    uint64_t transfer_count = argc > 2 ? strtoull(argv[2], NULL, 0) : 20000000u;
    const char *directory = argc > 3 ? argv[3] : ".";
    sz_ledger_config_t config = {.accounts_max = account_count,
                                 .transfers_max = (uint32_t)transfer_count + 2000000,
                                 .pending_max = (uint32_t)(transfer_count / 16) + 2 * SZ_BATCH_EVENTS_MAX,
                                 .history_max = (uint32_t)(transfer_count / 400) + 4 * SZ_BATCH_EVENTS_MAX,
                                 .hash_seed = 7, .prefault = true};
    sz_ledger_t *ledger = NULL;
    uint64_t start_ns = clock_ns();
    int result = sz_ledger_init(&config, &ledger);
    if (result < 0) die("init", result);
    printf("init_prefault_seconds=%.3f memory_bytes=%zu\n", (double)(clock_ns() - start_ns) / 1e9,
           sz_ledger_memory_size(&config));
    const char *journal_directory = getenv("BENCH_JOURNAL");
    uint64_t tail_count = getenv("BENCH_TAIL") ? strtoull(getenv("BENCH_TAIL"), NULL, 0) : 1000000;
    bench_journal_t journal_state = {0};
    bench_journal_t *journal = NULL;
    if (journal_directory != NULL) {
        journal = &journal_state;
        result = sz_storage_uring_init(journal_directory, &journal->storage);
        sz_journal_format_options_t format = {.cluster_id = 1};
        if (result == 0) result = sz_journal_format(journal->storage, &format);
        sz_journal_options_t options = {.in_flight_max = 3};
        if (result == 0) result = sz_journal_open(journal->storage, &options, &journal->journal, NULL);
        if (result < 0) die("journal", result);
    }
    start_ns = clock_ns();
    build_accounts(ledger, account_count, journal);
    build_transfers(ledger, account_count, 0, transfer_count, journal);
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
    if (journal != NULL) {
        result = sz_journal_flush(journal->journal);
        if (result < 0) die("journal flush", result);
        sz_journal_info_t info;
        sz_journal_info(journal->journal, &info);
        if (info.op_last != meta.op) die("journal op", -EPROTO);
        meta.chain_head = info.checksum_last;
    }
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
    sz_digest_t digest_final = expected.digest;
    if (journal != NULL) {
        build_transfers(ledger, account_count, transfer_count, transfer_count + tail_count, journal);
        result = sz_journal_flush(journal->journal);
        if (result < 0) die("journal flush", result);
        digest_final = sz_ledger_digest(ledger);
        sz_journal_deinit(journal->journal);
    }
    sz_ledger_deinit(ledger);
    if (journal != NULL) {
        restart_timed(journal->storage, directory_fd, name, &config, &meta, tail_count,
                      digest_final);
    }

    load_timed(directory_fd, name, &config, "warm", transfer_count, account_count, &expected);
    int fd = openat(directory_fd, name, O_RDONLY);
    if (fd >= 0) {
        (void)fdatasync(fd);
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    load_timed(directory_fd, name, &config, "cold", transfer_count, account_count, &expected);
    if (journal != NULL) sz_storage_deinit(journal->storage);
    if (getenv("BENCH_KEEP") == NULL) unlinkat(directory_fd, name, 0);
    close(directory_fd);
    return 0;
}
