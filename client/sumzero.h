/* sumzero.h: the C client library of sumzero (libsumzero.so.0), the one header an
 * application includes. It talks to a sumzero server over TCP in the wire protocol of
 * docs/PROTOCOL.md; the ledger rules behind the results are in the project's SEMANTICS.md.
 *
 * Contract:
 *
 * Threads. sumzero_client_open() starts one background I/O thread that owns the socket.
 * Every other public function may be called from any number of application threads at
 * once on the same client (that is what makes automatic batching pay), except
 * sumzero_client_close(), which must be called once, after the application's other calls
 * on that client have returned. Callbacks run on the I/O thread: they must be short, must
 * not block, and must not call the synchronous functions or sumzero_client_close() (they
 * would wait for the thread they run on: the synchronous calls return -EDEADLK there,
 * close aborts). A callback may call sumzero_submit().
 *
 * Memory. Nothing is copied out of the caller's buffers at submission: events and result
 * buffers (and the packet itself) are borrowed from sumzero_submit() until the packet's
 * callback starts, and the caller must not touch them meanwhile. The library allocates
 * at open (about 1 MiB per request slot plus a 1 MiB receive buffer), never per call, and
 * never links a malloc replacement.
 *
 * Errors. Every fallible function returns 0 or a negative number:
 * - a negative errno for a local or transport failure: -EINVAL (bad argument), -EMSGSIZE
 *   (more than SUMZERO_BATCH_EVENTS_MAX events), -ETIMEDOUT (no answer within the
 *   request timeout), -ECONNREFUSED / -ECONNRESET / -EHOSTUNREACH ... (the server could
 *   not be reached within the retry limit), -EPROTO (the server's reply broke the
 *   protocol), -ECANCELED (the client was closed first), -EDEADLK (a synchronous call
 *   from a callback), -ENOMEM / -EMFILE ... (open only);
 * - or SUMZERO_ERROR_STATUS(status) when the server answered with a reply status other
 *   than OK (ACCOUNTS_FULL, CLUSTER_INVALID, ...): the request reached the server and
 *   nothing of it was applied. sumzero_error_status() gets the status back.
 * Per-event ledger decisions (exceeds_credits, exists, ...) are not errors: the call
 * returns 0 and the results say which events failed and why.
 * After -ETIMEDOUT, -ECANCELED or a transport error, a create may or may not have been
 * applied: submit the same events again (same ids) to find out; applied events come back
 * `exists`.
 *
 * Retries. The library resends on its own, until the request timeout (and the retry
 * limit) runs out:
 * - A broken connection, or no reply within reply_timeout_ms: reconnect (exponential
 *   backoff with jitter) and resend the very same frames, same request numbers, in
 *   request-number order. The server keeps each client's LAST write's reply and returns
 *   it to an exact retry, so that request gets its original results.
 * - BUSY, RATE_LIMITED, SHUTTING_DOWN, UNAVAILABLE (nothing was applied): wait a backoff,
 *   then send the request again under a new request number.
 * - REQUEST_STALE: the server no longer has the reply of that request number because a
 *   later write of this client has been applied since. This happens when several writes
 *   were pipelined and the connection broke: only the last applied one is answered from
 *   the server's reply cache. The library then sends the same events again under a new
 *   request number and marks the reply SUMZERO_REPLY_RESUBMITTED. Ids make creates
 *   idempotent, so nothing is applied twice, but the results are those of the second
 *   submission: an event the lost attempt had applied comes back `exists` (treat it as
 *   ok), and an event the lost attempt had rejected is judged again at the new time (an
 *   exceeds_credits may now pass). Reads are simply asked again.
 *
 * Order. Requests leave in submission order and the server applies them in that order.
 * A request that has to be resent (busy, rate limited, stale, a broken connection) may be
 * applied after requests that were sent behind it. An application that needs B applied
 * after A waits for A's reply before submitting B (the synchronous calls always do).
 *
 * Batching. While requests are out, newly submitted packets wait in a queue; when a
 * request slot frees up, the run of waiting packets with the same operation at the head of
 * the queue (create_accounts, create_transfers, lookup_accounts, lookup_transfers) is
 * merged into one request of at most batch_events_max events. Each packet still gets
 * exactly its own results: create results with indexes into its own events, lookups the
 * records of its own ids. A packet is never split, and a create packet whose last event
 * has the linked flag (an open chain) is sent alone, so a chain never runs into another
 * caller's events (the server answers linked_event_chain_open for it). Merged packets
 * share one fate for status errors (ACCOUNTS_FULL...) and timeouts: the request times out
 * at the earliest deadline among them.
 *
 * Pipelining. Up to pipeline_max requests are out at once on the connection; replies are
 * matched by request number (error replies may overtake OK replies).
 *
 * Limits: at most SUMZERO_BATCH_EVENTS_MAX events per packet and per request;
 * get_account_transfers/get_account_balances return at most SUMZERO_BATCH_EVENTS_MAX rows.
 */
