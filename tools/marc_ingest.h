/*
 * marc_ingest.h - private to tools/: the parallel ISO 2709 ingest pipeline behind
 * `h5stream ingest marc` and `h5stream bench marc` (docs/marc-model.md, "Ingest").
 */
#ifndef H5S_MARC_INGEST_H
#define H5S_MARC_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_marc.h"
#include "h5stream.h"

typedef struct {
    const char *const *sources; /* file names, "-" = standard input (at most once) */
    size_t nsources;
    const char *output; /* the .h5 file to create */
    h5s_marc_mode mode;
    int to_utf8; /* store MARC-8 records converted to UTF-8 (originals kept) */
    int threads; /* parser threads; 0 = cores */
    h5s_codec codec;
    h5s_file_options file;    /* queue, flush policy, locking */
    const volatile int *stop; /* set (by a signal handler) to stop reading; may be NULL */
} marc_ingest_args;

typedef struct {
    uint64_t read; /* records cut from the input */
    uint64_t accepted, rejected, repaired, converted;
    uint64_t bytes_in;  /* bytes read from the sources */
    double seconds;     /* from the first read to the file's close */
    int strict_stopped; /* strict mode met a bad record (message in stop_message) */
    int source_failed;  /* the error is a source's (unreadable, or it shrank while read); the
                           file is closed with every record handed over before it */
    char stop_message[1024];
    char error[1024]; /* what failed, when marc_ingest_run returns an error */
} marc_ingest_result;

/*
 * Runs the whole ingest: reads the sources in order, cuts records with the formats/
 * scanner, checks them in parser threads, and hands them in input order to the marc model.
 * Returns 0, or a negative h5s error code for an input/output failure (result->error says
 * what); a strict stop is not an error here (result->strict_stopped). The file is closed
 * in every case, with every record handed to the model before the failure committed.
 */
int marc_ingest_run(const marc_ingest_args *a, marc_ingest_result *out);

#endif
