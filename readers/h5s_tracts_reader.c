/*
 * h5s_tracts_reader.c - live SWMR reader of /tracts (h5s_tracts_reader.h): open with retry,
 * refresh in commit order (status, then the offsets marker, then the payload), one hyperslab
 * read per dataset per batch.
 */
#include "h5s_tracts_reader.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "h5s_error.h"
#include "h5s_rdutil.h"
#include "h5s_format.h"
#include "h5s_commit_lock.h"

/* The model's group (h5s_tracts.h's H5S_TRACTS_PATH; readers do not include the engine). */
#define H5S_TRACTS_PATH_R "/tracts"
#define TR_PATH_MAX 512
#define TR_GROUP_PATH_MAX 256 /* "/tracts/dpg/" and a name of H5S_TRACT_NAME_MAX */
/* Chunk cache of every dataset: a positions chunk is about 512 KiB; blocks read across two
 * chunks then find the first one cached, and many fields do not add up to much. */
#define TR_CHUNK_CACHE_BYTES ((size_t)2 << 20)
#define TR_CHUNK_CACHE_SLOTS 1009

typedef struct {
    hid_t id;
    char path[TR_PATH_MAX];
    h5s_dtype dtype;
    uint32_t ncols;   /* 0 for 1-D datasets */
    size_t row_bytes; /* bytes of one row in dtype */
    uint64_t extent;  /* rows as of its last refresh */
} tr_dset;

struct h5s_tracts_reader {
    char *path;
    hid_t file;
    hid_t status;
    int swmr;
    unsigned poll_ms;
    int sequential; /* no chunk cache on unfiltered datasets (options) */
    h5s_writer_state state;
    tr_dset positions, offsets;
    tr_dset *dps, *dpv, *groups, *dpg; /* as many as the header's n_dps, ... */
    h5s_tract_header hdr;
    uint64_t count; /* committed streamlines */
    uint64_t nv;    /* offsets[count] */
    /* Batch buffers, grown to the largest batch read. */
    uint64_t *offs;
    size_t offs_cap;
    void *raw;
    size_t raw_cap;
    float *pts;
    size_t pts_cap;
    double *tmp, *vdps, *vdpv;
    size_t tmp_cap, vdps_cap, vdpv_cap;
};

static void dset_close(tr_dset *d)
{
    if (d->id >= 0)
        H5Dclose(d->id);
    d->id = H5I_INVALID_HID;
}

static void close_handles(h5s_tracts_reader *r)
{
    for (size_t i = 0; i < r->hdr.n_dps && r->dps; i++)
        dset_close(&r->dps[i]);
    for (size_t i = 0; i < r->hdr.n_dpv && r->dpv; i++)
        dset_close(&r->dpv[i]);
    for (size_t i = 0; i < r->hdr.n_groups && r->groups; i++)
        dset_close(&r->groups[i]);
    for (size_t i = 0; i < r->hdr.n_dpg && r->dpg; i++)
        dset_close(&r->dpg[i]);
    for (size_t i = 0; i < r->hdr.n_dpg && r->hdr.dpg; i++) {
        free(r->hdr.dpg[i].values);
        free(r->hdr.dpg[i].raw);
    }
    free(r->dps);
    free(r->dpv);
    free(r->groups);
    free(r->dpg);
    free(r->hdr.dps);
    free(r->hdr.dpv);
    free(r->hdr.groups);
    free(r->hdr.dpg);
    r->dps = r->dpv = r->groups = r->dpg = NULL;
    r->hdr.dps = r->hdr.dpv = NULL;
    r->hdr.groups = NULL;
    r->hdr.dpg = NULL;
    r->hdr.n_dps = r->hdr.n_dpv = r->hdr.n_groups = r->hdr.n_dpg = 0;
    dset_close(&r->positions);
    dset_close(&r->offsets);
    if (r->status >= 0)
        H5Dclose(r->status);
    r->status = H5I_INVALID_HID;
    if (r->file >= 0)
        H5Fclose(r->file);
    r->file = H5I_INVALID_HID;
    r->count = r->nv = 0;
}

/* Extent along the first axis and, through ncols, the second one (0 for 1-D). */
static int dset_dims(hid_t id, int *rank, hsize_t dims[2])
{
    hid_t space = H5Dget_space(id);
    if (space < 0)
        return -1;
    int n = H5Sget_simple_extent_ndims(space);
    if (n >= 1 && n <= 2)
        H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    *rank = n;
    return n < 0 ? -1 : 0;
}

/* Opens and checks one dataset: rank 1 (want_cols 0) or 2, numeric; want_dtype INVALID = any,
 * want_cols UINT32_MAX = any width. */