#ifndef SUMZERO_H
#define SUMZERO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SUMZERO_VERSION_MAJOR 0
#define SUMZERO_VERSION_MINOR 1
#define SUMZERO_VERSION_PATCH 0

/* Events in one request (and rows in one reply). */
#define SUMZERO_BATCH_EVENTS_MAX 8190u

/* Unsigned 128-bit integers: ids, amounts, balances (minor units), cluster and client
 * ids. __extension__ keeps -Wpedantic quiet. */
__extension__ typedef unsigned __int128 sumzero_u128_t;

/* The records, byte for byte as on the wire (little-endian; the same layouts as the
 * server's, pinned there with static_asserts). Fields the server sets (balances,
 * timestamp) must be 0 in creates, as must every reserved field. */
typedef struct sumzero_account {
    sumzero_u128_t id;              /* not 0, not 2^128-1 */
    sumzero_u128_t debits_pending;  /* set by the server */
    sumzero_u128_t debits_posted;   /* set by the server */
    sumzero_u128_t credits_pending; /* set by the server */
    sumzero_u128_t credits_posted;  /* set by the server */
    sumzero_u128_t user_data_128;
    uint64_t user_data_64;
    uint32_t user_data_32;
    uint32_t reserved;
    uint32_t ledger; /* not 0 */
    uint16_t code;   /* not 0 */
    uint16_t flags;  /* SUMZERO_ACCOUNT_* */
    uint64_t timestamp; /* set by the server: ns since the Unix epoch, unique */
} sumzero_account_t; /* 128 bytes */

typedef struct sumzero_transfer {
    sumzero_u128_t id;
    sumzero_u128_t debit_account_id;
    sumzero_u128_t credit_account_id;
    sumzero_u128_t amount;
    sumzero_u128_t pending_id; /* post/void only: the pending transfer it resolves */
    sumzero_u128_t user_data_128;
    uint64_t user_data_64;
    uint32_t user_data_32;
    uint32_t timeout; /* seconds, pending transfers only; 0 = never expires */
    uint32_t ledger;
    uint16_t code;
    uint16_t flags; /* SUMZERO_TRANSFER_* */
    uint64_t timestamp; /* set by the server */
} sumzero_transfer_t; /* 128 bytes */

/* One row of an account's balance history (accounts with SUMZERO_ACCOUNT_HISTORY). */
typedef struct sumzero_account_balance {
    sumzero_u128_t debits_pending;
    sumzero_u128_t debits_posted;
    sumzero_u128_t credits_pending;
    sumzero_u128_t credits_posted;
    uint64_t timestamp; /* of the transfer after which the account had these balances */
    uint8_t reserved[56];
} sumzero_account_balance_t; /* 128 bytes */

/* The query of get_account_transfers and get_account_balances. An invalid filter
 * (account id 0 or 2^128-1, limit 0, neither debits nor credits, min > max, reserved
 * bits) returns no rows, not an error. */
typedef struct sumzero_account_filter {
    sumzero_u128_t account_id;
    uint64_t timestamp_min; /* inclusive; 0 = open */
    uint64_t timestamp_max; /* inclusive; 0 = open */
    uint32_t limit;         /* rows at most (the library also caps it, see below) */
    uint32_t flags;         /* SUMZERO_FILTER_* */
    uint8_t reserved[24];
} sumzero_account_filter_t; /* 64 bytes */

/* The result of one create event that was not ok: index into the caller's own events. */
typedef struct sumzero_create_result {
    uint32_t index;
    uint32_t result; /* sumzero_create_account_result_t or sumzero_create_transfer_result_t */
} sumzero_create_result_t; /* 8 bytes */

