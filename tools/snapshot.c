/* snapshot.c: `sumzero snapshot`: asks a running server for a snapshot now and waits until
 * it is on disk. The server is the live holder of DATA/lock whose pid is in DATA/pid; it
 * is sent SIGUSR1 and the command waits for a complete snapshot newer than the newest one
 * before the request (a higher op, or the same op written again), then prints its name. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "journal_tool.h"
#include "snapshot/snapshot.h"

#define SNAPSHOT_TIMEOUT_SECONDS_DEFAULT 600u
#define SNAPSHOT_POLL_NS 20000000ull

typedef struct snapshot_arguments {
    const char *directory;
    uint64_t timeout_ns;
} snapshot_arguments_t;

/* The newest complete snapshot: its op and inode (0, 0 when there is none). */
typedef struct snapshot_newest {
    uint64_t op;
    uint64_t inode;
    uint64_t size;
    bool found;
} snapshot_newest_t;

static void snapshot_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero snapshot [--data DIR] [--timeout-seconds S]\n"
            "  asks the server running on DIR for a snapshot (SIGUSR1) and waits until it is\n"
            "  written to DIR/snapshots; prints its name and op\n"
            "  --data DIR             data directory (env SUMZERO_DATA; default ./data)\n"
            "  --timeout-seconds S    give up after S seconds (default %u)\n"
            "exit: 0 written, 64 usage, 69 no server running, 75 timed out (see the server's\n"
            "      log: msg=snapshot_failed)\n",
            SNAPSHOT_TIMEOUT_SECONDS_DEFAULT);
}

static int snapshot_parse(int argc, char **argv, snapshot_arguments_t *arguments) {
    enum { OPTION_DATA = 256, OPTION_TIMEOUT };
    static const struct option options[] = {
        {"data", required_argument, NULL, OPTION_DATA},
        {"timeout-seconds", required_argument, NULL, OPTION_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (getenv("SUMZERO_DATA") != NULL) arguments->directory = getenv("SUMZERO_DATA");
    optind = 1;
    int option;
    uint64_t seconds = 0;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (option) {
        case OPTION_DATA: arguments->directory = optarg; break;
        case OPTION_TIMEOUT:
            if (!journal_tool_u64(optarg, &seconds) || seconds == 0 || seconds > 86400) {
                fprintf(stderr, "sumzero snapshot: --timeout-seconds takes 1 to 86400, not "
                                "'%s'\n", optarg);
                return EX_USAGE;
            }
            arguments->timeout_ns = seconds * 1000000000ull;
            break;
        case 'h': snapshot_usage(stdout); return -1;
        default: snapshot_usage(stderr); return EX_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "sumzero snapshot: unexpected argument '%s'; see --help\n", argv[optind]);
        return EX_USAGE;
    }
    return EX_OK;
}

/* EX_OK when a server holds DIR/lock; the lock is only tested, never kept. */
static int snapshot_server_running(const char *directory) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/lock", directory);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "sumzero snapshot: no server is running on %s (%s: %s)\n", directory,
                path, strerror(errno));
        return EX_UNAVAILABLE;
    }
    int result = flock(fd, LOCK_EX | LOCK_NB);
    int lock_errno = errno;
    close(fd); /* releases the lock if we took it */
    if (result == 0) {
        fprintf(stderr, "sumzero snapshot: no server is running on %s (its lock is free)\n",
                directory);
        return EX_UNAVAILABLE;
    }
    if (lock_errno != EWOULDBLOCK) {
        fprintf(stderr, "sumzero snapshot: cannot test %s: %s\n", path, strerror(lock_errno));
        return EX_IOERR;
    }
    return EX_OK;
}

/* DIR/pid, written by the server once it serves (after recovery). Waits for it until the
 * deadline: a server that is still recovering holds the lock without it. */
static int snapshot_server_pid(const char *directory, uint64_t deadline_ns, pid_t *pid_out) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/pid", directory);
    while (true) {
        FILE *file = fopen(path, "r");
        int pid = 0;
        if (file != NULL) {
            int count = fscanf(file, "%d", &pid);
            fclose(file);
            if (count == 1 && pid > 0 && kill(pid, 0) == 0) {
                *pid_out = (pid_t)pid;
                return EX_OK;
            }
        }
        if (journal_tool_clock_ns() >= deadline_ns) {
            fprintf(stderr, "sumzero snapshot: the server on %s holds its lock but %s names no "
                            "live process: is it still recovering?\n", directory, path);
            return EX_UNAVAILABLE;
        }
        struct timespec pause = {.tv_nsec = SNAPSHOT_POLL_NS};
        nanosleep(&pause, NULL);
    }
}

