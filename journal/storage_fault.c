/* storage_fault.c: an in-memory storage that misbehaves on purpose. Submissions queue up
 * and land only when reaped, so a test can "crash" with writes in flight and have each of
 * their sectors land or not; armed faults turn chosen submissions into short writes, EIO
 * or ENOSPC on the write, or an error on the fdatasync. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"

#define FAULT_FILES_MAX 64u

typedef struct fault_file {
    char name[SZ_STORAGE_NAME_SIZE];
    uint8_t *data;
    uint64_t size;
    bool exists;
} fault_file_t;

typedef struct fault_handle {
    uint32_t file_index;
    bool read_only;
    bool used;
} fault_handle_t;

typedef struct fault_submission {
    uint32_t file_index;
    uint64_t offset;
    const uint8_t *buffer;
    uint64_t size;
    uint64_t tag;
    sz_storage_fault_t fault;
} fault_submission_t;

typedef struct fault_storage {
    sz_storage_t base;
    fault_file_t files[FAULT_FILES_MAX];
    fault_handle_t handles[SZ_STORAGE_FILES_MAX];
    fault_submission_t queue[SZ_STORAGE_IN_FLIGHT_MAX];
    uint32_t queue_count;
    sz_storage_fault_t faults[SZ_STORAGE_FAULTS_MAX];
    uint32_t fault_count;
    uint32_t submission_count;
    bool locked;
} fault_storage_t;

static fault_storage_t *fault_of(sz_storage_t *storage) { return (fault_storage_t *)storage; }
static const fault_storage_t *fault_of_const(const sz_storage_t *storage) {
    return (const fault_storage_t *)storage;
}

static fault_file_t *fault_file_find(fault_storage_t *self, const char *name) {
    for (uint32_t index = 0; index < FAULT_FILES_MAX; index++) {
        if (self->files[index].exists && strcmp(self->files[index].name, name) == 0) {
            return &self->files[index];
        }
    }
    return NULL;
}

/* Grows a file to hold [0, end): a write past the end extends it, like a real file. */
static int fault_file_reserve(fault_file_t *file, uint64_t end) {
    if (end <= file->size) return 0;
    uint8_t *data = realloc(file->data, end);
    if (data == NULL) return -ENOMEM;
    memset(data + file->size, 0, end - file->size);
    file->data = data;
    file->size = end;
    return 0;
}

static fault_file_t *fault_handle_file(fault_storage_t *self, int file) {
    SZ_ASSERT(file >= 0 && file < (int)SZ_STORAGE_FILES_MAX);
    SZ_ASSERT(self->handles[file].used);
    return &self->files[self->handles[file].file_index];
}

static int fault_file_open(sz_storage_t *storage, const char *name, uint32_t flags,
                           uint64_t size, int *file_out) {
    fault_storage_t *self = fault_of(storage);
    SZ_ASSERT(strlen(name) < SZ_STORAGE_NAME_SIZE);
    int handle = -1;
    for (uint32_t index = 0; index < SZ_STORAGE_FILES_MAX; index++) {
        if (!self->handles[index].used) {
            handle = (int)index;
            break;
        }
    }
    if (handle < 0) return -EMFILE;
    fault_file_t *file = fault_file_find(self, name);
    if (flags & SZ_STORAGE_OPEN_CREATE) {
        if (file != NULL) return -EEXIST;
        for (uint32_t index = 0; index < FAULT_FILES_MAX && file == NULL; index++) {
            if (!self->files[index].exists) file = &self->files[index];
        }
        if (file == NULL) return -ENOSPC;
        *file = (fault_file_t){.exists = true};
        strcpy(file->name, name);
        int result = fault_file_reserve(file, size);
        if (result < 0) {
            file->exists = false;
            return result;
        }
    }
    if (file == NULL) return -ENOENT;
    self->handles[handle] = (fault_handle_t){
        .file_index = (uint32_t)(file - self->files),
        .read_only = (flags & SZ_STORAGE_OPEN_READ_ONLY) != 0,
        .used = true,
    };
    *file_out = handle;
    return 0;
}

static void fault_file_close(sz_storage_t *storage, int file) {
    fault_storage_t *self = fault_of(storage);
    SZ_ASSERT(file >= 0 && file < (int)SZ_STORAGE_FILES_MAX);
    /* After sz_storage_fault_crash() every handle is already gone. */
    self->handles[file].used = false;
}

