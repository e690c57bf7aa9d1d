/* ring.c: the SPSC ring of ring.h. The producer owns `cursor`, the consumer owns
 * `consumed`; each reads the other's with acquire and caches it, so the common case of a
 * batch touches the other side's cache line once. Sleeping uses one futex word per
 * direction and a "sleeping" flag checked after a full fence, so a publish can never slip
 * between the sleeper's last check and its futex wait. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"

static long futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns) {
    struct timespec timeout = {.tv_sec = (time_t)(timeout_ns / 1000000000ull),
                               .tv_nsec = (long)(timeout_ns % 1000000000ull)};
    return syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected,
                   timeout_ns == 0 ? NULL : &timeout, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word) {
    (void)syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static uint64_t clock_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

int sz_ring_init(sz_ring_t *ring, uint32_t capacity) {
    memset(ring, 0, sizeof(*ring));
    if (capacity < 2 || capacity > SZ_RING_CAPACITY_MAX || (capacity & (capacity - 1)) != 0) {
        return -EINVAL;
    }
    ring->slots = calloc(capacity, sizeof(void *));
    if (ring->slots == NULL) return -ENOMEM;
    ring->capacity = capacity;
    ring->mask = capacity - 1;
    atomic_init(&ring->cursor, 0);
    atomic_init(&ring->consumed, 0);
    atomic_init(&ring->consumer_woken, 0);
    return 0;
}

void sz_ring_deinit(sz_ring_t *ring) {
    free(ring->slots);
    ring->slots = NULL;
}

/* After publishing, wake the other side if it announced it sleeps. The seq_cst fence
 * pairs with the one in ring_sleep(): either the sleeper sees our publish on its re-check,
 * or we see its flag here. */
static void ring_signal(_Atomic uint32_t *sleeping, _Atomic uint32_t *signal) {
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(sleeping, memory_order_relaxed) != 0) {
        atomic_store_explicit(sleeping, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(signal, 1, memory_order_release);
        futex_wake(signal);
    }
}

uint32_t sz_ring_push(sz_ring_t *ring, void *const *messages, uint32_t message_count) {
    SZ_ASSERT(ring->slots != NULL);
    uint64_t cursor = atomic_load_explicit(&ring->cursor, memory_order_relaxed);
    uint64_t free_count = ring->capacity - (cursor - ring->consumed_cached);
    if (free_count < message_count) {
        /* Acquire: the consumer is done reading the slots it released. */
        ring->consumed_cached = atomic_load_explicit(&ring->consumed, memory_order_acquire);
        free_count = ring->capacity - (cursor - ring->consumed_cached);
    }
    SZ_ASSERT(free_count <= ring->capacity);
    uint32_t count = message_count < free_count ? message_count : (uint32_t)free_count;
    for (uint32_t index = 0; index < count; index++) {
        ring->slots[(cursor + index) & ring->mask] = messages[index];
    }
    if (count == 0) return 0;
    /* Release: the slots are written before the consumer can see the new cursor. */
    atomic_store_explicit(&ring->cursor, cursor + count, memory_order_release);
    ring_signal(&ring->consumer_sleeping, &ring->readable_signal);
    return count;
}

uint32_t sz_ring_pop(sz_ring_t *ring, void **messages_out, uint32_t message_count_max) {
    SZ_ASSERT(ring->slots != NULL);
    uint64_t consumed = atomic_load_explicit(&ring->consumed, memory_order_relaxed);
    uint64_t available = ring->cursor_cached - consumed;
    if (available < message_count_max) {
        /* Acquire: pairs with the producer's release of the cursor. */
        ring->cursor_cached = atomic_load_explicit(&ring->cursor, memory_order_acquire);
        available = ring->cursor_cached - consumed;
    }
    SZ_ASSERT(available <= ring->capacity);
    uint32_t count = message_count_max < available ? message_count_max : (uint32_t)available;
    for (uint32_t index = 0; index < count; index++) {
        messages_out[index] = ring->slots[(consumed + index) & ring->mask];
    }
    if (count == 0) return 0;
    /* Release: our reads of the slots finish before the producer may reuse them. */
    atomic_store_explicit(&ring->consumed, consumed + count, memory_order_release);
    ring_signal(&ring->producer_sleeping, &ring->writable_signal);
    return count;
}

