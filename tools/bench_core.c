/* bench_core.c: `sumzero bench core`, the state machine alone. Applies batches of 8190
 * transfers in process and reports transfers per second (the median of several runs, with
 * min and max), for 10 thousand and 1 million accounts, uniform and hot (every transfer
 * credits one account), with and without prefetching, and the memory used per account and
 * per transfer. Only sz_ledger_create_transfers() is timed; the batches are generated
 * between the timed calls. Also `sumzero bench` itself, which dispatches by name (no name:
 * the load generator of bench_server.c). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "core/ledger.h"

#define BENCH_RUNS_MAX 64u

typedef struct bench_options {
    uint64_t transfers;
    uint32_t runs;
    uint32_t prefetch_distance;
    uint32_t accounts[8];
    uint32_t accounts_count;
    int hot; /* -1 both, 0 uniform, 1 hot */
    int prefetch; /* -1 both, 0 off, 1 on */
    uint64_t seed;
} bench_options_t;

static uint64_t clock_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

/* splitmix64: a fast, good-enough generator for benchmark ids. */
static uint64_t random_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

static int accounts_create(sz_ledger_t *ledger, uint32_t account_count, sz_account_t *events,
                           sz_create_result_t *results) {
    uint64_t timestamp = 1;
    for (uint32_t first = 0; first < account_count; first += SZ_BATCH_EVENTS_MAX) {
        uint32_t count = account_count - first;
        if (count > SZ_BATCH_EVENTS_MAX) count = SZ_BATCH_EVENTS_MAX;
        memset(events, 0, sizeof(sz_account_t) * count);
        for (uint32_t index = 0; index < count; index++) {
            events[index].id = (sz_u128)first + index + 1;
            events[index].ledger = 1;
            events[index].code = 1;
        }
        uint32_t result_count = 0;
        timestamp = sz_ledger_timestamp_next(ledger, timestamp);
        sz_batch_status_t status =
            sz_ledger_create_accounts(ledger, events, count, timestamp, results, &result_count);
        if (status != SZ_BATCH_APPLIED || result_count != 0) return -EPROTO;
    }
    return 0;
}

/* One run: a fresh, prefaulted ledger; returns transfers per second, or a negative value. */
static double bench_run(const bench_options_t *options, uint32_t account_count, bool hot,
                        uint32_t distance, uint64_t seed, sz_transfer_t *events,
                        sz_create_result_t *results, sz_ledger_stats_t *stats_out) {
    sz_ledger_config_t config = {.accounts_max = account_count,
                                 .transfers_max = (uint32_t)options->transfers,
                                 .pending_max = 2 * SZ_BATCH_EVENTS_MAX,
                                 .history_max = 2 * SZ_BATCH_EVENTS_MAX,
                                 .hash_seed = 0x5a5a,
                                 .prefault = true};
    sz_ledger_t *ledger = NULL;
    if (sz_ledger_init(&config, &ledger) != 0) return -1;
    if (accounts_create(ledger, account_count, (sz_account_t *)events, results) != 0) {
        sz_ledger_deinit(ledger);
        return -1;
    }
    sz_ledger_prefetch_set(ledger, distance);
    uint64_t random_state = seed;
    uint64_t elapsed_ns = 0;
    uint64_t next_id = 1;
    for (uint64_t done = 0; done < options->transfers;) {
        uint32_t count = SZ_BATCH_EVENTS_MAX;
        if (options->transfers - done < count) count = (uint32_t)(options->transfers - done);
        memset(events, 0, sizeof(sz_transfer_t) * count);
        for (uint32_t index = 0; index < count; index++) {
            sz_transfer_t *event = &events[index];
            uint64_t debit = random_next(&random_state) % account_count;
            uint64_t credit;
            if (hot) {
                credit = 0;
                if (debit == 0) debit = 1 + random_next(&random_state) % (account_count - 1);
            } else {
                credit = random_next(&random_state) % (account_count - 1);
                if (credit >= debit) credit++;
            }
            event->id = next_id++;
            event->debit_account_id = debit + 1;
            event->credit_account_id = credit + 1;
            event->amount = 1;
            event->ledger = 1;
            event->code = 1;
        }
        uint32_t result_count = 0;
        uint64_t timestamp = sz_ledger_timestamp_next(ledger, 0);
        uint64_t start_ns = clock_ns();
        sz_batch_status_t status =
            sz_ledger_create_transfers(ledger, events, count, timestamp, results, &result_count);
        elapsed_ns += clock_ns() - start_ns;
        if (status != SZ_BATCH_APPLIED || result_count != 0) {
            fprintf(stderr, "bench core: batch refused (%s) or failed (%u results)\n",
                    sz_batch_status_name(status), result_count);
            sz_ledger_deinit(ledger);
            return -1;
        }
        done += count;
    }
    sz_ledger_stats(ledger, stats_out);
    sz_ledger_deinit(ledger);
    return (double)options->transfers * 1e9 / (double)elapsed_ns;
}

