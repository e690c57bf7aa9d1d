/* storage.c: the real storage: files of one data directory, appends through io_uring as
 * one O_DIRECT write linked to one fdatasync, reads through a second, buffered descriptor
 * (start-up and tools read from the page cache), and a flock on DIR/lock. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage.h"

/* Each submission is two entries (write + fsync); room for every in-flight pair. */
#define URING_ENTRIES (SZ_STORAGE_IN_FLIGHT_MAX * 2u)

typedef struct uring_file {
    int fd_direct; /* O_DIRECT, read-write; -1 when read-only */
    int fd_read;   /* buffered */
    bool used;
} uring_file_t;

typedef struct uring_slot {
    uint64_t tag;
    int32_t write_result;
    int32_t sync_result;
    uint8_t parts_done; /* 0, 1 or 2 of the write and the sync */
    bool used;
} uring_slot_t;

typedef struct uring_storage {
    sz_storage_t base;
    struct io_uring ring;
    bool ring_ready;
    int directory_fd;
    int lock_fd;
    uring_file_t files[SZ_STORAGE_FILES_MAX];
    uring_slot_t slots[SZ_STORAGE_IN_FLIGHT_MAX];
} uring_storage_t;

static uring_storage_t *uring_of(sz_storage_t *storage) { return (uring_storage_t *)storage; }

static int uring_file_open(sz_storage_t *storage, const char *name, uint32_t flags,
                           uint64_t size, int *file_out) {
    uring_storage_t *self = uring_of(storage);
    int file = -1;
    for (uint32_t index = 0; index < SZ_STORAGE_FILES_MAX; index++) {
        if (!self->files[index].used) {
            file = (int)index;
            break;
        }
    }
    if (file < 0) return -EMFILE;
    bool read_only = (flags & SZ_STORAGE_OPEN_READ_ONLY) != 0;
    int open_flags = read_only ? O_RDONLY : O_RDWR;
    if (flags & SZ_STORAGE_OPEN_CREATE) open_flags |= O_CREAT | O_EXCL;
    int fd_read = openat(self->directory_fd, name, open_flags | O_CLOEXEC, 0644);
    if (fd_read < 0) return -errno;
    int fd_direct = -1;
    int result = 0;
    if (flags & SZ_STORAGE_OPEN_CREATE) {
        /* Preallocate: a file that grows costs a metadata commit on every fdatasync. */
        if (size > 0 && fallocate(fd_read, 0, 0, (off_t)size) != 0) {
            result = -errno;
            goto fail;
        }
        if (fsync(fd_read) != 0 || fsync(self->directory_fd) != 0) {
            result = -errno;
            goto fail;
        }
    }
    if (!read_only) {
        fd_direct = openat(self->directory_fd, name, O_RDWR | O_DIRECT | O_CLOEXEC);
        if (fd_direct < 0) {
            result = -errno;
            goto fail;
        }
    }
    self->files[file] = (uring_file_t){.fd_direct = fd_direct, .fd_read = fd_read, .used = true};
    *file_out = file;
    return 0;
fail:
    close(fd_read);
    if (flags & SZ_STORAGE_OPEN_CREATE) (void)unlinkat(self->directory_fd, name, 0);
    return result;
}

static void uring_file_close(sz_storage_t *storage, int file) {
    uring_storage_t *self = uring_of(storage);
    SZ_ASSERT(file >= 0 && file < (int)SZ_STORAGE_FILES_MAX);
    SZ_ASSERT(self->files[file].used);
    if (self->files[file].fd_direct >= 0) close(self->files[file].fd_direct);
    close(self->files[file].fd_read);
    self->files[file] = (uring_file_t){.fd_direct = -1, .fd_read = -1, .used = false};
}

static int uring_file_remove(sz_storage_t *storage, const char *name) {
    uring_storage_t *self = uring_of(storage);
    if (unlinkat(self->directory_fd, name, 0) != 0) return -errno;
    if (fsync(self->directory_fd) != 0) return -errno;
    return 0;
}

static int uring_file_size(sz_storage_t *storage, int file, uint64_t *size_out) {
    uring_storage_t *self = uring_of(storage);
    SZ_ASSERT(self->files[file].used);
    struct stat status;
    if (fstat(self->files[file].fd_read, &status) != 0) return -errno;
    *size_out = (uint64_t)status.st_size;
    return 0;
}

