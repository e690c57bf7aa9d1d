/* stream.h: the stream thread: it serves subscriptions (docs/PROTOCOL.md, "Subscriptions").
 * The gateway hands it a connection that sent a subscribe request; from then on the stream
 * thread owns that socket and writes every committed journal entry from the requested op
 * on, verbatim, read from the journal files with the journal reader (journal/reader.h).
 *
 * Contract:
 * - Threads: sz_stream_run() on the stream thread until sz_stream_stop() (any thread,
 *   async-signal-safe); sz_stream_publish() from the ledger thread only (one publisher);
 *   sz_stream_subscribe() from the gateway thread only. Nothing else while it runs.
 * - The ledger never waits for a subscriber: publish() is an atomic store, plus one eventfd
 *   write only when the stream thread sleeps with subscribers waiting for new ops (so at
 *   most one per ledger pass, none while it is busy or has no subscriber). Entries are
 *   read from the files (the page cache) up to the published committed op, only as fast
 *   as each socket takes them; a subscriber far behind catches up from the files. A
 *   blocking read stalls only the stream thread.
 * - An entry is written to a subscriber only once its op is published as committed, in op
 *   order, each once, header and body as journaled (the subscriber checks them).
 * - Limits: subscribers_max subscriptions at once (beyond: SUBSCRIBERS_FULL); per
 *   subscriber one reader buffer (2 MiB) and one send buffer (1 MiB + 4 KiB), allocated when
 *   it subscribes.
 * - Refusals (one reply frame, then close): SUBSCRIBERS_FULL, RESERVED_NOT_ZERO (flags or
 *   reserved bytes), SUBSCRIPTION_INVALID (op_from 0), OP_AHEAD (op_from > committed + 1;
 *   the reply's op is the committed op), OP_RETIRED (op_from is before the first op the
 *   journal holds; the reply's op is that first op), UNAVAILABLE (the journal cannot be
 *   read). Damage met while streaming closes the subscription and is logged.
 * - Stop: closes every subscriber socket (subscribers resume from their position).
 * - Errors: 0 or a negative errno; error_out (may be NULL) gets one line. */
#ifndef SZ_STREAM_H
#define SZ_STREAM_H

#include "metrics.h"
#include "protocol.h"

#define SZ_STREAM_SUBSCRIBERS_DEFAULT 16u
#define SZ_STREAM_SUBSCRIBERS_MAX 1024u

typedef struct sz_stream_config {
    sz_u128 cluster_id;
    const char *directory;         /* the data directory (journal) */
    const char *archive_directory; /* NULL: none */
    uint32_t subscribers_max;      /* 0: SZ_STREAM_SUBSCRIBERS_DEFAULT */
    uint64_t op_committed;         /* the committed op at start (recovered) */
    sz_metrics_t *metrics;         /* required */
} sz_stream_config_t;

typedef struct sz_stream sz_stream_t;

SZ_MUST_USE int sz_stream_open(const sz_stream_config_t *config, sz_stream_t **stream_out,
                               char *error_out, size_t error_size);
SZ_MUST_USE int sz_stream_run(sz_stream_t *stream);
void sz_stream_stop(sz_stream_t *stream);
/* Accepts NULL. Not while sz_stream_run() is running. */
void sz_stream_close(sz_stream_t *stream);

/* Ledger thread: every op up to op_committed is committed (never decreases). */
void sz_stream_publish(sz_stream_t *stream, uint64_t op_committed);

/* Any thread: the oldest op a streaming subscriber still needs (UINT64_MAX when none), as
 * of the stream thread's last round. Journal retention should keep the segment holding
 * it (and later ones); a subscriber whose segment is removed anyway is closed when its
 * reader misses it, and gets OP_RETIRED when it subscribes again. */
uint64_t sz_stream_op_needed(const sz_stream_t *stream);

/* Gateway thread: hands over a connection (non-blocking socket, already out of the
 * gateway's epoll set) that sent this subscribe request (header and body checked). Returns
 * 0 (the stream thread owns fd and answers it) or -EAGAIN when its queue of handovers is
 * full (the caller keeps fd and answers SUBSCRIBERS_FULL). */
SZ_MUST_USE int sz_stream_subscribe(sz_stream_t *stream, int fd, const sz_frame_header_t *request,
                                    const sz_subscribe_request_t *body);

#endif
