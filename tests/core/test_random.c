/* test_random.c: randomized differential test of the ledger against a reference model.
 *
 * What it proves: on seeded random workloads (valid and invalid events of every kind,
 * retries and id collisions, linked chains including one left open at the end of a batch,
 * pending transfers with timeouts, post and void (partial, full, twice, after expiry),
 * balancing, amounts near 2^128, limit and history flags, expire ops and refused batches),
 * the ledger gives exactly the batch status, result codes, expired ids, records, query rows,
 * stats and next expiry that SEMANTICS.md (and ledger.h) prescribe, keeps every invariant
 * (sz_ledger_verify), and a fresh ledger fed the same batches (other hash seed, other
 * prefetch distance) reaches the same digest after every op.
 *
 * How: the reference model below is written to be obviously correct, not fast: plain arrays,
 * linear search, the checks one `if` at a time in SEMANTICS.md's order, and a linked chain
 * rolled back by restoring a copy of the model taken at its start. Every op is applied to both
 * and everything observable is compared. Each seed runs in a child process, so a crash is
 * caught like a mismatch; the op log of a failing seed is then shrunk (by re-running
 * candidates in children) and printed as a small reproduction with the seed and op number.
 *
 * Seeds: 1..1000 by default. SUMZERO_SEED=s runs seed s alone; SUMZERO_SEEDS=n runs n seeds
 * (from s if SUMZERO_SEED is given, else from 1).
 *
 * Decisions the model encodes where SEMANTICS.md is silent: a balancing transfer's exists
 * check gives exists_with_different_amount only for a non-zero amount below the stored
 * (clamped) one, as TigerBeetle 0.15 and core/ledger.c do; a pending transfer with timeout T
 * created at ts expires at ts + T * 10^9; an expire op consumes its timestamp; any result
 * other than ok (exists included) breaks a linked chain, as in TigerBeetle 0.15; in
 * get_account_balances the debits/credits flags select rows by the account's side in the
 * row's transfer. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/ledger.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define HAVE_SANITIZER_DEATH_CALLBACK 1
#endif

#define SEEDS_DEFAULT 1000u
/* Mostly small batches and a few dozen ops per seed: 1000 seeds take about 12 s in a debug
 * build with address and undefined sanitizers on two cores (3 s without), while still
 * reaching deep states (hundreds of transfers); some batches exceed the ledger's 64-slot
 * prefetch ring. */
#define BATCH_EVENTS_MAX 160u
#define OPS_MAX 96u
#define QUERIES_PER_OP_MAX 6u
#define ACCOUNT_IDS_MAX 24u
#define TRANSFER_IDS_MAX 1536u
#define MODEL_ACCOUNTS_MAX ACCOUNT_IDS_MAX
#define MODEL_TRANSFERS_MAX TRANSFER_IDS_MAX
#define MODEL_ROWS_MAX (2u * MODEL_TRANSFERS_MAX)
#define EVENTS_SENT_MAX (OPS_MAX * BATCH_EVENTS_MAX)
#define QUERY_ROWS_MAX (MODEL_TRANSFERS_MAX + 16u)
/* Bounds the time spent shrinking a failure (each trial replays the log in a child). */
#define SHRINK_TRIALS_MAX 3000u
/* Failing seeds beyond this are counted but not shrunk. */
#define SHRINK_SEEDS_MAX 3u
#define NS_PER_S 1000000000ull

/* Never created: transfers naming it get *_not_found. */
#define UNKNOWN_ACCOUNT_ID (((sz_u128)0x5eed5eed5eed5eedull << 64) | 0xdeadbeefull)

/* ------------------------------------------------------------------------------------ */
/* Formatting */

static const char *u128_text(sz_u128 value) {
    static char buffers[24][SZ_U128_DECIMAL_SIZE];
    static unsigned next;
    char *buffer = buffers[next++ % 24];
    if (value <= UINT64_MAX) return sz_u128_format(value, buffer);
    snprintf(buffer, SZ_U128_DECIMAL_SIZE, "0x%016" PRIx64 "%016" PRIx64, (uint64_t)(value >> 64),
             (uint64_t)value);
    return buffer;
}

static void flags_text(char *buffer, size_t size, uint16_t flags, bool transfer) {
    static const char *const account_names[] = {"linked", "debits_must_not_exceed_credits",
                                                "credits_must_not_exceed_debits", "history"};
    static const char *const transfer_names[] = {"linked", "pending",         "post",
                                                 "void",   "balancing_debit", "balancing_credit"};
    const char *const *names = transfer ? transfer_names : account_names;
    uint32_t name_count = transfer ? 6u : 4u;
    size_t used = 0;
    buffer[0] = '\0';
    for (uint32_t bit = 0; bit < 16; bit++) {
        if ((flags & (1u << bit)) == 0) continue;
        int written;
        if (bit < name_count) {
            written = snprintf(buffer + used, size - used, "%s%s", used ? "|" : "", names[bit]);
        } else {
            written = snprintf(buffer + used, size - used, "%sbit%u", used ? "|" : "", bit);
        }
        if (written < 0 || (size_t)written >= size - used) return;
        used += (size_t)written;
    }
}

/* Prints only the fields that are not zero, so a reproduction reads like a recipe. */
static void print_transfer(const char *prefix, const sz_transfer_t *t) {
    char flags[160];
    flags_text(flags, sizeof(flags), t->flags, true);
    fprintf(stderr, "%s{id=%s", prefix, u128_text(t->id));
    if (t->debit_account_id) fprintf(stderr, " debit=%s", u128_text(t->debit_account_id));
    if (t->credit_account_id) fprintf(stderr, " credit=%s", u128_text(t->credit_account_id));
    if (t->amount) fprintf(stderr, " amount=%s", u128_text(t->amount));
    if (t->pending_id) fprintf(stderr, " pending_id=%s", u128_text(t->pending_id));
    if (t->user_data_128) fprintf(stderr, " ud128=%s", u128_text(t->user_data_128));
    if (t->user_data_64) fprintf(stderr, " ud64=%" PRIu64, t->user_data_64);
    if (t->user_data_32) fprintf(stderr, " ud32=%" PRIu32, t->user_data_32);
    if (t->timeout) fprintf(stderr, " timeout=%" PRIu32, t->timeout);
    if (t->ledger) fprintf(stderr, " ledger=%" PRIu32, t->ledger);
    if (t->code) fprintf(stderr, " code=%u", (unsigned)t->code);
    if (t->flags) fprintf(stderr, " flags=%s", flags);
    if (t->timestamp) fprintf(stderr, " timestamp=%" PRIu64, t->timestamp);
    fprintf(stderr, "}\n");
}

static void print_account(const char *prefix, const sz_account_t *a) {
    char flags[160];
    flags_text(flags, sizeof(flags), a->flags, false);
    fprintf(stderr, "%s{id=%s", prefix, u128_text(a->id));
    if (a->debits_pending) fprintf(stderr, " debits_pending=%s", u128_text(a->debits_pending));
    if (a->debits_posted) fprintf(stderr, " debits_posted=%s", u128_text(a->debits_posted));
    if (a->credits_pending) fprintf(stderr, " credits_pending=%s", u128_text(a->credits_pending));
    if (a->credits_posted) fprintf(stderr, " credits_posted=%s", u128_text(a->credits_posted));
    if (a->user_data_128) fprintf(stderr, " ud128=%s", u128_text(a->user_data_128));
    if (a->user_data_64) fprintf(stderr, " ud64=%" PRIu64, a->user_data_64);
    if (a->user_data_32) fprintf(stderr, " ud32=%" PRIu32, a->user_data_32);
    if (a->reserved) fprintf(stderr, " reserved=%" PRIu32, a->reserved);
    if (a->ledger) fprintf(stderr, " ledger=%" PRIu32, a->ledger);
    if (a->code) fprintf(stderr, " code=%u", (unsigned)a->code);
    if (a->flags) fprintf(stderr, " flags=%s", flags);
    if (a->timestamp) fprintf(stderr, " timestamp=%" PRIu64, a->timestamp);
    fprintf(stderr, "}\n");
}

static void print_balance(const char *prefix, const sz_account_balance_t *b) {
    bool reserved_zero = true;
    for (size_t index = 0; index < sizeof(b->reserved); index++) {
        if (b->reserved[index] != 0) reserved_zero = false;
    }
    fprintf(stderr,
            "%s{debits_pending=%s debits_posted=%s credits_pending=%s credits_posted=%s "
            "timestamp=%" PRIu64 "%s}\n",
            prefix, u128_text(b->debits_pending), u128_text(b->debits_posted),
            u128_text(b->credits_pending), u128_text(b->credits_posted), b->timestamp,
            reserved_zero ? "" : " reserved=not_zero");
}

static void print_filter(const char *prefix, const sz_account_filter_t *f) {
    bool reserved_zero = true;
    for (size_t index = 0; index < sizeof(f->reserved); index++) {
        if (f->reserved[index] != 0) reserved_zero = false;
    }
    fprintf(stderr,
            "%s{account_id=%s timestamp_min=%" PRIu64 " timestamp_max=%" PRIu64 " limit=%" PRIu32
            " flags=0x%" PRIx32 "%s}",
            prefix, u128_text(f->account_id), f->timestamp_min, f->timestamp_max, f->limit,
            f->flags, reserved_zero ? "" : " reserved=not_zero");
}

/* ------------------------------------------------------------------------------------ */
/* Random numbers: splitmix64, one stream per seed. */

typedef struct rng {
    uint64_t state;
} rng_t;

static uint64_t rng_next(rng_t *rng) {
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_below(rng_t *rng, uint64_t bound) {
    SZ_ASSERT(bound > 0);
    return rng_next(rng) % bound;
}

static bool rng_percent(rng_t *rng, uint32_t percent) { return rng_below(rng, 100) < percent; }

static sz_u128 rng_u128(rng_t *rng) {
    sz_u128 high = rng_next(rng);
    return (high << 64) | rng_next(rng);
}

static sz_u128 rng_below_u128(rng_t *rng, sz_u128 bound) {
    SZ_ASSERT(bound > 0);
    return rng_u128(rng) % bound;
}

/* An id that is neither 0 nor 2^128-1 nor the never-created account id. */
static sz_u128 rng_id(rng_t *rng) {
    for (;;) {
        sz_u128 id = rng_u128(rng);
        if (id != 0 && id != SZ_U128_MAX && id != UNKNOWN_ACCOUNT_ID) return id;
    }
}

/* ------------------------------------------------------------------------------------ */
/* The op log: everything needed to replay a seed without its generator. */

enum op_kind { OP_CREATE_ACCOUNTS = 1, OP_CREATE_TRANSFERS = 2, OP_EXPIRE_PENDING = 3 };
enum query_kind { QUERY_TRANSFERS = 1, QUERY_BALANCES = 2 };

typedef struct query {
    uint32_t kind;
    uint32_t row_count_max;
    sz_account_filter_t filter;
} query_t;

typedef struct op_record {
    uint32_t kind;
    uint32_t event_count;
    uint64_t timestamp;
    sz_account_t accounts[BATCH_EVENTS_MAX];
    sz_transfer_t transfers[BATCH_EVENTS_MAX];
    /* Queries compared after the op. */
    uint32_t query_count;
    query_t queries[QUERIES_PER_OP_MAX];
} op_record_t;

typedef struct op_log {
    uint64_t seed;
    /* Every id the workload may create: lookups of all of them prove no extra records. */
    uint32_t account_id_count;
    sz_u128 account_ids[ACCOUNT_IDS_MAX];
    uint32_t transfer_id_count;
    sz_u128 transfer_ids[TRANSFER_IDS_MAX];
    sz_ledger_config_t config;
    uint32_t replay_prefetch_distance;
    uint64_t replay_hash_seed;
    uint32_t op_count;
    op_record_t ops[OPS_MAX];
} op_log_t;

/* What the workloads produced, summed over seeds (shared with the children): shows that
 * every result code is reached, so agreement is not agreement on a narrow path. */
typedef struct coverage {
    uint64_t account_codes[SZ_CREATE_ACCOUNT_RESULT_COUNT];
    uint64_t transfer_codes[SZ_CREATE_TRANSFER_RESULT_COUNT];
    uint64_t expired_count;
    uint64_t refused_count;
    uint64_t op_count;
    uint64_t query_rows;
} coverage_t;

/* Set only in the generating child, so shrink trials do not count. */
static coverage_t *coverage;

static const char *op_kind_name(uint32_t kind) {
    switch (kind) {
    case OP_CREATE_ACCOUNTS: return "create_accounts";
    case OP_CREATE_TRANSFERS: return "create_transfers";
    case OP_EXPIRE_PENDING: return "expire_pending";
    default: return "unknown";
    }
}

static const char *result_name(uint32_t kind, uint32_t result) {
    if (kind == OP_CREATE_ACCOUNTS) return sz_create_account_result_name(result);
    return sz_create_transfer_result_name(result);
}

static void print_op(uint32_t op_index, const op_record_t *op) {
    fprintf(stderr, "  op %" PRIu32 ": %s timestamp=%" PRIu64, op_index, op_kind_name(op->kind),
            op->timestamp);
    if (op->kind == OP_EXPIRE_PENDING) {
        fprintf(stderr, "\n");
    } else {
        fprintf(stderr, " events=%" PRIu32 "\n", op->event_count);
    }
    for (uint32_t index = 0; index < op->event_count; index++) {
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "    [%" PRIu32 "] ", index);
        if (op->kind == OP_CREATE_ACCOUNTS) print_account(prefix, &op->accounts[index]);
        if (op->kind == OP_CREATE_TRANSFERS) print_transfer(prefix, &op->transfers[index]);
    }
    for (uint32_t index = 0; index < op->query_count; index++) {
        const query_t *query = &op->queries[index];
        print_filter(query->kind == QUERY_TRANSFERS ? "    then get_account_transfers"
                                                    : "    then get_account_balances",
                     &query->filter);
        fprintf(stderr, " row_count_max=%" PRIu32 "\n", query->row_count_max);
    }
}

