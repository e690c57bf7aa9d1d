/* bench_server.c: `sumzero bench`, the load generator. It starts its own `sumzero start`
 * on a temporary data directory (or talks to --addresses), creates the accounts, sends the
 * transfers in batches from C clients that each keep a pipeline of requests in flight
 * (uniform, zipfian or hot-account), and prints the throughput and the batch latency
 * percentiles, then a query phase of lookups, a balance check, and the server's exit
 * status after SIGTERM. The defaults are those of TigerBeetle's reference benchmark
 * (10,000 accounts, 10 million transfers, batches of 8190, one client), so both can run
 * side by side on one machine.
 *
 * Design notes:
 * - The generator must never be what is measured. Every event is a pure function of
 *   (seed, index) through a counter-based hash, so nothing is stored per transfer, the
 *   batches can be filled in any order, and the query phase checks what it reads back
 *   against the same function. A batch is a preallocated 1 MiB buffer (two per 2 MiB huge
 *   page, madvised and touched at start); refilling one rewrites only the id and the two
 *   accounts of each transfer (tens of microseconds for 8190: the generator thread used
 *   under 0.1 core at 8 M transfers/s).
 * - One generator thread (this one) drives every client through the asynchronous API.
 *   The callbacks, on the clients' I/O threads, only stamp the time and hand the batch
 *   back; checking the results and refilling happen here, off the I/O threads.
 * - Latency is per batch: from submission to the callback. With --rate, from the time
 *   the batch was scheduled to leave, so that a server falling behind shows as latency
 *   instead of silently slowing the offered load (coordinated omission).
 * - Ids carry a random 64-bit prefix of this run in their high half, so a run against a
 *   server that already holds data creates fresh accounts and transfers and every one of
 *   them must succeed.
 * - Diagnosis beside the figures: each thread's CPU and run-queue wait (client and our
 *   server, from /proc), the machine's busy cores (someone else's load shows), and the
 *   server's own histograms (fdatasync, commit, request latency) scraped from /metrics
 *   before and after the transfer phase.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <linux/magic.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "core/base.h"
#include "sumzero.h"

#define BENCH_CLIENTS_MAX 64u
#define BENCH_PIPELINE_MAX 64u /* the client library's own limit on pipeline_max */
/* A full batch of 128-byte records rounded up to 1 MiB, so two fill one 2 MiB huge page. */
#define BENCH_BUFFER_SIZE (1u << 20)
#define BENCH_SERVER_ARGS_MAX 32u
#define BENCH_THREADS_MAX 64u /* server threads we report on */
/* A server with capacities for tens of millions of transfers touches gigabytes at start. */
#define BENCH_LISTEN_TIMEOUT_MS 600000u
#define BENCH_STOP_TIMEOUT_MS 60000u
#define BENCH_REQUEST_TIMEOUT_MS 60000u
#define NS_PER_S 1000000000ull

static_assert(SUMZERO_BATCH_EVENTS_MAX * 128u <= BENCH_BUFFER_SIZE, "a batch fits a buffer");

typedef enum bench_distribution {
    DISTRIBUTION_UNIFORM,
    DISTRIBUTION_ZIPFIAN,
    DISTRIBUTION_HOT,
} bench_distribution_t;

static const char *const distribution_names[] = {"uniform", "zipfian", "hot"};

typedef struct bench_options {
    uint32_t account_count;
    uint64_t transfer_count;
    uint32_t batch_events_max;
    uint32_t client_count;
    uint32_t pipeline;
    bench_distribution_t distribution;
    double zipf_exponent;
    uint64_t rate_per_second; /* transfers/s offered; 0: as fast as the server takes them */
    uint64_t lookup_count;    /* per lookup operation; 0 skips the query phase */
    const char *addresses;    /* NULL: start our own server */
    const char *directory;    /* where the temporary data directory goes */
    const char *cluster;
    uint64_t seed;
    bool keep_data;
    uint32_t server_arg_count;
    const char *server_args[BENCH_SERVER_ARGS_MAX];
} bench_options_t;

typedef enum phase_kind {
    PHASE_ACCOUNTS,
    PHASE_TRANSFERS,
    PHASE_LOOKUP_ACCOUNTS,
    PHASE_LOOKUP_TRANSFERS,
    PHASE_BALANCES, /* every account of the run, in order, to sum the balances */
} phase_kind_t;

typedef struct bench bench_t;

/* One request's worth of events with its own buffers; owned by one client. */
typedef struct bench_batch {
    sumzero_packet_t packet;
    bench_t *bench;
    uint32_t client_index;
    bool used; /* submitted in the current phase: its results wait to be checked */
    uint64_t sequence;    /* batch number in the phase */
    uint64_t first_index; /* the phase index of its first event */
    uint64_t start_ns;    /* submitted (or scheduled, with --rate) */
    uint64_t done_ns;     /* the callback ran */
    uint8_t *events;      /* BENCH_BUFFER_SIZE */
    uint8_t *results;     /* BENCH_BUFFER_SIZE */
    struct bench_batch *next_free;
} bench_batch_t;

/* What one phase found; written by the generator thread only. */
typedef struct phase_outcome {
    uint64_t event_count;
    uint64_t batch_count;
    uint64_t elapsed_ns; /* first submission to the last callback */
    uint64_t requests_failed;
    int error_first;
    uint64_t events_failed;
    uint64_t events_exists_resubmitted; /* `exists` of our own lost attempt: fine */
    uint32_t result_first; /* the first failing result code */
    uint64_t lookups_wrong; /* missing or different records */
    sumzero_u128_t debits_posted;
    sumzero_u128_t credits_posted;
    uint64_t *latencies_ns; /* batch_count of them */
} phase_outcome_t;

typedef struct bench_server {
    pid_t pid;
    int exit_status; /* -1 while running */
    char root[4096];  /* the temporary directory: data/ and server.log */
    char data[4200];
    char log[4200];
    char address[128];
    char metrics_address[128];
} bench_server_t;

typedef struct thread_times {
    uint32_t count;
    int tid[BENCH_THREADS_MAX];
    char name[BENCH_THREADS_MAX][20];
    uint64_t ticks[BENCH_THREADS_MAX];
    uint64_t wait_ns[BENCH_THREADS_MAX]; /* runnable but not running (schedstat) */
} thread_times_t;

struct bench {
    bench_options_t options;
    sumzero_u128_t cluster_id;
    uint64_t id_prefix; /* the high half of every id of this run */
    uint32_t *zipf_alias;
    uint64_t *zipf_threshold; /* of 2^32: take the column when the coin is below */
    bench_server_t server;
    sumzero_client_t *clients[BENCH_CLIENTS_MAX];
    bench_batch_t *batches;
    uint32_t batch_count;
    uint8_t *buffers;
    size_t buffers_size;

    /* Shared with the callbacks: under mutex. */
    pthread_mutex_t mutex;
    pthread_cond_t returned;
    bench_batch_t *free_batches;
    bool generator_waiting;
    uint64_t *latencies_ns; /* of the running phase, indexed by batch sequence */
};

/* ---- small helpers ------------------------------------------------------------------ */

static uint64_t clock_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * NS_PER_S + (uint64_t)now.tv_nsec;
}

/* splitmix64's finalizer: the counter-based hash behind every generated event. */
static inline uint64_t hash_mix(uint64_t value) {
    value += 0x9E3779B97F4A7C15ull;
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ull;
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBull;
    return value ^ (value >> 31);
}

/* A number below bound from 32 random bits, without division (Lemire). */
static inline uint32_t reduce32(uint32_t random, uint32_t bound) {
    return (uint32_t)(((uint64_t)random * bound) >> 32);
}

static inline uint64_t reduce64(uint64_t random, uint64_t bound) {
    return (uint64_t)(((sumzero_u128_t)random * bound) >> 64);
}

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static sumzero_u128_t account_id(const bench_t *bench, uint64_t index) {
    return ((sumzero_u128_t)bench->id_prefix << 64) | (index + 1);
}

static sumzero_u128_t transfer_id(const bench_t *bench, uint64_t index) {
    return ((sumzero_u128_t)bench->id_prefix << 64) | (index + 1);
}

/* ---- the distributions ---------------------------------------------------------------- */

/* Vose's alias method: one hash per sample, whatever the number of accounts. Weight of
 * rank k (0-based) is 1/(k+1)^exponent; rank k is account k. */
