/* inspect.c: `sumzero inspect DIR`: lists the journal's entries (op, timestamp,
 * operation, events, checksums, segment and offset) while verifying every checksum and
 * the hash chain; `--op N` prints one entry's events field by field. */
#include <getopt.h>

#include "commands.h"
#include "journal_tool.h"

typedef struct inspect_context {
    uint64_t op_dump; /* 0: list every entry */
    uint64_t limit;   /* entries listed at most (0: all) */
    uint64_t listed;
    bool found;
} inspect_context_t;

static void inspect_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero inspect [--op N] [--limit N] DIR\n"
            "  lists every entry of DIR's journal and verifies checksums and the hash chain\n"
            "  --op N     print op N's events field by field instead\n"
            "  --limit N  list at most N entries (the whole journal is still verified)\n"
            "exit: 0 ok, 64 usage, 65 corrupt journal, 66 not formatted or no such op, 74 I/O\n");
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
        case 'h': inspect_usage(stdout); return -1;
        default: inspect_usage(stderr); return EX_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "sumzero inspect: expected exactly one data directory; see --help\n");
        return EX_USAGE;
    }
    *directory_out = argv[optind];
    return EX_OK;
}

int sz_command_inspect(int argc, char **argv) {
    inspect_context_t context = {0};
    const char *directory = NULL;
    int parsed = inspect_parse(argc, argv, &context, &directory);
    if (parsed != EX_OK) return parsed < 0 ? EX_OK : parsed;
    sz_storage_t *storage = NULL;
    int code = journal_tool_storage("inspect", directory, &storage);
    if (code != EX_OK) return code;
    sz_journal_options_t options = {.read_only = true, .on_entry = inspect_on_entry,
                                    .entry_context = &context};
    sz_journal_t *journal = NULL;
    sz_journal_problem_t problem;
    int result = sz_journal_open(storage, &options, &journal, &problem);
    if (result < 0) {
        code = journal_tool_fail("inspect", directory, result, &problem);
        sz_storage_deinit(storage);
        return code;
    }
    sz_journal_info_t info;
    sz_journal_info(journal, &info);
    sz_journal_deinit(journal);
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
           "op_last=%llu chain=ok end=%s+%llu\n",
           sz_u128_format(info.cluster_id, cluster), info.replica_index, info.version,
           (unsigned long long)info.segment_size, (unsigned long long)info.entry_count_found,
           (unsigned long long)info.op_last, segment, (unsigned long long)info.end.offset);
    if (info.tail_torn) {
        printf("journal: torn tail of %llu bytes after the end (writes never acknowledged); "
               "the next writable open zeroes it\n", (unsigned long long)info.tail_size);
    }
    return EX_OK;
}
