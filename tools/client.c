/* client.c: `sumzero client`: talk to a running server by hand or from a script, through
 * libsumzero. One statement from the command line, or one per line from stdin (an
 * interactive prompt on a terminal, a script from a pipe). Statements look like
 *   create_accounts id=1 ledger=1 code=1 flags=debits_must_not_exceed_credits
 * and print results by name; records come back as key=value lines. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/sumzero.h"
#include "commands.h"
#include "core/base.h"

#define LINE_SIZE_MAX (4u << 20) /* bytes in one statement */

static void client_usage(FILE *stream) {
    fprintf(stream,
        "usage: sumzero client [OPTIONS] [OPERATION FIELD=VALUE ... [, FIELD=VALUE ...]]\n"
        "  With an operation: runs that one statement and exits. Without: reads one\n"
        "  statement per line from stdin (a prompt on a terminal; `help`, `quit`).\n"
        "\n"
        "options:\n"
        "  --address HOST:PORT  the server (env SUMZERO_ADDRESS; default 127.0.0.1:3000);\n"
        "                       several, comma-separated, are tried in turn\n"
        "  --cluster ID         the server's cluster id, a u128 (env SUMZERO_CLUSTER;\n"
        "                       default 0; --cluster-id is the same)\n"
        "  --timeout-ms N       give up on a statement after N ms (default 10000)\n"
        "\n"
        "statements (events are separated by a comma, which may end a word or stand\n"
        "alone; a trailing ';' is ignored; numbers are decimal or 0x-hexadecimal u128s;\n"
        "flags are names joined by '|', or a number):\n"
        "  create_accounts id=1 ledger=1 code=1 [flags=linked|debits_must_not_exceed_credits|\n"
        "      credits_must_not_exceed_debits|history] [user_data_128=..] [user_data_64=..]\n"
        "      [user_data_32=..], id=2 ...\n"
        "  create_transfers id=9 debit_account_id=1 credit_account_id=2 amount=100 ledger=1\n"
        "      code=1 [flags=linked|pending|post_pending_transfer|void_pending_transfer|\n"
        "      balancing_debit|balancing_credit] [pending_id=..] [timeout=SECONDS]\n"
        "      [user_data_128=..] [user_data_64=..] [user_data_32=..], id=10 ...\n"
        "  lookup_accounts id=1,2,3          lookup_transfers id=9 id=10\n"
        "  get_account_transfers account_id=1 [limit=N (default 8190)]\n"
        "      [flags=debits|credits|reversed (default debits|credits)]\n"
        "      [timestamp_min=NS] [timestamp_max=NS]\n"
        "  get_account_balances account_id=1 [the same filter fields]\n"
        "\n"
        "output: creates print `ok` when every event was applied, else one line per\n"
        "failed event: `index=0 result=exceeds_credits`. Lookups and queries print one\n"
        "record per line as FIELD=VALUE pairs (flags by name); a missing id prints\n"
        "`id=N not_found`.\n"
        "exit: 0 ok (also when events failed), 64 a bad statement or option, 69 the\n"
        "server could not be reached, timed out or refused the request, 76 a reply that\n"
        "broke the protocol, 78 the wrong cluster id. Reading stdin, the first error's\n"
        "code is returned after the last line.\n");
}

/* ---- fields of the records ------------------------------------------------------------ */

typedef enum field_kind {
    FIELD_U128,
    FIELD_U64,
    FIELD_U32,
    FIELD_U16,
    FIELD_FLAGS16, /* u16 flags with names */
    FIELD_FLAGS32, /* u32 flags with names */
} field_kind_t;

typedef struct flag_name {
    const char *name;
    uint32_t bit;
} flag_name_t;

typedef struct field {
    const char *name;
    size_t offset;
    field_kind_t kind;
    const flag_name_t *flags; /* for FIELD_FLAGS*, ended by a NULL name */
} field_t;