static int zipf_build(bench_t *bench) {
    uint32_t count = bench->options.account_count;
    double *scaled = malloc(sizeof(double) * count);
    uint32_t *small = malloc(sizeof(uint32_t) * count);
    uint32_t *large = malloc(sizeof(uint32_t) * count);
    bench->zipf_alias = malloc(sizeof(uint32_t) * count);
    bench->zipf_threshold = malloc(sizeof(uint64_t) * count);
    int result = -ENOMEM;
    if (scaled == NULL || small == NULL || large == NULL || bench->zipf_alias == NULL ||
        bench->zipf_threshold == NULL) {
        goto done;
    }
    double sum = 0;
    for (uint32_t rank = 0; rank < count; rank++) {
        scaled[rank] = pow((double)rank + 1.0, -bench->options.zipf_exponent);
        sum += scaled[rank];
    }
    uint32_t small_count = 0, large_count = 0;
    for (uint32_t rank = 0; rank < count; rank++) {
        scaled[rank] = scaled[rank] * count / sum;
        if (scaled[rank] < 1.0) {
            small[small_count++] = rank;
        } else {
            large[large_count++] = rank;
        }
    }
    while (small_count > 0 && large_count > 0) {
        uint32_t less = small[--small_count];
        uint32_t more = large[large_count - 1];
        bench->zipf_threshold[less] = (uint64_t)(scaled[less] * 4294967296.0);
        bench->zipf_alias[less] = more;
        scaled[more] -= 1.0 - scaled[less];
        if (scaled[more] < 1.0) {
            large_count--;
            small[small_count++] = more;
        }
    }
    /* What is left has probability 1 (up to rounding): always take the column. */
    while (large_count > 0) {
        uint32_t rank = large[--large_count];
        bench->zipf_threshold[rank] = 1ull << 32;
        bench->zipf_alias[rank] = rank;
    }
    while (small_count > 0) {
        uint32_t rank = small[--small_count];
        bench->zipf_threshold[rank] = 1ull << 32;
        bench->zipf_alias[rank] = rank;
    }
    result = 0;
done:
    free(scaled);
    free(small);
    free(large);
    return result;
}

static inline uint32_t zipf_sample(const bench_t *bench, uint64_t random) {
    uint32_t column = reduce32((uint32_t)random, bench->options.account_count);
    return (random >> 32) < bench->zipf_threshold[column] ? column : bench->zipf_alias[column];
}

/* The account indexes of transfer `index`: a pure function of (seed, index). */
static inline void transfer_accounts(const bench_t *bench, uint64_t index, uint32_t *debit_out,
                                     uint32_t *credit_out) {
    uint32_t count = bench->options.account_count;
    uint64_t random = hash_mix(bench->options.seed ^ (index * 0xD1B54A32D192ED03ull));
    uint32_t debit, credit;
    switch (bench->options.distribution) {
    case DISTRIBUTION_UNIFORM:
        debit = reduce32((uint32_t)random, count);
        credit = reduce32((uint32_t)(random >> 32), count - 1);
        if (credit >= debit) credit++;
        break;
    case DISTRIBUTION_HOT:
        /* Account 0 is credited by every transfer (a merchant or a fee account). */
        credit = 0;
        debit = 1 + reduce32((uint32_t)random, count - 1);
        break;
    default:
        debit = zipf_sample(bench, random);
        credit = debit;
        /* Both sides follow the law; a few more draws when they collide (about 1% of
         * transfers at exponent 1 hit the hottest account twice), then a neighbour. */
        for (uint32_t draw = 0; draw < 8 && credit == debit; draw++) {
            random = hash_mix(random);
            credit = zipf_sample(bench, random);
        }
        if (credit == debit) credit = (debit + 1) % count;
        break;
    }
    SZ_ASSERT(debit < count);
    SZ_ASSERT(credit < count);
    SZ_ASSERT(debit != credit);
    *debit_out = debit;
    *credit_out = credit;
}

/* The transfer a random lookup asks for. */
static inline uint64_t lookup_index(const bench_t *bench, uint64_t index, uint64_t bound,
                                    uint64_t stream) {
    return reduce64(hash_mix(bench->options.seed ^ stream ^ (index * 0x9E6C63D0676A9A99ull)),
                    bound);
}

/* ---- the batches ---------------------------------------------------------------------- */

static int batches_allocate(bench_t *bench) {
    uint32_t count = bench->options.client_count * bench->options.pipeline;
    bench->batches = calloc(count, sizeof(bench_batch_t));
    if (bench->batches == NULL) return -ENOMEM;
    bench->batch_count = count;
    /* Two buffers per batch (events, results); 2 MiB aligned so THP can back them. */
    size_t size = (size_t)count * 2u * BENCH_BUFFER_SIZE;
    size_t align = 2u << 20;
    uint8_t *region = mmap(NULL, size + align, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) return -errno;
    bench->buffers = region;
    bench->buffers_size = size + align;
    uint8_t *aligned = (uint8_t *)(((uintptr_t)region + align - 1) & ~(uintptr_t)(align - 1));
    (void)madvise(aligned, size, MADV_HUGEPAGE); /* a hint: fine if THP is off */
    memset(aligned, 0, size);                    /* fault everything in now */
    for (uint32_t index = 0; index < count; index++) {
        bench_batch_t *batch = &bench->batches[index];
        batch->bench = bench;
        /* Interleaved, so the first batches handed out go to every client in turn. */
        batch->client_index = index % bench->options.client_count;
        batch->events = aligned + (size_t)index * 2u * BENCH_BUFFER_SIZE;
        batch->results = batch->events + BENCH_BUFFER_SIZE;
    }
    return 0;
}

/* The I/O thread's part: stamp, hand back, wake the generator if it sleeps. */
static void batch_on_reply(void *context, sumzero_packet_t *packet) {
    bench_batch_t *batch = context;
    SZ_ASSERT(packet == &batch->packet);
    bench_t *bench = batch->bench;
    uint64_t now = clock_ns();
    batch->done_ns = now;
    bench->latencies_ns[batch->sequence] = now - batch->start_ns;
    pthread_mutex_lock(&bench->mutex);
    batch->next_free = bench->free_batches;
    bench->free_batches = batch;
    if (bench->generator_waiting) pthread_cond_signal(&bench->returned);
    pthread_mutex_unlock(&bench->mutex);
}

/* ---- the server ----------------------------------------------------------------------- */

/* Whether our server has exited; if so, keeps its status. */
static bool server_exited(bench_server_t *server) {
    if (server->pid <= 0) return server->exit_status >= 0;
    int status = 0;
    if (waitpid(server->pid, &status, WNOHANG) != server->pid) return false;
    server->pid = 0;
    server->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
}

static void server_log_tail(const bench_server_t *server) {
    FILE *log = fopen(server->log, "r");
    if (log == NULL) return;
    char lines[20][512];
    uint32_t count = 0;
    while (fgets(lines[count % 20], sizeof(lines[0]), log) != NULL) count++;
    fclose(log);
    uint32_t first = count > 20 ? count - 20 : 0;
    for (uint32_t line = first; line < count; line++) {
        fprintf(stderr, "server: %s", lines[line % 20]);
    }
}

/* Copies the value of `key=` in line up to the next space. */
static bool log_value(const char *line, const char *key, char *value_out, size_t value_size) {
    const char *start = strstr(line, key);
    if (start == NULL) return false;
    start += strlen(key);
    size_t length = strcspn(start, " \n");
    if (length == 0 || length >= value_size) return false;
    memcpy(value_out, start, length);
    value_out[length] = '\0';
    return true;
}

/* Polls the server's log for its `msg=listening` line (the process tells its real ports
 * there, since we ask for port 0). */
