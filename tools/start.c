/* start.c: `sumzero start`: the server. Formats the data directory if it is new, recovers
 * the state (the newest valid snapshot in DATA/snapshots, then the journal after it), then
 * runs the two threads of DESIGN.md: the gateway thread (sockets, frames, metrics) and the
 * ledger thread (sequence, journal, apply, reply, snapshots).
 * SIGTERM and SIGINT drain: no new requests are read, everything already taken is
 * answered, the journal is flushed, and the process exits 0. SIGUSR1 takes a snapshot.
 * DATA/pid holds the server's pid while it runs (`sumzero snapshot` signals it). */
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "gateway/gateway.h"
#include "journal_tool.h"
#include "replica/replica.h"
#include "snapshot/snapshot.h"

/* Messages in flight between the threads; the rings hold all of them at once, so a push
 * never fails. 1024 messages would be 2 GiB of buffers: far past any useful pipeline. */
#define START_RING_CAPACITY 1024u
#define START_PID_NAME "pid"

typedef struct start_arguments {
    const char *directory;
    const char *address;
    const char *metrics_address;
    sz_u128 cluster_id;    /* only when formatting */
    uint64_t segment_size; /* only when formatting; 0 for the default */
    sz_ledger_config_t ledger;
    sz_gateway_config_t gateway;
    uint32_t clients_max;
    sz_replica_snapshots_t snapshots; /* its fds are opened by start_snapshots() */
    const char *archive_directory;
    uint32_t subscribers_max; /* subscriptions (helper stream) */
} start_arguments_t;

/* The flags that take a number: name, environment variable, where it goes, its limits. */
typedef struct start_number {
    const char *name;
    const char *environment;
    uint64_t minimum;
    uint64_t maximum;
    uint64_t scale; /* flag unit to field unit (ms to ns) */
} start_number_t;

enum {
    NUMBER_ACCOUNTS_MAX,
    NUMBER_TRANSFERS_MAX,
    NUMBER_PENDING_MAX,
    NUMBER_HISTORY_MAX,
    NUMBER_CONNECTIONS_MAX,
    NUMBER_CLIENTS_MAX,
    NUMBER_MESSAGES_MAX,
    NUMBER_PIPELINE_MAX,
    NUMBER_REQUESTS_PER_SECOND,
    NUMBER_EVENTS_PER_SECOND,
    NUMBER_IDLE_TIMEOUT_MS,
    NUMBER_SNAPSHOT_EVERY_OPS,
    NUMBER_SNAPSHOT_EVERY_SECONDS,
    NUMBER_SNAPSHOT_KEEP,
    NUMBER_SNAPSHOT_RATE_MIB,
    NUMBER_SUBSCRIBERS_MAX, /* subscriptions (helper stream) */
    NUMBER_COUNT,
};

static const start_number_t start_numbers[NUMBER_COUNT] = {
    [NUMBER_ACCOUNTS_MAX] = {"accounts-max", "SUMZERO_ACCOUNTS_MAX", 1, SZ_LEDGER_CAPACITY_MAX, 1},
    [NUMBER_TRANSFERS_MAX] = {"transfers-max", "SUMZERO_TRANSFERS_MAX", 1, SZ_LEDGER_CAPACITY_MAX, 1},
    [NUMBER_PENDING_MAX] = {"pending-max", "SUMZERO_PENDING_MAX", 1, SZ_LEDGER_CAPACITY_MAX, 1},
    [NUMBER_HISTORY_MAX] = {"history-max", "SUMZERO_HISTORY_MAX", 1, SZ_LEDGER_CAPACITY_MAX, 1},
    [NUMBER_CONNECTIONS_MAX] = {"connections-max", "SUMZERO_CONNECTIONS_MAX", 1, 1u << 20, 1},
    [NUMBER_CLIENTS_MAX] = {"clients-max", "SUMZERO_CLIENTS_MAX", 1, 1u << 20, 1},
    [NUMBER_MESSAGES_MAX] = {"messages-max", "SUMZERO_MESSAGES_MAX", 2, START_RING_CAPACITY, 1},
    [NUMBER_PIPELINE_MAX] = {"pipeline-max", "SUMZERO_PIPELINE_MAX", 1, START_RING_CAPACITY, 1},
    [NUMBER_REQUESTS_PER_SECOND] = {"requests-per-second", "SUMZERO_REQUESTS_PER_SECOND", 0,
                                    UINT32_MAX, 1},
    [NUMBER_EVENTS_PER_SECOND] = {"events-per-second", "SUMZERO_EVENTS_PER_SECOND", 0,
                                  UINT64_MAX / 2, 1},
    [NUMBER_IDLE_TIMEOUT_MS] = {"idle-timeout-ms", "SUMZERO_IDLE_TIMEOUT_MS", 1,
                                UINT64_MAX / 1000000, 1000000},
    [NUMBER_SNAPSHOT_EVERY_OPS] = {"snapshot-every-ops", "SUMZERO_SNAPSHOT_EVERY_OPS", 0,
                                   UINT64_MAX / 2, 1},
    [NUMBER_SNAPSHOT_EVERY_SECONDS] = {"snapshot-every-seconds", "SUMZERO_SNAPSHOT_EVERY_SECONDS",
                                       0, 1000000000, 1000000000},
    [NUMBER_SNAPSHOT_KEEP] = {"snapshot-keep", "SUMZERO_SNAPSHOT_KEEP", 1, 1000, 1},
    [NUMBER_SNAPSHOT_RATE_MIB] = {"snapshot-rate-mib", "SUMZERO_SNAPSHOT_RATE_MIB", 0, 1u << 20,
                                  1u << 20},
    [NUMBER_SUBSCRIBERS_MAX] = {"subscribers-max", "SUMZERO_SUBSCRIBERS_MAX", 1,
                                SZ_STREAM_SUBSCRIBERS_MAX, 1},
};

