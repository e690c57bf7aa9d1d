/* test_image.c: the ledger's snapshot image (sz_ledger_export / sz_ledger_import_*).
 *
 * What it proves: a ledger rebuilt from another's exported parts (with other capacities and
 * another hash seed) has the same digest and stats, answers every lookup and query the same,
 * and stays equal while both apply the same random ops (linked chains that roll back,
 * pending transfers with timeouts, expiry, history accounts, failing events); import refuses
 * a non-fresh ledger (-EINVAL), a state above its capacities (-ENOSPC), and parts that cannot
 * be a ledger's (duplicate ids, links out of range, a broken heap, disagreeing counts) with
 * -EUCLEAN and a message, never an assertion. Seeds: SUMZERO_SEED. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/ledger.h"
#include "tests/snapshot/workload.h"

typedef struct image_copy {
    sz_ledger_image_t image;
    void *parts[SZ_LEDGER_PART_COUNT];
} image_copy_t;

static sz_ledger_config_t config_make(uint64_t hash_seed, uint32_t scale) {
    return (sz_ledger_config_t){.accounts_max = 4096 * scale, .transfers_max = 65536 * scale,
                                .pending_max = 65536 * scale, .history_max = 131072 * scale,
                                .hash_seed = hash_seed};
}

static void image_take(const sz_ledger_t *ledger, image_copy_t *copy) {
    sz_ledger_export(ledger, &copy->image);
    for (uint32_t part = 0; part < SZ_LEDGER_PART_COUNT; part++) {
        size_t size = copy->image.record_counts[part] * sz_ledger_part_record_size(part);
        copy->parts[part] = malloc(size + 1);
        cr_assert_not_null(copy->parts[part]);
        if (part == SZ_LEDGER_PART_ACCOUNTS) {
            uint32_t count = (uint32_t)copy->image.record_counts[part];
            cr_assert_eq(sz_ledger_export_accounts(ledger, 0, count, copy->parts[part]), count);
        } else {
            memcpy(copy->parts[part], sz_ledger_export_array(ledger, part), size);
        }
    }
}

static void image_free(image_copy_t *copy) {
    for (uint32_t part = 0; part < SZ_LEDGER_PART_COUNT; part++) free(copy->parts[part]);
}

/* Imports copy into a fresh ledger; returns the first error (message in message_out). */
static int image_load(const image_copy_t *copy, const sz_ledger_config_t *config,
                      sz_ledger_t **ledger_out, char *message, size_t message_size) {
    cr_assert_eq(sz_ledger_init(config, ledger_out), 0);
    int result = sz_ledger_import_begin(*ledger_out, &copy->image, message, message_size);
    if (result < 0) return result;
    for (uint32_t part = 1; part < SZ_LEDGER_PART_COUNT; part++) {
        size_t size = copy->image.record_counts[part] * sz_ledger_part_record_size(part);
        memcpy(sz_ledger_import_array(*ledger_out, part), copy->parts[part], size);
    }
    /* In two runs, as a loader reading in chunks does. */
    uint32_t count = (uint32_t)copy->image.record_counts[SZ_LEDGER_PART_ACCOUNTS];
    const sz_account_t *accounts = copy->parts[SZ_LEDGER_PART_ACCOUNTS];
    result = sz_ledger_import_accounts(*ledger_out, accounts, count / 2, message, message_size);
    if (result < 0) return result;
    result = sz_ledger_import_accounts(*ledger_out, accounts + count / 2, count - count / 2,
                                       message, message_size);
    if (result < 0) return result;
    return sz_ledger_import_finish(*ledger_out, message, message_size);
}

static sz_ledger_t *ledger_built(workload_t *workload, uint64_t seed, uint32_t op_count) {
    sz_ledger_config_t config = config_make(1, 1);
    sz_ledger_t *ledger = NULL;
    cr_assert_eq(sz_ledger_init(&config, &ledger), 0);
    workload_init(workload, seed);
    for (uint32_t op = 0; op < op_count; op++) workload_step(workload, &ledger, 1);
    return ledger;
}