/* Account flags. */
enum {
    SUMZERO_ACCOUNT_LINKED = 1u << 0,
    SUMZERO_ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS = 1u << 1,
    SUMZERO_ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS = 1u << 2,
    SUMZERO_ACCOUNT_HISTORY = 1u << 3,
};

/* Transfer flags. */
enum {
    SUMZERO_TRANSFER_LINKED = 1u << 0,
    SUMZERO_TRANSFER_PENDING = 1u << 1,
    SUMZERO_TRANSFER_POST_PENDING = 1u << 2,
    SUMZERO_TRANSFER_VOID_PENDING = 1u << 3,
    SUMZERO_TRANSFER_BALANCING_DEBIT = 1u << 4,
    SUMZERO_TRANSFER_BALANCING_CREDIT = 1u << 5,
};

/* Account filter flags. */
enum {
    SUMZERO_FILTER_DEBITS = 1u << 0,
    SUMZERO_FILTER_CREDITS = 1u << 1,
    SUMZERO_FILTER_REVERSED = 1u << 2,
};

/* Operations (the wire numbers). */
typedef enum sumzero_operation {
    SUMZERO_OPERATION_CREATE_ACCOUNTS = 1,       /* accounts in, create results out */
    SUMZERO_OPERATION_CREATE_TRANSFERS = 2,      /* transfers in, create results out */
    SUMZERO_OPERATION_LOOKUP_ACCOUNTS = 3,       /* u128 ids in, accounts out */
    SUMZERO_OPERATION_LOOKUP_TRANSFERS = 4,      /* u128 ids in, transfers out */
    SUMZERO_OPERATION_GET_ACCOUNT_TRANSFERS = 5, /* one filter in, transfers out */
    SUMZERO_OPERATION_GET_ACCOUNT_BALANCES = 6,  /* one filter in, balances out */
} sumzero_operation_t;

/* Reply statuses: whether a request reached the ledger at all (docs/PROTOCOL.md). Every
 * status but OK means nothing was applied. */
typedef enum sumzero_status {
    SUMZERO_STATUS_OK = 0,
    SUMZERO_STATUS_HEADER_CHECKSUM_INVALID = 1,
    SUMZERO_STATUS_MAGIC_INVALID = 2,
    SUMZERO_STATUS_VERSION_UNSUPPORTED = 3,
    SUMZERO_STATUS_COMMAND_INVALID = 4,
    SUMZERO_STATUS_CLUSTER_INVALID = 5,   /* options.cluster_id is not the server's */
    SUMZERO_STATUS_CLIENT_ID_INVALID = 6,
    SUMZERO_STATUS_OPERATION_INVALID = 7,
    SUMZERO_STATUS_BODY_TOO_LARGE = 8,
    SUMZERO_STATUS_BODY_SIZE_INVALID = 9,
    SUMZERO_STATUS_BODY_CHECKSUM_INVALID = 10,
    SUMZERO_STATUS_RESERVED_NOT_ZERO = 11,
    SUMZERO_STATUS_BUSY = 12,             /* retried by the library */
    SUMZERO_STATUS_RATE_LIMITED = 13,     /* retried by the library */
    SUMZERO_STATUS_ACCOUNTS_FULL = 14,    /* the ledger's capacity is reached */
    SUMZERO_STATUS_TRANSFERS_FULL = 15,
    SUMZERO_STATUS_PENDING_FULL = 16,
    SUMZERO_STATUS_HISTORY_FULL = 17,
    SUMZERO_STATUS_TIMESTAMP_EXHAUSTED = 18,
    SUMZERO_STATUS_REQUEST_STALE = 19,    /* resubmitted by the library */
    SUMZERO_STATUS_REQUEST_CONFLICT = 20,
    SUMZERO_STATUS_SHUTTING_DOWN = 21,    /* retried by the library */
    SUMZERO_STATUS_UNAVAILABLE = 22,      /* retried by the library */
    /* Subscriptions only (docs/PROTOCOL.md); the library never subscribes. */
    SUMZERO_STATUS_SUBSCRIBERS_FULL = 23,
    SUMZERO_STATUS_OP_RETIRED = 24,
    SUMZERO_STATUS_OP_AHEAD = 25,
    SUMZERO_STATUS_SUBSCRIPTION_INVALID = 26,
} sumzero_status_t;

