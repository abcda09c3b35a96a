/*
 * h5s_volumes_reader.c - SWMR reader and exporters of the volumes model
 * (h5s_volumes_reader.h): obs first, then only the voxels it covers; hyperslab reads of
 * boxes; compound tables read generically for TSV export and --where filters.
 */
#include "h5s_volumes_reader.h"

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
#include "h5s_nifti.h"
#include "h5s_tsv.h"
#include "h5s_commit_lock.h"

#define VR_MAX_COLLECTIONS 64
#define VR_CHUNK_CACHE_BYTES ((size_t)64 << 20)

typedef struct {
    char name[H5S_VOLUMES_NAME_MAX];
    hid_t obs;
    hid_t voxels;
    h5s_collection_desc desc;
} vr_collection;

struct h5s_volumes_reader {
    char *path;
    hid_t file;
    hid_t status;
    int swmr;
    h5s_writer_state state;
    vr_collection colls[VR_MAX_COLLECTIONS];
    size_t ncolls;
};

static int read_attr_str(hid_t obj, const char *name, char *out, size_t size)
{
    out[0] = '\0';
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0)
        return -1;
    hid_t t = H5Aget_type(a);
    size_t n = t >= 0 ? H5Tget_size(t) : 0;
    int rc = -1;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t) && n < size) {
        memset(out, 0, size);
        rc = H5Aread(a, t, out) < 0 ? -1 : 0;
    }
    if (t >= 0)
        H5Tclose(t);
    H5Aclose(a);
    return rc;
}

static herr_t list_collection(hid_t g, const char *name, const H5L_info_t *info, void *payload)
{
    (void)g;
    (void)info;
    h5s_volumes_reader *r = payload;
    if (r->ncolls < VR_MAX_COLLECTIONS && strlen(name) < H5S_VOLUMES_NAME_MAX) {
        vr_collection *c = &r->colls[r->ncolls++];
        snprintf(c->name, sizeof c->name, "%s", name);
        c->obs = c->voxels = H5I_INVALID_HID;
    }
    return 0;
}

static int open_collection(h5s_volumes_reader *r, vr_collection *c)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", H5S_VOLUMES_GROUP, c->name);
    hid_t g = H5Gopen2(r->file, path, H5P_DEFAULT);
    if (g < 0)
        return h5s_error_set_h5(H5S_EFORMAT, "%s: %s is not a group", r->path, path);
    char kind[32], dtype[32];
    int bad = read_attr_str(g, H5S_VOLUMES_ATTR_KIND, kind, sizeof kind) != 0 ||
              read_attr_str(g, "dtype", dtype, sizeof dtype) != 0;
    memset(&c->desc, 0, sizeof c->desc);
    if (!bad) {
        c->desc.heterogeneous = strcmp(kind, "heterogeneous") == 0;
        bad = (!c->desc.heterogeneous && strcmp(kind, "uniform") != 0) ||
              h5s_dtype_parse(&c->desc.dtype, dtype) != 0;
    }
    if (bad) {
        H5Gclose(g);
        return h5s_error_set(H5S_EFORMAT,
                             "%s: %s: not a volumes collection (needs the %s and dtype "
                             "attributes, obs and voxels)",
                             r->path, path, H5S_VOLUMES_ATTR_KIND);
    }
    /* The writer declares both before SWMR starts: one missing is damage, named. */
    static const char *const needed[] = {"obs", "voxels"};
    for (size_t i = 0; i < 2; i++) {
        if (H5Lexists(g, needed[i], H5P_DEFAULT) <= 0) {
            H5Gclose(g);
            H5Eclear2(H5E_DEFAULT);
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: %s/%s is missing (a volumes collection has "
                                 "obs and voxels)",
                                 r->path, path, needed[i]);
        }
    }
    c->obs = H5Dopen2(g, "obs", H5P_DEFAULT);
    if (c->obs >= 0) {
        hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
        H5Pset_chunk_cache(dapl, 4093, VR_CHUNK_CACHE_BYTES, 1.0);
        c->voxels = H5Dopen2(g, "voxels", dapl);
        H5Pclose(dapl);
    }
    if (!bad && c->voxels >= 0 && !c->desc.heterogeneous) {
        hid_t space = H5Dget_space(c->voxels);
        hsize_t dims[8];
        int rank = space >= 0 ? H5Sget_simple_extent_dims(space, dims, NULL) : -1;
        if (space >= 0)
            H5Sclose(space);
        if (rank == 4 || rank == 5) {
            c->desc.ndim = rank - 1;
            for (int i = 0; i < rank - 1; i++)
                c->desc.shape[i] = dims[rank - 1 - i];
        } else {
            bad = 1;
        }
    }
    H5Gclose(g);
    if (bad || c->obs < 0 || c->voxels < 0)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: %s: not a volumes collection (needs the %s and dtype "
                             "attributes, obs and voxels)",
                             r->path, path, H5S_VOLUMES_ATTR_KIND);
    return 0;
}

static void close_all(h5s_volumes_reader *r)
{
    for (size_t i = 0; i < r->ncolls; i++) {
        if (r->colls[i].obs >= 0)
            H5Dclose(r->colls[i].obs);
        if (r->colls[i].voxels >= 0)
            H5Dclose(r->colls[i].voxels);
        r->colls[i].obs = r->colls[i].voxels = H5I_INVALID_HID;
    }
    r->ncolls = 0;
    if (r->status >= 0)
        H5Dclose(r->status);
    if (r->file >= 0)
        H5Fclose(r->file);
    r->status = r->file = H5I_INVALID_HID;
}

