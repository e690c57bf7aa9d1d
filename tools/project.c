/* project.c: `sumzero project`: the projector. Follows a server's committed ops (--address)
 * or reads a journal directory (--journal), keeps its own ledger, and writes Postgres (and
 * Kafka with --kafka-brokers); --verify compares Postgres with the ledger instead.
 * docs/PROJECTION.md describes the tables; projection/projector.h the guarantees. */
#include <getopt.h>
#include <signal.h>

#include "commands.h"
#include "journal_tool.h"
#include "projection/projector.h"

/* Enough for any client setting an operator needs (security, timeouts, batching). */
#define PROJECT_KAFKA_PROPERTIES_MAX 32

typedef struct project_arguments {
    const char *address;
    const char *journal;
    const char *conninfo;
    const char *kafka_brokers;
    const char *kafka_topic;
    const char *kafka_rejected_topic;
    sz_kafka_key_t kafka_key;
    /* --kafka-property NAME=VALUE, in order, NULL-terminated. */
    const char *kafka_properties[PROJECT_KAFKA_PROPERTIES_MAX + 1];
    uint32_t kafka_property_count;
    sz_u128 cluster_id;
    bool verify;
    bool follow;
    sz_projector_options_t options;
} project_arguments_t;

static volatile sig_atomic_t project_stop = 0;

static void project_on_signal(int signal_number) {
    (void)signal_number;
    project_stop = 1;
}

static void project_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero project (--address HOST:PORT | --journal DIR) [OPTIONS]\n"
            "  projects the ledger's committed ops into Postgres (docs/PROJECTION.md)\n"
            "  --address HOST:PORT     follow a running server's committed ops\n"
            "  --cluster ID            the server's cluster id (with --address; default 0)\n"
            "  --journal DIR           read DIR's journal (ends at its end; see --follow)\n"
            "  --follow                with --journal: keep reading as the journal grows\n"
            "                          (entries are taken once on disk: only for a journal\n"
            "                          whose server runs on this machine and never loses\n"
            "                          power mid-write; --address is the safe way to follow)\n"
            "  --postgres CONNINFO     libpq connection string or URI (env SUMZERO_POSTGRES)\n"
            "  --kafka-brokers LIST    also send one event per transfer to Kafka\n"
            "  --kafka-topic NAME      default sumzero.transfers\n"
            "  --kafka-rejected-topic NAME  also send rejected events there\n"
            "  --kafka-key KEY         transfer (default), debit or credit: the account id key\n"
            "  --kafka-property NAME=VALUE  a librdkafka producer setting (repeatable; applied\n"
            "                          after the sink's own, e.g. security.protocol=ssl)\n"
            "  --verify                compare Postgres with the ledger rebuilt up to the\n"
            "                          projector's position; exit 1 on a mismatch\n"
            "  --batch-rows N          rows per Postgres transaction at most (default %u)\n"
            "  --batch-ms N            a transaction at least this often (default %u)\n"
            "  --accounts-max N        the projector ledger's capacities: at least the\n"
            "  --transfers-max N         server's (env SUMZERO_ACCOUNTS_MAX ...; defaults as\n"
            "  --pending-max N           `sumzero start`'s: 1Mi, 16Mi, 1Mi, 1Mi)\n"
            "  --history-max N\n"
            "SIGINT/SIGTERM: commits what it has and stops.\n"
            "exit: 0 ok, 1 verify found a mismatch, 64 usage, 65 bad journal data or a\n"
            "      database of another journal, 69 Postgres or the server unavailable,\n"
            "      74 I/O error, 78 a capacity too small\n",
            SZ_PROJECTOR_BATCH_ROWS_DEFAULT, SZ_PROJECTOR_BATCH_MS_DEFAULT);
}

static bool project_u32(const char *text, uint32_t minimum, uint32_t maximum, uint32_t *out) {
    uint64_t value = 0;
    if (!journal_tool_u64(text, &value) || value < minimum || value > maximum) return false;
    *out = (uint32_t)value;
    return true;
}

static int project_kafka_key(const char *text, sz_kafka_key_t *key_out) {
    if (strcmp(text, "transfer") == 0) *key_out = SZ_KAFKA_KEY_TRANSFER_ID;
    else if (strcmp(text, "debit") == 0) *key_out = SZ_KAFKA_KEY_DEBIT_ACCOUNT_ID;
    else if (strcmp(text, "credit") == 0) *key_out = SZ_KAFKA_KEY_CREDIT_ACCOUNT_ID;
    else return -EINVAL;
    return 0;
}

static int project_capacities(const char *capacities[4], sz_ledger_config_t *ledger) {
    uint32_t *targets[4] = {&ledger->accounts_max, &ledger->transfers_max, &ledger->pending_max,
                            &ledger->history_max};
    for (uint32_t index = 0; index < 4; index++) {
        if (capacities[index] == NULL) continue;
        if (!project_u32(capacities[index], 1, SZ_LEDGER_CAPACITY_MAX, targets[index])) {
            fprintf(stderr, "sumzero project: capacities take 1..%u, not '%s'\n",
                    SZ_LEDGER_CAPACITY_MAX, capacities[index]);
            return EX_USAGE;
        }
    }
    return EX_OK;
}