/* The error a call returns for a reply status other than OK, and back. Errnos stay
 * below 4096, so the two never overlap. */
#define SUMZERO_ERROR_STATUS_BASE 4096
#define SUMZERO_ERROR_STATUS(status) (-(SUMZERO_ERROR_STATUS_BASE + (int)(status)))

/* The status carried by error, or SUMZERO_STATUS_OK when error is 0 or an errno. */
static inline sumzero_status_t sumzero_error_status(int error) {
    if (error > -SUMZERO_ERROR_STATUS_BASE) return SUMZERO_STATUS_OK;
    return (sumzero_status_t)(-error - SUMZERO_ERROR_STATUS_BASE);
}

/* create_accounts results (the number is the precedence: the lower wins). */
typedef enum sumzero_create_account_result {
    SUMZERO_CREATE_ACCOUNT_OK = 0,
    SUMZERO_CREATE_ACCOUNT_LINKED_EVENT_FAILED = 1,
    SUMZERO_CREATE_ACCOUNT_LINKED_EVENT_CHAIN_OPEN = 2,
    SUMZERO_CREATE_ACCOUNT_TIMESTAMP_MUST_BE_ZERO = 3,
    SUMZERO_CREATE_ACCOUNT_RESERVED_FIELD = 4,
    SUMZERO_CREATE_ACCOUNT_RESERVED_FLAG = 5,
    SUMZERO_CREATE_ACCOUNT_ID_MUST_NOT_BE_ZERO = 6,
    SUMZERO_CREATE_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 7,
    SUMZERO_CREATE_ACCOUNT_FLAGS_ARE_MUTUALLY_EXCLUSIVE = 8,
    SUMZERO_CREATE_ACCOUNT_DEBITS_PENDING_MUST_BE_ZERO = 9,
    SUMZERO_CREATE_ACCOUNT_DEBITS_POSTED_MUST_BE_ZERO = 10,
    SUMZERO_CREATE_ACCOUNT_CREDITS_PENDING_MUST_BE_ZERO = 11,
    SUMZERO_CREATE_ACCOUNT_CREDITS_POSTED_MUST_BE_ZERO = 12,
    SUMZERO_CREATE_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO = 13,
    SUMZERO_CREATE_ACCOUNT_CODE_MUST_NOT_BE_ZERO = 14,
    SUMZERO_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_FLAGS = 15,
    SUMZERO_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_128 = 16,
    SUMZERO_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_64 = 17,
    SUMZERO_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_USER_DATA_32 = 18,
    SUMZERO_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_LEDGER = 19,
    SUMZERO_CREATE_ACCOUNT_EXISTS_WITH_DIFFERENT_CODE = 20,
    SUMZERO_CREATE_ACCOUNT_EXISTS = 21,
    SUMZERO_CREATE_ACCOUNT_RESULT_COUNT = 22,
} sumzero_create_account_result_t;