/* One attempt: 0 open, 1 not yet (why in reason), <0 a final error. */
static int try_open(h5s_volumes_reader *r, char *reason, size_t rsize)
{
    struct stat st;
    if (stat(r->path, &st) != 0) {
        snprintf(reason, rsize, "the file does not exist");
        return 1;
    }
    hid_t fapl = h5s_format_swmr_read_fapl();
    r->file = H5Fopen(r->path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    r->swmr = 1;
    if (r->file < 0) {
        r->file = H5Fopen(r->path, H5F_ACC_RDONLY, fapl);
        r->swmr = 0;
    }
    H5Pclose(fapl);
    H5Eclear2(H5E_DEFAULT);
    if (r->file < 0) {
        snprintf(reason, rsize, "HDF5 cannot open it yet (its writer has not started SWMR?)");
        return 1;
    }
    if (!h5s_format_path_exists(r->file, H5S_VOLUMES_GROUP)) {
        snprintf(reason, rsize, "it has no %s group", H5S_VOLUMES_GROUP);
        close_all(r);
        return 1;
    }
    /* The subject table is part of the model's layout, declared before SWMR starts. */
    if (!h5s_format_path_exists(r->file, H5S_OBS_META_PATH)) {
        close_all(r);
        return h5s_error_set(H5S_EFORMAT,
                             "%s: %s is missing (the subject table every volumes file has)",
                             r->path, H5S_OBS_META_PATH);
    }
    if (h5s_format_path_exists(r->file, H5S_STATUS_DATASET))
        r->status = H5Dopen2(r->file, H5S_STATUS_DATASET, H5P_DEFAULT);
    hid_t vg = H5Gopen2(r->file, H5S_VOLUMES_GROUP, H5P_DEFAULT);
    herr_t it = vg >= 0 ? H5Literate(vg, H5_INDEX_NAME, H5_ITER_INC, NULL, list_collection, r) : -1;
    if (vg >= 0)
        H5Gclose(vg);
    if (it < 0) {
        close_all(r);
        return h5s_error_set_h5(H5S_EIO, "%s: cannot list %s", r->path, H5S_VOLUMES_GROUP);
    }
    for (size_t i = 0; i < r->ncolls; i++) {
        int rc = open_collection(r, &r->colls[i]);
        if (rc) {
            close_all(r);
            return rc;
        }
    }
    return 0;
}

int h5s_volumes_reader_open(h5s_volumes_reader **out, const char *path,
                            const h5s_reader_options *opts)
{
    if (!out || !path)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_reader_open: NULL argument");
    *out = NULL;
    h5s_hdf5_quiet();
    h5s_reader_options o = H5S_READER_OPTIONS_INIT;
    if (opts)
        o = *opts;
    h5s_volumes_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return h5s_error_set(H5S_ENOMEM, "out of memory");
    }
    r->file = r->status = H5I_INVALID_HID;
    int64_t start = h5s_rd_now_ms();
    char reason[256] = "";
    for (;;) {
        int rc = try_open(r, reason, sizeof reason);
        if (rc == 0)
            break;
        if (rc < 0) {
            h5s_volumes_reader_close(r);
            return rc;
        }
        if (o.open_timeout_ms >= 0 && h5s_rd_now_ms() - start >= o.open_timeout_ms) {
            /* A file that is not HDF5, or is cut short, will not open by waiting. */
            if (r->file < 0 && h5s_rd_unopenable(path) != 0) {
                h5s_volumes_reader_close(r);
                return H5S_EFORMAT;
            }
            int code = strstr(reason, "group") ? H5S_ENOTFOUND : H5S_ETIMEDOUT;
            h5s_error_set(code, "%s: %s", path, reason);
            h5s_volumes_reader_close(r);
            return code;
        }
        h5s_rd_sleep_ms(o.poll_ms ? o.poll_ms : 100);
    }
    for (size_t i = 0; i < r->ncolls; i++)
        h5s_volumes_reader_refresh(r, r->colls[i].name, NULL);
    *out = r;
    return 0;
}

size_t h5s_volumes_reader_ncollections(const h5s_volumes_reader *r)
{
    return r ? r->ncolls : 0;
}

const char *h5s_volumes_reader_collection(const h5s_volumes_reader *r, size_t i)
{
    return r && i < r->ncolls ? r->colls[i].name : NULL;
}

static int find_coll(h5s_volumes_reader *r, const char *name, vr_collection **out)
{
    for (size_t i = 0; i < r->ncolls; i++)
        if (!name || strcmp(r->colls[i].name, name) == 0) {
            *out = &r->colls[i];
            return 0;
        }
    return h5s_error_set(H5S_ENOTFOUND, "%s: no collection %s", r->path,
                         name ? name : "(the file has none)");
}

int h5s_volumes_reader_describe(h5s_volumes_reader *r, const char *name, h5s_collection_desc *out)
{
    vr_collection *c;
    if (!r || !out)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_reader_describe: NULL argument");
    int rc = find_coll(r, name, &c);
    if (rc == 0)
        *out = c->desc;
    return rc;
}

