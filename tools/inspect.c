/* inspect.c: `sumzero inspect DIR`: lists the journal's entries (op, timestamp,
 * operation, events, checksums, segment and offset) while verifying every checksum and
 * the hash chain; `--op N` prints one entry's events field by field; `--archive DIR` also
 * reads segments retention moved there. `sumzero inspect FILE` of a snapshot file prints
 * its header and sections and verifies it completely (checksums and the ledger's
 * structure, by loading it). */
#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "journal_tool.h"
#include "snapshot/snapshot.h"

typedef struct inspect_context {
    const char *archive_directory; /* NULL: none */
    uint64_t op_dump; /* 0: list every entry */
    uint64_t limit;   /* entries listed at most (0: all) */
    uint64_t listed;
    bool found;
} inspect_context_t;

static void inspect_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero inspect [--op N] [--limit N] [--archive DIR] DIR\n"
            "       sumzero inspect SNAPSHOT_FILE\n"
            "  lists every entry of DIR's journal and verifies checksums and the hash chain;\n"
            "  of a snapshot file, prints its header and sections and verifies all of it\n"
            "  --op N         print op N's events field by field instead\n"
            "  --limit N      list at most N entries (the whole journal is still verified)\n"
            "  --archive DIR  also read segments retention moved to DIR\n"
            "exit: 0 ok, 64 usage, 65 corrupt journal or snapshot, 66 not formatted or no such\n"
            "      op or file, 74 I/O\n");
}

static void inspect_transfer(uint32_t index, const sz_transfer_t *transfer) {
    char id[SZ_U128_DECIMAL_SIZE], debit[SZ_U128_DECIMAL_SIZE], credit[SZ_U128_DECIMAL_SIZE];
    char amount[SZ_U128_DECIMAL_SIZE], pending[SZ_U128_DECIMAL_SIZE];
    char user_data[SZ_U128_DECIMAL_SIZE];
    printf("  [%u] transfer id=%s debit_account_id=%s credit_account_id=%s amount=%s "
           "pending_id=%s user_data_128=%s user_data_64=%llu user_data_32=%u timeout=%u "
           "ledger=%u code=%u flags=0x%x\n",
           index, sz_u128_format(transfer->id, id),
           sz_u128_format(transfer->debit_account_id, debit),
           sz_u128_format(transfer->credit_account_id, credit),
           sz_u128_format(transfer->amount, amount), sz_u128_format(transfer->pending_id, pending),
           sz_u128_format(transfer->user_data_128, user_data),
           (unsigned long long)transfer->user_data_64, transfer->user_data_32, transfer->timeout,
           transfer->ledger, transfer->code, transfer->flags);
}

static void inspect_account(uint32_t index, const sz_account_t *account) {
    char id[SZ_U128_DECIMAL_SIZE], user_data[SZ_U128_DECIMAL_SIZE];
    printf("  [%u] account id=%s user_data_128=%s user_data_64=%llu user_data_32=%u ledger=%u "
           "code=%u flags=0x%x\n",
           index, sz_u128_format(account->id, id),
           sz_u128_format(account->user_data_128, user_data),
           (unsigned long long)account->user_data_64, account->user_data_32, account->ledger,
           account->code, account->flags);
}

static void inspect_header(const sz_journal_header_t *header,
                           const sz_journal_position_t *position) {
    char checksum_header[33], checksum_body[33], client[SZ_U128_DECIMAL_SIZE];
    char segment[SZ_STORAGE_NAME_SIZE];
    journal_tool_hex128(header->checksum_header, checksum_header);
    journal_tool_hex128(header->checksum_body, checksum_body);
    sz_journal_segment_name(position->segment, segment);
    printf("op=%llu timestamp=%llu operation=%s events=%u client=%s request=%u trace=%llu "
           "checksum_header=%s checksum_body=%s segment=%s offset=%llu\n",
           (unsigned long long)header->op, (unsigned long long)header->timestamp,
           sz_operation_name(header->operation), header->event_count,
           sz_u128_format(header->client_id, client), header->request_number,
           (unsigned long long)header->trace_id, checksum_header, checksum_body, segment,
           (unsigned long long)position->offset);
}