/* Bytes per account and per transfer, all indexes included, from the layout itself. */
static void memory_per_record(uint32_t account_count, uint64_t transfer_count,
                              double *account_bytes_out, double *transfer_bytes_out) {
    sz_ledger_config_t base = {.accounts_max = account_count,
                               .transfers_max = (uint32_t)transfer_count,
                               .pending_max = 2 * SZ_BATCH_EVENTS_MAX,
                               .history_max = 2 * SZ_BATCH_EVENTS_MAX};
    sz_ledger_config_t one_account = base;
    one_account.accounts_max = 1;
    sz_ledger_config_t one_transfer = base;
    one_transfer.transfers_max = 1;
    double full = (double)sz_ledger_memory_size(&base);
    *account_bytes_out = (full - (double)sz_ledger_memory_size(&one_account)) / account_count;
    *transfer_bytes_out =
        (full - (double)sz_ledger_memory_size(&one_transfer)) / (double)transfer_count;
}

static void bench_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero bench core [--transfers N] [--runs N] [--accounts N[,N...]]\n"
            "                          [--hot | --uniform] [--prefetch-distance N | --no-prefetch]\n"
            "                          [--seed N]\n"
            "Applies batches of %u transfers in process and prints transfers/s (median of\n"
            "--runs runs, default 5) for each case. Defaults: 10,000,000 transfers, accounts\n"
            "10000,1000000, uniform and hot, prefetch distance %u and off.\n",
            SZ_BATCH_EVENTS_MAX, SZ_LEDGER_PREFETCH_DISTANCE_DEFAULT);
}

static int bench_parse_accounts(const char *text, bench_options_t *options) {
    options->accounts_count = 0;
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", text);
    for (char *token = strtok(copy, ","); token != NULL; token = strtok(NULL, ",")) {
        char *end = NULL;
        unsigned long value = strtoul(token, &end, 10);
        if (*end != '\0' || value < 2 || value > SZ_LEDGER_CAPACITY_MAX ||
            options->accounts_count == 8) {
            return -EINVAL;
        }
        options->accounts[options->accounts_count++] = (uint32_t)value;
    }
    return options->accounts_count == 0 ? -EINVAL : 0;
}

