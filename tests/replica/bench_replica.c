/* bench_replica.c: the ledger thread's own ceiling, without sockets. The main thread plays
 * the gateway: it fills sealed create_transfers frames of 8190 transfers between 10,000
 * accounts (uniform), pushes them through the request ring and recycles the messages as
 * their replies come back; the replica runs on its own thread with a real data directory
 * (io_uring, O_DIRECT, fdatasync) or in memory (--memory: no disk at all).
 *
 *   build/tests/replica/bench_replica [--transfers N] [--depth D] [--memory] [--dir PARENT]
 *
 * Prints transfers/s, batch latency percentiles (push to reply), the ledger thread's CPU
 * use, its loop passes and sleeps, and the journal's group commits. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "replica/replica.h"

#define ACCOUNT_COUNT 10000u
#define MESSAGE_COUNT 16u
#define RING_CAPACITY 16u
#define CLUSTER_ID ((sz_u128)7)

typedef struct bench {
    sz_ring_t requests;
    sz_ring_t replies;
    sz_metrics_t metrics;
    sz_replica_t *replica;
    sz_storage_t *storage;
    pthread_t thread;
    int run_result;
    sz_message_t *messages;
    uint64_t pushed_ns[MESSAGE_COUNT];
    uint32_t request_number;
    uint64_t random;
} bench_t;

static uint64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static uint64_t random_next(uint64_t *state) {
    *state += 0x9E3779B97F4A7C15ull;
    uint64_t value = *state;
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ull;
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBull;
    return value ^ (value >> 31);
}

static int compare_u64(const void *left, const void *right) {
    uint64_t a = *(const uint64_t *)left, b = *(const uint64_t *)right;
    return a < b ? -1 : a > b;
}

static double histogram_mean(const sz_histogram_t *histogram) {
    uint64_t count = atomic_load(&histogram->count);
    return count == 0 ? 0.0 : (double)atomic_load(&histogram->sum) / (double)count;
}

static void *bench_thread(void *context) {
    bench_t *bench = context;
    bench->run_result = sz_replica_run(bench->replica);
    return NULL;
}

static void frame_seal(bench_t *bench, sz_message_t *message, uint32_t operation,
                       uint32_t body_size) {
    sz_frame_header_t *header = sz_message_request_header(message);
    memset(header, 0, sizeof(*header));
    header->cluster_id = CLUSTER_ID;
    header->client_id = 42;
    header->request_number = ++bench->request_number;
    header->trace_id = bench->request_number;
    header->command = SZ_COMMAND_REQUEST;
    header->operation = (uint8_t)operation;
    header->body_size = body_size;
    sz_frame_header_seal(header, message->request + SZ_FRAME_HEADER_SIZE);
}

static void fill_accounts(bench_t *bench, sz_message_t *message, uint32_t first, uint32_t count) {
    sz_account_t *accounts = (sz_account_t *)(message->request + SZ_FRAME_HEADER_SIZE);
    memset(accounts, 0, count * sizeof(*accounts));
    for (uint32_t index = 0; index < count; index++) {
        accounts[index].id = first + index;
        accounts[index].ledger = 1;
        accounts[index].code = 1;
    }
    frame_seal(bench, message, SZ_OPERATION_CREATE_ACCOUNTS, count * (uint32_t)sizeof(*accounts));
}

/* The first use of a message draws its accounts; later uses only renumber the ids and
 * reseal, so the producer stays far ahead of the ledger thread. */
static void fill_transfers(bench_t *bench, sz_message_t *message, uint64_t first_id,
                           uint32_t count, bool fresh) {
    sz_transfer_t *transfers = (sz_transfer_t *)(message->request + SZ_FRAME_HEADER_SIZE);
    if (!fresh) {
        for (uint32_t index = 0; index < count; index++) transfers[index].id = first_id + index;
        frame_seal(bench, message, SZ_OPERATION_CREATE_TRANSFERS,
                   count * (uint32_t)sizeof(*transfers));
        return;
    }
    memset(transfers, 0, count * sizeof(*transfers));
    for (uint32_t index = 0; index < count; index++) {
        uint64_t value = random_next(&bench->random);
        uint32_t debit = (uint32_t)(value % ACCOUNT_COUNT);
        uint32_t credit = (uint32_t)((value >> 32) % (ACCOUNT_COUNT - 1));
        if (credit >= debit) credit++;
        transfers[index].id = first_id + index;
        transfers[index].debit_account_id = debit + 1;
        transfers[index].credit_account_id = credit + 1;
        transfers[index].amount = 1;
        transfers[index].ledger = 1;
        transfers[index].code = 1;
    }
    frame_seal(bench, message, SZ_OPERATION_CREATE_TRANSFERS, count * (uint32_t)sizeof(*transfers));
}