static const flag_name_t account_flags[] = {
    {"linked", SUMZERO_ACCOUNT_LINKED},
    {"debits_must_not_exceed_credits", SUMZERO_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS},
    {"credits_must_not_exceed_debits", SUMZERO_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS},
    {"history", SUMZERO_ACCOUNT_HISTORY},
    {NULL, 0},
};

static const flag_name_t transfer_flags[] = {
    {"linked", SUMZERO_TRANSFER_LINKED},
    {"pending", SUMZERO_TRANSFER_PENDING},
    {"post_pending_transfer", SUMZERO_TRANSFER_POST_PENDING},
    {"void_pending_transfer", SUMZERO_TRANSFER_VOID_PENDING},
    {"balancing_debit", SUMZERO_TRANSFER_BALANCING_DEBIT},
    {"balancing_credit", SUMZERO_TRANSFER_BALANCING_CREDIT},
    /* Shorter spellings accepted on input; output uses the names above. */
    {"post_pending", SUMZERO_TRANSFER_POST_PENDING},
    {"void_pending", SUMZERO_TRANSFER_VOID_PENDING},
    {NULL, 0},
};

static const flag_name_t filter_flags[] = {
    {"debits", SUMZERO_FILTER_DEBITS},
    {"credits", SUMZERO_FILTER_CREDITS},
    {"reversed", SUMZERO_FILTER_REVERSED},
    {NULL, 0},
};

#define FIELD(type, name, kind) {#name, offsetof(type, name), kind, NULL}
#define FLAGS(type, name, kind, table) {#name, offsetof(type, name), kind, table}

static const field_t account_fields[] = {
    FIELD(sumzero_account_t, id, FIELD_U128),
    FIELD(sumzero_account_t, debits_pending, FIELD_U128),
    FIELD(sumzero_account_t, debits_posted, FIELD_U128),
    FIELD(sumzero_account_t, credits_pending, FIELD_U128),
    FIELD(sumzero_account_t, credits_posted, FIELD_U128),
    FIELD(sumzero_account_t, user_data_128, FIELD_U128),
    FIELD(sumzero_account_t, user_data_64, FIELD_U64),
    FIELD(sumzero_account_t, user_data_32, FIELD_U32),
    FIELD(sumzero_account_t, ledger, FIELD_U32),
    FIELD(sumzero_account_t, code, FIELD_U16),
    FLAGS(sumzero_account_t, flags, FIELD_FLAGS16, account_flags),
    FIELD(sumzero_account_t, timestamp, FIELD_U64),
    {NULL, 0, FIELD_U128, NULL},
};

static const field_t transfer_fields[] = {
    FIELD(sumzero_transfer_t, id, FIELD_U128),
    FIELD(sumzero_transfer_t, debit_account_id, FIELD_U128),
    FIELD(sumzero_transfer_t, credit_account_id, FIELD_U128),
    FIELD(sumzero_transfer_t, amount, FIELD_U128),
    FIELD(sumzero_transfer_t, pending_id, FIELD_U128),
    FIELD(sumzero_transfer_t, user_data_128, FIELD_U128),
    FIELD(sumzero_transfer_t, user_data_64, FIELD_U64),
    FIELD(sumzero_transfer_t, user_data_32, FIELD_U32),
    FIELD(sumzero_transfer_t, timeout, FIELD_U32),
    FIELD(sumzero_transfer_t, ledger, FIELD_U32),
    FIELD(sumzero_transfer_t, code, FIELD_U16),
    FLAGS(sumzero_transfer_t, flags, FIELD_FLAGS16, transfer_flags),
    FIELD(sumzero_transfer_t, timestamp, FIELD_U64),
    {NULL, 0, FIELD_U128, NULL},
};

static const field_t balance_fields[] = {
    FIELD(sumzero_account_balance_t, debits_pending, FIELD_U128),
    FIELD(sumzero_account_balance_t, debits_posted, FIELD_U128),
    FIELD(sumzero_account_balance_t, credits_pending, FIELD_U128),
    FIELD(sumzero_account_balance_t, credits_posted, FIELD_U128),
    FIELD(sumzero_account_balance_t, timestamp, FIELD_U64),
    {NULL, 0, FIELD_U128, NULL},
};

