/* test_protocol.c: proves the wire protocol's pure parts: record sizes per operation, seal
 * and check round trips, every status sz_frame_header_check() and sz_frame_body_check()
 * can give (and the order in which they are found), and the frame decoder: a stream of
 * frames of every operation and size decodes to exactly the frames sent whatever the
 * chunk sizes (every size from 1 to 600 bytes, and through the zero-copy body path), a bad
 * body checksum costs one frame and framing holds, a bad header stops the stream. */
#include <criterion/criterion.h>
#include <stdalign.h>
#include <stdlib.h>

#include "frames.h"
#include "gateway/decoder.h"

static alignas(64) uint8_t frame_buffer[SZ_FRAME_SIZE_MAX];

/* A valid create_transfers request of two events in frame_buffer. */
static sz_frame_header_t *valid_request(void) {
    test_frame_build(frame_buffer, SZ_OPERATION_CREATE_TRANSFERS, 2, 9, 1, 3);
    return (sz_frame_header_t *)frame_buffer;
}

static sz_status_t check(const sz_frame_header_t *header) {
    return sz_frame_header_check(header, SZ_COMMAND_REQUEST, TEST_CLUSTER_ID, true);
}

Test(protocol, record_sizes_follow_each_operation) {
    cr_assert_eq(sz_operation_request_record_size(SZ_OPERATION_CREATE_ACCOUNTS), 128);
    cr_assert_eq(sz_operation_request_record_size(SZ_OPERATION_CREATE_TRANSFERS), 128);
    cr_assert_eq(sz_operation_request_record_size(SZ_OPERATION_LOOKUP_ACCOUNTS), 16);
    cr_assert_eq(sz_operation_request_record_size(SZ_OPERATION_LOOKUP_TRANSFERS), 16);
    cr_assert_eq(sz_operation_request_record_size(SZ_OPERATION_GET_ACCOUNT_TRANSFERS), 64);
    cr_assert_eq(sz_operation_request_record_size(SZ_OPERATION_GET_ACCOUNT_BALANCES), 64);
    cr_assert_eq(sz_operation_reply_record_size(SZ_OPERATION_CREATE_ACCOUNTS), 8);
    cr_assert_eq(sz_operation_reply_record_size(SZ_OPERATION_CREATE_TRANSFERS), 8);
    cr_assert_eq(sz_operation_reply_record_size(SZ_OPERATION_LOOKUP_ACCOUNTS), 128);
    cr_assert_eq(sz_operation_reply_record_size(SZ_OPERATION_LOOKUP_TRANSFERS), 128);
    cr_assert_eq(sz_operation_reply_record_size(SZ_OPERATION_GET_ACCOUNT_TRANSFERS), 128);
    cr_assert_eq(sz_operation_reply_record_size(SZ_OPERATION_GET_ACCOUNT_BALANCES), 128);
    uint32_t not_client[] = {0, 7, 63, SZ_OPERATION_EXPIRE_PENDING, 255};
    for (size_t index = 0; index < sizeof(not_client) / sizeof(not_client[0]); index++) {
        cr_assert_eq(sz_operation_request_record_size(not_client[index]), 0);
        cr_assert_eq(sz_operation_reply_record_size(not_client[index]), 0);
    }
    cr_assert(sz_operation_is_write(SZ_OPERATION_CREATE_ACCOUNTS));
    cr_assert(sz_operation_is_write(SZ_OPERATION_CREATE_TRANSFERS));
    cr_assert(!sz_operation_is_write(SZ_OPERATION_LOOKUP_ACCOUNTS));
    cr_assert(!sz_operation_is_write(SZ_OPERATION_GET_ACCOUNT_BALANCES));
    cr_assert_eq(SZ_FRAME_BODY_SIZE_MAX, 8190u * 128u);
    cr_assert_eq(SZ_FRAME_SIZE_MAX, 128u + 8190u * 128u);
}

