/* test_restart.c: a restarted server keeps every acknowledged transfer, and SIGTERM drains.
 * Real `sumzero start` processes (tests/harness/server.h), real sockets, the real io_uring
 * journal, and the client library as applications link it.
 *
 * - SIGKILL under load: PIPELINE batches of transfers (random sizes) are always in flight
 *   through the asynchronous API; each callback acknowledges its batch and sends the next.
 *   A transfer is acknowledged only in the callback of an OK reply that lists no failure
 *   for it; the acknowledgement log is kept in memory by the test process, which the kill
 *   does not touch. The callback that completes a random number of acknowledged batches
 *   (drawn from SUMZERO_SEED) sends SIGKILL itself, so the other requests of the pipeline
 *   are out at that moment. The server is restarted on the same data directory and
 *   checked with lookups: every
 *   acknowledged transfer is there with the same accounts and amount; any other submitted
 *   transfer is either absent or intact; the balances are exactly the sums of the transfers
 *   present (no batch half applied). Then every unacknowledged transfer is submitted again
 *   with the same id: each comes back ok or exists, after which every transfer submitted so
 *   far is present once and the balances equal the sums over all of them, exactly. Then the
 *   next cycle loads more. SUMZERO_KILLS cycles (default 5).
 * - The same with snapshots on (one every 3 ops, so kills land while a snapshot process
 *   writes): every acknowledged transfer present after each restart, and at the end the
 *   server's digest (recovered from snapshots and journal tails) equals the digest of a
 *   full replay of the journal from op 1 (`sumzero replay`).
 * - SIGTERM under load: the server exits 0; after the restart the transfers present are
 *   exactly the acknowledged ones (every write it took was answered, none applied
 *   silently), with the same balances.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/server.h"
#include "sumzero.h"

#define ACCOUNT_COUNT 32u
#define TRANSFER_COUNT_MAX (1u << 19)
#define PIPELINE 8u
#define BATCH_EVENTS_MAX 512u
#define KILLS_DEFAULT 5u
#define ACKED_BATCHES_MAX 48u /* a kill comes after 1..this many acknowledged batches */
#define WAIT_MS 20000u

static const char *const server_args[] = {
    "--accounts-max", "64", "--transfers-max", "1048576", "--pending-max", "65536",
    "--history-max", "131072", NULL,
};
static const char *const snapshot_args[] = {
    "--accounts-max", "64", "--transfers-max", "1048576", "--pending-max", "65536",
    "--history-max", "131072", "--snapshot-every-ops", "3", "--snapshot-keep", "2", NULL,
};
/* The arguments of the test running now. */
static const char *const *restart_args = server_args;

typedef enum fate {
    FATE_NONE = 0,      /* never submitted */
    FATE_SUBMITTED = 1, /* sent; no OK reply seen (yet) */
    FATE_ACKED = 2,     /* an OK reply said it was applied */
} fate_t;

typedef struct batch {
    sumzero_packet_t packet;
    struct loader *loader;
    uint32_t first;
    uint32_t count;
    bool out;
    sumzero_transfer_t transfers[BATCH_EVENTS_MAX];
    sumzero_create_result_t results[BATCH_EVENTS_MAX];
} batch_t;

/* The load. The test thread starts it; from then on the client's I/O thread runs it: each
 * callback acknowledges its batch, refills it with new transfers and submits it again, so
 * PIPELINE requests are always out, and the callback that reaches the goal signals the
 * server itself, at that very moment, with the pipeline full. Under mutex. */
typedef struct loader {
    uint64_t seed;
    uint8_t *fates; /* TRANSFER_COUNT_MAX, the acknowledgement log */
    uint32_t transfer_next;
    uint64_t random;
    pthread_mutex_t mutex;
    pthread_cond_t changed;
    sumzero_client_t *client;
    pid_t server_pid;
    int stop_signal;
    uint64_t acked_goal;      /* batches acknowledged before the signal */
    bool stopping;            /* the signal is sent: no more refills */
    uint32_t batches_out;
    uint32_t out_at_stop;
    uint64_t batches_acked;
    uint64_t acked_after_stop; /* OK replies that came after the signal */
    uint64_t errors_before_stop; /* a request that failed while the server was up */
    int error_first;
    uint64_t failures;      /* results other than ok, or exists without a resubmission */
    uint32_t failure_first; /* its result code */
    batch_t batches[PIPELINE];
} loader_t;

