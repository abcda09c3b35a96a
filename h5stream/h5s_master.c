/*
 * h5s_master.c - the virtual-dataset master of sharded frames (h5s_master.h,
 * docs/shards.md): shard arithmetic, the live and final masters, shard status polling.
 */
#include "h5s_master.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "h5s_error.h"
#include "h5s_format.h"

/* ---- shard arithmetic ---- */

uint32_t h5s_shard_owner(uint64_t f, uint32_t ranks, uint64_t block)
{
    return (uint32_t)((f / block) % ranks);
}

uint64_t h5s_shard_local(uint64_t f, uint32_t ranks, uint64_t block)
{
    return (f / (block * ranks)) * block + f % block;
}

uint64_t h5s_shard_global(uint64_t local, uint32_t rank, uint32_t ranks, uint64_t block)
{
    return (local / block) * block * ranks + (uint64_t)rank * block + local % block;
}

uint64_t h5s_shard_count(uint64_t total, uint32_t rank, uint32_t ranks, uint64_t block)
{
    uint64_t cycle = block * ranks;
    uint64_t n = (total / cycle) * block;
    uint64_t rest = total % cycle, start = (uint64_t)rank * block;
    if (rest > start)
        n += rest - start < block ? rest - start : block;
    return n;
}

uint64_t h5s_shard_prefix(const uint64_t *counts, uint32_t ranks, uint64_t block)
{
    /* Shard r holds its frames 0 .. counts[r]-1, so its first missing global frame is
     * the position of its local frame counts[r]; the prefix ends at the earliest one. */
    uint64_t p = UINT64_MAX;
    for (uint32_t r = 0; r < ranks; r++) {
        uint64_t g = h5s_shard_global(counts[r], r, ranks, block);
        if (g < p)
            p = g;
    }
    return p;
}

int h5s_master_shard_path(char *out, size_t outsize, const char *master, uint32_t rank)
{
    const char *slash = strrchr(master, '/');
    const char *base = slash ? slash + 1 : master;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        dot = base + strlen(base);
    int n = snprintf(out, outsize, "%.*s_%u%s", (int)(dot - master), master, rank, dot);
    if (n < 0 || (size_t)n >= outsize)
        return h5s_error_set(H5S_EINVAL, "%s: shard file name too long", master);
    return 0;
}

/* ---- writing a master ---- */

typedef struct {
    const char *path; /* the master's final path, for messages */
    const h5s_master_options *o;
    const char *data;
    char fid[H5S_FORMAT_PATH_MAX];
    char ts[H5S_FORMAT_PATH_MAX];
    char (*shard_names)[H5S_FORMAT_PATH_MAX]; /* relative to the master's folder */
} master_plan;

static int check_options(const char *path, const h5s_master_options *o)
{
    if (!path || !path[0] || !o || o->version < 1)
        return h5s_error_set(H5S_EINVAL, "master: no path or options");
    if (o->ranks < 1 || o->ranks > H5S_MASTER_MAX_RANKS || o->block < 1 ||
        o->block > UINT64_MAX / H5S_MASTER_MAX_RANKS / 2)
        return h5s_error_set(H5S_EINVAL,
                             "%s: %u ranks and blocks of %llu frames: expected 1 to %u "
                             "ranks and a block >= 1",
                             path, o->ranks, (unsigned long long)o->block, H5S_MASTER_MAX_RANKS);
    if (o->rank < 1 || o->rank > 3 || h5s_dtype_size(o->dtype) == 0)
        return h5s_error_set(H5S_EINVAL, "%s: frame rank %u or dtype invalid", path, o->rank);
    for (unsigned i = 0; i < o->rank; i++)
        if (o->dims[i] == 0)
            return h5s_error_set(H5S_EINVAL, "%s: frame axis %u is empty", path, i);
    if (o->data_path && o->data_path[0] != '/')
        return h5s_error_set(H5S_EINVAL, "%s: dataset path '%s' is not absolute", path,
                             o->data_path);
    return 0;
}