Test(protocol, every_status_has_a_name_and_numbers_past_the_last_have_none) {
    for (uint32_t status = 0; status < SZ_STATUS_COUNT; status++) {
        cr_assert_not_null(sz_status_name(status), "status %u", status);
    }
    cr_assert_str_eq(sz_status_name(SZ_STATUS_OK), "ok");
    cr_assert_str_eq(sz_status_name(SZ_STATUS_RATE_LIMITED), "rate_limited");
    cr_assert_str_eq(sz_status_name(SZ_STATUS_UNAVAILABLE), "unavailable");
    cr_assert_str_eq(sz_status_name(SZ_STATUS_SUBSCRIBERS_FULL), "subscribers_full");
    cr_assert_str_eq(sz_status_name(SZ_STATUS_OP_RETIRED), "op_retired");
    cr_assert_str_eq(sz_status_name(SZ_STATUS_OP_AHEAD), "op_ahead");
    cr_assert_str_eq(sz_status_name(SZ_STATUS_SUBSCRIPTION_INVALID), "subscription_invalid");
    cr_assert_eq(SZ_STATUS_SUBSCRIPTION_INVALID, 26, "status numbers are stable");
    cr_assert_null(sz_status_name(SZ_STATUS_COUNT));
    cr_assert_null(sz_status_name(UINT32_MAX));
}

Test(protocol, a_subscribe_request_is_exactly_one_64_byte_record) {
    cr_assert_eq(sz_operation_request_record_size(SZ_OPERATION_SUBSCRIBE), 64);
    cr_assert_eq(sz_operation_reply_record_size(SZ_OPERATION_SUBSCRIBE), 0);
    cr_assert(!sz_operation_is_write(SZ_OPERATION_SUBSCRIBE));
    static uint8_t frame[128 + 128];
    memset(frame, 0, sizeof(frame));
    sz_subscribe_request_t body = {.op_from = 7};
    memcpy(frame + 128, &body, sizeof(body));
    for (uint32_t body_size = 0; body_size <= 128; body_size += 32) {
        sz_frame_header_t header = {.cluster_id = TEST_CLUSTER_ID, .client_id = 9,
                                    .request_number = 1, .body_size = body_size,
                                    .command = SZ_COMMAND_REQUEST,
                                    .operation = SZ_OPERATION_SUBSCRIBE};
        sz_frame_header_seal(&header, frame + 128);
        sz_status_t expected = body_size == 64 ? SZ_STATUS_OK : SZ_STATUS_BODY_SIZE_INVALID;
        cr_assert_eq(check(&header), expected, "body of %u bytes", body_size);
        if (body_size == 64) cr_assert_eq(sz_frame_body_check(&header, frame + 128), SZ_STATUS_OK);
    }
}

Test(protocol, a_sealed_request_passes_both_checks_for_every_operation) {
    for (uint32_t operation = 1; operation <= 6; operation++) {
        uint32_t events = operation >= SZ_OPERATION_GET_ACCOUNT_TRANSFERS ? 1 : 5;
        test_frame_build(frame_buffer, operation, events, 77, operation, operation);
        sz_frame_header_t *header = (sz_frame_header_t *)frame_buffer;
        cr_assert_eq(check(header), SZ_STATUS_OK, "operation %u", operation);
        cr_assert_eq(sz_frame_body_check(header, frame_buffer + 128), SZ_STATUS_OK);
        cr_assert_eq(sz_frame_event_count(header), events);
        /* The checksum is exactly the documented one. */
        sz_frame_header_t copy = *header;
        test_header_reseal(&copy);
        cr_assert(copy.checksum_header == header->checksum_header);
    }
}

Test(protocol, a_sealed_reply_passes_the_reply_check_but_not_the_request_one) {
    sz_frame_header_t reply;
    memset(&reply, 0, sizeof(reply));
    reply.command = SZ_COMMAND_REPLY;
    reply.cluster_id = TEST_CLUSTER_ID;
    reply.status = SZ_STATUS_RATE_LIMITED;
    reply.op = 12;
    reply.timestamp = 99;
    sz_frame_header_seal(&reply, NULL);
    cr_assert_eq(sz_frame_header_check(&reply, SZ_COMMAND_REPLY, TEST_CLUSTER_ID, true),
                 SZ_STATUS_OK);
    cr_assert_eq(sz_frame_body_check(&reply, NULL), SZ_STATUS_OK);
    cr_assert_eq(check(&reply), SZ_STATUS_COMMAND_INVALID);
}