static void start_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero start [OPTIONS]\n"
            "  runs the server; formats the data directory first if it is new\n"
            "  --data DIR               data directory (env SUMZERO_DATA; default ./data)\n"
            "  --address HOST:PORT      client address (env SUMZERO_ADDRESS; default 127.0.0.1:3000)\n"
            "  --metrics-address HOST:PORT|none\n"
            "                           Prometheus /metrics (env SUMZERO_METRICS_ADDRESS;\n"
            "                           default 127.0.0.1:9100)\n"
            "  --cluster ID             cluster id when formatting a new directory (env\n"
            "                           SUMZERO_CLUSTER; default 0); clients must send it\n"
            "  --segment-size BYTES     journal segment size when formatting, a multiple of\n"
            "                           4096 (env SUMZERO_SEGMENT_SIZE; default 1 GiB)\n"
            "  --accounts-max N         ledger capacities (env SUMZERO_ACCOUNTS_MAX ...;\n"
            "  --transfers-max N          defaults 1Mi accounts, 16Mi transfers, 1Mi pending\n"
            "  --pending-max N            with a timeout, 1Mi history rows); the memory is\n"
            "  --history-max N            reserved and touched at start\n"
            "  --prefault yes|no        touch every page at start so no batch waits on a page\n"
            "                           fault (env SUMZERO_PREFAULT; default yes)\n"
            "  --connections-max N      client connections at once (env SUMZERO_CONNECTIONS_MAX;\n"
            "                           default 1024)\n"
            "  --clients-max N          clients whose last reply is kept for retries (env\n"
            "                           SUMZERO_CLIENTS_MAX; default 1024)\n"
            "  --messages-max N         requests in the server at once, 2..%u (env\n"
            "                           SUMZERO_MESSAGES_MAX; default 64; 2 MiB each)\n"
            "  --pipeline-max N         requests in flight per connection (env\n"
            "                           SUMZERO_PIPELINE_MAX; default 8)\n"
            "  --requests-per-second N  per connection, 0 for no limit (env\n"
            "                           SUMZERO_REQUESTS_PER_SECOND; default 0)\n"
            "  --events-per-second N    per connection, 0 for no limit (env\n"
            "                           SUMZERO_EVENTS_PER_SECOND; default 0)\n"
            "  --idle-timeout-ms N      close connections idle this long (env\n"
            "                           SUMZERO_IDLE_TIMEOUT_MS; default 300000)\n"
            "  --subscribers-max N      subscriptions to the committed stream at once (env\n"
            "                           SUMZERO_SUBSCRIBERS_MAX; default 16)\n"
            "  --snapshot-every-seconds T  snapshot when T seconds passed since the last one\n"
            "                           and an op was applied since, 0 for never (env\n"
            "                           SUMZERO_SNAPSHOT_EVERY_SECONDS; default 60)\n"
            "  --snapshot-every-ops N   snapshot every N ops, 0 for never (env\n"
            "                           SUMZERO_SNAPSHOT_EVERY_OPS; default 0)\n"
            "  --snapshot-keep K        snapshots kept in DATA/snapshots (env\n"
            "                           SUMZERO_SNAPSHOT_KEEP; default 3)\n"
            "  --snapshot-rate-mib R    the snapshot is written at most at R MiB/s, 0 for as\n"
            "                           fast as the disk goes (env SUMZERO_SNAPSHOT_RATE_MIB;\n"
            "                           default 400): the journal's flushes do not wait behind it\n"
            "  --journal-retention keep|archive|delete\n"
            "                           journal segments wholly before the oldest snapshot kept\n"
            "                           (env SUMZERO_JOURNAL_RETENTION; default keep)\n"
            "  --journal-archive DIR    where archive moves them (env SUMZERO_JOURNAL_ARCHIVE)\n"
            "  SIGUSR1 (or `sumzero snapshot`) takes a snapshot now\n"
            "exit: 0 stopped by SIGTERM/SIGINT, 64 usage, 65 corrupt journal (or a snapshot past\n"
            "      the journal's end), 69 address in use,\n"
            "      74 I/O error, 75 data directory locked, 78 a capacity too small\n",
            START_RING_CAPACITY);
}

