/* protocol.c: sealing and checking wire frames. Every byte here may come from an
 * attacker, so every check is a comparison that ends in a status, never an assertion. */
#include "protocol.h"

#include <string.h>
#include <xxhash.h>

static_assert(SZ_STATUS_COUNT == SZ_STATUS_SUBSCRIPTION_INVALID + 1, "status count");

#define STATUS_NAME(upper, lower, value) [value] = #lower,
static const char *const status_names[] = {SZ_STATUS_LIST(STATUS_NAME)};
#undef STATUS_NAME

const char *sz_status_name(uint32_t status) {
    if (status >= SZ_STATUS_COUNT) return NULL;
    return status_names[status];
}

static sz_u128 checksum(const void *data, size_t size) {
    XXH128_hash_t hash = XXH3_128bits(data, size);
    return ((sz_u128)hash.high64 << 64) | hash.low64;
}

/* The header checksum covers everything after its own 16 bytes. */
static sz_u128 header_checksum(const sz_frame_header_t *header) {
    return checksum((const uint8_t *)header + sizeof(sz_u128),
                    sizeof(*header) - sizeof(sz_u128));
}

uint32_t sz_operation_request_record_size(uint32_t operation) {
    switch (operation) {
    case SZ_OPERATION_CREATE_ACCOUNTS: return sizeof(sz_account_t);
    case SZ_OPERATION_CREATE_TRANSFERS: return sizeof(sz_transfer_t);
    case SZ_OPERATION_LOOKUP_ACCOUNTS:
    case SZ_OPERATION_LOOKUP_TRANSFERS: return sizeof(sz_u128);
    case SZ_OPERATION_GET_ACCOUNT_TRANSFERS:
    case SZ_OPERATION_GET_ACCOUNT_BALANCES: return sizeof(sz_account_filter_t);
    case SZ_OPERATION_SUBSCRIBE: return sizeof(sz_subscribe_request_t);
    default: return 0;
    }
}

uint32_t sz_operation_reply_record_size(uint32_t operation) {
    switch (operation) {
    case SZ_OPERATION_CREATE_ACCOUNTS:
    case SZ_OPERATION_CREATE_TRANSFERS: return sizeof(sz_create_result_t);
    case SZ_OPERATION_LOOKUP_ACCOUNTS: return sizeof(sz_account_t);
    case SZ_OPERATION_LOOKUP_TRANSFERS:
    case SZ_OPERATION_GET_ACCOUNT_TRANSFERS: return sizeof(sz_transfer_t);
    case SZ_OPERATION_GET_ACCOUNT_BALANCES: return sizeof(sz_account_balance_t);
    default: return 0;
    }
}

bool sz_operation_is_write(uint32_t operation) {
    return operation == SZ_OPERATION_CREATE_ACCOUNTS ||
           operation == SZ_OPERATION_CREATE_TRANSFERS;
}

void sz_frame_header_seal(sz_frame_header_t *header, const void *body) {
    SZ_ASSERT(header->body_size <= SZ_FRAME_BODY_SIZE_MAX);
    SZ_ASSERT(body != NULL || header->body_size == 0);
    header->magic = SZ_FRAME_MAGIC;
    header->version = SZ_PROTOCOL_VERSION;
    header->checksum_body = checksum(header->body_size == 0 ? "" : body, header->body_size);
    header->checksum_header = header_checksum(header);
}

static bool all_zero(const uint8_t *bytes, size_t size) {
    for (size_t index = 0; index < size; index++) {
        if (bytes[index] != 0) return false;
    }
    return true;
}

/* The checks only a request needs: who sent it and whether its body has a shape. */
static sz_status_t request_check(const sz_frame_header_t *header) {
    if (header->client_id == 0) return SZ_STATUS_CLIENT_ID_INVALID;
    uint32_t record_size = sz_operation_request_record_size(header->operation);
    if (record_size == 0) return SZ_STATUS_OPERATION_INVALID;
    if (header->status != 0 || header->op != 0 || header->timestamp != 0) {
        return SZ_STATUS_RESERVED_NOT_ZERO;
    }
    if (header->body_size % record_size != 0) return SZ_STATUS_BODY_SIZE_INVALID;
    if (header->body_size / record_size > SZ_BATCH_EVENTS_MAX) return SZ_STATUS_BODY_TOO_LARGE;
    /* Filters and subscribe requests come one at a time. */
    static_assert(sizeof(sz_subscribe_request_t) == sizeof(sz_account_filter_t), "one check");
    if (record_size == sizeof(sz_account_filter_t) && header->body_size != record_size) {
        return SZ_STATUS_BODY_SIZE_INVALID;
    }
    return SZ_STATUS_OK;
}

sz_status_t sz_frame_header_check(const sz_frame_header_t *header, sz_command_t command,
                                  sz_u128 cluster_id, bool check_cluster) {
    if (header->magic != SZ_FRAME_MAGIC) return SZ_STATUS_MAGIC_INVALID;
    if (header->version != SZ_PROTOCOL_VERSION) return SZ_STATUS_VERSION_UNSUPPORTED;
    if (header->checksum_header != header_checksum(header)) {
        return SZ_STATUS_HEADER_CHECKSUM_INVALID;
    }
    if (header->command != command) return SZ_STATUS_COMMAND_INVALID;
    if (header->reserved_a != 0 || !all_zero(header->reserved, sizeof(header->reserved))) {
        return SZ_STATUS_RESERVED_NOT_ZERO;
    }
    if (header->body_size > SZ_FRAME_BODY_SIZE_MAX) return SZ_STATUS_BODY_TOO_LARGE;
    if (check_cluster && header->cluster_id != cluster_id) return SZ_STATUS_CLUSTER_INVALID;
    if (command == SZ_COMMAND_REQUEST) return request_check(header);
    return SZ_STATUS_OK;
}

sz_status_t sz_frame_body_check(const sz_frame_header_t *header, const void *body) {
    SZ_ASSERT(header->body_size <= SZ_FRAME_BODY_SIZE_MAX);
    SZ_ASSERT(body != NULL || header->body_size == 0);
    sz_u128 actual = checksum(header->body_size == 0 ? "" : body, header->body_size);
    if (actual != header->checksum_body) return SZ_STATUS_BODY_CHECKSUM_INVALID;
    return SZ_STATUS_OK;
}

uint32_t sz_frame_event_count(const sz_frame_header_t *header) {
    uint32_t record_size = sz_operation_request_record_size(header->operation);
    SZ_ASSERT(record_size != 0);
    SZ_ASSERT(header->body_size % record_size == 0);
    return header->body_size / record_size;
}
