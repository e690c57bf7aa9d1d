/* storage.h: the storage interface under the journal. A data directory holds named files;
 * reads and whole-file set-up are synchronous (start-up, tools), appends are asynchronous:
 * one write linked to one fdatasync, completed later through sz_storage_reap().
 *
 * Contract:
 * - One thread owns a storage object; nothing here locks. Two implementations:
 *   sz_storage_uring_init() (io_uring, O_DIRECT writes, buffered reads, a flock on
 *   DIR/lock) and sz_storage_fault_init() (in memory, for tests and the simulator: it
 *   injects short writes, EIO on write or fdatasync, ENOSPC, and tears in-flight writes at
 *   a simulated crash; tests may flip bits in its files directly).
 * - Every fallible function returns 0 (or a byte count where it says so) or a negative
 *   errno. Nothing here asserts on file contents.
 * - Async writes: offset, size and buffer address must be multiples of
 *   SZ_STORAGE_SECTOR_SIZE and the buffer must stay untouched until its completion is
 *   reaped. At most SZ_STORAGE_IN_FLIGHT_MAX submissions may be outstanding. A completion
 *   reports the write's result (bytes written, possibly short, or -errno) and the
 *   fdatasync's result (0, -errno, or -ECANCELED when the write fell short or failed and
 *   the linked sync therefore did not run). Data counts as durable only when both are
 *   complete: write_result == size and sync_result == 0.
 * - File handles are small integers below SZ_STORAGE_FILES_MAX, valid until closed. */
#ifndef SZ_STORAGE_H
#define SZ_STORAGE_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/base.h"

/* O_DIRECT needs the logical block size; 4096 also keeps every group commit on its own
 * pages so a torn write can never touch a durable sector. */
#define SZ_STORAGE_SECTOR_SIZE 4096u
/* The journal keeps 2 to 4 writes in flight; the ring is sized for pairs (write + sync). */
#define SZ_STORAGE_IN_FLIGHT_MAX 8u
/* The superblock, the lock and a handful of segments are open at once. */
#define SZ_STORAGE_FILES_MAX 16u
#define SZ_STORAGE_NAME_SIZE 64u

enum {
    SZ_STORAGE_OPEN_READ_ONLY = 1u << 0,
    SZ_STORAGE_OPEN_CREATE = 1u << 1, /* create (exclusive) and preallocate size bytes */
};

typedef struct sz_storage_completion {
    uint64_t tag;
    int32_t write_result; /* bytes written (may be short) or -errno */
    int32_t sync_result;  /* 0, -errno, or -ECANCELED when the write did not complete */
} sz_storage_completion_t;

typedef struct sz_storage sz_storage_t;

/* Called with each file name by list(): return 0 to go on, anything else stops the listing
 * and is returned by it. */
typedef int (*sz_storage_name_fn)(const char *name, void *context);

typedef struct sz_storage_vtable {
    int (*file_open)(sz_storage_t *storage, const char *name, uint32_t flags, uint64_t size,
                     int *file_out);
    void (*file_close)(sz_storage_t *storage, int file);
    int (*file_remove)(sz_storage_t *storage, const char *name);
    int (*file_size)(sz_storage_t *storage, int file, uint64_t *size_out);
    /* Returns the byte count read (short only at the end of the file) or -errno. */
    int64_t (*read)(sz_storage_t *storage, int file, uint64_t offset, void *buffer,
                    uint64_t size);
    /* Synchronous write + fdatasync of the whole range (format, recovery repairs). */
    int (*write_sync)(sz_storage_t *storage, int file, uint64_t offset, const void *buffer,
                      uint64_t size);
    int (*submit)(sz_storage_t *storage, int file, uint64_t offset, const void *buffer,
                  uint64_t size, uint64_t tag);
    /* Collects up to completion_max completions; with wait, blocks for at least one if
     * anything is in flight. Returns the count. */
    int (*reap)(sz_storage_t *storage, bool wait, sz_storage_completion_t *completions_out,
                uint32_t completion_max);
    /* Takes the directory's exclusive lock for the lifetime of the storage object:
     * -EWOULDBLOCK (== -EAGAIN) when another process or object holds it. */
    int (*lock)(sz_storage_t *storage);
    void (*deinit)(sz_storage_t *storage);
    /* Calls fn for every regular file of the directory, in no particular order (start-up
     * and tools: finding the segments that remain after retention). */
    int (*list)(sz_storage_t *storage, sz_storage_name_fn fn, void *context);
} sz_storage_vtable_t;

struct sz_storage {
    const sz_storage_vtable_t *vtable;
    uint32_t in_flight_count;
};

/* io_uring on a real directory (which must exist). */
SZ_MUST_USE int sz_storage_uring_init(const char *directory, sz_storage_t **storage_out);