/* ------------------------------------------------------------------------------------ */
/* The reference model. */

enum pending_state {
    PENDING_NONE = 0, /* not a pending transfer */
    PENDING_OPEN = 1,
    PENDING_POSTED = 2,
    PENDING_VOIDED = 3,
    PENDING_EXPIRED = 4,
};

typedef struct model_transfer {
    sz_transfer_t record;
    uint32_t state;
} model_transfer_t;

typedef struct model_row {
    sz_u128 account_id;
    /* Whether the account was the transfer's debit side: a filter with only the debits flag
     * selects these rows, only credits the others (SEMANTICS.md leaves it open; this is
     * TigerBeetle 0.15's reading and core/ledger.c's). */
    bool debit_side;
    sz_account_balance_t balance;
} model_row_t;

typedef struct model {
    sz_ledger_config_t config; /* capacities: a batch that might not fit is refused whole */
    uint32_t account_count;
    sz_account_t accounts[MODEL_ACCOUNTS_MAX];
    uint32_t transfer_count;
    model_transfer_t transfers[MODEL_TRANSFERS_MAX];
    uint32_t row_count;
    model_row_t rows[MODEL_ROWS_MAX];
    uint64_t timestamp_last;
    uint64_t op_count;
} model_t;

/* A chain's rollback point: a copy of the whole used part of the model. Slow, and obviously
 * right, which is the point. */
static void model_copy(model_t *target, const model_t *source) {
    target->account_count = source->account_count;
    memcpy(target->accounts, source->accounts, source->account_count * sizeof(sz_account_t));
    target->transfer_count = source->transfer_count;
    memcpy(target->transfers, source->transfers, source->transfer_count * sizeof(model_transfer_t));
    target->row_count = source->row_count;
    memcpy(target->rows, source->rows, source->row_count * sizeof(model_row_t));
    target->timestamp_last = source->timestamp_last;
    target->op_count = source->op_count;
}

static sz_account_t *model_account(model_t *model, sz_u128 id) {
    for (uint32_t index = 0; index < model->account_count; index++) {
        if (model->accounts[index].id == id) return &model->accounts[index];
    }
    return NULL;
}

static model_transfer_t *model_transfer(model_t *model, sz_u128 id) {
    for (uint32_t index = 0; index < model->transfer_count; index++) {
        if (model->transfers[index].record.id == id) return &model->transfers[index];
    }
    return NULL;
}

static sz_u128 sum_no_overflow(sz_u128 a, sz_u128 b) {
    sz_u128 sum;
    SZ_ASSERT(!__builtin_add_overflow(a, b, &sum));
    return sum;
}

static bool sum_overflows(sz_u128 a, sz_u128 b) {
    sz_u128 sum;
    return __builtin_add_overflow(a, b, &sum);
}

static void model_history(model_t *model, const sz_account_t *account, bool debit_side,
                          uint64_t timestamp) {
    if ((account->flags & SZ_ACCOUNT_HISTORY) == 0) return;
    SZ_ASSERT(model->row_count < MODEL_ROWS_MAX);
    model_row_t *row = &model->rows[model->row_count++];
    memset(row, 0, sizeof(*row));
    row->account_id = account->id;
    row->debit_side = debit_side;
    row->balance.debits_pending = account->debits_pending;
    row->balance.debits_posted = account->debits_posted;
    row->balance.credits_pending = account->credits_pending;
    row->balance.credits_posted = account->credits_posted;
    row->balance.timestamp = timestamp;
}

static uint32_t model_create_account(model_t *model, const sz_account_t *a, uint64_t timestamp) {
    if (a->reserved != 0) return SZ_CREATE_ACCOUNT_RESERVED_FIELD;
    if ((a->flags & ~SZ_ACCOUNT_FLAGS_KNOWN) != 0) return SZ_CREATE_ACCOUNT_RESERVED_FLAG;
    if (a->id == 0) return SZ_CREATE_ACCOUNT_ID_MUST_NOT_BE_ZERO;
    if (a->id == SZ_U128_MAX) return SZ_CREATE_ACCOUNT_ID_MUST_NOT_BE_INT_MAX;
    if ((a->flags & SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) != 0 &&
        (a->flags & SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS) != 0) {
        return SZ_CREATE_ACCOUNT_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    }
    if (a->debits_pending != 0) return SZ_CREATE_ACCOUNT_DEBITS_PENDING_MUST_BE_ZERO;
    if (a->debits_posted != 0) return SZ_CREATE_ACCOUNT_DEBITS_POSTED_MUST_BE_ZERO;
    if (a->credits_pending != 0) return SZ_CREATE_ACCOUNT_CREDITS_PENDING_MUST_BE_ZERO;
    if (a->credits_posted != 0) return SZ_CREATE_ACCOUNT_CREDITS_POSTED_MUST_BE_ZERO;
    if (a->ledger == 0) return SZ_CREATE_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO;
    if (a->code == 0) return SZ_CREATE_ACCOUNT_CODE_MUST_NOT_BE_ZERO;
    const sz_account_t *e = model_account(model, a->id);
    if (e != NULL) {
        if (a->flags != e->flags) return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_FLAGS;
        if (a->user_data_128 != e->user_data_128) {
            return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_128;
        }
        if (a->user_data_64 != e->user_data_64) {
            return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_64;
        }
        if (a->user_data_32 != e->user_data_32) {
            return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_32;
        }
        if (a->ledger != e->ledger) return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_LEDGER;
        if (a->code != e->code) return SZ_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_CODE;
        return SZ_CREATE_ACCOUNT_EXISTS;
    }
    SZ_ASSERT(model->account_count < MODEL_ACCOUNTS_MAX);
    sz_account_t *stored = &model->accounts[model->account_count++];
    *stored = *a;
    stored->timestamp = timestamp;
    return SZ_CREATE_ACCOUNT_OK;
}

static void model_store_transfer(model_t *model, const sz_transfer_t *record, uint32_t state) {
    SZ_ASSERT(model->transfer_count < MODEL_TRANSFERS_MAX);
    model_transfer_t *stored = &model->transfers[model->transfer_count++];
    stored->record = *record;
    stored->state = state;
}

static uint32_t model_post_or_void(model_t *model, const sz_transfer_t *t, uint64_t timestamp) {
    const uint16_t post = SZ_TRANSFER_POST_PENDING;
    const uint16_t void_ = SZ_TRANSFER_VOID_PENDING;
    if ((t->flags & post) != 0 && (t->flags & void_) != 0) {
        return SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    }
    if ((t->flags & SZ_TRANSFER_PENDING) != 0) {
        return SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    }
    if ((t->flags & SZ_TRANSFER_BALANCING_DEBIT) != 0) {
        return SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    }
    if ((t->flags & SZ_TRANSFER_BALANCING_CREDIT) != 0) {
        return SZ_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE;
    }
    if (t->pending_id == 0) return SZ_CREATE_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO;
    if (t->pending_id == SZ_U128_MAX) return SZ_CREATE_TRANSFER_PENDING_ID_MUST_NOT_BE_INT_MAX;
    if (t->pending_id == t->id) return SZ_CREATE_TRANSFER_PENDING_ID_MUST_BE_DIFFERENT;
    if (t->timeout != 0) return SZ_CREATE_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER;
    model_transfer_t *pending = model_transfer(model, t->pending_id);
    if (pending == NULL) return SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_FOUND;
    const sz_transfer_t *p = &pending->record;
    if ((p->flags & SZ_TRANSFER_PENDING) == 0) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_NOT_PENDING;
    }
    if (t->debit_account_id != 0 && t->debit_account_id != p->debit_account_id) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID;
    }
    if (t->credit_account_id != 0 && t->credit_account_id != p->credit_account_id) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID;
    }
    if (t->ledger != 0 && t->ledger != p->ledger) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_LEDGER;
    }
    if (t->code != 0 && t->code != p->code) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CODE;
    }
    sz_u128 amount = t->amount != 0 ? t->amount : p->amount;
    if (amount > p->amount) return SZ_CREATE_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT;
    if ((t->flags & void_) != 0 && amount < p->amount) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT;
    }
    sz_u128 user_data_128 = t->user_data_128 != 0 ? t->user_data_128 : p->user_data_128;
    uint64_t user_data_64 = t->user_data_64 != 0 ? t->user_data_64 : p->user_data_64;
    uint32_t user_data_32 = t->user_data_32 != 0 ? t->user_data_32 : p->user_data_32;
    const model_transfer_t *existing = model_transfer(model, t->id);
    if (existing != NULL) {
        const sz_transfer_t *e = &existing->record;
        if (t->flags != e->flags) return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_FLAGS;
        if (amount != e->amount) return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT;
        if (t->pending_id != e->pending_id) {
            return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_PENDING_ID;
        }
        if (user_data_128 != e->user_data_128) {
            return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_128;
        }
        if (user_data_64 != e->user_data_64) {
            return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_64;
        }
        if (user_data_32 != e->user_data_32) {
            return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_32;
        }
        return SZ_CREATE_TRANSFER_EXISTS;
    }
    if (pending->state == PENDING_POSTED) return SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED;
    if (pending->state == PENDING_VOIDED) return SZ_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED;
    if (pending->state == PENDING_EXPIRED) return SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED;
    SZ_ASSERT(pending->state == PENDING_OPEN);
    if (p->timeout != 0 && timestamp >= p->timestamp + (uint64_t)p->timeout * NS_PER_S) {
        return SZ_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED;
    }

    sz_account_t *debit = model_account(model, p->debit_account_id);
    sz_account_t *credit = model_account(model, p->credit_account_id);
    SZ_ASSERT(debit != NULL && credit != NULL);
    debit->debits_pending -= p->amount;
    credit->credits_pending -= p->amount;
    if ((t->flags & post) != 0) {
        debit->debits_posted = sum_no_overflow(debit->debits_posted, amount);
        credit->credits_posted = sum_no_overflow(credit->credits_posted, amount);
        pending->state = PENDING_POSTED;
    } else {
        pending->state = PENDING_VOIDED;
    }
    sz_transfer_t stored = *t;
    stored.debit_account_id = p->debit_account_id;
    stored.credit_account_id = p->credit_account_id;
    stored.ledger = p->ledger;
    stored.code = p->code;
    stored.user_data_128 = user_data_128;
    stored.user_data_64 = user_data_64;
    stored.user_data_32 = user_data_32;
    stored.timeout = 0;
    stored.amount = amount;
    stored.timestamp = timestamp;
    model_store_transfer(model, &stored, PENDING_NONE);
    model_history(model, debit, true, timestamp);
    model_history(model, credit, false, timestamp);
    return SZ_CREATE_TRANSFER_OK;
}