/* create_transfers results (the number is the precedence: the lower wins). */
typedef enum sumzero_create_transfer_result {
    SUMZERO_CREATE_TRANSFER_OK = 0,
    SUMZERO_CREATE_TRANSFER_LINKED_EVENT_FAILED = 1,
    SUMZERO_CREATE_TRANSFER_LINKED_EVENT_CHAIN_OPEN = 2,
    SUMZERO_CREATE_TRANSFER_TIMESTAMP_MUST_BE_ZERO = 3,
    SUMZERO_CREATE_TRANSFER_RESERVED_FLAG = 4,
    SUMZERO_CREATE_TRANSFER_ID_MUST_NOT_BE_ZERO = 5,
    SUMZERO_CREATE_TRANSFER_ID_MUST_NOT_BE_INT_MAX = 6,
    SUMZERO_CREATE_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE = 7,
    SUMZERO_CREATE_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 8,
    SUMZERO_CREATE_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 9,
    SUMZERO_CREATE_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 10,
    SUMZERO_CREATE_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 11,
    SUMZERO_CREATE_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT = 12,
    SUMZERO_CREATE_TRANSFER_PENDING_ID_MUST_BE_ZERO = 13,
    SUMZERO_CREATE_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO = 14,
    SUMZERO_CREATE_TRANSFER_PENDING_ID_MUST_NOT_BE_INT_MAX = 15,
    SUMZERO_CREATE_TRANSFER_PENDING_ID_MUST_BE_DIFFERENT = 16,
    SUMZERO_CREATE_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = 17,
    SUMZERO_CREATE_TRANSFER_AMOUNT_MUST_NOT_BE_ZERO = 18,
    SUMZERO_CREATE_TRANSFER_LEDGER_MUST_NOT_BE_ZERO = 19,
    SUMZERO_CREATE_TRANSFER_CODE_MUST_NOT_BE_ZERO = 20,
    SUMZERO_CREATE_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND = 21,
    SUMZERO_CREATE_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND = 22,
    SUMZERO_CREATE_TRANSFER_ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER = 23,
    SUMZERO_CREATE_TRANSFER_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS = 24,
    SUMZERO_CREATE_TRANSFER_PENDING_TRANSFER_NOT_FOUND = 25,
    SUMZERO_CREATE_TRANSFER_PENDING_TRANSFER_NOT_PENDING = 26,
    SUMZERO_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = 27,
    SUMZERO_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = 28,
    SUMZERO_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_LEDGER = 29,
    SUMZERO_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CODE = 30,
    SUMZERO_CREATE_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT = 31,
    SUMZERO_CREATE_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = 32,
    SUMZERO_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED = 33,
    SUMZERO_CREATE_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED = 34,
    SUMZERO_CREATE_TRANSFER_PENDING_TRANSFER_EXPIRED = 35,
    SUMZERO_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_FLAGS = 36,
    SUMZERO_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = 37,
    SUMZERO_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = 38,
    SUMZERO_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_AMOUNT = 39,
    SUMZERO_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_PENDING_ID = 40,
    SUMZERO_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_128 = 41,
    SUMZERO_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_64 = 42,
    SUMZERO_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_USER_DATA_32 = 43,
    SUMZERO_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_TIMEOUT = 44,
    SUMZERO_CREATE_TRANSFER_EXISTS_WITH_DIFFERENT_CODE = 45,
    SUMZERO_CREATE_TRANSFER_EXISTS = 46,
    SUMZERO_CREATE_TRANSFER_OVERFLOWS_DEBITS_PENDING = 47,
    SUMZERO_CREATE_TRANSFER_OVERFLOWS_CREDITS_PENDING = 48,
    SUMZERO_CREATE_TRANSFER_OVERFLOWS_DEBITS_POSTED = 49,
    SUMZERO_CREATE_TRANSFER_OVERFLOWS_CREDITS_POSTED = 50,
    SUMZERO_CREATE_TRANSFER_OVERFLOWS_DEBITS = 51,
    SUMZERO_CREATE_TRANSFER_OVERFLOWS_CREDITS = 52,
    SUMZERO_CREATE_TRANSFER_OVERFLOWS_TIMEOUT = 53,
    SUMZERO_CREATE_TRANSFER_EXCEEDS_CREDITS = 54,
    SUMZERO_CREATE_TRANSFER_EXCEEDS_DEBITS = 55,
    SUMZERO_CREATE_TRANSFER_RESULT_COUNT = 56,
} sumzero_create_transfer_result_t;

/* Names, as the server and the CLI print them ("exceeds_credits", "busy",
 * "create_transfers"); "unknown" for a number without one. Static strings, any thread. */
const char *sumzero_create_account_result_name(uint32_t result);
const char *sumzero_create_transfer_result_name(uint32_t result);
const char *sumzero_status_name(uint32_t status);
const char *sumzero_operation_name(uint32_t operation);
/* "ok" for 0, the status name for a SUMZERO_ERROR_STATUS() error ("accounts_full"),
 * otherwise the errno's description ("Connection refused"). Static strings. */
const char *sumzero_error_message(int error);

/* The decimal form of value (buffer: at least SUMZERO_U128_DECIMAL_SIZE bytes); returns
 * buffer. And its inverse, which also takes 0x-prefixed hexadecimal: 0 or -EINVAL (empty,
 * a stray character, an overflow). */
#define SUMZERO_U128_DECIMAL_SIZE 40
char *sumzero_u128_format(sumzero_u128_t value, char *buffer);
int sumzero_u128_parse(const char *text, sumzero_u128_t *value_out);

/* "0.1.0": the library's version (may differ from the header's SUMZERO_VERSION_*). */
const char *sumzero_version(void);