static int refresh_unlocked(h5s_volumes_reader *r, vr_collection *c, uint64_t *out_count)
{
    /* Status first: a "closed" read before the marker means the marker is final. */
    if (r->status >= 0) {
        h5s_status_row row;
        hid_t t = h5s_format_status_type();
        if ((r->swmr && H5Drefresh(r->status) < 0) ||
            H5Dread(r->status, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &row) < 0) {
            H5Tclose(t);
            return h5s_error_set_h5(H5S_EIO, "%s: cannot read %s", r->path, H5S_STATUS_DATASET);
        }
        H5Tclose(t);
        r->state = row.state == H5S_STATE_WRITING  ? H5S_WRITER_WRITING
                   : row.state == H5S_STATE_CLOSED ? H5S_WRITER_CLOSED
                                                   : H5S_WRITER_FAILED;
    }
    uint64_t n = 0;
    if ((r->swmr && H5Drefresh(c->obs) < 0) || h5s_rd_extent0(c->obs, &n) != 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot refresh %s/%s/obs", r->path, H5S_VOLUMES_GROUP,
                                c->name);
    if (n > c->desc.committed && r->swmr && H5Drefresh(c->voxels) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot refresh %s/%s/voxels", r->path,
                                H5S_VOLUMES_GROUP, c->name);
    c->desc.committed = n;
    if (out_count)
        *out_count = n;
    return 0;
}

int h5s_volumes_reader_refresh(h5s_volumes_reader *r, const char *name, uint64_t *out_count)
{
    vr_collection *c;
    if (!r)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_reader_refresh: NULL argument");
    int rc = find_coll(r, name, &c);
    if (rc)
        return rc;
    /* A reader in the writer's process waits for a commit in progress (h5s_commit_lock.h). */
    int locked = h5s_commit_read_begin(r->file);
    rc = refresh_unlocked(r, c, out_count);
    h5s_commit_read_end(locked);
    return rc;
}

h5s_writer_state h5s_volumes_reader_state(const h5s_volumes_reader *r)
{
    return r ? r->state : H5S_WRITER_UNKNOWN;
}

static int read_obs_rows(h5s_volumes_reader *r, vr_collection *c, uint64_t first, uint64_t n,
                         h5s_volume_obs *out)
{
    if (first + n > c->desc.committed || first + n < first)
        return h5s_error_set(H5S_ERANGE,
                             "%s: collection %s: volume %llu is not committed (%llu "
                             "are)",
                             r->path, c->name, (unsigned long long)(first + n - 1),
                             (unsigned long long)c->desc.committed);
    if (n == 0)
        return 0;
    hid_t t = h5s_volumes_obs_type(NULL, 0, NULL);
    hid_t fs = H5Dget_space(c->obs);
    hsize_t start = first, count = n;
    hid_t ms = H5Screate_simple(1, &count, NULL);
    int rc = 0;
    if (t < 0 || fs < 0 || ms < 0 ||
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0 ||
        H5Dread(c->obs, t, ms, fs, H5P_DEFAULT, out) < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: collection %s: cannot read obs rows %llu..%llu",
                              r->path, c->name, (unsigned long long)first,
                              (unsigned long long)(first + n - 1));
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    if (t >= 0)
        H5Tclose(t);
    return rc;
}

int h5s_volumes_reader_obs(h5s_volumes_reader *r, const char *name, uint64_t index,
                           h5s_volume_obs *out)
{
    vr_collection *c;
    if (!r || !out)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_reader_obs: NULL argument");
    int rc = find_coll(r, name, &c);
    return rc ? rc : read_obs_rows(r, c, index, 1, out);
}

int h5s_volumes_reader_find(h5s_volumes_reader *r, const char *name, const char *obs_id,
                            const char **out_name, uint64_t *out_index)
{
    if (!r || !obs_id || !out_index)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_reader_find: NULL argument");
    const uint64_t batch = 256;
    h5s_volume_obs *rows = malloc(batch * sizeof *rows);
    if (!rows)
        return h5s_error_set(H5S_ENOMEM, "out of memory");
    for (size_t i = 0; i < r->ncolls; i++) {
        vr_collection *c = &r->colls[i];
        if (name && strcmp(c->name, name) != 0)
            continue;
        for (uint64_t first = 0; first < c->desc.committed; first += batch) {
            uint64_t n = c->desc.committed - first < batch ? c->desc.committed - first : batch;
            int rc = read_obs_rows(r, c, first, n, rows);
            if (rc) {
                free(rows);
                return rc;
            }
            for (uint64_t k = 0; k < n; k++)
                if (strncmp(rows[k].obs_id, obs_id, sizeof rows[k].obs_id) == 0) {
                    free(rows);
                    *out_index = first + k;
                    if (out_name)
                        *out_name = c->name;
                    return 0;
                }
        }
    }
    free(rows);
    return h5s_error_set(H5S_ENOTFOUND, "%s: no committed volume with obs_id %s%s%s", r->path,
                         obs_id, name ? " in collection " : "", name ? name : "");
}

/* ---- boxes and reads --------------------------------------------------------------- */

static void obs_dims(const h5s_volume_obs *o, uint64_t d[4])
{
    d[0] = (uint64_t)o->shape[0];
    d[1] = (uint64_t)o->shape[1];
    d[2] = (uint64_t)o->shape[2];
    d[3] = 1;
    for (int i = 3; i < H5S_VOLUMES_MAX_DIMS; i++)
        d[3] *= (uint64_t)o->shape[i];
}