static uint32_t model_transfer_exists(const sz_transfer_t *t, const sz_transfer_t *e) {
    if (t->flags != e->flags) return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_FLAGS;
    if (t->debit_account_id != e->debit_account_id) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID;
    }
    if (t->credit_account_id != e->credit_account_id) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID;
    }
    /* A balancing transfer's amount is an upper limit (0: none), the stored one what was
     * booked: only a limit below the booked amount differs (TigerBeetle 0.15). */
    bool balancing = (t->flags & (SZ_TRANSFER_BALANCING_DEBIT | SZ_TRANSFER_BALANCING_CREDIT)) != 0;
    if (balancing && t->amount != 0 && t->amount < e->amount) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT;
    }
    if (!balancing && t->amount != e->amount) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT;
    }
    if (t->user_data_128 != e->user_data_128) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_128;
    }
    if (t->user_data_64 != e->user_data_64) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_64;
    }
    if (t->user_data_32 != e->user_data_32) {
        return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_32;
    }
    if (t->timeout != e->timeout) return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_TIMEOUT;
    if (t->code != e->code) return SZ_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_CODE;
    return SZ_CREATE_TRANSFER_EXISTS;
}

static uint32_t model_create_transfer(model_t *model, const sz_transfer_t *t, uint64_t timestamp) {
    if ((t->flags & ~SZ_TRANSFER_FLAGS_KNOWN) != 0) return SZ_CREATE_TRANSFER_RESERVED_FLAG;
    if (t->id == 0) return SZ_CREATE_TRANSFER_ID_MUST_NOT_BE_ZERO;
    if (t->id == SZ_U128_MAX) return SZ_CREATE_TRANSFER_ID_MUST_NOT_BE_INT_MAX;
    if ((t->flags & (SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING)) != 0) {
        return model_post_or_void(model, t, timestamp);
    }
    if (t->debit_account_id == 0) return SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO;
    if (t->debit_account_id == SZ_U128_MAX) {
        return SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX;
    }
    if (t->credit_account_id == 0) return SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO;
    if (t->credit_account_id == SZ_U128_MAX) {
        return SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX;
    }
    if (t->debit_account_id == t->credit_account_id) {
        return SZ_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT;
    }
    if (t->pending_id != 0) return SZ_CREATE_TRANSFER_PENDING_ID_MUST_BE_ZERO;
    bool pending = (t->flags & SZ_TRANSFER_PENDING) != 0;
    bool balancing_debit = (t->flags & SZ_TRANSFER_BALANCING_DEBIT) != 0;
    bool balancing_credit = (t->flags & SZ_TRANSFER_BALANCING_CREDIT) != 0;
    if (!pending && t->timeout != 0) {
        return SZ_CREATE_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER;
    }
    if (!balancing_debit && !balancing_credit && t->amount == 0) {
        return SZ_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO;
    }
    if (t->ledger == 0) return SZ_CREATE_TRANSFER_LEDGER_MUST_NOT_BE_ZERO;
    if (t->code == 0) return SZ_CREATE_TRANSFER_CODE_MUST_NOT_BE_ZERO;
    sz_account_t *debit = model_account(model, t->debit_account_id);
    if (debit == NULL) return SZ_CREATE_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND;
    sz_account_t *credit = model_account(model, t->credit_account_id);
    if (credit == NULL) return SZ_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND;
    if (debit->ledger != credit->ledger) {
        return SZ_CREATE_TRANSFER_ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER;
    }
    if (t->ledger != debit->ledger) {
        return SZ_CREATE_TRANSFER_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS;
    }
    const model_transfer_t *existing = model_transfer(model, t->id);
    if (existing != NULL) return model_transfer_exists(t, &existing->record);

    sz_u128 amount = t->amount;
    if (balancing_debit || balancing_credit) {
        if (amount == 0) amount = UINT64_MAX;
    }
    if (balancing_debit) {
        sz_u128 debits = sum_no_overflow(debit->debits_posted, debit->debits_pending);
        sz_u128 room = debit->credits_posted > debits ? debit->credits_posted - debits : 0;
        if (amount > room) amount = room;
        if (amount == 0) return SZ_CREATE_TRANSFER_EXCEEDS_CREDITS;
    }
    if (balancing_credit) {
        sz_u128 credits = sum_no_overflow(credit->credits_posted, credit->credits_pending);
        sz_u128 room = credit->debits_posted > credits ? credit->debits_posted - credits : 0;
        if (amount > room) amount = room;
        if (amount == 0) return SZ_CREATE_TRANSFER_EXCEEDS_DEBITS;
    }
    if (pending) {
        if (sum_overflows(amount, debit->debits_pending)) {
            return SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS_PENDING;
        }
        if (sum_overflows(amount, credit->credits_pending)) {
            return SZ_CREATE_TRANSFER_OVERFLOWS_CREDITS_PENDING;
        }
    }
    if (sum_overflows(amount, debit->debits_posted)) {
        return SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS_POSTED;
    }
    if (sum_overflows(amount, credit->credits_posted)) {
        return SZ_CREATE_TRANSFER_OVERFLOWS_CREDITS_POSTED;
    }
    sz_u128 debits = sum_no_overflow(debit->debits_pending, debit->debits_posted);
    sz_u128 credits = sum_no_overflow(credit->credits_pending, credit->credits_posted);
    if (sum_overflows(amount, debits)) return SZ_CREATE_TRANSFER_OVERFLOWS_DEBITS;
    if (sum_overflows(amount, credits)) return SZ_CREATE_TRANSFER_OVERFLOWS_CREDITS;
    if (t->timeout != 0) {
        uint64_t deadline;
        if (__builtin_add_overflow(timestamp, (uint64_t)t->timeout * NS_PER_S, &deadline)) {
            return SZ_CREATE_TRANSFER_OVERFLOWS_TIMEOUT;
        }
    }
    if ((debit->flags & SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) != 0 &&
        debits + amount > debit->credits_posted) {
        return SZ_CREATE_TRANSFER_EXCEEDS_CREDITS;
    }
    if ((credit->flags & SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS) != 0 &&
        credits + amount > credit->debits_posted) {
        return SZ_CREATE_TRANSFER_EXCEEDS_DEBITS;
    }

    if (pending) {
        debit->debits_pending += amount;
        credit->credits_pending += amount;
    } else {
        debit->debits_posted += amount;
        credit->credits_posted += amount;
    }
    sz_transfer_t stored = *t;
    stored.amount = amount;
    stored.timestamp = timestamp;
    model_store_transfer(model, &stored, pending ? PENDING_OPEN : PENDING_NONE);
    model_history(model, debit, true, timestamp);
    model_history(model, credit, false, timestamp);
    return SZ_CREATE_TRANSFER_OK;
}

static uint64_t model_deadline(const sz_transfer_t *record) {
    return record->timestamp + (uint64_t)record->timeout * NS_PER_S;
}

static bool model_waiting(const model_transfer_t *transfer) {
    return transfer->state == PENDING_OPEN && transfer->record.timeout != 0;
}

/* ledger.h: a batch of n needs room for its worst case, n records, n pending timeouts and
 * 2n history rows. */
static sz_batch_status_t model_capacity(const model_t *model, uint32_t kind, uint32_t n) {
    if (kind == OP_CREATE_ACCOUNTS) {
        if (model->account_count + n > model->config.accounts_max) return SZ_BATCH_ACCOUNTS_FULL;
        return SZ_BATCH_APPLIED;
    }
    uint32_t waiting = 0;
    for (uint32_t k = 0; k < model->transfer_count; k++) {
        if (model_waiting(&model->transfers[k])) waiting++;
    }
    if (model->transfer_count + n > model->config.transfers_max) return SZ_BATCH_TRANSFERS_FULL;
    if (waiting + n > model->config.pending_max) return SZ_BATCH_PENDING_FULL;
    if (model->row_count + 2 * n > model->config.history_max) return SZ_BATCH_HISTORY_FULL;
    return SZ_BATCH_APPLIED;
}

/* One create batch, either kind: the chain rules of SEMANTICS.md, codes_out[i] per event. */
static sz_batch_status_t model_create_batch(model_t *model, model_t *chain_copy,
                                            const op_record_t *op, uint32_t *codes_out) {
    uint32_t n = op->event_count;
    SZ_ASSERT(n >= 1 && n <= BATCH_EVENTS_MAX);
    if (op->timestamp <= model->timestamp_last) return SZ_BATCH_TIMESTAMP_INVALID;
    if (op->timestamp > SZ_TIMESTAMP_MAX) return SZ_BATCH_TIMESTAMP_INVALID;
    sz_batch_status_t capacity = model_capacity(model, op->kind, n);
    if (capacity != SZ_BATCH_APPLIED) return capacity;
    bool in_chain = false;
    bool chain_failed = false;
    uint32_t chain_first = 0;
    for (uint32_t i = 0; i < n; i++) {
        bool accounts = op->kind == OP_CREATE_ACCOUNTS;
        uint16_t flags = accounts ? op->accounts[i].flags : op->transfers[i].flags;
        uint64_t event_timestamp =
            accounts ? op->accounts[i].timestamp : op->transfers[i].timestamp;
        bool linked = (flags & 1u) != 0; /* bit 0 is linked for both records */
        if (linked && !in_chain) {
            in_chain = true;
            chain_failed = false;
            chain_first = i;
            model_copy(chain_copy, model);
        }
        uint32_t code;
        if (linked && i == n - 1) {
            code = SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN;
        } else if (chain_failed) {
            code = SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED;
        } else if (event_timestamp != 0) {
            code = SZ_CREATE_TRANSFER_TIMESTAMP_MUST_BE_ZERO;
        } else if (accounts) {
            code = model_create_account(model, &op->accounts[i], op->timestamp + i);
        } else {
            code = model_create_transfer(model, &op->transfers[i], op->timestamp + i);
        }
        codes_out[i] = code;
        if (code != 0 && in_chain && !chain_failed) {
            chain_failed = true;
            model_copy(model, chain_copy);
            for (uint32_t j = chain_first; j < i; j++) {
                SZ_ASSERT(codes_out[j] == 0);
                codes_out[j] = SZ_CREATE_TRANSFER_LINKED_EVENT_FAILED;
            }
        }
        if (in_chain && (!linked || code == SZ_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN)) {
            in_chain = false;
            chain_failed = false;
        }
    }
    model->timestamp_last = op->timestamp + (n - 1);
    model->op_count++;
    return SZ_BATCH_APPLIED;
}

static sz_batch_status_t model_expire(model_t *model, uint64_t timestamp, sz_u128 *ids_out,
                                      uint32_t *count_out) {
    *count_out = 0;
    if (timestamp <= model->timestamp_last) return SZ_BATCH_TIMESTAMP_INVALID;
    if (timestamp > SZ_TIMESTAMP_MAX) return SZ_BATCH_TIMESTAMP_INVALID;
    while (*count_out < SZ_EXPIRE_EVENTS_MAX) {
        /* The waiting transfer with the least (deadline, creation timestamp), if due. */
        model_transfer_t *first = NULL;
        for (uint32_t index = 0; index < model->transfer_count; index++) {
            model_transfer_t *candidate = &model->transfers[index];
            if (!model_waiting(candidate)) continue;
            if (model_deadline(&candidate->record) > timestamp) continue;
            if (first == NULL) {
                first = candidate;
                continue;
            }
            uint64_t deadline = model_deadline(&candidate->record);
            uint64_t first_deadline = model_deadline(&first->record);
            if (deadline < first_deadline ||
                (deadline == first_deadline &&
                 candidate->record.timestamp < first->record.timestamp)) {
                first = candidate;
            }
        }
        if (first == NULL) break;
        first->state = PENDING_EXPIRED;
        sz_account_t *debit = model_account(model, first->record.debit_account_id);
        sz_account_t *credit = model_account(model, first->record.credit_account_id);
        SZ_ASSERT(debit != NULL && credit != NULL);
        debit->debits_pending -= first->record.amount;
        credit->credits_pending -= first->record.amount;
        ids_out[(*count_out)++] = first->record.id;
    }
    model->timestamp_last = timestamp;
    model->op_count++;
    return SZ_BATCH_APPLIED;
}

static uint64_t model_expiry_next(const model_t *model) {
    uint64_t next = UINT64_MAX;
    for (uint32_t index = 0; index < model->transfer_count; index++) {
        const model_transfer_t *transfer = &model->transfers[index];
        if (!model_waiting(transfer)) continue;
        uint64_t deadline = model_deadline(&transfer->record);
        if (deadline < next) next = deadline;
    }
    return next;
}

static bool model_filter_valid(const sz_account_filter_t *f) {
    if (f->account_id == 0 || f->account_id == SZ_U128_MAX) return false;
    if (f->limit == 0) return false;
    if ((f->flags & (SZ_FILTER_DEBITS | SZ_FILTER_CREDITS)) == 0) return false;
    if ((f->flags & ~SZ_FILTER_FLAGS_KNOWN) != 0) return false;
    if (f->timestamp_max != 0 && f->timestamp_min > f->timestamp_max) return false;
    for (size_t index = 0; index < sizeof(f->reserved); index++) {
        if (f->reserved[index] != 0) return false;
    }
    return true;
}