static int plan_init(master_plan *p, const char *path, const h5s_master_options *o)
{
    memset(p, 0, sizeof *p);
    p->path = path;
    p->o = o;
    p->data = o->data_path ? o->data_path : H5S_FRAMES_DEFAULT_PATH;
    if (h5s_format_sidecar(p->fid, sizeof p->fid, p->data, H5S_SIDECAR_FRAME_ID) != 0 ||
        h5s_format_sidecar(p->ts, sizeof p->ts, p->data, H5S_SIDECAR_TIMESTAMP) != 0)
        return H5S_EINVAL;
    p->shard_names = calloc(o->ranks, sizeof *p->shard_names);
    if (!p->shard_names)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    for (uint32_t r = 0; r < o->ranks; r++)
        if (h5s_master_shard_path(p->shard_names[r], sizeof p->shard_names[r], base, r) != 0)
            return H5S_EINVAL;
    return 0;
}

static herr_t string_attr(hid_t loc, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    hid_t s = H5Screate(H5S_SCALAR);
    herr_t rc = -1;
    if (t >= 0 && s >= 0 && H5Tset_size(t, strlen(value) + 1) >= 0 &&
        H5Tset_strpad(t, H5T_STR_NULLTERM) >= 0) {
        hid_t a = H5Acreate2(loc, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
        if (a >= 0) {
            rc = H5Awrite(a, t, value);
            H5Aclose(a);
        }
    }
    if (t >= 0)
        H5Tclose(t);
    if (s >= 0)
        H5Sclose(s);
    return rc;
}

static herr_t scalar_attr(hid_t loc, const char *name, hid_t type, const void *value)
{
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = s >= 0 ? H5Acreate2(loc, name, type, s, H5P_DEFAULT, H5P_DEFAULT) : -1;
    herr_t rc = a >= 0 ? H5Awrite(a, type, value) : -1;
    if (a >= 0)
        H5Aclose(a);
    if (s >= 0)
        H5Sclose(s);
    return rc;
}

/* A group with its NeXus class, created with any missing parents. */
static herr_t nexus_group(hid_t file, const char *path, const char *nx_class)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0)
        return -1;
    hid_t g = h5s_format_path_exists(file, path)
                  ? H5Gopen2(file, path, H5P_DEFAULT)
                  : H5Gcreate2(file, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (g < 0)
        return -1;
    herr_t rc = nx_class ? string_attr(g, "NX_class", nx_class) : 0;
    H5Gclose(g);
    return rc;
}

static herr_t root_attrs(hid_t file, const master_plan *p, int nexus)
{
    char creator[256];
    int32_t version = 1;
    uint32_t ranks = p->o->ranks;
    uint64_t block = p->o->block;
    snprintf(creator, sizeof creator, "%s",
             p->o->creator ? p->o->creator : "h5stream " H5S_VERSION_STRING);
    if (string_attr(file, H5S_ATTR_FORMAT, "h5stream") < 0 ||
        scalar_attr(file, H5S_ATTR_FORMAT_VERSION, H5T_STD_I32LE, &version) < 0 ||
        string_attr(file, H5S_ATTR_CREATOR, creator) < 0 ||
        string_attr(file, H5S_ATTR_MODELS, "frames") < 0 ||
        scalar_attr(file, H5S_ATTR_SHARD_RANKS, H5T_STD_U32LE, &ranks) < 0 ||
        scalar_attr(file, H5S_ATTR_SHARD_BLOCK, H5T_STD_U64LE, &block) < 0)
        return -1;
    /* The shard files, comma-separated, as the mappings name them. */
    size_t len = 1;
    for (uint32_t r = 0; r < ranks; r++)
        len += strlen(p->shard_names[r]) + 1;
    char *list = malloc(len);
    if (!list)
        return -1;
    list[0] = '\0';
    for (uint32_t r = 0; r < ranks; r++) {
        if (r)
            strcat(list, ",");
        strcat(list, p->shard_names[r]);
    }
    herr_t rc = string_attr(file, H5S_ATTR_SHARD_FILES, list);
    free(list);
    if (rc < 0 || (nexus && string_attr(file, "default", "entry") < 0))
        return -1;
    return 0;
}

/* Frames of rank's shard below `below` mapped with fixed hyperslabs: the full blocks,
 * then the partial last one. Sets *n to the frame count (0: nothing to map). */