void h5s_volume_box_full(h5s_volume_box *out, const h5s_volume_obs *obs)
{
    uint64_t d[4];
    obs_dims(obs, d);
    for (int i = 0; i < 4; i++) {
        out->lo[i] = 0;
        out->hi[i] = d[i];
    }
}

int h5s_volume_box_slice(h5s_volume_box *out, const h5s_volume_obs *obs, int axis, uint64_t k)
{
    if (axis < 0 || axis > 2)
        return h5s_error_set(H5S_EINVAL, "slice axis %d (0 sagittal, 1 coronal, 2 axial)", axis);
    h5s_volume_box_full(out, obs);
    if (k >= out->hi[axis])
        return h5s_error_set(H5S_ERANGE, "obs_id %s: %s slice %llu outside 0..%llu", obs->obs_id,
                             axis == 2   ? "axial"
                             : axis == 1 ? "coronal"
                                         : "sagittal",
                             (unsigned long long)k, (unsigned long long)(out->hi[axis] - 1));
    out->lo[axis] = k;
    out->hi[axis] = k + 1;
    return 0;
}

uint64_t h5s_volume_box_voxels(const h5s_volume_box *b)
{
    uint64_t n = 1;
    for (int i = 0; i < 4; i++)
        n *= b->hi[i] > b->lo[i] ? b->hi[i] - b->lo[i] : 0;
    return n;
}

static int check_box(const h5s_volumes_reader *r, const vr_collection *c, const h5s_volume_obs *o,
                     const h5s_volume_box *b)
{
    uint64_t d[4];
    obs_dims(o, d);
    static const char axes[] = "xyzt";
    for (int i = 0; i < 4; i++)
        if (b->lo[i] >= b->hi[i] || b->hi[i] > d[i])
            return h5s_error_set(H5S_ERANGE,
                                 "%s: collection %s: obs_id %s: box %c %llu:%llu outside the "
                                 "volume's 0:%llu",
                                 r->path, c->name, o->obs_id, axes[i], (unsigned long long)b->lo[i],
                                 (unsigned long long)b->hi[i], (unsigned long long)d[i]);
    return 0;
}

/* Reads box b of the volume o into buf (packed [t][z][y][x]). */
static int read_box(h5s_volumes_reader *r, vr_collection *c, const h5s_volume_obs *o,
                    const h5s_volume_box *b, void *buf)
{
    hid_t mtype = h5s_format_h5type(c->desc.dtype);
    size_t elem = h5s_dtype_size(c->desc.dtype);
    uint64_t n[4], d[4];
    obs_dims(o, d);
    for (int i = 0; i < 4; i++)
        n[i] = b->hi[i] - b->lo[i];
    hid_t fs = H5Dget_space(c->voxels);
    int rc = 0;
    if (fs < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: voxels", r->path, c->name);
    if (!c->desc.heterogeneous) {
        int rank = c->desc.ndim + 1;
        hsize_t start[5] = {o->voxel_index}, count[5] = {1};
        int a = 1;
        if (rank == 5) {
            start[a] = b->lo[3];
            count[a++] = n[3];
        }
        for (int i = 2; i >= 0; i--, a++) {
            start[a] = b->lo[i];
            count[a] = n[i];
        }
        hsize_t total = h5s_volume_box_voxels(b);
        hid_t ms = H5Screate_simple(1, &total, NULL);
        if (ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
            H5Dread(c->voxels, mtype, ms, fs, H5P_DEFAULT, buf) < 0)
            rc = -1;
        if (ms >= 0)
            H5Sclose(ms);
    } else {
        /* One read per (t, z) plane of the box: a strided run of rows in the pool. */
        hsize_t cnt = n[1], blk = n[0], stride = d[0];
        hsize_t plane = n[0] * n[1];
        hid_t ms = H5Screate_simple(1, &plane, NULL);
        unsigned char *dst = buf;
        for (uint64_t t = b->lo[3]; t < b->hi[3] && rc == 0; t++)
            for (uint64_t z = b->lo[2]; z < b->hi[2] && rc == 0; z++) {
                hsize_t start =
                    o->pool_offset + ((t * d[2] + z) * d[1] + b->lo[1]) * d[0] + b->lo[0];
                if (ms < 0 ||
                    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, cnt > 1 ? &stride : NULL, &cnt,
                                        &blk) < 0 ||
                    H5Dread(c->voxels, mtype, ms, fs, H5P_DEFAULT, dst) < 0)
                    rc = -1;
                dst += plane * elem;
            }
        if (ms >= 0)
            H5Sclose(ms);
    }
    H5Sclose(fs);
    if (rc)
        return h5s_error_set_h5(H5S_EIO,
                                "%s: %s/%s/voxels: volume %llu (obs_id %s): cannot read "
                                "x %llu:%llu y %llu:%llu z %llu:%llu t %llu:%llu",
                                r->path, H5S_VOLUMES_GROUP, c->name,
                                (unsigned long long)o->voxel_index, o->obs_id,
                                (unsigned long long)b->lo[0], (unsigned long long)b->hi[0],
                                (unsigned long long)b->lo[1], (unsigned long long)b->hi[1],
                                (unsigned long long)b->lo[2], (unsigned long long)b->hi[2],
                                (unsigned long long)b->lo[3], (unsigned long long)b->hi[3]);
    return 0;
}