static int start_number_set(start_arguments_t *arguments, uint32_t number, uint64_t value) {
    switch (number) {
    case NUMBER_ACCOUNTS_MAX: arguments->ledger.accounts_max = (uint32_t)value; break;
    case NUMBER_TRANSFERS_MAX: arguments->ledger.transfers_max = (uint32_t)value; break;
    case NUMBER_PENDING_MAX: arguments->ledger.pending_max = (uint32_t)value; break;
    case NUMBER_HISTORY_MAX: arguments->ledger.history_max = (uint32_t)value; break;
    case NUMBER_CONNECTIONS_MAX: arguments->gateway.connections_max = (uint32_t)value; break;
    case NUMBER_CLIENTS_MAX: arguments->clients_max = (uint32_t)value; break;
    case NUMBER_MESSAGES_MAX: arguments->gateway.messages_max = (uint32_t)value; break;
    case NUMBER_PIPELINE_MAX: arguments->gateway.pipeline_max = (uint32_t)value; break;
    case NUMBER_REQUESTS_PER_SECOND: arguments->gateway.requests_per_second_max = value; break;
    case NUMBER_EVENTS_PER_SECOND: arguments->gateway.events_per_second_max = value; break;
    case NUMBER_IDLE_TIMEOUT_MS: arguments->gateway.idle_timeout_ns = value; break;
    case NUMBER_SNAPSHOT_EVERY_OPS: arguments->snapshots.every_ops = value; break;
    case NUMBER_SNAPSHOT_EVERY_SECONDS: arguments->snapshots.every_ns = value; break;
    case NUMBER_SNAPSHOT_KEEP: arguments->snapshots.keep_count = (uint32_t)value; break;
    case NUMBER_SNAPSHOT_RATE_MIB: arguments->snapshots.rate_bytes_per_s = value; break;
    case NUMBER_SUBSCRIBERS_MAX: arguments->subscribers_max = (uint32_t)value; break;
    default: SZ_ASSERT(false);
    }
    return EX_OK;
}

static int start_number_parse(start_arguments_t *arguments, uint32_t number, const char *text) {
    SZ_ASSERT(number < NUMBER_COUNT);
    const start_number_t *spec = &start_numbers[number];
    uint64_t value = 0;
    if (!journal_tool_u64(text, &value) || value < spec->minimum || value > spec->maximum) {
        fprintf(stderr, "sumzero start: --%s takes a whole number from %llu to %llu, not '%s'\n",
                spec->name, (unsigned long long)spec->minimum,
                (unsigned long long)spec->maximum, text);
        return EX_USAGE;
    }
    return start_number_set(arguments, number, value * spec->scale);
}

static int start_prefault_parse(start_arguments_t *arguments, const char *text) {
    if (strcmp(text, "yes") == 0) {
        arguments->ledger.prefault = true;
    } else if (strcmp(text, "no") == 0) {
        arguments->ledger.prefault = false;
    } else {
        fprintf(stderr, "sumzero start: --prefault takes yes or no, not '%s'\n", text);
        return EX_USAGE;
    }
    return EX_OK;
}

static int start_retention_parse(start_arguments_t *arguments, const char *text) {
    if (strcmp(text, "keep") == 0) {
        arguments->snapshots.retention = SZ_REPLICA_RETENTION_KEEP;
    } else if (strcmp(text, "archive") == 0) {
        arguments->snapshots.retention = SZ_REPLICA_RETENTION_ARCHIVE;
    } else if (strcmp(text, "delete") == 0) {
        arguments->snapshots.retention = SZ_REPLICA_RETENTION_DELETE;
    } else {
        fprintf(stderr, "sumzero start: --journal-retention takes keep, archive or delete, "
                        "not '%s'\n", text);
        return EX_USAGE;
    }
    return EX_OK;
}

