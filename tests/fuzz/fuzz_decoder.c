/* fuzz_decoder.c: libFuzzer target for the frame decoder (gateway/decoder.h), the part of
 * the gateway that reads untrusted bytes. Built with clang -fsanitize=fuzzer,address,
 * undefined by tests/fuzz/run.sh.
 *
 * Each input becomes a byte stream, either raw (the input itself) or synthesized (frames
 * built and sealed from recipes in the input, then damaged: a flipped bit, a field
 * changed and resealed, a cut), so that the fuzzer reaches accepted frames despite the
 * checksums. The first byte also picks what the decoder expects: requests with the
 * cluster checked (the gateway's use) or replies with or without it (the client's). The stream is decoded twice: in one piece, and in chunks of sizes drawn
 * from the input, sometimes through the zero-copy body path. Every body buffer is
 * allocated at exactly body_size, so AddressSanitizer catches a byte written past it.
 * It checks that:
 * - decoding never crashes, never asserts, and always terminates;
 * - every frame it accepts (status OK) passes sz_frame_header_check() and
 *   sz_frame_body_check() on its own; a frame reported with a bad body fails the body
 *   check; a failed header fails the header check with the status reported;
 * - chunking changes nothing: both decodings report the same frames and statuses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "gateway/decoder.h"

#define CLUSTER_ID ((sz_u128)0xC0FFEEu << 64 | 7u)
#define STREAM_SIZE_MAX (4u * 1024u * 1024u)
#define FRAMES_MAX 64u

#define CHECK(condition)                                                                \
    do {                                                                                \
        if (!(condition)) {                                                             \
            fprintf(stderr, "fuzz_decoder: check failed: %s (line %d)\n", #condition,   \
                    __LINE__);                                                          \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* What one decoding saw, to compare the two. */
typedef struct outcome {
    uint32_t frame_count;
    uint64_t frame_hashes[FRAMES_MAX]; /* header, body and status of each frame */
    bool failed;
    sz_status_t failed_status;
    uint64_t consumed;
} outcome_t;

/* What the decoder expects, from the input's first byte. */
typedef struct expect {
    sz_command_t command;
    bool check_cluster;
} expect_t;

typedef struct cursor {
    const uint8_t *data;
    size_t size;
    size_t position;
} cursor_t;

static uint32_t cursor_take(cursor_t *cursor, uint32_t byte_count) {
    uint32_t value = 0;
    for (uint32_t index = 0; index < byte_count; index++) {
        uint8_t byte = cursor->position < cursor->size ? cursor->data[cursor->position] : 0;
        cursor->position++;
        value |= (uint32_t)byte << (8 * index);
    }
    return value;
}

static void header_reseal(sz_frame_header_t *header) {
    XXH128_hash_t hash = XXH3_128bits((const uint8_t *)header + 16, 112);
    header->checksum_header = ((sz_u128)hash.high64 << 64) | hash.low64;
}