static const field_t filter_fields[] = {
    FIELD(sumzero_account_filter_t, account_id, FIELD_U128),
    FIELD(sumzero_account_filter_t, timestamp_min, FIELD_U64),
    FIELD(sumzero_account_filter_t, timestamp_max, FIELD_U64),
    FIELD(sumzero_account_filter_t, limit, FIELD_U32),
    FLAGS(sumzero_account_filter_t, flags, FIELD_FLAGS32, filter_flags),
    {NULL, 0, FIELD_U128, NULL},
};

static const field_t id_fields[] = {
    {"id", 0, FIELD_U128, NULL},
    {NULL, 0, FIELD_U128, NULL},
};

#undef FIELD
#undef FLAGS

/* What each operation takes and gives. */
typedef struct statement_kind {
    const char *name;
    uint32_t operation;
    const field_t *input;  /* fields of one event */
    size_t input_size;     /* bytes of one event */
    const field_t *output; /* fields of one result record (NULL: create results) */
} statement_kind_t;

static const statement_kind_t statement_kinds[] = {
    {"create_accounts", SUMZERO_OPERATION_CREATE_ACCOUNTS, account_fields,
     sizeof(sumzero_account_t), NULL},
    {"create_transfers", SUMZERO_OPERATION_CREATE_TRANSFERS, transfer_fields,
     sizeof(sumzero_transfer_t), NULL},
    {"lookup_accounts", SUMZERO_OPERATION_LOOKUP_ACCOUNTS, id_fields, sizeof(sumzero_u128_t),
     account_fields},
    {"lookup_transfers", SUMZERO_OPERATION_LOOKUP_TRANSFERS, id_fields, sizeof(sumzero_u128_t),
     transfer_fields},
    {"get_account_transfers", SUMZERO_OPERATION_GET_ACCOUNT_TRANSFERS, filter_fields,
     sizeof(sumzero_account_filter_t), transfer_fields},
    {"get_account_balances", SUMZERO_OPERATION_GET_ACCOUNT_BALANCES, filter_fields,
     sizeof(sumzero_account_filter_t), balance_fields},
};

#define STATEMENT_KIND_COUNT (sizeof(statement_kinds) / sizeof(statement_kinds[0]))

/* ---- parsing ------------------------------------------------------------------------ */

/* One statement being parsed: its events, and where the error message goes. */
typedef struct statement {
    const statement_kind_t *kind;
    uint8_t *events; /* SUMZERO_BATCH_EVENTS_MAX * input_size bytes */
    uint32_t event_count;
    uint32_t fields_set; /* bit per field index in the current event */
} statement_t;

static uint64_t field_max(field_kind_t kind) {
    switch (kind) {
    case FIELD_U64: return UINT64_MAX;
    case FIELD_U32:
    case FIELD_FLAGS32: return UINT32_MAX;
    case FIELD_U16:
    case FIELD_FLAGS16: return UINT16_MAX;
    case FIELD_U128: break;
    }
    return 0;
}

static void field_store(const field_t *field, uint8_t *record, sumzero_u128_t value) {
    uint8_t *target = record + field->offset;
    switch (field->kind) {
    case FIELD_U128: memcpy(target, &value, 16); break;
    case FIELD_U64: {
        uint64_t narrow = (uint64_t)value;
        memcpy(target, &narrow, sizeof(narrow));
        break;
    }
    case FIELD_U32:
    case FIELD_FLAGS32: {
        uint32_t narrow = (uint32_t)value;
        memcpy(target, &narrow, sizeof(narrow));
        break;
    }
    case FIELD_U16:
    case FIELD_FLAGS16: {
        uint16_t narrow = (uint16_t)value;
        memcpy(target, &narrow, sizeof(narrow));
        break;
    }
    }
}

