/* bench_projection.c: the projection rate into Postgres. Builds a workload of plain
 * transfers in full batches (8190 events), and either projects it from memory into the
 * Postgres given (--postgres, or one it starts with tests/harness/postgres.sh), printing
 * transfers/s, or writes it as a real journal (--write-journal DIR) for
 * `sumzero project --journal DIR` to project.
 *
 *   bench_projection [--transfers N] [--accounts N] [--postgres CONNINFO]
 *                    [--write-journal DIR] [--batch-rows N] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness/postgres.h"
#include "projection/projector.h"
#include "workload.h"

static uint64_t bench_clock_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

int main(int argc, char **argv) {
    uint64_t transfer_count = 2000000;
    uint32_t account_count = 100000;
    uint32_t batch_rows = 0;
    const char *conninfo = NULL;
    const char *journal = NULL;
    static const struct option options_long[] = {
        {"transfers", required_argument, NULL, 't'}, {"accounts", required_argument, NULL, 'a'},
        {"postgres", required_argument, NULL, 'p'}, {"write-journal", required_argument, NULL, 'j'},
        {"batch-rows", required_argument, NULL, 'b'}, {NULL, 0, NULL, 0}};
    int option;
    while ((option = getopt_long(argc, argv, "", options_long, NULL)) != -1) {
        switch (option) {
        case 't': transfer_count = strtoull(optarg, NULL, 10); break;
        case 'a': account_count = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'p': conninfo = optarg; break;
        case 'j': journal = optarg; break;
        case 'b': batch_rows = (uint32_t)strtoul(optarg, NULL, 10); break;
        default: fprintf(stderr, "see the top of bench_projection.c\n"); return 64;
        }
    }
    uint32_t batch_count = (uint32_t)((transfer_count + SZ_BATCH_EVENTS_MAX - 1) / SZ_BATCH_EVENTS_MAX);
    sz_workload_t workload;
    uint64_t started_ns = bench_clock_ns();
    /* Every batch full: batch_events_max is a bound on 1 + random, so pass the size and
     * the random part rarely shortens it; simple mode makes every transfer plain. */
    if (sz_workload_build(&workload, 1, account_count, batch_count, SZ_BATCH_EVENTS_MAX, true) < 0) {
        fprintf(stderr, "bench_projection: out of memory\n");
        return 1;
    }
    fprintf(stderr, "bench_projection: %llu transfer events in %llu ops built in %.1f s\n",
            (unsigned long long)workload.transfer_event_count,
            (unsigned long long)workload.entry_count,
            (double)(bench_clock_ns() - started_ns) / 1e9);
    if (journal != NULL) {
        int result = sz_workload_journal_write(&workload, journal);
        if (result < 0) {
            fprintf(stderr, "bench_projection: writing the journal: %s\n", strerror(-result));
            return 1;
        }
        printf("bench_projection: wrote %llu ops to %s\n", (unsigned long long)workload.entry_count,
               journal);
        sz_workload_free(&workload);
        return 0;
    }
    sz_test_postgres_t postgres = {0};
    if (conninfo == NULL) {
        int result = sz_test_postgres_start(&postgres);
        if (result != 0) {
            fprintf(stderr, "bench_projection: could not start Postgres (%d)\n", result);
            return result == 77 ? 77 : 1;
        }
        conninfo = postgres.conninfo;
    }
    sz_workload_source_t source;
    sz_workload_source_init(&source, &workload);
    sz_projector_options_t options = {
        .source = &source.source,
        .conninfo = conninfo,
        .ledger = {.accounts_max = account_count + 16, .transfers_max = (uint32_t)transfer_count + 16384,
                   .pending_max = 1u << 15, .history_max = 1u << 15},
        .batch_rows_max = batch_rows,
        .log = stderr,
    };
    sz_projector_stats_t stats;
    char error[512];
    int result = sz_projector_run(&options, &stats, error, sizeof(error));
    if (result != 0) fprintf(stderr, "bench_projection: %s\n", error);
    double seconds = (double)stats.write_ns / 1e9;
    printf("bench_projection: transfers=%llu lines=%llu transactions=%llu seconds=%.2f "
           "transfers_per_second=%.0f\n",
           (unsigned long long)stats.transfer_count, (unsigned long long)stats.line_count,
           (unsigned long long)stats.batch_count, seconds,
           seconds > 0 ? (double)stats.transfer_count / seconds : 0.0);
    sz_test_postgres_remove(&postgres);
    sz_workload_free(&workload);
    return result == 0 ? 0 : 1;
}