/* Environment first, then flags, so a flag always wins. */
static int start_parse(int argc, char **argv, start_arguments_t *arguments) {
    enum { OPTION_DATA = 256, OPTION_ADDRESS, OPTION_METRICS, OPTION_CLUSTER, OPTION_PREFAULT,
           OPTION_SEGMENT_SIZE, OPTION_RETENTION, OPTION_ARCHIVE, OPTION_NUMBER };
    struct option long_options[NUMBER_COUNT + 10];
    uint32_t option_count = 0;
    long_options[option_count++] = (struct option){"data", required_argument, NULL, OPTION_DATA};
    long_options[option_count++] =
        (struct option){"address", required_argument, NULL, OPTION_ADDRESS};
    long_options[option_count++] =
        (struct option){"metrics-address", required_argument, NULL, OPTION_METRICS};
    long_options[option_count++] =
        (struct option){"cluster", required_argument, NULL, OPTION_CLUSTER};
    long_options[option_count++] =
        (struct option){"prefault", required_argument, NULL, OPTION_PREFAULT};
    long_options[option_count++] =
        (struct option){"segment-size", required_argument, NULL, OPTION_SEGMENT_SIZE};
    long_options[option_count++] =
        (struct option){"journal-retention", required_argument, NULL, OPTION_RETENTION};
    long_options[option_count++] =
        (struct option){"journal-archive", required_argument, NULL, OPTION_ARCHIVE};
    for (uint32_t number = 0; number < NUMBER_COUNT; number++) {
        long_options[option_count++] = (struct option){
            start_numbers[number].name, required_argument, NULL, OPTION_NUMBER + (int)number};
    }
    long_options[option_count++] = (struct option){"help", no_argument, NULL, 'h'};
    long_options[option_count++] = (struct option){NULL, 0, NULL, 0};
    SZ_ASSERT(option_count == NUMBER_COUNT + 10);

    for (uint32_t number = 0; number < NUMBER_COUNT; number++) {
        const char *text = getenv(start_numbers[number].environment);
        if (text != NULL && start_number_parse(arguments, number, text) != EX_OK) return EX_USAGE;
    }
    const char *text = getenv("SUMZERO_PREFAULT");
    if (text != NULL && start_prefault_parse(arguments, text) != EX_OK) return EX_USAGE;
    text = getenv("SUMZERO_JOURNAL_RETENTION");
    if (text != NULL && start_retention_parse(arguments, text) != EX_OK) return EX_USAGE;
    if (getenv("SUMZERO_JOURNAL_ARCHIVE") != NULL) {
        arguments->archive_directory = getenv("SUMZERO_JOURNAL_ARCHIVE");
    }
    const char *cluster = getenv("SUMZERO_CLUSTER");
    const char *segment_size = getenv("SUMZERO_SEGMENT_SIZE");
    if (getenv("SUMZERO_DATA") != NULL) arguments->directory = getenv("SUMZERO_DATA");
    if (getenv("SUMZERO_ADDRESS") != NULL) arguments->address = getenv("SUMZERO_ADDRESS");
    if (getenv("SUMZERO_METRICS_ADDRESS") != NULL) {
        arguments->metrics_address = getenv("SUMZERO_METRICS_ADDRESS");
    }

    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        if (option >= OPTION_NUMBER && option < OPTION_NUMBER + (int)NUMBER_COUNT) {
            if (start_number_parse(arguments, (uint32_t)(option - OPTION_NUMBER), optarg) != EX_OK) {
                return EX_USAGE;
            }
            continue;
        }
        switch (option) {
        case OPTION_DATA: arguments->directory = optarg; break;
        case OPTION_ADDRESS: arguments->address = optarg; break;
        case OPTION_METRICS: arguments->metrics_address = optarg; break;
        case OPTION_CLUSTER: cluster = optarg; break;
        case OPTION_SEGMENT_SIZE: segment_size = optarg; break;
        case OPTION_ARCHIVE: arguments->archive_directory = optarg; break;
        case OPTION_RETENTION:
            if (start_retention_parse(arguments, optarg) != EX_OK) return EX_USAGE;
            break;
        case OPTION_PREFAULT:
            if (start_prefault_parse(arguments, optarg) != EX_OK) return EX_USAGE;
            break;
        case 'h': start_usage(stdout); return -1;
        default: start_usage(stderr); return EX_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "sumzero start: unexpected argument '%s'; see --help\n", argv[optind]);
        return EX_USAGE;
    }
    if (cluster != NULL && sz_u128_parse(cluster, &arguments->cluster_id) != 0) {
        fprintf(stderr, "sumzero start: --cluster takes a u128, not '%s'\n", cluster);
        return EX_USAGE;
    }
    if (segment_size != NULL &&
        (!journal_tool_u64(segment_size, &arguments->segment_size) ||
         arguments->segment_size < SZ_JOURNAL_SEGMENT_SIZE_MIN ||
         arguments->segment_size % SZ_STORAGE_SECTOR_SIZE != 0)) {
        fprintf(stderr, "sumzero start: --segment-size takes a multiple of 4096 of at least %u, "
                        "not '%s'\n", (unsigned)SZ_JOURNAL_SEGMENT_SIZE_MIN, segment_size);
        return EX_USAGE;
    }
    if (arguments->directory[0] == '\0' || arguments->address[0] == '\0') {
        fprintf(stderr, "sumzero start: --data and --address must not be empty\n");
        return EX_USAGE;
    }
    if (strcmp(arguments->metrics_address, "none") == 0) arguments->metrics_address = "";
    const char *archive = arguments->archive_directory;
    if (arguments->snapshots.retention == SZ_REPLICA_RETENTION_ARCHIVE &&
        (archive == NULL || archive[0] == '\0')) {
        fprintf(stderr, "sumzero start: --journal-retention archive needs --journal-archive DIR\n");
        return EX_USAGE;
    }
    return EX_OK;
}

