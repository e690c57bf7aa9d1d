/* bench_kafka.c: how many events per second the Kafka sink produces, one thread, to
 * librdkafka's in-process mock cluster (3 brokers, acks=all, idempotent): JSON
 * formatting, librdkafka's queue and the delivery reports, end to end until
 * sz_kafka_delivered_op() reaches the last op. Not a test; the mock broker shares the
 * machine, so the figure is a floor for the sink, not a Kafka figure; the thread's CPU
 * time per event is what the sink costs the projector's thread.
 * Usage: bench_kafka [events_total] [events_per_op] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "projection/kafka.h"

static uint64_t clock_ns(clockid_t clock) {
    struct timespec now;
    clock_gettime(clock, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static uint64_t now_ns(void) {
    return clock_ns(CLOCK_MONOTONIC);
}

int main(int argc, char **argv) {
    uint64_t events_total = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    uint32_t events_per_op = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 1000;
    if (events_per_op == 0 || events_per_op > SZ_BATCH_EVENTS_MAX || events_total == 0) {
        fprintf(stderr, "usage: bench_kafka [events_total] [events_per_op 1..8190]\n");
        return 64;
    }
    char reason[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, reason, sizeof(reason));
    if (handle == NULL) {
        fprintf(stderr, "bench_kafka: %s\n", reason);
        return 70;
    }
    rd_kafka_mock_cluster_t *mock = rd_kafka_mock_cluster_new(handle, 3);
    if (mock == NULL || rd_kafka_mock_topic_create(mock, "transfers", 6, 3) != 0) {
        fprintf(stderr, "bench_kafka: cannot start the mock cluster\n");
        return 70;
    }
    sz_kafka_config_t config = {
        .brokers = rd_kafka_mock_cluster_bootstraps(mock),
        .topic = "transfers",
        .key = SZ_KAFKA_KEY_TRANSFER_ID,
    };
    sz_kafka_t *kafka = NULL;
    char error[256];
    if (sz_kafka_open(&config, &kafka, error, sizeof(error)) != 0) {
        fprintf(stderr, "bench_kafka: %s\n", error);
        return 70;
    }
    sz_transfer_t *events = calloc(events_per_op, sizeof(*events));
    if (events == NULL) return 70;
    uint64_t op_count = (events_total + events_per_op - 1) / events_per_op;
    uint64_t start_ns = now_ns();
    /* The projector thread's own CPU time: what the sink costs it, whatever else runs. */
    uint64_t start_cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    uint64_t id = 1;
    for (uint64_t op = 1; op <= op_count; op++) {
        for (uint32_t index = 0; index < events_per_op; index++) {
            events[index] = (sz_transfer_t){
                .id = ((sz_u128)op << 64) | id++,
                .debit_account_id = 1 + id % 10000,
                .credit_account_id = 10001 + id % 10000,
                .amount = 100 + id % 1000,
                .user_data_64 = id,
                .ledger = 1,
                .code = 1,
            };
        }
        sz_journal_header_t header = {
            .op = op,
            .trace_id = op * 7919,
            .timestamp = 1700000000000000000ull + op * events_per_op,
            .operation = SZ_OPERATION_CREATE_TRANSFERS,
            .event_count = events_per_op,
            .body_size = events_per_op * SZ_JOURNAL_EVENT_SIZE,
        };
        if (sz_kafka_produce_op(kafka, &header, events, NULL, 0) != 0 ||
            sz_kafka_poll(kafka, 0) != 0) {
            fprintf(stderr, "bench_kafka: %s\n", sz_kafka_error_message(kafka));
            return 74;
        }
    }
    uint64_t produced_ns = now_ns();
    while (sz_kafka_delivered_op(kafka) < op_count) {
        if (sz_kafka_poll(kafka, 10) != 0) {
            fprintf(stderr, "bench_kafka: %s\n", sz_kafka_error_message(kafka));
            return 74;
        }
    }
    uint64_t delivered_ns = now_ns();
    uint64_t cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID) - start_cpu_ns;
    uint64_t events_sent = op_count * events_per_op;
    printf("events=%" PRIu64 " events_per_op=%" PRIu32 " queued_s=%.3f delivered_s=%.3f "
           "events_per_s=%.0f thread_cpu_ns_per_event=%.0f\n",
           events_sent, events_per_op, (double)(produced_ns - start_ns) / 1e9,
           (double)(delivered_ns - start_ns) / 1e9,
           (double)events_sent * 1e9 / (double)(delivered_ns - start_ns),
           (double)cpu_ns / (double)events_sent);
    sz_kafka_close(kafka, 5000);
    free(events);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(handle);
    return 0;
}
