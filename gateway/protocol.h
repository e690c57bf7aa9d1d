/* protocol.h: the wire protocol between clients and the server: a 128-byte frame header
 * followed by a body of fixed-size records (docs/PROTOCOL.md is the user's version).
 *
 * Contract:
 * - Everything here is pure: no I/O, no allocation, no clock; safe from any thread. The
 *   gateway, the client library, the tools and the fuzz target all use these functions,
 *   so a frame is checked the same way everywhere.
 * - Every multi-byte field is little-endian (the only byte order we build for; the
 *   static_asserts below pin the layout).
 * - Checking never asserts on frame bytes: sz_frame_header_check() and
 *   sz_frame_body_check() return a status (SZ_STATUS_OK or the first problem found, in
 *   the order documented in docs/PROTOCOL.md).
 * - Limits: a body holds at most SZ_BATCH_EVENTS_MAX records, so a frame is at most
 *   SZ_FRAME_SIZE_MAX bytes (1 MiB + 128).
 */
#ifndef SZ_PROTOCOL_H
#define SZ_PROTOCOL_H

#include "core/records.h"

#define SZ_FRAME_MAGIC 0x315A5753u /* the bytes "SWZ1" on the wire, read little-endian */
#define SZ_PROTOCOL_VERSION 1u
#define SZ_FRAME_HEADER_SIZE 128u
/* The largest body: a full batch of 128-byte events (or of 128-byte rows in a reply). */
#define SZ_FRAME_BODY_SIZE_MAX (SZ_BATCH_EVENTS_MAX * 128u)
#define SZ_FRAME_SIZE_MAX (SZ_FRAME_HEADER_SIZE + SZ_FRAME_BODY_SIZE_MAX)

/* What a frame is. */
typedef enum sz_command {
    SZ_COMMAND_REQUEST = 1, /* client to server */
    SZ_COMMAND_REPLY = 2,   /* server to client */
} sz_command_t;

/* Reply status: whether the request reached the ledger at all. Stable numbers, part of
 * the protocol; never reuse one. SZ_STATUS_OK means the body holds the ledger's results
 * (which may themselves be per-event failures, SEMANTICS.md). Every other status has an
 * empty body and means nothing was applied. */
#define SZ_STATUS_LIST(X)                                                                \
    X(OK, ok, 0)                                                                         \
    X(HEADER_CHECKSUM_INVALID, header_checksum_invalid, 1)                               \
    X(MAGIC_INVALID, magic_invalid, 2)                                                   \
    X(VERSION_UNSUPPORTED, version_unsupported, 3)                                       \
    X(COMMAND_INVALID, command_invalid, 4)                                               \
    X(CLUSTER_INVALID, cluster_invalid, 5)                                               \
    X(CLIENT_ID_INVALID, client_id_invalid, 6)                                           \
    X(OPERATION_INVALID, operation_invalid, 7)                                           \
    X(BODY_TOO_LARGE, body_too_large, 8)                                                 \
    X(BODY_SIZE_INVALID, body_size_invalid, 9)                                           \
    X(BODY_CHECKSUM_INVALID, body_checksum_invalid, 10)                                  \
    X(RESERVED_NOT_ZERO, reserved_not_zero, 11)                                          \
    X(BUSY, busy, 12)                                                                    \
    X(RATE_LIMITED, rate_limited, 13)                                                    \
    X(ACCOUNTS_FULL, accounts_full, 14)                                                  \
    X(TRANSFERS_FULL, transfers_full, 15)                                                \
    X(PENDING_FULL, pending_full, 16)                                                    \
    X(HISTORY_FULL, history_full, 17)                                                    \
    X(TIMESTAMP_EXHAUSTED, timestamp_exhausted, 18)                                      \
    X(REQUEST_STALE, request_stale, 19)                                                  \
    X(REQUEST_CONFLICT, request_conflict, 20)                                            \
    X(SHUTTING_DOWN, shutting_down, 21)                                                  \
    X(UNAVAILABLE, unavailable, 22)                                                      \
    X(SUBSCRIBERS_FULL, subscribers_full, 23)                                            \
    X(OP_RETIRED, op_retired, 24)                                                        \
    X(OP_AHEAD, op_ahead, 25)                                                            \
    X(SUBSCRIPTION_INVALID, subscription_invalid, 26)

typedef enum sz_status {
#define SZ_STATUS_ENUM(upper, lower, value) SZ_STATUS_##upper = value,
    SZ_STATUS_LIST(SZ_STATUS_ENUM)
#undef SZ_STATUS_ENUM
} sz_status_t;

#define SZ_STATUS_COUNT 27u

/* The name of a status ("ok", "busy", ...), or NULL for a number that is not one. */
const char *sz_status_name(uint32_t status);

/* On the wire, 128 bytes before every body. checksum_header is XXH3-128 of bytes
 * 16..127 (so it covers checksum_body too); checksum_body is XXH3-128 of the body (of
 * zero bytes when body_size is 0). In a reply, cluster_id, client_id, request_number,
 * trace_id and operation repeat the request's. */
