/* test_crash.c: the journal survives SIGKILL. A child process appends ops through the
 * real io_uring journal and records each op in an acknowledgement log only after its
 * durability callback; the parent kills it with SIGKILL at a random moment (after a
 * random number of acknowledgements and a random spin, never a sleep), then reopens the
 * journal and checks that every acknowledged op is present and intact and that replay
 * gives the digest of the same ops applied in memory. The next child recovers the torn
 * tail and goes on. 50 kills by default; SUMZERO_CRASH_KILLS for more; SUMZERO_SEED. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal/replay.h"
#include "ops.h"

#define CHILD_OPS_MAX 1000000u

typedef struct child_state {
    int ack_fd;
    int notify_fd;
    uint64_t op_acknowledged;
} child_state_t;

/* The acknowledgement: only after the journal said the op is durable. */
static void child_on_durable(uint64_t op_durable, void *context) {
    child_state_t *state = context;
    for (uint64_t op = state->op_acknowledged + 1; op <= op_durable; op++) {
        SZ_ASSERT(write(state->ack_fd, &op, sizeof(op)) == sizeof(op));
    }
    state->op_acknowledged = op_durable;
    char byte = 1;
    SZ_ASSERT(write(state->notify_fd, &byte, 1) == 1);
}

static _Noreturn void child_run(const char *directory, const char *ack_path, int notify_fd,
                                uint64_t seed) {
    child_state_t state = {.notify_fd = notify_fd};
    state.ack_fd = open(ack_path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    SZ_ASSERT(state.ack_fd >= 0);
    sz_storage_t *storage = NULL;
    SZ_ASSERT(sz_storage_uring_init(directory, &storage) == 0);
    sz_journal_options_t options = {.in_flight_max = 3, .on_durable = child_on_durable,
                                    .durable_context = &state};
    sz_journal_t *journal = NULL;
    sz_journal_problem_t problem;
    int result = sz_journal_open(storage, &options, &journal, &problem);
    if (result != 0) {
        fprintf(stderr, "child: open failed: %s at %s+%llu op %llu: %s\n", strerror(-result),
                problem.file, (unsigned long long)problem.offset,
                (unsigned long long)problem.op, problem.reason);
        _exit(3);
    }
    sz_journal_info_t info;
    sz_journal_info(journal, &info);
    state.op_acknowledged = info.op_last;
    static uint8_t events[OPS_EVENTS_MAX * SZ_JOURNAL_EVENT_SIZE];
    for (uint64_t op = info.op_last + 1; op < info.op_last + CHILD_OPS_MAX; op++) {
        sz_journal_append_t entry;
        ops_generate(seed, op, &entry, events);
        result = sz_journal_append(journal, &entry, events, NULL);
        while (result == -EAGAIN) {
            result = sz_journal_poll(journal, true);
            if (result == 0) result = sz_journal_append(journal, &entry, events, NULL);
        }
        if (result == 0 && op % 3 == 0) result = sz_journal_submit(journal);
        if (result == 0) result = sz_journal_poll(journal, op % 5 == 0);
        if (result != 0) {
            fprintf(stderr, "child: %s\n", sz_journal_error_message(journal));
            _exit(4);
        }
    }
    _exit(5); /* the parent kills long before */
}

typedef struct check_context {
    uint64_t seed;
    uint64_t op_bad;
} check_context_t;

/* Every entry must be exactly what the writer appended for that op. */
static int check_entry(const sz_journal_header_t *header, const void *body,
                       const sz_journal_position_t *position, void *context_raw) {
    (void)position;
    check_context_t *context = context_raw;
    static uint8_t events[OPS_EVENTS_MAX * SZ_JOURNAL_EVENT_SIZE];
    sz_journal_append_t entry;
    uint32_t size = ops_generate(context->seed, header->op, &entry, events);
    if (header->body_size != size || memcmp(body, events, size) != 0 ||
        header->timestamp != entry.timestamp || header->operation != entry.operation) {
        if (context->op_bad == 0) context->op_bad = header->op;
    }
    return 0;
}

static uint64_t ack_log_max(const char *ack_path) {
    int fd = open(ack_path, O_RDONLY);
    if (fd < 0) return 0;
    uint64_t op = 0, op_max = 0;
    while (read(fd, &op, sizeof(op)) == sizeof(op)) {
        if (op > op_max) op_max = op;
    }
    close(fd);
    return op_max;
}

/* After a kill: acknowledged ops present and intact, replay digest = direct digest. */
static uint32_t torn_tail_count;
static uint32_t beyond_acknowledged_count;

static uint64_t check_after_kill(const char *directory, uint64_t seed, uint64_t acknowledged,
                                 uint32_t kill) {
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_uring_init(directory, &storage), 0);
    check_context_t context = {.seed = seed};
    sz_journal_options_t options = {.read_only = true, .on_entry = check_entry,
                                    .entry_context = &context};
    sz_journal_t *journal = NULL;
    sz_journal_problem_t problem;
    int result = sz_journal_open(storage, &options, &journal, &problem);
    cr_assert_eq(result, 0, "kill %u: %s at %s+%llu op %llu", kill, problem.reason, problem.file,
                 (unsigned long long)problem.offset, (unsigned long long)problem.op);
    sz_journal_info_t info;
    sz_journal_info(journal, &info);
    sz_journal_deinit(journal);
    if (info.tail_torn) torn_tail_count++;
    if (info.op_last > acknowledged) beyond_acknowledged_count++;
    cr_assert_eq(context.op_bad, 0, "kill %u: op %llu differs from what was appended", kill,
                 (unsigned long long)context.op_bad);
    cr_assert_geq(info.op_last, acknowledged, "kill %u: acknowledged op %llu lost (journal ends "
                  "at %llu)", kill, (unsigned long long)acknowledged,
                  (unsigned long long)info.op_last);
    sz_ledger_t *replayed = ops_ledger();
    sz_replay_stats_t stats;
    /* Up to what the check saw: io_uring writes of the killed child may still land after
     * waitpid (the ring is torn down asynchronously), so a later open can see more ops. */
    sz_replay_options_t replay_options = {.until_op = info.op_last};
    cr_assert_eq(sz_replay_run(storage, &replay_options, replayed, &stats, &problem), 0);
    sz_ledger_t *direct = ops_ledger();
    for (uint64_t op = 1; op <= info.op_last; op++) ops_apply(direct, seed, op);
    sz_digest_t left = sz_ledger_digest(replayed), right = sz_ledger_digest(direct);
    cr_assert(left.low == right.low && left.high == right.high, "kill %u: digests differ", kill);
    sz_ledger_deinit(replayed);
    sz_ledger_deinit(direct);
    sz_storage_deinit(storage);
    return info.op_last;
}