int h5s_volumes_reader_read(h5s_volumes_reader *r, const char *name, uint64_t index,
                            const h5s_volume_box *box, void *buf, size_t bufsize)
{
    vr_collection *c;
    if (!r || !buf)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_reader_read: NULL argument");
    int rc = find_coll(r, name, &c);
    h5s_volume_obs o;
    if (rc == 0)
        rc = read_obs_rows(r, c, index, 1, &o);
    if (rc)
        return rc;
    h5s_volume_box full;
    if (!box) {
        h5s_volume_box_full(&full, &o);
        box = &full;
    }
    if ((rc = check_box(r, c, &o, box)) != 0)
        return rc;
    uint64_t need = h5s_volume_box_voxels(box) * h5s_dtype_size(c->desc.dtype);
    if (bufsize < need)
        return h5s_error_set(H5S_EINVAL,
                             "%s: collection %s: obs_id %s: buffer of %zu bytes, "
                             "%llu needed",
                             r->path, c->name, o.obs_id, bufsize, (unsigned long long)need);
    return read_box(r, c, &o, box, buf);
}

/* ---- NIfTI export --------------------------------------------------------------------- */

/* qform rotation-and-zoom matrix from the quaternion (NIfTI-1 spec, method 2). */
static void quatern_matrix(const h5s_volume_obs *o, double m[3][3])
{
    double b = o->quatern[0], c = o->quatern[1], d = o->quatern[2];
    double a2 = 1.0 - (b * b + c * c + d * d);
    double a = a2 > 0 ? sqrt(a2) : 0;
    double R[3][3] = {{a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
                      {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
                      {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b}};
    double qfac = o->qfac < 0 ? -1.0 : 1.0;
    double z[3] = {o->pixdim[1], o->pixdim[2], qfac * o->pixdim[3]};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            m[i][j] = R[i][j] * z[j];
}

static int header_of(h5s_nifti_header *h, const h5s_volume_obs *o, h5s_dtype dtype,
                     const h5s_volume_box *b)
{
    int64_t dims[H5S_VOLUMES_MAX_DIMS];
    for (int i = 0; i < o->ndim; i++)
        dims[i] = o->shape[i];
    uint64_t full[4];
    obs_dims(o, full);
    for (int i = 0; i < 3 && i < o->ndim; i++)
        dims[i] = (int64_t)(b->hi[i] - b->lo[i]);
    if (b->hi[3] - b->lo[3] != full[3]) {
        if (o->ndim > 4)
            return h5s_error_set(H5S_EINVAL, "obs_id %s: a t range of a %d-D volume", o->obs_id,
                                 o->ndim);
        dims[3] = (int64_t)(b->hi[3] - b->lo[3]);
    }
    int rc = h5s_nifti_header_init(h, dtype, o->ndim, dims);
    if (rc)
        return rc;
    for (int i = 0; i < 8; i++)
        h->pixdim[i] = o->pixdim[i];
    h->nifti_datatype = o->nifti_datatype ? o->nifti_datatype : h->nifti_datatype;
    h->qform_code = o->qform_code;
    h->sform_code = o->sform_code;
    h->quatern_b = o->quatern[0];
    h->quatern_c = o->quatern[1];
    h->quatern_d = o->quatern[2];
    h->qfac = o->qfac;
    double m[3][3];
    quatern_matrix(o, m);
    double q[3], s[3];
    for (int i = 0; i < 3; i++) {
        /* The box corner becomes voxel (0,0,0): move both origins there. */
        q[i] = o->qoffset[i];
        s[i] = o->srow[i][3];
        for (int j = 0; j < 3; j++) {
            q[i] += m[i][j] * (double)b->lo[j];
            s[i] += o->srow[i][j] * (double)b->lo[j];
        }
    }
    h->qoffset_x = q[0];
    h->qoffset_y = q[1];
    h->qoffset_z = q[2];
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            h->qto_xyz[i][j] = m[i][j];
            h->sto_xyz[i][j] = o->srow[i][j];
        }
        h->qto_xyz[i][3] = q[i];
        h->sto_xyz[i][3] = s[i];
    }
    h->xyzt_units = o->xyzt_units;
    h->scl_slope = o->scl_slope;
    h->scl_inter = o->scl_inter;
    h->cal_min = o->cal_min;
    h->cal_max = o->cal_max;
    h->intent_code = o->intent_code;
    h->intent_p1 = o->intent_p[0];
    h->intent_p2 = o->intent_p[1];
    h->intent_p3 = o->intent_p[2];
    snprintf(h->intent_name, sizeof h->intent_name, "%.*s", (int)sizeof o->intent_name,
             o->intent_name);
    snprintf(h->descrip, sizeof h->descrip, "%.*s", (int)sizeof o->descrip, o->descrip);
    snprintf(h->aux_file, sizeof h->aux_file, "%.*s", (int)sizeof o->aux_file, o->aux_file);
    h->dim_info = o->dim_info;
    h->slice_code = o->slice_code;
    h->slice_start = o->slice_start;
    h->slice_end = o->slice_end;
    h->slice_duration = o->slice_duration;
    h->toffset = o->toffset;
    return 0;
}