typedef struct sz_frame_header {
    sz_u128 checksum_header;
    sz_u128 checksum_body;
    sz_u128 cluster_id;
    sz_u128 client_id;      /* chosen at random by the client, never 0 */
    uint64_t trace_id;      /* the client's, carried into the journal and the logs */
    uint64_t op;            /* reply: the op that applied the request (writes), or the
                               last op committed before it ran (reads); request: 0 */
    uint64_t timestamp;     /* reply to a create: T, the first event's timestamp */
    uint32_t request_number; /* per client, increasing; a retry repeats it */
    uint32_t body_size;
    uint32_t magic;
    uint8_t version;
    uint8_t command;   /* sz_command_t */
    uint8_t operation; /* sz_operation_t, client operations only */
    uint8_t reserved_a;
    uint16_t status;   /* reply: sz_status_t; request: 0 */
    uint8_t reserved[22];
} sz_frame_header_t;

static_assert(sizeof(sz_frame_header_t) == SZ_FRAME_HEADER_SIZE, "frame header");
static_assert(offsetof(sz_frame_header_t, checksum_body) == 16, "frame header");
static_assert(offsetof(sz_frame_header_t, cluster_id) == 32, "frame header");
static_assert(offsetof(sz_frame_header_t, client_id) == 48, "frame header");
static_assert(offsetof(sz_frame_header_t, trace_id) == 64, "frame header");
static_assert(offsetof(sz_frame_header_t, op) == 72, "frame header");
static_assert(offsetof(sz_frame_header_t, timestamp) == 80, "frame header");
static_assert(offsetof(sz_frame_header_t, request_number) == 88, "frame header");
static_assert(offsetof(sz_frame_header_t, body_size) == 92, "frame header");
static_assert(offsetof(sz_frame_header_t, magic) == 96, "frame header");
static_assert(offsetof(sz_frame_header_t, version) == 100, "frame header");
static_assert(offsetof(sz_frame_header_t, command) == 101, "frame header");
static_assert(offsetof(sz_frame_header_t, operation) == 102, "frame header");
static_assert(offsetof(sz_frame_header_t, status) == 104, "frame header");
static_assert(offsetof(sz_frame_header_t, reserved) == 106, "frame header");

/* Subscriptions (docs/PROTOCOL.md, "Subscriptions"): a request with this operation and
 * exactly one sz_subscribe_request_t as its body turns the connection into a stream of
 * committed journal entries from op_from on. Not a ledger operation: it never reaches
 * the ledger thread or the journal. */
#define SZ_OPERATION_SUBSCRIBE 16u

typedef struct sz_subscribe_request {
    uint64_t op_from; /* the first op wanted, >= 1 */
    uint64_t flags;   /* 0; no flag is defined yet */
    uint8_t reserved[48];
} sz_subscribe_request_t;

static_assert(sizeof(sz_subscribe_request_t) == 64, "subscribe request");
static_assert(offsetof(sz_subscribe_request_t, flags) == 8, "subscribe request");

/* Record sizes of a client operation's request body and of its OK reply body:
 * - create_accounts: sz_account_t (128) in; sz_create_result_t (8) out, only the events
 *   that were not ok, ascending by index.
 * - create_transfers: sz_transfer_t (128) in; sz_create_result_t (8) out, the same.
 * - lookup_accounts, lookup_transfers: ids (16-byte u128) in; the records found (128) out,
 *   in request order, missing ids left out.
 * - get_account_transfers, get_account_balances: exactly one sz_account_filter_t (64) in;
 *   sz_transfer_t or sz_account_balance_t rows (128) out.
 * - subscribe: exactly one sz_subscribe_request_t (64) in; no reply records (the reply
 *   header, then the stream).
 * Returns 0 for an operation that is not a client operation. */
uint32_t sz_operation_request_record_size(uint32_t operation);
uint32_t sz_operation_reply_record_size(uint32_t operation);
/* True for create_accounts and create_transfers: journaled, answered once durable. */
bool sz_operation_is_write(uint32_t operation);

/* Fills the header's magic, version and checksums for this body (body_size must already
 * be set; body may be NULL when it is 0). The caller sets every other field. */
void sz_frame_header_seal(sz_frame_header_t *header, const void *body);

/* Checks a header on its own, in this order: magic, version, header checksum, command
 * (must be `command`), reserved bytes, body size (at most SZ_FRAME_BODY_SIZE_MAX, else
 * BODY_TOO_LARGE). For requests also: client id not 0, a client operation, a status of 0,
 * and a body size that is a whole number of records (get_account_*: exactly one filter).
 * cluster_id is compared when check_cluster is true. Returns SZ_STATUS_OK or the first
 * failure. */
sz_status_t sz_frame_header_check(const sz_frame_header_t *header, sz_command_t command,
                                  sz_u128 cluster_id, bool check_cluster);

/* Checks the body against the header's checksum_body. */
sz_status_t sz_frame_body_check(const sz_frame_header_t *header, const void *body);

/* Events in a request (body_size / record size), for a header that passed the check. */
uint32_t sz_frame_event_count(const sz_frame_header_t *header);

#endif