Test(protocol, magic_version_and_header_checksum_are_checked_first_in_that_order) {
    sz_frame_header_t *header = valid_request();
    header->magic ^= 1;
    header->version = 9;
    header->checksum_header ^= 1;
    cr_assert_eq(check(header), SZ_STATUS_MAGIC_INVALID);
    header->magic ^= 1;
    cr_assert_eq(check(header), SZ_STATUS_VERSION_UNSUPPORTED);
    header->version = SZ_PROTOCOL_VERSION;
    cr_assert_eq(check(header), SZ_STATUS_HEADER_CHECKSUM_INVALID);
    header->checksum_header ^= 1;
    cr_assert_eq(check(header), SZ_STATUS_OK);
    /* Any flipped bit after the checksum itself breaks the checksum. */
    for (uint32_t byte = 16; byte < 128; byte++) {
        if (byte >= 96 && byte < 101) continue; /* magic and version are checked before */
        header = valid_request();
        frame_buffer[byte] ^= 0x10;
        cr_assert_eq(check(header), SZ_STATUS_HEADER_CHECKSUM_INVALID, "byte %u", byte);
    }
}

/* Each case changes one thing in a valid request and reseals it. */
typedef struct header_case {
    const char *name;
    void (*change)(sz_frame_header_t *header);
    sz_status_t status;
} header_case_t;

static void change_command(sz_frame_header_t *header) { header->command = SZ_COMMAND_REPLY; }
static void change_command_unknown(sz_frame_header_t *header) { header->command = 7; }
static void change_reserved_a(sz_frame_header_t *header) { header->reserved_a = 1; }
static void change_reserved(sz_frame_header_t *header) { header->reserved[21] = 1; }
static void change_cluster(sz_frame_header_t *header) { header->cluster_id += 1; }
static void change_client(sz_frame_header_t *header) { header->client_id = 0; }
static void change_operation_zero(sz_frame_header_t *header) { header->operation = 0; }
static void change_operation_expire(sz_frame_header_t *header) {
    header->operation = SZ_OPERATION_EXPIRE_PENDING;
}
static void change_operation_seven(sz_frame_header_t *header) { header->operation = 7; }
static void change_status(sz_frame_header_t *header) { header->status = 1; }
static void change_op(sz_frame_header_t *header) { header->op = 1; }
static void change_timestamp(sz_frame_header_t *header) { header->timestamp = 1; }
static void change_body_huge(sz_frame_header_t *header) {
    header->body_size = SZ_FRAME_BODY_SIZE_MAX + 128;
}
static void change_body_huge_bad_operation(sz_frame_header_t *header) {
    header->body_size = UINT32_MAX;
    header->operation = 0;
}
static void change_body_not_records(sz_frame_header_t *header) { header->body_size = 200; }
static void change_ids_too_many(sz_frame_header_t *header) {
    header->operation = SZ_OPERATION_LOOKUP_ACCOUNTS;
    header->body_size = (SZ_BATCH_EVENTS_MAX + 1) * 16;
}
static void change_ids_most(sz_frame_header_t *header) {
    header->operation = SZ_OPERATION_LOOKUP_ACCOUNTS;
    header->body_size = SZ_BATCH_EVENTS_MAX * 16;
}
static void change_filters_two(sz_frame_header_t *header) {
    header->operation = SZ_OPERATION_GET_ACCOUNT_TRANSFERS;
    header->body_size = 128;
}
static void change_filters_none(sz_frame_header_t *header) {
    header->operation = SZ_OPERATION_GET_ACCOUNT_BALANCES;
    header->body_size = 0;
}
static void change_transfers_most(sz_frame_header_t *header) {
    header->body_size = SZ_FRAME_BODY_SIZE_MAX;
}
static void change_accounts_none(sz_frame_header_t *header) {
    header->operation = SZ_OPERATION_CREATE_ACCOUNTS;
    header->body_size = 0;
}

