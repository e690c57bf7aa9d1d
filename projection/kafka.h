/* kafka.h: the Kafka sink of the projector: one JSON event per committed transfer, and
 * optionally one per rejected event on a second topic, through librdkafka's idempotent
 * producer (acks=all).
 *
 * Contract:
 * - One thread (the projector's) calls everything here; librdkafka runs its own threads.
 * - sz_kafka_produce_op() queues the events of one committed op; ops are given in op
 *   order, each exactly once per process (after a restart the projector gives again every
 *   op after sz_kafka_delivered_op()'s last value it had recorded). It blocks (polling)
 *   only while librdkafka's local queue is full.
 * - An event's id is derived from (op, event index) only, so an event sent again after a
 *   crash is identical, with the same id: consumers drop duplicates by it. Nothing is
 *   ever skipped: a failed delivery is retried by librdkafka, and an op counts as
 *   delivered only when every event of it and of every op before it has a successful
 *   delivery report.
 * - Event (value, JSON, u128 as decimal strings): event_id, op, timestamp (the event's:
 *   T + index), trace_id, result (a name from SEMANTICS.md) and every field of the
 *   transfer. Key: the transfer id (default), or the debit or credit account id. Headers:
 *   "trace_id" and "op" (decimal).
 * - Errors: 0 or a negative errno, with a one-line message in error_out / the handle.
 *   Bad input (ops out of order, results or stored transfers that do not fit the op) is
 *   -EINVAL; a permanent delivery failure or a fatal producer error is -EIO. Either
 *   fails the handle: every later call returns the same error and the op it failed in
 *   (and everything after) never counts as delivered; close it and open a new one from
 *   the recorded position.
 * - Producer settings: bootstrap.servers from brokers, enable.idempotence=true,
 *   acks=all, message.timeout.ms=0 (never give a message up; Kafka down only blocks),
 *   linger.ms=5; properties are applied after these and may override them.
 * - sz_kafka_close() with timeout_ms 0 (or events still queued at the end of it) gives
 *   up what is not delivered: a crash, as far as Kafka is concerned.
 *
 * The event, exactly (one line, fields in this order, no spaces; integers of 64 bits and
 * more as decimal strings, so that JSON parsers that read numbers as doubles lose
 * nothing; smaller ones as numbers):
 *   {"event_id":"OP.INDEX","kind":K,"op":"OP","timestamp":"NS","trace_id":"T",
 *    "result":R,"id":"..","debit_account_id":"..","credit_account_id":"..","amount":"..",
 *    "pending_id":"..","user_data_128":"..","user_data_64":"..","user_data_32":N,
 *    "timeout":N,"ledger":N,"code":N,"flags":N}
 * - kind "transfer": a committed transfer (result "ok"), on the topic;
 *   kind "rejected": an event that was not ok (result its name, e.g. "exceeds_credits",
 *   "exists"), on rejected_topic, and only when one is configured;
 *   kind "expired": a pending transfer that an expire_pending op released (result "ok";
 *   its fields are the pending transfer's, timestamp is the expiry op's), on the topic,
 *   only through sz_kafka_produce_expired().
 * - event_id is "OP.INDEX" (decimal): INDEX is the event's index in its create batch, or
 *   the position in the expired list of an expire op. Headers: "trace_id", "op" and
 *   "event_id" (decimal text). Keys are decimal text too. Duplicates after a crash are
 *   byte-identical in key, value and headers; the Kafka message timestamp is librdkafka's
 *   (the time of producing), so it may differ.
 * - Before the first op is given, sz_kafka_delivered_op() is 0: the projector keeps its
 *   own recorded position and takes the larger. */
#ifndef SZ_KAFKA_H
#define SZ_KAFKA_H

#include <stdint.h>

#include "core/records.h"
#include "journal/journal.h"

typedef enum sz_kafka_key {
    SZ_KAFKA_KEY_TRANSFER_ID = 0,
    SZ_KAFKA_KEY_DEBIT_ACCOUNT_ID = 1,
    SZ_KAFKA_KEY_CREDIT_ACCOUNT_ID = 2,
} sz_kafka_key_t;

typedef struct sz_kafka_config {
    const char *brokers;          /* "host:port,..." */
    const char *topic;            /* committed transfers */
    const char *rejected_topic;   /* NULL: rejected events are not sent */
    sz_kafka_key_t key;
    /* Extra librdkafka properties "name=value", NULL-terminated; may be NULL (tests use it
     * to shorten timeouts). */
    const char *const *properties;
} sz_kafka_config_t;

typedef struct sz_kafka sz_kafka_t;

SZ_MUST_USE int sz_kafka_open(const sz_kafka_config_t *config, sz_kafka_t **kafka_out,
                              char *error_out, size_t error_size);
/* Flushes what it can within timeout_ms, then frees. Accepts NULL. */
void sz_kafka_close(sz_kafka_t *kafka, int timeout_ms);

/* header and body are the journal entry; results are the op's non-ok results from the
 * projector's ledger (ascending event index; an event not listed is ok). expire_pending
 * ops produce nothing here. */
SZ_MUST_USE int sz_kafka_produce_op(sz_kafka_t *kafka, const sz_journal_header_t *header,
                                    const void *body, const sz_create_result_t *results,
                                    uint32_t result_count);
/* sz_kafka_produce_op() with the transfers as the projector's ledger stored them, so
 * that the event carries what was applied: a balancing transfer's clamped amount, and
 * what a post or void inherits from its pending transfer (accounts, ledger, code, user
 * data). stored holds one transfer per ok event, in event order (the learner's
 * sz_learner_op_t.transfers): stored_count must be event_count - result_count and each
 * must have its event's id, else -EINVAL. For a create_accounts or expire op stored is
 * ignored. (Additive to the first contract.) */
SZ_MUST_USE int sz_kafka_produce_op_stored(sz_kafka_t *kafka, const sz_journal_header_t *header,
                                           const void *body, const sz_transfer_t *stored,
                                           uint32_t stored_count,
                                           const sz_create_result_t *results,
                                           uint32_t result_count);
/* The events of an expire_pending op: one "expired" event per pending transfer it
 * released, as stored, in the order sz_ledger_expire_pending() gave their ids (that
 * order defines each event's index; the learner's sz_learner_op_t.expired). Counts as
 * that op for delivery: call it instead of sz_kafka_produce_op() for the op (which
 * sends nothing for expire ops). expired_count may be 0. (Additive.) */
SZ_MUST_USE int sz_kafka_produce_expired(sz_kafka_t *kafka, const sz_journal_header_t *header,
                                         const sz_transfer_t *expired, uint32_t expired_count);
/* Serves delivery reports for up to timeout_ms. */
SZ_MUST_USE int sz_kafka_poll(sz_kafka_t *kafka, int timeout_ms);
/* The highest op such that it and every op before it given to produce are delivered. */
uint64_t sz_kafka_delivered_op(const sz_kafka_t *kafka);
const char *sz_kafka_error_message(const sz_kafka_t *kafka);

/* Counters for the projector's metrics and for tests. (Additive.) */
typedef struct sz_kafka_stats {
    uint64_t event_count_produced;  /* handed to librdkafka */
    uint64_t event_count_delivered; /* with a successful delivery report */
    uint64_t queue_full_count;      /* times produce polled because the queue was full */
    uint64_t op_count_in_flight;    /* ops with events given but not yet delivered */
} sz_kafka_stats_t;
void sz_kafka_stats(const sz_kafka_t *kafka, sz_kafka_stats_t *stats_out);

#endif
