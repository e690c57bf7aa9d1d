/* ring.h: single-producer single-consumer ring of message pointers between the gateway
 * thread and the ledger thread (one ring each way).
 *
 * Contract: exactly one producer thread pushes, exactly one consumer thread pops; any
 * other thread may only read sz_ring_occupancy(). Capacity is a power of two fixed at
 * sz_ring_init(); the ring never allocates after it; sequences are u64 and never wrap in a
 * process lifetime. Messages are caller-owned: the ring moves pointers, never frees them.
 * Pushes and pops move batches: one release store publishes a whole batch.
 * Waiting spins first (a wake-up costs ~20 us, a batch often arrives sooner), then sleeps
 * on a futex, so an idle ring uses no CPU.
 * Errors: sz_ring_init() returns -EINVAL (capacity not a power of two in [2, 2^30]) or
 * -ENOMEM; a push into a full ring pushes what fits and reports how many; nothing else
 * fails. */
#ifndef SZ_RING_H
#define SZ_RING_H

#include <stdalign.h>
#include <stdatomic.h>

#include "core/base.h"

#define SZ_RING_CAPACITY_MAX (1u << 30)
#define SZ_CACHE_LINE_SIZE 64

typedef struct sz_ring {
    /* Producer side: its own line, so the consumer's writes never bounce it. */
    alignas(SZ_CACHE_LINE_SIZE) _Atomic uint64_t cursor; /* next sequence to publish */
    uint64_t consumed_cached; /* producer's last view of `consumed` */
    _Atomic uint32_t readable_signal; /* futex word the consumer sleeps on */
    _Atomic uint32_t consumer_sleeping;
    _Atomic uint32_t consumer_woken; /* sz_ring_wake_consumer() not yet seen */

    /* Consumer side. */
    alignas(SZ_CACHE_LINE_SIZE) _Atomic uint64_t consumed; /* next sequence to read */
    uint64_t cursor_cached; /* consumer's last view of `cursor` */
    _Atomic uint32_t writable_signal; /* futex word the producer sleeps on */
    _Atomic uint32_t producer_sleeping;

    /* Read-only after init. */
    alignas(SZ_CACHE_LINE_SIZE) void **slots;
    uint64_t capacity;
    uint64_t mask;
} sz_ring_t;

SZ_MUST_USE int sz_ring_init(sz_ring_t *ring, uint32_t capacity);
void sz_ring_deinit(sz_ring_t *ring);

/* Producer: publishes up to message_count messages in order; returns how many fit
 * (0 when full). Wakes a sleeping consumer. */
uint32_t sz_ring_push(sz_ring_t *ring, void *const *messages, uint32_t message_count);

/* Consumer: takes up to message_count_max messages in order; returns how many (0 when
 * empty). Wakes a sleeping producer. */
uint32_t sz_ring_pop(sz_ring_t *ring, void **messages_out, uint32_t message_count_max);

/* Consumer: returns once the ring holds a message, after spin_count polls and then
 * sleeping, or after timeout_ns (0 = no limit), or once sz_ring_wake_consumer() was
 * called since the last such return. True if a message is there. */
bool sz_ring_wait_readable(sz_ring_t *ring, uint32_t spin_count, uint64_t timeout_ns);

/* Any thread: makes the consumer's current or next sz_ring_wait_readable() return (false
 * if the ring is still empty), so it can look at something besides the ring, such as a
 * stop flag stored before this call. */
void sz_ring_wake_consumer(sz_ring_t *ring);

/* Producer: the same for free room. */
bool sz_ring_wait_writable(sz_ring_t *ring, uint32_t spin_count, uint64_t timeout_ns);

/* Messages in the ring now (approximate from other threads: for metrics). */
uint64_t sz_ring_occupancy(const sz_ring_t *ring);

#endif