static int inspect_on_entry(const sz_journal_header_t *header, const void *body,
                            const sz_journal_position_t *position, void *context_raw) {
    inspect_context_t *context = context_raw;
    if (context->op_dump == 0) {
        if (context->limit == 0 || context->listed < context->limit) {
            inspect_header(header, position);
            context->listed++;
        }
        return 0;
    }
    if (header->op != context->op_dump) return 0;
    context->found = true;
    inspect_header(header, position);
    for (uint32_t index = 0; index < header->event_count; index++) {
        const uint8_t *event = (const uint8_t *)body + (size_t)index * SZ_JOURNAL_EVENT_SIZE;
        if (header->operation == SZ_OPERATION_CREATE_TRANSFERS) {
            sz_transfer_t transfer;
            memcpy(&transfer, event, sizeof(transfer));
            inspect_transfer(index, &transfer);
        } else {
            sz_account_t account;
            memcpy(&account, event, sizeof(account));
            inspect_account(index, &account);
        }
    }
    return 1; /* nothing more to show */
}

static int inspect_parse(int argc, char **argv, inspect_context_t *context,
                         const char **directory_out) {
    static const struct option long_options[] = {
        {"op", required_argument, NULL, 'o'},
        {"limit", required_argument, NULL, 'l'},
        {"archive", required_argument, NULL, 'A'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (option) {
        case 'o':
            if (!journal_tool_u64(optarg, &context->op_dump) || context->op_dump == 0) {
                fprintf(stderr, "sumzero inspect: --op takes an op number from 1, not '%s'\n", optarg);
                return EX_USAGE;
            }
            break;
        case 'l':
            if (!journal_tool_u64(optarg, &context->limit)) {
                fprintf(stderr, "sumzero inspect: --limit takes a number, not '%s'\n", optarg);
                return EX_USAGE;
            }
            break;
        case 'A': context->archive_directory = optarg; break;
        case 'h': inspect_usage(stdout); return -1;
        default: inspect_usage(stderr); return EX_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "sumzero inspect: expected exactly one data directory or snapshot file; "
                        "see --help\n");
        return EX_USAGE;
    }
    *directory_out = argv[optind];
    return EX_OK;
}

static int inspect_snapshot_fail(const char *path, int error,
                                 const sz_snapshot_problem_t *problem) {
    fprintf(stderr, "sumzero inspect: %s offset %llu: %s%s%s%s\n", path,
            (unsigned long long)problem->offset, problem->reason,
            error == -EUCLEAN ? "" : " (", error == -EUCLEAN ? "" : strerror(-error),
            error == -EUCLEAN ? "" : ")");
    if (error == -EUCLEAN) {
        fprintf(stderr, "sumzero inspect: the snapshot is damaged: do not use it; recovery "
                        "takes an older one or replays the journal\n");
    }
    return journal_tool_exit_code(error);
}

static void inspect_snapshot_print(const char *path, const sz_snapshot_info_t *info) {
    char cluster[SZ_U128_DECIMAL_SIZE], chain_head[33], checksum[33];
    journal_tool_hex128(info->meta.chain_head, chain_head);
    printf("snapshot: file=%s version=%u cluster=%s op=%llu timestamp=%llu chain_head=%s "
           "digest=%016llx%016llx created_ns=%llu file_size=%llu ledger_ops=%llu "
           "pending_live=%llu\n",
           path, info->version, sz_u128_format(info->meta.cluster_id, cluster),
           (unsigned long long)info->meta.op, (unsigned long long)info->meta.timestamp,
           chain_head, (unsigned long long)info->meta.digest.high,
           (unsigned long long)info->meta.digest.low, (unsigned long long)info->meta.created_ns,
           (unsigned long long)info->file_size, (unsigned long long)info->ledger_op_count,
           (unsigned long long)info->pending_live);
    for (uint32_t index = 0; index < info->section_count; index++) {
        const sz_snapshot_section_info_t *section = &info->sections[index];
        journal_tool_hex128(section->checksum, checksum);
        printf("section: name=%s records=%llu record_size=%u offset=%llu size=%llu "
               "checksum=%s\n",
               section->name, (unsigned long long)section->record_count, section->record_size,
               (unsigned long long)section->offset, (unsigned long long)section->size, checksum);
    }
}

/* Capacities exactly the snapshot's counts (at least 1), so loading verifies it all. */
static sz_ledger_config_t inspect_snapshot_config(const sz_snapshot_info_t *info) {
    uint64_t counts[4] = {info->sections[0].record_count, info->sections[1].record_count,
                          info->sections[3].record_count, info->sections[4].record_count};
    for (uint32_t index = 0; index < 4; index++) {
        if (counts[index] == 0) counts[index] = 1;
        if (counts[index] > SZ_LEDGER_CAPACITY_MAX) counts[index] = SZ_LEDGER_CAPACITY_MAX;
    }
    return (sz_ledger_config_t){.accounts_max = (uint32_t)counts[0],
                                .transfers_max = (uint32_t)counts[1],
                                .pending_max = (uint32_t)counts[2],
                                .history_max = (uint32_t)counts[3]};
}

static int inspect_snapshot(const char *path) {
    char directory[4096], name[SZ_SNAPSHOT_NAME_SIZE + 64];
    if (!journal_tool_path_split(path, directory, sizeof(directory), name, sizeof(name))) {
        fprintf(stderr, "sumzero inspect: %s: not a file path\n", path);
        return EX_USAGE;
    }
    int directory_fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd < 0) {
        fprintf(stderr, "sumzero inspect: %s: %s\n", directory, strerror(errno));
        return EX_NOINPUT;
    }
    sz_snapshot_info_t info;
    sz_snapshot_problem_t problem;
    int result = sz_snapshot_info(directory_fd, name, 0, &info, &problem);
    if (result < 0) {
        close(directory_fd);
        return inspect_snapshot_fail(path, result, &problem);
    }
    inspect_snapshot_print(path, &info);
    sz_ledger_config_t config = inspect_snapshot_config(&info);
    sz_snapshot_loaded_t loaded;
    uint64_t start_ns = journal_tool_clock_ns();
    result = sz_snapshot_load(directory_fd, name, info.meta.cluster_id, &config, &loaded,
                              &problem);
    close(directory_fd);
    if (result < 0) return inspect_snapshot_fail(path, result, &problem);
    sz_ledger_stats_t stats;
    sz_ledger_stats(loaded.ledger, &stats);
    printf("snapshot: verify=ok accounts=%llu transfers=%llu history=%llu sessions_bytes=%zu "
           "load_seconds=%.3f\n",
           (unsigned long long)stats.account_count, (unsigned long long)stats.transfer_count,
           (unsigned long long)stats.history_count, loaded.sessions_size,
           (double)(journal_tool_clock_ns() - start_ns) / 1e9);
    sz_snapshot_sessions_free(loaded.sessions, loaded.sessions_size);
    sz_ledger_deinit(loaded.ledger);
    return EX_OK;
}