static bool model_filter_timestamp(const sz_account_filter_t *f, uint64_t timestamp) {
    if (f->timestamp_min != 0 && timestamp < f->timestamp_min) return false;
    if (f->timestamp_max != 0 && timestamp > f->timestamp_max) return false;
    return true;
}

static uint32_t model_row_limit(const sz_account_filter_t *f, uint32_t row_count_max) {
    return f->limit < row_count_max ? f->limit : row_count_max;
}

/* Transfers are stored in timestamp order, so a forward or backward walk is the answer. */
static uint32_t model_get_account_transfers(const model_t *model, const sz_account_filter_t *f,
                                            uint32_t row_count_max, sz_transfer_t *rows_out) {
    if (!model_filter_valid(f)) return 0;
    uint32_t limit = model_row_limit(f, row_count_max);
    bool reversed = (f->flags & SZ_FILTER_REVERSED) != 0;
    uint32_t count = 0;
    for (uint32_t step = 0; step < model->transfer_count && count < limit; step++) {
        uint32_t index = reversed ? model->transfer_count - 1 - step : step;
        const sz_transfer_t *t = &model->transfers[index].record;
        bool match = ((f->flags & SZ_FILTER_DEBITS) != 0 && t->debit_account_id == f->account_id) ||
                     ((f->flags & SZ_FILTER_CREDITS) != 0 && t->credit_account_id == f->account_id);
        if (match && model_filter_timestamp(f, t->timestamp)) rows_out[count++] = *t;
    }
    return count;
}

static uint32_t model_get_account_balances(const model_t *model, const sz_account_filter_t *f,
                                           uint32_t row_count_max, sz_account_balance_t *rows_out) {
    if (!model_filter_valid(f)) return 0;
    uint32_t limit = model_row_limit(f, row_count_max);
    bool reversed = (f->flags & SZ_FILTER_REVERSED) != 0;
    uint32_t count = 0;
    for (uint32_t step = 0; step < model->row_count && count < limit; step++) {
        uint32_t index = reversed ? model->row_count - 1 - step : step;
        const model_row_t *row = &model->rows[index];
        if (row->account_id != f->account_id) continue;
        bool side = ((f->flags & SZ_FILTER_DEBITS) != 0 && row->debit_side) ||
                    ((f->flags & SZ_FILTER_CREDITS) != 0 && !row->debit_side);
        if (side && model_filter_timestamp(f, row->balance.timestamp)) {
            rows_out[count++] = row->balance;
        }
    }
    return count;
}

/* ------------------------------------------------------------------------------------ */
/* Running a log against the ledger and the model. */

typedef struct run {
    const op_log_t *log;
    sz_ledger_t *ledger;
    model_t *model;
    model_t *chain_copy;
    bool quiet;
    /* What the live ledger answered, for the replay to match. */
    uint32_t statuses[OPS_MAX];
    sz_digest_t digests[OPS_MAX];
    /* Scratch. */
    sz_u128 ids[TRANSFER_IDS_MAX + 8];
    sz_u128 expired_real[SZ_EXPIRE_EVENTS_MAX];
    sz_u128 expired_model[SZ_EXPIRE_EVENTS_MAX];
    sz_account_t accounts_real[ACCOUNT_IDS_MAX + 8];
    sz_transfer_t transfers_real[TRANSFER_IDS_MAX + 8];
    sz_transfer_t transfers_model[QUERY_ROWS_MAX];
    sz_transfer_t transfers_query[QUERY_ROWS_MAX];
    sz_account_balance_t balances_model[QUERY_ROWS_MAX];
    sz_account_balance_t balances_query[QUERY_ROWS_MAX];
} run_t;

/* Where the child is, for its crash handlers (async-signal-safe: a preformatted line). */
static char position_text[160];
static size_t position_size;

static void position_set(uint64_t seed, uint32_t op_index, const char *phase) {
    int written = snprintf(position_text, sizeof(position_text),
                           "test_random: crashed at seed=%" PRIu64 " op=%" PRIu32 " (%s)\n", seed,
                           op_index, phase);
    position_size = written > 0 ? (size_t)written : 0;
    if (position_size >= sizeof(position_text)) position_size = sizeof(position_text) - 1;
}

static void position_print(void) {
    if (position_size > 0) {
        ssize_t ignored = write(STDERR_FILENO, position_text, position_size);
        (void)ignored;
    }
}

static void position_on_signal(int signal_number) {
    position_print();
    signal(signal_number, SIG_DFL);
    raise(signal_number);
}

__attribute__((format(printf, 3, 4))) static void report(const run_t *run, uint32_t op_index,
                                                         const char *format, ...) {
    if (run->quiet) return;
    fprintf(stderr, "test_random: MISMATCH seed=%" PRIu64 " op=%" PRIu32 " (%s): ", run->log->seed,
            op_index, op_kind_name(run->log->ops[op_index].kind));
    va_list arguments;
    va_start(arguments, format);
    vfprintf(stderr, format, arguments);
    va_end(arguments);
    fprintf(stderr, "\n");
}

static sz_ledger_t *ledger_open(const sz_ledger_config_t *log_config, uint64_t hash_seed) {
    sz_ledger_config_t config = *log_config;
    config.hash_seed = hash_seed;
    sz_ledger_t *ledger = NULL;
    int error = sz_ledger_init(&config, &ledger);
    SZ_ASSERT(error == 0);
    SZ_ASSERT(ledger != NULL);
    return ledger;
}

static bool digest_equal(sz_digest_t a, sz_digest_t b) {
    return a.low == b.low && a.high == b.high;
}

static bool check_results(run_t *run, uint32_t op_index, const uint32_t *model_codes,
                          const sz_create_result_t *results, uint32_t result_count) {
    const op_record_t *op = &run->log->ops[op_index];
    uint32_t real_codes[BATCH_EVENTS_MAX] = {0};
    if (result_count > op->event_count) {
        report(run, op_index, "%" PRIu32 " results for %" PRIu32 " events", result_count,
               op->event_count);
        return false;
    }
    for (uint32_t k = 0; k < result_count; k++) {
        bool bad = results[k].index >= op->event_count || results[k].result == 0 ||
                   (k > 0 && results[k].index <= results[k - 1].index);
        if (bad) {
            report(run, op_index,
                   "malformed result list at %" PRIu32 ": {index=%" PRIu32 " result=%" PRIu32
                   "} (must be ascending, in range, not ok)",
                   k, results[k].index, results[k].result);
            return false;
        }
        real_codes[results[k].index] = results[k].result;
    }
    for (uint32_t i = 0; i < op->event_count; i++) {
        if (real_codes[i] == model_codes[i]) continue;
        report(run, op_index,
               "event %" PRIu32 ": ledger says %s (%" PRIu32 "), model says %s (%" PRIu32 ")", i,
               result_name(op->kind, real_codes[i]), real_codes[i],
               result_name(op->kind, model_codes[i]), model_codes[i]);
        if (!run->quiet) {
            if (op->kind == OP_CREATE_ACCOUNTS) print_account("  event: ", &op->accounts[i]);
            if (op->kind == OP_CREATE_TRANSFERS) print_transfer("  event: ", &op->transfers[i]);
        }
        return false;
    }
    return true;
}

/* Applies one op to the ledger (and the model, if given); compares what both answer. */
static bool apply_op(run_t *run, sz_ledger_t *ledger, model_t *model, uint32_t op_index,
                     uint32_t *status_out) {
    const op_record_t *op = &run->log->ops[op_index];
    sz_create_result_t results[BATCH_EVENTS_MAX];
    uint32_t model_codes[BATCH_EVENTS_MAX] = {0};
    uint32_t result_count = UINT32_MAX;
    sz_batch_status_t status;
    sz_batch_status_t model_status = SZ_BATCH_APPLIED;
    bool ok = true;
    if (op->kind == OP_EXPIRE_PENDING) {
        uint32_t expired_count = UINT32_MAX;
        uint32_t model_count = 0;
        status = sz_ledger_expire_pending(ledger, op->timestamp, run->expired_real, &expired_count);
        if (model == NULL) {
            *status_out = status;
            return true;
        }
        model_status = model_expire(model, op->timestamp, run->expired_model, &model_count);
        if (status != model_status) {
            report(run, op_index, "status %s, model says %s", sz_batch_status_name(status),
                   sz_batch_status_name(model_status));
            return false;
        }
        if (coverage != NULL && status == SZ_BATCH_APPLIED) coverage->expired_count += model_count;
        if (status == SZ_BATCH_APPLIED && expired_count != model_count) {
            report(run, op_index, "expired %" PRIu32 " transfers, model expired %" PRIu32,
                   expired_count, model_count);
            ok = false;
        }
        for (uint32_t k = 0; ok && status == SZ_BATCH_APPLIED && k < model_count; k++) {
            if (run->expired_real[k] != run->expired_model[k]) {
                report(run, op_index, "expired[%" PRIu32 "] is %s, model says %s", k,
                       u128_text(run->expired_real[k]), u128_text(run->expired_model[k]));
                ok = false;
            }
        }
        *status_out = status;
        return ok;
    }
    /* The leader asks sz_ledger_capacity_check() before journaling: it must agree. */
    if (model != NULL) {
        sz_operation_t operation = op->kind == OP_CREATE_ACCOUNTS ? SZ_OPERATION_CREATE_ACCOUNTS
                                                                  : SZ_OPERATION_CREATE_TRANSFERS;
        sz_batch_status_t capacity = sz_ledger_capacity_check(ledger, operation, op->event_count);
        sz_batch_status_t model_capacity_status = model_capacity(model, op->kind, op->event_count);
        if (capacity != model_capacity_status) {
            report(run, op_index, "capacity_check %s, model says %s",
                   sz_batch_status_name(capacity), sz_batch_status_name(model_capacity_status));
            return false;
        }
    }
    /* The ledger must not touch its input: compare a copy afterwards. */
    static sz_account_t accounts_copy[BATCH_EVENTS_MAX];
    static sz_transfer_t transfers_copy[BATCH_EVENTS_MAX];
    memcpy(accounts_copy, op->accounts, sizeof(accounts_copy));
    memcpy(transfers_copy, op->transfers, sizeof(transfers_copy));
    if (op->kind == OP_CREATE_ACCOUNTS) {
        status = sz_ledger_create_accounts(ledger, op->accounts, op->event_count, op->timestamp,
                                           results, &result_count);
    } else {
        status = sz_ledger_create_transfers(ledger, op->transfers, op->event_count, op->timestamp,
                                            results, &result_count);
    }
    *status_out = status;
    if (memcmp(accounts_copy, op->accounts, sizeof(accounts_copy)) != 0 ||
        memcmp(transfers_copy, op->transfers, sizeof(transfers_copy)) != 0) {
        report(run, op_index, "the ledger modified its input events");
        return false;
    }
    if (model == NULL) return true;
    model_status = model_create_batch(model, run->chain_copy, op, model_codes);
    if (status != model_status) {
        report(run, op_index, "status %s, model says %s", sz_batch_status_name(status),
               sz_batch_status_name(model_status));
        return false;
    }
    if (status != SZ_BATCH_APPLIED) return true;
    if (coverage != NULL) {
        for (uint32_t i = 0; i < op->event_count; i++) {
            if (op->kind == OP_CREATE_ACCOUNTS) {
                coverage->account_codes[model_codes[i]]++;
            } else {
                coverage->transfer_codes[model_codes[i]]++;
            }
        }
    }
    return check_results(run, op_index, model_codes, results, result_count);
}