static sumzero_u128_t field_load(const field_t *field, const uint8_t *record) {
    const uint8_t *source = record + field->offset;
    switch (field->kind) {
    case FIELD_U128: {
        sumzero_u128_t value;
        memcpy(&value, source, 16);
        return value;
    }
    case FIELD_U64: {
        uint64_t value;
        memcpy(&value, source, sizeof(value));
        return value;
    }
    case FIELD_U32:
    case FIELD_FLAGS32: {
        uint32_t value;
        memcpy(&value, source, sizeof(value));
        return value;
    }
    case FIELD_U16:
    case FIELD_FLAGS16: {
        uint16_t value;
        memcpy(&value, source, sizeof(value));
        return value;
    }
    }
    return 0;
}

/* "linked|history" or a number. Returns false with a message for an unknown name. */
static bool flags_parse(const field_t *field, const char *text, sumzero_u128_t *value_out) {
    if (sumzero_u128_parse(text, value_out) == 0) return true;
    sumzero_u128_t value = 0;
    const char *cursor = text;
    for (;;) {
        const char *bar = strchr(cursor, '|');
        size_t length = bar == NULL ? strlen(cursor) : (size_t)(bar - cursor);
        const flag_name_t *flag = field->flags;
        while (flag->name != NULL &&
               (strlen(flag->name) != length || strncmp(flag->name, cursor, length) != 0)) {
            flag++;
        }
        if (flag->name == NULL) {
            fprintf(stderr, "sumzero client: unknown flag '%.*s' in %s; known:", (int)length,
                    cursor, field->name);
            for (flag = field->flags; flag->name != NULL; flag++) {
                fprintf(stderr, " %s", flag->name);
            }
            fprintf(stderr, "\n");
            return false;
        }
        value |= flag->bit;
        if (bar == NULL) break;
        cursor = bar + 1;
    }
    *value_out = value;
    return true;
}

static bool value_parse(const field_t *field, const char *text, sumzero_u128_t *value_out) {
    if (field->flags != NULL) return flags_parse(field, text, value_out);
    if (sumzero_u128_parse(text, value_out) != 0 ||
        (field->kind != FIELD_U128 && *value_out > field_max(field->kind))) {
        if (field->kind == FIELD_U128) {
            fprintf(stderr, "sumzero client: %s takes a u128 (decimal or 0x-hex), not '%s'\n",
                    field->name, text);
        } else {
            fprintf(stderr, "sumzero client: %s takes a number 0..%llu, not '%s'\n",
                    field->name, (unsigned long long)field_max(field->kind), text);
        }
        return false;
    }
    return true;
}

/* Opens a new, zeroed event (with the defaults of filters). */
static bool event_begin(statement_t *statement) {
    if (statement->event_count == SUMZERO_BATCH_EVENTS_MAX) {
        fprintf(stderr, "sumzero client: at most %u events in one statement\n",
                SUMZERO_BATCH_EVENTS_MAX);
        return false;
    }
    if (statement->kind->input == filter_fields && statement->event_count == 1) {
        fprintf(stderr, "sumzero client: %s takes one filter\n", statement->kind->name);
        return false;
    }
    uint8_t *event = statement->events + statement->event_count * statement->kind->input_size;
    memset(event, 0, statement->kind->input_size);
    statement->event_count++;
    statement->fields_set = 0;
    return true;
}

/* Filters get the CLI's defaults for the fields left out. */
static void event_end(statement_t *statement) {
    if (statement->kind->input != filter_fields || statement->event_count == 0) return;
    sumzero_account_filter_t filter;
    memcpy(&filter, statement->events, sizeof(filter));
    if ((statement->fields_set & (1u << 3)) == 0) filter.limit = SUMZERO_BATCH_EVENTS_MAX;
    if ((statement->fields_set & (1u << 4)) == 0) {
        filter.flags = SUMZERO_FILTER_DEBITS | SUMZERO_FILTER_CREDITS;
    }
    memcpy(statement->events, &filter, sizeof(filter));
}