static int fault_file_remove(sz_storage_t *storage, const char *name) {
    fault_storage_t *self = fault_of(storage);
    fault_file_t *file = fault_file_find(self, name);
    if (file == NULL) return -ENOENT;
    free(file->data);
    *file = (fault_file_t){.exists = false};
    return 0;
}

static int fault_file_size(sz_storage_t *storage, int file, uint64_t *size_out) {
    *size_out = fault_handle_file(fault_of(storage), file)->size;
    return 0;
}

static int64_t fault_read(sz_storage_t *storage, int file, uint64_t offset, void *buffer,
                          uint64_t size) {
    fault_file_t *target = fault_handle_file(fault_of(storage), file);
    if (offset >= target->size) return 0;
    uint64_t count = target->size - offset < size ? target->size - offset : size;
    memcpy(buffer, target->data + offset, count);
    return (int64_t)count;
}

static int fault_write_sync(sz_storage_t *storage, int file, uint64_t offset,
                            const void *buffer, uint64_t size) {
    fault_storage_t *self = fault_of(storage);
    SZ_ASSERT(!self->handles[file].read_only);
    fault_file_t *target = fault_handle_file(self, file);
    int result = fault_file_reserve(target, offset + size);
    if (result < 0) return result;
    memcpy(target->data + offset, buffer, size);
    return 0;
}

static int fault_submit(sz_storage_t *storage, int file, uint64_t offset, const void *buffer,
                        uint64_t size, uint64_t tag) {
    fault_storage_t *self = fault_of(storage);
    SZ_ASSERT(offset % SZ_STORAGE_SECTOR_SIZE == 0 && size % SZ_STORAGE_SECTOR_SIZE == 0);
    SZ_ASSERT(size > 0);
    SZ_ASSERT(!self->handles[file].read_only);
    if (self->queue_count == SZ_STORAGE_IN_FLIGHT_MAX) return -EBUSY;
    sz_storage_fault_t fault = {.kind = SZ_STORAGE_FAULT_NONE};
    for (uint32_t index = 0; index < self->fault_count; index++) {
        if (self->faults[index].at_submission == self->submission_count) {
            fault = self->faults[index];
        }
    }
    self->submission_count++;
    if (fault.kind == SZ_STORAGE_FAULT_SUBMIT_ERROR) return -fault.error;
    self->queue[self->queue_count++] = (fault_submission_t){
        .file_index = self->handles[file].file_index,
        .offset = offset,
        .buffer = buffer,
        .size = size,
        .tag = tag,
        .fault = fault,
    };
    storage->in_flight_count++;
    return 0;
}

/* Lands one queued submission and describes how it went. */
static sz_storage_completion_t fault_land(fault_storage_t *self, const fault_submission_t *entry) {
    fault_file_t *file = &self->files[entry->file_index];
    sz_storage_completion_t completion = {.tag = entry->tag};
    uint64_t landed = entry->size;
    if (entry->fault.kind == SZ_STORAGE_FAULT_WRITE_ERROR) landed = 0;
    if (entry->fault.kind == SZ_STORAGE_FAULT_SHORT_WRITE) {
        landed = entry->fault.short_size < entry->size ? entry->fault.short_size : 0;
    }
    if (!file->exists || fault_file_reserve(file, entry->offset + landed) < 0) {
        completion.write_result = -EIO;
        completion.sync_result = -ECANCELED;
        return completion;
    }
    memcpy(file->data + entry->offset, entry->buffer, landed);
    completion.write_result = (int32_t)landed;
    completion.sync_result = 0;
    switch (entry->fault.kind) {
    case SZ_STORAGE_FAULT_WRITE_ERROR:
        completion.write_result = -entry->fault.error;
        completion.sync_result = -ECANCELED;
        break;
    case SZ_STORAGE_FAULT_SHORT_WRITE: completion.sync_result = -ECANCELED; break;
    case SZ_STORAGE_FAULT_SYNC_ERROR: completion.sync_result = -entry->fault.error; break;
    default: break;
    }
    return completion;
}

