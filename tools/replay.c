/* replay.c: `sumzero replay DIR`: rebuilds the state from the journal (disaster recovery,
 * audits, point-in-time views) and prints what it applied, the state digest and the time
 * taken; --verify also checks the ledger's invariants. --snapshot FILE starts from a
 * snapshot (verified, loaded, then only the journal after its op, whose chain head must
 * match), --write-snapshot FILE writes a snapshot of the state reached, and --archive DIR
 * finds segments retention moved away (point-in-time recovery from op 1). */
#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "journal/replay.h"
#include "journal_tool.h"
#include "snapshot/snapshot.h"

typedef struct replay_arguments {
    sz_replay_options_t options;
    sz_ledger_config_t config;
    bool verify;
    const char *directory;
    const char *snapshot_path;       /* NULL: from op 1 */
    const char *write_snapshot_path; /* NULL: none */
    const char *archive_directory;   /* NULL: none */
} replay_arguments_t;

static void replay_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero replay [OPTIONS] DIR\n"
            "  applies every op of DIR's journal to a fresh ledger and prints the digest\n"
            "  --until-op N         stop after op N\n"
            "  --until-timestamp T  stop before the first op stamped after T (ns)\n"
            "  --verify             check the ledger invariants; exit 65 on a violation\n"
            "  --snapshot FILE      start from this snapshot: verify and load it, then replay\n"
            "                       only the ops after its op (its chain head must match)\n"
            "  --write-snapshot FILE  write a snapshot of the state reached (FILE, or a\n"
            "                       directory to name it snapshot.<op> in)\n"
            "  --archive DIR        also look for journal segments in DIR (where retention\n"
            "                       moved them): replay from op 1 after retention\n"
            "  --accounts-max N     capacities (env SUMZERO_ACCOUNTS_MAX ...; defaults\n"
            "  --transfers-max N      1Mi accounts, 16Mi transfers, 1Mi pending, 1Mi history;\n"
            "  --pending-max N        memory is reserved, touched only as it fills)\n"
            "  --history-max N\n"
            "exit: 0 ok, 64 usage, 65 corrupt journal or snapshot or invariant violation,\n"
            "      66 not formatted or no such snapshot or segment,\n"
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
        {"snapshot", required_argument, NULL, 's'},
        {"write-snapshot", required_argument, NULL, 'w'},
        {"archive", required_argument, NULL, 'A'},
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
        case 's': arguments->snapshot_path = optarg; break;
        case 'w': arguments->write_snapshot_path = optarg; break;
        case 'A': arguments->archive_directory = optarg; break;
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

/* One line for a snapshot error; the exit code of its errno. */
static int replay_snapshot_fail(const char *what, const char *path, int error,
                                const sz_snapshot_problem_t *problem) {
    fprintf(stderr, "sumzero replay: %s %s: offset %llu: %s%s%s%s\n", what, path,
            (unsigned long long)problem->offset, problem->reason,
            error == -EUCLEAN ? "" : " (", error == -EUCLEAN ? "" : strerror(-error),
            error == -EUCLEAN ? "" : ")");
    return journal_tool_exit_code(error);
}