/* One FIELD=VALUE word. Lookups take lists: id=1,2,3 is three events. */
static bool word_parse(statement_t *statement, char *word) {
    char *equals = strchr(word, '=');
    if (equals == NULL || equals == word) {
        fprintf(stderr, "sumzero client: expected FIELD=VALUE, not '%s'\n", word);
        return false;
    }
    *equals = '\0';
    const char *value_text = equals + 1;
    const field_t *fields = statement->kind->input;
    uint32_t field_index = 0;
    while (fields[field_index].name != NULL && strcmp(fields[field_index].name, word) != 0) {
        field_index++;
    }
    if (fields[field_index].name == NULL) {
        fprintf(stderr, "sumzero client: %s has no field '%s'; fields:", statement->kind->name,
                word);
        for (const field_t *field = fields; field->name != NULL; field++) {
            fprintf(stderr, " %s", field->name);
        }
        fprintf(stderr, "\n");
        return false;
    }
    const field_t *field = &fields[field_index];
    bool list = fields == id_fields;
    char *cursor = (char *)value_text;
    for (;;) {
        char *comma = list ? strchr(cursor, ',') : NULL;
        if (comma != NULL) *comma = '\0';
        if (statement->event_count == 0 || (statement->fields_set & (1u << field_index))) {
            if (!list && statement->event_count > 0) {
                fprintf(stderr, "sumzero client: %s given twice in one event (separate "
                                "events with ',')\n", field->name);
                return false;
            }
            if (!event_begin(statement)) return false;
        }
        sumzero_u128_t value;
        if (!value_parse(field, cursor, &value)) return false;
        uint8_t *event =
            statement->events + (statement->event_count - 1) * statement->kind->input_size;
        field_store(field, event, value);
        statement->fields_set |= 1u << field_index;
        if (comma == NULL) return true;
        cursor = comma + 1;
    }
}

static const statement_kind_t *statement_kind_find(const char *name) {
    for (size_t index = 0; index < STATEMENT_KIND_COUNT; index++) {
        if (strcmp(statement_kinds[index].name, name) == 0) return &statement_kinds[index];
    }
    return NULL;
}

/* Splits words on white space; a comma that ends a word (or stands alone) ends an event.
 * Returns true with the events filled, or false after printing one error line. */
static bool statement_parse(statement_t *statement, char *line) {
    char *save = NULL;
    char *word = strtok_r(line, " \t\r\n", &save);
    SZ_ASSERT(word != NULL); /* blank lines are skipped before */
    statement->kind = statement_kind_find(word);
    if (statement->kind == NULL) {
        fprintf(stderr, "sumzero client: unknown operation '%s'; see `sumzero client --help`\n",
                word);
        return false;
    }
    statement->event_count = 0;
    statement->fields_set = 0;
    bool event_open = false;
    while ((word = strtok_r(NULL, " \t\r\n", &save)) != NULL) {
        size_t length = strlen(word);
        if (length > 0 && word[length - 1] == ';') word[--length] = '\0';
        bool event_closes = length > 0 && word[length - 1] == ',';
        if (event_closes) word[--length] = '\0';
        if (length > 0) {
            if (!event_open) {
                statement->fields_set = 0;
                if (statement->kind->input != id_fields && !event_begin(statement)) return false;
                event_open = true;
            }
            if (!word_parse(statement, word)) return false;
        }
        if (event_closes && event_open) {
            event_end(statement);
            event_open = false;
        }
    }
    if (event_open) event_end(statement);
    if (statement->kind->input == filter_fields &&
        (statement->event_count == 0 || (statement->fields_set & 1u) == 0)) {
        fprintf(stderr, "sumzero client: %s needs account_id=ID\n", statement->kind->name);
        return false;
    }
    return true;
}

/* ---- running and printing ------------------------------------------------------------ */