static int64_t uring_read(sz_storage_t *storage, int file, uint64_t offset, void *buffer,
                          uint64_t size) {
    uring_storage_t *self = uring_of(storage);
    SZ_ASSERT(self->files[file].used);
    uint64_t done = 0;
    /* Bounded: each pass either advances, hits the end of the file, or fails. */
    while (done < size) {
        ssize_t count = pread(self->files[file].fd_read, (uint8_t *)buffer + done, size - done,
                              (off_t)(offset + done));
        if (count < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (count == 0) break;
        done += (uint64_t)count;
    }
    return (int64_t)done;
}

static int uring_write_sync(sz_storage_t *storage, int file, uint64_t offset,
                            const void *buffer, uint64_t size) {
    uring_storage_t *self = uring_of(storage);
    SZ_ASSERT(self->files[file].used);
    int fd = self->files[file].fd_direct;
    if (fd < 0) return -EBADF;
    SZ_ASSERT(offset % SZ_STORAGE_SECTOR_SIZE == 0);
    SZ_ASSERT(size % SZ_STORAGE_SECTOR_SIZE == 0);
    uint64_t done = 0;
    while (done < size) {
        ssize_t count = pwrite(fd, (const uint8_t *)buffer + done, size - done,
                               (off_t)(offset + done));
        if (count < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (count == 0) return -EIO;
        done += (uint64_t)count;
    }
    if (fdatasync(fd) != 0) return -errno;
    return 0;
}

static int uring_submit(sz_storage_t *storage, int file, uint64_t offset, const void *buffer,
                        uint64_t size, uint64_t tag) {
    uring_storage_t *self = uring_of(storage);
    SZ_ASSERT(self->files[file].used);
    SZ_ASSERT(offset % SZ_STORAGE_SECTOR_SIZE == 0);
    SZ_ASSERT(size % SZ_STORAGE_SECTOR_SIZE == 0 && size > 0 && size <= UINT32_MAX / 2);
    SZ_ASSERT((uintptr_t)buffer % SZ_STORAGE_SECTOR_SIZE == 0);
    int fd = self->files[file].fd_direct;
    if (fd < 0) return -EBADF;
    uint32_t slot = UINT32_MAX;
    for (uint32_t index = 0; index < SZ_STORAGE_IN_FLIGHT_MAX; index++) {
        if (!self->slots[index].used) {
            slot = index;
            break;
        }
    }
    if (slot == UINT32_MAX) return -EBUSY;
    struct io_uring_sqe *write_sqe = io_uring_get_sqe(&self->ring);
    struct io_uring_sqe *sync_sqe = io_uring_get_sqe(&self->ring);
    /* The ring holds two entries per slot, so both must be available. */
    SZ_ASSERT(write_sqe != NULL && sync_sqe != NULL);
    io_uring_prep_write(write_sqe, fd, buffer, (unsigned)size, offset);
    write_sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe_set_data64(write_sqe, (uint64_t)slot * 2);
    io_uring_prep_fsync(sync_sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sync_sqe, (uint64_t)slot * 2 + 1);
    self->slots[slot] = (uring_slot_t){.tag = tag, .used = true};
    int submitted = io_uring_submit(&self->ring);
    if (submitted < 0) {
        self->slots[slot].used = false;
        return submitted;
    }
    SZ_ASSERT(submitted == 2);
    storage->in_flight_count++;
    return 0;
}

static int uring_reap(sz_storage_t *storage, bool wait, sz_storage_completion_t *completions_out,
                      uint32_t completion_max) {
    uring_storage_t *self = uring_of(storage);
    SZ_ASSERT(completion_max > 0);
    uint32_t count = 0;
    /* Bounded by the CQEs of the in-flight pairs: each pass consumes one. */
    while (count < completion_max && storage->in_flight_count > 0) {
        struct io_uring_cqe *cqe = NULL;
        int result = (wait && count == 0) ? io_uring_wait_cqe(&self->ring, &cqe)
                                          : io_uring_peek_cqe(&self->ring, &cqe);
        if (result == -EAGAIN || result == -EINTR) break;
        if (result < 0) return result;
        uint64_t data = io_uring_cqe_get_data64(cqe);
        int32_t cqe_result = cqe->res;
        io_uring_cqe_seen(&self->ring, cqe);
        uint32_t slot = (uint32_t)(data / 2);
        SZ_ASSERT(slot < SZ_STORAGE_IN_FLIGHT_MAX && self->slots[slot].used);
        if (data % 2 == 0) {
            self->slots[slot].write_result = cqe_result;
        } else {
            self->slots[slot].sync_result = cqe_result;
        }
        self->slots[slot].parts_done++;
        if (self->slots[slot].parts_done == 2) {
            completions_out[count++] = (sz_storage_completion_t){
                .tag = self->slots[slot].tag,
                .write_result = self->slots[slot].write_result,
                .sync_result = self->slots[slot].sync_result,
            };
            self->slots[slot].used = false;
            storage->in_flight_count--;
        }
    }
    return (int)count;
}

static int uring_lock(sz_storage_t *storage) {
    uring_storage_t *self = uring_of(storage);
    if (self->lock_fd >= 0) return 0;
    int fd = openat(self->directory_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int result = -errno;
        close(fd);
        return result;
    }
    self->lock_fd = fd;
    return 0;
}

static void uring_deinit(sz_storage_t *storage) {
    uring_storage_t *self = uring_of(storage);
    /* Wait for in-flight writes: their buffers belong to the caller, who frees them next. */
    sz_storage_completion_t completions[SZ_STORAGE_IN_FLIGHT_MAX];
    while (self->ring_ready && storage->in_flight_count > 0) {
        if (uring_reap(storage, true, completions, SZ_STORAGE_IN_FLIGHT_MAX) < 0) break;
    }
    for (uint32_t index = 0; index < SZ_STORAGE_FILES_MAX; index++) {
        if (self->files[index].used) uring_file_close(storage, (int)index);
    }
    if (self->ring_ready) io_uring_queue_exit(&self->ring);
    if (self->lock_fd >= 0) close(self->lock_fd);
    if (self->directory_fd >= 0) close(self->directory_fd);
    free(self);
}

static int uring_list(sz_storage_t *storage, sz_storage_name_fn fn, void *context) {
    uring_storage_t *self = uring_of(storage);
    /* A descriptor of our own: readdir moves its offset. */
    int fd = openat(self->directory_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    DIR *directory = fdopendir(fd);
    if (directory == NULL) {
        int error = -errno;
        close(fd);
        return error;
    }
    int result = 0;
    /* Bounded by the directory's entries. */
    while (result == 0) {
        errno = 0;
        struct dirent *entry = readdir(directory);
        if (entry == NULL) {
            if (errno != 0) result = -errno;
            break;
        }
        if (entry->d_type != DT_REG && entry->d_type != DT_UNKNOWN) continue;
        result = fn(entry->d_name, context);
    }
    closedir(directory);
    return result;
}

static const sz_storage_vtable_t uring_vtable = {
    .file_open = uring_file_open,
    .file_close = uring_file_close,
    .file_remove = uring_file_remove,
    .file_size = uring_file_size,
    .read = uring_read,
    .write_sync = uring_write_sync,
    .submit = uring_submit,
    .reap = uring_reap,
    .lock = uring_lock,
    .deinit = uring_deinit,
    .list = uring_list,
};

int sz_storage_uring_init(const char *directory, sz_storage_t **storage_out) {
    SZ_ASSERT(directory != NULL);
    uring_storage_t *self = calloc(1, sizeof(*self));
    if (self == NULL) return -ENOMEM;
    self->base.vtable = &uring_vtable;
    self->lock_fd = -1;
    for (uint32_t index = 0; index < SZ_STORAGE_FILES_MAX; index++) {
        self->files[index] = (uring_file_t){.fd_direct = -1, .fd_read = -1, .used = false};
    }
    int result = 0;
    self->directory_fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (self->directory_fd < 0) {
        result = -errno;
        goto fail;
    }
    result = io_uring_queue_init(URING_ENTRIES, &self->ring, 0);
    if (result < 0) goto fail;
    self->ring_ready = true;
    *storage_out = &self->base;
    return 0;
fail:
    uring_deinit(&self->base);
    return result;
}
