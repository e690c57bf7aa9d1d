/* postgres.h: a real, throwaway PostgreSQL 15 for integration tests, through
 * tests/harness/postgres.sh ($SUMZERO_PG_HARNESS, set by meson's test()): initdb in a fresh
 * /tmp/sz-pg-XXXXXX as the non-root `postgres` user, a free loopback port, the unix socket
 * in that directory. Tests can stop it and start it again mid-test (same port, same data).
 *
 * Contract: header-only; tests only. Functions return 0 or a negative errno (or the
 * script's failing exit status as a positive number); they never assert.
 * sz_test_postgres_available() is false only when the Postgres binaries are missing: the
 * test executable then exits 77 (skip) from SZ_TEST_POSTGRES_SKIP_IF_MISSING. */
#ifndef SZ_TEST_POSTGRES_H
#define SZ_TEST_POSTGRES_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct sz_test_postgres {
    char dir[64];
    char conninfo[256];
} sz_test_postgres_t;

static inline const char *sz_test_postgres_bin(void) {
    const char *bin = getenv("SUMZERO_PG_BIN");
    return bin != NULL ? bin : "/usr/lib/postgresql/15/bin";
}

static inline bool sz_test_postgres_available(void) {
    char path[512];
    snprintf(path, sizeof(path), "%s/initdb", sz_test_postgres_bin());
    return access(path, X_OK) == 0 && getenv("SUMZERO_PG_HARNESS") != NULL;
}

/* Runs `postgres.sh COMMAND DIR`; its first stdout line goes to line_out. Returns the
 * script's exit status (0 ok), or a negative errno if it could not run. */
static inline int sz_test_postgres_script(const char *command, const char *dir, char *line_out,
                                          size_t line_size) {
    const char *script = getenv("SUMZERO_PG_HARNESS");
    if (script == NULL) return -ENOENT;
    char shell[1024];
    snprintf(shell, sizeof(shell), "'%s' %s '%s'", script, command, dir);
    FILE *output = popen(shell, "r");
    if (output == NULL) return -errno;
    char line[512] = {0};
    if (fgets(line, sizeof(line), output) != NULL) line[strcspn(line, "\n")] = 0;
    while (fgetc(output) != EOF) {
    }
    int status = pclose(output);
    if (line_out != NULL) snprintf(line_out, line_size, "%s", line);
    if (status < 0) return -errno;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* initdb and start a new server (extra server options in SUMZERO_PG_OPTIONS). */
static inline int sz_test_postgres_start(sz_test_postgres_t *postgres) {
    memset(postgres, 0, sizeof(*postgres));
    snprintf(postgres->dir, sizeof(postgres->dir), "/tmp/sz-pg-XXXXXX");
    if (mkdtemp(postgres->dir) == NULL) return -errno;
    return sz_test_postgres_script("start", postgres->dir, postgres->conninfo,
                                   sizeof(postgres->conninfo));
}

/* Fast shutdown: connections are cut, the data stays. */
static inline int sz_test_postgres_stop(sz_test_postgres_t *postgres) {
    return sz_test_postgres_script("stop", postgres->dir, NULL, 0);
}

/* Starts the stopped server again on its port. */
static inline int sz_test_postgres_restart(sz_test_postgres_t *postgres) {
    return sz_test_postgres_script("start", postgres->dir, NULL, 0);
}

static inline void sz_test_postgres_remove(sz_test_postgres_t *postgres) {
    if (postgres->dir[0] != 0) (void)sz_test_postgres_script("remove", postgres->dir, NULL, 0);
    postgres->dir[0] = 0;
}

/* For a Criterion test file: exit 77 (meson's skip) before any test when Postgres is not
 * installed. */
#define SZ_TEST_POSTGRES_SKIP_IF_MISSING()                                                \
    ReportHook(PRE_ALL)(struct criterion_test_set *set) {                                 \
        (void)set;                                                                        \
        if (!sz_test_postgres_available()) {                                              \
            fprintf(stderr, "skip: no PostgreSQL binaries in %s\n", sz_test_postgres_bin()); \
            exit(77);                                                                     \
        }                                                                                 \
    }

#endif