/* Loads the snapshot at path into *ledger_out and points the replay after its op. */
static int replay_snapshot_load(replay_arguments_t *arguments, sz_u128 cluster_id,
                                sz_ledger_t **ledger_out) {
    char directory[4096], name[SZ_SNAPSHOT_NAME_SIZE + 64];
    if (!journal_tool_path_split(arguments->snapshot_path, directory, sizeof(directory), name,
                                 sizeof(name))) {
        fprintf(stderr, "sumzero replay: --snapshot %s: not a file path\n",
                arguments->snapshot_path);
        return EX_USAGE;
    }
    int directory_fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd < 0) {
        fprintf(stderr, "sumzero replay: --snapshot %s: %s\n", arguments->snapshot_path,
                strerror(errno));
        return EX_NOINPUT;
    }
    uint64_t start_ns = journal_tool_clock_ns();
    sz_snapshot_loaded_t loaded;
    sz_snapshot_problem_t problem;
    int result = sz_snapshot_load(directory_fd, name, cluster_id, &arguments->config, &loaded,
                                  &problem);
    close(directory_fd);
    if (result < 0) {
        if (result == -ENOSPC) {
            fprintf(stderr, "sumzero replay: a capacity is too small for this snapshot: raise "
                            "the --*-max flag named below\n");
        }
        return replay_snapshot_fail("cannot load snapshot", arguments->snapshot_path, result,
                                    &problem);
    }
    sz_snapshot_sessions_free(loaded.sessions, loaded.sessions_size);
    const sz_replay_options_t *options = &arguments->options;
    if ((options->until_op != 0 && options->until_op < loaded.meta.op) ||
        (options->until_timestamp != 0 && options->until_timestamp < loaded.meta.timestamp)) {
        fprintf(stderr, "sumzero replay: the snapshot is of op %llu, past the --until-* point: "
                        "use an older snapshot or none\n", (unsigned long long)loaded.meta.op);
        sz_ledger_deinit(loaded.ledger);
        return EX_USAGE;
    }
    arguments->options.op_after = loaded.meta.op;
    arguments->options.chain_head = loaded.meta.chain_head;
    printf("replay: snapshot=%s op=%llu timestamp=%llu load_seconds=%.3f\n",
           arguments->snapshot_path, (unsigned long long)loaded.meta.op,
           (unsigned long long)loaded.meta.timestamp,
           (double)(journal_tool_clock_ns() - start_ns) / 1e9);
    *ledger_out = loaded.ledger;
    return EX_OK;
}

/* Writes the snapshot of the state reached: into path if it is a directory, else as path. */
static int replay_snapshot_write(const char *path, const sz_ledger_t *ledger,
                                 const sz_snapshot_meta_t *meta) {
    char directory[4096], name[SZ_SNAPSHOT_NAME_SIZE + 64], canonical[SZ_SNAPSHOT_NAME_SIZE];
    struct stat status;
    if (stat(path, &status) == 0 && S_ISDIR(status.st_mode)) {
        snprintf(directory, sizeof(directory), "%s", path);
        sz_snapshot_name(meta->op, name);
    } else if (!journal_tool_path_split(path, directory, sizeof(directory), name, sizeof(name))) {
        fprintf(stderr, "sumzero replay: --write-snapshot %s: not a file path\n", path);
        return EX_USAGE;
    }
    sz_snapshot_name(meta->op, canonical);
    int directory_fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd < 0) {
        fprintf(stderr, "sumzero replay: --write-snapshot %s: %s\n", directory, strerror(errno));
        return EX_CANTCREAT;
    }
    uint64_t start_ns = journal_tool_clock_ns();
    sz_snapshot_problem_t problem;
    int result = sz_snapshot_write(directory_fd, ledger, meta, NULL, 0, &problem);
    if (result == 0 && strcmp(name, canonical) != 0) {
        if (renameat(directory_fd, canonical, directory_fd, name) != 0 || fsync(directory_fd) != 0) {
            result = -errno;
            snprintf(problem.reason, sizeof(problem.reason), "cannot rename %s to %s", canonical,
                     name);
            problem.offset = 0;
        }
    }
    close(directory_fd);
    if (result < 0) return replay_snapshot_fail("cannot write snapshot", path, result, &problem);
    printf("replay: wrote snapshot %s/%s op=%llu seconds=%.3f\n", directory, name,
           (unsigned long long)meta->op, (double)(journal_tool_clock_ns() - start_ns) / 1e9);
    return EX_OK;
}

