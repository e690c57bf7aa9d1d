/* gateway.h: the gateway thread. It owns every socket: accepts clients, reads and checks
 * frames, pushes checked requests to the ledger thread through the request ring, and
 * writes the replies it gets back through the reply ring. It also serves the Prometheus
 * text metrics over HTTP.
 *
 * Contract:
 * - sz_gateway_open() binds the listening sockets (so a start-up error, such as an address
 *   in use, is reported before any thread starts) and allocates everything: the message
 *   pool (messages_max messages, message.h) and the connection table (connections_max).
 *   Nothing grows after it: memory is bounded whatever clients do.
 * - sz_gateway_run() runs on the gateway thread until sz_gateway_stop(); then it stops
 *   accepting and reading, waits for every message out in the ledger thread to come back
 *   and for replies to be written (at most drain_timeout_ns), closes every socket and
 *   returns 0. The caller then stops the ledger thread.
 * - Every byte from the network is untrusted. A frame whose header fails
 *   sz_frame_header_check() gets an error reply with the status and then the connection
 *   is closed (after a bad header, framing is lost); a frame whose body fails its checksum
 *   gets an error reply and the connection stays open. BUSY when no message is free is
 *   never sent: the gateway simply stops reading (TCP pushes back).
 * - Per client connection: at most pipeline_max requests out at once (further frames wait
 *   in the socket); requests_per_second_max and events_per_second_max (0 = no limit, token
 *   buckets refilled continuously) answered RATE_LIMITED; a connection with no complete
 *   frame, no reply byte written and nothing in the ledger for idle_timeout_ns is closed
 *   (so is one that stopped reading its replies). Beyond connections_max a new
 *   connection is accepted and closed at once. Replies from the ledger go out in the
 *   order it produced them; the gateway's own error replies may overtake them (clients
 *   match replies by request_number). Malformed frames are counted in the metrics' row
 *   of operation 0 when their operation is not a client operation.
 * - Waking: the ledger thread calls sz_gateway_wake() after pushing replies; the gateway
 *   spins briefly on the reply ring and its sockets, then sleeps in epoll_wait, so an idle
 *   server uses no CPU.
 * - sz_gateway_open() raises RLIMIT_NOFILE's soft limit when connections_max needs it,
 *   and sets metrics->request_ring / reply_ring (if NULL) for the occupancy gauges.
 * - Errors: 0 or a negative errno; error_out (may be NULL) gets one line.
 */
#ifndef SZ_GATEWAY_H
#define SZ_GATEWAY_H

#include "metrics.h"
#include "replica/message.h"
#include "replica/ring.h"
#include "stream.h"

typedef struct sz_gateway_config {
    sz_u128 cluster_id;
    const char *address;         /* "127.0.0.1:3000" (host:port; [v6]:port) */
    const char *metrics_address; /* "127.0.0.1:9100"; NULL or "" for none */
    uint32_t connections_max;    /* 0: 1024 */
    uint32_t messages_max;       /* 0: 64; at most the ring capacity */
    uint32_t pipeline_max;       /* 0: 8 */
    uint64_t requests_per_second_max; /* per connection, 0: no limit */
    uint64_t events_per_second_max;   /* per connection, 0: no limit */
    uint64_t idle_timeout_ns;    /* 0: 300 s */
    uint64_t drain_timeout_ns;   /* 0: 10 s */
    sz_ring_t *requests;         /* pushed by the gateway */
    sz_ring_t *replies;          /* popped by the gateway */
    sz_metrics_t *metrics;       /* required */
    /* Subscriptions: a connection whose subscribe request passed the checks is handed to
     * the stream thread (stream.h) if it has nothing else out and sent nothing after it;
     * else SUBSCRIPTION_INVALID and close. NULL: subscribe gets OPERATION_INVALID. */
    struct sz_stream *stream;
} sz_gateway_config_t;

typedef struct sz_gateway sz_gateway_t;

SZ_MUST_USE int sz_gateway_open(const sz_gateway_config_t *config, sz_gateway_t **gateway_out,
                                char *error_out, size_t error_size);
SZ_MUST_USE int sz_gateway_run(sz_gateway_t *gateway);
/* Any thread, async-signal-safe: asks the gateway to drain and return. */
void sz_gateway_stop(sz_gateway_t *gateway);
/* Any thread: replies are waiting in the reply ring. Cheap when the gateway is awake. */
void sz_gateway_wake(sz_gateway_t *gateway);
/* The port actually bound (for ":0" in tests). */
uint16_t sz_gateway_port(const sz_gateway_t *gateway);
uint16_t sz_gateway_metrics_port(const sz_gateway_t *gateway);
/* Accepts NULL. Not while sz_gateway_run() is running, and only once the ledger thread
 * has stopped: after a drain timeout it may still hold messages of the pool. */
void sz_gateway_close(sz_gateway_t *gateway);

#endif
