/* replay.c: `sumzero replay DIR`: rebuilds the state from the journal alone (disaster
 * recovery, audits, point-in-time views) and prints what it applied, the state digest and
 * the time taken; --verify also checks the ledger's invariants. */
#include <getopt.h>

#include "commands.h"
#include "journal/replay.h"
#include "journal_tool.h"

typedef struct replay_arguments {
    sz_replay_options_t options;
    sz_ledger_config_t config;
    bool verify;
    const char *directory;
} replay_arguments_t;

static void replay_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero replay [OPTIONS] DIR\n"
            "  applies every op of DIR's journal to a fresh ledger and prints the digest\n"
            "  --until-op N         stop after op N\n"
            "  --until-timestamp T  stop before the first op stamped after T (ns)\n"
            "  --verify             check the ledger invariants; exit 65 on a violation\n"
            "  --accounts-max N     capacities (env SUMZERO_ACCOUNTS_MAX ...; defaults\n"
            "  --transfers-max N      1Mi accounts, 16Mi transfers, 1Mi pending, 1Mi history;\n"
            "  --pending-max N        memory is reserved, touched only as it fills)\n"
            "  --history-max N\n"
            "exit: 0 ok, 64 usage, 65 corrupt journal or invariant violation, 66 not formatted,\n"
            "      74 I/O error, 78 a capacity too small\n");
}

static bool replay_capacity(const char *text, uint32_t *value_out) {
    uint64_t value = 0;
    if (text == NULL) return true;
    if (!journal_tool_u64(text, &value) || value == 0 || value > SZ_LEDGER_CAPACITY_MAX) {
        return false;
    }
    *value_out = (uint32_t)value;
    return true;
}

static int replay_parse(int argc, char **argv, replay_arguments_t *arguments) {
    static const struct option long_options[] = {
        {"until-op", required_argument, NULL, 'o'},
        {"until-timestamp", required_argument, NULL, 't'},
        {"verify", no_argument, NULL, 'v'},
        {"accounts-max", required_argument, NULL, 'a'},
        {"transfers-max", required_argument, NULL, 'T'},
        {"pending-max", required_argument, NULL, 'p'},
        {"history-max", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *capacities[4] = {getenv("SUMZERO_ACCOUNTS_MAX"), getenv("SUMZERO_TRANSFERS_MAX"),
                                 getenv("SUMZERO_PENDING_MAX"), getenv("SUMZERO_HISTORY_MAX")};
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (option) {
        case 'o':
        case 't': {
            uint64_t *target = option == 'o' ? &arguments->options.until_op
                                             : &arguments->options.until_timestamp;
            if (!journal_tool_u64(optarg, target) || *target == 0) {
                fprintf(stderr, "sumzero replay: --until-%s takes a positive number, not '%s'\n",
                        option == 'o' ? "op" : "timestamp", optarg);
                return EX_USAGE;
            }
            break;
        }
        case 'v': arguments->verify = true; break;
        case 'a': capacities[0] = optarg; break;
        case 'T': capacities[1] = optarg; break;
        case 'p': capacities[2] = optarg; break;
        case 'H': capacities[3] = optarg; break;
        case 'h': replay_usage(stdout); return -1;
        default: replay_usage(stderr); return EX_USAGE;
        }
    }
    uint32_t *targets[4] = {&arguments->config.accounts_max, &arguments->config.transfers_max,
                            &arguments->config.pending_max, &arguments->config.history_max};
    for (uint32_t index = 0; index < 4; index++) {
        if (!replay_capacity(capacities[index], targets[index])) {
            fprintf(stderr, "sumzero replay: capacities take 1..%u, not '%s'\n",
                    SZ_LEDGER_CAPACITY_MAX, capacities[index]);
            return EX_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "sumzero replay: expected exactly one data directory; see --help\n");
        return EX_USAGE;
    }
    arguments->directory = argv[optind];
    return EX_OK;
}

static void replay_print(const sz_ledger_t *ledger, const sz_replay_stats_t *stats,
                         uint64_t elapsed_ns) {
    sz_digest_t digest = sz_ledger_digest(ledger);
    sz_ledger_stats_t ledger_stats;
    sz_ledger_stats(ledger, &ledger_stats);
    double seconds = (double)elapsed_ns / 1e9;
    printf("replay: ops=%llu op_last=%llu timestamp_last=%llu\n",
           (unsigned long long)stats->op_count, (unsigned long long)stats->op_last,
           (unsigned long long)stats->timestamp_last);
    printf("replay: transfers_applied=%llu transfer_events=%llu transfer_events_failed=%llu "
           "account_events=%llu expired=%llu accounts=%llu\n",
           (unsigned long long)ledger_stats.transfer_count,
           (unsigned long long)stats->transfer_event_count,
           (unsigned long long)stats->transfer_failed_count,
           (unsigned long long)stats->account_event_count,
           (unsigned long long)stats->expired_count,
           (unsigned long long)ledger_stats.account_count);
    printf("replay: digest=%016llx%016llx\n", (unsigned long long)digest.high,
           (unsigned long long)digest.low);
    printf("replay: seconds=%.3f transfer_events_per_second=%.0f\n", seconds,
           seconds > 0 ? (double)stats->transfer_event_count / seconds : 0.0);
}

int sz_command_replay(int argc, char **argv) {
    replay_arguments_t arguments = {
        .config = {.accounts_max = 1u << 20, .transfers_max = 1u << 24,
                   .pending_max = 1u << 20, .history_max = 1u << 20, .hash_seed = 0},
    };
    int parsed = replay_parse(argc, argv, &arguments);
    if (parsed != EX_OK) return parsed < 0 ? EX_OK : parsed;
    sz_ledger_t *ledger = NULL;
    int result = sz_ledger_init(&arguments.config, &ledger);
    if (result < 0) {
        fprintf(stderr, "sumzero replay: cannot reserve the ledger's memory: %s; lower the "
                        "capacities\n", strerror(-result));
        return EX_OSERR;
    }
    sz_storage_t *storage = NULL;
    int code = journal_tool_storage("replay", arguments.directory, &storage);
    if (code != EX_OK) {
        sz_ledger_deinit(ledger);
        return code;
    }
    sz_replay_stats_t stats;
    sz_journal_problem_t problem;
    uint64_t start_ns = journal_tool_clock_ns();
    result = sz_replay_run(storage, &arguments.options, ledger, &stats, &problem);
    uint64_t elapsed_ns = journal_tool_clock_ns() - start_ns;
    sz_storage_deinit(storage);
    if (result < 0) {
        if (result == -ENOSPC) {
            fprintf(stderr, "sumzero replay: a capacity is too small for this journal: raise "
                            "the --*-max flag named below\n");
        }
        code = journal_tool_fail("replay", arguments.directory, result, &problem);
        sz_ledger_deinit(ledger);
        return code;
    }
    replay_print(ledger, &stats, elapsed_ns);
    code = EX_OK;
    if (arguments.verify) {
        char message[256] = "";
        if (sz_ledger_verify(ledger, message, sizeof(message)) != 0) {
            fprintf(stderr, "sumzero replay: invariant violated after op %llu: %s\n",
                    (unsigned long long)stats.op_last, message);
            code = EX_DATAERR;
        } else {
            printf("replay: verify=ok\n");
        }
    }
    sz_ledger_deinit(ledger);
    return code;
}