static int server_wait_listening(bench_server_t *server) {
    uint64_t deadline_ns = clock_ns() + BENCH_LISTEN_TIMEOUT_MS * 1000000ull;
    char line[1024];
    while (clock_ns() < deadline_ns) {
        FILE *log = fopen(server->log, "r");
        if (log != NULL) {
            while (fgets(line, sizeof(line), log) != NULL) {
                if (strstr(line, "msg=listening ") == NULL) continue;
                fclose(log);
                if (!log_value(line, " address=", server->address, sizeof(server->address))) {
                    return -EPROTO;
                }
                if (!log_value(line, "metrics_address=", server->metrics_address,
                               sizeof(server->metrics_address))) {
                    snprintf(server->metrics_address, sizeof(server->metrics_address), "none");
                }
                return 0;
            }
            fclose(log);
        }
        if (server_exited(server)) return -ECHILD;
        struct timespec pause = {.tv_nsec = 2 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return -ETIMEDOUT;
}

/* Where the data directory goes: --dir, else /tmp unless it is tmpfs (a journal in memory
 * would measure nothing durable), else the current directory. */
static const char *server_parent_directory(const bench_options_t *options) {
    if (options->directory != NULL) return options->directory;
    struct statfs info;
    if (statfs("/tmp", &info) == 0 && info.f_type != TMPFS_MAGIC &&
        info.f_type != RAMFS_MAGIC) {
        return "/tmp";
    }
    return ".";
}

static const char *filesystem_name(const char *path) {
    struct statfs info;
    if (statfs(path, &info) != 0) return "unknown";
    switch ((unsigned long)info.f_type) {
    case EXT4_SUPER_MAGIC: return "ext4";
    case XFS_SUPER_MAGIC: return "xfs";
    case BTRFS_SUPER_MAGIC: return "btrfs";
    case TMPFS_MAGIC: return "tmpfs (not durable!)";
    case OVERLAYFS_SUPER_MAGIC: return "overlayfs";
    default: return "other";
    }
}

#define SERVER_CAPACITY_COUNT 7u
#define SERVER_ARGS_MAX (8u + 2u * SERVER_CAPACITY_COUNT + BENCH_SERVER_ARGS_MAX + 1u)

/* The command line of our server: port 0 and capacities sized for the run, then the
 * user's --server-arg (a later flag wins). Returns the argument count. */
static uint32_t server_arguments(const bench_t *bench, const char **args,
                                 char numbers[SERVER_CAPACITY_COUNT][24]) {
    const bench_options_t *options = &bench->options;
    /* Slack past the run's own numbers: a resubmitted batch counts against the capacity
     * until it is applied (as `exists`). */
    uint64_t slack = (uint64_t)SUMZERO_BATCH_EVENTS_MAX *
                     (options->client_count * options->pipeline + 1);
    uint64_t messages = 2ull * options->client_count * options->pipeline + 8;
    if (messages < 64) messages = 64;
    if (messages > 1024) messages = 1024;
    const struct {
        const char *flag;
        uint64_t value;
    } capacities[SERVER_CAPACITY_COUNT] = {
        {"--accounts-max", options->account_count + slack},
        {"--transfers-max", options->transfer_count + slack},
        /* The ledger thread reserves every write in flight at its worst case (n pending
         * and 2n history rows per batch of n), though these transfers need neither. */
        {"--pending-max", slack},
        {"--history-max", 2 * slack},
        {"--pipeline-max", options->pipeline < 8 ? 8 : options->pipeline},
        {"--messages-max", messages},
        {"--clients-max", options->client_count < 1024 ? 1024 : options->client_count},
    };
    uint32_t count = 0;
    args[count++] = "sumzero";
    args[count++] = "start";
    args[count++] = "--data";
    args[count++] = bench->server.data;
    args[count++] = "--address";
    args[count++] = "127.0.0.1:0";
    args[count++] = "--metrics-address";
    args[count++] = "127.0.0.1:0";
    for (uint32_t index = 0; index < SERVER_CAPACITY_COUNT; index++) {
        snprintf(numbers[index], sizeof(numbers[index]), "%llu",
                 (unsigned long long)capacities[index].value);
        args[count++] = capacities[index].flag;
        args[count++] = numbers[index];
    }
    for (uint32_t index = 0; index < options->server_arg_count; index++) {
        args[count++] = options->server_args[index];
    }
    SZ_ASSERT(count < SERVER_ARGS_MAX);
    args[count] = NULL;
    return count;
}

/* Runs this very binary (its own path rather than /proc/self/exe, so that ps and top
 * name the server "sumzero", not "exe") with stderr into the log. */
static int server_spawn(bench_server_t *server, const char *const *args) {
    char binary[4096];
    ssize_t binary_size = readlink("/proc/self/exe", binary, sizeof(binary) - 1);
    if (binary_size <= 0) {
        fprintf(stderr, "bench: cannot read /proc/self/exe: %s\n", strerror(errno));
        return EX_OSERR;
    }
    binary[binary_size] = '\0';
    int log_fd = open(server->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        fprintf(stderr, "bench: cannot create %s: %s\n", server->log, strerror(errno));
        return EX_CANTCREAT;
    }
    pid_t parent_pid = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(log_fd);
        fprintf(stderr, "bench: cannot fork the server: %s\n", strerror(errno));
        return EX_OSERR;
    }
    if (pid == 0) {
        /* If the bench dies, the server drains and exits rather than linger. */
        (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent_pid) _exit(EX_SOFTWARE);
        dup2(log_fd, STDERR_FILENO);
        execv(binary, (char *const *)args);
        fprintf(stderr, "bench: cannot run %s: %s\n", binary, strerror(errno));
        _exit(127);
    }
    close(log_fd);
    server->pid = pid;
    return EX_OK;
}

/* Starts `sumzero start` on a fresh data directory and waits until it listens. */
static int server_start(bench_t *bench) {
    bench_server_t *server = &bench->server;
    server->exit_status = -1;
    const char *parent = server_parent_directory(&bench->options);
    snprintf(server->root, sizeof(server->root), "%s/sumzero-bench-XXXXXX", parent);
    if (mkdtemp(server->root) == NULL) {
        fprintf(stderr, "bench: cannot create a directory in %s: %s (use --dir)\n", parent,
                strerror(errno));
        server->root[0] = '\0';
        return EX_CANTCREAT;
    }
    snprintf(server->data, sizeof(server->data), "%s/data", server->root);
    snprintf(server->log, sizeof(server->log), "%s/server.log", server->root);
    const char *args[SERVER_ARGS_MAX];
    char numbers[SERVER_CAPACITY_COUNT][24];
    uint32_t count = server_arguments(bench, args, numbers);
    printf("server = sumzero");
    for (uint32_t index = 1; index < count; index++) printf(" %s", args[index]);
    printf("\n");
    fflush(stdout);
    int code = server_spawn(server, args);
    if (code != EX_OK) return code;
    int result = server_wait_listening(server);
    if (result != 0) {
        fprintf(stderr, "bench: the server did not start (%s); its log %s ends:\n",
                result == -ECHILD ? "it exited" : strerror(-result), server->log);
        server_log_tail(server);
        return EX_UNAVAILABLE;
    }
    printf("server pid = %d\n", (int)server->pid);
    printf("server data = %s (%s)\n", server->data, filesystem_name(server->root));
    printf("server address = %s\n", server->address);
    printf("server metrics = %s\n", server->metrics_address);
    return EX_OK;
}

/* SIGTERM drains: returns the exit status (0..255, 128+signal), or -ETIMEDOUT. */
static int server_stop(bench_server_t *server, int signal_number) {
    if (server_exited(server)) return server->exit_status;
    /* Never kill(0): that would signal our whole process group. */
    if (server->pid <= 0) return -ECHILD;
    if (kill(server->pid, signal_number) != 0) return -errno;
    uint64_t deadline_ns = clock_ns() + BENCH_STOP_TIMEOUT_MS * 1000000ull;
    while (clock_ns() < deadline_ns) {
        if (server_exited(server)) return server->exit_status;
        struct timespec pause = {.tv_nsec = 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    kill(server->pid, SIGKILL);
    int status;
    waitpid(server->pid, &status, 0);
    server->pid = 0;
    return -ETIMEDOUT;
}

static int remove_entry(const char *path, const struct stat *info, int type, struct FTW *ftw) {
    (void)info;
    (void)type;
    (void)ftw;
    return remove(path) == 0 ? 0 : -1;
}

static void server_cleanup(bench_t *bench) {
    bench_server_t *server = &bench->server;
    if (server->pid > 0) (void)server_stop(server, SIGKILL);
    if (server->root[0] == '\0') return;
    if (bench->options.keep_data) {
        printf("server data kept = %s\n", server->root);
        return;
    }
    if (nftw(server->root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        fprintf(stderr, "bench: could not remove %s: %s\n", server->root, strerror(errno));
    }
}


/* ---- CPU use ------------------------------------------------------------------------ */

/* CPU ticks (user + system) of every thread of a process, from /proc/PID/task/TID/stat:
 * which thread is the bottleneck shows here before any profiler is needed. */
static void thread_times_read(pid_t pid, thread_times_t *times_out) {
    times_out->count = 0;
    char path[96];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *tasks = opendir(path);
    if (tasks == NULL) return;
    struct dirent *entry;
    while ((entry = readdir(tasks)) != NULL && times_out->count < BENCH_THREADS_MAX) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
        char stat_path[400];
        snprintf(stat_path, sizeof(stat_path), "%s/%s/stat", path, entry->d_name);
        FILE *file = fopen(stat_path, "r");
        if (file == NULL) continue;
        char text[1024];
        size_t size = fread(text, 1, sizeof(text) - 1, file);
        fclose(file);
        text[size] = '\0';
        /* "tid (comm) state ppid ...": utime and stime are fields 14 and 15, counted
         * from after the last ')' because comm may hold spaces and parentheses. */
        char *open_paren = strchr(text, '(');
        char *close_paren = strrchr(text, ')');
        if (open_paren == NULL || close_paren == NULL || close_paren < open_paren) continue;
        unsigned long long user_ticks = 0, system_ticks = 0;
        if (sscanf(close_paren + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                   &user_ticks, &system_ticks) != 2) {
            continue;
        }
        uint32_t index = times_out->count++;
        times_out->tid[index] = atoi(entry->d_name);
        size_t name_size = (size_t)(close_paren - open_paren - 1);
        if (name_size >= sizeof(times_out->name[0])) name_size = sizeof(times_out->name[0]) - 1;
        memcpy(times_out->name[index], open_paren + 1, name_size);
        times_out->name[index][name_size] = '\0';
        times_out->ticks[index] = user_ticks + system_ticks;
        /* "run_ns wait_ns slices": how long the thread waited for a core; 0 when the
         * kernel keeps no schedstats. */
        times_out->wait_ns[index] = 0;
        snprintf(stat_path, sizeof(stat_path), "%s/%s/schedstat", path, entry->d_name);
        file = fopen(stat_path, "r");
        if (file != NULL) {
            unsigned long long run_ns = 0, wait_ns = 0;
            if (fscanf(file, "%llu %llu", &run_ns, &wait_ns) == 2) {
                times_out->wait_ns[index] = wait_ns;
            }
            fclose(file);
        }
    }
    closedir(tasks);
}

/* Prints each thread's share of a core between two readings, and returns the total. */
static double thread_times_print(const char *who, pid_t pid, const thread_times_t *before,
                                 const thread_times_t *after, uint64_t elapsed_ns) {
    double ticks_per_s = (double)sysconf(_SC_CLK_TCK);
    double total = 0;
    for (uint32_t index = 0; index < after->count; index++) {
        uint64_t ticks = after->ticks[index];
        uint64_t wait_ns = after->wait_ns[index];
        for (uint32_t old = 0; old < before->count; old++) {
            if (before->tid[old] != after->tid[index]) continue;
            ticks -= before->ticks[old];
            wait_ns -= before->wait_ns[old];
        }
        double cores = (double)ticks / ticks_per_s / ((double)elapsed_ns / 1e9);
        total += cores;
        if (cores < 0.005) continue;
        bool main_thread = after->tid[index] == (int)pid;
        const char *role = strcmp(who, "client") == 0 ? (main_thread ? " (generator)" : " (I/O)")
                                                      : (main_thread ? " (main)" : "");
        printf("%s thread %d %s%s = %.2f cores (waited for a core %.1f ms/s)\n", who,
               after->tid[index], after->name[index], role, cores,
               (double)wait_ns / 1e6 / ((double)elapsed_ns / 1e9));
    }
    printf("%s cpu = %.2f cores\n", who, total);
    return total;
}

/* Busy time of the whole machine (every core), from the first line of /proc/stat: what
 * the bench and the server do not account for was someone else's, and a run on a busy
 * machine says so. */
static uint64_t machine_busy_ticks(uint64_t *total_out) {
    FILE *file = fopen("/proc/stat", "r");
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0,
                       softirq = 0, steal = 0;
    if (file != NULL) {
        if (fscanf(file, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system,
                   &idle, &iowait, &irq, &softirq, &steal) != 8) {
            user = nice = system = idle = iowait = irq = softirq = steal = 0;
        }
        fclose(file);
    }
    uint64_t busy = user + nice + system + irq + softirq + steal;
    *total_out = busy + idle + iowait;
    return busy;
}

static void print_load_average(const char *label) {
    FILE *file = fopen("/proc/loadavg", "r");
    char text[128] = "unknown";
    if (file != NULL) {
        if (fgets(text, sizeof(text), file) == NULL) snprintf(text, sizeof(text), "unknown\n");
        fclose(file);
    }
    text[strcspn(text, "\n")] = '\0';
    printf("%s = %s\n", label, text);
}

/* ---- the server's own view: its Prometheus metrics ----------------------------------- */

#define METRICS_TEXT_SIZE_MAX (1u << 20)
#define METRICS_BUCKETS_MAX 32u

/* GET /metrics over a plain socket; returns the body's length, or -1. Best effort: the
 * figures it gives are a diagnosis beside the bench's own, never a verdict. */
static ssize_t metrics_fetch(const char *address, char *text, size_t text_size) {
    const char *colon = strrchr(address, ':');
    if (colon == NULL || strcmp(address, "none") == 0) return -1;
    char host[64];
    size_t host_size = (size_t)(colon - address);
    if (host_size >= sizeof(host)) return -1;
    memcpy(host, address, host_size);
    host[host_size] = '\0';
    struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &target.sin_addr) != 1) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval timeout = {.tv_sec = 5};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    static const char request[] = "GET /metrics HTTP/1.0\r\n\r\n";
    size_t size = 0;
    if (connect(fd, (struct sockaddr *)&target, sizeof(target)) != 0 ||
        write(fd, request, sizeof(request) - 1) != (ssize_t)(sizeof(request) - 1)) {
        close(fd);
        return -1;
    }
    for (;;) {
        if (size + 1 >= text_size) break;
        ssize_t got = read(fd, text + size, text_size - size - 1);
        if (got <= 0) break;
        size += (size_t)got;
    }
    close(fd);
    text[size] = '\0';
    char *body = strstr(text, "\r\n\r\n");
    if (body == NULL || strncmp(text, "HTTP/1.1 200", 12) != 0) return -1;
    body += 4;
    size_t body_size = size - (size_t)(body - text);
    memmove(text, body, body_size + 1);
    return (ssize_t)body_size;
}

/* A histogram's cumulative bucket counts and their upper bounds, in the text's order
 * (ascending); or a plain value (count 0, value set). */
typedef struct metric_reading {
    uint32_t bucket_count;
    double bounds[METRICS_BUCKETS_MAX];
    double cumulative[METRICS_BUCKETS_MAX];
    double value;
} metric_reading_t;

static void metric_read(const char *text, const char *name, metric_reading_t *reading_out) {
    *reading_out = (metric_reading_t){0};
    char bucket_prefix[128], value_prefix[128];
    snprintf(bucket_prefix, sizeof(bucket_prefix), "%s_bucket{le=\"", name);
    snprintf(value_prefix, sizeof(value_prefix), "%s ", name);
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        if (strncmp(line, bucket_prefix, strlen(bucket_prefix)) == 0 &&
            reading_out->bucket_count < METRICS_BUCKETS_MAX) {
            const char *bound = line + strlen(bucket_prefix);
            const char *count = strstr(bound, "} ");
            if (count != NULL) {
                uint32_t index = reading_out->bucket_count++;
                reading_out->bounds[index] = strncmp(bound, "+Inf", 4) == 0 ? INFINITY : strtod(bound, NULL);
                reading_out->cumulative[index] = strtod(count + 2, NULL);
            }
        } else if (strncmp(line, value_prefix, strlen(value_prefix)) == 0) {
            reading_out->value = strtod(line + strlen(value_prefix), NULL);
        }
        line = end != NULL ? end + 1 : NULL;
    }
}

