/* journal_tool.h: what the journal's commands (format, replay, inspect, bench journal)
 * share: opening a data directory's storage, turning journal errors into one clear line
 * and a sysexits code, parsing numbers and splitting paths.
 * Contract: header-only, static helpers; for tools/ only. */
#ifndef SZ_JOURNAL_TOOL_H
#define SZ_JOURNAL_TOOL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "journal/journal.h"

static inline uint64_t journal_tool_clock_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

/* Corruption is bad data (65), a missing journal is missing input (66), a lock held by
 * another process is temporary (75), a capacity too small is configuration (78), and
 * everything else is I/O (74). */
static inline int journal_tool_exit_code(int error) {
    switch (error) {
    case 0: return EX_OK;
    case -EUCLEAN: return EX_DATAERR;
    case -ENOENT: return EX_NOINPUT;
    case -EWOULDBLOCK: return EX_TEMPFAIL;
    case -ENOSPC: return EX_CONFIG;
    default: return EX_IOERR;
    }
}

/* One line: "sumzero replay: DIR/journal.000003 offset 4096 op 17: reason (errno text)". */
static inline int journal_tool_fail(const char *command, const char *directory, int error,
                                    const sz_journal_problem_t *problem) {
    if (problem != NULL && problem->reason[0] != '\0') {
        /* strerror(EUCLEAN) ("Structure needs cleaning") would only confuse. */
        fprintf(stderr, "sumzero %s: %s/%s offset %llu op %llu: %s%s%s%s\n", command, directory,
                problem->file, (unsigned long long)problem->offset,
                (unsigned long long)problem->op, problem->reason,
                error == -EUCLEAN ? "" : " (", error == -EUCLEAN ? "" : strerror(-error),
                error == -EUCLEAN ? "" : ")");
    } else {
        fprintf(stderr, "sumzero %s: %s: %s\n", command, directory, strerror(-error));
    }
    if (error == -EUCLEAN) {
        fprintf(stderr, "sumzero %s: the journal is corrupt; do not start on it: restore it "
                        "from a follower or a backup\n", command);
    }
    return journal_tool_exit_code(error);
}

static inline int journal_tool_storage(const char *command, const char *directory,
                                       sz_storage_t **storage_out) {
    int result = sz_storage_uring_init(directory, storage_out);
    if (result < 0) {
        fprintf(stderr, "sumzero %s: cannot open data directory %s: %s\n", command, directory,
                strerror(-result));
        return journal_tool_exit_code(result == -ENOENT ? -ENOENT : -EIO);
    }
    return EX_OK;
}

/* Parses a whole decimal (or 0x) u64; false on any stray character. */
static inline bool journal_tool_u64(const char *text, uint64_t *value_out) {
    if (text == NULL || *text == '\0' || *text == '-') return false;
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 0);
    if (errno != 0 || *end != '\0') return false;
    *value_out = value;
    return true;
}

/* Splits PATH into its directory ("." when none) and its last name. false when the name
 * does not fit. */
static inline bool journal_tool_path_split(const char *path, char *directory, size_t directory_size,
                                           char *name, size_t name_size) {
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    if (*base == '\0' || strlen(base) >= name_size) return false;
    snprintf(name, name_size, "%s", base);
    if (slash == NULL) {
        snprintf(directory, directory_size, ".");
    } else if (slash == path) {
        snprintf(directory, directory_size, "/");
    } else {
        if ((size_t)(slash - path) >= directory_size) return false;
        snprintf(directory, directory_size, "%.*s", (int)(slash - path), path);
    }
    return true;
}

static inline void journal_tool_hex128(sz_u128 value, char out[33]) {
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)(uint64_t)(value >> 64),
             (unsigned long long)(uint64_t)value);
}

#endif