static herr_t fixed_selection(hid_t vspace, const master_plan *p, uint32_t r, uint64_t below,
                              uint64_t *n)
{
    const h5s_master_options *o = p->o;
    hsize_t start[4] = {0, 0, 0, 0}, stride[4] = {1, 1, 1, 1}, count[4] = {1, 1, 1, 1},
            block[4] = {1, 1, 1, 1};
    for (unsigned i = 0; i < o->rank; i++)
        block[i + 1] = o->dims[i];
    uint64_t c = h5s_shard_count(below, r, o->ranks, o->block);
    uint64_t full = c / o->block, rest = c % o->block;
    H5S_seloper_t op = H5S_SELECT_SET;
    *n = c;
    if (c == 0)
        return 0;
    if (full > 0) {
        start[0] = (hsize_t)r * o->block;
        stride[0] = (hsize_t)o->block * o->ranks;
        count[0] = full;
        block[0] = o->block;
        if (H5Sselect_hyperslab(vspace, op, start, stride, count, block) < 0)
            return -1;
        op = H5S_SELECT_OR;
    }
    if (rest > 0) {
        start[0] = h5s_shard_global(full * o->block, r, o->ranks, o->block);
        stride[0] = 1;
        count[0] = 1;
        block[0] = rest;
        if (H5Sselect_hyperslab(vspace, op, start, stride, count, block) < 0)
            return -1;
    }
    return 0;
}

/*
 * One virtual dataset at vpath mapping source dataset spath of every shard.
 * frame_rank 0 for the per-frame datasets. final: NULL for the live (unlimited) form,
 * else the prefix length to map with fixed selections.
 */