/* One synthesized frame from a 9-byte recipe; body bytes come from the input again. */
static size_t frame_synthesize(cursor_t *recipe, uint8_t *target, size_t room, bool first,
                               const expect_t *expect) {
    uint32_t operation = 1 + cursor_take(recipe, 1) % 7; /* 7: not an operation */
    uint32_t events_raw = cursor_take(recipe, 2);
    uint32_t damage = cursor_take(recipe, 1);
    uint32_t damage_at = cursor_take(recipe, 4);
    uint32_t damage_value = cursor_take(recipe, 1);
    uint32_t record_size = sz_operation_request_record_size(operation);
    if (record_size == 0) record_size = 16;
    /* Mostly small bodies (fast runs); the first frame may be up to one past the
     * largest. */
    uint32_t events = (events_raw & 0xC000) == 0xC000 && first
                          ? events_raw % (SZ_BATCH_EVENTS_MAX + 2)
                          : events_raw % 64;
    if (operation >= SZ_OPERATION_GET_ACCOUNT_TRANSFERS && (damage & 0x80) == 0) events = 1;
    size_t body_size = (size_t)events * record_size;
    if (SZ_FRAME_HEADER_SIZE + body_size > room) return 0;

    /* The stream has no alignment: build the header aside, then copy it in. */
    sz_frame_header_t header_aligned;
    sz_frame_header_t *header = &header_aligned;
    uint8_t *body = target + SZ_FRAME_HEADER_SIZE;
    /* Body bytes: the input again, from an offset the recipe picks. */
    size_t filled = 0;
    while (filled < body_size) {
        size_t start = recipe->size > 0 ? damage_at % recipe->size : 0;
        size_t part = recipe->size - start;
        if (part == 0) {
            memset(body, 0x5A, body_size);
            break;
        }
        if (part > body_size - filled) part = body_size - filled;
        memcpy(body + filled, recipe->data + start, part);
        filled += part;
    }
    memset(header, 0, sizeof(*header));
    header->cluster_id = (damage % 16 == 1) ? CLUSTER_ID + 1 : CLUSTER_ID;
    header->client_id = (damage % 16 == 2) ? 0 : 1 + damage_at;
    header->request_number = damage_at;
    header->command = (uint8_t)expect->command;
    header->operation = (uint8_t)operation;
    if (expect->command == SZ_COMMAND_REPLY) {
        header->status = (uint16_t)(damage_value % SZ_STATUS_COUNT);
        header->op = damage_at;
    }
    header->body_size = (uint32_t)body_size;
    if (body_size <= SZ_FRAME_BODY_SIZE_MAX) sz_frame_header_seal(header, body);

    size_t frame_size = SZ_FRAME_HEADER_SIZE + body_size;
    uint8_t *header_bytes = (uint8_t *)header;
    size_t cut = frame_size;
    switch (damage % 16) {
    case 3: /* one bit flipped anywhere */
        if (damage_at % frame_size < SZ_FRAME_HEADER_SIZE) {
            header_bytes[damage_at % frame_size] ^= (uint8_t)(1u << (damage_value % 8));
        } else {
            target[damage_at % frame_size] ^= (uint8_t)(1u << (damage_value % 8));
        }
        break;
    case 4: header_bytes[damage_at % SZ_FRAME_HEADER_SIZE] = (uint8_t)damage_value; break;
    case 5: /* a field changed and resealed: an authentic header with a bad value */
        header_bytes[16 + damage_at % (SZ_FRAME_HEADER_SIZE - 16)] = (uint8_t)damage_value;
        header_reseal(header);
        break;
    case 6: /* a body size that lies, resealed */
        header->body_size = damage_at % (2 * SZ_FRAME_BODY_SIZE_MAX);
        header_reseal(header);
        break;
    case 7: cut = 1 + damage_at % frame_size; break; /* cut short */
    default: break;
    }
    memcpy(target, header, SZ_FRAME_HEADER_SIZE);
    return cut;
}

static size_t stream_build(const uint8_t *data, size_t size, uint8_t *stream,
                           const expect_t *expect) {
    if (size == 0) return 0;
    if ((data[0] & 1) == 0) {
        memcpy(stream, data + 1, size - 1);
        return size - 1;
    }
    cursor_t recipe = {.data = data + 1, .size = size - 1};
    size_t stream_size = 0;
    for (uint32_t frame = 0; frame < 8 && recipe.position < recipe.size; frame++) {
        size_t added = frame_synthesize(&recipe, stream + stream_size,
                                        STREAM_SIZE_MAX - stream_size, frame == 0, expect);
        if (added == 0) break;
        stream_size += added;
    }
    return stream_size;
}

static uint64_t frame_hash(const sz_decoder_t *decoder) {
    uint64_t hash = XXH3_64bits(&decoder->header, sizeof(decoder->header));
    if (decoder->header.body_size > 0) {
        hash ^= XXH3_64bits(decoder->body, decoder->header.body_size) * 31;
    }
    return hash ^ ((uint64_t)decoder->status << 56);
}

/* A frame is whole: check it on its own, record it, free its buffer. */
static void frame_take(sz_decoder_t *decoder, const expect_t *expect, outcome_t *outcome) {
    CHECK(decoder->status == SZ_STATUS_OK || decoder->status == SZ_STATUS_BODY_CHECKSUM_INVALID);
    CHECK(sz_frame_header_check(&decoder->header, expect->command, CLUSTER_ID,
                                expect->check_cluster) == SZ_STATUS_OK);
    CHECK(decoder->header.body_size <= SZ_FRAME_BODY_SIZE_MAX);
    CHECK(sz_frame_body_check(&decoder->header, decoder->body) == decoder->status);
    if (expect->command == SZ_COMMAND_REQUEST) {
        CHECK(sz_frame_event_count(&decoder->header) <= SZ_BATCH_EVENTS_MAX);
    }
    if (outcome->frame_count < FRAMES_MAX) {
        outcome->frame_hashes[outcome->frame_count] = frame_hash(decoder);
    }
    outcome->frame_count++;
    free(decoder->body);
    sz_decoder_next(decoder);
}