/* The upper bound of the bucket holding the p-th percentile of what was recorded between
 * two readings (log2 buckets: within a factor of two). */
static double metric_percentile(const metric_reading_t *before, const metric_reading_t *after,
                                double percentile) {
    if (after->bucket_count == 0 || after->bucket_count != before->bucket_count) return NAN;
    double total = after->cumulative[after->bucket_count - 1] -
                   before->cumulative[before->bucket_count - 1];
    if (total <= 0) return NAN;
    double rank = ceil(total * percentile / 100.0);
    for (uint32_t index = 0; index < after->bucket_count; index++) {
        if (after->cumulative[index] - before->cumulative[index] >= rank) return after->bounds[index];
    }
    return INFINITY;
}

static double metric_count(const metric_reading_t *before, const metric_reading_t *after) {
    if (after->bucket_count == 0) return after->value - before->value;
    return after->cumulative[after->bucket_count - 1] - before->cumulative[before->bucket_count - 1];
}

static const char *const metric_histograms[] = {
    "sumzero_fdatasync_latency_seconds",
    "sumzero_commit_latency_seconds",
    "sumzero_request_latency_seconds",
    "sumzero_commit_ops",
    "sumzero_batch_events",
};

/* Prints the server's group commits and its own latencies over the transfer phase. */
static void metrics_report(const char *before_text, const char *after_text) {
    metric_reading_t before, after;
    for (uint32_t index = 0; index < sizeof(metric_histograms) / sizeof(metric_histograms[0]);
         index++) {
        const char *name = metric_histograms[index];
        metric_read(before_text, name, &before);
        metric_read(after_text, name, &after);
        double count = metric_count(&before, &after);
        bool seconds = strstr(name, "_seconds") != NULL;
        const char *label = name + strlen("sumzero_");
        printf("server %s count = %.0f\n", label, count);
        static const double percentiles[] = {50, 99, 100};
        for (uint32_t p = 0; p < 3; p++) {
            double bound = metric_percentile(&before, &after, percentiles[p]);
            if (isnan(bound)) continue;
            if (seconds) {
                printf("server %s p%.0f <= %.3f ms\n", label, percentiles[p], bound * 1e3);
            } else {
                printf("server %s p%.0f <= %.0f\n", label, percentiles[p], bound);
            }
        }
    }
}

