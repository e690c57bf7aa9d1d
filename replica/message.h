/* message.h: what moves through the two rings between the gateway thread and the ledger
 * thread: one checked request frame, and the room for its reply.
 *
 * Contract:
 * - The gateway owns a fixed pool of messages (allocated at start, never grown: the pool
 *   size is the server's backpressure bound). It fills `request` with a frame that passed
 *   sz_frame_header_check() and sz_frame_body_check() with this server's cluster id, and
 *   pushes the pointer into the request ring. From then until the pointer comes back
 *   through the reply ring, only the ledger thread touches the message.
 * - The ledger thread writes a complete, sealed reply frame (header + body) into `reply`,
 *   sets reply_size, and pushes the pointer into the reply ring, in the order the
 *   requests were popped (so replies leave in op order). It never frees a message and
 *   never keeps a pointer to one after pushing it back.
 * - Routing fields belong to the gateway; the ledger thread neither reads nor writes them.
 */
#ifndef SZ_MESSAGE_H
#define SZ_MESSAGE_H

#include <stdalign.h>

#include "gateway/protocol.h"

typedef struct sz_message {
    /* Gateway only: which connection asked, and when (for latency metrics). */
    uint32_t connection_index;
    uint32_t connection_generation;
    uint64_t received_ns;

    /* Ledger thread to gateway: bytes of `reply` to send (header + body). */
    uint32_t reply_size;
    uint32_t reserved;

    /* A checked request frame: header then body. */
    alignas(64) uint8_t request[SZ_FRAME_SIZE_MAX];
    /* The reply frame: header then body. */
    alignas(64) uint8_t reply[SZ_FRAME_SIZE_MAX];
} sz_message_t;

static inline sz_frame_header_t *sz_message_request_header(sz_message_t *message) {
    return (sz_frame_header_t *)message->request;
}

static inline sz_frame_header_t *sz_message_reply_header(sz_message_t *message) {
    return (sz_frame_header_t *)message->reply;
}

#endif