static int dset_open(h5s_tracts_reader *r, tr_dset *d, const char *path, h5s_dtype want_dtype,
                     int want_rank, uint32_t want_cols)
{
    snprintf(d->path, sizeof d->path, "%s", path);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0)
        H5Pset_chunk_cache(dapl, TR_CHUNK_CACHE_SLOTS, TR_CHUNK_CACHE_BYTES, 1.0);
    d->id = H5Dopen2(r->file, path, dapl >= 0 ? dapl : H5P_DEFAULT);
    if (d->id >= 0 && dapl >= 0 && r->sequential) {
        /* HDF5 bypasses the cache for unfiltered chunks larger than it: with none, a block
         * read copies each chunk once, from the file to the caller. Filtered chunks must be
         * decoded whole, so they keep the cache (a block boundary inside one then decodes it
         * once, not twice). */
        hid_t dcpl = H5Dget_create_plist(d->id);
        int nfilters = dcpl >= 0 ? H5Pget_nfilters(dcpl) : -1;
        if (dcpl >= 0)
            H5Pclose(dcpl);
        if (nfilters == 0 && H5Pset_chunk_cache(dapl, 0, 0, 1.0) >= 0) {
            hid_t id = H5Dopen2(r->file, path, dapl);
            if (id >= 0) {
                H5Dclose(d->id);
                d->id = id;
            }
        }
    }
    if (dapl >= 0)
        H5Pclose(dapl);
    if (d->id < 0)
        return h5s_error_set_h5(H5S_EFORMAT, "%s: %s: cannot open as a dataset", r->path, path);
    hid_t type = H5Dget_type(d->id);
    d->dtype = type >= 0 ? h5s_format_dtype_of(type) : H5S_DTYPE_INVALID;
    if (type >= 0)
        H5Tclose(type);
    int rank = 0;
    hsize_t dims[2] = {0, 0};
    if (dset_dims(d->id, &rank, dims) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot get its dataspace", r->path, path);
    if (d->dtype == H5S_DTYPE_INVALID ||
        (want_dtype != H5S_DTYPE_INVALID && d->dtype != want_dtype))
        return h5s_error_set(H5S_EFORMAT, "%s: %s: element type %s, expected %s", r->path, path,
                             h5s_dtype_name(d->dtype),
                             want_dtype ? h5s_dtype_name(want_dtype) : "a number");
    if (rank != want_rank || (want_rank == 2 && want_cols != UINT32_MAX && dims[1] != want_cols) ||
        (want_rank == 2 && (dims[1] == 0 || dims[1] > UINT32_MAX)))
        return h5s_error_set(H5S_EFORMAT, "%s: %s: rank %d (%llu columns), expected rank %d%s",
                             r->path, path, rank, (unsigned long long)(rank == 2 ? dims[1] : 0),
                             want_rank, want_rank == 2 && want_cols == 3 ? " with 3 columns" : "");
    d->ncols = want_rank == 2 ? (uint32_t)dims[1] : 0;
    d->row_bytes = h5s_dtype_size(d->dtype) * (d->ncols ? d->ncols : 1);
    d->extent = dims[0];
    return 0;
}