/* Creates and formats the directory when it holds no journal yet; a formatted one is
 * left as it is (its own cluster id wins over --cluster). */
static int start_storage(const start_arguments_t *arguments, sz_storage_t **storage_out) {
    if (mkdir(arguments->directory, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "sumzero start: cannot create data directory %s: %s\n",
                arguments->directory, strerror(errno));
        return EX_CANTCREAT;
    }
    int code = journal_tool_storage("start", arguments->directory, storage_out);
    if (code != EX_OK) return code;
    int result = sz_storage_lock(*storage_out);
    if (result == -EWOULDBLOCK) {
        fprintf(stderr, "sumzero start: %s is locked by another running sumzero\n",
                arguments->directory);
        return EX_TEMPFAIL;
    }
    sz_journal_superblock_t superblock;
    /* Only a directory without a superblock is new: sz_journal_format() would otherwise
     * recreate segment 0 (empty) after retention retired it. */
    if (result == 0 && sz_journal_superblock_read(*storage_out, &superblock, NULL) != -ENOENT) {
        return EX_OK;
    }
    if (result == 0) {
        sz_journal_format_options_t options = {.cluster_id = arguments->cluster_id,
                                               .segment_size = arguments->segment_size};
        result = sz_journal_format(*storage_out, &options);
        if (result == 0) {
            char cluster[SZ_U128_DECIMAL_SIZE];
            fprintf(stderr, "level=info msg=formatted data=%s cluster=%s\n", arguments->directory,
                    sz_u128_format(arguments->cluster_id, cluster));
        }
        if (result == -EEXIST) result = 0;
    }
    if (result < 0) return journal_tool_fail("start", arguments->directory, result, NULL);
    return EX_OK;
}

/* DATA/snapshots (created if missing) for the replica, and the archive directory. */
static int start_snapshots(start_arguments_t *arguments) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", arguments->directory, SZ_SNAPSHOT_DIRECTORY);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "sumzero start: cannot create %s: %s\n", path, strerror(errno));
        return EX_CANTCREAT;
    }
    arguments->snapshots.directory_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (arguments->snapshots.directory_fd < 0) {
        fprintf(stderr, "sumzero start: cannot open %s: %s\n", path, strerror(errno));
        return EX_CANTCREAT;
    }
    if (arguments->snapshots.retention == SZ_REPLICA_RETENTION_KEEP) return EX_OK;
    arguments->snapshots.data_directory_fd =
        open(arguments->directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (arguments->snapshots.data_directory_fd < 0) {
        fprintf(stderr, "sumzero start: cannot open %s: %s\n", arguments->directory,
                strerror(errno));
        return EX_CANTCREAT;
    }
    if (arguments->snapshots.retention != SZ_REPLICA_RETENTION_ARCHIVE) return EX_OK;
    const char *archive = arguments->archive_directory;
    if (mkdir(archive, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "sumzero start: cannot create the journal archive %s: %s\n", archive,
                strerror(errno));
        return EX_CANTCREAT;
    }
    arguments->snapshots.archive_fd = open(archive, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (arguments->snapshots.archive_fd < 0) {
        fprintf(stderr, "sumzero start: cannot open the journal archive %s: %s\n", archive,
                strerror(errno));
        return EX_CANTCREAT;
    }
    return EX_OK;
}

/* DATA/pid: written once the signal handlers are in place, removed at exit. */
static int start_pid_write(const char *directory) {
    char path[4096];
    char temporary[4100];
    snprintf(path, sizeof(path), "%s/%s", directory, START_PID_NAME);
    snprintf(temporary, sizeof(temporary), "%s.tmp", path);
    FILE *file = fopen(temporary, "w");
    if (file == NULL || fprintf(file, "%d\n", (int)getpid()) < 0 || fclose(file) != 0 ||
        rename(temporary, path) != 0) {
        fprintf(stderr, "sumzero start: cannot write %s: %s\n", path, strerror(errno));
        return EX_CANTCREAT;
    }
    return EX_OK;
}

static void start_pid_remove(const char *directory) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", directory, START_PID_NAME);
    (void)unlink(path);
}