/* ---- phases --------------------------------------------------------------------------- */

typedef struct phase {
    phase_kind_t kind;
    const char *name;
    uint32_t operation;
    uint64_t event_count;
    uint32_t batch_events_max;
    uint64_t rate_per_second; /* events/s; 0: unpaced */
} phase_t;

/* Transfers only change in id and accounts from batch to batch: the rest is set once. */
static void phase_transfer_template(bench_t *bench, uint32_t count) {
    for (uint32_t index = 0; index < bench->batch_count; index++) {
        sumzero_transfer_t *transfers = (sumzero_transfer_t *)bench->batches[index].events;
        memset(transfers, 0, sizeof(sumzero_transfer_t) * count);
        for (uint32_t event = 0; event < count; event++) {
            transfers[event].amount = 1;
            transfers[event].ledger = 1;
            transfers[event].code = 1;
        }
    }
}

static void phase_fill(bench_t *bench, const phase_t *phase, bench_batch_t *batch,
                       uint64_t first, uint32_t count) {
    const bench_options_t *options = &bench->options;
    sumzero_u128_t *ids = (sumzero_u128_t *)batch->events;
    switch (phase->kind) {
    case PHASE_ACCOUNTS: {
        sumzero_account_t *accounts = (sumzero_account_t *)batch->events;
        memset(accounts, 0, sizeof(sumzero_account_t) * count);
        for (uint32_t index = 0; index < count; index++) {
            accounts[index].id = account_id(bench, first + index);
            accounts[index].ledger = 1;
            accounts[index].code = 1;
        }
        break;
    }
    case PHASE_TRANSFERS: {
        sumzero_transfer_t *transfers = (sumzero_transfer_t *)batch->events;
        for (uint32_t index = 0; index < count; index++) {
            uint32_t debit, credit;
            transfer_accounts(bench, first + index, &debit, &credit);
            transfers[index].id = transfer_id(bench, first + index);
            transfers[index].debit_account_id = account_id(bench, debit);
            transfers[index].credit_account_id = account_id(bench, credit);
        }
        break;
    }
    case PHASE_LOOKUP_ACCOUNTS:
        for (uint32_t index = 0; index < count; index++) {
            ids[index] = account_id(
                bench, lookup_index(bench, first + index, options->account_count, 0xA5));
        }
        break;
    case PHASE_LOOKUP_TRANSFERS:
        for (uint32_t index = 0; index < count; index++) {
            ids[index] = transfer_id(
                bench, lookup_index(bench, first + index, options->transfer_count, 0x5A));
        }
        break;
    case PHASE_BALANCES:
        for (uint32_t index = 0; index < count; index++) ids[index] = account_id(bench, first + index);
        break;
    }
    memset(&batch->packet, 0, sizeof(batch->packet));
    batch->packet.operation = phase->operation;
    batch->packet.event_count = count;
    batch->packet.events = batch->events;
    batch->packet.results = batch->results;
    batch->packet.result_capacity = count;
    batch->packet.callback = batch_on_reply;
    batch->packet.context = batch;
}

static void phase_check_creates(const phase_t *phase, bench_batch_t *batch,
                                phase_outcome_t *outcome) {
    const sumzero_reply_t *reply = &batch->packet.reply;
    uint32_t exists = phase->kind == PHASE_ACCOUNTS ? (uint32_t)SUMZERO_CREATE_ACCOUNT_EXISTS
                                                     : (uint32_t)SUMZERO_CREATE_TRANSFER_EXISTS;
    const sumzero_create_result_t *results = (const sumzero_create_result_t *)batch->results;
    SZ_ASSERT(reply->result_count <= batch->packet.event_count);
    for (uint32_t index = 0; index < reply->result_count; index++) {
        if (results[index].result == exists && (reply->flags & SUMZERO_REPLY_RESUBMITTED) != 0) {
            outcome->events_exists_resubmitted++;
            continue;
        }
        if (outcome->events_failed == 0) outcome->result_first = results[index].result;
        outcome->events_failed++;
    }
}

/* Lookups come back in the order asked, missing ids left out: every id of ours exists, so
 * anything short or different is wrong. Transfers are checked field by field against the
 * generator, which is a function of the id. */
static void phase_check_lookups(const bench_t *bench, const phase_t *phase,
                                bench_batch_t *batch, phase_outcome_t *outcome) {
    const sumzero_reply_t *reply = &batch->packet.reply;
    const sumzero_u128_t *ids = (const sumzero_u128_t *)batch->events;
    uint32_t count = batch->packet.event_count;
    SZ_ASSERT(reply->result_count <= count);
    outcome->lookups_wrong += count - reply->result_count;
    for (uint32_t index = 0; index < reply->result_count; index++) {
        if (phase->kind == PHASE_LOOKUP_TRANSFERS) {
            const sumzero_transfer_t *transfer = &((const sumzero_transfer_t *)batch->results)[index];
            uint32_t debit, credit;
            transfer_accounts(bench, (uint64_t)ids[index] - 1, &debit, &credit);
            if (transfer->id != ids[index] ||
                transfer->debit_account_id != account_id(bench, debit) ||
                transfer->credit_account_id != account_id(bench, credit) ||
                transfer->amount != 1 || transfer->ledger != 1 || transfer->code != 1 ||
                transfer->timestamp == 0) {
                outcome->lookups_wrong++;
            }
        } else {
            const sumzero_account_t *account = &((const sumzero_account_t *)batch->results)[index];
            if (account->id != ids[index] || account->ledger != 1 || account->code != 1) {
                outcome->lookups_wrong++;
            }
            outcome->debits_posted += account->debits_posted;
            outcome->credits_posted += account->credits_posted;
        }
    }
}

/* A batch came back: its verdict joins the phase's (on the generator thread). */
static void phase_check(const bench_t *bench, const phase_t *phase, bench_batch_t *batch,
                        phase_outcome_t *outcome) {
    const sumzero_reply_t *reply = &batch->packet.reply;
    if (reply->error != 0) {
        if (outcome->requests_failed == 0) outcome->error_first = reply->error;
        outcome->requests_failed++;
        return;
    }
    if (phase->kind == PHASE_ACCOUNTS || phase->kind == PHASE_TRANSFERS) {
        phase_check_creates(phase, batch, outcome);
    } else {
        phase_check_lookups(bench, phase, batch, outcome);
    }
}

/* The next batch to fill: one never used in this phase or one whose reply is in. NULL
 * when the server we started has died (the clients would only retry until timeout). */
static bench_batch_t *batch_take(bench_t *bench) {
    pthread_mutex_lock(&bench->mutex);
    while (bench->free_batches == NULL) {
        bench->generator_waiting = true;
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 1;
        int result = pthread_cond_timedwait(&bench->returned, &bench->mutex, &deadline);
        bench->generator_waiting = false;
        if (result == ETIMEDOUT && bench->options.addresses == NULL &&
            server_exited(&bench->server)) {
            pthread_mutex_unlock(&bench->mutex);
            return NULL;
        }
    }
    bench_batch_t *batch = bench->free_batches;
    bench->free_batches = batch->next_free;
    pthread_mutex_unlock(&bench->mutex);
    return batch;
}

static void phase_pace(const phase_t *phase, uint64_t start_ns, uint64_t sequence,
                       bench_batch_t *batch) {
    if (phase->rate_per_second == 0) {
        batch->start_ns = clock_ns();
        return;
    }
    uint64_t due_ns = start_ns + (uint64_t)((sumzero_u128_t)sequence * phase->batch_events_max *
                                            NS_PER_S / phase->rate_per_second);
    if (clock_ns() < due_ns) {
        struct timespec due = {.tv_sec = (time_t)(due_ns / NS_PER_S),
                               .tv_nsec = (long)(due_ns % NS_PER_S)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR) {
        }
    }
    batch->start_ns = due_ns;
}

/* Runs one phase with every client's pipeline full (or paced), and checks every reply.
 * Returns 0, or -ECHILD when our server died. */