static int virtual_dataset(hid_t file, const master_plan *p, const char *vpath, const char *spath,
                           hid_t type, unsigned frame_rank, const void *fill, const uint64_t *final)
{
    const h5s_master_options *o = p->o;
    int rank = (int)frame_rank + 1;
    hsize_t dims[4] = {final ? *final : 0, 0, 0, 0}, maxdims[4] = {H5S_UNLIMITED, 0, 0, 0};
    for (unsigned i = 0; i < frame_rank; i++)
        dims[i + 1] = maxdims[i + 1] = o->dims[i];
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t vspace = H5Screate_simple(rank, dims, maxdims);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    int rc = dcpl < 0 || vspace < 0 || lcpl < 0 || H5Pset_fill_value(dcpl, type, fill) < 0 ||
                     H5Pset_create_intermediate_group(lcpl, 1) < 0
                 ? -1
                 : 0;
    for (uint32_t r = 0; rc == 0 && r < o->ranks; r++) {
        hsize_t start[4] = {0, 0, 0, 0}, stride[4] = {1, 1, 1, 1}, count[4] = {1, 1, 1, 1},
                block[4] = {1, 1, 1, 1}, sdims[4] = {0, 0, 0, 0};
        for (unsigned i = 0; i < frame_rank; i++)
            block[i + 1] = sdims[i + 1] = o->dims[i];
        hid_t vsel = H5Scopy(vspace);
        hid_t ssel = H5Screate_simple(rank, sdims, maxdims);
        if (vsel < 0 || ssel < 0) {
            rc = -1;
        } else if (!final) {
            /* Shard r's frames, block after block, land every N*B frames from r*B. */
            start[0] = (hsize_t)r * o->block;
            stride[0] = (hsize_t)o->block * o->ranks;
            count[0] = H5S_UNLIMITED;
            block[0] = o->block;
            rc = H5Sselect_hyperslab(vsel, H5S_SELECT_SET, start, stride, count, block) < 0;
            /* The source side: the same blocks, back to back from 0. */
            start[0] = 0;
            stride[0] = o->block;
            if (rc == 0 &&
                H5Sselect_hyperslab(ssel, H5S_SELECT_SET, start, stride, count, block) < 0)
                rc = -1;
            if (rc == 0 && H5Pset_virtual(dcpl, vsel, p->shard_names[r], spath, ssel) < 0)
                rc = -1;
        } else {
            uint64_t n = 0;
            if (H5Sselect_none(vsel) < 0 || fixed_selection(vsel, p, r, *final, &n) < 0)
                rc = -1;
            sdims[0] = n;
            count[0] = n;
            block[0] = 1;
            if (rc == 0 && n > 0) {
                hid_t fixed = H5Screate_simple(rank, sdims, NULL);
                for (unsigned i = 0; i < frame_rank; i++)
                    count[i + 1] = o->dims[i];
                if (fixed < 0 ||
                    H5Sselect_hyperslab(fixed, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
                    H5Pset_virtual(dcpl, vsel, p->shard_names[r], spath, fixed) < 0)
                    rc = -1;
                if (fixed >= 0)
                    H5Sclose(fixed);
            }
        }
        if (vsel >= 0)
            H5Sclose(vsel);
        if (ssel >= 0)
            H5Sclose(ssel);
    }
    if (rc == 0) {
        hid_t d = H5Dcreate2(file, vpath, type, vspace, lcpl, dcpl, H5P_DEFAULT);
        rc = d < 0 ? -1 : 0;
        if (d >= 0)
            H5Dclose(d);
    }
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (vspace >= 0)
        H5Sclose(vspace);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (rc != 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create the virtual dataset %s", p->path,
                                vpath);
    return 0;
}

static int status_dataset(hid_t file, const master_plan *p, int32_t state, uint64_t committed)
{
    h5s_status_row row = {state, 0.0, committed};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    row.heartbeat = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    hsize_t one = 1;
    hid_t type = h5s_format_status_type();
    hid_t space = H5Screate_simple(1, &one, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t d = H5I_INVALID_HID;
    if (type >= 0 && space >= 0 && lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0)
        d = H5Dcreate2(file, H5S_STATUS_DATASET, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = d >= 0 ? H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &row) : -1;
    if (d >= 0)
        H5Dclose(d);
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (rc < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot write %s", p->path, H5S_STATUS_DATASET);
    return 0;
}

/* Writes the whole master into tmp. final: NULL for the live form. */
static int write_master(const char *tmp, const master_plan *p, const uint64_t *final, int32_t state)
{
    const h5s_master_options *o = p->o;
    int nexus = strcmp(p->data, H5S_FRAMES_DEFAULT_PATH) == 0;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    /* Superblock 3, so readers may open it with SWMR read like any h5stream file. */
    if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST) < 0) {
        if (fapl >= 0)
            H5Pclose(fapl);
        return h5s_error_set_h5(H5S_EIO, "%s: cannot set file access properties", p->path);
    }
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", p->path, tmp);
    int rc = 0;
    if (root_attrs(file, p, nexus) < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot write the root attributes", p->path);
    if (rc == 0 && nexus &&
        (nexus_group(file, "/entry", "NXentry") < 0 ||
         nexus_group(file, "/entry/instrument", "NXinstrument") < 0 ||
         nexus_group(file, "/entry/instrument/detector", "NXdetector") < 0 ||
         nexus_group(file, "/entry/data", "NXdata") < 0))
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot create the NeXus groups", p->path);
    if (rc == 0 && nexus) {
        hid_t e = H5Gopen2(file, "/entry", H5P_DEFAULT);
        hid_t d = H5Gopen2(file, "/entry/data", H5P_DEFAULT);
        if (e < 0 || d < 0 || string_attr(e, "default", "data") < 0 ||
            string_attr(d, "signal", "data") < 0)
            rc = h5s_error_set_h5(H5S_EIO, "%s: cannot write the NeXus attributes", p->path);
        if (e >= 0)
            H5Gclose(e);
        if (d >= 0)
            H5Gclose(d);
    }
    uint64_t no_id = UINT64_MAX;
    double no_time = NAN;
    if (rc == 0)
        rc = virtual_dataset(file, p, p->data, p->data, h5s_format_h5type(o->dtype), o->rank,
                             &o->fill_value, final);
    /* The fill value is given as a double and converted to the dataset's type. */
    if (rc == 0)
        rc = virtual_dataset(file, p, p->fid, p->fid, H5T_STD_U64LE, 0, &no_id, final);
    if (rc == 0)
        rc = virtual_dataset(file, p, p->ts, p->ts, H5T_IEEE_F64LE, 0, &no_time, final);
    if (rc == 0) {
        const char *slash = strrchr(p->ts, '/');
        hid_t d = H5Dopen2(file, p->data, H5P_DEFAULT);
        if (d < 0 || string_attr(d, H5S_ATTR_PER_FRAME, slash + 1) < 0)
            rc = h5s_error_set_h5(H5S_EIO, "%s: cannot write %s", p->path, H5S_ATTR_PER_FRAME);
        if (d >= 0)
            H5Dclose(d);
    }
    if (rc == 0 && nexus &&
        H5Lcreate_hard(file, p->data, file, H5S_FRAMES_NXDATA_LINK, H5P_DEFAULT, H5P_DEFAULT) < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot link %s", p->path, H5S_FRAMES_NXDATA_LINK);
    if (rc == 0)
        rc = status_dataset(file, p, state, final ? *final : 0);
    if (H5Fclose(file) < 0 && rc == 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot close %s", p->path, tmp);
    return rc;
}

/* Writes into "PATH.tmp-PID", then renames it over path. */
static int write_and_rename(const char *path, const h5s_master_options *o, const uint64_t *final,
                            int32_t state)
{
    master_plan p;
    memset(&p, 0, sizeof p);
    int rc = check_options(path, o);
    if (rc == 0)
        rc = plan_init(&p, path, o);
    char *tmp = NULL;
    if (rc == 0) {
        size_t n = strlen(path) + 32;
        tmp = malloc(n);
        if (!tmp)
            rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
        else
            snprintf(tmp, n, "%s.tmp-%ld", path, (long)getpid());
    }
    if (rc == 0) {
        H5E_auto2_t fn;
        void *data;
        H5Eget_auto2(H5E_DEFAULT, &fn, &data);
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        rc = write_master(tmp, &p, final, state);
        H5Eset_auto2(H5E_DEFAULT, fn, data);
        if (rc == 0 && rename(tmp, path) != 0)
            rc = h5s_error_set(H5S_EIO, "%s: cannot rename %s over it", path, tmp);
        if (rc != 0)
            unlink(tmp);
    }
    free(tmp);
    free(p.shard_names);
    return rc;
}

int h5s_master_create(const char *path, const h5s_master_options *opts)
{
    return write_and_rename(path, opts, NULL, H5S_STATE_WRITING);
}

int h5s_master_finalize(const char *path, const h5s_master_options *opts, const uint64_t *counts,
                        int32_t state, uint64_t *out_frames)
{
    if (!counts || !opts)
        return h5s_error_set(H5S_EINVAL, "master: no counts or options");
    int rc = check_options(path, opts);
    if (rc != 0)
        return rc;
    uint64_t prefix = h5s_shard_prefix(counts, opts->ranks, opts->block);
    rc = write_and_rename(path, opts, &prefix, state);
    if (rc == 0 && out_frames)
        *out_frames = prefix;
    return rc;
}

/* ---- polling a shard ---- */

int h5s_master_shard_poll(h5s_shard_status *out, const char *shard_path, const char *data_path)
{
    if (!out || !shard_path)
        return h5s_error_set(H5S_EINVAL, "h5s_master_shard_poll: NULL argument");
    memset(out, 0, sizeof *out);
    out->state = -1;
    struct stat st;
    if (stat(shard_path, &st) != 0)
        return 0;
    out->exists = 1;
    char fid_path[H5S_FORMAT_PATH_MAX];
    if (h5s_format_sidecar(fid_path, sizeof fid_path,
                           data_path ? data_path : H5S_FRAMES_DEFAULT_PATH,
                           H5S_SIDECAR_FRAME_ID) != 0)
        return H5S_EINVAL;
    H5E_auto2_t fn;
    void *data;
    H5Eget_auto2(H5E_DEFAULT, &fn, &data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = h5s_format_swmr_read_fapl();
    /* No lock: a poll must never make the shard's writer fail to create its file. */
    if (fapl >= 0)
        H5Pset_file_locking(fapl, 0, 1);
    hid_t file = fapl >= 0 ? H5Fopen(shard_path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl) : -1;
    if (fapl >= 0)
        H5Pclose(fapl);
    if (file >= 0) {
        h5s_status_row row = {-1, 0.0, 0};
        hid_t type = h5s_format_status_type();
        hid_t d = h5s_format_path_exists(file, H5S_STATUS_DATASET)
                      ? H5Dopen2(file, H5S_STATUS_DATASET, H5P_DEFAULT)
                      : H5I_INVALID_HID;
        /* The status row is read before the marker's extent is looked at. The writer
         * grows the marker and flushes it before it writes a final state, so a shard
         * seen closed shows its final count; read the other way round, a poll racing
         * the close could pair an old extent with the closed state. */
        int row_ok =
            d >= 0 && type >= 0 && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &row) >= 0;
        hid_t m = row_ok && h5s_format_path_exists(file, fid_path)
                      ? H5Dopen2(file, fid_path, H5P_DEFAULT)
                      : H5I_INVALID_HID;
        if (m >= 0 && H5Drefresh(m) < 0) {
            H5Dclose(m);
            m = H5I_INVALID_HID;
        }
        hid_t space = m >= 0 ? H5Dget_space(m) : H5I_INVALID_HID;
        hsize_t dims[1] = {0};
        if (space >= 0 && H5Sget_simple_extent_dims(space, dims, NULL) == 1) {
            out->readable = 1;
            out->state = row.state;
            out->heartbeat = row.heartbeat;
            out->committed = row.committed;
            out->frames = dims[0];
        }
        if (space >= 0)
            H5Sclose(space);
        if (m >= 0)
            H5Dclose(m);
        if (d >= 0)
            H5Dclose(d);
        if (type >= 0)
            H5Tclose(type);
        H5Fclose(file);
    }
    H5Eclear2(H5E_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, fn, data);
    return 0;
}

/* ---- reading a master back, and recovering a run ---- */

typedef struct {
    char *data_path;
    size_t size;
    int found;
} find_first;

static int keep_first(const h5s_format_frames *frames, void *payload)
{
    find_first *f = payload;
    if (!f->found)
        snprintf(f->data_path, f->size, "%s", frames->data);
    f->found = 1;
    return 0;
}

static int read_options(const char *path, h5s_master_options *out, char *data_path,
                        size_t data_path_size, char *creator, size_t creator_size)
{
    h5s_master_options o = H5S_MASTER_OPTIONS_INIT;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 0, 1);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot open the master", path);
    int rc = 0;
    hid_t a = H5Aexists(file, H5S_ATTR_SHARD_RANKS) > 0
                  ? H5Aopen(file, H5S_ATTR_SHARD_RANKS, H5P_DEFAULT)
                  : H5I_INVALID_HID;
    if (a < 0 || H5Aread(a, H5T_NATIVE_UINT32, &o.ranks) < 0)
        rc = h5s_error_set(H5S_EFORMAT, "%s: not a shard master (no %s)", path,
                           H5S_ATTR_SHARD_RANKS);
    if (a >= 0)
        H5Aclose(a);
    a = rc == 0 && H5Aexists(file, H5S_ATTR_SHARD_BLOCK) > 0
            ? H5Aopen(file, H5S_ATTR_SHARD_BLOCK, H5P_DEFAULT)
            : H5I_INVALID_HID;
    if (rc == 0 && (a < 0 || H5Aread(a, H5T_NATIVE_UINT64, &o.block) < 0))
        rc = h5s_error_set(H5S_EFORMAT, "%s: no %s", path, H5S_ATTR_SHARD_BLOCK);
    if (a >= 0)
        H5Aclose(a);
    creator[0] = '\0';
    a = rc == 0 && H5Aexists(file, H5S_ATTR_CREATOR) > 0
            ? H5Aopen(file, H5S_ATTR_CREATOR, H5P_DEFAULT)
            : H5I_INVALID_HID;
    hid_t t = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t) &&
        H5Tget_size(t) < creator_size && H5Aread(a, t, creator) >= 0)
        o.creator = creator;
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    find_first ff = {data_path, data_path_size, 0};
    if (rc == 0 && (h5s_format_find_frames(file, path, keep_first, &ff) != 0 || !ff.found))
        rc = h5s_error_set(H5S_EFORMAT, "%s: the master has no frames dataset", path);
    hid_t d = rc == 0 ? H5Dopen2(file, data_path, H5P_DEFAULT) : H5I_INVALID_HID;
    if (rc == 0 && d < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot open %s", path, data_path);
    if (d >= 0) {
        hid_t type = H5Dget_type(d), space = H5Dget_space(d), dcpl = H5Dget_create_plist(d);
        hsize_t dims[4] = {0, 0, 0, 0};
        int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
        o.dtype = type >= 0 ? h5s_format_dtype_of(type) : H5S_DTYPE_INVALID;
        if (rank < 2 || rank > 4 || o.dtype == H5S_DTYPE_INVALID)
            rc = h5s_error_set(H5S_EFORMAT, "%s: %s is not a frames dataset of rank 2 to 4", path,
                               data_path);
        else
            H5Sget_simple_extent_dims(space, dims, NULL);
        o.rank = rank >= 2 && rank <= 4 ? (unsigned)rank - 1 : 0;
        for (unsigned i = 0; i < o.rank; i++)
            o.dims[i] = dims[i + 1];
        if (dcpl >= 0 && H5Pget_fill_value(dcpl, H5T_NATIVE_DOUBLE, &o.fill_value) < 0)
            o.fill_value = 0;
        if (dcpl >= 0)
            H5Pclose(dcpl);
        if (space >= 0)
            H5Sclose(space);
        if (type >= 0)
            H5Tclose(type);
        H5Dclose(d);
    }
    H5Fclose(file);
    H5Eclear2(H5E_DEFAULT);
    o.data_path = data_path;
    *out = o;
    return rc;
}

int h5s_master_read_options(const char *path, h5s_master_options *out, char *data_path,
                            size_t data_path_size, char *creator, size_t creator_size)
{
    if (!path || !out || !data_path || !creator || data_path_size == 0 || creator_size == 0)
        return h5s_error_set(H5S_EINVAL, "h5s_master_read_options: NULL argument");
    /* Most files asked are not masters (`h5stream recover` asks first for every file, a
     * killed writer's too): the reason goes to h5s_error_message, and HDF5 must not print
     * its stack. The caller's setting is given back. */
    H5E_auto2_t old_func = NULL;
    void *old_data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rc = read_options(path, out, data_path, data_path_size, creator, creator_size);
    H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
    return rc;
}

int h5s_master_recover(const char *path, h5s_master_recover_fn each, void *payload,
                       uint64_t *out_frames, int32_t *out_state)
{
    h5s_error_clear();
    h5s_master_options o;
    char data_path[H5S_FORMAT_PATH_MAX], creator[256];
    int rc =
        h5s_master_read_options(path, &o, data_path, sizeof data_path, creator, sizeof creator);
    if (rc)
        return rc;
    if (o.ranks < 1 || o.ranks > H5S_MASTER_MAX_RANKS || o.block < 1)
        return h5s_error_set(H5S_EFORMAT, "%s: %u shards in blocks of %llu", path,
                             (unsigned)o.ranks, (unsigned long long)o.block);
    uint64_t *counts = calloc(o.ranks, sizeof *counts);
    if (!counts)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    int32_t state = H5S_STATE_CLOSED;
    for (uint32_t r = 0; r < o.ranks && rc == 0; r++) {
        char shard[4096];
        rc = h5s_master_shard_path(shard, sizeof shard, path, r);
        if (rc)
            break;
        h5s_recover_report rep;
        memset(&rep, 0, sizeof rep);
        int src = access(shard, F_OK) == 0
                      ? h5s_recover(shard, &rep)
                      : h5s_error_set(H5S_ENOTFOUND, "%s: no such shard", shard);
        if (each)
            each(shard, r, src, &rep, payload);
        if (src == H5S_ESTATE) {
            /* Its writer is alive: the run is not over, and the master must stay live. */
            rc = h5s_error_prefix(src, "%s: shard %u", path, (unsigned)r);
            break;
        }
        h5s_shard_status st;
        h5s_master_shard_poll(&st, shard, o.data_path);
        counts[r] = st.readable ? st.frames : 0;
        /* A shard whose writer died, failed, or that is missing cuts the run short. */
        if (src != 0 || !st.readable || st.state != H5S_STATE_CLOSED || rep.was_open)
            state = H5S_STATE_FAILED;
    }
    /* Shards holding frames past the gap-free prefix mean frames the master cannot show:
     * a rank stopped early, even when its shard was recovered (and says closed) since. */
    uint64_t prefix = rc == 0 ? h5s_shard_prefix(counts, o.ranks, o.block) : 0;
    for (uint32_t r = 0; r < o.ranks && rc == 0; r++)
        if (counts[r] != h5s_shard_count(prefix, r, o.ranks, o.block))
            state = H5S_STATE_FAILED;
    uint64_t frames = 0;
    if (rc == 0)
        rc = h5s_master_finalize(path, &o, counts, state, &frames);
    free(counts);
    if (rc == 0 && out_frames)
        *out_frames = frames;
    if (rc == 0 && out_state)
        *out_state = state;
    return rc;
}