static int fault_reap(sz_storage_t *storage, bool wait, sz_storage_completion_t *completions_out,
                      uint32_t completion_max) {
    fault_storage_t *self = fault_of(storage);
    (void)wait; /* everything queued lands at once: nothing to wait for */
    uint32_t count = 0;
    while (count < completion_max && count < self->queue_count) {
        completions_out[count] = fault_land(self, &self->queue[count]);
        count++;
    }
    memmove(self->queue, self->queue + count, (self->queue_count - count) * sizeof(self->queue[0]));
    self->queue_count -= count;
    storage->in_flight_count -= count;
    return (int)count;
}

static int fault_lock(sz_storage_t *storage) {
    fault_storage_t *self = fault_of(storage);
    if (self->locked) return -EWOULDBLOCK;
    self->locked = true;
    return 0;
}

static int fault_list(sz_storage_t *storage, sz_storage_name_fn fn, void *context) {
    fault_storage_t *self = fault_of(storage);
    for (uint32_t index = 0; index < FAULT_FILES_MAX; index++) {
        if (!self->files[index].exists) continue;
        int result = fn(self->files[index].name, context);
        if (result != 0) return result;
    }
    return 0;
}

static void fault_deinit(sz_storage_t *storage) {
    fault_storage_t *self = fault_of(storage);
    for (uint32_t index = 0; index < FAULT_FILES_MAX; index++) free(self->files[index].data);
    free(self);
}

static const sz_storage_vtable_t fault_vtable = {
    .file_open = fault_file_open,
    .file_close = fault_file_close,
    .file_remove = fault_file_remove,
    .file_size = fault_file_size,
    .read = fault_read,
    .write_sync = fault_write_sync,
    .submit = fault_submit,
    .reap = fault_reap,
    .lock = fault_lock,
    .deinit = fault_deinit,
    .list = fault_list,
};

int sz_storage_fault_init(sz_storage_t **storage_out) {
    fault_storage_t *self = calloc(1, sizeof(*self));
    if (self == NULL) return -ENOMEM;
    self->base.vtable = &fault_vtable;
    *storage_out = &self->base;
    return 0;
}

int sz_storage_fault_arm(sz_storage_t *storage, const sz_storage_fault_t *fault) {
    fault_storage_t *self = fault_of(storage);
    SZ_ASSERT(storage->vtable == &fault_vtable);
    if (self->fault_count == SZ_STORAGE_FAULTS_MAX) return -ENOSPC;
    self->faults[self->fault_count++] = *fault;
    return 0;
}

uint32_t sz_storage_fault_submission_count(const sz_storage_t *storage) {
    SZ_ASSERT(storage->vtable == &fault_vtable);
    return fault_of_const(storage)->submission_count;
}

void sz_storage_fault_crash(sz_storage_t *storage, uint64_t seed) {
    fault_storage_t *self = fault_of(storage);
    SZ_ASSERT(storage->vtable == &fault_vtable);
    uint64_t state = seed ^ 0x9E3779B97F4A7C15ull;
    for (uint32_t index = 0; index < self->queue_count; index++) {
        const fault_submission_t *entry = &self->queue[index];
        fault_file_t *file = &self->files[entry->file_index];
        if (!file->exists || fault_file_reserve(file, entry->offset + entry->size) < 0) continue;
        for (uint64_t sector = 0; sector < entry->size; sector += SZ_STORAGE_SECTOR_SIZE) {
            /* xorshift64: enough spread for "this sector landed or not". */
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if (state & 1) {
                memcpy(file->data + entry->offset + sector, entry->buffer + sector,
                       SZ_STORAGE_SECTOR_SIZE);
            }
        }
    }
    self->queue_count = 0;
    storage->in_flight_count = 0;
    for (uint32_t index = 0; index < SZ_STORAGE_FILES_MAX; index++) {
        self->handles[index].used = false;
    }
    self->locked = false;
}

uint8_t *sz_storage_fault_file_data(sz_storage_t *storage, const char *name, uint64_t *size_out) {
    SZ_ASSERT(storage->vtable == &fault_vtable);
    fault_file_t *file = fault_file_find(fault_of(storage), name);
    if (file == NULL) return NULL;
    if (size_out != NULL) *size_out = file->size;
    return file->data;
}

void sz_storage_fault_unlock(sz_storage_t *storage) {
    SZ_ASSERT(storage->vtable == &fault_vtable);
    fault_of(storage)->locked = false;
}
