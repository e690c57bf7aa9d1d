/* client.h: a minimal blocking test client for the gateway tests: connect, send bytes,
 * read one reply frame (checked), expect the server to close. Every blocking call has a
 * receive/send timeout, so a broken server fails a test instead of hanging it.
 * Header-only. */
#ifndef SZ_TEST_CLIENT_H
#define SZ_TEST_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frames.h"
#include "gateway/decoder.h"

#define TEST_IO_TIMEOUT_S 10

static inline uint64_t test_clock_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

/* Connects to 127.0.0.1:port; receive_buffer_size > 0 shrinks the socket's receive
 * buffer (before connecting, so the window is small from the start). */
static inline int test_connect(uint16_t port, int receive_buffer_size) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (receive_buffer_size > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer_size, sizeof(receive_buffer_size));
    }
    struct timeval timeout = {.tv_sec = TEST_IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
        int error = -errno;
        close(fd);
        return error;
    }
    return fd;
}

static inline int test_send(int fd, const void *bytes, size_t size) {
    const uint8_t *at = bytes;
    while (size > 0) {
        ssize_t sent = send(fd, at, size, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) continue;
        if (sent <= 0) return -errno;
        at += sent;
        size -= (size_t)sent;
    }
    return 0;
}

/* Reads exactly size bytes: 0, -EPIPE at end of stream, or -errno (-EAGAIN: timeout). */
static inline int test_receive(int fd, void *bytes, size_t size) {
    uint8_t *at = bytes;
    while (size > 0) {
        ssize_t received = recv(fd, at, size, 0);
        if (received < 0 && errno == EINTR) continue;
        if (received == 0) return -EPIPE;
        if (received < 0) return -errno;
        at += received;
        size -= (size_t)received;
    }
    return 0;
}

/* Reads one reply frame and checks it as a client would (reply command, our cluster,
 * body checksum). body may be NULL to discard a body. Returns 0, -EPIPE at end of
 * stream, -EBADMSG for a frame that fails its checks. */
static inline int test_reply_read(int fd, sz_frame_header_t *header, uint8_t *body) {
    int result = test_receive(fd, header, sizeof(*header));
    if (result != 0) return result;
    if (sz_frame_header_check(header, SZ_COMMAND_REPLY, TEST_CLUSTER_ID, true) != SZ_STATUS_OK) {
        return -EBADMSG;
    }
    static uint8_t discard[SZ_FRAME_BODY_SIZE_MAX];
    uint8_t *target = body != NULL ? body : discard;
    result = test_receive(fd, target, header->body_size);
    if (result != 0) return result;
    if (sz_frame_body_check(header, target) != SZ_STATUS_OK) return -EBADMSG;
    return 0;
}

/* True when the server closed the connection (end of stream or reset) within the
 * receive timeout, with no further byte. */
static inline bool test_closed_by_server(int fd) {
    uint8_t byte;
    ssize_t received = recv(fd, &byte, 1, 0);
    if (received == 0 || (received < 0 && errno == ECONNRESET)) return true;
    fprintf(stderr, "test_closed_by_server: recv gave %zd (%s)\n", received,
            received < 0 ? strerror(errno) : "a byte");
    return false;
}

#endif