static uint64_t hash_mix(uint64_t value) {
    value += 0x9E3779B97F4A7C15ull;
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ull;
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBull;
    return value ^ (value >> 31);
}

/* Transfer `index` is a pure function of (seed, index): id index + 1, two different
 * accounts, an amount of 1..1000. A resubmission rebuilds it identically. */
static sumzero_transfer_t transfer_make(uint64_t seed, uint32_t index) {
    uint64_t random = hash_mix(seed ^ ((uint64_t)index * 0xD1B54A32D192ED03ull));
    uint32_t debit = (uint32_t)(random % ACCOUNT_COUNT);
    uint32_t credit = (uint32_t)((random >> 8) % (ACCOUNT_COUNT - 1));
    if (credit >= debit) credit++;
    sumzero_transfer_t transfer = {
        .id = (sumzero_u128_t)index + 1,
        .debit_account_id = debit + 1,
        .credit_account_id = credit + 1,
        .amount = 1 + (random >> 32) % 1000,
        .ledger = 1,
        .code = 1,
    };
    return transfer;
}

static uint64_t seed_get(void) {
    const char *text = getenv("SUMZERO_SEED");
    uint64_t seed = text != NULL ? strtoull(text, NULL, 0)
                                 : (uint64_t)getpid() * 2654435761u ^ sz_test_clock_ms();
    return seed;
}

static uint32_t kills_get(void) {
    const char *text = getenv("SUMZERO_KILLS");
    if (text == NULL) return KILLS_DEFAULT;
    uint32_t kills = (uint32_t)strtoul(text, NULL, 10);
    return kills == 0 ? 1 : kills;
}

/* Fills the batch with the next transfers (1..BATCH_EVENTS_MAX of them) and submits it.
 * Under the loader's mutex; sumzero_submit() only queues, so holding it is fine. */
static int loader_submit(loader_t *loader, batch_t *batch) {
    loader->random = hash_mix(loader->random);
    uint32_t count = 1 + (uint32_t)(loader->random % BATCH_EVENTS_MAX);
    if (loader->transfer_next + count > TRANSFER_COUNT_MAX) return -ENOSPC;
    batch->first = loader->transfer_next;
    batch->count = count;
    for (uint32_t event = 0; event < count; event++) {
        batch->transfers[event] = transfer_make(loader->seed, batch->first + event);
        loader->fates[batch->first + event] = FATE_SUBMITTED;
    }
    loader->transfer_next += count;
    batch->packet = (sumzero_packet_t){
        .operation = SUMZERO_OPERATION_CREATE_TRANSFERS,
        .event_count = count,
        .events = batch->transfers,
        .results = batch->results,
        .result_capacity = count,
        .callback = NULL, /* set by the caller */
        .context = batch,
    };
    return 0;
}

static void loader_on_reply(void *context, sumzero_packet_t *packet);

static int loader_send(loader_t *loader, batch_t *batch) {
    int result = loader_submit(loader, batch);
    if (result != 0) return result;
    batch->packet.callback = loader_on_reply;
    batch->out = true;
    loader->batches_out++;
    result = sumzero_submit(loader->client, &batch->packet);
    if (result != 0) {
        batch->out = false;
        loader->batches_out--;
    }
    return result;
}

/* Marks the batch's transfers: acknowledged only here, in the callback of an OK reply,
 * and only those without a failure of their own. */