/* Decodes the stream in chunks from `chunks` (whole when chunks is NULL). */
static void decode(const uint8_t *stream, size_t stream_size, const expect_t *expect,
                   cursor_t *chunks, outcome_t *outcome) {
    memset(outcome, 0, sizeof(*outcome));
    sz_decoder_t decoder;
    sz_decoder_init(&decoder, expect->command, CLUSTER_ID, expect->check_cluster);
    size_t position = 0;
    /* Terminates: each pass consumes input or moves the state forward. */
    while (true) {
        if (decoder.state == SZ_DECODER_BODY_WANTED) {
            size_t body_size = decoder.header.body_size;
            CHECK(body_size <= SZ_FRAME_BODY_SIZE_MAX);
            void *buffer = body_size == 0 ? NULL : malloc(body_size);
            CHECK(buffer != NULL || body_size == 0);
            sz_decoder_attach(&decoder, buffer);
            continue;
        }
        if (decoder.state == SZ_DECODER_FRAME) {
            frame_take(&decoder, expect, outcome);
            continue;
        }
        if (decoder.state == SZ_DECODER_FAILED) {
            CHECK(decoder.status != SZ_STATUS_OK);
            CHECK(sz_frame_header_check(&decoder.header, expect->command, CLUSTER_ID,
                                        expect->check_cluster) == decoder.status);
            /* Authentic means the checksum held: checking again without it agrees. */
            sz_frame_header_t copy = decoder.header;
            bool checksum_holds = copy.magic == SZ_FRAME_MAGIC &&
                                  copy.version == SZ_PROTOCOL_VERSION;
            if (checksum_holds) {
                header_reseal(&copy);
                checksum_holds = copy.checksum_header == decoder.header.checksum_header;
            }
            CHECK(sz_decoder_status_authentic(decoder.status) == checksum_holds);
            CHECK(sz_decoder_feed(&decoder, stream, stream_size) == 0);
            outcome->failed = true;
            outcome->failed_status = decoder.status;
            break;
        }
        if (position == stream_size) break;
        size_t chunk = stream_size - position;
        bool direct = false;
        /* Chunk sizes come from the input; once it is used up, the rest goes whole (so a
         * short input cannot make a megabyte go one byte at a time). */
        if (chunks != NULL && chunks->position + 2 <= chunks->size) {
            uint32_t choice = cursor_take(chunks, 2);
            direct = (choice & 0x8000) != 0;
            size_t wanted = 1 + (choice & 0x7FFF) % 5000;
            if (wanted < chunk) chunk = wanted;
        }
        void *target = NULL;
        size_t room = sz_decoder_body_room(&decoder, &target);
        if (direct && room > 0) {
            size_t part = chunk < room ? chunk : room;
            memcpy(target, stream + position, part); /* what readv() would do */
            sz_decoder_body_received(&decoder, part);
            position += part;
            continue;
        }
        size_t taken = sz_decoder_feed(&decoder, stream + position, chunk);
        CHECK(taken <= chunk);
        CHECK(taken > 0);
        position += taken;
    }
    if (decoder.state == SZ_DECODER_BODY) free(decoder.body);
    outcome->consumed = position;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t *stream = NULL;
    if (stream == NULL) stream = malloc(STREAM_SIZE_MAX);
    uint8_t mode = size > 0 ? data[0] : 0;
    /* Mostly the gateway's case; a quarter of the inputs decode replies. */
    expect_t expect = {.command = (mode & 6) == 6 ? SZ_COMMAND_REPLY : SZ_COMMAND_REQUEST,
                       .check_cluster = (mode & 6) != 6 || (mode & 8) != 0};
    size_t stream_size = stream_build(data, size, stream, &expect);

    outcome_t whole, chunked;
    decode(stream, stream_size, &expect, NULL, &whole);
    cursor_t chunks = {.data = data, .size = size, .position = size / 2};
    decode(stream, stream_size, &expect, &chunks, &chunked);

    CHECK(whole.frame_count == chunked.frame_count);
    uint32_t compared = whole.frame_count < FRAMES_MAX ? whole.frame_count : FRAMES_MAX;
    for (uint32_t index = 0; index < compared; index++) {
        CHECK(whole.frame_hashes[index] == chunked.frame_hashes[index]);
    }
    CHECK(whole.failed == chunked.failed);
    CHECK(whole.failed_status == chunked.failed_status);
    CHECK(whole.consumed == chunked.consumed);
    return 0;
}
