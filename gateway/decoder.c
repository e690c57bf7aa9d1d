/* decoder.c: the byte-stream state machine of decoder.h. Every byte fed here may come from
 * an attacker: lengths come from a header only after sz_frame_header_check() bounded
 * them, and the body is written only into the attached buffer, only up to body_size. */
#include "decoder.h"

#include <string.h>

void sz_decoder_init(sz_decoder_t *decoder, sz_command_t command, sz_u128 cluster_id,
                     bool check_cluster) {
    SZ_ASSERT(command == SZ_COMMAND_REQUEST || command == SZ_COMMAND_REPLY);
    memset(decoder, 0, sizeof(*decoder));
    decoder->cluster_id = cluster_id;
    decoder->command = command;
    decoder->check_cluster = check_cluster;
    decoder->state = SZ_DECODER_HEADER;
    decoder->status = SZ_STATUS_OK;
}

/* The body is whole: its checksum decides the frame's status. */
static void decoder_body_done(sz_decoder_t *decoder) {
    SZ_ASSERT(decoder->body_received == decoder->header.body_size);
    decoder->status = sz_frame_body_check(&decoder->header, decoder->body);
    decoder->state = SZ_DECODER_FRAME;
}

static size_t decoder_feed_header(sz_decoder_t *decoder, const uint8_t *bytes, size_t size) {
    SZ_ASSERT(decoder->header_received < SZ_FRAME_HEADER_SIZE);
    size_t wanted = SZ_FRAME_HEADER_SIZE - decoder->header_received;
    size_t taken = size < wanted ? size : wanted;
    memcpy((uint8_t *)&decoder->header + decoder->header_received, bytes, taken);
    decoder->header_received += (uint32_t)taken;
    if (decoder->header_received < SZ_FRAME_HEADER_SIZE) return taken;

    decoder->status = sz_frame_header_check(&decoder->header, decoder->command,
                                            decoder->cluster_id, decoder->check_cluster);
    if (decoder->status != SZ_STATUS_OK) {
        decoder->state = SZ_DECODER_FAILED;
    } else {
        /* The check bounded body_size: the caller may now size a buffer by it. */
        SZ_ASSERT(decoder->header.body_size <= SZ_FRAME_BODY_SIZE_MAX);
        decoder->state = SZ_DECODER_BODY_WANTED;
    }
    return taken;
}

size_t sz_decoder_feed(sz_decoder_t *decoder, const void *bytes, size_t size) {
    SZ_ASSERT(bytes != NULL || size == 0);
    if (size == 0) return 0;
    if (decoder->state == SZ_DECODER_HEADER) return decoder_feed_header(decoder, bytes, size);
    if (decoder->state != SZ_DECODER_BODY) return 0;

    void *target = NULL;
    size_t room = sz_decoder_body_room(decoder, &target);
    SZ_ASSERT(room > 0);
    size_t taken = size < room ? size : room;
    memcpy(target, bytes, taken);
    sz_decoder_body_received(decoder, taken);
    return taken;
}

void sz_decoder_attach(sz_decoder_t *decoder, void *body) {
    SZ_ASSERT(decoder->state == SZ_DECODER_BODY_WANTED);
    SZ_ASSERT(body != NULL || decoder->header.body_size == 0);
    decoder->body = body;
    decoder->body_received = 0;
    decoder->state = SZ_DECODER_BODY;
    if (decoder->header.body_size == 0) decoder_body_done(decoder);
}

size_t sz_decoder_body_room(const sz_decoder_t *decoder, void **target_out) {
    *target_out = NULL;
    if (decoder->state != SZ_DECODER_BODY) return 0;
    SZ_ASSERT(decoder->body_received < decoder->header.body_size);
    *target_out = decoder->body + decoder->body_received;
    return decoder->header.body_size - decoder->body_received;
}

void sz_decoder_body_received(sz_decoder_t *decoder, size_t size) {
    SZ_ASSERT(decoder->state == SZ_DECODER_BODY);
    SZ_ASSERT(size <= decoder->header.body_size - decoder->body_received);
    decoder->body_received += (uint32_t)size;
    if (decoder->body_received == decoder->header.body_size) decoder_body_done(decoder);
}

void sz_decoder_next(sz_decoder_t *decoder) {
    SZ_ASSERT(decoder->state == SZ_DECODER_FRAME);
    decoder->header_received = 0;
    decoder->body_received = 0;
    decoder->body = NULL;
    decoder->status = SZ_STATUS_OK;
    decoder->state = SZ_DECODER_HEADER;
}

bool sz_decoder_status_authentic(sz_status_t status) {
    /* sz_frame_header_check() tests magic, version, then the checksum: any later failure
     * was found in a header whose checksum held. */
    return status != SZ_STATUS_MAGIC_INVALID && status != SZ_STATUS_VERSION_UNSUPPORTED &&
           status != SZ_STATUS_HEADER_CHECKSUM_INVALID;
}