static void loader_acknowledge(loader_t *loader, batch_t *batch, const sumzero_reply_t *reply) {
    uint32_t result_index = 0;
    for (uint32_t event = 0; event < batch->count; event++) {
        bool listed = result_index < reply->result_count &&
                      batch->results[result_index].index == event;
        uint32_t result = listed ? batch->results[result_index++].result : 0;
        bool applied = result == SUMZERO_CREATE_TRANSFER_OK ||
                       (result == SUMZERO_CREATE_TRANSFER_EXISTS &&
                        (reply->flags & SUMZERO_REPLY_RESUBMITTED) != 0);
        if (applied) {
            loader->fates[batch->first + event] = FATE_ACKED;
        } else {
            if (loader->failures == 0) loader->failure_first = result;
            loader->failures++;
        }
    }
    loader->batches_acked++;
    if (loader->stopping) loader->acked_after_stop++;
}

static void loader_on_reply(void *context, sumzero_packet_t *packet) {
    batch_t *batch = context;
    loader_t *loader = batch->loader;
    const sumzero_reply_t *reply = &packet->reply;
    pthread_mutex_lock(&loader->mutex);
    batch->out = false;
    loader->batches_out--;
    if (reply->error == 0) {
        loader_acknowledge(loader, batch, reply);
    } else if (!loader->stopping) {
        if (loader->errors_before_stop == 0) loader->error_first = reply->error;
        loader->errors_before_stop++;
    }
    if (!loader->stopping && loader->batches_acked >= loader->acked_goal) {
        /* The random moment: now, with the other requests of the pipeline out. */
        loader->stopping = true;
        loader->out_at_stop = loader->batches_out;
        kill(loader->server_pid, loader->stop_signal);
    }
    if (!loader->stopping && loader_send(loader, batch) != 0) {
        loader->errors_before_stop++;
    }
    pthread_cond_broadcast(&loader->changed);
    pthread_mutex_unlock(&loader->mutex);
}

static void loader_init(loader_t *loader, uint64_t seed) {
    memset(loader, 0, sizeof(*loader));
    loader->seed = seed;
    loader->random = seed;
    loader->fates = calloc(TRANSFER_COUNT_MAX, 1);
    cr_assert_not_null(loader->fates);
    pthread_mutex_init(&loader->mutex, NULL);
    pthread_cond_init(&loader->changed, NULL);
    for (uint32_t index = 0; index < PIPELINE; index++) loader->batches[index].loader = loader;
}

static void loader_deinit(loader_t *loader) {
    free(loader->fates);
    pthread_mutex_destroy(&loader->mutex);
    pthread_cond_destroy(&loader->changed);
}

/* Starts PIPELINE batches; the callbacks keep them going until `acked_target` more
 * batches are acknowledged and then send stop_signal to the server. Returns once the
 * signal is sent, with requests still out (that is the point). */
static void loader_run(loader_t *loader, sumzero_client_t *client, const sz_test_server_t *server,
                       uint64_t acked_target, int stop_signal) {
    pthread_mutex_lock(&loader->mutex);
    loader->client = client;
    loader->server_pid = server->pid;
    loader->stop_signal = stop_signal;
    loader->stopping = false;
    loader->acked_after_stop = 0;
    loader->acked_goal = loader->batches_acked + acked_target;
    for (uint32_t index = 0; index < PIPELINE; index++) {
        cr_assert(!loader->batches[index].out);
        int result = loader_send(loader, &loader->batches[index]);
        cr_assert_eq(result, 0, "submit: %s", sumzero_error_message(result));
    }
    uint64_t deadline_ms = sz_test_clock_ms() + WAIT_MS;
    while (!loader->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&loader->changed, &loader->mutex, &until);
        cr_assert(sz_test_clock_ms() < deadline_ms, "no progress: %llu of %llu batches acked",
                  (unsigned long long)loader->batches_acked,
                  (unsigned long long)loader->acked_goal);
    }
    cr_assert_eq(loader->errors_before_stop, 0, "a request failed under load: %s",
                 sumzero_error_message(loader->error_first));
    pthread_mutex_unlock(&loader->mutex);
}