/* Opens DIR's storage (and the archive's) and reads the superblock. */
static int replay_storage(const replay_arguments_t *arguments, sz_storage_t **storage_out,
                          sz_storage_t **archive_out, sz_journal_superblock_t *superblock) {
    int code = journal_tool_storage("replay", arguments->directory, storage_out);
    if (code != EX_OK) return code;
    sz_journal_problem_t problem;
    int result = sz_journal_superblock_read(*storage_out, superblock, &problem);
    if (result < 0) return journal_tool_fail("replay", arguments->directory, result, &problem);
    if (arguments->archive_directory != NULL) {
        code = journal_tool_storage("replay", arguments->archive_directory, archive_out);
    }
    return code;
}

static int replay_finish(const replay_arguments_t *arguments, const sz_ledger_t *ledger,
                         const sz_replay_stats_t *stats, const sz_journal_superblock_t *superblock) {
    int code = EX_OK;
    if (arguments->verify) {
        char message[256] = "";
        if (sz_ledger_verify(ledger, message, sizeof(message)) != 0) {
            fprintf(stderr, "sumzero replay: invariant violated after op %llu: %s\n",
                    (unsigned long long)stats->op_last, message);
            return EX_DATAERR;
        }
        printf("replay: verify=ok\n");
    }
    if (arguments->write_snapshot_path != NULL) {
        sz_ledger_stats_t ledger_stats;
        sz_ledger_stats(ledger, &ledger_stats);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        bool applied = stats->op_count > 0;
        sz_snapshot_meta_t meta = {
            .cluster_id = superblock->cluster_id,
            .op = applied ? stats->op_last : arguments->options.op_after,
            .timestamp = ledger_stats.timestamp_last,
            .chain_head = applied ? stats->chain_head
                          : arguments->options.op_after > 0 ? arguments->options.chain_head
                                                            : superblock->checksum,
            .digest = sz_ledger_digest(ledger),
            .created_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec,
        };
        code = replay_snapshot_write(arguments->write_snapshot_path, ledger, &meta);
    }
    return code;
}

int sz_command_replay(int argc, char **argv) {
    replay_arguments_t arguments = {
        .config = {.accounts_max = 1u << 20, .transfers_max = 1u << 24,
                   .pending_max = 1u << 20, .history_max = 1u << 20, .hash_seed = 0},
    };
    int parsed = replay_parse(argc, argv, &arguments);
    if (parsed != EX_OK) return parsed < 0 ? EX_OK : parsed;
    sz_storage_t *storage = NULL, *archive = NULL;
    sz_ledger_t *ledger = NULL;
    sz_journal_superblock_t superblock;
    int code = replay_storage(&arguments, &storage, &archive, &superblock);
    if (code == EX_OK && arguments.snapshot_path != NULL) {
        code = replay_snapshot_load(&arguments, superblock.cluster_id, &ledger);
    } else if (code == EX_OK) {
        int result = sz_ledger_init(&arguments.config, &ledger);
        if (result < 0) {
            fprintf(stderr, "sumzero replay: cannot reserve the ledger's memory: %s; lower the "
                            "capacities\n", strerror(-result));
            code = EX_OSERR;
        }
    }
    if (code != EX_OK) goto done;
    arguments.options.archive = archive;
    sz_replay_stats_t stats;
    sz_journal_problem_t problem;
    uint64_t start_ns = journal_tool_clock_ns();
    int result = sz_replay_run(storage, &arguments.options, ledger, &stats, &problem);
    uint64_t elapsed_ns = journal_tool_clock_ns() - start_ns;
    if (result < 0) {
        if (result == -ENOSPC) {
            fprintf(stderr, "sumzero replay: a capacity is too small for this journal: raise "
                            "the --*-max flag named below\n");
        }
        code = journal_tool_fail("replay", arguments.directory, result, &problem);
        goto done;
    }
    replay_print(ledger, &stats, elapsed_ns);
    code = replay_finish(&arguments, ledger, &stats, &superblock);
done:
    sz_ledger_deinit(ledger);
    sz_storage_deinit(archive);
    sz_storage_deinit(storage);
    return code;
}
