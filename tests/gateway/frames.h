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

/* create_accounts of count valid accounts, ids first_id, first_id + 1, ... */
static inline uint32_t test_accounts_frame(uint8_t *frame, uint64_t first_id, uint32_t count,
                                           sz_u128 client_id, uint32_t request_number) {
    sz_account_t *accounts = (sz_account_t *)(frame + SZ_FRAME_HEADER_SIZE);
    for (uint32_t index = 0; index < count; index++) {
        memset(&accounts[index], 0, sizeof(accounts[index]));
        accounts[index].id = first_id + index;
        accounts[index].ledger = 1;
        accounts[index].code = 1;
    }
    uint32_t body_size = count * (uint32_t)sizeof(sz_account_t);
    test_request_seal((sz_frame_header_t *)frame, SZ_OPERATION_CREATE_ACCOUNTS, client_id,
                      request_number, accounts, body_size);
    return SZ_FRAME_HEADER_SIZE + body_size;
}

/* lookup_accounts of ids first_id .. first_id + count - 1. */
static inline uint32_t test_lookup_frame(uint8_t *frame, uint64_t first_id, uint32_t count,
                                         sz_u128 client_id, uint32_t request_number) {
    uint8_t *ids = frame + SZ_FRAME_HEADER_SIZE;
    for (uint32_t index = 0; index < count; index++) {
        sz_u128 id = first_id + index;
        memcpy(ids + (size_t)index * sizeof(id), &id, sizeof(id));
    }
    uint32_t body_size = count * (uint32_t)sizeof(sz_u128);
    test_request_seal((sz_frame_header_t *)frame, SZ_OPERATION_LOOKUP_ACCOUNTS, client_id,
                      request_number, ids, body_size);
    return SZ_FRAME_HEADER_SIZE + body_size;
}

/* create_transfers of count valid transfers of 1 unit, ids first_id.., between accounts
 * 1 .. account_count (which must exist for them to succeed). */
static inline uint32_t test_transfers_frame(uint8_t *frame, uint64_t first_id, uint32_t count,
                                            uint32_t account_count, sz_u128 client_id,
                                            uint32_t request_number) {
    sz_transfer_t *transfers = (sz_transfer_t *)(frame + SZ_FRAME_HEADER_SIZE);
    for (uint32_t index = 0; index < count; index++) {
        memset(&transfers[index], 0, sizeof(transfers[index]));
        transfers[index].id = first_id + index;
        transfers[index].debit_account_id = 1 + (first_id + index) % account_count;
        transfers[index].credit_account_id = 1 + (first_id + index + 1) % account_count;
        transfers[index].amount = 1;
        transfers[index].ledger = 1;
        transfers[index].code = 1;
    }
    uint32_t body_size = count * (uint32_t)sizeof(sz_transfer_t);
    test_request_seal((sz_frame_header_t *)frame, SZ_OPERATION_CREATE_TRANSFERS, client_id,
                      request_number, transfers, body_size);
    return SZ_FRAME_HEADER_SIZE + body_size;
}

#endif