static int project_parse(int argc, char **argv, project_arguments_t *arguments) {
    enum { ADDRESS = 256, CLUSTER, JOURNAL, FOLLOW, POSTGRES, BROKERS, TOPIC, REJECTED, KEY,
           PROPERTY, VERIFY, BATCH_ROWS, BATCH_MS, ACCOUNTS, TRANSFERS, PENDING, HISTORY, HELP };
    static const struct option long_options[] = {
        {"address", required_argument, NULL, ADDRESS},
        {"cluster", required_argument, NULL, CLUSTER},
        {"journal", required_argument, NULL, JOURNAL},
        {"follow", no_argument, NULL, FOLLOW},
        {"postgres", required_argument, NULL, POSTGRES},
        {"kafka-brokers", required_argument, NULL, BROKERS},
        {"kafka-topic", required_argument, NULL, TOPIC},
        {"kafka-rejected-topic", required_argument, NULL, REJECTED},
        {"kafka-key", required_argument, NULL, KEY},
        {"kafka-property", required_argument, NULL, PROPERTY},
        {"verify", no_argument, NULL, VERIFY},
        {"batch-rows", required_argument, NULL, BATCH_ROWS},
        {"batch-ms", required_argument, NULL, BATCH_MS},
        {"accounts-max", required_argument, NULL, ACCOUNTS},
        {"transfers-max", required_argument, NULL, TRANSFERS},
        {"pending-max", required_argument, NULL, PENDING},
        {"history-max", required_argument, NULL, HISTORY},
        {"help", no_argument, NULL, HELP},
        {NULL, 0, NULL, 0},
    };
    const char *capacities[4] = {getenv("SUMZERO_ACCOUNTS_MAX"), getenv("SUMZERO_TRANSFERS_MAX"),
                                 getenv("SUMZERO_PENDING_MAX"), getenv("SUMZERO_HISTORY_MAX")};
    arguments->conninfo = getenv("SUMZERO_POSTGRES");
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (option) {
        case ADDRESS: arguments->address = optarg; break;
        case CLUSTER:
            if (sz_u128_parse(optarg, &arguments->cluster_id) < 0) {
                fprintf(stderr, "sumzero project: --cluster takes a u128, not '%s'\n", optarg);
                return EX_USAGE;
            }
            break;
        case JOURNAL: arguments->journal = optarg; break;
        case FOLLOW: arguments->follow = true; break;
        case POSTGRES: arguments->conninfo = optarg; break;
        case BROKERS: arguments->kafka_brokers = optarg; break;
        case TOPIC: arguments->kafka_topic = optarg; break;
        case REJECTED: arguments->kafka_rejected_topic = optarg; break;
        case KEY:
            if (project_kafka_key(optarg, &arguments->kafka_key) < 0) {
                fprintf(stderr, "sumzero project: --kafka-key is transfer, debit or credit, "
                                "not '%s'\n", optarg);
                return EX_USAGE;
            }
            break;
        case PROPERTY:
            if (strchr(optarg, '=') == NULL || optarg[0] == '=' ||
                arguments->kafka_property_count == PROJECT_KAFKA_PROPERTIES_MAX) {
                fprintf(stderr, "sumzero project: --kafka-property takes NAME=VALUE (at most "
                                "%u of them)\n", PROJECT_KAFKA_PROPERTIES_MAX);
                return EX_USAGE;
            }
            arguments->kafka_properties[arguments->kafka_property_count++] = optarg;
            break;
        case VERIFY: arguments->verify = true; break;
        case BATCH_ROWS:
        case BATCH_MS: {
            uint32_t *target = option == BATCH_ROWS ? &arguments->options.batch_rows_max
                                                    : &arguments->options.batch_ms_max;
            if (!project_u32(optarg, 1, 1u << 30, target)) {
                fprintf(stderr, "sumzero project: --batch-%s takes a positive number, not '%s'\n",
                        option == BATCH_ROWS ? "rows" : "ms", optarg);
                return EX_USAGE;
            }
            break;
        }
        case ACCOUNTS: capacities[0] = optarg; break;
        case TRANSFERS: capacities[1] = optarg; break;
        case PENDING: capacities[2] = optarg; break;
        case HISTORY: capacities[3] = optarg; break;
        case HELP: project_usage(stdout); return -1;
        default: project_usage(stderr); return EX_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "sumzero project: unexpected argument '%s'; see --help\n", argv[optind]);
        return EX_USAGE;
    }
    if ((arguments->address == NULL) == (arguments->journal == NULL)) {
        fprintf(stderr, "sumzero project: give exactly one of --address HOST:PORT and "
                        "--journal DIR\n");
        return EX_USAGE;
    }
    if (arguments->conninfo == NULL) {
        fprintf(stderr, "sumzero project: no Postgres: give --postgres CONNINFO or set "
                        "SUMZERO_POSTGRES\n");
        return EX_USAGE;
    }
    if (arguments->kafka_brokers == NULL &&
        (arguments->kafka_topic != NULL || arguments->kafka_rejected_topic != NULL ||
         arguments->kafka_property_count > 0)) {
        fprintf(stderr, "sumzero project: --kafka-topic, --kafka-rejected-topic and "
                        "--kafka-property need --kafka-brokers\n");
        return EX_USAGE;
    }
    return project_capacities(capacities, &arguments->options.ledger);
}