static int phase_run(bench_t *bench, const phase_t *phase, phase_outcome_t *outcome) {
    SZ_ASSERT(phase->batch_events_max > 0 && phase->batch_events_max <= SUMZERO_BATCH_EVENTS_MAX);
    uint64_t batch_total = (phase->event_count + phase->batch_events_max - 1) / phase->batch_events_max;
    *outcome = (phase_outcome_t){.event_count = phase->event_count, .batch_count = batch_total};
    outcome->latencies_ns = calloc(batch_total > 0 ? batch_total : 1, sizeof(uint64_t));
    SZ_ASSERT(outcome->latencies_ns != NULL); /* a few KiB; not outside input */
    bench->latencies_ns = outcome->latencies_ns;
    if (phase->kind == PHASE_TRANSFERS) phase_transfer_template(bench, phase->batch_events_max);
    bench->free_batches = NULL;
    for (uint32_t index = bench->batch_count; index > 0; index--) {
        bench_batch_t *batch = &bench->batches[index - 1];
        batch->used = false;
        batch->next_free = bench->free_batches;
        bench->free_batches = batch;
    }

    uint64_t start_ns = clock_ns();
    uint64_t done_ns = start_ns;
    uint64_t sequence_next = 0, done_count = 0;
    while (done_count < batch_total) {
        bench_batch_t *batch = batch_take(bench);
        if (batch == NULL) return -ECHILD;
        if (batch->used) {
            phase_check(bench, phase, batch, outcome);
            if (batch->done_ns > done_ns) done_ns = batch->done_ns;
            batch->used = false;
            done_count++;
        }
        if (sequence_next == batch_total) continue; /* drained: the batch rests */
        uint64_t first = sequence_next * phase->batch_events_max;
        uint64_t count = phase->event_count - first;
        if (count > phase->batch_events_max) count = phase->batch_events_max;
        phase_fill(bench, phase, batch, first, (uint32_t)count);
        batch->sequence = sequence_next;
        batch->first_index = first;
        batch->used = true;
        phase_pace(phase, start_ns, sequence_next, batch);
        int result = sumzero_submit(bench->clients[batch->client_index], &batch->packet);
        SZ_ASSERT(result == 0); /* every argument is ours and checked */
        sequence_next++;
    }
    outcome->elapsed_ns = done_ns - start_ns;
    return 0;
}

/* ---- reporting ------------------------------------------------------------------------ */

static void report_latencies(const char *prefix, phase_outcome_t *outcome) {
    uint64_t count = outcome->batch_count;
    if (count == 0) return;
    qsort(outcome->latencies_ns, count, sizeof(uint64_t), compare_u64);
    static const uint32_t percentiles[] = {50, 90, 99, 100};
    for (uint32_t index = 0; index < sizeof(percentiles) / sizeof(percentiles[0]); index++) {
        /* Nearest rank: the smallest sample with at least p% of them at or below it. */
        uint64_t rank = (count * percentiles[index] + 99) / 100;
        if (rank == 0) rank = 1;
        printf("%s latency p%u = %.2f ms\n", prefix, percentiles[index],
               (double)outcome->latencies_ns[rank - 1] / 1e6);
    }
}

/* Prints what went wrong in a phase; returns whether everything was right. */
static bool report_failures(const phase_t *phase, const phase_outcome_t *outcome) {
    bool good = true;
    if (outcome->requests_failed > 0) {
        printf("%s requests failed = %llu (first: %s)\n", phase->name,
               (unsigned long long)outcome->requests_failed,
               sumzero_error_message(outcome->error_first));
        good = false;
    }
    if (outcome->events_failed > 0) {
        printf("%s failed = %llu (first: %s)\n", phase->name,
               (unsigned long long)outcome->events_failed,
               phase->kind == PHASE_ACCOUNTS
                   ? sumzero_create_account_result_name(outcome->result_first)
                   : sumzero_create_transfer_result_name(outcome->result_first));
        good = false;
    }
    if (outcome->events_exists_resubmitted > 0) {
        printf("%s applied by a lost attempt (exists after a resubmission) = %llu\n",
               phase->name, (unsigned long long)outcome->events_exists_resubmitted);
    }
    if (outcome->lookups_wrong > 0) {
        printf("%s wrong or missing = %llu\n", phase->name,
               (unsigned long long)outcome->lookups_wrong);
        good = false;
    }
    return good;
}

static void print_u128(const char *label, sumzero_u128_t value) {
    char text[SUMZERO_U128_DECIMAL_SIZE];
    printf("%s = %s\n", label, sumzero_u128_format(value, text));
}

/* ---- options -------------------------------------------------------------------------- */

static void bench_usage(FILE *stream) {
    fprintf(stream,
            "usage: sumzero bench [OPTIONS]            the load generator (below)\n"
            "       sumzero bench core|journal [...]   the state machine or the journal alone\n"
            "\n"
            "Starts a server on a temporary data directory (or uses --addresses), creates the\n"
            "accounts, sends the transfers in batches from several clients with requests in\n"
            "flight, prints throughput and batch latency (p50 p90 p99 p100), then looks up\n"
            "random accounts and transfers, checks the balances, and stops the server with\n"
            "SIGTERM. Exits 70 if any transfer failed or anything read back was wrong.\n"
            "  --accounts N          accounts to create (default 10000)\n"
            "  --transfers N         transfers to send (default 10000000)\n"
            "  --batch-size N        events per request, 1..%u (default %u)\n"
            "  --clients N           client connections, each its own I/O thread, 1..%u\n"
            "                        (default 1)\n"
            "  --pipeline N          requests in flight per client, 1..%u (default 4)\n"
            "  --distribution uniform|zipfian|hot\n"
            "                        accounts of each transfer: uniform, zipfian by rank, or\n"
            "                        one account credited by every transfer (default uniform)\n"
            "  --zipf-exponent X     for zipfian, 0..10 (default 1.0)\n"
            "  --rate N              offer N transfers/s, paced; latency then counts from\n"
            "                        when each batch was due (default 0: as fast as possible)\n"
            "  --lookups N           random lookup_accounts and lookup_transfers each, in\n"
            "                        batches; 0 skips them (default 100000)\n"
            "  --addresses HOST:PORT use a running server instead of starting one\n"
            "  --cluster ID          the cluster id (default 0)\n"
            "  --dir DIR             where the temporary data directory goes (default /tmp\n"
            "                        unless it is tmpfs, else the current directory)\n"
            "  --keep-data           keep the data directory and the server log\n"
            "  --server-arg ARG      pass ARG on to `sumzero start` (repeatable)\n"
            "  --seed N              the generator's seed (default 42)\n",
            SUMZERO_BATCH_EVENTS_MAX, SUMZERO_BATCH_EVENTS_MAX, BENCH_CLIENTS_MAX,
            BENCH_PIPELINE_MAX);
}

static bool parse_u64(const char *flag, const char *text, uint64_t minimum, uint64_t maximum,
                      uint64_t *value_out) {
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 0);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || value < minimum ||
        value > maximum) {
        fprintf(stderr, "bench: --%s takes a whole number from %llu to %llu, not '%s'\n", flag,
                (unsigned long long)minimum, (unsigned long long)maximum, text);
        return false;
    }
    *value_out = value;
    return true;
}

