/* commands.h: the subcommands of the `sumzero` binary. Each lives in its own file in
 * tools/ and is listed once in the table of tools/sumzero.c.
 * Contract: a command gets argv without the program name (argv[0] is the command's own
 * name), prints one clear line per error on stderr, and returns a sysexits code. */
#ifndef SZ_COMMANDS_H
#define SZ_COMMANDS_H

#include <sysexits.h>

int sz_command_bench(int argc, char **argv);
int sz_command_bench_core(int argc, char **argv);
int sz_command_bench_journal(int argc, char **argv);
int sz_command_bench_server(int argc, char **argv);
int sz_command_client(int argc, char **argv);
int sz_command_format(int argc, char **argv);
int sz_command_inspect(int argc, char **argv);
int sz_command_project(int argc, char **argv);
int sz_command_replay(int argc, char **argv);
int sz_command_snapshot(int argc, char **argv);
int sz_command_start(int argc, char **argv);

#endif