int sz_command_inspect(int argc, char **argv) {
    inspect_context_t context = {0};
    const char *directory = NULL;
    int parsed = inspect_parse(argc, argv, &context, &directory);
    if (parsed != EX_OK) return parsed < 0 ? EX_OK : parsed;
    struct stat status;
    if (stat(directory, &status) == 0 && S_ISREG(status.st_mode)) {
        return inspect_snapshot(directory);
    }
    sz_storage_t *storage = NULL, *archive = NULL;
    int code = journal_tool_storage("inspect", directory, &storage);
    if (code != EX_OK) return code;
    if (context.archive_directory != NULL) {
        code = journal_tool_storage("inspect", context.archive_directory, &archive);
        if (code != EX_OK) {
            sz_storage_deinit(storage);
            return code;
        }
    }
    sz_journal_options_t options = {.read_only = true, .on_entry = inspect_on_entry,
                                    .entry_context = &context, .archive = archive};
    sz_journal_t *journal = NULL;
    sz_journal_problem_t problem;
    int result = sz_journal_open(storage, &options, &journal, &problem);
    if (result < 0) {
        code = journal_tool_fail("inspect", directory, result, &problem);
        sz_storage_deinit(archive);
        sz_storage_deinit(storage);
        return code;
    }
    sz_journal_info_t info;
    sz_journal_info(journal, &info);
    sz_journal_deinit(journal);
    sz_storage_deinit(archive);
    sz_storage_deinit(storage);
    if (context.op_dump != 0) {
        if (context.found) return EX_OK;
        fprintf(stderr, "sumzero inspect: %s: no op %llu (the journal ends at op %llu)\n",
                directory, (unsigned long long)context.op_dump,
                (unsigned long long)info.op_last);
        return EX_NOINPUT;
    }
    char cluster[SZ_U128_DECIMAL_SIZE], segment[SZ_STORAGE_NAME_SIZE];
    sz_journal_segment_name(info.end.segment, segment);
    printf("journal: cluster=%s replica=%u version=%u segment_size=%llu entries=%llu "
           "op_last=%llu chain=ok end=%s+%llu segment_first=%u\n",
           sz_u128_format(info.cluster_id, cluster), info.replica_index, info.version,
           (unsigned long long)info.segment_size, (unsigned long long)info.entry_count_found,
           (unsigned long long)info.op_last, segment, (unsigned long long)info.end.offset,
           info.segment_first);
    if (info.tail_torn) {
        printf("journal: torn tail of %llu bytes after the end (writes never acknowledged); "
               "the next writable open zeroes it\n", (unsigned long long)info.tail_size);
    }
    return EX_OK;
}