static int dset_refresh(h5s_tracts_reader *r, tr_dset *d)
{
    if (r->swmr && H5Drefresh(d->id) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: refresh failed", r->path, d->path);
    int rank;
    hsize_t dims[2];
    if (dset_dims(d->id, &rank, dims) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot get its extent", r->path, d->path);
    d->extent = dims[0];
    return 0;
}

/* Reads rows [first, first + n) of d as memtype into buf. */
static int dset_read(h5s_tracts_reader *r, tr_dset *d, hid_t memtype, uint64_t first, uint64_t n,
                     void *buf)
{
    if (n == 0)
        return 0;
    if (first + n > d->extent) {
        int rc = dset_refresh(r, d);
        if (rc)
            return rc;
        if (first + n > d->extent)
            return h5s_error_set(H5S_EFORMAT, "%s: %s: rows %llu..%llu needed, %llu stored",
                                 r->path, d->path, (unsigned long long)first,
                                 (unsigned long long)(first + n - 1),
                                 (unsigned long long)d->extent);
    }
    hsize_t start[2] = {first, 0}, count[2] = {n, d->ncols};
    int rank = d->ncols ? 2 : 1;
    hid_t fspace = H5Dget_space(d->id);
    hid_t mspace = H5Screate_simple(rank, count, NULL);
    herr_t st = -1;
    if (fspace >= 0 && mspace >= 0 &&
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
        st = H5Dread(d->id, memtype, mspace, fspace, H5P_DEFAULT, buf);
    if (fspace >= 0)
        H5Sclose(fspace);
    if (mspace >= 0)
        H5Sclose(mspace);
    if (st < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot read rows %llu..%llu", r->path, d->path,
                                (unsigned long long)first, (unsigned long long)(first + n - 1));
    return 0;
}

/* ---- open ---- */

typedef struct {
    char (*names)[H5S_TRACT_NAME_MAX];
    size_t n, cap;
    int bad;
} name_list;

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *payload)
{
    (void)g;
    (void)info;
    name_list *l = payload;
    if (strlen(name) >= H5S_TRACT_NAME_MAX) {
        l->bad = 1;
        return 1;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        void *grown = realloc(l->names, cap * sizeof *l->names);
        if (!grown) {
            l->bad = 2;
            return 1;
        }
        l->names = grown;
        l->cap = cap;
    }
    snprintf(l->names[l->n++], H5S_TRACT_NAME_MAX, "%s", name);
    return 0;
}

/* Names of the links of group path (absent group: none). */
static int list_names(h5s_tracts_reader *r, const char *path, name_list *l)
{
    memset(l, 0, sizeof *l);
    int e = h5s_format_path_exists(r->file, path);
    if (e <= 0)
        return 0;
    hid_t g = H5Gopen2(r->file, path, H5P_DEFAULT);
    if (g < 0)
        return h5s_error_set_h5(H5S_EFORMAT, "%s: %s: not a group", r->path, path);
    herr_t st = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, l);
    H5Gclose(g);
    if (l->bad == 1)
        return h5s_error_set(H5S_EFORMAT, "%s: %s: a name of %d characters or more", r->path, path,
                             H5S_TRACT_NAME_MAX);
    if (l->bad == 2)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", r->path);
    if (st < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot list", r->path, path);
    return 0;
}

static tr_dset *dsets_new(size_t n)
{
    tr_dset *d = calloc(n ? n : 1, sizeof *d);
    for (size_t i = 0; d && i < n; i++)
        d[i].id = H5I_INVALID_HID;
    return d;
}

static int open_fields(h5s_tracts_reader *r, const char *kind, int per_vertex)
{
    char gpath[TR_GROUP_PATH_MAX];
    snprintf(gpath, sizeof gpath, "%s/%s", H5S_TRACTS_PATH_R, kind);
    name_list l;
    int rc = list_names(r, gpath, &l);
    tr_dset *d = NULL;
    h5s_tract_field *f = NULL;
    if (rc == 0 && (!(d = dsets_new(l.n)) || !(f = calloc(l.n ? l.n : 1, sizeof *f))))
        rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", r->path);
    if (per_vertex) {
        r->dpv = d;
        r->hdr.dpv = f;
    } else {
        r->dps = d;
        r->hdr.dps = f;
    }
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        char p[TR_PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", gpath, l.names[i]);
        rc = dset_open(r, &d[i], p, H5S_DTYPE_INVALID, 2, UINT32_MAX);
        if (rc == 0) {
            snprintf(f[i].name, sizeof f[i].name, "%s", l.names[i]);
            f[i].dtype = d[i].dtype;
            f[i].ncols = d[i].ncols;
        }
        if (per_vertex)
            r->hdr.n_dpv = i + 1;
        else
            r->hdr.n_dps = i + 1;
    }
    free(l.names);
    return rc;
}

static int open_groups(h5s_tracts_reader *r)
{
    name_list l;
    int rc = list_names(r, H5S_TRACTS_PATH_R "/groups", &l);
    if (rc == 0 && (!(r->groups = dsets_new(l.n)) ||
                    !(r->hdr.groups = calloc(l.n ? l.n : 1, sizeof *r->hdr.groups))))
        rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", r->path);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        char p[TR_PATH_MAX];
        snprintf(p, sizeof p, "%s/groups/%s", H5S_TRACTS_PATH_R, l.names[i]);
        rc = dset_open(r, &r->groups[i], p, H5S_UINT32, 1, 0);
        snprintf(r->hdr.groups[i].name, H5S_TRACT_NAME_MAX, "%s", l.names[i]);
        r->hdr.groups[i].count = (int64_t)r->groups[i].extent;
        r->hdr.n_groups = i + 1;
    }
    free(l.names);
    return rc;
}

static int group_known(const h5s_tracts_reader *r, const char *name)
{
    for (size_t i = 0; i < r->hdr.n_groups; i++)
        if (strcmp(r->hdr.groups[i].name, name) == 0)
            return 1;
    return 0;
}

static int read_dpg_values(h5s_tracts_reader *r, size_t i)
{
    h5s_tract_dpg *g = &r->hdr.dpg[i];
    tr_dset *d = &r->dpg[i];
    if (r->swmr && H5Drefresh(d->id) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: refresh failed", r->path, d->path);
    if (H5Dread(d->id, h5s_format_h5type(g->dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, g->raw) < 0 ||
        H5Dread(d->id, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, g->values) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot read", r->path, d->path);
    return 0;
}

static int open_dpg(h5s_tracts_reader *r)
{
    name_list groups;
    int rc = list_names(r, H5S_TRACTS_PATH_R "/dpg", &groups);
    size_t cap = 0;
    for (size_t gi = 0; rc == 0 && gi < groups.n; gi++) {
        char gpath[TR_GROUP_PATH_MAX];
        snprintf(gpath, sizeof gpath, "%s/dpg/%s", H5S_TRACTS_PATH_R, groups.names[gi]);
        if (!group_known(r, groups.names[gi])) {
            rc = h5s_error_set(H5S_EFORMAT, "%s: %s: dpg of a group that does not exist", r->path,
                               gpath);
            break;
        }
        name_list l;
        rc = list_names(r, gpath, &l);
        for (size_t i = 0; rc == 0 && i < l.n; i++) {
            if (r->hdr.n_dpg == cap) {
                cap = cap ? 2 * cap : 8;
                void *a = realloc(r->dpg, cap * sizeof *r->dpg);
                if (a)
                    r->dpg = a;
                void *b = a ? realloc(r->hdr.dpg, cap * sizeof *r->hdr.dpg) : NULL;
                if (b)
                    r->hdr.dpg = b;
                if (!a || !b) {
                    rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", r->path);
                    break;
                }
            }
            size_t k = r->hdr.n_dpg;
            tr_dset *d = &r->dpg[k];
            h5s_tract_dpg *g = &r->hdr.dpg[k];
            memset(g, 0, sizeof *g);
            d->id = H5I_INVALID_HID;
            r->hdr.n_dpg++;
            char p[TR_PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", gpath, l.names[i]);
            rc = dset_open(r, d, p, H5S_DTYPE_INVALID, 1, 0);
            if (rc)
                break;
            snprintf(g->group, sizeof g->group, "%s", groups.names[gi]);
            snprintf(g->name, sizeof g->name, "%s", l.names[i]);
            g->dtype = d->dtype;
            g->ncols = (uint32_t)d->extent;
            g->n_values = (size_t)d->extent;
            if (d->extent == 0 || d->extent > 65536) {
                rc = h5s_error_set(H5S_EFORMAT, "%s: %s: %llu values (1 to 65536 expected)",
                                   r->path, p, (unsigned long long)d->extent);
                break;
            }
            g->values = calloc(g->n_values, sizeof *g->values);
            g->raw = calloc(g->n_values, h5s_dtype_size(g->dtype));
            if (!g->values || !g->raw)
                rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", r->path);
            else
                rc = read_dpg_values(r, k);
        }
        free(l.names);
    }
    free(groups.names);
    return rc;
}

static int read_header_attrs(h5s_tracts_reader *r)
{
    hid_t g = H5Gopen2(r->file, H5S_TRACTS_PATH_R, H5P_DEFAULT);
    if (g < 0)
        return h5s_error_set_h5(H5S_EFORMAT, "%s: %s is not a group", r->path, H5S_TRACTS_PATH_R);
    double aff[16];
    int32_t dims[3];
    int ok = 1;
    const char *bad = NULL;
    hid_t a = H5Aopen(g, "VOXEL_TO_RASMM", H5P_DEFAULT);
    hid_t sp = a >= 0 ? H5Aget_space(a) : H5I_INVALID_HID;
    ok = a >= 0 && sp >= 0 && H5Sget_simple_extent_npoints(sp) == 16 &&
         H5Aread(a, H5T_NATIVE_DOUBLE, aff) >= 0;
    if (!ok)
        bad = "VOXEL_TO_RASMM (4 x 4 float64)";
    if (sp >= 0)
        H5Sclose(sp);
    if (a >= 0)
        H5Aclose(a);
    if (ok) {
        a = H5Aopen(g, "DIMENSIONS", H5P_DEFAULT);
        sp = a >= 0 ? H5Aget_space(a) : H5I_INVALID_HID;
        ok = a >= 0 && sp >= 0 && H5Sget_simple_extent_npoints(sp) == 3 &&
             H5Aread(a, H5T_NATIVE_INT32, dims) >= 0;
        if (!ok)
            bad = "DIMENSIONS (3 int32)";
        if (sp >= 0)
            H5Sclose(sp);
        if (a >= 0)
            H5Aclose(a);
    }
    H5Gclose(g);
    if (!ok)
        return h5s_error_set_h5(H5S_EFORMAT, "%s: %s: attribute %s missing or malformed", r->path,
                                H5S_TRACTS_PATH_R, bad);
    for (int i = 0; i < 16; i++)
        r->hdr.voxel_to_rasmm[i / 4][i % 4] = aff[i];
    memcpy(r->hdr.dimensions, dims, sizeof dims);
    h5s_tract_header_derive(&r->hdr);
    return 0;
}

static int read_status(h5s_tracts_reader *r)
{
    if (r->status < 0) {
        r->state = H5S_WRITER_UNKNOWN;
        return 0;
    }
    if (r->swmr && H5Drefresh(r->status) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: refresh failed", r->path, H5S_STATUS_DATASET);
    return h5s_rd_writer_state(r->status, r->path, &r->state);
}

static int refresh_unlocked(h5s_tracts_reader *r)
{
    /* Status first: "closed" is marked after the final commit, so the marker read after it
     * is final. Then the marker, then the payload it covers. */
    int rc = read_status(r);
    if (rc == 0)
        rc = dset_refresh(r, &r->offsets);
    if (rc)
        return rc;
    uint64_t e = r->offsets.extent;
    if (e >= 1 && e - 1 > r->count) {
        uint64_t last = 0;
        rc = dset_read(r, &r->offsets, H5T_NATIVE_UINT64, e - 1, 1, &last);
        if (rc)
            return rc;
        if (last < r->nv)
            return h5s_error_set(
                H5S_EFORMAT, "%s: %s: offsets[%llu] = %llu is below offsets[%llu] = %llu", r->path,
                r->offsets.path, (unsigned long long)(e - 1), (unsigned long long)last,
                (unsigned long long)r->count, (unsigned long long)r->nv);
        if (last > r->positions.extent && (rc = dset_refresh(r, &r->positions)) != 0)
            return rc;
        if (last > r->positions.extent)
            return h5s_error_set(
                H5S_EFORMAT, "%s: %s: offsets[%llu] = %llu but %s holds %llu points", r->path,
                r->offsets.path, (unsigned long long)(e - 1), (unsigned long long)last,
                r->positions.path, (unsigned long long)r->positions.extent);
        r->count = e - 1;
        r->nv = last;
    }
    for (size_t i = 0; i < r->hdr.n_groups; i++) {
        if ((rc = dset_refresh(r, &r->groups[i])) != 0)
            return rc;
        r->hdr.groups[i].count = (int64_t)r->groups[i].extent;
    }
    for (size_t i = 0; i < r->hdr.n_dpg; i++)
        if ((rc = read_dpg_values(r, i)) != 0)
            return rc;
    r->hdr.nb_streamlines = (int64_t)r->count;
    r->hdr.nb_vertices = (int64_t)r->nv;
    return 0;
}

/* One poll; a reader in the writer's process waits for a commit in progress
 * (h5s_commit_lock.h). */
static int do_refresh(h5s_tracts_reader *r)
{
    int locked = h5s_commit_read_begin(r->file);
    int rc = refresh_unlocked(r);
    h5s_commit_read_end(locked);
    return rc;
}

static int try_open(h5s_tracts_reader *r, hid_t fapl)
{
    struct stat st;
    if (stat(r->path, &st) != 0)
        return h5s_error_set(H5S_EAGAIN, "%s: %s", r->path, strerror(errno));
    r->swmr = 1;
    r->file = H5Fopen(r->path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    if (r->file < 0) {
        h5s_error_set_h5(H5S_EAGAIN, "%s: cannot open for SWMR reading", r->path);
        /* A closed file: a plain open refuses one whose writer still has it. */
        r->swmr = 0;
        r->file = H5Fopen(r->path, H5F_ACC_RDONLY, fapl);
        H5Eclear2(H5E_DEFAULT);
        if (r->file < 0)
            return H5S_EAGAIN;
    }
    int e = h5s_format_path_exists(r->file, H5S_TRACTS_PATH_R "/offsets");
    if (e <= 0)
        return h5s_error_set(H5S_ENOTFOUND, "%s: no %s/offsets", r->path, H5S_TRACTS_PATH_R);
    h5s_tract_header_init(&r->hdr);
    int rc = read_header_attrs(r);
    if (rc == 0)
        rc = dset_open(r, &r->positions, H5S_TRACTS_PATH_R "/positions", H5S_DTYPE_INVALID, 2, 3);
    if (rc == 0 && r->positions.dtype != H5S_FLOAT16 && r->positions.dtype != H5S_FLOAT32 &&
        r->positions.dtype != H5S_FLOAT64)
        rc = h5s_error_set(H5S_EFORMAT, "%s: %s: element type %s (float16, 32 or 64 expected)",
                           r->path, r->positions.path, h5s_dtype_name(r->positions.dtype));
    if (rc == 0)
        rc = dset_open(r, &r->offsets, H5S_TRACTS_PATH_R "/offsets", H5S_UINT64, 1, 0);
    if (rc == 0)
        rc = open_fields(r, "dps", 0);
    if (rc == 0)
        rc = open_fields(r, "dpv", 1);
    if (rc == 0)
        rc = open_groups(r);
    if (rc == 0)
        rc = open_dpg(r);
    if (rc)
        return rc;
    r->hdr.positions_dtype = r->positions.dtype;
    if (h5s_tract_header_layout(&r->hdr) != 0)
        return h5s_error_set(H5S_EFORMAT, "%s: %s: bad dps or dpv field", r->path,
                             H5S_TRACTS_PATH_R);
    if (h5s_format_path_exists(r->file, H5S_STATUS_DATASET) > 0) {
        r->status = H5Dopen2(r->file, H5S_STATUS_DATASET, H5P_DEFAULT);
        if (r->status < 0)
            return h5s_error_set_h5(H5S_EFORMAT, "%s: %s: cannot open", r->path,
                                    H5S_STATUS_DATASET);
    }
    return do_refresh(r);
}

int h5s_tracts_reader_open(h5s_tracts_reader **out, const char *path,
                           const h5s_tracts_reader_options *opts)
{
    static const h5s_tracts_reader_options defaults = H5S_TRACTS_READER_OPTIONS_INIT;
    if (!out)
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_reader_open: out is NULL");
    *out = NULL;
    if (!path || !path[0])
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_reader_open: no file name");
    if (!opts)
        opts = &defaults;
    if (opts->version < 1 || opts->open_timeout_ms < -1)
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_reader_open: bad options");
    h5s_hdf5_quiet();
    h5s_tracts_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return h5s_error_set(H5S_ENOMEM, "h5s_tracts_reader_open: out of memory");
    }
    r->file = r->status = r->positions.id = r->offsets.id = H5I_INVALID_HID;
    r->poll_ms = opts->poll_ms ? opts->poll_ms : 1;
    r->sequential = opts->version >= 2 && opts->sequential;
    hid_t fapl = h5s_format_swmr_read_fapl();
    if (fapl < 0) {
        h5s_tracts_reader_close(r);
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create file access properties", path);
    }
    int64_t start = h5s_rd_now_ms();
    int rc;
    for (;;) {
        rc = try_open(r, fapl);
        if (rc == 0)
            break;
        close_handles(r);
        if (rc != H5S_EAGAIN && rc != H5S_ENOTFOUND)
            break;
        int64_t elapsed = h5s_rd_now_ms() - start;
        if (opts->open_timeout_ms >= 0 && elapsed >= opts->open_timeout_ms) {
            /* A file that is not HDF5, or is cut short, will not open by waiting. */
            if (rc == H5S_EAGAIN && h5s_rd_unopenable(path) != 0) {
                rc = H5S_EFORMAT;
                break;
            }
            if (opts->open_timeout_ms > 0)
                h5s_error_prefix(rc == H5S_ENOTFOUND ? H5S_ENOTFOUND : H5S_ETIMEDOUT,
                                 "still not readable after %lld ms", (long long)elapsed);
            rc = rc == H5S_ENOTFOUND ? H5S_ENOTFOUND : H5S_ETIMEDOUT;
            break;
        }
        int64_t wait = r->poll_ms;
        if (opts->open_timeout_ms >= 0 && wait > opts->open_timeout_ms - elapsed)
            wait = opts->open_timeout_ms - elapsed;
        h5s_rd_sleep_ms(wait);
    }
    H5Pclose(fapl);
    if (rc != 0) {
        h5s_tracts_reader_close(r);
        return rc;
    }
    h5s_error_clear();
    *out = r;
    return 0;
}

const h5s_tract_header *h5s_tracts_reader_header(const h5s_tracts_reader *r)
{
    return r ? &r->hdr : NULL;
}

const char *h5s_tracts_reader_path(const h5s_tracts_reader *r)
{
    return r ? r->path : NULL;
}

int h5s_tracts_reader_refresh(h5s_tracts_reader *r, uint64_t *out_count)
{
    if (!r)
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_reader_refresh: reader is NULL");
    h5s_hdf5_quiet();
    int rc = do_refresh(r);
    if (out_count)
        *out_count = r->count;
    return rc;
}

uint64_t h5s_tracts_reader_count(const h5s_tracts_reader *r)
{
    return r ? r->count : 0;
}

h5s_writer_state h5s_tracts_reader_writer_state(const h5s_tracts_reader *r)
{
    return r ? r->state : H5S_WRITER_UNKNOWN;
}

static int refresh_cb(void *reader)
{
    return do_refresh(reader);
}

int h5s_tracts_reader_wait(h5s_tracts_reader *r, uint64_t known, int timeout_ms,
                           uint64_t *out_count)
{
    if (!r)
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_reader_wait: reader is NULL");
    h5s_hdf5_quiet();
    h5s_rd_poll p = {r,          refresh_cb, &r->count,    &r->state,
                     r->poll_ms, r->path,    "streamline", H5S_TRACTS_PATH_R};
    int rc = h5s_rd_wait(&p, known, timeout_ms);
    if (out_count)
        *out_count = r->count;
    return rc;
}

/* Grows *buf to hold n elements of size bytes. */
static int grow(h5s_tracts_reader *r, void **buf, size_t *cap, uint64_t n, size_t size)
{
    if (n <= *cap)
        return 0;
    if (n > SIZE_MAX / size)
        return h5s_error_set(H5S_ENOMEM, "%s: batch of %llu elements is too large", r->path,
                             (unsigned long long)n);
    void *p = realloc(*buf, (size_t)n * size);
    if (!p)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory for a batch of %llu elements", r->path,
                             (unsigned long long)n);
    *buf = p;
    *cap = (size_t)n;
    return 0;
}

static tr_dset *array_dset(h5s_tracts_reader *r, h5s_tracts_array which, size_t index,
                           uint64_t *limit)
{
    switch (which) {
    case H5S_TRACTS_POSITIONS:
        *limit = r->nv;
        return &r->positions;
    case H5S_TRACTS_OFFSETS:
        *limit = r->count + 1;
        return &r->offsets;
    case H5S_TRACTS_DPS:
        *limit = r->count;
        return index < r->hdr.n_dps ? &r->dps[index] : NULL;
    case H5S_TRACTS_DPV:
        *limit = r->nv;
        return index < r->hdr.n_dpv ? &r->dpv[index] : NULL;
    case H5S_TRACTS_GROUP:
        if (index >= r->hdr.n_groups)
            return NULL;
        *limit = (uint64_t)r->hdr.groups[index].count;
        return &r->groups[index];
    }
    return NULL;
}

int h5s_tracts_reader_read_rows(h5s_tracts_reader *r, h5s_tracts_array which, size_t index,
                                uint64_t first, uint64_t n, void *buf, size_t bufsize)
{
    if (!r || (!buf && n))
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_reader_read_rows: NULL argument");
    uint64_t limit = 0;
    tr_dset *d = array_dset(r, which, index, &limit);
    if (!d)
        return h5s_error_set(H5S_EINVAL, "%s: no array %d index %zu", r->path, (int)which, index);
    if (first > limit || n > limit - first)
        return h5s_error_set(H5S_ERANGE, "%s: %s: rows %llu..%llu requested, %llu committed",
                             r->path, d->path, (unsigned long long)first,
                             (unsigned long long)(first + n - (n > 0)), (unsigned long long)limit);
    if (n > SIZE_MAX / d->row_bytes || bufsize < (size_t)n * d->row_bytes)
        return h5s_error_set(H5S_EINVAL, "%s: %s: buffer of %zu bytes too small for %llu rows",
                             r->path, d->path, bufsize, (unsigned long long)n);
    h5s_hdf5_quiet();
    return dset_read(r, d, h5s_format_h5type(d->dtype), first, n, buf);
}

/* Reads fields (n_fields of them, total width `width`) over rows [first, first + n) as
 * float64 into out (n x width, row-major). */
static int read_fields(h5s_tracts_reader *r, tr_dset *d, const h5s_tract_field *f, size_t n_fields,
                       uint32_t width, uint64_t first, uint64_t n, double *out)
{
    for (size_t i = 0; i < n_fields; i++) {
        uint32_t k = f[i].ncols;
        double *dst = out;
        int rc;
        if (n_fields == 1) {
            rc = dset_read(r, &d[i], H5T_NATIVE_DOUBLE, first, n, out);
        } else {
            rc = grow(r, (void **)&r->tmp, &r->tmp_cap, n * k, sizeof(double));
            if (rc == 0)
                rc = dset_read(r, &d[i], H5T_NATIVE_DOUBLE, first, n, r->tmp);
            dst = r->tmp;
            for (uint64_t j = 0; rc == 0 && j < n; j++)
                memcpy(out + j * width + f[i].col, dst + j * k, k * sizeof(double));
        }
        if (rc)
            return rc;
    }
    return 0;
}

int h5s_tracts_reader_read(h5s_tracts_reader *r, uint64_t first, uint64_t n, unsigned what,
                           h5s_tracts_batch *out)
{
    if (!r || !out)
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_reader_read: NULL argument");
    memset(out, 0, sizeof *out);
    if (first > r->count || n > r->count - first)
        return h5s_error_set(H5S_ERANGE, "%s: %s: streamlines %llu..%llu requested, %llu committed",
                             r->path, H5S_TRACTS_PATH_R, (unsigned long long)first,
                             (unsigned long long)(first + n - (n > 0)),
                             (unsigned long long)r->count);
    h5s_hdf5_quiet();
    int rc = grow(r, (void **)&r->offs, &r->offs_cap, n + 1, sizeof(uint64_t));
    if (rc == 0)
        rc = dset_read(r, &r->offsets, H5T_NATIVE_UINT64, first, n + 1, r->offs);
    if (rc)
        return rc;
    uint64_t p0 = r->offs[0], np = r->offs[n] - p0;
    for (uint64_t i = 0; i <= n; i++) {
        if (r->offs[i] < p0 || (i && r->offs[i] < r->offs[i - 1]) || r->offs[i] > r->nv)
            return h5s_error_set(H5S_EFORMAT, "%s: %s: offsets[%llu] = %llu out of order", r->path,
                                 r->offsets.path, (unsigned long long)(first + i),
                                 (unsigned long long)r->offs[i]);
        r->offs[i] -= p0;
    }
    out->first = first;
    out->count = n;
    out->first_point = p0;
    out->n_points = np;
    out->offsets = r->offs;
    if (what & H5S_TRACTS_READ_POINTS) {
        rc = grow(r, (void **)&r->pts, &r->pts_cap, np * 3 + 1, sizeof(float));
        if (rc == 0 && r->positions.dtype == H5S_FLOAT32) {
            rc = dset_read(r, &r->positions, H5T_NATIVE_FLOAT, p0, np, r->pts);
        } else if (rc == 0) {
            /* Raw bytes, then one block conversion (F16C for float16). */
            rc = grow(r, &r->raw, &r->raw_cap, np * r->positions.row_bytes + 1, 1);
            if (rc == 0)
                rc = dset_read(r, &r->positions, h5s_format_h5type(r->positions.dtype), p0, np,
                               r->raw);
            if (rc == 0 && r->positions.dtype == H5S_FLOAT16) {
                h5s_half_to_float_n(r->pts, r->raw, (size_t)np * 3);
            } else if (rc == 0) {
                const double *s = r->raw;
                for (size_t i = 0; i < (size_t)np * 3; i++)
                    r->pts[i] = (float)s[i];
            }
        }
        if (rc)
            return rc;
        out->points = r->pts;
    }
    if ((what & H5S_TRACTS_READ_DPS) && r->hdr.dps_width) {
        rc = grow(r, (void **)&r->vdps, &r->vdps_cap, n * r->hdr.dps_width + 1, sizeof(double));
        if (rc == 0)
            rc = read_fields(r, r->dps, r->hdr.dps, r->hdr.n_dps, r->hdr.dps_width, first, n,
                             r->vdps);
        if (rc)
            return rc;
        out->dps = r->vdps;
    }
    if ((what & H5S_TRACTS_READ_DPV) && r->hdr.dpv_width) {
        rc = grow(r, (void **)&r->vdpv, &r->vdpv_cap, np * r->hdr.dpv_width + 1, sizeof(double));
        if (rc == 0)
            rc =
                read_fields(r, r->dpv, r->hdr.dpv, r->hdr.n_dpv, r->hdr.dpv_width, p0, np, r->vdpv);
        if (rc)
            return rc;
        out->dpv = r->vdpv;
    }
    return 0;
}

void h5s_tracts_reader_close(h5s_tracts_reader *r)
{
    if (!r)
        return;
    close_handles(r);
    free(r->offs);
    free(r->raw);
    free(r->pts);
    free(r->tmp);
    free(r->vdps);
    free(r->vdpv);
    free(r->path);
    free(r);
}