/* Waits for one reply; checks it; returns the message. */
static sz_message_t *reply_wait(bench_t *bench) {
    void *pointer = NULL;
    while (sz_ring_pop(&bench->replies, &pointer, 1) == 0) {
        (void)sz_ring_wait_readable(&bench->replies, 2000, 0);
    }
    sz_message_t *message = pointer;
    const sz_frame_header_t *reply = sz_message_reply_header(message);
    if (reply->status != SZ_STATUS_OK || reply->body_size != 0) {
        fprintf(stderr, "bench_replica: unexpected reply: status %s, %u result bytes\n",
                sz_status_name(reply->status), reply->body_size);
        exit(1);
    }
    return message;
}


/* One-transfer writes, one at a time: the latency of a lone small request, and what one
 * pass of the loop costs while it waits for the disk (passes per request). */
static void bench_small(bench_t *bench, uint32_t count) {
    uint64_t *latency_ns = calloc(count, sizeof(uint64_t));
    sz_replica_info_t before;
    sz_replica_info(bench->replica, &before);
    pthread_create(&bench->thread, NULL, bench_thread, bench);
    pthread_setname_np(bench->thread, "sz_ledger");
    clockid_t cpu_clock;
    pthread_getcpuclockid(bench->thread, &cpu_clock);
    struct timespec cpu_start, cpu_end;
    clock_gettime(cpu_clock, &cpu_start);
    uint64_t start_ns = monotonic_ns();
    for (uint32_t index = 0; index < count; index++) {
        sz_message_t *message = &bench->messages[0];
        sz_transfer_t *transfer = (sz_transfer_t *)(message->request + SZ_FRAME_HEADER_SIZE);
        *transfer = (sz_transfer_t){.id = ((sz_u128)1 << 64) + index, .debit_account_id = 1,
                                    .credit_account_id = 2, .amount = 1, .ledger = 1,
                                    .code = 1};
        frame_seal(bench, message, SZ_OPERATION_CREATE_TRANSFERS, sizeof(*transfer));
        void *pointer = message;
        uint64_t pushed_ns = monotonic_ns();
        while (sz_ring_push(&bench->requests, &pointer, 1) == 0) {}
        (void)reply_wait(bench);
        latency_ns[index] = monotonic_ns() - pushed_ns;
    }
    uint64_t elapsed_ns = monotonic_ns() - start_ns;
    clock_gettime(cpu_clock, &cpu_end);
    sz_replica_stop(bench->replica);
    pthread_join(bench->thread, NULL);
    sz_replica_info_t after;
    sz_replica_info(bench->replica, &after);
    uint64_t cpu_ns = (uint64_t)(cpu_end.tv_sec - cpu_start.tv_sec) * 1000000000ull +
                      (uint64_t)cpu_end.tv_nsec - (uint64_t)cpu_start.tv_nsec;
    uint64_t passes = after.loop_count - before.loop_count;
    qsort(latency_ns, count, sizeof(uint64_t), compare_u64);
    printf("  lone 1-transfer writes: p50 %.0f us, p99 %.0f us; %.0f loop passes a request, "
           "%.0f ns CPU a pass, ledger thread %.0f%% busy\n",
           (double)latency_ns[count / 2] / 1e3, (double)latency_ns[count * 99 / 100] / 1e3,
           (double)passes / count, (double)cpu_ns / (double)passes,
           100.0 * (double)cpu_ns / (double)elapsed_ns);
    free(latency_ns);
}