static const header_case_t header_cases[] = {
    {"command reply", change_command, SZ_STATUS_COMMAND_INVALID},
    {"command unknown", change_command_unknown, SZ_STATUS_COMMAND_INVALID},
    {"reserved_a", change_reserved_a, SZ_STATUS_RESERVED_NOT_ZERO},
    {"reserved", change_reserved, SZ_STATUS_RESERVED_NOT_ZERO},
    {"cluster", change_cluster, SZ_STATUS_CLUSTER_INVALID},
    {"client 0", change_client, SZ_STATUS_CLIENT_ID_INVALID},
    {"operation 0", change_operation_zero, SZ_STATUS_OPERATION_INVALID},
    {"operation expire", change_operation_expire, SZ_STATUS_OPERATION_INVALID},
    {"operation 7", change_operation_seven, SZ_STATUS_OPERATION_INVALID},
    {"status", change_status, SZ_STATUS_RESERVED_NOT_ZERO},
    {"op", change_op, SZ_STATUS_RESERVED_NOT_ZERO},
    {"timestamp", change_timestamp, SZ_STATUS_RESERVED_NOT_ZERO},
    {"body huge", change_body_huge, SZ_STATUS_BODY_TOO_LARGE},
    {"body huge before operation", change_body_huge_bad_operation, SZ_STATUS_BODY_TOO_LARGE},
    {"body not records", change_body_not_records, SZ_STATUS_BODY_SIZE_INVALID},
    {"8191 ids", change_ids_too_many, SZ_STATUS_BODY_TOO_LARGE},
    {"8190 ids", change_ids_most, SZ_STATUS_OK},
    {"two filters", change_filters_two, SZ_STATUS_BODY_SIZE_INVALID},
    {"no filter", change_filters_none, SZ_STATUS_BODY_SIZE_INVALID},
    {"8190 transfers", change_transfers_most, SZ_STATUS_OK},
    {"no accounts", change_accounts_none, SZ_STATUS_OK},
};

Test(protocol, every_header_status_is_produced_by_the_one_thing_wrong) {
    for (size_t index = 0; index < sizeof(header_cases) / sizeof(header_cases[0]); index++) {
        sz_frame_header_t *header = valid_request();
        header_cases[index].change(header);
        test_header_reseal(header);
        cr_assert_eq(check(header), header_cases[index].status, "%s: got %s",
                     header_cases[index].name, sz_status_name(check(header)));
    }
}

Test(protocol, the_cluster_is_compared_only_when_asked) {
    sz_frame_header_t *header = valid_request();
    cr_assert_eq(sz_frame_header_check(header, SZ_COMMAND_REQUEST, TEST_CLUSTER_ID + 1, true),
                 SZ_STATUS_CLUSTER_INVALID);
    cr_assert_eq(sz_frame_header_check(header, SZ_COMMAND_REQUEST, TEST_CLUSTER_ID + 1, false),
                 SZ_STATUS_OK);
}

Test(protocol, the_body_checksum_catches_any_changed_byte_and_covers_an_empty_body) {
    sz_frame_header_t *header = valid_request();
    uint8_t *body = frame_buffer + SZ_FRAME_HEADER_SIZE;
    cr_assert_eq(sz_frame_body_check(header, body), SZ_STATUS_OK);
    for (uint32_t byte = 0; byte < header->body_size; byte += 17) {
        body[byte] ^= 0x01;
        cr_assert_eq(sz_frame_body_check(header, body), SZ_STATUS_BODY_CHECKSUM_INVALID);
        body[byte] ^= 0x01;
    }
    sz_frame_header_t empty;
    test_request_seal(&empty, SZ_OPERATION_LOOKUP_ACCOUNTS, 5, 1, NULL, 0);
    cr_assert_eq(check(&empty), SZ_STATUS_OK);
    cr_assert_eq(sz_frame_body_check(&empty, NULL), SZ_STATUS_OK);
    empty.checksum_body ^= 1;
    cr_assert_eq(sz_frame_body_check(&empty, NULL), SZ_STATUS_BODY_CHECKSUM_INVALID);
}

/* ---- the decoder ------------------------------------------------------------------ */

#define STREAM_FRAMES 12
static alignas(64) uint8_t stream[STREAM_FRAMES * 2048 + SZ_FRAME_SIZE_MAX];
static uint32_t frame_offsets[STREAM_FRAMES + 1];

/* A stream of frames of every operation, empty bodies, and one big body. */
static uint32_t stream_build(void) {
    static const uint32_t operations[STREAM_FRAMES] = {1, 2, 3, 4, 5, 6, 2, 3, 1, 2, 4, 2};
    static const uint32_t events[STREAM_FRAMES] = {1, 3, 0, 7, 1, 1, 0, 100, 2, 8190, 1, 5};
    uint32_t size = 0;
    for (uint32_t index = 0; index < STREAM_FRAMES; index++) {
        frame_offsets[index] = size;
        size += test_frame_build(stream + size, operations[index], events[index], 1000 + index,
                                 index + 1, index);
    }
    frame_offsets[STREAM_FRAMES] = size;
    return size;
}