static bool ring_readable(sz_ring_t *ring) {
    return atomic_load_explicit(&ring->cursor, memory_order_acquire) !=
           atomic_load_explicit(&ring->consumed, memory_order_relaxed);
}

static bool ring_writable(sz_ring_t *ring) {
    return atomic_load_explicit(&ring->cursor, memory_order_relaxed) -
               atomic_load_explicit(&ring->consumed, memory_order_acquire) <
           ring->capacity;
}

/* Takes a pending sz_ring_wake_consumer() (woken is NULL for the producer's waits). */
static bool ring_woken_take(_Atomic uint32_t *woken) {
    if (woken == NULL || atomic_load_explicit(woken, memory_order_relaxed) == 0) return false;
    atomic_store_explicit(woken, 0, memory_order_relaxed);
    return true;
}

/* Spins, then sleeps on the futex until ready() holds, the deadline passes or (consumer
 * only) a wake-up was asked for. */
static bool ring_wait(sz_ring_t *ring, bool (*ready)(sz_ring_t *), _Atomic uint32_t *sleeping,
                      _Atomic uint32_t *signal, _Atomic uint32_t *woken, uint32_t spin_count,
                      uint64_t timeout_ns) {
    for (uint32_t spin = 0; spin < spin_count; spin++) {
        if (ready(ring)) return true;
        __builtin_ia32_pause();
    }
    uint64_t deadline_ns = timeout_ns == 0 ? 0 : clock_ns() + timeout_ns;
    while (true) {
        uint32_t observed = atomic_load_explicit(signal, memory_order_acquire);
        atomic_store_explicit(sleeping, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (ready(ring)) {
            atomic_store_explicit(sleeping, 0, memory_order_relaxed);
            return true;
        }
        /* After the fence, like ready(): either we see the waker's flag here, or its
         * signal increment comes after our `observed` and the futex wait returns. */
        if (ring_woken_take(woken)) {
            atomic_store_explicit(sleeping, 0, memory_order_relaxed);
            return false;
        }
        uint64_t remaining_ns = 0;
        if (deadline_ns != 0) {
            uint64_t now_ns = clock_ns();
            if (now_ns >= deadline_ns) {
                atomic_store_explicit(sleeping, 0, memory_order_relaxed);
                return ready(ring);
            }
            remaining_ns = deadline_ns - now_ns;
        }
        /* EAGAIN (the signal moved), EINTR and ETIMEDOUT all mean: look again. */
        (void)futex_wait(signal, observed, remaining_ns);
    }
}

bool sz_ring_wait_readable(sz_ring_t *ring, uint32_t spin_count, uint64_t timeout_ns) {
    return ring_wait(ring, ring_readable, &ring->consumer_sleeping, &ring->readable_signal,
                     &ring->consumer_woken, spin_count, timeout_ns);
}

bool sz_ring_wait_writable(sz_ring_t *ring, uint32_t spin_count, uint64_t timeout_ns) {
    return ring_wait(ring, ring_writable, &ring->producer_sleeping, &ring->writable_signal,
                     NULL, spin_count, timeout_ns);
}

void sz_ring_wake_consumer(sz_ring_t *ring) {
    /* seq_cst on both: pairs with the consumer's fence in ring_wait() (see there). */
    atomic_store_explicit(&ring->consumer_woken, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&ring->readable_signal, 1, memory_order_seq_cst);
    futex_wake(&ring->readable_signal);
}

uint64_t sz_ring_occupancy(const sz_ring_t *ring) {
    uint64_t consumed = atomic_load_explicit(&ring->consumed, memory_order_relaxed);
    uint64_t cursor = atomic_load_explicit(&ring->cursor, memory_order_relaxed);
    return cursor >= consumed ? cursor - consumed : 0;
}
