/* source_journal.c: the journal-directory source of source.h, for offline projection,
 * tests and benchmarks: the entries of a data directory's journal, read with the journal
 * reader (journal/reader.h, which checks every entry and its chain), ending at the end of
 * what is on disk. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal/reader.h"
#include "source.h"

typedef struct source_journal {
    sz_source_t source; /* first: the caller's pointer is this struct's */
    sz_journal_reader_t *reader;
} source_journal_t;

static int source_journal_next(sz_source_t *source, const sz_journal_header_t **header_out,
                               const void **body_out, int timeout_ms) {
    (void)timeout_ms; /* a directory has no one to wait for */
    source_journal_t *journal = (source_journal_t *)source;
    sz_journal_problem_t problem;
    memset(&problem, 0, sizeof(problem));
    int result = sz_journal_reader_next(journal->reader, UINT64_MAX, header_out, body_out,
                                        &problem);
    if (result == 1) return 1;
    if (result == 0) return -ENODATA; /* the end of the journal on disk */
    snprintf(source->error_message, sizeof(source->error_message), "journal: %.40s%s%.190s",
             problem.file, problem.file[0] != 0 ? ": " : "", problem.reason);
    return result;
}

static void source_journal_close(sz_source_t *source) {
    source_journal_t *journal = (source_journal_t *)source;
    sz_journal_reader_close(journal->reader);
    free(journal);
}

int sz_source_journal_open(const char *data_directory, uint64_t op_from,
                           sz_source_t **source_out, char *error_out, size_t error_size) {
    SZ_ASSERT(data_directory != NULL && source_out != NULL);
    *source_out = NULL;
    if (op_from == 0) {
        snprintf(error_out, error_size, "journal source: ops start at 1");
        return -EINVAL;
    }
    source_journal_t *journal = calloc(1, sizeof(*journal));
    if (journal == NULL) {
        snprintf(error_out, error_size, "journal source: out of memory");
        return -ENOMEM;
    }
    sz_journal_reader_options_t options = {.directory = data_directory, .op_from = op_from};
    sz_journal_problem_t problem;
    memset(&problem, 0, sizeof(problem));
    int result = sz_journal_reader_open(&options, &journal->reader, &problem);
    if (result < 0) {
        snprintf(error_out, error_size, "journal %.100s: %.40s%s%.190s", data_directory, problem.file,
                 problem.file[0] != 0 ? ": " : "",
                 problem.reason[0] != 0 ? problem.reason : strerror(-result));
        free(journal);
        return result;
    }
    journal->source.next = source_journal_next;
    journal->source.close = source_journal_close;
    *source_out = &journal->source;
    return 0;
}
