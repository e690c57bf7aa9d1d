/* test_cli.c: `sumzero client` end to end against a real server: one-shot statements
 * for every operation print results by name and records as key=value lines; the prompt
 * reads statements from a pipe, keeps going after a bad one and exits with its code; bad
 * statements and options exit 64 with one line; an unreachable server exits 69. The
 * binary is run as a user would (fork and exec of $SUMZERO_BIN, no shell). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sys/wait.h>

#include "server_test.h"

typedef struct cli_result {
    int exit_code;
    char out[16384];
    char err[4096];
} cli_result_t;

static void cli_read_all(int fd, char *buffer, size_t size) {
    size_t length = 0;
    ssize_t got;
    while (length + 1 < size && (got = read(fd, buffer + length, size - 1 - length)) > 0) {
        length += (size_t)got;
    }
    buffer[length] = '\0';
    close(fd);
}

/* Runs `sumzero client ARGS...` with input on stdin (may be NULL). */
static void cli_run(cli_result_t *result, const char *input, const char *const *args) {
    int in_pipe[2], out_pipe[2], err_pipe[2];
    cr_assert_eq(pipe(in_pipe), 0);
    cr_assert_eq(pipe(out_pipe), 0);
    cr_assert_eq(pipe(err_pipe), 0);
    const char *argv[32] = {sz_test_server_binary(), "client"};
    size_t count = 2;
    for (size_t index = 0; args[index] != NULL; index++) argv[count++] = args[index];
    argv[count] = NULL;
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(in_pipe[0], STDIN_FILENO);
        dup2(out_pipe[1], STDOUT_FILENO);
        dup2(err_pipe[1], STDERR_FILENO);
        close(in_pipe[1]);
        close(out_pipe[0]);
        close(err_pipe[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    close(err_pipe[1]);
    if (input != NULL) {
        cr_assert_eq(write(in_pipe[1], input, strlen(input)), (ssize_t)strlen(input));
    }
    close(in_pipe[1]);
    cli_read_all(out_pipe[0], result->out, sizeof(result->out));
    cli_read_all(err_pipe[0], result->err, sizeof(result->err));
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status));
    result->exit_code = WEXITSTATUS(status);
}

static cli_result_t result;