typedef struct decoded {
    uint32_t frame_count;
    uint32_t statuses[STREAM_FRAMES + 1];
    uint8_t *body; /* SZ_FRAME_BODY_SIZE_MAX */
} decoded_t;

/* Takes a whole frame from the decoder: checks it against the stream's own bytes. */
static void decoded_take(decoded_t *decoded, sz_decoder_t *decoder) {
    cr_assert_lt(decoded->frame_count, STREAM_FRAMES);
    uint32_t offset = frame_offsets[decoded->frame_count];
    cr_assert_eq(memcmp(&decoder->header, stream + offset, 128), 0);
    cr_assert_eq(memcmp(decoded->body, stream + offset + 128, decoder->header.body_size), 0);
    decoded->statuses[decoded->frame_count++] = decoder->status;
    sz_decoder_next(decoder);
}

/* Feeds the stream in chunks of chunk_size; with direct, bodies go through the
 * zero-copy path (memcpy standing in for read()). */
static void decode_stream(uint32_t size, uint32_t chunk_size, bool direct, decoded_t *decoded) {
    sz_decoder_t decoder;
    sz_decoder_init(&decoder, SZ_COMMAND_REQUEST, TEST_CLUSTER_ID, true);
    decoded->frame_count = 0;
    uint32_t position = 0;
    while (position < size || decoder.state == SZ_DECODER_BODY_WANTED ||
           decoder.state == SZ_DECODER_FRAME) {
        if (decoder.state == SZ_DECODER_BODY_WANTED) {
            sz_decoder_attach(&decoder, decoded->body);
            continue;
        }
        if (decoder.state == SZ_DECODER_FRAME) {
            decoded_take(decoded, &decoder);
            continue;
        }
        cr_assert_neq(decoder.state, SZ_DECODER_FAILED);
        uint32_t chunk = size - position < chunk_size ? size - position : chunk_size;
        void *target = NULL;
        size_t room = sz_decoder_body_room(&decoder, &target);
        if (direct && room > 0) {
            size_t part = chunk < room ? chunk : room;
            memcpy(target, stream + position, part);
            sz_decoder_body_received(&decoder, part);
            position += (uint32_t)part;
            continue;
        }
        /* A chunk may hold the end of one frame and the start of the next. */
        uint32_t used = 0;
        while (used < chunk) {
            size_t taken = sz_decoder_feed(&decoder, stream + position + used, chunk - used);
            if (taken == 0) break;
            used += (uint32_t)taken;
        }
        position += used;
    }
    cr_assert_eq(decoder.state, SZ_DECODER_HEADER);
    cr_assert_eq(decoder.header_received, 0);
}

Test(decoder, frames_decode_whole_in_chunks_of_every_size) {
    uint32_t size = stream_build();
    decoded_t decoded = {.body = malloc(SZ_FRAME_BODY_SIZE_MAX)};
    cr_assert_not_null(decoded.body);
    uint32_t sizes[] = {1000, 4096, 65536, 1 << 20, size};
    for (uint32_t chunk = 1; chunk <= 600 + 5; chunk++) {
        uint32_t chunk_size = chunk <= 600 ? chunk : sizes[chunk - 601];
        for (int direct = 0; direct < 2; direct++) {
            decode_stream(size, chunk_size, direct, &decoded);
            cr_assert_eq(decoded.frame_count, STREAM_FRAMES, "chunk %u", chunk_size);
            for (uint32_t index = 0; index < STREAM_FRAMES; index++) {
                cr_assert_eq(decoded.statuses[index], SZ_STATUS_OK);
            }
        }
    }
    free(decoded.body);
}

