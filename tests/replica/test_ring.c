/* test_ring.c: proves the SPSC ring keeps every message exactly once and in order: at the
 * capacity boundary, across sequence wrap-around of the slots, and between two real threads
 * pushing and popping random batch sizes while both sides sleep on the futex whenever the
 * ring is empty or full. A sleeping consumer is woken by a push. The random batch sizes
 * print their seed and take one from SUMZERO_SEED. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "replica/ring.h"

static uint64_t test_seed(void) {
    const char *text = getenv("SUMZERO_SEED");
    uint64_t seed = text != NULL ? strtoull(text, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "test_ring seed=%llu\n", (unsigned long long)seed);
    return seed;
}

static uint64_t random_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    return z ^ (z >> 31);
}

Test(ring, init_refuses_a_capacity_that_is_not_a_power_of_two) {
    sz_ring_t ring;
    cr_assert_eq(sz_ring_init(&ring, 0), -EINVAL);
    cr_assert_eq(sz_ring_init(&ring, 1), -EINVAL);
    cr_assert_eq(sz_ring_init(&ring, 12), -EINVAL);
    cr_assert_eq(sz_ring_init(&ring, 16), 0);
    sz_ring_deinit(&ring);
}

Test(ring, push_into_a_full_ring_takes_only_what_fits) {
    sz_ring_t ring;
    cr_assert_eq(sz_ring_init(&ring, 8), 0);
    void *messages[12];
    for (uintptr_t index = 0; index < 12; index++) messages[index] = (void *)(index + 1);
    cr_assert_eq(sz_ring_push(&ring, messages, 5), 5);
    cr_assert_eq(sz_ring_push(&ring, messages + 5, 7), 3);
    cr_assert_eq(sz_ring_occupancy(&ring), 8);
    cr_assert_eq(sz_ring_push(&ring, messages + 8, 1), 0);
    void *out[12];
    cr_assert_eq(sz_ring_pop(&ring, out, 12), 8);
    for (uintptr_t index = 0; index < 8; index++) cr_assert_eq(out[index], (void *)(index + 1));
    cr_assert_eq(sz_ring_pop(&ring, out, 12), 0);
    cr_assert_eq(sz_ring_occupancy(&ring), 0);
    cr_assert(!sz_ring_wait_readable(&ring, 10, 1000000));
    sz_ring_deinit(&ring);
}

Test(ring, sequences_wrap_around_the_slots_in_order) {
    sz_ring_t ring;
    cr_assert_eq(sz_ring_init(&ring, 4), 0);
    uintptr_t next_in = 1, next_out = 1;
    for (int round = 0; round < 1000; round++) {
        void *messages[3] = {(void *)next_in, (void *)(next_in + 1), (void *)(next_in + 2)};
        cr_assert_eq(sz_ring_push(&ring, messages, 3), 3);
        next_in += 3;
        void *out[4];
        cr_assert_eq(sz_ring_pop(&ring, out, 4), 3);
        for (int index = 0; index < 3; index++) cr_assert_eq(out[index], (void *)next_out++);
    }
    sz_ring_deinit(&ring);
}

#define THREADED_MESSAGES 2000000u

typedef struct threaded {
    sz_ring_t ring;
    uint64_t seed;
} threaded_t;

static void *producer_main(void *argument) {
    threaded_t *threaded = argument;
    uint64_t state = threaded->seed;
    uintptr_t next = 1;
    void *batch[64];
    while (next <= THREADED_MESSAGES) {
        uint32_t count = 1 + (uint32_t)(random_next(&state) % 64);
        if (next + count - 1 > THREADED_MESSAGES) count = (uint32_t)(THREADED_MESSAGES - next + 1);
        for (uint32_t index = 0; index < count; index++) batch[index] = (void *)(next + index);
        uint32_t pushed = 0;
        while (pushed < count) {
            pushed += sz_ring_push(&threaded->ring, batch + pushed, count - pushed);
            /* Few spins: the futex path runs often. */
            if (pushed < count) sz_ring_wait_writable(&threaded->ring, 4, 0);
        }
        next += count;
    }
    return NULL;
}

Test(ring, two_threads_pass_every_message_once_in_order) {
    threaded_t threaded;
    threaded.seed = test_seed();
    cr_assert_eq(sz_ring_init(&threaded.ring, 256), 0);
    pthread_t producer;
    cr_assert_eq(pthread_create(&producer, NULL, producer_main, &threaded), 0);
    uint64_t state = threaded.seed ^ 0xabcdef;
    uintptr_t expected = 1;
    void *out[128];
    while (expected <= THREADED_MESSAGES) {
        if (!sz_ring_wait_readable(&threaded.ring, 4, 0)) continue;
        uint32_t count = sz_ring_pop(&threaded.ring, out, 1 + (uint32_t)(random_next(&state) % 128));
        for (uint32_t index = 0; index < count; index++) {
            if (out[index] != (void *)expected) {
                cr_assert_fail("message %lu arrived where %lu was expected (seed %llu)",
                         (unsigned long)(uintptr_t)out[index], (unsigned long)expected,
                         (unsigned long long)threaded.seed);
            }
            expected++;
        }
    }
    cr_assert_eq(pthread_join(producer, NULL), 0);
    cr_assert_eq(sz_ring_occupancy(&threaded.ring), 0);
    sz_ring_deinit(&threaded.ring);
}

static void *late_producer_main(void *argument) {
    sz_ring_t *ring = argument;
    /* Push only once the consumer has announced that it sleeps. */
    while (atomic_load(&ring->consumer_sleeping) == 0) __builtin_ia32_pause();
    void *message = (void *)0x42;
    SZ_ASSERT(sz_ring_push(ring, &message, 1) == 1);
    return NULL;
}

Test(ring, a_sleeping_consumer_is_woken_by_a_push) {
    sz_ring_t ring;
    cr_assert_eq(sz_ring_init(&ring, 8), 0);
    pthread_t producer;
    cr_assert_eq(pthread_create(&producer, NULL, late_producer_main, &ring), 0);
    cr_assert(sz_ring_wait_readable(&ring, 0, 0));
    void *out;
    cr_assert_eq(sz_ring_pop(&ring, &out, 1), 1);
    cr_assert_eq(out, (void *)0x42);
    cr_assert_eq(pthread_join(producer, NULL), 0);
    sz_ring_deinit(&ring);
}