static sumzero_client_t *client_open(const sz_test_server_t *server) {
    sumzero_client_options_t options = {
        .addresses = server->address,
        .pipeline_max = PIPELINE,
        .request_timeout_ms = WAIT_MS,
        .backoff_max_ms = 50,
    };
    sumzero_client_t *client = NULL;
    int result = sumzero_client_open(&client, &options);
    cr_assert_eq(result, 0, "client open: %s", sumzero_error_message(result));
    return client;
}

static void server_start(sz_test_server_t *server, const char *directory) {
    int result = sz_test_server_start(server, directory, restart_args);
    if (result != 0) sz_test_server_dump_log(server);
    cr_assert_eq(result, 0, "server start: %s", strerror(-result));
}

static void accounts_create(sumzero_client_t *client) {
    sumzero_account_t accounts[ACCOUNT_COUNT];
    memset(accounts, 0, sizeof(accounts));
    for (uint32_t index = 0; index < ACCOUNT_COUNT; index++) {
        accounts[index].id = index + 1;
        accounts[index].ledger = 1;
        accounts[index].code = 1;
    }
    sumzero_create_result_t results[ACCOUNT_COUNT];
    uint32_t result_count = 0;
    int result = sumzero_create_accounts(client, accounts, ACCOUNT_COUNT, results, &result_count);
    cr_assert_eq(result, 0, "create_accounts: %s", sumzero_error_message(result));
    cr_assert_eq(result_count, 0, "create_accounts: account %u failed with %s", results[0].index,
                 sumzero_create_account_result_name(results[0].result));
}

/* Looks up every transfer submitted so far; present_out[i] says whether index i is there.
 * Every present one must be the transfer we built; every acknowledged one must be present. */
static uint64_t transfers_check(sumzero_client_t *client, const loader_t *loader,
                                uint8_t *present_out) {
    static sumzero_u128_t ids[SUMZERO_BATCH_EVENTS_MAX];
    static sumzero_transfer_t found[SUMZERO_BATCH_EVENTS_MAX];
    uint64_t present_count = 0;
    memset(present_out, 0, TRANSFER_COUNT_MAX);
    for (uint32_t first = 0; first < loader->transfer_next; first += SUMZERO_BATCH_EVENTS_MAX) {
        uint32_t count = loader->transfer_next - first;
        if (count > SUMZERO_BATCH_EVENTS_MAX) count = SUMZERO_BATCH_EVENTS_MAX;
        for (uint32_t index = 0; index < count; index++) ids[index] = (sumzero_u128_t)first + index + 1;
        uint32_t found_count = 0;
        int result = sumzero_lookup_transfers(client, ids, count, found, &found_count);
        cr_assert_eq(result, 0, "lookup_transfers: %s", sumzero_error_message(result));
        uint32_t cursor = 0;
        for (uint32_t index = 0; index < count; index++) {
            uint32_t transfer = first + index;
            bool present = cursor < found_count && found[cursor].id == ids[index];
            if (!present) {
                cr_assert_neq(loader->fates[transfer], FATE_ACKED,
                              "acknowledged transfer %u is missing after the restart",
                              transfer + 1);
                continue;
            }
            sumzero_transfer_t expected = transfer_make(loader->seed, transfer);
            const sumzero_transfer_t *got = &found[cursor++];
            cr_assert(got->debit_account_id == expected.debit_account_id &&
                          got->credit_account_id == expected.credit_account_id &&
                          got->amount == expected.amount && got->ledger == 1 && got->code == 1,
                      "transfer %u came back different", transfer + 1);
            cr_assert_neq(loader->fates[transfer], FATE_NONE);
            present_out[transfer] = 1;
            present_count++;
        }
        cr_assert_eq(cursor, found_count, "lookup_transfers returned ids not asked for");
    }
    return present_count;
}