static int bench_parse_option(int option, const char *flag, bench_options_t *options) {
    uint64_t value = 0;
    switch (option) {
    case 'a':
        if (!parse_u64(flag, optarg, 2, UINT32_MAX / 8, &value)) return EX_USAGE;
        options->account_count = (uint32_t)value;
        break;
    case 't':
        if (!parse_u64(flag, optarg, 1, UINT32_MAX / 8, &value)) return EX_USAGE;
        options->transfer_count = value;
        break;
    case 'b':
        if (!parse_u64(flag, optarg, 1, SUMZERO_BATCH_EVENTS_MAX, &value)) return EX_USAGE;
        options->batch_events_max = (uint32_t)value;
        break;
    case 'c':
        if (!parse_u64(flag, optarg, 1, BENCH_CLIENTS_MAX, &value)) return EX_USAGE;
        options->client_count = (uint32_t)value;
        break;
    case 'p':
        if (!parse_u64(flag, optarg, 1, BENCH_PIPELINE_MAX, &value)) return EX_USAGE;
        options->pipeline = (uint32_t)value;
        break;
    case 'r':
        if (!parse_u64(flag, optarg, 0, 1000000000ull, &value)) return EX_USAGE;
        options->rate_per_second = value;
        break;
    case 'l':
        if (!parse_u64(flag, optarg, 0, UINT32_MAX, &value)) return EX_USAGE;
        options->lookup_count = value;
        break;
    case 's':
        if (!parse_u64(flag, optarg, 0, UINT64_MAX, &value)) return EX_USAGE;
        options->seed = value;
        break;
    case 'd':
        for (value = 0; value < 3; value++) {
            if (strcmp(optarg, distribution_names[value]) == 0) break;
        }
        if (value == 3) {
            fprintf(stderr, "bench: --distribution takes uniform, zipfian or hot, not '%s'\n",
                    optarg);
            return EX_USAGE;
        }
        options->distribution = (bench_distribution_t)value;
        break;
    case 'z': {
        char *end = NULL;
        double exponent = strtod(optarg, &end);
        if (end == optarg || *end != '\0' || !(exponent >= 0.0 && exponent <= 10.0)) {
            fprintf(stderr, "bench: --zipf-exponent takes a number from 0 to 10, not '%s'\n",
                    optarg);
            return EX_USAGE;
        }
        options->zipf_exponent = exponent;
        break;
    }
    case 'A': options->addresses = optarg; break;
    case 'C': options->cluster = optarg; break;
    case 'D': options->directory = optarg; break;
    case 'k': options->keep_data = true; break;
    case 'S':
        if (options->server_arg_count == BENCH_SERVER_ARGS_MAX) {
            fprintf(stderr, "bench: at most %u --server-arg\n", BENCH_SERVER_ARGS_MAX);
            return EX_USAGE;
        }
        options->server_args[options->server_arg_count++] = optarg;
        break;
    case 'h': bench_usage(stdout); return -1;
    default: bench_usage(stderr); return EX_USAGE;
    }
    return EX_OK;
}