static int bench_parse(int argc, char **argv, bench_options_t *options) {
    static const struct option long_options[] = {
        {"transfers", required_argument, NULL, 't'},
        {"runs", required_argument, NULL, 'r'},
        {"accounts", required_argument, NULL, 'a'},
        {"hot", no_argument, NULL, 'H'},
        {"uniform", no_argument, NULL, 'U'},
        {"prefetch-distance", required_argument, NULL, 'd'},
        {"no-prefetch", no_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        char *end = NULL;
        switch (option) {
        case 't':
            options->transfers = strtoull(optarg, &end, 10);
            if (*end != '\0' || options->transfers == 0 ||
                options->transfers > SZ_LEDGER_CAPACITY_MAX) {
                fprintf(stderr, "bench core: --transfers takes 1..%u\n", SZ_LEDGER_CAPACITY_MAX);
                return EX_USAGE;
            }
            break;
        case 'r':
            options->runs = (uint32_t)strtoul(optarg, &end, 10);
            if (*end != '\0' || options->runs == 0 || options->runs > BENCH_RUNS_MAX) {
                fprintf(stderr, "bench core: --runs takes 1..%u\n", BENCH_RUNS_MAX);
                return EX_USAGE;
            }
            break;
        case 'a':
            if (bench_parse_accounts(optarg, options) != 0) {
                fprintf(stderr, "bench core: --accounts takes up to 8 counts of at least 2\n");
                return EX_USAGE;
            }
            break;
        case 'H': options->hot = 1; break;
        case 'U': options->hot = 0; break;
        case 'd':
            options->prefetch_distance = (uint32_t)strtoul(optarg, &end, 10);
            if (*end != '\0' || options->prefetch_distance == 0 ||
                options->prefetch_distance > SZ_LEDGER_PREFETCH_DISTANCE_MAX) {
                fprintf(stderr, "bench core: --prefetch-distance takes 1..%u\n",
                        SZ_LEDGER_PREFETCH_DISTANCE_MAX);
                return EX_USAGE;
            }
            options->prefetch = 1;
            break;
        case 'n': options->prefetch = 0; break;
        case 's':
            options->seed = strtoull(optarg, &end, 0);
            if (*end != '\0') {
                fprintf(stderr, "bench core: --seed takes a number\n");
                return EX_USAGE;
            }
            break;
        case 'h': bench_usage(stdout); return -1;
        default: bench_usage(stderr); return EX_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "bench core: unexpected argument '%s'\n", argv[optind]);
        return EX_USAGE;
    }
    return 0;
}

int sz_command_bench_core(int argc, char **argv) {
    bench_options_t options = {.transfers = 10000000,
                               .runs = 5,
                               .prefetch_distance = SZ_LEDGER_PREFETCH_DISTANCE_DEFAULT,
                               .accounts = {10000, 1000000},
                               .accounts_count = 2,
                               .hot = -1,
                               .prefetch = -1,
                               .seed = 42};
    int parsed = bench_parse(argc, argv, &options);
    if (parsed != 0) return parsed < 0 ? EX_OK : parsed;

    sz_transfer_t *events = aligned_alloc(64, sizeof(sz_transfer_t) * SZ_BATCH_EVENTS_MAX);
    sz_create_result_t *results = malloc(sizeof(sz_create_result_t) * SZ_BATCH_EVENTS_MAX);
    if (events == NULL || results == NULL) {
        fprintf(stderr, "bench core: out of memory for the batch buffers\n");
        free(events);
        free(results);
        return EX_OSERR;
    }
    printf("bench core: %llu transfers a run, batches of %u, median of %u runs, seed %llu\n",
           (unsigned long long)options.transfers, SZ_BATCH_EVENTS_MAX, options.runs,
           (unsigned long long)options.seed);
    printf("%10s %8s %9s %14s %14s %14s %9s %9s %9s\n", "accounts", "load", "prefetch",
           "median_tps", "min_tps", "max_tps", "memory_mb", "B/account", "B/transfer");
    int exit_code = EX_OK;
    for (uint32_t a = 0; a < options.accounts_count && exit_code == EX_OK; a++) {
        uint32_t account_count = options.accounts[a];
        double account_bytes, transfer_bytes;
        memory_per_record(account_count, options.transfers, &account_bytes, &transfer_bytes);
        for (int hot = 0; hot <= 1 && exit_code == EX_OK; hot++) {
            if (options.hot != -1 && options.hot != hot) continue;
            for (int prefetch = 1; prefetch >= 0 && exit_code == EX_OK; prefetch--) {
                if (options.prefetch != -1 && options.prefetch != prefetch) continue;
                uint32_t distance = prefetch ? options.prefetch_distance : 0;
                double rates[BENCH_RUNS_MAX];
                sz_ledger_stats_t stats = {0};
                for (uint32_t run = 0; run < options.runs; run++) {
                    rates[run] = bench_run(&options, account_count, hot, distance,
                                           options.seed + run, events, results, &stats);
                    if (rates[run] < 0) {
                        fprintf(stderr, "bench core: run failed (see the line above, or out of memory)\n");
                        exit_code = EX_SOFTWARE;
                        break;
                    }
                }
                if (exit_code != EX_OK) break;
                qsort(rates, options.runs, sizeof(double), compare_double);
                printf("%10u %8s %9u %14.0f %14.0f %14.0f %9.0f %9.1f %9.1f\n", account_count,
                       hot ? "hot" : "uniform", distance, rates[options.runs / 2], rates[0],
                       rates[options.runs - 1], (double)stats.memory_size / (1024.0 * 1024.0),
                       account_bytes, transfer_bytes);
                fflush(stdout);
            }
        }
    }
    free(events);
    free(results);
    return exit_code;
}

int sz_command_bench(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "core") == 0) return sz_command_bench_core(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "journal") == 0) return sz_command_bench_journal(argc - 1, argv + 1);
    /* No subcommand: the load generator against a real server (bench_server.c). */
    if (argc < 2 || argv[1][0] == '-') return sz_command_bench_server(argc, argv);
    fprintf(stderr, "usage: sumzero bench [core|journal] [OPTIONS]   (see `sumzero bench --help`)\n");
    return EX_USAGE;
}