static bool check_queries(run_t *run, uint32_t op_index) {
    const op_record_t *op = &run->log->ops[op_index];
    for (uint32_t q = 0; q < op->query_count; q++) {
        const query_t *query = &op->queries[q];
        uint32_t real_count;
        uint32_t model_count;
        size_t row_size;
        const void *real_rows;
        const void *model_rows;
        if (query->kind == QUERY_TRANSFERS) {
            real_count = sz_ledger_get_account_transfers(
                run->ledger, &query->filter, query->row_count_max, run->transfers_query);
            model_count = model_get_account_transfers(run->model, &query->filter,
                                                      query->row_count_max, run->transfers_model);
            row_size = sizeof(sz_transfer_t);
            real_rows = run->transfers_query;
            model_rows = run->transfers_model;
        } else {
            real_count = sz_ledger_get_account_balances(run->ledger, &query->filter,
                                                        query->row_count_max, run->balances_query);
            model_count = model_get_account_balances(run->model, &query->filter,
                                                     query->row_count_max, run->balances_model);
            row_size = sizeof(sz_account_balance_t);
            real_rows = run->balances_query;
            model_rows = run->balances_model;
        }
        uint32_t first_difference = UINT32_MAX;
        for (uint32_t k = 0; k < real_count && k < model_count; k++) {
            if (memcmp((const char *)real_rows + k * row_size,
                       (const char *)model_rows + k * row_size, row_size) != 0) {
                first_difference = k;
                break;
            }
        }
        if (coverage != NULL) coverage->query_rows += model_count;
        if (real_count == model_count && first_difference == UINT32_MAX) continue;
        const char *name =
            query->kind == QUERY_TRANSFERS ? "get_account_transfers" : "get_account_balances";
        report(run, op_index,
               "%s gave %" PRIu32 " rows, model %" PRIu32 " (first differing row %" PRIu32 ")",
               name, real_count, model_count, first_difference);
        if (!run->quiet) {
            print_filter("  filter: ", &query->filter);
            fprintf(stderr, " row_count_max=%" PRIu32 "\n", query->row_count_max);
            uint32_t shown = 0;
            for (uint32_t k = 0; k < real_count && shown < 8; k++, shown++) {
                if (query->kind == QUERY_TRANSFERS) {
                    print_transfer("  ledger: ", &run->transfers_query[k]);
                } else {
                    print_balance("  ledger: ", &run->balances_query[k]);
                }
            }
            shown = 0;
            for (uint32_t k = 0; k < model_count && shown < 8; k++, shown++) {
                if (query->kind == QUERY_TRANSFERS) {
                    print_transfer("  model:  ", &run->transfers_model[k]);
                } else {
                    print_balance("  model:  ", &run->balances_model[k]);
                }
            }
        }
        return false;
    }
    return true;
}

static bool check_records(run_t *run, uint32_t op_index) {
    const op_log_t *log = run->log;
    model_t *model = run->model;
    /* Every model account, in model order, must come back byte for byte. */
    for (uint32_t k = 0; k < model->account_count; k++) run->ids[k] = model->accounts[k].id;
    uint32_t count =
        sz_ledger_lookup_accounts(run->ledger, run->ids, model->account_count, run->accounts_real);
    for (uint32_t k = 0; k < model->account_count; k++) {
        if (k < count &&
            memcmp(&run->accounts_real[k], &model->accounts[k], sizeof(sz_account_t)) == 0) {
            continue;
        }
        report(run, op_index, "account %s differs (lookup returned %" PRIu32 " of %" PRIu32 ")",
               u128_text(model->accounts[k].id), count, model->account_count);
        if (!run->quiet) {
            if (k < count) print_account("  ledger: ", &run->accounts_real[k]);
            print_account("  model:  ", &model->accounts[k]);
        }
        return false;
    }
    /* And no account beyond the model's: look up every id the workload could use. */
    uint32_t id_count = 0;
    for (uint32_t k = 0; k < log->account_id_count; k++) run->ids[id_count++] = log->account_ids[k];
    run->ids[id_count++] = 0;
    run->ids[id_count++] = SZ_U128_MAX;
    run->ids[id_count++] = UNKNOWN_ACCOUNT_ID;
    count = sz_ledger_lookup_accounts(run->ledger, run->ids, id_count, run->accounts_real);
    if (count != model->account_count) {
        report(run, op_index, "lookup of every account id found %" PRIu32 ", model has %" PRIu32,
               count, model->account_count);
        return false;
    }
    /* The same for transfers. */
    for (uint32_t k = 0; k < model->transfer_count; k++) {
        run->ids[k] = model->transfers[k].record.id;
    }
    count = sz_ledger_lookup_transfers(run->ledger, run->ids, model->transfer_count,
                                       run->transfers_real);
    for (uint32_t k = 0; k < model->transfer_count; k++) {
        const sz_transfer_t *expected = &model->transfers[k].record;
        if (k < count && memcmp(&run->transfers_real[k], expected, sizeof(sz_transfer_t)) == 0) {
            continue;
        }
        report(run, op_index, "transfer %s differs (lookup returned %" PRIu32 " of %" PRIu32 ")",
               u128_text(expected->id), count, model->transfer_count);
        if (!run->quiet) {
            if (k < count) print_transfer("  ledger: ", &run->transfers_real[k]);
            print_transfer("  model:  ", expected);
        }
        return false;
    }
    id_count = 0;
    for (uint32_t k = 0; k < log->transfer_id_count; k++) {
        run->ids[id_count++] = log->transfer_ids[k];
    }
    run->ids[id_count++] = 0;
    run->ids[id_count++] = SZ_U128_MAX;
    count = sz_ledger_lookup_transfers(run->ledger, run->ids, id_count, run->transfers_real);
    if (count != model->transfer_count) {
        report(run, op_index, "lookup of every transfer id found %" PRIu32 ", model has %" PRIu32,
               count, model->transfer_count);
        return false;
    }
    return true;
}

static bool check_state(run_t *run, uint32_t op_index) {
    model_t *model = run->model;
    sz_ledger_stats_t stats;
    sz_ledger_stats(run->ledger, &stats);
    if (stats.account_count != model->account_count ||
        stats.transfer_count != model->transfer_count || stats.history_count != model->row_count ||
        stats.op_count != model->op_count || stats.timestamp_last != model->timestamp_last) {
        report(run, op_index,
               "stats accounts=%" PRIu64 " transfers=%" PRIu64 " history=%" PRIu64 " ops=%" PRIu64
               " timestamp_last=%" PRIu64 ", model %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu64
               " %" PRIu64,
               stats.account_count, stats.transfer_count, stats.history_count, stats.op_count,
               stats.timestamp_last, model->account_count, model->transfer_count, model->row_count,
               model->op_count, model->timestamp_last);
        return false;
    }
    /* The expiry queue may keep stale entries, but never fewer than the waiting transfers
     * and never more than its capacity. */
    uint32_t waiting = 0;
    for (uint32_t k = 0; k < model->transfer_count; k++) {
        if (model_waiting(&model->transfers[k])) waiting++;
    }
    if (stats.pending_count < waiting || stats.pending_count > model->config.pending_max) {
        report(run, op_index,
               "stats pending=%" PRIu64 ", model has %" PRIu32 " waiting (max %" PRIu32 ")",
               stats.pending_count, waiting, model->config.pending_max);
        return false;
    }
    if (!check_records(run, op_index)) return false;
    const uint64_t clocks[] = {0, model->timestamp_last, model->timestamp_last + 1,
                               model->timestamp_last + NS_PER_S, UINT64_MAX};
    for (uint32_t k = 0; k < sizeof(clocks) / sizeof(clocks[0]); k++) {
        uint64_t expected =
            clocks[k] > model->timestamp_last ? clocks[k] : model->timestamp_last + 1;
        uint64_t next = sz_ledger_timestamp_next(run->ledger, clocks[k]);
        if (next != expected) {
            report(run, op_index, "timestamp_next(%" PRIu64 ") %" PRIu64 ", expected %" PRIu64,
                   clocks[k], next, expected);
            return false;
        }
    }
    uint64_t expiry_next = sz_ledger_expiry_next(run->ledger);
    if (expiry_next != model_expiry_next(model)) {
        report(run, op_index, "expiry_next %" PRIu64 ", model %" PRIu64, expiry_next,
               model_expiry_next(model));
        return false;
    }
    if (!check_queries(run, op_index)) return false;
    char message[256] = "";
    if (sz_ledger_verify(run->ledger, message, sizeof(message)) != 0) {
        report(run, op_index, "sz_ledger_verify failed: %s", message);
        return false;
    }
    return true;
}

static void run_open(run_t *run, const op_log_t *log, bool quiet) {
    run->log = log;
    run->quiet = quiet;
    run->ledger = ledger_open(&log->config, log->seed);
    run->model = calloc(1, sizeof(model_t));
    SZ_ASSERT(run->model != NULL);
    run->model->config = log->config;
    run->chain_copy = calloc(1, sizeof(model_t));
    SZ_ASSERT(run->model != NULL);
    SZ_ASSERT(run->chain_copy != NULL);
}

static void run_close(run_t *run) {
    sz_ledger_deinit(run->ledger);
    free(run->model);
    free(run->chain_copy);
}

static bool run_op(run_t *run, uint32_t op_index) {
    position_set(run->log->seed, op_index, "live");
    sz_digest_t before = sz_ledger_digest(run->ledger);
    uint32_t status;
    if (!apply_op(run, run->ledger, run->model, op_index, &status)) return false;
    sz_digest_t after = sz_ledger_digest(run->ledger);
    run->statuses[op_index] = status;
    run->digests[op_index] = after;
    if (coverage != NULL) {
        coverage->op_count++;
        if (status != SZ_BATCH_APPLIED) coverage->refused_count++;
    }
    if (status == SZ_BATCH_APPLIED && digest_equal(before, after)) {
        report(run, op_index, "an applied batch left the digest unchanged");
        return false;
    }
    if (status != SZ_BATCH_APPLIED && !digest_equal(before, after)) {
        report(run, op_index, "a refused batch changed the digest");
        return false;
    }
    return check_state(run, op_index);
}

/* The same ops into a fresh ledger (other hash seed and prefetch distance): the same
 * statuses, the same digest after every op, the same records at the end. */
static bool run_replay(run_t *run) {
    const op_log_t *log = run->log;
    sz_ledger_t *replay = ledger_open(&log->config, log->replay_hash_seed);
    sz_ledger_prefetch_set(replay, log->replay_prefetch_distance);
    bool ok = true;
    for (uint32_t op_index = 0; ok && op_index < log->op_count; op_index++) {
        position_set(log->seed, op_index, "replay");
        uint32_t status;
        ok = apply_op(run, replay, NULL, op_index, &status);
        if (ok && status != run->statuses[op_index]) {
            report(run, op_index, "replay status %s, live %s", sz_batch_status_name(status),
                   sz_batch_status_name(run->statuses[op_index]));
            ok = false;
        }
        sz_digest_t digest = sz_ledger_digest(replay);
        if (ok && !digest_equal(digest, run->digests[op_index])) {
            report(run, op_index,
                   "replay digest %016" PRIx64 "%016" PRIx64 " differs from live %016" PRIx64
                   "%016" PRIx64,
                   digest.high, digest.low, run->digests[op_index].high,
                   run->digests[op_index].low);
            ok = false;
        }
    }
    if (ok && log->op_count > 0) {
        uint32_t last = log->op_count - 1;
        model_t *model = run->model;
        for (uint32_t k = 0; k < model->transfer_count; k++) {
            run->ids[k] = model->transfers[k].record.id;
        }
        uint32_t count = sz_ledger_lookup_transfers(replay, run->ids, model->transfer_count,
                                                    run->transfers_real);
        if (count != model->transfer_count) {
            report(run, last, "replay has %" PRIu32 " of %" PRIu32 " transfers", count,
                   model->transfer_count);
            ok = false;
        }
        for (uint32_t k = 0; ok && k < count; k++) {
            if (memcmp(&run->transfers_real[k], &model->transfers[k].record,
                       sizeof(sz_transfer_t)) != 0) {
                report(run, last, "replay transfer %s differs", u128_text(run->ids[k]));
                ok = false;
            }
        }
        for (uint32_t k = 0; k < model->account_count; k++) run->ids[k] = model->accounts[k].id;
        count =
            sz_ledger_lookup_accounts(replay, run->ids, model->account_count, run->accounts_real);
        if (ok && (count != model->account_count || memcmp(run->accounts_real, model->accounts,
                                                           count * sizeof(sz_account_t)) != 0)) {
            report(run, last, "replay accounts differ");
            ok = false;
        }
        char message[256] = "";
        if (ok && sz_ledger_verify(replay, message, sizeof(message)) != 0) {
            report(run, last, "replay sz_ledger_verify failed: %s", message);
            ok = false;
        }
    }
    sz_ledger_deinit(replay);
    return ok;
}

/* Replays a whole log (no generator): false on the first mismatch. */
static bool log_check(const op_log_t *log, bool quiet) {
    run_t *run = calloc(1, sizeof(run_t));
    SZ_ASSERT(run != NULL);
    run_open(run, log, quiet);
    bool ok = true;
    for (uint32_t op_index = 0; ok && op_index < log->op_count; op_index++) {
        ok = run_op(run, op_index);
    }
    if (ok) ok = run_replay(run);
    run_close(run);
    free(run);
    return ok;
}

/* ------------------------------------------------------------------------------------ */
/* The workload generator. It reads the model (to aim events at real accounts and pending
 * transfers) but never decides a result: that is the model's job. */