static void record_print(const field_t *fields, const uint8_t *record) {
    const char *separator = "";
    for (const field_t *field = fields; field->name != NULL; field++) {
        sumzero_u128_t value = field_load(field, record);
        printf("%s%s=", separator, field->name);
        separator = " ";
        if (field->flags != NULL && value != 0) {
            const char *bar = "";
            sumzero_u128_t named = 0;
            for (const flag_name_t *flag = field->flags; flag->name != NULL; flag++) {
                if ((value & flag->bit) == 0 || (named & flag->bit) != 0) continue;
                printf("%s%s", bar, flag->name);
                bar = "|";
                named |= flag->bit;
            }
            if ((value & ~named) != 0) {
                char text[SUMZERO_U128_DECIMAL_SIZE];
                printf("%s%s", bar, sumzero_u128_format(value & ~named, text));
            }
        } else {
            char text[SUMZERO_U128_DECIMAL_SIZE];
            fputs(sumzero_u128_format(value, text), stdout);
        }
    }
    putchar('\n');
}

static void creates_print(const statement_kind_t *kind, const sumzero_create_result_t *results,
                          uint32_t result_count) {
    if (result_count == 0) {
        printf("ok\n");
        return;
    }
    for (uint32_t index = 0; index < result_count; index++) {
        const char *name = kind->operation == SUMZERO_OPERATION_CREATE_ACCOUNTS
                               ? sumzero_create_account_result_name(results[index].result)
                               : sumzero_create_transfer_result_name(results[index].result);
        printf("index=%u result=%s\n", results[index].index, name);
    }
}

/* Records in request order; the ids without one are named. */
static void lookups_print(const statement_kind_t *kind, const statement_t *statement,
                          const uint8_t *records, uint32_t record_count) {
    uint32_t record_index = 0;
    for (uint32_t index = 0; index < statement->event_count; index++) {
        sumzero_u128_t id;
        memcpy(&id, statement->events + (size_t)index * sizeof(id), sizeof(id));
        sumzero_u128_t record_id = 0;
        if (record_index < record_count) memcpy(&record_id, records + record_index * 128u, 16);
        if (record_index < record_count && record_id == id) {
            record_print(kind->output, records + record_index * 128u);
            record_index++;
        } else {
            char text[SUMZERO_U128_DECIMAL_SIZE];
            printf("id=%s not_found\n", sumzero_u128_format(id, text));
        }
    }
}

/* One line for a failed call, and its exit code. */
static int call_error(const char *address, int error, uint32_t timeout_ms) {
    sumzero_status_t status = sumzero_error_status(error);
    if (status == SUMZERO_STATUS_CLUSTER_INVALID) {
        fprintf(stderr, "sumzero client: the server at %s refused the request: cluster_invalid "
                        "(--cluster must match the server's)\n", address);
        return EX_CONFIG;
    }
    if (status != SUMZERO_STATUS_OK) {
        fprintf(stderr, "sumzero client: the server at %s refused the request: %s\n", address,
                sumzero_status_name(status));
        return EX_UNAVAILABLE;
    }
    switch (-error) {
    case ETIMEDOUT:
        fprintf(stderr, "sumzero client: no reply from %s within %u ms\n", address, timeout_ms);
        return EX_UNAVAILABLE;
    case EPROTO:
        fprintf(stderr, "sumzero client: the reply from %s broke the protocol\n", address);
        return EX_PROTOCOL;
    case EINVAL:
    case EMSGSIZE:
        fprintf(stderr, "sumzero client: %s\n", sumzero_error_message(error));
        return EX_USAGE;
    default:
        fprintf(stderr, "sumzero client: cannot reach the server at %s: %s (is `sumzero start` "
                        "running?)\n", address, sumzero_error_message(error));
        return EX_UNAVAILABLE;
    }
}

typedef struct session {
    sumzero_client_t *client;
    const char *address;
    uint32_t timeout_ms;
    statement_t statement;
    uint8_t *results; /* SUMZERO_BATCH_EVENTS_MAX records of 128 bytes */
} session_t;

