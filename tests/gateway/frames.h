/* frames.h: building request frames for the gateway tests and the fuzz target: a sealed
 * header for an operation and a body of deterministic bytes. Header-only. */
#ifndef SZ_TEST_FRAMES_H
#define SZ_TEST_FRAMES_H

#include <string.h>
#include <xxhash.h>

#include "gateway/protocol.h"

#define TEST_CLUSTER_ID ((sz_u128)0x5A5A0001u << 64 | 42u)

/* Fills a request header for body_size bytes of `body` and seals it. */
static inline void test_request_seal(sz_frame_header_t *header, uint32_t operation,
                                     sz_u128 client_id, uint32_t request_number,
                                     const void *body, uint32_t body_size) {
    memset(header, 0, sizeof(*header));
    header->cluster_id = TEST_CLUSTER_ID;
    header->client_id = client_id;
    header->request_number = request_number;
    header->trace_id = 0x7700u + request_number;
    header->command = SZ_COMMAND_REQUEST;
    header->operation = (uint8_t)operation;
    header->body_size = body_size;
    sz_frame_header_seal(header, body);
}

/* Recomputes the header checksum as docs/PROTOCOL.md defines it (XXH3-128 of bytes
 * 16..127), independently of sz_frame_header_seal(), which refuses oversized bodies. */
static inline void test_header_reseal(sz_frame_header_t *header) {
    XXH128_hash_t hash = XXH3_128bits((const uint8_t *)header + 16, 112);
    header->checksum_header = ((sz_u128)hash.high64 << 64) | hash.low64;
}

/* Writes a whole request frame (header + body of event_count records whose bytes depend
 * on seed) into frame, which must hold SZ_FRAME_SIZE_MAX bytes. Returns its size. */
static inline uint32_t test_frame_build(uint8_t *frame, uint32_t operation,
                                        uint32_t event_count, sz_u128 client_id,
                                        uint32_t request_number, uint32_t seed) {
    uint32_t body_size = event_count * sz_operation_request_record_size(operation);
    uint8_t *body = frame + SZ_FRAME_HEADER_SIZE;
    for (uint32_t index = 0; index < body_size; index++) {
        body[index] = (uint8_t)(index * 31u + seed * 7u + (index >> 8));
    }
    test_request_seal((sz_frame_header_t *)frame, operation, client_id, request_number, body,
                      body_size);
    return SZ_FRAME_HEADER_SIZE + body_size;
}

#endif
