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
 * - Errors: 0 or a negative errno, with a one-line message in error_out / the handle. */
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
/* Serves delivery reports for up to timeout_ms. */
SZ_MUST_USE int sz_kafka_poll(sz_kafka_t *kafka, int timeout_ms);
/* The highest op such that it and every op before it given to produce are delivered. */
uint64_t sz_kafka_delivered_op(const sz_kafka_t *kafka);
const char *sz_kafka_error_message(const sz_kafka_t *kafka);

#endif