/* Parses and runs one statement; returns its exit code. */
static int statement_run(session_t *session, char *line) {
    statement_t *statement = &session->statement;
    if (!statement_parse(statement, line)) return EX_USAGE;
    const statement_kind_t *kind = statement->kind;
    sumzero_packet_t packet = {
        .operation = kind->operation,
        .event_count = statement->event_count,
        .events = statement->events,
        .results = session->results,
        .result_capacity = SUMZERO_BATCH_EVENTS_MAX,
    };
    uint32_t result_count = 0;
    int error;
    switch (kind->operation) {
    case SUMZERO_OPERATION_CREATE_ACCOUNTS:
        error = sumzero_create_accounts(session->client, packet.events, packet.event_count,
                                        packet.results, &result_count);
        break;
    case SUMZERO_OPERATION_CREATE_TRANSFERS:
        error = sumzero_create_transfers(session->client, packet.events, packet.event_count,
                                         packet.results, &result_count);
        break;
    case SUMZERO_OPERATION_LOOKUP_ACCOUNTS:
        error = sumzero_lookup_accounts(session->client, packet.events, packet.event_count,
                                        packet.results, &result_count);
        break;
    case SUMZERO_OPERATION_LOOKUP_TRANSFERS:
        error = sumzero_lookup_transfers(session->client, packet.events, packet.event_count,
                                         packet.results, &result_count);
        break;
    case SUMZERO_OPERATION_GET_ACCOUNT_TRANSFERS:
        error = sumzero_get_account_transfers(session->client, packet.events, packet.results,
                                              packet.result_capacity, &result_count);
        break;
    default:
        error = sumzero_get_account_balances(session->client, packet.events, packet.results,
                                             packet.result_capacity, &result_count);
        break;
    }
    if (error != 0) return call_error(session->address, error, session->timeout_ms);
    if (kind->output == NULL) {
        creates_print(kind, packet.results, result_count);
    } else if (kind->input == id_fields) {
        lookups_print(kind, statement, session->results, result_count);
    } else {
        for (uint32_t index = 0; index < result_count; index++) {
            record_print(kind->output, session->results + (size_t)index * 128u);
        }
    }
    fflush(stdout);
    return EX_OK;
}

static bool line_blank(const char *line) {
    for (; *line != '\0'; line++) {
        if (*line == '#') return true;
        if (*line != ' ' && *line != '\t' && *line != '\r' && *line != '\n') return false;
    }
    return true;
}

/* The prompt: one statement per line until end of input or `quit`. Returns the first
 * failing statement's exit code, or 0. */
static int interactive_run(session_t *session) {
    bool terminal = isatty(STDIN_FILENO);
    int exit_code = EX_OK;
    char *line = NULL;
    size_t line_size = 0;
    for (;;) {
        if (terminal) {
            printf("sumzero> ");
            fflush(stdout);
        }
        ssize_t length = getline(&line, &line_size, stdin);
        if (length < 0) break;
        if ((size_t)length > LINE_SIZE_MAX) {
            fprintf(stderr, "sumzero client: a line longer than %u bytes\n", LINE_SIZE_MAX);
            if (exit_code == EX_OK) exit_code = EX_USAGE;
            continue;
        }
        if (line_blank(line)) continue;
        char word[8] = {0};
        if (sscanf(line, " %7s", word) == 1 && (strcmp(word, "quit") == 0 ||
                                                strcmp(word, "exit") == 0)) {
            break;
        }
        if (strcmp(word, "help") == 0) {
            client_usage(stdout);
            continue;
        }
        int code = statement_run(session, line);
        if (code != EX_OK && exit_code == EX_OK) exit_code = code;
    }
    free(line);
    if (terminal) putchar('\n');
    return exit_code;
}

typedef struct client_flags {
    const char *address;
    const char *cluster_id;
    const char *timeout_ms;
} client_flags_t;

