/* seeds.c: writes the fuzz target's starting corpus into a directory: one valid request
 * of each operation as a raw stream, a stream of several frames, replies for the client's
 * mode, and a few synthesized recipes (see fuzz_decoder.c for the input forms). Built and
 * run by run.sh. */
#include <stdio.h>
#include <string.h>

#include "gateway/protocol.h"

#define CLUSTER_ID ((sz_u128)0xC0FFEEu << 64 | 7u)

static uint8_t buffer[1 + 8 * (128 + 64 * 128)];

static size_t frame_write(uint8_t *target, uint32_t operation, uint32_t events,
                          sz_command_t command) {
    uint32_t record_size = sz_operation_request_record_size(operation);
    uint32_t body_size = events * record_size;
    for (uint32_t index = 0; index < body_size; index++) target[128 + index] = (uint8_t)index;
    sz_frame_header_t header;
    memset(&header, 0, sizeof(header));
    header.cluster_id = CLUSTER_ID;
    header.client_id = 1234;
    header.request_number = operation;
    header.command = (uint8_t)command;
    header.operation = (uint8_t)operation;
    if (command == SZ_COMMAND_REPLY) header.op = 7;
    header.body_size = body_size;
    sz_frame_header_seal(&header, target + 128);
    memcpy(target, &header, sizeof(header));
    return 128 + body_size;
}

static int seed_write(const char *directory, const char *name, size_t size) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", directory, name);
    FILE *file = fopen(path, "wb");
    if (file == NULL || fwrite(buffer, 1, size, file) != size) {
        fprintf(stderr, "seeds: cannot write %s\n", path);
        return 1;
    }
    return fclose(file) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: seeds DIRECTORY\n");
        return 64;
    }
    int failed = 0;
    char name[64];
    for (uint32_t operation = 1; operation <= 6; operation++) {
        buffer[0] = 0; /* raw */
        uint32_t events = operation >= SZ_OPERATION_GET_ACCOUNT_TRANSFERS ? 1 : 3;
        size_t size = 1 + frame_write(buffer + 1, operation, events, SZ_COMMAND_REQUEST);
        snprintf(name, sizeof(name), "raw-operation-%u", operation);
        failed |= seed_write(argv[1], name, size);
    }
    size_t size = 1;
    buffer[0] = 0;
    for (uint32_t operation = 1; operation <= 6; operation++) {
        size += frame_write(buffer + size, operation, operation >= 5 ? 1 : operation,
                            SZ_COMMAND_REQUEST);
    }
    failed |= seed_write(argv[1], "raw-stream", size);
    /* First byte 6: replies, cluster not checked; 14: replies, cluster checked. */
    buffer[0] = 6;
    size = 1 + frame_write(buffer + 1, SZ_OPERATION_LOOKUP_ACCOUNTS, 2, SZ_COMMAND_REPLY);
    failed |= seed_write(argv[1], "raw-reply", size);
    buffer[0] = 14;
    failed |= seed_write(argv[1], "raw-reply-cluster", size);
    /* Recipes: operation, events (2), damage, damage_at (4), damage_value. */
    static const uint8_t recipes[][10] = {
        {1, 1, 3, 0, 0, 0, 0, 0, 0, 0},  {1, 0, 5, 0, 5, 0, 0, 0, 0, 0},
        {1, 2, 0x10, 0x80, 3, 9, 0, 0, 0, 1}, {1, 4, 1, 0, 6, 0x44, 0, 0, 0, 0},
        {1, 5, 0, 0, 7, 0, 1, 0, 0, 0},  {1, 3, 7, 0, 0, 0, 0, 0, 0, 0},
    };
    for (size_t index = 0; index < sizeof(recipes) / sizeof(recipes[0]); index++) {
        memcpy(buffer, recipes[index], sizeof(recipes[index]));
        snprintf(name, sizeof(name), "recipe-%zu", index);
        failed |= seed_write(argv[1], name, sizeof(recipes[index]));
    }
    return failed;
}
