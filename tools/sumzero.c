/* sumzero.c: the single `sumzero` binary. Dispatches to the subcommand named by the
 * first argument; each subcommand is a function of its own file (commands.h). */
#include <stdio.h>
#include <string.h>

#include "commands.h"

#ifndef SZ_VERSION
#define SZ_VERSION "0.1.0"
#endif

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command_t;

static int command_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("sumzero %s\n", SZ_VERSION);
    return EX_OK;
}

static const command_t commands[] = {
    {"bench", sz_command_bench, "load generator against a server; `bench core` (state machine), `bench journal` (disk)"},
    {"client", sz_command_client, "talk to a server: one statement, or a prompt reading stdin"},
    {"format", sz_command_format, "format a data directory: superblock and first journal segment"},
    {"inspect", sz_command_inspect, "list and verify the journal's entries; --op N dumps one"},
    {"project", sz_command_project, "project committed ops into Postgres (and Kafka); --verify checks it"},
    {"replay", sz_command_replay, "rebuild the state from the journal; print the digest"},
    {"snapshot", sz_command_snapshot, "ask the running server for a snapshot now and wait for it"},
    {"start", sz_command_start, "run the server (formats ./data if new); SIGTERM drains and stops"},
    {"version", command_version, "print the version"},
};

static void usage(FILE *stream) {
    fprintf(stream, "usage: sumzero COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t index = 0; index < sizeof(commands) / sizeof(commands[0]); index++) {
        fprintf(stream, "  %-10s %s\n", commands[index].name, commands[index].summary);
    }
    fprintf(stream, "\n`sumzero COMMAND --help` describes each command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EX_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return EX_OK;
    }
    if (strcmp(argv[1], "--version") == 0) return command_version(0, NULL);
    for (size_t index = 0; index < sizeof(commands) / sizeof(commands[0]); index++) {
        if (strcmp(argv[1], commands[index].name) == 0) {
            return commands[index].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "sumzero: unknown command '%s'; run `sumzero --help` for the list\n",
            argv[1]);
    return EX_USAGE;
}