int main(int argc, char **argv) {
    uint64_t transfer_count = 10000000;
    uint32_t depth = 4;
    bool memory = false;
    const char *parent = "/tmp";
    for (int index = 1; index < argc; index++) {
        if (strcmp(argv[index], "--transfers") == 0 && index + 1 < argc) {
            transfer_count = strtoull(argv[++index], NULL, 10);
        } else if (strcmp(argv[index], "--depth") == 0 && index + 1 < argc) {
            depth = (uint32_t)strtoul(argv[++index], NULL, 10);
        } else if (strcmp(argv[index], "--memory") == 0) {
            memory = true;
        } else if (strcmp(argv[index], "--dir") == 0 && index + 1 < argc) {
            parent = argv[++index];
        } else {
            fprintf(stderr, "usage: bench_replica [--transfers N] [--depth D] [--memory] "
                            "[--dir PARENT]\n");
            return 64;
        }
    }
    if (depth < 1 || depth > MESSAGE_COUNT) depth = 4;
    static bench_t bench;
    bench.random = 1;
    char directory[256] = "";
    int result = 0;
    if (memory) {
        result = sz_storage_fault_init(&bench.storage);
    } else {
        snprintf(directory, sizeof(directory), "%s/sz_bench_replica_XXXXXX", parent);
        if (mkdtemp(directory) == NULL) {
            perror("mkdtemp");
            return 74;
        }
        result = sz_storage_uring_init(directory, &bench.storage);
    }
    if (result < 0) {
        fprintf(stderr, "bench_replica: storage: %s\n", strerror(-result));
        return 74;
    }
    /* In memory, 1 GiB segments would be 1 GiB of RAM each. */
    sz_journal_format_options_t format = {
        .cluster_id = CLUSTER_ID,
        .segment_size = memory ? 64ull * SZ_JOURNAL_SEGMENT_SIZE_MIN : 0};
    if (sz_journal_format(bench.storage, &format) != 0 ||
        sz_ring_init(&bench.requests, RING_CAPACITY) != 0 ||
        sz_ring_init(&bench.replies, RING_CAPACITY) != 0) {
        fprintf(stderr, "bench_replica: set-up failed\n");
        return 74;
    }
    bench.messages = aligned_alloc(64, MESSAGE_COUNT * sizeof(sz_message_t));
    memset(bench.messages, 0, MESSAGE_COUNT * sizeof(sz_message_t));
    uint64_t transfers_max = transfer_count + 16 * SZ_BATCH_EVENTS_MAX;
    sz_replica_config_t config = {
        .ledger = {.accounts_max = ACCOUNT_COUNT, .transfers_max = (uint32_t)transfers_max,
                   .pending_max = 1u << 18, .history_max = 1u << 19, .hash_seed = 3,
                   .prefault = true},
        .storage = bench.storage,
        .requests = &bench.requests,
        .replies = &bench.replies,
        .metrics = &bench.metrics,
    };
    sz_journal_problem_t problem;
    result = sz_replica_open(&config, &bench.replica, &problem);
    if (result < 0) {
        fprintf(stderr, "bench_replica: open: %s: %s\n", strerror(-result), problem.reason);
        return 74;
    }
    pthread_create(&bench.thread, NULL, bench_thread, &bench);
    pthread_setname_np(bench.thread, "sz_ledger");

    /* Accounts first, one request at a time. */
    for (uint32_t first = 1; first <= ACCOUNT_COUNT; first += SZ_BATCH_EVENTS_MAX) {
        uint32_t count = ACCOUNT_COUNT - first + 1;
        if (count > SZ_BATCH_EVENTS_MAX) count = SZ_BATCH_EVENTS_MAX;
        fill_accounts(&bench, &bench.messages[0], first, count);
        void *pointer = &bench.messages[0];
        while (sz_ring_push(&bench.requests, &pointer, 1) == 0) {}
        (void)reply_wait(&bench);
    }

    uint64_t batch_count = (transfer_count + SZ_BATCH_EVENTS_MAX - 1) / SZ_BATCH_EVENTS_MAX;
    uint64_t *latency_ns = calloc(batch_count, sizeof(uint64_t));
    bool used[MESSAGE_COUNT] = {false};
    sz_message_t *free_list[MESSAGE_COUNT];
    uint32_t free_count = 0;
    for (uint32_t index = 0; index < depth; index++) {
        free_list[free_count++] = &bench.messages[index];
    }
    sz_replica_info_t info_start;
    sz_replica_stop(bench.replica); /* a pause, to read the counters while it is not running */
    pthread_join(bench.thread, NULL);
    sz_replica_info(bench.replica, &info_start);
    pthread_create(&bench.thread, NULL, bench_thread, &bench);
    pthread_setname_np(bench.thread, "sz_ledger");
    clockid_t cpu_clock;
    pthread_getcpuclockid(bench.thread, &cpu_clock);
    struct timespec cpu_start, cpu_end;
    clock_gettime(cpu_clock, &cpu_start);
    uint64_t start_ns = monotonic_ns();
    uint64_t sent = 0, received = 0, id_next = 1;
    while (received < batch_count) {
        while (free_count > 0 && sent < batch_count) {
            sz_message_t *message = free_list[--free_count];
            uint64_t remaining = transfer_count - (id_next - 1);
            uint32_t count = remaining < SZ_BATCH_EVENTS_MAX ? (uint32_t)remaining
                                                            : SZ_BATCH_EVENTS_MAX;
            uint32_t message_index = (uint32_t)(message - bench.messages);
            bool fresh = !used[message_index] || count != SZ_BATCH_EVENTS_MAX;
            fill_transfers(&bench, message, id_next, count, fresh);
            used[message_index] = true;
            id_next += count;
            message->connection_index = (uint32_t)sent; /* the batch index, for latency */
            void *pointer = message;
            bench.pushed_ns[message - bench.messages] = monotonic_ns();
            while (sz_ring_push(&bench.requests, &pointer, 1) == 0) {}
            sent++;
        }
        sz_message_t *message = reply_wait(&bench);
        uint64_t pushed_ns = bench.pushed_ns[message - bench.messages];
        latency_ns[message->connection_index] = monotonic_ns() - pushed_ns;
        free_list[free_count++] = message;
        received++;
    }
    uint64_t elapsed_ns = monotonic_ns() - start_ns;
    clock_gettime(cpu_clock, &cpu_end);
    sz_replica_stop(bench.replica);
    pthread_join(bench.thread, NULL);
    sz_replica_info_t info;
    sz_replica_info(bench.replica, &info);
    uint64_t cpu_ns = (uint64_t)(cpu_end.tv_sec - cpu_start.tv_sec) * 1000000000ull +
                      (uint64_t)cpu_end.tv_nsec - (uint64_t)cpu_start.tv_nsec;
    qsort(latency_ns, batch_count, sizeof(uint64_t), compare_u64);
    double seconds = (double)elapsed_ns / 1e9;
    uint64_t writes = bench.metrics.journal_writes;
    printf("bench_replica: %s, %llu transfers in batches of %u, %u in flight, %u accounts\n",
           memory ? "in memory" : directory, (unsigned long long)transfer_count,
           SZ_BATCH_EVENTS_MAX, depth, ACCOUNT_COUNT);
    printf("  throughput: %.0f transfers/s (%.3f s)\n", (double)transfer_count / seconds, seconds);
    printf("  batch latency push->reply: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p100 %.2f ms\n",
           (double)latency_ns[batch_count / 2] / 1e6,
           (double)latency_ns[batch_count * 9 / 10] / 1e6,
           (double)latency_ns[batch_count * 99 / 100] / 1e6,
           (double)latency_ns[batch_count - 1] / 1e6);
    printf("  ledger thread: %.1f%% of a core, %.1f us CPU per batch, %llu loop passes "
           "(%.0f ns each), %llu sleeps\n",
           100.0 * (double)cpu_ns / (double)elapsed_ns, (double)cpu_ns / 1e3 / (double)batch_count,
           (unsigned long long)(info.loop_count - info_start.loop_count),
           (double)cpu_ns / (double)(info.loop_count - info_start.loop_count),
           (unsigned long long)(info.sleep_count - info_start.sleep_count));
    printf("  journal: %llu group commits, write+fdatasync mean %.0f us, append->applied mean "
           "%.0f us\n",
           (unsigned long long)writes,
           histogram_mean(&bench.metrics.fdatasync_latency_us),
           histogram_mean(&bench.metrics.commit_latency_us));
    printf("  ops %llu, transfers %llu, digest %016llx%016llx\n",
           (unsigned long long)info.op_committed, (unsigned long long)info.ledger.transfer_count,
           (unsigned long long)info.digest.high, (unsigned long long)info.digest.low);
    bench_small(&bench, 1000);
    int code = bench.run_result == 0 ? 0 : 1;
    sz_replica_close(bench.replica);
    sz_storage_deinit(bench.storage);
    if (!memory) {
        char command[300];
        snprintf(command, sizeof(command), "rm -rf %s", directory);
        if (system(command) != 0) code = 1;
    }
    free(latency_ns);
    free(bench.messages);
    return code;
}
