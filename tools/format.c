/* format.c: `sumzero format DIR`: writes the superblock (cluster id, replica index, format
 * version, segment size; checksummed, two copies) and preallocates the first segment, so
 * the server and the tools find a valid, empty journal. */
#include <getopt.h>
#include <sys/stat.h>

#include "commands.h"
#include "journal_tool.h"

static void format_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero format [--cluster ID] [--replica N] [--segment-size BYTES] DIR\n"
            "  creates DIR if needed and formats an empty journal in it\n"
            "  --cluster ID          cluster id, a u128 (env SUMZERO_CLUSTER; default 0)\n"
            "  --replica N           replica index 0..255 (env SUMZERO_REPLICA; default 0)\n"
            "  --segment-size BYTES  segment file size, a multiple of 4096, at least %u\n"
            "                        (env SUMZERO_SEGMENT_SIZE; default 1 GiB)\n",
            (unsigned)SZ_JOURNAL_SEGMENT_SIZE_MIN);
}

static int format_parse(int argc, char **argv, sz_journal_format_options_t *options,
                        const char **directory_out) {
    static const struct option long_options[] = {
        {"cluster", required_argument, NULL, 'c'},
        {"replica", required_argument, NULL, 'r'},
        {"segment-size", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cluster = getenv("SUMZERO_CLUSTER");
    const char *replica = getenv("SUMZERO_REPLICA");
    const char *segment_size = getenv("SUMZERO_SEGMENT_SIZE");
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (option) {
        case 'c': cluster = optarg; break;
        case 'r': replica = optarg; break;
        case 's': segment_size = optarg; break;
        case 'h': format_usage(stdout); return -1;
        default: format_usage(stderr); return EX_USAGE;
        }
    }
    if (cluster != NULL && sz_u128_parse(cluster, &options->cluster_id) != 0) {
        fprintf(stderr, "sumzero format: --cluster takes a u128, not '%s'\n", cluster);
        return EX_USAGE;
    }
    uint64_t value = 0;
    if (replica != NULL) {
        if (!journal_tool_u64(replica, &value) || value > 255) {
            fprintf(stderr, "sumzero format: --replica takes 0..255, not '%s'\n", replica);
            return EX_USAGE;
        }
        options->replica_index = (uint8_t)value;
    }
    if (segment_size != NULL) {
        if (!journal_tool_u64(segment_size, &value) || value < SZ_JOURNAL_SEGMENT_SIZE_MIN ||
            value % SZ_STORAGE_SECTOR_SIZE != 0) {
            fprintf(stderr, "sumzero format: --segment-size takes a multiple of 4096 of at "
                            "least %u, not '%s'\n", (unsigned)SZ_JOURNAL_SEGMENT_SIZE_MIN,
                    segment_size);
            return EX_USAGE;
        }
        options->segment_size = value;
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "sumzero format: expected exactly one data directory; see --help\n");
        return EX_USAGE;
    }
    *directory_out = argv[optind];
    return EX_OK;
}

int sz_command_format(int argc, char **argv) {
    sz_journal_format_options_t options = {0};
    const char *directory = NULL;
    int parsed = format_parse(argc, argv, &options, &directory);
    if (parsed != EX_OK) return parsed < 0 ? EX_OK : parsed;
    if (mkdir(directory, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "sumzero format: cannot create %s: %s\n", directory, strerror(errno));
        return EX_CANTCREAT;
    }
    sz_storage_t *storage = NULL;
    int code = journal_tool_storage("format", directory, &storage);
    if (code != EX_OK) return code;
    int result = sz_storage_lock(storage);
    if (result == 0) result = sz_journal_format(storage, &options);
    sz_storage_deinit(storage);
    if (result == -EEXIST) {
        fprintf(stderr, "sumzero format: %s is already formatted; remove it first to start "
                        "over\n", directory);
        return EX_CANTCREAT;
    }
    if (result == -EWOULDBLOCK) {
        fprintf(stderr, "sumzero format: %s is locked by a running sumzero\n", directory);
        return EX_TEMPFAIL;
    }
    if (result < 0) return journal_tool_fail("format", directory, result, NULL);
    char cluster[SZ_U128_DECIMAL_SIZE];
    printf("formatted %s: cluster=%s replica=%u version=%u segment_size=%llu\n", directory,
           sz_u128_format(options.cluster_id, cluster), options.replica_index,
           SZ_JOURNAL_VERSION,
           (unsigned long long)(options.segment_size ? options.segment_size
                                                     : SZ_JOURNAL_SEGMENT_SIZE_DEFAULT));
    return EX_OK;
}