int h5s_volumes_export_nifti(h5s_volumes_reader *r, const char *name, uint64_t index,
                             const h5s_volume_box *box, const char *path)
{
    vr_collection *c;
    if (!r || !path)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_export_nifti: NULL argument");
    int rc = find_coll(r, name, &c);
    h5s_volume_obs o;
    if (rc == 0)
        rc = read_obs_rows(r, c, index, 1, &o);
    if (rc)
        return rc;
    h5s_volume_box full;
    if (!box) {
        h5s_volume_box_full(&full, &o);
        box = &full;
    }
    if ((rc = check_box(r, c, &o, box)) != 0)
        return rc;
    h5s_nifti_header h;
    if ((rc = header_of(&h, &o, c->desc.dtype, box)) != 0)
        return h5s_error_prefix(rc, "%s: collection %s", r->path, c->name);
    h5s_nifti_writer *w = NULL;
    if ((rc = h5s_nifti_writer_open(&w, path, &h, NULL)) != 0)
        return rc;
    size_t slice = (size_t)((box->hi[0] - box->lo[0]) * (box->hi[1] - box->lo[1]) *
                            h5s_dtype_size(c->desc.dtype));
    void *buf = malloc(slice ? slice : 1);
    if (!buf)
        rc = h5s_error_set(H5S_ENOMEM, "out of memory");
    for (uint64_t t = box->lo[3]; t < box->hi[3] && rc == 0; t++)
        for (uint64_t z = box->lo[2]; z < box->hi[2] && rc == 0; z++) {
            h5s_volume_box one = *box;
            one.lo[2] = z;
            one.hi[2] = z + 1;
            one.lo[3] = t;
            one.hi[3] = t + 1;
            rc = read_box(r, c, &o, &one, buf);
            if (rc == 0)
                rc = h5s_nifti_write_slices(w, buf, 1);
        }
    free(buf);
    if (rc) {
        h5s_nifti_writer_abort(w);
        return rc;
    }
    return h5s_nifti_writer_close(w);
}

/* ---- compound tables: TSV export and filters ------------------------------------------- */

typedef struct {
    hid_t type; /* native compound */
    size_t row;
    int n;
    char **names;
    H5T_class_t *cls;
    size_t *off, *size;
    int *is_signed;
    unsigned char *rows;
    uint64_t nrows;
} vr_table;

static void table_free(vr_table *t)
{
    for (int i = 0; i < t->n && t->names; i++)
        H5free_memory(t->names[i]);
    free(t->names);
    free(t->cls);
    free(t->off);
    free(t->size);
    free(t->is_signed);
    free(t->rows);
    if (t->type >= 0)
        H5Tclose(t->type);
    memset(t, 0, sizeof *t);
    t->type = H5I_INVALID_HID;
}

static int table_read(vr_table *t, hid_t dset, uint64_t nrows, const char *what)
{
    memset(t, 0, sizeof *t);
    hid_t ft = H5Dget_type(dset);
    t->type = ft >= 0 ? H5Tget_native_type(ft, H5T_DIR_ASCEND) : H5I_INVALID_HID;
    if (ft >= 0)
        H5Tclose(ft);
    if (t->type < 0 || H5Tget_class(t->type) != H5T_COMPOUND)
        return h5s_error_set_h5(H5S_EFORMAT, "%s: not a compound table", what);
    t->row = H5Tget_size(t->type);
    t->n = H5Tget_nmembers(t->type);
    t->names = calloc((size_t)t->n + 1, sizeof *t->names);
    t->cls = calloc((size_t)t->n + 1, sizeof *t->cls);
    t->off = calloc((size_t)t->n + 1, sizeof *t->off);
    t->size = calloc((size_t)t->n + 1, sizeof *t->size);
    t->is_signed = calloc((size_t)t->n + 1, sizeof *t->is_signed);
    t->rows = malloc(nrows ? nrows * t->row : 1);
    if (!t->names || !t->cls || !t->off || !t->size || !t->is_signed || !t->rows)
        return h5s_error_set(H5S_ENOMEM, "out of memory");
    for (int i = 0; i < t->n; i++) {
        t->names[i] = H5Tget_member_name(t->type, (unsigned)i);
        t->cls[i] = H5Tget_member_class(t->type, (unsigned)i);
        t->off[i] = H5Tget_member_offset(t->type, (unsigned)i);
        hid_t mt = H5Tget_member_type(t->type, (unsigned)i);
        t->size[i] = H5Tget_size(mt);
        t->is_signed[i] = t->cls[i] == H5T_INTEGER && H5Tget_sign(mt) == H5T_SGN_2;
        H5Tclose(mt);
    }
    t->nrows = nrows;
    if (nrows == 0)
        return 0;
    hid_t fs = H5Dget_space(dset);
    hsize_t start = 0, count = nrows;
    hid_t ms = H5Screate_simple(1, &count, NULL);
    int rc = 0;
    if (fs < 0 || ms < 0 ||
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0 ||
        H5Dread(dset, t->type, ms, fs, H5P_DEFAULT, t->rows) < 0)
        rc =
            h5s_error_set_h5(H5S_EIO, "%s: cannot read %llu rows", what, (unsigned long long)nrows);
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    return rc;
}

static int table_col(const vr_table *t, const char *name)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->names[i], name) == 0)
            return i;
    return -1;
}

static int scalar_col(const vr_table *t, int i)
{
    return t->cls[i] == H5T_STRING || (t->cls[i] == H5T_INTEGER && t->size[i] <= 8) ||
           (t->cls[i] == H5T_FLOAT && (t->size[i] == 4 || t->size[i] == 8));
}

/* A cell: kind 0 string (s), 1 integer (i), 2 float (f); missing set for n/a. */
typedef struct {
    int kind;
    char s[1024];
    int64_t i;
    double f;
    int missing;
} vr_cell;