/* The balances are exactly the sums of the transfers marked in `counted`. */
static void balances_check(sumzero_client_t *client, const loader_t *loader,
                           const uint8_t *counted) {
    sumzero_u128_t debits[ACCOUNT_COUNT] = {0}, credits[ACCOUNT_COUNT] = {0};
    for (uint32_t transfer = 0; transfer < loader->transfer_next; transfer++) {
        if (!counted[transfer]) continue;
        sumzero_transfer_t built = transfer_make(loader->seed, transfer);
        debits[(uint32_t)built.debit_account_id - 1] += built.amount;
        credits[(uint32_t)built.credit_account_id - 1] += built.amount;
    }
    sumzero_u128_t ids[ACCOUNT_COUNT];
    sumzero_account_t accounts[ACCOUNT_COUNT];
    for (uint32_t index = 0; index < ACCOUNT_COUNT; index++) ids[index] = index + 1;
    uint32_t account_count = 0;
    int result = sumzero_lookup_accounts(client, ids, ACCOUNT_COUNT, accounts, &account_count);
    cr_assert_eq(result, 0, "lookup_accounts: %s", sumzero_error_message(result));
    cr_assert_eq(account_count, ACCOUNT_COUNT);
    for (uint32_t index = 0; index < ACCOUNT_COUNT; index++) {
        char have[SUMZERO_U128_DECIMAL_SIZE], want[SUMZERO_U128_DECIMAL_SIZE];
        cr_assert(accounts[index].debits_posted == debits[index],
                  "account %u: debits_posted %s, the transfers present sum to %s", index + 1,
                  sumzero_u128_format(accounts[index].debits_posted, have),
                  sumzero_u128_format(debits[index], want));
        cr_assert(accounts[index].credits_posted == credits[index],
                  "account %u: credits_posted %s, the transfers present sum to %s", index + 1,
                  sumzero_u128_format(accounts[index].credits_posted, have),
                  sumzero_u128_format(credits[index], want));
        cr_assert(accounts[index].debits_pending == 0 && accounts[index].credits_pending == 0);
    }
}

/* Makes every submitted transfer's fate certain: sends the unacknowledged ones again with
 * the same ids; each must come back ok (it was lost) or exists (it was applied). */
static void unacknowledged_resubmit(sumzero_client_t *client, loader_t *loader,
                                    uint64_t *resent_out, uint64_t *existed_out) {
    static sumzero_transfer_t transfers[SUMZERO_BATCH_EVENTS_MAX];
    static sumzero_create_result_t results[SUMZERO_BATCH_EVENTS_MAX];
    uint32_t indexes[SUMZERO_BATCH_EVENTS_MAX];
    uint32_t count = 0;
    *resent_out = 0;
    *existed_out = 0;
    for (uint32_t transfer = 0; transfer <= loader->transfer_next; transfer++) {
        bool last = transfer == loader->transfer_next;
        if (!last && loader->fates[transfer] == FATE_SUBMITTED) {
            indexes[count] = transfer;
            transfers[count++] = transfer_make(loader->seed, transfer);
        }
        if (count == 0 || (count < SUMZERO_BATCH_EVENTS_MAX && !last)) continue;
        uint32_t result_count = 0;
        int result = sumzero_create_transfers(client, transfers, count, results, &result_count);
        cr_assert_eq(result, 0, "create_transfers (again): %s", sumzero_error_message(result));
        for (uint32_t index = 0; index < result_count; index++) {
            cr_assert_eq(results[index].result, SUMZERO_CREATE_TRANSFER_EXISTS,
                         "transfer %u sent again: %s", indexes[results[index].index] + 1,
                         sumzero_create_transfer_result_name(results[index].result));
        }
        for (uint32_t index = 0; index < count; index++) loader->fates[indexes[index]] = FATE_ACKED;
        *resent_out += count;
        *existed_out += result_count;
        count = 0;
    }
}

static void directory_make(char *directory) {
    cr_assert_not_null(mkdtemp(directory), "mkdtemp: %s", strerror(errno));
}

static void directory_remove(const char *directory) {
    char command[512];
    snprintf(command, sizeof(command), "rm -rf '%s' '%s.log'", directory, directory);
    cr_assert_eq(system(command), 0);
}