Test(decoder, a_bad_body_checksum_costs_one_frame_and_framing_holds) {
    uint32_t size = stream_build();
    stream[frame_offsets[1] + 128 + 5] ^= 0xFF; /* frame 1's body */
    decoded_t decoded = {.body = malloc(SZ_FRAME_BODY_SIZE_MAX)};
    for (uint32_t chunk = 1; chunk < 300; chunk += 7) {
        decoded.frame_count = 0;
        sz_decoder_t decoder;
        sz_decoder_init(&decoder, SZ_COMMAND_REQUEST, TEST_CLUSTER_ID, true);
        uint32_t position = 0;
        while (position < size || decoder.state != SZ_DECODER_HEADER) {
            if (decoder.state == SZ_DECODER_BODY_WANTED) {
                sz_decoder_attach(&decoder, decoded.body);
            } else if (decoder.state == SZ_DECODER_FRAME) {
                decoded.statuses[decoded.frame_count++] = decoder.status;
                sz_decoder_next(&decoder);
            } else {
                uint32_t part = size - position < chunk ? size - position : chunk;
                position += (uint32_t)sz_decoder_feed(&decoder, stream + position, part);
            }
        }
        cr_assert_eq(decoded.frame_count, STREAM_FRAMES);
        for (uint32_t index = 0; index < STREAM_FRAMES; index++) {
            cr_assert_eq(decoded.statuses[index],
                         index == 1 ? SZ_STATUS_BODY_CHECKSUM_INVALID : SZ_STATUS_OK);
        }
    }
    free(decoded.body);
}

Test(decoder, a_bad_header_fails_for_good_and_takes_no_byte_past_it) {
    uint32_t size = stream_build();
    stream[frame_offsets[2] + 60] ^= 0x01; /* frame 2's client id: checksum breaks */
    uint8_t *body = malloc(SZ_FRAME_BODY_SIZE_MAX);
    sz_decoder_t decoder;
    sz_decoder_init(&decoder, SZ_COMMAND_REQUEST, TEST_CLUSTER_ID, true);
    uint32_t position = 0, frames = 0;
    while (decoder.state != SZ_DECODER_FAILED) {
        cr_assert_lt(position, size);
        if (decoder.state == SZ_DECODER_BODY_WANTED) {
            sz_decoder_attach(&decoder, body);
        } else if (decoder.state == SZ_DECODER_FRAME) {
            frames++;
            sz_decoder_next(&decoder);
        } else {
            position += (uint32_t)sz_decoder_feed(&decoder, stream + position, 1000);
        }
    }
    cr_assert_eq(frames, 2);
    cr_assert_eq(position, frame_offsets[2] + 128);
    cr_assert_eq(decoder.status, SZ_STATUS_HEADER_CHECKSUM_INVALID);
    cr_assert(!sz_decoder_status_authentic(decoder.status));
    cr_assert_eq(sz_decoder_feed(&decoder, stream + position, 100), 0);
    free(body);
}

Test(decoder, header_statuses_after_the_checksum_are_authentic) {
    cr_assert(!sz_decoder_status_authentic(SZ_STATUS_MAGIC_INVALID));
    cr_assert(!sz_decoder_status_authentic(SZ_STATUS_VERSION_UNSUPPORTED));
    cr_assert(!sz_decoder_status_authentic(SZ_STATUS_HEADER_CHECKSUM_INVALID));
    cr_assert(sz_decoder_status_authentic(SZ_STATUS_CLUSTER_INVALID));
    cr_assert(sz_decoder_status_authentic(SZ_STATUS_OPERATION_INVALID));
    cr_assert(sz_decoder_status_authentic(SZ_STATUS_BODY_TOO_LARGE));
}

Test(decoder, an_empty_body_completes_the_frame_at_attach) {
    sz_frame_header_t header;
    test_request_seal(&header, SZ_OPERATION_LOOKUP_TRANSFERS, 3, 4, NULL, 0);
    sz_decoder_t decoder;
    sz_decoder_init(&decoder, SZ_COMMAND_REQUEST, TEST_CLUSTER_ID, true);
    cr_assert_eq(sz_decoder_feed(&decoder, &header, 128), 128);
    cr_assert_eq(decoder.state, SZ_DECODER_BODY_WANTED);
    cr_assert_eq(sz_decoder_feed(&decoder, &header, 128), 0, "no byte taken while waiting");
    sz_decoder_attach(&decoder, NULL);
    cr_assert_eq(decoder.state, SZ_DECODER_FRAME);
    cr_assert_eq(decoder.status, SZ_STATUS_OK);
    void *target = &header;
    cr_assert_eq(sz_decoder_body_room(&decoder, &target), 0);
    cr_assert_null(target);
}