/* The signal handlers' only reach into the server: sz_gateway_stop() and
 * sz_replica_snapshot_request() are async-signal-safe. */
static sz_gateway_t *volatile start_signal_gateway;
static sz_replica_t *volatile start_signal_replica;

static void start_on_signal(int signal_number) {
    (void)signal_number;
    sz_gateway_t *gateway = start_signal_gateway;
    if (gateway != NULL) sz_gateway_stop(gateway);
}

static void start_on_snapshot_signal(int signal_number) {
    (void)signal_number;
    sz_replica_t *replica = start_signal_replica;
    if (replica != NULL) sz_replica_snapshot_request(replica);
}

typedef struct start_server {
    sz_ring_t requests;
    sz_ring_t replies;
    sz_metrics_t metrics;
    sz_replica_t *replica;
    sz_gateway_t *gateway;
    int replica_result;
    sz_stream_t *stream; /* subscriptions (helper stream) */
} start_server_t;

static void start_on_replies(void *context) {
    start_server_t *server = context;
    sz_gateway_wake(server->gateway);
}

/* Subscriptions (helper stream): the ledger thread publishes its committed op. */
static void start_on_committed(uint64_t op_committed, void *context) {
    start_server_t *server = context;
    if (server->stream != NULL) sz_stream_publish(server->stream, op_committed);
}

/* Journal retention keeps what subscribers still read. */
static uint64_t start_op_needed(void *context) {
    start_server_t *server = context;
    return server->stream != NULL ? sz_stream_op_needed(server->stream) : UINT64_MAX;
}

static void *start_stream_thread(void *context) {
    start_server_t *server = context;
    int result = sz_stream_run(server->stream);
    if (result < 0) {
        fprintf(stderr, "level=error msg=stream_stopped error=\"%s\"\n", strerror(-result));
    }
    return NULL;
}

static int start_stream(const start_arguments_t *arguments, start_server_t *server) {
    sz_replica_info_t info;
    sz_replica_info(server->replica, &info);
    sz_stream_config_t config = {.cluster_id = info.cluster_id, .directory = arguments->directory,
                                 .archive_directory = arguments->archive_directory,
                                 .subscribers_max = arguments->subscribers_max,
                                 .op_committed = info.op_committed, .metrics = &server->metrics};
    char error[256] = "";
    int result = sz_stream_open(&config, &server->stream, error, sizeof(error));
    if (result < 0) fprintf(stderr, "sumzero start: %s\n", error);
    return result < 0 ? EX_OSERR : EX_OK;
}

static void *start_ledger_thread(void *context) {
    start_server_t *server = context;
    server->replica_result = sz_replica_run(server->replica);
    if (server->replica_result != 0) {
        /* Nothing more can be acknowledged: stop taking requests at once. */
        fprintf(stderr, "level=fatal msg=ledger_stopped error=\"%s\" reason=\"%s\"\n",
                strerror(-server->replica_result), sz_replica_error_message(server->replica));
        sz_gateway_stop(server->gateway);
    }
    return NULL;
}

static int start_signals(void) {
    struct sigaction action = {.sa_handler = start_on_signal};
    sigemptyset(&action.sa_mask);
    struct sigaction ignore = {.sa_handler = SIG_IGN};
    sigemptyset(&ignore.sa_mask);
    if (sigaction(SIGTERM, &action, NULL) != 0 || sigaction(SIGINT, &action, NULL) != 0 ||
        sigaction(SIGPIPE, &ignore, NULL) != 0) {
        fprintf(stderr, "sumzero start: cannot install signal handlers: %s\n", strerror(errno));
        return EX_OSERR;
    }
    return EX_OK;
}

/* From the very start: SIGUSR1's default action would kill a server still recovering. A
 * request before the replica exists is dropped. SA_RESTART: a snapshot request must not
 * fail the system calls it lands in. */