/* Returns EX_OK, EX_USAGE, or -1 after --help. */
static int client_parse(int argc, char **argv, client_flags_t *flags) {
    static const struct option long_options[] = {
        {"address", required_argument, NULL, 'a'},
        {"addresses", required_argument, NULL, 'a'},
        {"cluster", required_argument, NULL, 'c'},
        {"cluster-id", required_argument, NULL, 'c'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    flags->address = getenv("SUMZERO_ADDRESS");
    flags->cluster_id = getenv("SUMZERO_CLUSTER");
    if (flags->address == NULL || flags->address[0] == '\0') flags->address = "127.0.0.1:3000";
    optind = 1;
    int option;
    /* "+": options end at the operation, so FIELD=VALUE words are never taken for them. */
    while ((option = getopt_long(argc, argv, "+h", long_options, NULL)) != -1) {
        switch (option) {
        case 'a': flags->address = optarg; break;
        case 'c': flags->cluster_id = optarg; break;
        case 't': flags->timeout_ms = optarg; break;
        case 'h': client_usage(stdout); return -1;
        default: client_usage(stderr); return EX_USAGE;
        }
    }
    return EX_OK;
}

static int client_options(const client_flags_t *flags, sumzero_client_options_t *options) {
    options->addresses = flags->address;
    if (flags->cluster_id != NULL &&
        sumzero_u128_parse(flags->cluster_id, &options->cluster_id) != 0) {
        fprintf(stderr, "sumzero client: --cluster takes a u128, not '%s'\n",
                flags->cluster_id);
        return EX_USAGE;
    }
    options->request_timeout_ms = 10000;
    if (flags->timeout_ms != NULL) {
        sumzero_u128_t value = 0;
        if (sumzero_u128_parse(flags->timeout_ms, &value) != 0 || value == 0 ||
            value > UINT32_MAX) {
            fprintf(stderr, "sumzero client: --timeout-ms takes 1..%u, not '%s'\n", UINT32_MAX,
                    flags->timeout_ms);
            return EX_USAGE;
        }
        options->request_timeout_ms = (uint32_t)value;
    }
    /* A person is waiting: a refused connection is reported after a few quick tries, not
     * after the whole timeout. */
    options->retry_max = 3;
    options->connect_timeout_ms = options->request_timeout_ms < 2000 ? options->request_timeout_ms
                                                                     : 2000;
    options->reply_timeout_ms = options->request_timeout_ms;
    return EX_OK;
}

/* The statement given on the command line, as one line. */
static char *arguments_join(int argc, char **argv) {
    size_t size = 1;
    for (int index = 0; index < argc; index++) size += strlen(argv[index]) + 1;
    char *line = malloc(size);
    if (line == NULL) return NULL;
    line[0] = '\0';
    for (int index = 0; index < argc; index++) {
        if (index > 0) strcat(line, " ");
        strcat(line, argv[index]);
    }
    return line;
}

int sz_command_client(int argc, char **argv) {
    client_flags_t flags = {0};
    int code = client_parse(argc, argv, &flags);
    if (code != EX_OK) return code < 0 ? EX_OK : code;
    sumzero_client_options_t options = {0};
    code = client_options(&flags, &options);
    if (code != EX_OK) return code;
    session_t session = {.address = flags.address, .timeout_ms = options.request_timeout_ms};
    int error = sumzero_client_open(&session.client, &options);
    if (error != 0) {
        fprintf(stderr, "sumzero client: cannot use --address '%s': %s\n", flags.address,
                error == -EINVAL ? "expected HOST:PORT, [V6]:PORT or PORT"
                                 : sumzero_error_message(error));
        return EX_USAGE;
    }
    session.statement.events = malloc((size_t)SUMZERO_BATCH_EVENTS_MAX * 128u);
    session.results = malloc((size_t)SUMZERO_BATCH_EVENTS_MAX * 128u);
    if (session.statement.events == NULL || session.results == NULL) {
        fprintf(stderr, "sumzero client: out of memory\n");
        code = EX_OSERR;
    } else if (optind < argc) {
        char *line = arguments_join(argc - optind, argv + optind);
        code = line == NULL ? EX_OSERR : statement_run(&session, line);
        free(line);
    } else {
        code = interactive_run(&session);
    }
    free(session.statement.events);
    free(session.results);
    sumzero_client_close(session.client);
    return code;
}
