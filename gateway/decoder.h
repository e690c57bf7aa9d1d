/* decoder.h: the frame decoder: turns a stream of untrusted bytes, arriving in chunks of
 * any size, into checked frames. One per connection (the gateway's for requests, the
 * client library's for replies); it is the part of the server the fuzz target drives.
 *
 * Contract:
 * - Pure: no I/O, no allocation, no clock; one decoder per stream, any thread.
 * - States and who moves them:
 *
 *       HEADER --128 bytes, sz_frame_header_check() fails--> FAILED (for good)
 *       HEADER --128 bytes, check ok--> BODY_WANTED
 *       BODY_WANTED --sz_decoder_attach(buffer)--> BODY, or FRAME if body_size is 0
 *       BODY --body_size bytes (sz_decoder_feed or sz_decoder_body_received)--> FRAME
 *       FRAME --sz_decoder_next()--> HEADER
 *
 *   sz_decoder_feed() copies bytes into the header, then into the attached body buffer,
 *   and stops at the first state change, so a chunk that holds several frames is fed in
 *   a loop. To read a big body without a copy, the caller asks sz_decoder_body_room()
 *   where the rest of the body goes, reads into it, and reports sz_decoder_body_received().
 * - status: in FAILED the header's status (never OK); in FRAME SZ_STATUS_OK or
 *   SZ_STATUS_BODY_CHECKSUM_INVALID (the frame is whole, so framing holds either way).
 *   A FRAME with SZ_STATUS_OK has passed sz_frame_header_check() and
 *   sz_frame_body_check() with the decoder's command and cluster id.
 * - The attached buffer must hold header.body_size bytes; the decoder never writes past
 *   them. Frame bytes never trip an assertion; calling in the wrong state does.
 */
#ifndef SZ_DECODER_H
#define SZ_DECODER_H

#include "protocol.h"

typedef enum sz_decoder_state {
    SZ_DECODER_HEADER = 0,
    SZ_DECODER_BODY_WANTED,
    SZ_DECODER_BODY,
    SZ_DECODER_FRAME,
    SZ_DECODER_FAILED,
} sz_decoder_state_t;

typedef struct sz_decoder {
    sz_frame_header_t header; /* the frame's header (whole once past HEADER) */
    sz_u128 cluster_id;
    uint8_t *body;            /* attached buffer: header.body_size bytes */
    uint32_t header_received; /* bytes of the header so far */
    uint32_t body_received;   /* bytes of the body so far */
    sz_decoder_state_t state;
    sz_status_t status;
    sz_command_t command;     /* the command frames must carry */
    bool check_cluster;
} sz_decoder_t;

void sz_decoder_init(sz_decoder_t *decoder, sz_command_t command, sz_u128 cluster_id,
                     bool check_cluster);

/* Consumes bytes in HEADER and BODY until the frame part is complete; returns how many
 * it took (0 in any other state). */
size_t sz_decoder_feed(sz_decoder_t *decoder, const void *bytes, size_t size);

/* BODY_WANTED: the buffer for header.body_size bytes (may be NULL when that is 0). */
void sz_decoder_attach(sz_decoder_t *decoder, void *body);

/* BODY: where the rest of the body goes and how many bytes that is; 0 in other states. */
size_t sz_decoder_body_room(const sz_decoder_t *decoder, void **target_out);

/* BODY: size bytes were written at the room's start (at most the room). */
void sz_decoder_body_received(sz_decoder_t *decoder, size_t size);

/* FRAME: the caller is done with the frame; decode the next one. */
void sz_decoder_next(sz_decoder_t *decoder);

/* Whether a header that failed with this status was authentic (its checksum held), so
 * that its client id and request number may be echoed in the error reply. */
bool sz_decoder_status_authentic(sz_status_t status);

#endif