static int start_signal_snapshot(void) {
    struct sigaction snapshot = {.sa_handler = start_on_snapshot_signal, .sa_flags = SA_RESTART};
    sigemptyset(&snapshot.sa_mask);
    if (sigaction(SIGUSR1, &snapshot, NULL) != 0) {
        fprintf(stderr, "sumzero start: cannot install signal handlers: %s\n", strerror(errno));
        return EX_OSERR;
    }
    return EX_OK;
}

static void start_log_recovered(const sz_replica_t *replica, uint64_t duration_ns) {
    sz_replica_info_t info;
    sz_replica_info(replica, &info);
    char cluster[SZ_U128_DECIMAL_SIZE];
    fprintf(stderr,
            "level=info msg=recovered cluster=%s op=%llu accounts=%llu transfers=%llu "
            "digest=%016llx%016llx memory_bytes=%llu snapshot_op=%llu replayed_ops=%llu "
            "snapshot_load_ms=%llu duration_ms=%llu\n",
            sz_u128_format(info.cluster_id, cluster), (unsigned long long)info.op_last,
            (unsigned long long)info.ledger.account_count,
            (unsigned long long)info.ledger.transfer_count,
            (unsigned long long)info.digest.high, (unsigned long long)info.digest.low,
            (unsigned long long)info.ledger.memory_size,
            (unsigned long long)info.snapshot_op_recovered,
            (unsigned long long)info.op_count_replayed,
            (unsigned long long)(info.snapshot_load_ns / 1000000),
            (unsigned long long)(duration_ns / 1000000));
}

static void start_log(const char *line, void *context) {
    (void)context;
    fprintf(stderr, "%s\n", line);
}

/* Opens the ledger thread's side: recovery from the journal. */
static int start_replica(const start_arguments_t *arguments, sz_storage_t *storage,
                         start_server_t *server) {
    sz_replica_config_t config = {
        .ledger = arguments->ledger,
        .storage = storage,
        .clients_max = arguments->clients_max,
        .requests = &server->requests,
        .replies = &server->replies,
        .replies_pushed = start_on_replies,
        .committed = start_on_committed,
        .context = server,
        .metrics = &server->metrics,
        .snapshots = arguments->snapshots,
        .log = start_log,
    };
    config.snapshots.op_needed = start_op_needed;
    config.snapshots.op_needed_context = server;
    sz_journal_problem_t problem = {0};
    uint64_t started_ns = journal_tool_clock_ns();
    int result = sz_replica_open(&config, &server->replica, &problem);
    if (result < 0) return journal_tool_fail("start", arguments->directory, result, &problem);
    start_log_recovered(server->replica, journal_tool_clock_ns() - started_ns);
    return EX_OK;
}

static int start_gateway(const start_arguments_t *arguments, start_server_t *server) {
    sz_replica_info_t info;
    sz_replica_info(server->replica, &info);
    sz_gateway_config_t config = arguments->gateway;
    config.cluster_id = info.cluster_id;
    config.address = arguments->address;
    config.metrics_address = arguments->metrics_address;
    config.requests = &server->requests;
    config.replies = &server->replies;
    config.metrics = &server->metrics;
    config.stream = server->stream;
    char error[256] = "";
    int result = sz_gateway_open(&config, &server->gateway, error, sizeof(error));
    if (result < 0) {
        fprintf(stderr, "sumzero start: %s\n", error[0] != '\0' ? error : strerror(-result));
        return result == -EADDRINUSE ? EX_UNAVAILABLE : EX_OSERR;
    }
    char metrics[64] = "none";
    if (arguments->metrics_address[0] != '\0') {
        snprintf(metrics, sizeof(metrics), "%.*s:%u",
                 (int)(strrchr(arguments->metrics_address, ':') - arguments->metrics_address),
                 arguments->metrics_address, sz_gateway_metrics_port(server->gateway));
    }
    fprintf(stderr, "level=info msg=listening address=%.*s:%u metrics_address=%s\n",
            (int)(strrchr(arguments->address, ':') - arguments->address), arguments->address,
            sz_gateway_port(server->gateway), metrics);
    return EX_OK;
}