Test(crash, sigkill_at_random_moments_never_loses_an_acknowledged_op, .timeout = 280) {
    const char *seed_text = getenv("SUMZERO_SEED");
    const char *kills_text = getenv("SUMZERO_CRASH_KILLS");
    uint64_t seed = seed_text ? strtoull(seed_text, NULL, 0) : (uint64_t)getpid() * 2654435761u;
    uint32_t kills = kills_text ? (uint32_t)strtoul(kills_text, NULL, 10) : 50;
    printf("test_crash: SUMZERO_SEED=%llu SUMZERO_CRASH_KILLS=%u\n", (unsigned long long)seed,
           kills);
    fflush(stdout);
    char directory[] = "/tmp/sz_test_crash_XXXXXX";
    cr_assert_not_null(mkdtemp(directory));
    char ack_path[128];
    snprintf(ack_path, sizeof(ack_path), "%s/acknowledged", directory);
    sz_storage_t *storage = NULL;
    cr_assert_eq(sz_storage_uring_init(directory, &storage), 0);
    sz_journal_format_options_t format = {.cluster_id = 9,
                                          .segment_size = SZ_JOURNAL_SEGMENT_SIZE_MIN};
    cr_assert_eq(sz_journal_format(storage, &format), 0);
    sz_storage_deinit(storage);
    uint64_t random = seed;
    uint64_t op_last = 0;
    for (uint32_t kill_index = 0; kill_index < kills; kill_index++) {
        int pipe_fds[2];
        cr_assert_eq(pipe(pipe_fds), 0);
        pid_t child = fork();
        cr_assert_geq(child, 0);
        if (child == 0) {
            close(pipe_fds[0]);
            child_run(directory, ack_path, pipe_fds[1], seed);
        }
        close(pipe_fds[1]);
        random = ops_mix(random + kill_index);
        /* Sometimes during recovery (0 acknowledgements), usually mid-stream. */
        uint32_t acknowledgements = (uint32_t)(random % 24);
        uint64_t spin = (random >> 20) % 200000;
        char byte;
        for (uint32_t seen = 0; seen < acknowledgements; seen++) {
            if (read(pipe_fds[0], &byte, 1) != 1) break; /* child died: waitpid says why */
        }
        for (volatile uint64_t index = 0; index < spin; index++) {
        }
        kill(child, SIGKILL);
        int status = 0;
        cr_assert_eq(waitpid(child, &status, 0), child);
        close(pipe_fds[0]);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "kill %u: the writer ended on its own (status 0x%x): see its stderr",
                  kill_index, status);
        uint64_t acknowledged = ack_log_max(ack_path);
        op_last = check_after_kill(directory, seed, acknowledged, kill_index);
    }
    printf("test_crash: %u kills, journal at op %llu, %u torn tails, %u with unacknowledged "
           "ops on disk\n", kills, (unsigned long long)op_last, torn_tail_count,
           beyond_acknowledged_count);
    cr_assert_gt(op_last, kills, "the writers made progress");
    char command[160];
    snprintf(command, sizeof(command), "rm -rf %s", directory);
    cr_assert_eq(system(command), 0);
}