static int project_open_source(const project_arguments_t *arguments, sz_source_t **source_out) {
    char error[512] = {0};
    int result = -ENOTSUP;
    if (arguments->journal != NULL) {
        result = sz_source_journal_open(arguments->journal, 1, source_out, error, sizeof(error));
    } else {
        sz_source_server_options_t options = {.address = arguments->address,
                                              .cluster_id = arguments->cluster_id,
                                              .op_from = 1};
        result = sz_source_server_open(&options, source_out, error, sizeof(error));
    }
    if (result < 0) {
        fprintf(stderr, "sumzero project: %s\n", error);
        if (result == -ENOENT) return EX_NOINPUT;
        if (result == -EUCLEAN) return EX_DATAERR;
        if (result == -EPROTO) return EX_DATAERR;
        return arguments->address != NULL ? EX_UNAVAILABLE : EX_IOERR;
    }
    return EX_OK;
}

static int project_exit_code(int result) {
    switch (result) {
    case 0: return EX_OK;
    case -EUCLEAN:
    case -ESTALE: return EX_DATAERR;
    case -ENOSPC: return EX_CONFIG;
    case -ENOTCONN:
    case -ENOTSUP: return EX_UNAVAILABLE;
    default: return EX_IOERR;
    }
}

static void project_print(const sz_projector_stats_t *stats) {
    double seconds = (double)stats->write_ns / 1e9;
    printf("project: resumed_after_op=%llu position=%llu ops_written=%llu transfers=%llu "
           "lines=%llu rejected=%llu expired=%llu transactions=%llu retries=%llu\n",
           (unsigned long long)stats->op_resumed, (unsigned long long)stats->op_position,
           (unsigned long long)stats->op_written_count, (unsigned long long)stats->transfer_count,
           (unsigned long long)stats->line_count, (unsigned long long)stats->rejected_count,
           (unsigned long long)stats->expired_count, (unsigned long long)stats->batch_count,
           (unsigned long long)stats->retry_count);
    printf("project: rebuild_seconds=%.3f write_seconds=%.3f commit_seconds_transfers=%.3f "
           "commit_seconds_entries=%.3f transfers_per_second=%.0f\n",
           (double)stats->rebuild_ns / 1e9, seconds, (double)stats->commit_ns[0] / 1e9,
           (double)stats->commit_ns[1] / 1e9,
           seconds > 0 ? (double)stats->transfer_count / seconds : 0.0);
}

int sz_command_project(int argc, char **argv) {
    project_arguments_t arguments = {
        .options = {.ledger = {.accounts_max = 1u << 20, .transfers_max = 1u << 24,
                               .pending_max = 1u << 20, .history_max = 1u << 20}},
    };
    int parsed = project_parse(argc, argv, &arguments);
    if (parsed != EX_OK) return parsed < 0 ? EX_OK : parsed;
    sz_source_t *source = NULL;
    int code = project_open_source(&arguments, &source);
    if (code != EX_OK) return code;
    sz_projector_options_t *options = &arguments.options;
    options->source = source;
    options->conninfo = arguments.conninfo;
    options->follow = arguments.follow || arguments.address != NULL;
    options->stop = &project_stop;
    options->log = stderr;
    sz_kafka_config_t kafka = {
        .brokers = arguments.kafka_brokers,
        .topic = arguments.kafka_topic != NULL ? arguments.kafka_topic : "sumzero.transfers",
        .rejected_topic = arguments.kafka_rejected_topic,
        .key = arguments.kafka_key,
        .properties = arguments.kafka_properties,
    };
    if (arguments.kafka_brokers != NULL) options->kafka = &kafka;
    struct sigaction action = {.sa_handler = project_on_signal};
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    char error[512] = {0};
    int result;
    if (arguments.verify) {
        result = sz_projector_verify(options, stdout, error, sizeof(error));
        if (result == 1) {
            sz_source_close(source);
            return 1;
        }
    } else {
        sz_projector_stats_t stats;
        result = sz_projector_run(options, &stats, error, sizeof(error));
        project_print(&stats);
    }
    sz_source_close(source);
    if (result < 0) fprintf(stderr, "sumzero project: %s\n", error);
    return project_exit_code(result);
}