static void table_cell(const vr_table *t, uint64_t row, int col, vr_cell *out)
{
    const unsigned char *p = t->rows + row * t->row + t->off[col];
    memset(out, 0, sizeof *out);
    if (t->cls[col] == H5T_STRING) {
        size_t n = t->size[col] < sizeof out->s ? t->size[col] : sizeof out->s - 1;
        memcpy(out->s, p, n);
        out->s[n] = '\0';
        out->missing = out->s[0] == '\0';
    } else if (t->cls[col] == H5T_INTEGER) {
        out->kind = 1;
        if (t->is_signed[col]) {
            if (t->size[col] == 8) {
                memcpy(&out->i, p, 8);
            } else if (t->size[col] == 4) {
                int32_t v;
                memcpy(&v, p, 4);
                out->i = v;
            } else if (t->size[col] == 2) {
                int16_t v;
                memcpy(&v, p, 2);
                out->i = v;
            } else {
                out->i = (int8_t)p[0];
            }
        } else {
            uint64_t v = 0;
            memcpy(&v, p, t->size[col]);
            out->i = (int64_t)v;
        }
        out->missing = out->i == H5S_META_MISSING_INT;
    } else {
        out->kind = 2;
        if (t->size[col] == 8) {
            memcpy(&out->f, p, 8);
        } else {
            float v;
            memcpy(&v, p, 4);
            out->f = v;
        }
        out->missing = isnan(out->f);
    }
}

static int cell_matches(const vr_cell *c, const char *value)
{
    if (c->missing)
        return strcmp(value, "n/a") == 0 || value[0] == '\0';
    char *end;
    if (c->kind == 0)
        return strcmp(c->s, value) == 0;
    if (c->kind == 1) {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        return errno == 0 && end != value && *end == '\0' && v == c->i;
    }
    double v = strtod(value, &end);
    return end != value && *end == '\0' && v == c->f;
}

static int write_table_tsv(const vr_table *t, const uint64_t *rows, size_t nrows, const char *path,
                           int with_shape)
{
    int cols[256];
    size_t ncols = 0;
    for (int i = 0; i < t->n && ncols < 255; i++)
        if (scalar_col(t, i))
            cols[ncols++] = i;
    int shape_col = with_shape ? table_col(t, "shape") : -1;
    int ndim_col = with_shape ? table_col(t, "ndim") : -1;
    h5s_tsv_table *out = NULL;
    int rc = h5s_tsv_table_new(&out, ncols + (shape_col >= 0 && ndim_col >= 0), nrows);
    for (size_t k = 0; rc == 0 && k < ncols; k++) {
        int i = cols[k];
        h5s_tsv_type ty = t->cls[i] == H5T_STRING    ? H5S_TSV_STRING
                          : t->cls[i] == H5T_INTEGER ? H5S_TSV_INT
                                                     : H5S_TSV_FLOAT;
        rc = h5s_tsv_set_column(out, k, t->names[i], ty);
        for (size_t r = 0; rc == 0 && r < nrows; r++) {
            vr_cell cell;
            table_cell(t, rows ? rows[r] : r, i, &cell);
            if (cell.missing)
                rc = h5s_tsv_set_missing(out, k, r);
            else if (ty == H5S_TSV_STRING)
                rc = h5s_tsv_set_string(out, k, r, cell.s);
            else if (ty == H5S_TSV_INT)
                rc = h5s_tsv_set_int(out, k, r, cell.i);
            else
                rc = h5s_tsv_set_float(out, k, r, cell.f);
        }
    }
    if (rc == 0 && shape_col >= 0 && ndim_col >= 0) {
        rc = h5s_tsv_set_column(out, ncols, "shape", H5S_TSV_STRING);
        for (size_t r = 0; rc == 0 && r < nrows; r++) {
            const unsigned char *p = t->rows + (rows ? rows[r] : r) * t->row;
            int32_t ndim;
            int64_t shape[H5S_VOLUMES_MAX_DIMS];
            memcpy(&ndim, p + t->off[ndim_col], 4);
            memcpy(shape, p + t->off[shape_col], sizeof shape);
            char buf[200];
            int len = 0;
            for (int d = 0; d < ndim && d < H5S_VOLUMES_MAX_DIMS; d++)
                len += snprintf(buf + len, sizeof buf - (size_t)len, "%s%lld", d ? "x" : "",
                                (long long)shape[d]);
            rc = h5s_tsv_set_string(out, ncols, r, buf);
        }
    }
    if (rc == 0)
        rc = h5s_tsv_write(path, out);
    h5s_tsv_free(out);
    return rc;
}

int h5s_volumes_export_obs_tsv(h5s_volumes_reader *r, const char *name, const uint64_t *indices,
                               size_t n, const char *path)
{
    vr_collection *c;
    if (!r || !path)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_export_obs_tsv: NULL argument");
    int rc = find_coll(r, name, &c);
    if (rc)
        return rc;
    char what[512];
    snprintf(what, sizeof what, "%s: %s/%s/obs", r->path, H5S_VOLUMES_GROUP, c->name);
    vr_table t;
    rc = table_read(&t, c->obs, c->desc.committed, what);
    for (size_t i = 0; rc == 0 && indices && i < n; i++)
        if (indices[i] >= t.nrows)
            rc = h5s_error_set(H5S_ERANGE, "%s: row %llu not committed", what,
                               (unsigned long long)indices[i]);
    if (rc == 0)
        rc = write_table_tsv(&t, indices, indices ? n : (size_t)t.nrows, path, 1);
    table_free(&t);
    return rc;
}