static int bench_parse(int argc, char **argv, bench_options_t *options) {
    static const struct option long_options[] = {
        {"accounts", required_argument, NULL, 'a'},
        {"transfers", required_argument, NULL, 't'},
        {"batch-size", required_argument, NULL, 'b'},
        {"clients", required_argument, NULL, 'c'},
        {"pipeline", required_argument, NULL, 'p'},
        {"distribution", required_argument, NULL, 'd'},
        {"zipf-exponent", required_argument, NULL, 'z'},
        {"rate", required_argument, NULL, 'r'},
        {"lookups", required_argument, NULL, 'l'},
        {"addresses", required_argument, NULL, 'A'},
        {"cluster", required_argument, NULL, 'C'},
        {"dir", required_argument, NULL, 'D'},
        {"keep-data", no_argument, NULL, 'k'},
        {"server-arg", required_argument, NULL, 'S'},
        {"seed", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    int option, index = 0;
    while ((option = getopt_long(argc, argv, "", long_options, &index)) != -1) {
        const char *flag = "?";
        for (const struct option *entry = long_options; entry->name != NULL; entry++) {
            if (entry->val == option) flag = entry->name;
        }
        int code = bench_parse_option(option, flag, options);
        if (code != EX_OK) return code;
    }
    if (optind != argc) {
        fprintf(stderr, "bench: unexpected argument '%s'; see `sumzero bench --help`\n",
                argv[optind]);
        return EX_USAGE;
    }
    if (options->addresses != NULL && (options->keep_data || options->directory != NULL ||
                                       options->server_arg_count > 0)) {
        fprintf(stderr, "bench: --dir, --keep-data and --server-arg are for the server the "
                        "bench starts, not for --addresses\n");
        return EX_USAGE;
    }
    return EX_OK;
}

static void bench_print_configuration(const bench_t *bench, int argc, char **argv) {
    const bench_options_t *options = &bench->options;
    printf("command = sumzero");
    for (int index = 0; index < argc; index++) printf(" %s", argv[index]);
    printf("\n");
    printf("version = %s\n", sumzero_version());
    printf("cores = %ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf("accounts = %u\n", options->account_count);
    printf("transfers = %llu\n", (unsigned long long)options->transfer_count);
    printf("batch size = %u\n", options->batch_events_max);
    printf("clients = %u\n", options->client_count);
    printf("pipeline = %u requests per client\n", options->pipeline);
    printf("distribution = %s\n", distribution_names[options->distribution]);
    if (options->distribution == DISTRIBUTION_ZIPFIAN) {
        printf("zipf exponent = %.3f\n", options->zipf_exponent);
    }
    if (options->rate_per_second == 0) {
        printf("load offered = unlimited\n");
    } else {
        printf("load offered = %llu transfers/s\n", (unsigned long long)options->rate_per_second);
    }
    printf("lookups = %llu per operation\n", (unsigned long long)options->lookup_count);
    printf("seed = %llu\n", (unsigned long long)options->seed);
    printf("id prefix = 0x%016llx\n", (unsigned long long)bench->id_prefix);
    if (options->addresses != NULL) printf("server = %s (running)\n", options->addresses);
    fflush(stdout);
}

/* ---- the run -------------------------------------------------------------------------- */

static int bench_clients_open(bench_t *bench) {
    sumzero_client_options_t options = {
        .addresses = bench->options.addresses != NULL ? bench->options.addresses
                                                      : bench->server.address,
        .cluster_id = bench->cluster_id,
        .request_timeout_ms = BENCH_REQUEST_TIMEOUT_MS,
        .pipeline_max = bench->options.pipeline,
    };
    for (uint32_t index = 0; index < bench->options.client_count; index++) {
        int result = sumzero_client_open(&bench->clients[index], &options);
        if (result != 0) {
            fprintf(stderr, "bench: cannot open client %u for %s: %s\n", index,
                    options.addresses, sumzero_error_message(result));
            return EX_UNAVAILABLE;
        }
    }
    return EX_OK;
}

static void bench_clients_close(bench_t *bench) {
    sumzero_client_stats_t total = {0};
    for (uint32_t index = 0; index < bench->options.client_count; index++) {
        if (bench->clients[index] == NULL) continue;
        sumzero_client_stats_t stats;
        sumzero_client_stats(bench->clients[index], &stats);
        total.requests_sent += stats.requests_sent;
        total.requests_resent += stats.requests_resent;
        total.requests_resubmitted += stats.requests_resubmitted;
        total.connects += stats.connects;
        total.timeouts += stats.timeouts;
        sumzero_client_close(bench->clients[index]);
        bench->clients[index] = NULL;
    }
    printf("client requests = %llu (resent %llu, resubmitted %llu, connections %llu, "
           "timeouts %llu)\n",
           (unsigned long long)total.requests_sent, (unsigned long long)total.requests_resent,
           (unsigned long long)total.requests_resubmitted, (unsigned long long)total.connects,
           (unsigned long long)total.timeouts);
}

static uint64_t process_cpu_ns(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return ((uint64_t)usage.ru_utime.tv_sec + (uint64_t)usage.ru_stime.tv_sec) * NS_PER_S +
           ((uint64_t)usage.ru_utime.tv_usec + (uint64_t)usage.ru_stime.tv_usec) * 1000u;
}

/* Runs a phase and reports a server death; returns false when the run must stop. */
static bool bench_phase(bench_t *bench, const phase_t *phase, phase_outcome_t *outcome,
                        bool *good) {
    if (phase_run(bench, phase, outcome) != 0) {
        fprintf(stderr, "bench: the server exited (status %d) during %s; its log ends:\n",
                bench->server.exit_status, phase->name);
        server_log_tail(&bench->server);
        *good = false;
        return false;
    }
    if (!report_failures(phase, outcome)) *good = false;
    return true;
}

static bool bench_transfers(bench_t *bench, bool *good) {
    const bench_options_t *options = &bench->options;
    phase_t phase = {PHASE_TRANSFERS, "transfers", SUMZERO_OPERATION_CREATE_TRANSFERS,
                     options->transfer_count, options->batch_events_max,
                     options->rate_per_second};
    phase_outcome_t outcome;
    static thread_times_t server_before, server_after, client_before, client_after;
    bool ours = bench->server.pid > 0;
    char *metrics_before = malloc(METRICS_TEXT_SIZE_MAX);
    char *metrics_after = malloc(METRICS_TEXT_SIZE_MAX);
    const char *metrics_address = ours ? bench->server.metrics_address : "none";
    bool metrics = metrics_before != NULL && metrics_after != NULL &&
                   metrics_fetch(metrics_address, metrics_before, METRICS_TEXT_SIZE_MAX) > 0;
    if (ours) thread_times_read(bench->server.pid, &server_before);
    thread_times_read(getpid(), &client_before);
    uint64_t cpu_ns = process_cpu_ns();
    uint64_t machine_total = 0, machine_total_after = 0;
    uint64_t machine_busy = machine_busy_ticks(&machine_total);
    bool going = bench_phase(bench, &phase, &outcome, good);
    cpu_ns = process_cpu_ns() - cpu_ns;
    machine_busy = machine_busy_ticks(&machine_total_after) - machine_busy;
    if (going) {
        if (ours) thread_times_read(bench->server.pid, &server_after);
        thread_times_read(getpid(), &client_after);
        double seconds = (double)outcome.elapsed_ns / 1e9;
        printf("transfers = %llu in %.3f s (%llu batches)\n",
               (unsigned long long)options->transfer_count, seconds,
               (unsigned long long)outcome.batch_count);
        printf("load accepted = %.0f transfers/s\n", (double)options->transfer_count / seconds);
        report_latencies("batch", &outcome);
        thread_times_print("client", getpid(), &client_before, &client_after, outcome.elapsed_ns);
        double client_cores = (double)cpu_ns / (double)outcome.elapsed_ns;
        printf("client cpu (rusage) = %.2f cores\n", client_cores);
        double server_cores = 0;
        if (ours) {
            server_cores = thread_times_print("server", bench->server.pid, &server_before,
                                              &server_after, outcome.elapsed_ns);
        }
        double cores = (double)sysconf(_SC_NPROCESSORS_ONLN);
        double machine_cores = machine_total_after > machine_total
                                   ? (double)machine_busy * cores /
                                         (double)(machine_total_after - machine_total)
                                   : 0;
        printf("machine cpu = %.2f of %.0f cores busy (others: %.2f)\n", machine_cores, cores,
               machine_cores > client_cores + server_cores
                   ? machine_cores - client_cores - server_cores
                   : 0.0);
        if (metrics && metrics_fetch(metrics_address, metrics_after, METRICS_TEXT_SIZE_MAX) > 0) {
            metrics_report(metrics_before, metrics_after);
        }
        fflush(stdout);
    }
    free(outcome.latencies_ns);
    free(metrics_before);
    free(metrics_after);
    return going;
}

static bool bench_lookups(bench_t *bench, phase_kind_t kind, bool *good) {
    const bench_options_t *options = &bench->options;
    bool accounts = kind == PHASE_LOOKUP_ACCOUNTS;
    phase_t phase = {kind, accounts ? "lookup_accounts" : "lookup_transfers",
                     accounts ? SUMZERO_OPERATION_LOOKUP_ACCOUNTS
                              : SUMZERO_OPERATION_LOOKUP_TRANSFERS,
                     options->lookup_count, options->batch_events_max, 0};
    phase_outcome_t outcome;
    bool going = bench_phase(bench, &phase, &outcome, good);
    if (going) {
        double seconds = (double)outcome.elapsed_ns / 1e9;
        printf("%s = %llu in %.3f s (%llu batches)\n", phase.name,
               (unsigned long long)options->lookup_count, seconds,
               (unsigned long long)outcome.batch_count);
        printf("%s rate = %.0f lookups/s\n", phase.name, (double)options->lookup_count / seconds);
        report_latencies(phase.name, &outcome);
        fflush(stdout);
    }
    free(outcome.latencies_ns);
    return going;
}

/* Every transfer moved 1 from one account of this run to another: the sums of debits and
 * credits posted over the run's accounts are both the number of transfers applied, so a
 * transfer lost or applied twice shows here. */
static bool bench_balances(bench_t *bench, bool transfers_good, bool *good) {
    const bench_options_t *options = &bench->options;
    phase_t phase = {PHASE_BALANCES, "balance check", SUMZERO_OPERATION_LOOKUP_ACCOUNTS,
                     options->account_count, SUMZERO_BATCH_EVENTS_MAX, 0};
    phase_outcome_t outcome;
    bool going = bench_phase(bench, &phase, &outcome, good);
    if (going) {
        sumzero_u128_t expected = options->transfer_count;
        print_u128("debits posted", outcome.debits_posted);
        print_u128("credits posted", outcome.credits_posted);
        if (outcome.debits_posted != outcome.credits_posted ||
            (transfers_good && outcome.debits_posted != expected)) {
            printf("balance check = WRONG (expected both to be %llu)\n",
                   (unsigned long long)options->transfer_count);
            *good = false;
        } else if (!transfers_good) {
            printf("balance check = sums equal, but transfers failed\n");
        } else {
            printf("balance check = ok\n");
        }
    }
    free(outcome.latencies_ns);
    return going;
}

static int bench_setup(bench_t *bench) {
    const bench_options_t *options = &bench->options;
    if (options->cluster != NULL && sumzero_u128_parse(options->cluster, &bench->cluster_id) != 0) {
        fprintf(stderr, "bench: --cluster takes a u128, not '%s'\n", options->cluster);
        return EX_USAGE;
    }
    /* Not 0 (ids would collide with small hand-made ones) nor all ones (an id of
     * 2^128-1 is invalid): a fresh prefix for every run. */
    do {
        if (getrandom(&bench->id_prefix, sizeof(bench->id_prefix), 0) != sizeof(bench->id_prefix)) {
            bench->id_prefix = clock_ns() ^ ((uint64_t)getpid() << 32);
        }
    } while (bench->id_prefix == 0 || bench->id_prefix == UINT64_MAX);
    if (options->distribution == DISTRIBUTION_ZIPFIAN && zipf_build(bench) != 0) {
        fprintf(stderr, "bench: out of memory for the zipfian table\n");
        return EX_OSERR;
    }
    int result = batches_allocate(bench);
    if (result != 0) {
        fprintf(stderr, "bench: cannot allocate %u batch buffers: %s\n",
                options->client_count * options->pipeline * 2, strerror(-result));
        return EX_OSERR;
    }
    pthread_mutex_init(&bench->mutex, NULL);
    pthread_cond_init(&bench->returned, NULL);
    return EX_OK;
}

static void bench_teardown(bench_t *bench) {
    if (bench->buffers != NULL) munmap(bench->buffers, bench->buffers_size);
    free(bench->batches);
    free(bench->zipf_alias);
    free(bench->zipf_threshold);
}

/* The phases in order; false as soon as the server is gone. */
static void bench_phases(bench_t *bench, bool *good) {
    phase_t accounts = {PHASE_ACCOUNTS, "accounts", SUMZERO_OPERATION_CREATE_ACCOUNTS,
                        bench->options.account_count, SUMZERO_BATCH_EVENTS_MAX, 0};
    phase_outcome_t outcome;
    bool going = bench_phase(bench, &accounts, &outcome, good);
    free(outcome.latencies_ns);
    if (!going || !*good) return;
    printf("accounts created = %u in %.3f s\n", bench->options.account_count,
           (double)outcome.elapsed_ns / 1e9);
    fflush(stdout);
    if (!bench_transfers(bench, good)) return;
    bool transfers_good = *good;
    if (bench->options.lookup_count > 0) {
        if (!bench_lookups(bench, PHASE_LOOKUP_ACCOUNTS, good)) return;
        if (!bench_lookups(bench, PHASE_LOOKUP_TRANSFERS, good)) return;
    }
    (void)bench_balances(bench, transfers_good, good);
}

int sz_command_bench_server(int argc, char **argv) {
    static bench_t bench; /* large, and one per process */
    bench = (bench_t){.options = {.account_count = 10000,
                                  .transfer_count = 10000000,
                                  .batch_events_max = SUMZERO_BATCH_EVENTS_MAX,
                                  .client_count = 1,
                                  .pipeline = 4,
                                  .distribution = DISTRIBUTION_UNIFORM,
                                  .zipf_exponent = 1.0,
                                  .lookup_count = 100000,
                                  .seed = 42}};
    int code = bench_parse(argc, argv, &bench.options);
    if (code != EX_OK) return code < 0 ? EX_OK : code;
    code = bench_setup(&bench);
    if (code != EX_OK) {
        bench_teardown(&bench);
        return code;
    }
    bench_print_configuration(&bench, argc, argv);
    print_load_average("load average before");
    bench.server.exit_status = -1;
    if (bench.options.addresses == NULL) code = server_start(&bench);
    if (code == EX_OK) code = bench_clients_open(&bench);
    bool good = code == EX_OK;
    if (good) bench_phases(&bench, &good);
    bench_clients_close(&bench);
    if (bench.options.addresses == NULL && bench.server.root[0] != '\0') {
        int status = server_stop(&bench.server, SIGTERM);
        if (status < 0) {
            printf("server exit status = none (%s)\n", strerror(-status));
        } else {
            printf("server exit status = %d\n", status);
        }
        if (status != 0) {
            good = false;
            if (code == EX_OK) server_log_tail(&bench.server); /* else shown already */
        }
    }
    server_cleanup(&bench);
    bench_teardown(&bench);
    print_load_average("load average after");
    if (code != EX_OK) return code;
    printf("result = %s\n", good ? "ok" : "FAILED");
    return good ? EX_OK : EX_SOFTWARE;
}