typedef struct workload {
    rng_t rng;
    uint32_t op_count;
    uint32_t batch_events_max;
    uint32_t ledger_count;
    uint32_t invalid_percent;
    uint32_t link_percent;
    uint32_t huge_percent;
    uint32_t transfer_id_fresh; /* transfer_ids below this index have been handed out */
    uint64_t timestamp_base;
    bool timestamp_high;       /* near 2^64: timeouts can overflow */
    sz_u128 target_pending_id; /* a pending transfer whose deadline this batch straddles */
    uint32_t sent_count;
    sz_transfer_t sent[EVENTS_SENT_MAX];
    uint32_t pending_id_count;
    sz_u128 pending_ids[EVENTS_SENT_MAX];
} workload_t;

static void id_table_fill(rng_t *rng, sz_u128 *ids, uint32_t count) {
    uint32_t style = (uint32_t)rng_below(rng, 3);
    for (uint32_t k = 0; k < count; k++) {
        if (style == 0 || (style == 2 && k % 2 == 0)) {
            ids[k] = k + 1;
        } else if (style == 2 && k % 4 == 1) {
            ids[k] = ((sz_u128)1 << 127) + k; /* high bit set, low bits small */
        } else {
            ids[k] = rng_id(rng);
        }
    }
}

static void workload_init(workload_t *w, op_log_t *log, uint64_t seed) {
    static const uint32_t account_id_counts[] = {3, 6, 12, 24};
    static const uint32_t transfer_id_counts[] = {24, 96, 400, 1500};
    static const uint32_t batch_events_maxes[] = {4, 16, 48, 16, 160};
    static const uint32_t invalid_percents[] = {2, 8, 20};
    static const uint32_t link_percents[] = {0, 10, 30};
    static const uint32_t huge_percents[] = {0, 3, 12};
    memset(w, 0, sizeof(*w));
    memset(log, 0, sizeof(*log));
    w->rng.state = seed * 0x2545f4914f6cdd1dull + 0x1234567;
    rng_t *rng = &w->rng;
    log->seed = seed;
    log->account_id_count = account_id_counts[rng_below(rng, 4)];
    log->transfer_id_count = transfer_id_counts[rng_below(rng, 4)];
    SZ_ASSERT(log->account_id_count <= ACCOUNT_IDS_MAX);
    SZ_ASSERT(log->transfer_id_count <= TRANSFER_IDS_MAX);
    id_table_fill(rng, log->account_ids, log->account_id_count);
    id_table_fill(rng, log->transfer_ids, log->transfer_id_count);
    log->replay_hash_seed = rng_next(rng);
    log->replay_prefetch_distance = (uint32_t)rng_below(rng, SZ_LEDGER_PREFETCH_DISTANCE_MAX + 1);
    w->op_count = rng_percent(rng, 80) ? 16 + (uint32_t)rng_below(rng, 24)
                                       : 48 + (uint32_t)rng_below(rng, 48);
    SZ_ASSERT(w->op_count <= OPS_MAX);
    w->batch_events_max = batch_events_maxes[rng_below(rng, 5)];
    if (w->batch_events_max > 48) w->op_count = 16 + (uint32_t)rng_below(rng, 16);
    /* Mostly room for everything; sometimes tight, so that batches are refused as full and
     * the ledger has to make room in its expiry queue. */
    log->config.accounts_max = 64;
    log->config.transfers_max = 2 * TRANSFER_IDS_MAX;
    log->config.pending_max = 2 * TRANSFER_IDS_MAX;
    log->config.history_max = 4 * TRANSFER_IDS_MAX;
    if (rng_percent(rng, 25)) {
        log->config.accounts_max = log->account_id_count + (uint32_t)rng_below(rng, 3);
        log->config.transfers_max = 20 + (uint32_t)rng_below(rng, 300);
        log->config.pending_max = 1 + (uint32_t)rng_below(rng, 60);
        log->config.history_max = 10 + (uint32_t)rng_below(rng, 400);
    }
    w->ledger_count = rng_percent(rng, 60) ? 1 : rng_percent(rng, 75) ? 2 : 3;
    w->invalid_percent = invalid_percents[rng_below(rng, 3)];
    w->link_percent = link_percents[rng_below(rng, 3)];
    w->huge_percent = huge_percents[rng_below(rng, 3)];
    w->timestamp_high = rng_percent(rng, 15);
    if (w->timestamp_high) {
        /* 4e9 s below 2^64: timeouts above about 4e9 s overflow. */
        w->timestamp_base =
            UINT64_MAX - 4000000000ull * NS_PER_S + rng_below(rng, 1000000000000ull);
    } else {
        w->timestamp_base = 1700000000000000000ull + rng_below(rng, 1000000000000000ull);
    }
}

static sz_u128 pick_account_id(workload_t *w, const op_log_t *log) {
    return log->account_ids[rng_below(&w->rng, log->account_id_count)];
}

/* Mostly ids not handed out yet (so the ledger grows), else any (collisions). */
static sz_u128 pick_transfer_id(workload_t *w, const op_log_t *log) {
    if (w->transfer_id_fresh < log->transfer_id_count && rng_percent(&w->rng, 70)) {
        return log->transfer_ids[w->transfer_id_fresh++];
    }
    return log->transfer_ids[rng_below(&w->rng, log->transfer_id_count)];
}

static sz_u128 gen_amount(workload_t *w) {
    rng_t *rng = &w->rng;
    if (rng_percent(rng, w->huge_percent)) {
        switch (rng_below(rng, 4)) {
        case 0: return SZ_U128_MAX - rng_below(rng, 1000);
        case 1: return ((sz_u128)1 << 127) + rng_below(rng, 1000);
        case 2: return ((sz_u128)1 << 64) - rng_below(rng, 1000);
        default: return rng_u128(rng);
        }
    }
    if (rng_percent(rng, 2)) return 0;
    if (rng_percent(rng, 5)) return 1;
    return 1 + rng_below(rng, 1000);
}

static uint32_t gen_timeout(workload_t *w, uint64_t timestamp) {
    rng_t *rng = &w->rng;
    uint32_t r = (uint32_t)rng_below(rng, 100);
    if (r < 35) return 0;
    if (r < 85) return 1 + (uint32_t)rng_below(rng, 3);
    if (r < 93) return 4 + (uint32_t)rng_below(rng, 5);
    if (w->timestamp_high && r < 97) {
        /* The last timeout that fits, or one past it. */
        uint64_t fits = (UINT64_MAX - timestamp) / NS_PER_S;
        if (fits < UINT32_MAX) return (uint32_t)fits + (uint32_t)rng_below(rng, 2);
    }
    return UINT32_MAX - (uint32_t)rng_below(rng, 1000000000u);
}

/* Accounts: new ones, retries (same or one field different) and invalid ones. */
static sz_account_t gen_account(workload_t *w, model_t *model, const op_log_t *log,
                                uint32_t invalid_percent) {
    rng_t *rng = &w->rng;
    sz_account_t a;
    memset(&a, 0, sizeof(a));
    a.id = pick_account_id(w, log);
    const sz_account_t *existing = model_account(model, a.id);
    if (existing != NULL && rng_percent(rng, 60)) {
        a.flags = existing->flags & (uint16_t)~SZ_ACCOUNT_LINKED;
        a.user_data_128 = existing->user_data_128;
        a.user_data_64 = existing->user_data_64;
        a.user_data_32 = existing->user_data_32;
        a.ledger = existing->ledger;
        a.code = existing->code;
        /* Sometimes several fields differ, so the order of the exists checks shows. */
        uint32_t change_count = rng_percent(rng, 40) ? 1 + (uint32_t)rng_below(rng, 3) : 0;
        for (uint32_t change = 0; change < change_count; change++) {
            switch (rng_below(rng, 6)) {
            case 0: a.flags ^= SZ_ACCOUNT_HISTORY; break;
            case 1: a.user_data_128 += 1; break;
            case 2: a.user_data_64 += 1; break;
            case 3: a.user_data_32 += 1; break;
            case 4: a.ledger += 1; break;
            default: a.code += 1; break;
            }
        }
    } else {
        a.ledger = 1 + (uint32_t)rng_below(rng, w->ledger_count);
        a.code = (uint16_t)(1 + rng_below(rng, 3));
        if (rng_percent(rng, 35)) a.flags |= SZ_ACCOUNT_HISTORY;
        if (rng_percent(rng, 20)) a.flags |= SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS;
        if (rng_percent(rng, 20)) a.flags |= SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS;
        a.user_data_128 = rng_below(rng, 3);
        a.user_data_64 = rng_below(rng, 3);
        a.user_data_32 = (uint32_t)rng_below(rng, 3);
    }
    /* One invalid field, sometimes two, so the order of the checks shows. */
    uint32_t invalid_count = rng_percent(rng, invalid_percent) ? (rng_percent(rng, 30) ? 2 : 1) : 0;
    for (uint32_t invalid = 0; invalid < invalid_count; invalid++) {
        switch (rng_below(rng, 12)) {
        case 0: a.timestamp = 1 + rng_below(rng, 1000); break;
        case 1: a.reserved = 1 + (uint32_t)rng_below(rng, 1000); break;
        case 2: a.flags |= (uint16_t)(1u << (4 + rng_below(rng, 12))); break;
        case 3: a.id = 0; break;
        case 4: a.id = SZ_U128_MAX; break;
        case 5:
            a.flags |= SZ_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS |
                       SZ_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS;
            break;
        case 6: a.debits_pending = 1 + rng_below(rng, 1000); break;
        case 7: a.debits_posted = 1 + rng_below(rng, 1000); break;
        case 8: a.credits_pending = 1 + rng_below(rng, 1000); break;
        case 9: a.credits_posted = 1 + rng_below(rng, 1000); break;
        case 10: a.ledger = 0; break;
        default: a.code = 0; break;
        }
    }
    return a;
}

static void gen_transfer_new(workload_t *w, model_t *model, const op_log_t *log, sz_transfer_t *t,
                             uint64_t timestamp) {
    rng_t *rng = &w->rng;
    t->id = pick_transfer_id(w, log);
    t->debit_account_id = pick_account_id(w, log);
    t->credit_account_id = pick_account_id(w, log);
    for (uint32_t attempt = 0; attempt < 3 && t->credit_account_id == t->debit_account_id;
         attempt++) {
        t->credit_account_id = pick_account_id(w, log);
    }
    const sz_account_t *debit = model_account(model, t->debit_account_id);
    if (debit != NULL && rng_percent(rng, 95)) {
        t->ledger = debit->ledger;
    } else {
        t->ledger = 1 + (uint32_t)rng_below(rng, w->ledger_count);
    }
    t->code = (uint16_t)(1 + rng_below(rng, 3));
    if (rng_percent(rng, 35)) t->flags |= SZ_TRANSFER_PENDING;
    if (rng_percent(rng, 10)) t->flags |= SZ_TRANSFER_BALANCING_DEBIT;
    if (rng_percent(rng, 10)) t->flags |= SZ_TRANSFER_BALANCING_CREDIT;
    t->amount = gen_amount(w);
    if ((t->flags & (SZ_TRANSFER_BALANCING_DEBIT | SZ_TRANSFER_BALANCING_CREDIT)) != 0 &&
        rng_percent(rng, 40)) {
        t->amount = 0;
    }
    if ((t->flags & SZ_TRANSFER_PENDING) != 0) {
        t->timeout = gen_timeout(w, timestamp);
        SZ_ASSERT(w->pending_id_count < EVENTS_SENT_MAX);
        w->pending_ids[w->pending_id_count++] = t->id;
    }
    t->user_data_128 = rng_below(rng, 3);
    t->user_data_64 = rng_below(rng, 3);
    t->user_data_32 = (uint32_t)rng_below(rng, 3);
}

