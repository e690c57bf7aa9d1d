/* source.h: where the projector gets committed ops from. Two sources give the same thing,
 * the journal's entries in op order, header and body exactly as journaled:
 * - the server's subscription (source_server.c): a TCP connection to a running server
 *   that streams every entry once it has committed (docs/PROTOCOL.md, "Subscriptions");
 * - a journal directory read directly (source_journal.c): offline projection, tests and
 *   benchmarks; it ends at the end of the journal.
 *
 * Contract:
 * - One thread uses a source. Entries come in op order without gaps from op_from; the
 *   source checks each entry (sz_journal_header_check(), the body checksum, the cluster
 *   and the hash chain from the entry before it) and never hands out one that fails:
 *   that is an error, not an entry.
 * - next() returns 1 with *header_out and *body_out valid until the following call, 0 when
 *   nothing arrived within timeout_ms (a server source that lost its connection
 *   reconnects by itself and resumes after the last entry it handed out), -ENODATA at the
 *   end of a journal source, or another negative errno (error_message says what).
 * - sz_source_server_open() makes the first subscription itself and fails rather than
 *   retrying: -ECONNREFUSED / -ETIMEDOUT (no server), -EPROTO (refused: another cluster,
 *   op_from past the server's committed op), -ENOENT (op_from retired from its journal);
 *   error_out says which. Later losses are retried inside next().
 * - close() accepts NULL. */
#ifndef SZ_SOURCE_H
#define SZ_SOURCE_H

#include <stdint.h>

#include "journal/journal.h"

typedef struct sz_source sz_source_t;

struct sz_source {
    int (*next)(sz_source_t *source, const sz_journal_header_t **header_out,
                const void **body_out, int timeout_ms);
    void (*close)(sz_source_t *source);
    char error_message[256];
};

typedef struct sz_source_server_options {
    const char *address;  /* "host:port" of the server */
    sz_u128 cluster_id;
    uint64_t op_from;     /* the first op wanted (1: from the beginning) */
    uint32_t connect_timeout_ms; /* 0: 5000 */
} sz_source_server_options_t;

SZ_MUST_USE int sz_source_server_open(const sz_source_server_options_t *options,
                                      sz_source_t **source_out, char *error_out,
                                      size_t error_size);

/* Reads DIR's journal read-only (no lock; a running server may be writing it, and only
 * entries already on disk are seen). */
SZ_MUST_USE int sz_source_journal_open(const char *data_directory, uint64_t op_from,
                                       sz_source_t **source_out, char *error_out,
                                       size_t error_size);

static inline int sz_source_next(sz_source_t *source, const sz_journal_header_t **header_out,
                                 const void **body_out, int timeout_ms) {
    return source->next(source, header_out, body_out, timeout_ms);
}
static inline void sz_source_close(sz_source_t *source) {
    if (source != NULL) source->close(source);
}

#endif