/* Runs both threads until a signal (or a journal failure) stops the gateway. */
static int start_serve(start_server_t *server) {
    pthread_t ledger_thread;
    int result = pthread_create(&ledger_thread, NULL, start_ledger_thread, server);
    if (result != 0) {
        fprintf(stderr, "sumzero start: cannot start the ledger thread: %s\n", strerror(result));
        return EX_OSERR;
    }
    pthread_t stream_thread;
    result = pthread_create(&stream_thread, NULL, start_stream_thread, server);
    if (result != 0) {
        fprintf(stderr, "sumzero start: cannot start the stream thread: %s\n", strerror(result));
        sz_gateway_stop(server->gateway);
    }
    int gateway_result = sz_gateway_run(server->gateway);
    sz_replica_stop(server->replica);
    pthread_join(ledger_thread, NULL);
    if (result == 0) {
        sz_stream_stop(server->stream);
        pthread_join(stream_thread, NULL);
    }
    if (gateway_result < 0) {
        fprintf(stderr, "level=fatal msg=gateway_stopped error=\"%s\"\n", strerror(-gateway_result));
        return EX_OSERR;
    }
    if (server->replica_result < 0) return EX_IOERR;
    sz_replica_info_t info;
    sz_replica_info(server->replica, &info);
    fprintf(stderr, "level=info msg=stopped op=%llu digest=%016llx%016llx\n",
            (unsigned long long)info.op_committed, (unsigned long long)info.digest.high,
            (unsigned long long)info.digest.low);
    return EX_OK;
}

int sz_command_start(int argc, char **argv) {
    start_arguments_t arguments = {
        .directory = "data",
        .address = "127.0.0.1:3000",
        .metrics_address = "127.0.0.1:9100",
        .ledger = {.accounts_max = 1u << 20, .transfers_max = 1u << 24, .pending_max = 1u << 20,
                   .history_max = 1u << 20, .prefault = true},
        /* Every minute (when anything changed): the journal tail a restart replays stays
         * at most a minute of load, and writing the whole state that often costs little
         * disk bandwidth; op counts measure work badly (an op holds 1 to 8190 events). */
        /* 400 MiB/s: 3.3 GB (1M accounts, 20M transfers) in ~8 s with the batch p99
         * unchanged; unpaced, the journal's flushes carry the snapshot's writes. */
        .snapshots = {.enabled = true, .directory_fd = -1, .every_ns = 60ull * 1000000000ull,
                      .keep_count = 3, .rate_bytes_per_s = 400ull << 20,
                      .retention = SZ_REPLICA_RETENTION_KEEP,
                      .data_directory_fd = -1, .archive_fd = -1},
    };
    int code = start_parse(argc, argv, &arguments);
    if (code != EX_OK) return code < 0 ? EX_OK : code;
    if (strrchr(arguments.address, ':') == NULL ||
        (arguments.metrics_address[0] != '\0' && strrchr(arguments.metrics_address, ':') == NULL)) {
        fprintf(stderr, "sumzero start: addresses are HOST:PORT, for example 127.0.0.1:3000\n");
        return EX_USAGE;
    }

    start_server_t *server = calloc(1, sizeof(*server));
    sz_storage_t *storage = NULL;
    bool pid_written = false;
    if (server == NULL) return EX_OSERR;
    code = start_signal_snapshot();
    if (code != EX_OK) goto done;
    code = start_storage(&arguments, &storage);
    if (code != EX_OK) goto done;
    code = start_snapshots(&arguments);
    if (code != EX_OK) goto done;
    if (sz_ring_init(&server->requests, START_RING_CAPACITY) != 0 ||
        sz_ring_init(&server->replies, START_RING_CAPACITY) != 0) {
        fprintf(stderr, "sumzero start: out of memory for the rings\n");
        code = EX_OSERR;
        goto done;
    }
    server->metrics.request_ring = &server->requests;
    server->metrics.reply_ring = &server->replies;
    code = start_replica(&arguments, storage, server);
    if (code != EX_OK) goto done;
    code = start_stream(&arguments, server);
    if (code != EX_OK) goto done;
    code = start_gateway(&arguments, server);
    if (code != EX_OK) goto done;
    start_signal_gateway = server->gateway;
    start_signal_replica = server->replica;
    code = start_signals();
    if (code != EX_OK) goto done;
    code = start_pid_write(arguments.directory);
    if (code != EX_OK) goto done;
    pid_written = true;
    code = start_serve(server);
done:
    start_signal_gateway = NULL;
    start_signal_replica = NULL;
    if (pid_written) start_pid_remove(arguments.directory);
    if (arguments.snapshots.directory_fd >= 0) close(arguments.snapshots.directory_fd);
    if (arguments.snapshots.data_directory_fd >= 0) close(arguments.snapshots.data_directory_fd);
    if (arguments.snapshots.archive_fd >= 0) close(arguments.snapshots.archive_fd);
    sz_gateway_close(server->gateway);
    sz_stream_close(server->stream);
    sz_replica_close(server->replica);
    sz_ring_deinit(&server->requests);
    sz_ring_deinit(&server->replies);
    if (storage != NULL) sz_storage_deinit(storage);
    free(server);
    return code;
}
