/*
 * fuzz_trx.c - the TRX reader (formats/h5s_trx_read.c) on arbitrary bytes, two ways:
 * - input starting "PK\3\4": the bytes are a TRX zip archive, opened through
 *   h5s_tract_open (libzip's directory, the entry names, header.json, the sizes, dpg);
 * - anything else: the bytes are header.json of a TRX folder whose arrays are fixed and
 *   valid for NB_STREAMLINES 2 and NB_VERTICES 4 (positions, offsets, one dps, dpv, group
 *   and dpg), so the JSON parsing and its checks get every input.
 * Every streamline and group is read. Nothing may crash or leak; a rejected input's
 * message names the archive and the entry, item or byte; what is read back is
 * consistent with the header (counts, offsets, group indices below NB_STREAMLINES).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_tracts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const places[] = {"byte ", "entry", "item ", NULL};

typedef struct {
    const h5s_tract_header *h;
    uint64_t *seen; /* indices received per group */
} group_check;

static int on_group(size_t group, const uint32_t *indices, size_t n, void *payload)
{
    group_check *g = payload;
    if (group >= g->h->n_groups || n == 0 || n > 65536)
        FUZZ_TRAP();
    for (size_t i = 0; i < n; i++)
        if ((int64_t)indices[i] >= g->h->nb_streamlines)
            FUZZ_TRAP();
    g->seen[group] += n;
    return 0;
}

/* Opens path and reads everything; checks what it reads against the header. */
static void read_all(const char *path)
{
    h5s_tract_reader *r = NULL;
    int rc = h5s_tract_open(&r, path);
    if (rc != 0) {
        if (r)
            FUZZ_TRAP();
        fuzz_check_message(h5s_error_message(), path, places);
        return;
    }
    const h5s_tract_header *h = h5s_tract_reader_header(r);
    if (h->format != H5S_TRACT_TRX || h->nb_streamlines < 0 || h->nb_vertices < 0)
        FUZZ_TRAP();
    for (size_t i = 0; i < h->n_dpg; i++) {
        const h5s_tract_dpg *d = &h->dpg[i];
        if (!d->ncols || d->n_values % d->ncols || (d->n_values && (!d->values || !d->raw)))
            FUZZ_TRAP();
    }
    h5s_tract_streamline s;
    uint64_t index = 0, points = 0;
    while ((rc = h5s_tract_next(r, &s)) == 1) {
        if (s.index != index++ || (s.n_points && !s.points) || !s.dps != !h->dps_width ||
            !s.dpv != !h->dpv_width)
            FUZZ_TRAP();
        points += s.n_points;
    }
    if (rc == 0 && (index != (uint64_t)h->nb_streamlines || points != (uint64_t)h->nb_vertices))
        FUZZ_TRAP();
    fuzz_tract_error_sticks(r, rc, path, places);
    group_check g = {h, calloc(h->n_groups + 1, sizeof(uint64_t))};
    if (g.seen) {
        rc = h5s_tract_read_groups(r, on_group, &g);
        if (rc < 0)
            fuzz_check_message(h5s_error_message(), path, places);
        for (size_t i = 0; rc == 0 && i < h->n_groups; i++)
            if ((int64_t)g.seen[i] != h->groups[i].count)
                FUZZ_TRAP();
        free(g.seen);
    }
    h5s_tract_close(r);
}

/* The folder's fixed arrays: 2 streamlines of 2 points, little-endian. */
static const struct {
    const char *name;
    const char *bytes;
    size_t size;
} folder_entries[] = {
    {"positions.3.float32",
     "\0\0\0\0\0\0\0\0\0\0\0\0"
     "\0\0\x80\x3f\0\0\0\x40\0\0\x40\x40"
     "\0\0\x80\x40\0\0\xa0\x40\0\0\xc0\x40"
     "\0\0\xe0\x40\0\0\0\x41\0\0\x10\x41",
     48},
    {"offsets.uint64", "\0\0\0\0\0\0\0\0\2\0\0\0\0\0\0\0\4\0\0\0\0\0\0\0", 24},
    {"dps/weight.float32", "\0\0\0\x3f\0\0\xc0\x3f", 8},
    {"dpv/color.3.uint8", "\1\2\3\4\5\6\7\10\11\12\13\14", 12},
    {"groups/bundle.uint32", "\1\0\0\0", 4},
    {"dpg/bundle/mean.float32", "\0\0\x20\x40", 4},
};
#define N_FOLDER_ENTRIES (sizeof folder_entries / sizeof folder_entries[0])

static int put_file(const char *dir, const char *name, const void *bytes, size_t size)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    int ok = fwrite(bytes, 1, size, fp) == size;
    return fclose(fp) == 0 && ok ? 0 : -1;
}

static void remove_folder(const char *dir)
{
    static const char *const subs[] = {"dpg/bundle", "dpg", "dps", "dpv", "groups"};
    char path[1100];
    for (size_t i = 0; i < N_FOLDER_ENTRIES; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, folder_entries[i].name);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/header.json", dir);
    unlink(path);
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subs[i]);
        rmdir(path);
    }
    rmdir(dir);
}

static void folder_case(const uint8_t *data, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    char dir[1024], sub[1100];
    int n = snprintf(dir, sizeof dir, "%s/h5s-fuzz-trx-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (n < 0 || (size_t)n >= sizeof dir || !mkdtemp(dir))
        return;
    static const char *const subs[] = {"dps", "dpv", "groups", "dpg", "dpg/bundle"};
    int ok = put_file(dir, "header.json", data, size) == 0;
    for (size_t i = 0; ok && i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, subs[i]);
        ok = mkdir(sub, 0700) == 0;
    }
    for (size_t i = 0; ok && i < N_FOLDER_ENTRIES; i++)
        ok = put_file(dir, folder_entries[i].name, folder_entries[i].bytes,
                      folder_entries[i].size) == 0;
    if (ok)
        read_all(dir);
    remove_folder(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 4 && memcmp(data, "PK\3\4", 4) == 0) {
        char path[4096];
        if (fuzz_tmpfile(path, sizeof path, ".trx", data, size) != 0)
            return 0;
        read_all(path);
        unlink(path);
        return 0;
    }
    folder_case(data, size);
    return 0;
}