Test(image, a_loaded_ledger_answers_and_continues_like_the_one_that_wrote_it) {
    uint64_t seed = workload_seed(7);
    for (uint32_t round = 0; round < 6; round++) {
        workload_t workload;
        sz_ledger_t *original = ledger_built(&workload, seed + round, 40 + round * 60);
        image_copy_t copy;
        image_take(original, &copy);
        sz_ledger_config_t config = config_make(0xabcdef + round, 2);
        sz_ledger_t *loaded = NULL;
        char message[256] = "";
        int result = image_load(&copy, &config, &loaded, message, sizeof(message));
        cr_assert_eq(result, 0, "seed %llu: import failed: %s",
                     (unsigned long long)(seed + round), message);
        workload_compare(&workload, original, loaded);
        sz_ledger_t *both[2] = {original, loaded};
        for (uint32_t op = 0; op < 200; op++) {
            workload_step(&workload, both, 2);
            if (op % 50 == 49) workload_compare(&workload, original, loaded);
        }
        workload_compare(&workload, original, loaded);
        image_free(&copy);
        sz_ledger_deinit(original);
        sz_ledger_deinit(loaded);
    }
}

Test(image, an_empty_ledger_round_trips) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 1, 0);
    image_copy_t copy;
    image_take(original, &copy);
    sz_ledger_config_t config = config_make(3, 1);
    sz_ledger_t *loaded = NULL;
    char message[256] = "";
    cr_assert_eq(image_load(&copy, &config, &loaded, message, sizeof(message)), 0, "%s", message);
    workload_compare(&workload, original, loaded);
    image_free(&copy);
    sz_ledger_deinit(original);
    sz_ledger_deinit(loaded);
}

Test(image, import_refuses_a_ledger_that_is_not_fresh_and_a_state_too_large) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 11, 120);
    image_copy_t copy;
    image_take(original, &copy);
    char message[256] = "";
    cr_assert_eq(sz_ledger_import_begin(original, &copy.image, message, sizeof(message)), -EINVAL);
    sz_ledger_config_t small = config_make(1, 1);
    small.transfers_max = (uint32_t)copy.image.record_counts[SZ_LEDGER_PART_TRANSFERS] - 1;
    sz_ledger_t *loaded = NULL;
    cr_assert_eq(image_load(&copy, &small, &loaded, message, sizeof(message)), -ENOSPC);
    cr_assert(strstr(message, "transfers") != NULL, "message: %s", message);
    sz_ledger_deinit(loaded);
    image_free(&copy);
    sz_ledger_deinit(original);
}

/* Damages one thing in a fresh copy and expects -EUCLEAN with a message. */
static void damaged_load_fails(uint32_t damage) {
    workload_t workload;
    sz_ledger_t *original = ledger_built(&workload, 21, 150);
    image_copy_t copy;
    image_take(original, &copy);
    sz_account_t *accounts = copy.parts[SZ_LEDGER_PART_ACCOUNTS];
    sz_transfer_t *transfers = copy.parts[SZ_LEDGER_PART_TRANSFERS];
    uint8_t *metas = copy.parts[SZ_LEDGER_PART_TRANSFER_METAS];
    uint8_t *expiry = copy.parts[SZ_LEDGER_PART_EXPIRY];
    cr_assert_gt(copy.image.record_counts[SZ_LEDGER_PART_TRANSFERS], 10);
    cr_assert_gt(copy.image.record_counts[SZ_LEDGER_PART_EXPIRY], 2);
    switch (damage) {
    case 0: accounts[3].id = accounts[1].id; break;
    case 1: accounts[2].reserved = 0x7fffffff; break;
    case 2: transfers[5].id = transfers[4].id; break;
    case 3: transfers[6].timestamp = transfers[5].timestamp; break;
    case 4: memset(metas + 16 * 7, 0xff, 4); break;                    /* debit link */
    case 5: memcpy(expiry, expiry + 24, 8); expiry[0] ^= 0x80; break; /* heap order */
    case 6: copy.image.pending_live++; break;
    case 7: copy.image.record_counts[SZ_LEDGER_PART_TRANSFER_METAS]--; break;
    default: break;
    }
    sz_ledger_config_t config = config_make(5, 1);
    sz_ledger_t *loaded = NULL;
    char message[256] = "";
    cr_assert_eq(image_load(&copy, &config, &loaded, message, sizeof(message)), -EUCLEAN,
                 "damage %u was not found", damage);
    cr_assert_neq(message[0], '\0', "damage %u gave no message", damage);
    sz_ledger_deinit(loaded);
    image_free(&copy);
    sz_ledger_deinit(original);
}

Test(image, import_finds_parts_that_cannot_be_a_ledgers_without_asserting) {
    for (uint32_t damage = 0; damage < 8; damage++) damaged_load_fails(damage);
}