/* The line of the log that starts with msg (the last one), or "" (for the report). */
static void log_line(const sz_test_server_t *server, const char *msg, char *line_out,
                     size_t size) {
    line_out[0] = '\0';
    FILE *log = fopen(server->log_path, "r");
    if (log == NULL) return;
    char text[4096];
    while (fgets(text, sizeof(text), log) != NULL) {
        if (strstr(text, msg) != NULL) snprintf(line_out, size, "%.1000s", text);
    }
    fclose(log);
}

/* SUMZERO_KILLS cycles of load and SIGKILL in directory; returns the restarts that
 * recovered from a snapshot. The server is left running (stopped by the caller). */
static uint32_t sigkill_cycles(char *directory, sz_test_server_t *server, loader_t *loader) {
    uint64_t seed = seed_get();
    uint32_t kills = kills_get();
    printf("test_restart: SUMZERO_SEED=%llu SUMZERO_KILLS=%u\n", (unsigned long long)seed, kills);
    fflush(stdout);
    directory_make(directory);
    loader_init(loader, seed);
    uint8_t *present = calloc(TRANSFER_COUNT_MAX, 1);
    cr_assert_not_null(present);
    uint64_t random = seed;
    uint32_t from_snapshot = 0;
    server_start(server, directory);
    sumzero_client_t *client = client_open(server);
    accounts_create(client);
    for (uint32_t kill_index = 0; kill_index < kills; kill_index++) {
        random = hash_mix(random);
        uint64_t acked_target = 1 + random % ACKED_BATCHES_MAX;
        loader_run(loader, client, server, acked_target, SIGKILL);
        /* Signal 0: the loader has sent SIGKILL already; just wait for the exit. */
        int status = sz_test_server_stop(server, 0);
        cr_assert_eq(status, 128 + SIGKILL, "the server was not killed: %d", status);
        /* Whatever was still out fails (-ECANCELED): its fate is what the check finds. */
        sumzero_client_close(client);
        cr_assert_eq(loader->batches_out, 0);
        cr_assert_eq(loader->failures, 0, "%llu transfers failed under load, first: %s",
                     (unsigned long long)loader->failures,
                     sumzero_create_transfer_result_name(loader->failure_first));

        server_start(server, directory);
        client = client_open(server);
        uint64_t acked = 0;
        for (uint32_t transfer = 0; transfer < loader->transfer_next; transfer++) {
            acked += loader->fates[transfer] == FATE_ACKED;
        }
        char recovered[1024];
        log_line(server, "msg=recovered ", recovered, sizeof(recovered));
        const char *snapshot_op = strstr(recovered, "snapshot_op=");
        if (snapshot_op != NULL && strtoull(snapshot_op + 12, NULL, 10) > 0) from_snapshot++;
        uint64_t present_count = transfers_check(client, loader, present);
        balances_check(client, loader, present);
        uint64_t resent = 0, existed = 0;
        unacknowledged_resubmit(client, loader, &resent, &existed);
        for (uint32_t transfer = 0; transfer < loader->transfer_next; transfer++) {
            cr_assert_eq(loader->fates[transfer], FATE_ACKED);
        }
        cr_assert_eq(transfers_check(client, loader, present), loader->transfer_next);
        balances_check(client, loader, present);
        printf("kill %u: after %llu acknowledged batches, %u out: %u transfers submitted, "
               "%llu acked, %llu present after restart; %llu sent again, %llu of them had been "
               "applied\n",
               kill_index + 1, (unsigned long long)acked_target, loader->out_at_stop,
               loader->transfer_next,
               (unsigned long long)acked, (unsigned long long)present_count,
               (unsigned long long)resent, (unsigned long long)existed);
        fflush(stdout);
    }
    sumzero_client_close(client);
    free(present);
    return from_snapshot;
}

Test(restart, a_sigkill_under_load_loses_no_acknowledged_transfer, .timeout = 120) {
    char directory[] = "/tmp/sz_test_restart_XXXXXX";
    static loader_t loader;
    sz_test_server_t server;
    restart_args = server_args;
    (void)sigkill_cycles(directory, &server, &loader);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
    loader_deinit(&loader);
    directory_remove(directory);
}