/* Faults the in-memory storage injects. A fault fires on the submission whose index
 * (0-based, counted over the storage's lifetime) equals at_submission. */
typedef enum sz_storage_fault_kind {
    SZ_STORAGE_FAULT_NONE = 0,
    SZ_STORAGE_FAULT_WRITE_ERROR = 1,  /* write fails with -error, nothing written */
    SZ_STORAGE_FAULT_SHORT_WRITE = 2,  /* only short_size bytes land; sync cancelled */
    SZ_STORAGE_FAULT_SYNC_ERROR = 3,   /* write lands, fdatasync fails with -error */
    SZ_STORAGE_FAULT_SUBMIT_ERROR = 4, /* submit itself returns -error */
} sz_storage_fault_kind_t;

typedef struct sz_storage_fault {
    sz_storage_fault_kind_t kind;
    uint32_t at_submission;
    int error;           /* positive errno: EIO, ENOSPC */
    uint64_t short_size; /* for SHORT_WRITE, a multiple of the sector size */
} sz_storage_fault_t;

#define SZ_STORAGE_FAULTS_MAX 8u

/* In-memory storage: files survive sz_storage_fault_crash() and live until deinit. */
SZ_MUST_USE int sz_storage_fault_init(sz_storage_t **storage_out);
/* Arms a fault (at most SZ_STORAGE_FAULTS_MAX). Returns 0 or -ENOSPC. */
SZ_MUST_USE int sz_storage_fault_arm(sz_storage_t *storage, const sz_storage_fault_t *fault);
/* Submissions made so far. */
uint32_t sz_storage_fault_submission_count(const sz_storage_t *storage);
/* Submissions are queued and only land when reaped; this drops every queued one after
 * tearing it: each of its sectors lands or not by the bits of seed (a simple generator),
 * as a power loss would do. Closes nothing: the journal on top must be discarded. */
void sz_storage_fault_crash(sz_storage_t *storage, uint64_t seed);
/* Direct access to a file's bytes (NULL if absent) for bit flips and comparisons. */
uint8_t *sz_storage_fault_file_data(sz_storage_t *storage, const char *name, uint64_t *size_out);
/* Releases the lock as a crashed process would. */
void sz_storage_fault_unlock(sz_storage_t *storage);

/* Wrappers so callers read like module functions. */
SZ_MUST_USE static inline int sz_storage_file_open(sz_storage_t *storage, const char *name,
                                                   uint32_t flags, uint64_t size,
                                                   int *file_out) {
    return storage->vtable->file_open(storage, name, flags, size, file_out);
}
static inline void sz_storage_file_close(sz_storage_t *storage, int file) {
    storage->vtable->file_close(storage, file);
}
SZ_MUST_USE static inline int sz_storage_file_remove(sz_storage_t *storage, const char *name) {
    return storage->vtable->file_remove(storage, name);
}
SZ_MUST_USE static inline int sz_storage_file_size(sz_storage_t *storage, int file,
                                                   uint64_t *size_out) {
    return storage->vtable->file_size(storage, file, size_out);
}
SZ_MUST_USE static inline int64_t sz_storage_read(sz_storage_t *storage, int file,
                                                  uint64_t offset, void *buffer,
                                                  uint64_t size) {
    return storage->vtable->read(storage, file, offset, buffer, size);
}
SZ_MUST_USE static inline int sz_storage_write_sync(sz_storage_t *storage, int file,
                                                    uint64_t offset, const void *buffer,
                                                    uint64_t size) {
    return storage->vtable->write_sync(storage, file, offset, buffer, size);
}
SZ_MUST_USE static inline int sz_storage_submit(sz_storage_t *storage, int file,
                                                uint64_t offset, const void *buffer,
                                                uint64_t size, uint64_t tag) {
    return storage->vtable->submit(storage, file, offset, buffer, size, tag);
}
SZ_MUST_USE static inline int sz_storage_reap(sz_storage_t *storage, bool wait,
                                              sz_storage_completion_t *completions_out,
                                              uint32_t completion_max) {
    return storage->vtable->reap(storage, wait, completions_out, completion_max);
}
SZ_MUST_USE static inline int sz_storage_lock(sz_storage_t *storage) {
    return storage->vtable->lock(storage);
}
SZ_MUST_USE static inline int sz_storage_list(sz_storage_t *storage, sz_storage_name_fn fn,
                                              void *context) {
    if (storage->vtable->list == NULL) return -EOPNOTSUPP; /* a wrapper that does not list */
    return storage->vtable->list(storage, fn, context);
}
static inline void sz_storage_deinit(sz_storage_t *storage) {
    if (storage != NULL) storage->vtable->deinit(storage);
}

#endif