static void gen_transfer_post_or_void(workload_t *w, model_t *model, const op_log_t *log,
                                      sz_transfer_t *t) {
    rng_t *rng = &w->rng;
    sz_u128 pending_id = w->pending_ids[rng_below(rng, w->pending_id_count)];
    if (w->target_pending_id != 0 && rng_percent(rng, 50)) pending_id = w->target_pending_id;
    if (rng_percent(rng, 5)) pending_id = log->transfer_ids[rng_below(rng, log->transfer_id_count)];
    const model_transfer_t *pending = model_transfer(model, pending_id);
    const sz_transfer_t *p = pending != NULL ? &pending->record : NULL;
    t->id = pick_transfer_id(w, log);
    t->pending_id = pending_id;
    t->flags = rng_percent(rng, 60) ? SZ_TRANSFER_POST_PENDING : SZ_TRANSFER_VOID_PENDING;
    uint32_t r = (uint32_t)rng_below(rng, 100);
    if (p == NULL) {
        t->amount = r < 50 ? 0 : gen_amount(w);
    } else if (r < 40) {
        t->amount = 0;
    } else if (r < 60) {
        t->amount = p->amount;
    } else if (r < 85 && p->amount > 1) {
        t->amount = 1 + rng_below_u128(rng, p->amount - 1);
    } else if (r < 95 && p->amount < SZ_U128_MAX) {
        t->amount = p->amount + 1;
    } else {
        t->amount = gen_amount(w);
    }
    r = (uint32_t)rng_below(rng, 100);
    if (p != NULL && r < 10) t->debit_account_id = p->debit_account_id;
    if (r >= 95) t->debit_account_id = pick_account_id(w, log);
    r = (uint32_t)rng_below(rng, 100);
    if (p != NULL && r < 10) t->credit_account_id = p->credit_account_id;
    if (r >= 95) t->credit_account_id = pick_account_id(w, log);
    r = (uint32_t)rng_below(rng, 100);
    if (p != NULL && r < 10) t->ledger = p->ledger;
    if (r >= 95) t->ledger = 1 + (uint32_t)rng_below(rng, w->ledger_count);
    r = (uint32_t)rng_below(rng, 100);
    if (p != NULL && r < 10) t->code = p->code;
    if (r >= 95) t->code = (uint16_t)(1 + rng_below(rng, 3));
    if (rng_percent(rng, 40)) t->user_data_128 = rng_below(rng, 4);
    if (rng_percent(rng, 40)) t->user_data_64 = rng_below(rng, 4);
    if (rng_percent(rng, 40)) t->user_data_32 = (uint32_t)rng_below(rng, 4);
}

static void gen_transfer_change(workload_t *w, model_t *model, const op_log_t *log,
                                sz_transfer_t *t) {
    rng_t *rng = &w->rng;
    switch (rng_below(rng, 13)) {
    case 0: {
        static const uint16_t toggles[] = {SZ_TRANSFER_PENDING, SZ_TRANSFER_BALANCING_DEBIT,
                                           SZ_TRANSFER_BALANCING_CREDIT, SZ_TRANSFER_POST_PENDING,
                                           SZ_TRANSFER_VOID_PENDING};
        t->flags ^= toggles[rng_below(rng, 5)];
        break;
    }
    case 1: t->debit_account_id = pick_account_id(w, log); break;
    case 2: t->credit_account_id = pick_account_id(w, log); break;
    case 3: t->amount += 1; break;
    case 4: {
        /* No limit, or around what was booked (a balancing limit is compared with it). */
        const model_transfer_t *existing = model_transfer(model, t->id);
        t->amount = 0;
        if (existing != NULL && rng_percent(rng, 70)) {
            t->amount = existing->record.amount - rng_below(rng, 2);
        }
        break;
    }
    case 5:
        if (w->pending_id_count > 0) {
            t->pending_id = w->pending_ids[rng_below(rng, w->pending_id_count)];
        }
        break;
    case 6: {
        /* Another pending transfer that the same amount could post or void: reaches
         * exists_with_different_pending_id. */
        const model_transfer_t *existing = model_transfer(model, t->id);
        if (existing == NULL) break;
        for (uint32_t k = 0; k < model->transfer_count; k++) {
            const sz_transfer_t *other = &model->transfers[k].record;
            if ((other->flags & SZ_TRANSFER_PENDING) == 0 || other->id == t->pending_id) continue;
            if (other->amount != existing->record.amount) continue;
            t->pending_id = other->id;
            t->amount = existing->record.amount;
            break;
        }
        break;
    }
    case 7: t->user_data_128 ^= 1; break;
    case 8: t->user_data_64 ^= 1; break;
    case 9: t->user_data_32 ^= 1; break;
    case 10: t->timeout += 1; break;
    case 11: t->code += 1; break;
    default: t->ledger += 1; break;
    }
}

/* A copy of an event sent before, sometimes with one to three fields changed. */
static void gen_transfer_retry(workload_t *w, model_t *model, const op_log_t *log,
                               sz_transfer_t *t) {
    rng_t *rng = &w->rng;
    *t = w->sent[rng_below(rng, w->sent_count)];
    t->flags &= (uint16_t)~SZ_TRANSFER_LINKED;
    uint32_t change_count = rng_percent(rng, 40) ? 1 + (uint32_t)rng_below(rng, 3) : 0;
    for (uint32_t change = 0; change < change_count; change++) {
        gen_transfer_change(w, model, log, t);
    }
}

static void gen_transfer_invalid(workload_t *w, sz_transfer_t *t) {
    rng_t *rng = &w->rng;
    switch (rng_below(rng, 23)) {
    case 0: t->timestamp = 1 + rng_below(rng, 1000); break;
    case 1: t->flags |= (uint16_t)(1u << (6 + rng_below(rng, 10))); break;
    case 2: t->id = 0; break;
    case 3: t->id = SZ_U128_MAX; break;
    case 4: t->flags |= SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING; break;
    case 5:
        t->flags |= SZ_TRANSFER_PENDING;
        if ((t->flags & (SZ_TRANSFER_POST_PENDING | SZ_TRANSFER_VOID_PENDING)) == 0) {
            t->flags |= SZ_TRANSFER_POST_PENDING;
        }
        break;
    case 6: t->flags |= SZ_TRANSFER_BALANCING_DEBIT | SZ_TRANSFER_POST_PENDING; break;
    case 7: t->flags |= SZ_TRANSFER_BALANCING_CREDIT | SZ_TRANSFER_VOID_PENDING; break;
    case 8: t->debit_account_id = 0; break;
    case 9: t->debit_account_id = SZ_U128_MAX; break;
    case 10: t->credit_account_id = 0; break;
    case 11: t->credit_account_id = SZ_U128_MAX; break;
    case 12: t->credit_account_id = t->debit_account_id; break;
    case 13:
        t->pending_id = w->pending_id_count > 0
                            ? w->pending_ids[rng_below(rng, w->pending_id_count)]
                            : 1 + rng_below(rng, 10);
        break;
    case 14: t->pending_id = 0; break;
    case 15: t->pending_id = SZ_U128_MAX; break;
    case 16: t->pending_id = t->id; break;
    case 17: t->timeout = 1 + (uint32_t)rng_below(rng, 5); break;
    case 18: t->amount = 0; break;
    case 19: t->ledger = 0; break;
    case 20: t->code = 0; break;
    case 21:
        if (rng_percent(rng, 50)) {
            t->debit_account_id = UNKNOWN_ACCOUNT_ID;
        } else {
            t->credit_account_id = UNKNOWN_ACCOUNT_ID;
        }
        break;
    default: t->ledger += 1; break;
    }
}

static sz_transfer_t gen_transfer(workload_t *w, model_t *model, const op_log_t *log,
                                  uint64_t timestamp) {
    sz_transfer_t t;
    memset(&t, 0, sizeof(t));
    uint32_t r = (uint32_t)rng_below(&w->rng, 100);
    if (r < 15 && w->sent_count > 0) {
        gen_transfer_retry(w, model, log, &t);
    } else if (r < 40 && w->pending_id_count > 0) {
        gen_transfer_post_or_void(w, model, log, &t);
    } else {
        gen_transfer_new(w, model, log, &t, timestamp);
    }
    /* One invalid field, sometimes two, so the order of the checks shows. */
    if (rng_percent(&w->rng, w->invalid_percent)) {
        gen_transfer_invalid(w, &t);
        if (rng_percent(&w->rng, 30)) gen_transfer_invalid(w, &t);
    }
    SZ_ASSERT(w->sent_count < EVENTS_SENT_MAX);
    w->sent[w->sent_count++] = t;
    return t;
}

/* The deadline of a random pending transfer still waiting (0 if none), remembered as the
 * target that this batch's posts and voids prefer. */
static uint64_t deadline_pick(workload_t *w, const model_t *model) {
    uint32_t waiting = 0;
    for (uint32_t k = 0; k < model->transfer_count; k++) {
        if (model_waiting(&model->transfers[k])) waiting++;
    }
    if (waiting == 0) return 0;
    uint32_t chosen = (uint32_t)rng_below(&w->rng, waiting);
    for (uint32_t k = 0; k < model->transfer_count; k++) {
        if (!model_waiting(&model->transfers[k])) continue;
        if (chosen-- > 0) continue;
        w->target_pending_id = model->transfers[k].record.id;
        return model_deadline(&model->transfers[k].record);
    }
    return 0;
}

/* Batch timestamps stay below this, far from SZ_TIMESTAMP_MAX (a seed's ops advance it by
 * far less than 2^40 ns), so that a seed never runs out of timestamps. */
#define TIMESTAMP_CEILING (UINT64_MAX - (1ull << 40))

/* Mostly right after the last timestamp; sometimes seconds ahead (expiries happen);
 * sometimes exactly at, or one before, a pending transfer's deadline. */
static uint64_t timestamp_pick(workload_t *w, const model_t *model) {
    rng_t *rng = &w->rng;
    uint64_t from = model->timestamp_last == 0 ? w->timestamp_base : model->timestamp_last + 1;
    SZ_ASSERT(from < UINT64_MAX - SZ_BATCH_EVENTS_MAX);
    uint64_t pick = from;
    uint32_t r = (uint32_t)rng_below(rng, 100);
    if (w->timestamp_high && r < 10) {
        /* 2^64-1 - T is a whole number of seconds: a timeout can end exactly at 2^64-1. */
        pick = from + (UINT64_MAX - from) % NS_PER_S;
    } else if (r < 55) {
        pick = from;
    } else if (r < 70) {
        pick = from + rng_below(rng, 1000000);
    } else if (r < 85) {
        pick = from + (1 + rng_below(rng, 4)) * NS_PER_S + rng_below(rng, NS_PER_S);
    } else {
        uint64_t deadline = deadline_pick(w, model);
        if (deadline > from) pick = deadline - rng_below(rng, 2);
    }
    return pick <= TIMESTAMP_CEILING ? pick : from;
}

static void gen_queries(workload_t *w, const model_t *model, const op_log_t *log, op_record_t *op) {
    rng_t *rng = &w->rng;
    uint64_t low = w->timestamp_base;
    uint64_t high = model->timestamp_last > low ? model->timestamp_last + 2 : low + 2;
    op->query_count = 2 + (uint32_t)rng_below(rng, QUERIES_PER_OP_MAX - 1);
    for (uint32_t q = 0; q < op->query_count; q++) {
        query_t *query = &op->queries[q];
        memset(query, 0, sizeof(*query));
        query->kind = rng_percent(rng, 60) ? QUERY_TRANSFERS : QUERY_BALANCES;
        query->row_count_max =
            rng_percent(rng, 90) ? QUERY_ROWS_MAX : 1 + (uint32_t)rng_below(rng, 4);
        sz_account_filter_t *f = &query->filter;
        uint32_t r = (uint32_t)rng_below(rng, 100);
        f->account_id = r < 92 ? pick_account_id(w, log) : r < 96 ? 0 : SZ_U128_MAX;
        if (rng_percent(rng, 35)) f->timestamp_min = low + rng_below(rng, high - low);
        if (rng_percent(rng, 35)) f->timestamp_max = low + rng_below(rng, high - low);
        r = (uint32_t)rng_below(rng, 100);
        f->limit = r < 70 ? 100000u : r < 96 ? 1 + (uint32_t)rng_below(rng, 5) : 0;
        r = (uint32_t)rng_below(rng, 100);
        /* Among balance rows, debits/credits select by the side the account was on in the
         * row's transfer (SEMANTICS.md leaves it open; TigerBeetle 0.15 and core/ledger.c). */
        f->flags = r < 30   ? SZ_FILTER_DEBITS
                   : r < 60 ? SZ_FILTER_CREDITS
                   : r < 95 ? SZ_FILTER_DEBITS | SZ_FILTER_CREDITS
                            : 0;
        if (rng_percent(rng, 50)) f->flags |= SZ_FILTER_REVERSED;
        if (rng_percent(rng, 3)) f->flags |= 1u << (3 + rng_below(rng, 29));
        if (rng_percent(rng, 2)) f->reserved[rng_below(rng, sizeof(f->reserved))] = 1;
    }
}