static bool starts_with(const char *text, const char *prefix) {
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

/* Every test: kill a server a failed assertion left behind, remove the files. */
TestSuite(cli, .fini = test_cleanup);

Test(cli, one_shot_statements_print_results_by_name_and_records_as_fields) {
    sz_test_server_t server;
    test_server_start(&server, NULL);
    const char *address = server.address;

    cli_run(&result, NULL, (const char *[]){"--address", address, "create_accounts", "id=1",
                                            "ledger=1", "code=1",
                                            "flags=debits_must_not_exceed_credits,", "id=2",
                                            "ledger=1", "code=1", "flags=history", NULL});
    cr_assert_eq(result.exit_code, 0, "%s", result.err);
    cr_assert_str_eq(result.out, "ok\n");

    cli_run(&result, NULL, (const char *[]){"--address", address, "create_transfers", "id=9",
                                            "debit_account_id=1", "credit_account_id=2",
                                            "amount=100", "ledger=1", "code=1", NULL});
    cr_assert_eq(result.exit_code, 0, "%s", result.err);
    cr_assert_str_eq(result.out, "index=0 result=exceeds_credits\n");

    /* A statement may also come as one argument, events separated by a lone comma. */
    cli_run(&result, NULL, (const char *[]){"--address", address,
                                            "create_transfers id=9 debit_account_id=2 "
                                            "credit_account_id=1 amount=100 ledger=1 code=1 , "
                                            "id=10 debit_account_id=2 credit_account_id=1 "
                                            "amount=0x10 ledger=1 code=1 flags=pending|linked",
                                            NULL});
    cr_assert_eq(result.exit_code, 0, "%s", result.err);
    cr_assert_str_eq(result.out, "index=1 result=linked_event_chain_open\n");

    cli_run(&result, NULL, (const char *[]){"--address", address, "lookup_accounts", "id=1,3",
                                            NULL});
    cr_assert_eq(result.exit_code, 0, "%s", result.err);
    cr_assert(strstr(result.out, "id=1 debits_pending=0 debits_posted=0 credits_pending=0 "
                                 "credits_posted=100 ") == result.out, "%s", result.out);
    cr_assert(strstr(result.out, " flags=debits_must_not_exceed_credits timestamp=") != NULL);
    cr_assert(strstr(result.out, "\nid=3 not_found\n") != NULL, "%s", result.out);

    cli_run(&result, NULL, (const char *[]){"--address", address, "lookup_transfers", "id=9",
                                            NULL});
    cr_assert_eq(result.exit_code, 0, "%s", result.err);
    cr_assert(strstr(result.out, "id=9 debit_account_id=2 credit_account_id=1 amount=100 ") ==
              result.out, "%s", result.out);

    cli_run(&result, NULL, (const char *[]){"--address", address, "get_account_transfers",
                                            "account_id=2", "flags=debits|reversed", "limit=5",
                                            NULL});
    cr_assert_eq(result.exit_code, 0, "%s", result.err);
    cr_assert(starts_with(result.out, "id=9 "), "%s", result.out);
    cr_assert(strchr(result.out, '\n')[1] == '\0', "one row: %s", result.out);

    cli_run(&result, NULL, (const char *[]){"--address", address, "get_account_balances",
                                            "account_id=2", NULL});
    cr_assert_eq(result.exit_code, 0, "%s", result.err);
    cr_assert(starts_with(result.out, "debits_pending=0 debits_posted=100 credits_pending=0 "
                                      "credits_posted=0 timestamp="), "%s", result.out);
    test_server_stop(&server);
}

Test(cli, the_prompt_reads_a_pipe_and_keeps_going_after_a_bad_statement) {
    sz_test_server_t server;
    test_server_start(&server, NULL);
    cli_run(&result,
            "# a comment\n"
            "create_accounts id=7 ledger=1 code=1, id=8 ledger=1 code=1;\n"
            "\n"
            "bogus id=1\n"
            "create_accounts id=7 ledger=1 code=1 colour=red\n"
            "create_accounts id=7 ledger=2 code=1\n"
            "lookup_accounts id=8\n"
            "quit\n"
            "lookup_accounts id=7\n",
            (const char *[]){"--address", server.address, NULL});
    cr_assert_eq(result.exit_code, 64, "the first error's code: %s", result.err);
    cr_assert(starts_with(result.out, "ok\nindex=0 result=exists_with_different_ledger\nid=8 "),
              "%s", result.out);
    cr_assert(strstr(result.out, "id=7 ") == NULL, "nothing after quit: %s", result.out);
    cr_assert(strstr(result.err, "unknown operation 'bogus'") != NULL, "%s", result.err);
    cr_assert(strstr(result.err, "create_accounts has no field 'colour'") != NULL, "%s",
              result.err);
    test_server_stop(&server);
}

Test(cli, bad_statements_exit_64_with_one_line) {
    static const char *const statements[][4] = {
        {"create_accounts", "id=1", "ledger=abc", NULL},
        {"create_accounts", "id=1", "ledger=4294967296", NULL},
        {"create_accounts", "id=1", "flags=linked|sideways", NULL},
        {"create_transfers", "id=1", "speed=3", NULL},
        {"lookup_accounts", "id=1,x", NULL},
        {"get_account_transfers", "limit=3", NULL},
        {"frobnicate", NULL},
    };
    for (size_t index = 0; index < sizeof(statements) / sizeof(statements[0]); index++) {
        const char *args[8] = {"--address", "127.0.0.1:1"};
        size_t count = 2;
        for (size_t word = 0; statements[index][word] != NULL; word++) {
            args[count++] = statements[index][word];
        }
        args[count] = NULL;
        cli_run(&result, NULL, args);
        cr_assert_eq(result.exit_code, 64, "%s: %s", statements[index][0], result.err);
        cr_assert_str_eq(result.out, "");
        char *newline = strchr(result.err, '\n');
        cr_assert(newline != NULL && newline[1] == '\0', "one line: %s", result.err);
        cr_assert(starts_with(result.err, "sumzero client: "), "%s", result.err);
    }
    cli_run(&result, NULL, (const char *[]){"--cluster", "nope", "lookup_accounts", "id=1",
                                            NULL});
    cr_assert_eq(result.exit_code, 64, "%s", result.err);
    cli_run(&result, NULL, (const char *[]){"--help", NULL});
    cr_assert_eq(result.exit_code, 0);
    cr_assert(strstr(result.out, "create_transfers id=9") != NULL);
}

Test(cli, an_unreachable_server_exits_69_with_a_clear_line) {
    cli_run(&result, NULL, (const char *[]){"--address", "127.0.0.1:1", "lookup_accounts",
                                            "id=1", NULL});
    cr_assert_eq(result.exit_code, 69, "%s", result.err);
    cr_assert(strstr(result.err, "cannot reach the server at 127.0.0.1:1: Connection refused")
              != NULL, "%s", result.err);
}