/* Options of sumzero_client_open(). Zero everywhere means "the default", so
 * `sumzero_client_options_t options = {0};` is a valid start, and fields added later
 * (taken from `reserved`) keep old callers' behaviour. */
typedef struct sumzero_client_options {
    /* "HOST:PORT", "[V6]:PORT" or "PORT" (on 127.0.0.1); several separated by commas are
     * tried in turn on reconnect. NULL: "127.0.0.1:3000". Resolved at open. */
    const char *addresses;
    sumzero_u128_t cluster_id;      /* must match the server's (0 by default on both) */
    uint32_t request_timeout_ms;    /* submission to callback, retries included; 0: 30000 */
    uint32_t connect_timeout_ms;    /* one connection attempt; 0: 5000 */
    /* A connection whose oldest request has had no reply for this long is considered
     * dead: closed, reopened, and its requests resent. 0: 10000. */
    uint32_t reply_timeout_ms;
    /* Times one request may be sent again, and connection attempts in a row that may
     * fail, before its packets fail with the last error; 0: no limit but the timeout. */
    uint32_t retry_max;
    uint32_t backoff_min_ms;        /* first wait before a retry; 0: 10 */
    uint32_t backoff_max_ms;        /* the longest wait (doubling, jittered); 0: 1000 */
    uint32_t pipeline_max;          /* requests out at once; 0: 4; at most 64 */
    uint32_t batch_events_max;      /* events per merged request; 0 or above: 8190 */
    uint8_t reserved[64];           /* 0 */
} sumzero_client_options_t;

typedef struct sumzero_client sumzero_client_t;

/* Checks and copies the options, resolves the addresses, draws a random 128-bit client
 * id (getrandom), allocates everything and starts the I/O thread, which connects in the
 * background: open does not wait for the server, and a server that is down shows as
 * errors of the calls. Returns 0 and sets *client_out, or -EINVAL (a bad option or
 * address), -EHOSTUNREACH (a host name that does not resolve), -ENOMEM, -EAGAIN... */
int sumzero_client_open(sumzero_client_t **client_out, const sumzero_client_options_t *options);

/* Stops the I/O thread: packets still out get their callback with -ECANCELED (their
 * writes may or may not have been applied), closes the socket and frees the client.
 * Accepts NULL. Not from a callback (aborts). */
void sumzero_client_close(sumzero_client_t *client);

/* The client id this client sends (random, never 0). */
sumzero_u128_t sumzero_client_id(const sumzero_client_t *client);

/* Counters since open, for tests, benchmarks and metrics. Any thread. */
typedef struct sumzero_client_stats {
    uint64_t packets_submitted;    /* packets accepted by sumzero_submit (and the sync calls) */
    uint64_t packets_completed;    /* callbacks run */
    uint64_t requests_sent;        /* request numbers used: frames built */
    uint64_t requests_merged;      /* of those, frames that carry more than one packet */
    uint64_t events_sent;          /* events in the frames built */
    uint64_t requests_resent;      /* the same frame written again after a reconnect */
    uint64_t requests_resubmitted; /* sent again under a new number (busy, stale, ...) */
    uint64_t replies_received;
    uint64_t connects;             /* connections established */
    uint64_t connect_failures;
    uint64_t timeouts;             /* packets failed with -ETIMEDOUT */
} sumzero_client_stats_t;

void sumzero_client_stats(const sumzero_client_t *client, sumzero_client_stats_t *stats_out);

/* Synchronous calls. Each blocks the calling thread until the reply (or the error) and
 * returns 0 or an error as described at the top. Any number of threads at once; calls of
 * the same operation from several threads are merged into shared requests.
 *
 * Creates: results_out must have room for one result per event; *result_count_out gets
 * the number of events that were NOT ok, whose {index, result} pairs fill results_out in
 * ascending index order (an empty list: every event was applied). */
int sumzero_create_accounts(sumzero_client_t *client, const sumzero_account_t *accounts,
                            uint32_t account_count, sumzero_create_result_t *results_out,
                            uint32_t *result_count_out);
int sumzero_create_transfers(sumzero_client_t *client, const sumzero_transfer_t *transfers,
                             uint32_t transfer_count, sumzero_create_result_t *results_out,
                             uint32_t *result_count_out);