static int read_meta_table(h5s_volumes_reader *r, vr_table *t)
{
    memset(t, 0, sizeof *t);
    t->type = H5I_INVALID_HID;
    if (!h5s_format_path_exists(r->file, H5S_OBS_META_PATH))
        return h5s_error_set(H5S_ENOTFOUND, "%s: no %s", r->path, H5S_OBS_META_PATH);
    hid_t d = H5Dopen2(r->file, H5S_OBS_META_PATH, H5P_DEFAULT);
    uint64_t n = 0;
    if (d < 0 || (r->swmr && H5Drefresh(d) < 0) || h5s_rd_extent0(d, &n) != 0) {
        if (d >= 0)
            H5Dclose(d);
        return h5s_error_set_h5(H5S_EIO, "%s: cannot read %s", r->path, H5S_OBS_META_PATH);
    }
    char what[512];
    snprintf(what, sizeof what, "%s: %s", r->path, H5S_OBS_META_PATH);
    int rc = table_read(t, d, n, what);
    H5Dclose(d);
    return rc;
}

int h5s_volumes_export_meta_tsv(h5s_volumes_reader *r, const char *path)
{
    if (!r || !path)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_export_meta_tsv: NULL argument");
    vr_table t;
    int rc = read_meta_table(r, &t);
    if (rc == 0)
        rc = write_table_tsv(&t, NULL, (size_t)t.nrows, path, 0);
    table_free(&t);
    return rc;
}

int h5s_volumes_reader_select(h5s_volumes_reader *r, const char *name, const char *const *where,
                              size_t nwhere, uint64_t **out, size_t *out_n)
{
    vr_collection *c;
    if (!r || !out || !out_n || (nwhere && !where))
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_reader_select: NULL argument");
    *out = NULL;
    *out_n = 0;
    int rc = find_coll(r, name, &c);
    if (rc)
        return rc;
    char what[512];
    snprintf(what, sizeof what, "%s: %s/%s/obs", r->path, H5S_VOLUMES_GROUP, c->name);
    vr_table obs, meta;
    memset(&meta, 0, sizeof meta);
    meta.type = H5I_INVALID_HID;
    int have_meta = 0;
    rc = table_read(&obs, c->obs, c->desc.committed, what);
    uint64_t *idx = rc == 0 ? malloc((obs.nrows ? obs.nrows : 1) * sizeof *idx) : NULL;
    unsigned char *keep = rc == 0 ? malloc(obs.nrows ? obs.nrows : 1) : NULL;
    if (rc == 0 && (!idx || !keep))
        rc = h5s_error_set(H5S_ENOMEM, "out of memory");
    if (rc == 0)
        memset(keep, 1, obs.nrows);
    int subj = rc == 0 ? table_col(&obs, "obs_subject_id") : -1;
    for (size_t w = 0; rc == 0 && w < nwhere; w++) {
        const char *eq = strchr(where[w], '=');
        if (!eq || eq == where[w]) {
            rc = h5s_error_set(H5S_EINVAL, "--where '%s': expected COLUMN=VALUE", where[w]);
            break;
        }
        char col[128];
        snprintf(col, sizeof col, "%.*s", (int)(eq - where[w]), where[w]);
        const char *value = eq + 1;
        int oc = table_col(&obs, col);
        if (oc >= 0 && scalar_col(&obs, oc)) {
            for (uint64_t i = 0; i < obs.nrows; i++) {
                vr_cell cell;
                table_cell(&obs, i, oc, &cell);
                if (!cell_matches(&cell, value))
                    keep[i] = 0;
            }
            continue;
        }
        if (!have_meta) {
            rc = read_meta_table(r, &meta);
            if (rc == H5S_ENOTFOUND)
                rc = h5s_error_set(H5S_EINVAL,
                                   "--where %s: no such obs column and the file "
                                   "has no obs_meta",
                                   col);
            if (rc)
                break;
            have_meta = 1;
        }
        int mc = table_col(&meta, col), ms = table_col(&meta, "obs_subject_id");
        if (mc < 0 || ms < 0 || !scalar_col(&meta, mc)) {
            rc = h5s_error_set(H5S_EINVAL, "--where %s: no such column in obs or obs_meta", col);
            break;
        }
        for (uint64_t i = 0; i < obs.nrows; i++) {
            if (!keep[i])
                continue;
            vr_cell sid;
            table_cell(&obs, i, subj, &sid);
            int found = 0;
            for (uint64_t m = 0; m < meta.nrows && !found; m++) {
                vr_cell ms_cell, v;
                table_cell(&meta, m, ms, &ms_cell);
                if (strcmp(ms_cell.s, sid.s) != 0)
                    continue;
                table_cell(&meta, m, mc, &v);
                found = cell_matches(&v, value);
            }
            keep[i] = (unsigned char)found;
        }
    }
    size_t n = 0;
    for (uint64_t i = 0; rc == 0 && i < obs.nrows; i++)
        if (keep[i])
            idx[n++] = i;
    free(keep);
    table_free(&obs);
    if (have_meta)
        table_free(&meta);
    if (rc) {
        free(idx);
        return rc;
    }
    *out = idx;
    *out_n = n;
    return 0;
}

void h5s_volumes_reader_close(h5s_volumes_reader *r)
{
    if (!r)
        return;
    close_all(r);
    free(r->path);
    free(r);
}