static void gen_op(workload_t *w, model_t *model, const op_log_t *log, op_record_t *op,
                   uint32_t op_index) {
    rng_t *rng = &w->rng;
    memset(op, 0, sizeof(*op));
    w->target_pending_id = 0;
    uint32_t r = (uint32_t)rng_below(rng, 100);
    if (op_index == 0) {
        /* Open every account id once (some events invalid), so transfers have somewhere to go. */
        op->kind = OP_CREATE_ACCOUNTS;
        op->timestamp = timestamp_pick(w, model);
        op->event_count = log->account_id_count;
        for (uint32_t i = 0; i < op->event_count; i++) {
            op->accounts[i] = gen_account(w, model, log, w->invalid_percent / 2);
            op->accounts[i].id = log->account_ids[i];
        }
    } else if (r < 8) {
        op->kind = OP_CREATE_ACCOUNTS;
        op->timestamp = timestamp_pick(w, model);
        op->event_count =
            1 + (uint32_t)rng_below(rng, w->batch_events_max < 8 ? w->batch_events_max : 8);
        for (uint32_t i = 0; i < op->event_count; i++) {
            op->accounts[i] = gen_account(w, model, log, w->invalid_percent);
        }
    } else if (r < 22) {
        op->kind = OP_EXPIRE_PENDING;
        op->timestamp = timestamp_pick(w, model);
    } else if (r < 25) {
        /* Refused whole: a timestamp not above the last, or one whose batch would overflow. */
        op->kind = rng_percent(rng, 30) ? OP_EXPIRE_PENDING : OP_CREATE_TRANSFERS;
        op->event_count = op->kind == OP_EXPIRE_PENDING ? 0 : 2 + (uint32_t)rng_below(rng, 3);
        if (op->kind == OP_CREATE_TRANSFERS && rng_percent(rng, 30)) {
            op->timestamp = UINT64_MAX - rng_below(rng, op->event_count - 1);
        } else {
            op->timestamp = model->timestamp_last - rng_below(rng, 3);
        }
        for (uint32_t i = 0; i < op->event_count; i++) {
            op->transfers[i] = gen_transfer(w, model, log, op->timestamp);
        }
    } else {
        op->kind = OP_CREATE_TRANSFERS;
        op->timestamp = timestamp_pick(w, model);
        op->event_count = 1 + (uint32_t)rng_below(rng, w->batch_events_max);
        for (uint32_t i = 0; i < op->event_count; i++) {
            op->transfers[i] = gen_transfer(w, model, log, op->timestamp + i);
        }
    }
    /* Link some events into chains; the last event's link leaves a chain open. */
    for (uint32_t i = 0; i < op->event_count; i++) {
        uint32_t percent = i + 1 == op->event_count ? w->link_percent / 3 : w->link_percent;
        if (!rng_percent(rng, percent)) continue;
        if (op->kind == OP_CREATE_ACCOUNTS) op->accounts[i].flags |= SZ_ACCOUNT_LINKED;
        if (op->kind == OP_CREATE_TRANSFERS) op->transfers[i].flags |= SZ_TRANSFER_LINKED;
    }
    gen_queries(w, model, log, op);
}

/* Generates and checks one seed, writing the log as it goes (into memory the parent shares,
 * so the parent can shrink a failure even after a crash). */
static bool seed_check(op_log_t *log, uint64_t seed) {
    workload_t *w = calloc(1, sizeof(workload_t));
    run_t *run = calloc(1, sizeof(run_t));
    SZ_ASSERT(w != NULL);
    SZ_ASSERT(run != NULL);
    workload_init(w, log, seed);
    run_open(run, log, false);
    bool ok = true;
    for (uint32_t op_index = 0; ok && op_index < w->op_count; op_index++) {
        gen_op(w, run->model, log, &log->ops[op_index], op_index);
        log->op_count = op_index + 1;
        ok = run_op(run, op_index);
    }
    if (ok) ok = run_replay(run);
    run_close(run);
    free(run);
    free(w);
    return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Children, shrinking and the test. */

static void child_prepare(bool silence) {
    signal(SIGABRT, position_on_signal);
    signal(SIGSEGV, position_on_signal);
    signal(SIGBUS, position_on_signal);
    signal(SIGFPE, position_on_signal);
#ifdef HAVE_SANITIZER_DEATH_CALLBACK
    __sanitizer_set_death_callback(position_print);
#endif
    if (silence) {
        int null_fd = open("/dev/null", O_WRONLY);
        if (null_fd >= 0) {
            dup2(null_fd, STDERR_FILENO);
            close(null_fd);
        }
    }
}

/* Runs body in a child; true if it exited 0. A crash or sanitizer death counts as failure. */
static bool child_passes(op_log_t *log, coverage_t *shared_coverage, uint64_t seed, bool generate,
                         bool silence) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    SZ_ASSERT(pid >= 0);
    if (pid == 0) {
        child_prepare(silence);
        coverage = generate ? shared_coverage : NULL;
        bool ok = generate ? seed_check(log, seed) : log_check(log, silence);
        fflush(stderr);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    pid_t waited = waitpid(pid, &status, 0);
    SZ_ASSERT(waited == pid);
    if (WIFSIGNALED(status) && !silence) {
        fprintf(stderr, "test_random: seed=%" PRIu64 " child died of signal %d\n", seed,
                WTERMSIG(status));
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static op_log_t *shrink_candidate;

static bool shrink_try(op_log_t *best, uint32_t *trials) {
    (*trials)++;
    if (child_passes(shrink_candidate, NULL, best->seed, false, true)) return false;
    memcpy(best, shrink_candidate, sizeof(op_log_t));
    return true;
}

/* Greedy shrinking: drop whole ops, then single events, then queries, while it still fails. */
static void shrink(op_log_t *best) {
    uint32_t trials = 0;
    bool progress = true;
    for (uint32_t pass = 0; progress && pass < 4 && trials < SHRINK_TRIALS_MAX; pass++) {
        progress = false;
        for (uint32_t k = best->op_count; k-- > 0 && trials < SHRINK_TRIALS_MAX;) {
            if (best->op_count <= 1) break;
            memcpy(shrink_candidate, best, sizeof(op_log_t));
            memmove(&shrink_candidate->ops[k], &shrink_candidate->ops[k + 1],
                    (shrink_candidate->op_count - k - 1) * sizeof(op_record_t));
            shrink_candidate->op_count--;
            if (shrink_try(best, &trials)) progress = true;
        }
        for (uint32_t k = 0; k < best->op_count && trials < SHRINK_TRIALS_MAX; k++) {
            for (uint32_t i = best->ops[k].event_count; i-- > 0 && trials < SHRINK_TRIALS_MAX;) {
                if (best->ops[k].event_count <= 1) break;
                memcpy(shrink_candidate, best, sizeof(op_log_t));
                op_record_t *op = &shrink_candidate->ops[k];
                memmove(&op->accounts[i], &op->accounts[i + 1],
                        (op->event_count - i - 1) * sizeof(sz_account_t));
                memmove(&op->transfers[i], &op->transfers[i + 1],
                        (op->event_count - i - 1) * sizeof(sz_transfer_t));
                op->event_count--;
                if (shrink_try(best, &trials)) progress = true;
            }
            for (uint32_t q = best->ops[k].query_count; q-- > 0 && trials < SHRINK_TRIALS_MAX;) {
                memcpy(shrink_candidate, best, sizeof(op_log_t));
                op_record_t *op = &shrink_candidate->ops[k];
                memmove(&op->queries[q], &op->queries[q + 1],
                        (op->query_count - q - 1) * sizeof(query_t));
                op->query_count--;
                if (shrink_try(best, &trials)) progress = true;
            }
        }
    }
    fprintf(stderr,
            "test_random: shrunk seed=%" PRIu64 " in %" PRIu32 " trials to %" PRIu32 " ops:\n",
            best->seed, trials, best->op_count);
}

static void coverage_print(const coverage_t *c) {
    uint64_t events = 0;
    for (uint32_t k = 0; k < SZ_CREATE_ACCOUNT_RESULT_COUNT; k++) events += c->account_codes[k];
    for (uint32_t k = 0; k < SZ_CREATE_TRANSFER_RESULT_COUNT; k++) events += c->transfer_codes[k];
    fprintf(stderr,
            "test_random: %" PRIu64 " ops (%" PRIu64 " refused), %" PRIu64 " events, %" PRIu64
            " expired, %" PRIu64 " query rows compared\n",
            c->op_count, c->refused_count, events, c->expired_count, c->query_rows);
    if (getenv("SUMZERO_COVERAGE") != NULL) {
        for (uint32_t k = 0; k < SZ_CREATE_ACCOUNT_RESULT_COUNT; k++) {
            fprintf(stderr, "  account %-40s %" PRIu64 "\n", sz_create_account_result_name(k),
                    c->account_codes[k]);
        }
        for (uint32_t k = 0; k < SZ_CREATE_TRANSFER_RESULT_COUNT; k++) {
            fprintf(stderr, "  transfer %-48s %" PRIu64 "\n", sz_create_transfer_result_name(k),
                    c->transfer_codes[k]);
        }
    }
    fprintf(stderr, "test_random: result codes never produced:");
    for (uint32_t k = 0; k < SZ_CREATE_ACCOUNT_RESULT_COUNT; k++) {
        if (c->account_codes[k] == 0) {
            fprintf(stderr, " account:%s", sz_create_account_result_name(k));
        }
    }
    for (uint32_t k = 0; k < SZ_CREATE_TRANSFER_RESULT_COUNT; k++) {
        if (c->transfer_codes[k] == 0) {
            fprintf(stderr, " transfer:%s", sz_create_transfer_result_name(k));
        }
    }
    fprintf(stderr, "\n");
}

static uint64_t environment_number(const char *name, uint64_t fallback) {
    const char *text = getenv(name);
    if (text == NULL || text[0] == '\0') return fallback;
    char *end = NULL;
    unsigned long long value = strtoull(text, &end, 0);
    if (end == text || *end != '\0') {
        fprintf(stderr, "test_random: ignoring %s=%s (not a number)\n", name, text);
        return fallback;
    }
    return value;
}

static double seconds_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

Test(random_workload, ledger_agrees_with_the_reference_model_and_replays_to_the_same_digest,
     .timeout = 0) {
    bool seed_given = getenv("SUMZERO_SEED") != NULL;
    uint64_t seed_first = environment_number("SUMZERO_SEED", 1);
    uint64_t seed_count = environment_number("SUMZERO_SEEDS", seed_given ? 1 : SEEDS_DEFAULT);
    fprintf(stderr,
            "test_random: seeds %" PRIu64 "..%" PRIu64
            " (repeat one with SUMZERO_SEED=s, more with SUMZERO_SEEDS=n)\n",
            seed_first, seed_first + seed_count - 1);
    /* Shared with the children: the generating child writes the log here as it goes. */
    op_log_t *log =
        mmap(NULL, sizeof(op_log_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(log != MAP_FAILED, "mmap of the op log failed");
    coverage_t *shared_coverage =
        mmap(NULL, sizeof(coverage_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(shared_coverage != MAP_FAILED, "mmap of the coverage counters failed");
    memset(shared_coverage, 0, sizeof(*shared_coverage));
    op_log_t *best = malloc(sizeof(op_log_t));
    shrink_candidate = malloc(sizeof(op_log_t));
    cr_assert(best != NULL && shrink_candidate != NULL, "out of memory");

    double start = seconds_now();
    uint64_t failed_count = 0;
    uint64_t failed_first = 0;
    for (uint64_t seed = seed_first; seed < seed_first + seed_count; seed++) {
        if (child_passes(log, shared_coverage, seed, true, false)) continue;
        failed_count++;
        if (failed_count == 1) failed_first = seed;
        fprintf(stderr,
                "test_random: seed=%" PRIu64 " FAILED at op=%" PRIu32
                " (repeat: SUMZERO_SEED=%" PRIu64 ")\n",
                seed, log->op_count - 1, seed);
        if (failed_count > SHRINK_SEEDS_MAX) continue;
        if (log->op_count > 0) {
            fprintf(stderr, "test_random: the failing op as generated:\n");
            print_op(log->op_count - 1, &log->ops[log->op_count - 1]);
        }
        memcpy(best, log, sizeof(op_log_t));
        shrink(best);
        for (uint32_t k = 0; k < best->op_count; k++) print_op(k, &best->ops[k]);
        fprintf(stderr, "test_random: the shrunk log fails with:\n");
        (void)child_passes(best, NULL, seed, false, false);
    }
    fprintf(stderr, "test_random: %" PRIu64 " seeds in %.1f s, %" PRIu64 " failed\n", seed_count,
            seconds_now() - start, failed_count);
    coverage_print(shared_coverage);
    munmap(shared_coverage, sizeof(coverage_t));
    free(best);
    free(shrink_candidate);
    munmap(log, sizeof(op_log_t));
    cr_assert(failed_count == 0,
              "%" PRIu64 " of %" PRIu64 " seeds disagree with the model; first "
              "seed=%" PRIu64 " (details above)",
              failed_count, seed_count, failed_first);
}