static int snapshot_newest_find(int directory_fd, snapshot_newest_t *newest_out) {
    memset(newest_out, 0, sizeof(*newest_out));
    uint64_t op = 0;
    int count = sz_snapshot_list(directory_fd, &op, 1);
    if (count < 0) return count;
    if (count == 0) return 0;
    char name[SZ_SNAPSHOT_NAME_SIZE];
    sz_snapshot_name(op, name);
    struct stat status;
    if (fstatat(directory_fd, name, &status, 0) != 0) return 0; /* pruned meanwhile */
    *newest_out = (snapshot_newest_t){.op = op, .inode = (uint64_t)status.st_ino,
                                      .size = (uint64_t)status.st_size, .found = true};
    return 0;
}

/* Polls until a snapshot newer than before is complete, the server exits, or the
 * deadline. */
static int snapshot_wait(const snapshot_arguments_t *arguments, int directory_fd, pid_t pid,
                         const snapshot_newest_t *before, uint64_t deadline_ns) {
    while (true) {
        snapshot_newest_t now;
        int result = snapshot_newest_find(directory_fd, &now);
        if (result < 0) {
            fprintf(stderr, "sumzero snapshot: cannot list %s/%s: %s\n", arguments->directory,
                    SZ_SNAPSHOT_DIRECTORY, strerror(-result));
            return EX_IOERR;
        }
        if (now.found && (!before->found || now.op > before->op ||
                          (now.op == before->op && now.inode != before->inode))) {
            char name[SZ_SNAPSHOT_NAME_SIZE];
            sz_snapshot_name(now.op, name);
            printf("%s/%s/%s op=%llu size=%llu\n", arguments->directory, SZ_SNAPSHOT_DIRECTORY,
                   name, (unsigned long long)now.op, (unsigned long long)now.size);
            return EX_OK;
        }
        if (kill(pid, 0) != 0) {
            fprintf(stderr, "sumzero snapshot: the server (pid %d) exited before the snapshot "
                            "was written\n", (int)pid);
            return EX_UNAVAILABLE;
        }
        if (journal_tool_clock_ns() >= deadline_ns) {
            fprintf(stderr, "sumzero snapshot: no new snapshot in %s/%s after %llu s: see the "
                            "server's log (msg=snapshot_failed)\n",
                    arguments->directory, SZ_SNAPSHOT_DIRECTORY,
                    (unsigned long long)(arguments->timeout_ns / 1000000000ull));
            return EX_TEMPFAIL;
        }
        struct timespec pause = {.tv_nsec = SNAPSHOT_POLL_NS};
        nanosleep(&pause, NULL);
    }
}

int sz_command_snapshot(int argc, char **argv) {
    snapshot_arguments_t arguments = {
        .directory = "data",
        .timeout_ns = SNAPSHOT_TIMEOUT_SECONDS_DEFAULT * 1000000000ull,
    };
    int code = snapshot_parse(argc, argv, &arguments);
    if (code != EX_OK) return code < 0 ? EX_OK : code;
    uint64_t deadline_ns = journal_tool_clock_ns() + arguments.timeout_ns;
    code = snapshot_server_running(arguments.directory);
    if (code != EX_OK) return code;
    pid_t pid = 0;
    code = snapshot_server_pid(arguments.directory, deadline_ns, &pid);
    if (code != EX_OK) return code;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", arguments.directory, SZ_SNAPSHOT_DIRECTORY);
    int directory_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd < 0) {
        fprintf(stderr, "sumzero snapshot: cannot open %s: %s\n", path, strerror(errno));
        return EX_IOERR;
    }
    snapshot_newest_t before;
    int result = snapshot_newest_find(directory_fd, &before);
    if (result == 0 && kill(pid, SIGUSR1) != 0) result = -errno;
    if (result < 0) {
        fprintf(stderr, "sumzero snapshot: %s: %s\n", path, strerror(-result));
        close(directory_fd);
        return EX_IOERR;
    }
    code = snapshot_wait(&arguments, directory_fd, pid, &before, deadline_ns);
    close(directory_fd);
    return code;
}