/* Lookups: the records that exist, in the order of ids (an id asked twice comes back
 * twice), missing ids left out; the output needs room for id_count records. */
int sumzero_lookup_accounts(sumzero_client_t *client, const sumzero_u128_t *ids,
                            uint32_t id_count, sumzero_account_t *accounts_out,
                            uint32_t *account_count_out);
int sumzero_lookup_transfers(sumzero_client_t *client, const sumzero_u128_t *ids,
                             uint32_t id_count, sumzero_transfer_t *transfers_out,
                             uint32_t *transfer_count_out);

/* Per-account queries: at most min(filter->limit, capacity, SUMZERO_BATCH_EVENTS_MAX)
 * rows (the library sends that smaller limit), ascending by timestamp (descending with
 * SUMZERO_FILTER_REVERSED). */
int sumzero_get_account_transfers(sumzero_client_t *client,
                                  const sumzero_account_filter_t *filter,
                                  sumzero_transfer_t *transfers_out, uint32_t transfer_capacity,
                                  uint32_t *transfer_count_out);
int sumzero_get_account_balances(sumzero_client_t *client,
                                 const sumzero_account_filter_t *filter,
                                 sumzero_account_balance_t *balances_out,
                                 uint32_t balance_capacity, uint32_t *balance_count_out);

/* Asynchronous calls: the caller owns a packet, fills the "in" fields and submits it; the
 * library answers through the callback on its I/O thread, exactly once per packet that
 * sumzero_submit() accepted. The packet, its events and its results are borrowed until
 * the callback starts; inside the callback the caller may reuse or resubmit the packet. */
typedef struct sumzero_packet sumzero_packet_t;

/* Reply flags. */
enum {
    /* Sent again under a new request number after REQUEST_STALE (see Retries above):
     * `exists` results may be this packet's own earlier effect. */
    SUMZERO_REPLY_RESUBMITTED = 1u << 0,
};

/* The outcome, set by the library just before the callback. */
typedef struct sumzero_reply {
    int error;             /* 0 or an error, as the synchronous calls return */
    uint32_t result_count; /* records written to packet->results */
    uint64_t op;           /* writes: the op that applied the request; reads: the last op
                              committed before it ran; 0 on error */
    uint64_t timestamp;    /* creates: the timestamp the server gave this packet's first
                              event (event i got timestamp + i; `exists` events keep their
                              original one); 0 otherwise */
    uint32_t flags;        /* SUMZERO_REPLY_* */
    uint32_t reserved;
} sumzero_reply_t;

typedef void (*sumzero_callback_t)(void *context, sumzero_packet_t *packet);

struct sumzero_packet {
    /* In: set by the caller before sumzero_submit(). */
    uint32_t operation;   /* sumzero_operation_t */
    uint32_t event_count; /* creates and lookups: 0..SUMZERO_BATCH_EVENTS_MAX; get_*: 1 */
    /* sumzero_account_t[], sumzero_transfer_t[], sumzero_u128_t[] ids, or one
     * sumzero_account_filter_t, by operation. */
    const void *events;
    /* The records the reply fills: sumzero_create_result_t (creates),
     * sumzero_account_t (lookup_accounts), sumzero_transfer_t (lookup_transfers,
     * get_account_transfers), sumzero_account_balance_t (get_account_balances). */
    void *results;
    /* Records results can hold: at least event_count for creates and lookups; at least 1
     * for get_* (the filter's limit is capped to it on the wire). */
    uint32_t result_capacity;
    uint32_t reserved_in;  /* 0 */
    sumzero_callback_t callback;
    void *context;

    /* Out: set by the library before the callback. */
    sumzero_reply_t reply;

    /* The library's own, while the packet is submitted: never touch. */
    void *internal[6];
};

/* Queues packet. Returns 0 (the callback will run exactly once, on the I/O thread, maybe
 * before this returns), or, without any callback: -EINVAL (unknown operation, no
 * callback, events or results NULL where needed, result_capacity too small, get_* with
 * event_count != 1, reserved_in not 0), -EMSGSIZE (more than SUMZERO_BATCH_EVENTS_MAX
 * events), -ECANCELED (the client is closing). */
int sumzero_submit(sumzero_client_t *client, sumzero_packet_t *packet);

#ifdef __cplusplus
}
#endif

#endif