Test(restart, a_sigkill_under_load_with_snapshots_on_loses_nothing_and_keeps_the_digest,
     .timeout = 180) {
    char directory[] = "/tmp/sz_test_restart_snapshots_XXXXXX";
    static loader_t loader;
    sz_test_server_t server;
    restart_args = snapshot_args;
    uint32_t from_snapshot = sigkill_cycles(directory, &server, &loader);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
    char line[1024];
    log_line(&server, "msg=stopped ", line, sizeof(line));
    const char *digest = strstr(line, "digest=");
    cr_assert_not_null(digest, "no stopped line: %s", line);
    char command[512], output[4096];
    snprintf(command, sizeof(command),
             "%s replay --accounts-max 64 --transfers-max 1048576 --pending-max 65536 "
             "--history-max 131072 '%s' 2>&1", sz_test_server_binary(), directory);
    FILE *pipe = popen(command, "r");
    cr_assert_not_null(pipe);
    size_t length = fread(output, 1, sizeof(output) - 1, pipe);
    output[length] = '\0';
    cr_assert_eq(pclose(pipe), 0, "replay: %s", output);
    const char *replayed = strstr(output, "digest=");
    cr_assert_not_null(replayed, "%s", output);
    cr_assert_eq(strncmp(digest, replayed, 7 + 32), 0,
                 "the server (from snapshots) and a full replay disagree: %.39s, %.39s", digest,
                 replayed);
    printf("snapshots: %u of the restarts recovered from a snapshot; %.39s\n", from_snapshot,
           digest);
    cr_assert_gt(from_snapshot, 0, "no restart used a snapshot");
    loader_deinit(&loader);
    directory_remove(directory);
}


Test(restart, sigterm_answers_every_write_it_took_and_exits_zero, .timeout = 120) {
    restart_args = server_args;
    uint64_t seed = seed_get();
    printf("test_restart: SUMZERO_SEED=%llu\n", (unsigned long long)seed);
    fflush(stdout);
    char directory[] = "/tmp/sz_test_drain_XXXXXX";
    directory_make(directory);
    static loader_t loader;
    loader_init(&loader, seed);
    uint8_t *present = calloc(TRANSFER_COUNT_MAX, 1);
    cr_assert_not_null(present);
    uint64_t random = hash_mix(seed);

    sz_test_server_t server;
    server_start(&server, directory);
    sumzero_client_t *client = client_open(&server);
    accounts_create(client);
    loader_run(&loader, client, &server, 1 + random % ACKED_BATCHES_MAX, SIGTERM);
    /* Signal 0: SIGTERM is sent; the I/O thread reads the replies while the server drains. */
    int status = sz_test_server_stop(&server, 0);
    if (status != 0) sz_test_server_dump_log(&server);
    cr_assert_eq(status, 0, "the server's exit status after SIGTERM: %d", status);
    sumzero_client_close(client);
    cr_assert_eq(loader.failures, 0);

    server_start(&server, directory);
    client = client_open(&server);
    uint64_t present_count = transfers_check(client, &loader, present);
    uint64_t acked = 0;
    for (uint32_t transfer = 0; transfer < loader.transfer_next; transfer++) {
        bool is_acked = loader.fates[transfer] == FATE_ACKED;
        acked += is_acked;
        cr_assert_eq(present[transfer], is_acked,
                     "transfer %u: %s after a drain", transfer + 1,
                     is_acked ? "acknowledged but missing" : "applied but never acknowledged");
    }
    balances_check(client, &loader, present);
    printf("drain: %u batches out at SIGTERM, %llu answered after it; %u transfers submitted, "
           "%llu acked and present\n",
           loader.out_at_stop, (unsigned long long)loader.acked_after_stop, loader.transfer_next,
           (unsigned long long)acked);
    cr_assert_eq(present_count, acked);
    sumzero_client_close(client);
    cr_assert_eq(sz_test_server_stop(&server, SIGTERM), 0);
    free(present);
    loader_deinit(&loader);
    directory_remove(directory);
}
