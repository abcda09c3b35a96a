/*
 * h5s_reader.c - live SWMR reader of frames datasets: open with retry, refresh in commit
 * order (status, then the frame_id marker, then the payload), hyperslab reads.
 */
#include "h5s_reader.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "h5s_codec.h"
#include "h5s_error.h"
#include "h5s_rdutil.h"
#include "h5s_format.h"
#include "h5s_commit_lock.h"

#define READER_PATH_MAX 1024
#define READER_REASON_MAX 1024

/* Default chunk cache per dataset: enough for a band of several frames, so a batch read
 * that ends inside a chunk does not decode that chunk again for the next batch. */
#define READER_CHUNK_CACHE_BYTES ((size_t)32 << 20)
#define READER_CHUNK_CACHE_SLOTS 1009

struct h5s_reader {
    char *path;
    char data_path[READER_PATH_MAX];
    char fid_path[READER_PATH_MAX];
    char ts_path[READER_PATH_MAX];
    hid_t file;
    hid_t data;
    hid_t frame_id;
    hid_t timestamp; /* H5I_INVALID_HID when the file has none */
    hid_t status;    /* H5I_INVALID_HID when the file has none */
    int swmr;        /* opened with SWMR_READ, so objects must be refreshed to see growth */
    /* A sharded master (docs/shards.md): the datasets are virtual, reopened each poll with
     * the first-missing view, and the file itself is replaced when the run ends. */
    int vds;
    hid_t vds_dapl;
    hid_t fapl;     /* kept for reopening a replaced master */
    dev_t file_dev; /* the file opened, to see that a new one took its path */
    ino_t file_ino;
    unsigned poll_ms;
    h5s_frame_shape shape;
    uint64_t count;
    h5s_writer_state state;
    int ts_present; /* the file has a timestamp dataset */
};

static void close_handles(h5s_reader *r)
{
    h5s_rd_close(&r->status, H5Dclose);
    h5s_rd_close(&r->timestamp, H5Dclose);
    h5s_rd_close(&r->frame_id, H5Dclose);
    h5s_rd_close(&r->data, H5Dclose);
    h5s_rd_close(&r->file, H5Fclose);
}

/* Extent along the first axis; -1 on an HDF5 error. */
static int extent0(hid_t dset, uint64_t *out)
{
    hid_t space = H5Dget_space(dset);
    if (space < 0)
        return -1;
    hsize_t dims[H5S_MAX_RANK];
    int rank = H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    if (rank < 1)
        return -1;
    *out = dims[0];
    return 0;
}

/* Opens an optional per-frame dataset; *out stays invalid when it is absent. */
static int open_optional(hid_t file, const char *path, hid_t *out)
{
    int e = h5s_rd_path_exists(file, path);
    if (e < 0)
        return -1;
    if (e == 0)
        return 0;
    *out = H5Dopen2(file, path, H5P_DEFAULT);
    return *out < 0 ? -1 : 0;
}

#define READER_ALIASES_MAX 8

typedef struct {
    haddr_t target;
    unsigned n;
    char names[READER_ALIASES_MAX][READER_PATH_MAX];
} alias_search;

static herr_t collect_alias(hid_t group, const char *name, const H5L_info_t *info, void *payload)
{
    (void)group;
    alias_search *s = payload;
    if (info->type == H5L_TYPE_HARD && info->u.address == s->target && s->n < READER_ALIASES_MAX) {
        snprintf(s->names[s->n], READER_PATH_MAX, "/%s", name);
        s->n++;
    }
    return 0;
}

/*
 * Finds the per-frame datasets. They sit beside the frames dataset's own name, but the
 * caller may name it through another hard link (NeXus's /entry/data/data), so the other
 * names of the same object are tried too. 1 found (paths set), 0 not found, -1 HDF5 error.
 */
static int find_sidecars(h5s_reader *r)
{
    int e = h5s_rd_path_exists(r->file, r->fid_path);
    if (e != 0)
        return e;
    H5O_info_t info;
    if (H5Oget_info2(r->data, &info, H5O_INFO_BASIC) < 0)
        return -1;
    alias_search *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->target = info.addr;
    int found = H5Lvisit(r->file, H5_INDEX_NAME, H5_ITER_INC, collect_alias, s) < 0 ? -1 : 0;
    for (unsigned i = 0; found == 0 && i < s->n; i++) {
        char fid[READER_PATH_MAX], ts[READER_PATH_MAX];
        if (strcmp(s->names[i], r->data_path) == 0 ||
            h5s_format_sidecar(fid, sizeof fid, s->names[i], H5S_SIDECAR_FRAME_ID) != 0 ||
            h5s_format_sidecar(ts, sizeof ts, s->names[i], H5S_SIDECAR_TIMESTAMP) != 0)
            continue;
        found = h5s_rd_path_exists(r->file, fid);
        if (found == 1) {
            memcpy(r->fid_path, fid, sizeof fid);
            memcpy(r->ts_path, ts, sizeof ts);
        }
    }
    free(s);
    h5s_error_clear();
    return found;
}

/* Checks that a per-frame dataset is rank 1 of the wanted class. */
static int check_per_frame(const h5s_reader *r, hid_t dset, const char *path, H5T_class_t want)
{
    hid_t space = H5Dget_space(dset);
    hid_t type = H5Dget_type(dset);
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    if (space >= 0)
        H5Sclose(space);
    if (type >= 0)
        H5Tclose(type);
    if (rank != 1 || cls != want)
        return h5s_error_set(H5S_EFORMAT, "%s: %s must be a 1-D %s dataset (rank %d found)",
                             r->path, path, want == H5T_INTEGER ? "integer" : "float", rank);
    return 0;
}

static int validate_data(h5s_reader *r)
{
    hid_t space = H5Dget_space(r->data);
    if (space < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot get dataspace", r->path, r->data_path);
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK];
    int rank = H5Sget_simple_extent_ndims(space);
    if (rank >= 0 && rank <= H5S_MAX_RANK)
        rank = H5Sget_simple_extent_dims(space, dims, maxdims);
    H5Sclose(space);
    if (rank < 2 || rank > 4)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: %s has rank %d; a frames dataset is [N, frame...] with "
                             "a frame of 1 to 3 axes",
                             r->path, r->data_path, rank);
    if (maxdims[0] != H5S_UNLIMITED)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: %s is not unlimited along its first axis, so it is not a "
                             "stream of frames",
                             r->path, r->data_path);
    hid_t type = H5Dget_type(r->data);
    if (type < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot get datatype", r->path, r->data_path);
    h5s_dtype dtype = h5s_format_dtype_of(type);
    H5Tclose(type);
    if (dtype == H5S_DTYPE_INVALID)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: %s has an element type that is not an integer or float of "
                             "1 to 8 bytes",
                             r->path, r->data_path);
    r->shape.dtype = dtype;
    r->shape.rank = (unsigned)rank - 1;
    size_t bytes = h5s_dtype_size(dtype);
    for (unsigned i = 0; i < 3; i++)
        r->shape.dims[i] = 0;
    for (unsigned i = 0; i < r->shape.rank; i++) {
        r->shape.dims[i] = dims[i + 1];
        if (dims[i + 1] == 0 || dims[i + 1] > SIZE_MAX / bytes)
            return h5s_error_set(H5S_EFORMAT, "%s: %s: frame axis %u has size %llu", r->path,
                                 r->data_path, i, (unsigned long long)dims[i + 1]);
        bytes *= (size_t)dims[i + 1];
    }
    r->shape.frame_bytes = bytes;
    return 0;
}

static int validate_status(h5s_reader *r)
{
    hid_t type = H5Dget_type(r->status);
    hid_t space = H5Dget_space(r->status);
    int ok = type >= 0 && space >= 0 && H5Tget_class(type) == H5T_COMPOUND &&
             H5Tget_member_index(type, "state") >= 0 && H5Sget_simple_extent_npoints(space) >= 1 &&
             H5Sget_simple_extent_ndims(space) <= 1;
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    if (!ok)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: %s is not a writer status table (compound with a 'state' "
                             "member, one row)",
                             r->path, H5S_STATUS_DATASET);
    return 0;
}

static int read_status(h5s_reader *r)
{
    return h5s_rd_writer_state(r->status, r->path, &r->state);
}

static int refresh_one(h5s_reader *r, hid_t dset, const char *path)
{
    if (r->swmr && H5Drefresh(dset) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: refresh failed", r->path, path);
    return 0;
}

static int try_open(h5s_reader *r, hid_t fapl);

/*
 * The datasets of a master are virtual: their extent is computed when they are opened,
 * and in HDF5 1.10.8 H5Drefresh would also reset the view to LAST_AVAILABLE, so they are
 * closed and opened again, the marker first (see do_refresh for the order).
 */
static int reopen_virtual(h5s_reader *r, hid_t *dset, const char *path)
{
    h5s_rd_close(dset, H5Dclose);
    *dset = H5Dopen2(r->file, path, r->vds_dapl);
    if (*dset < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot reopen the virtual dataset", r->path,
                                path);
    return 0;
}

/* Whether the path now names another file than the one open: rank 0 renames the final
 * master over the live one. */
static int master_replaced(const h5s_reader *r)
{
    struct stat st;
    return stat(r->path, &st) == 0 && (st.st_dev != r->file_dev || st.st_ino != r->file_ino);
}

static int refresh_unlocked(h5s_reader *r)
{
    int rc;
    if (r->vds && master_replaced(r)) {
        /* The final master has exact counts; the count seen so far never shrinks. */
        uint64_t seen = r->count;
        close_handles(r);
        rc = try_open(r, r->fapl);
        if (r->count < seen)
            r->count = seen;
        return rc;
    }
    /*
     * Status before the marker: the writer marks "closed" only after its final commit, so
     * a marker read after seeing "closed" is the final count and a follower that stops
     * there cannot miss the last frames.
     */
    if (r->status >= 0) {
        if ((rc = refresh_one(r, r->status, H5S_STATUS_DATASET)) != 0)
            return rc;
        if ((rc = read_status(r)) != 0)
            return rc;
    } else {
        r->state = H5S_WRITER_UNKNOWN;
    }
    /* The marker before the payload: the writer flushes payload first, marker last. In a
     * master, each shard's writer does, so the first-missing view of frame_id (the
     * frames below every shard's marker) is opened before the data it covers. */
    uint64_t marker, n;
    if (r->vds) {
        h5s_rd_close(&r->data, H5Dclose);
        h5s_rd_close(&r->timestamp, H5Dclose);
        if ((rc = reopen_virtual(r, &r->frame_id, r->fid_path)) != 0)
            return rc;
    } else if ((rc = refresh_one(r, r->frame_id, r->fid_path)) != 0) {
        return rc;
    }
    if (extent0(r->frame_id, &marker) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot get extent", r->path, r->fid_path);
    if (r->vds) {
        if ((rc = reopen_virtual(r, &r->data, r->data_path)) != 0)
            return rc;
        if (r->ts_present && (rc = reopen_virtual(r, &r->timestamp, r->ts_path)) != 0)
            return rc;
    } else if ((rc = refresh_one(r, r->data, r->data_path)) != 0) {
        return rc;
    }
    if (extent0(r->data, &n) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot get extent", r->path, r->data_path);
    /* A frame counts only when every dataset holding part of it covers it; with a
     * well-behaved writer the marker is the shortest and this changes nothing. */
    if (n < marker)
        marker = n;
    if (r->timestamp >= 0) {
        if (!r->vds && (rc = refresh_one(r, r->timestamp, r->ts_path)) != 0)
            return rc;
        if (extent0(r->timestamp, &n) < 0)
            return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot get extent", r->path, r->ts_path);
        if (n < marker)
            marker = n;
    }
    /* Extents only grow while a reader follows; never un-commit a frame already seen. */
    if (marker > r->count)
        r->count = marker;
    return 0;
}

/* One poll; a reader in the writer's process waits for a commit in progress
 * (h5s_commit_lock.h). */
static int do_refresh(h5s_reader *r)
{
    int locked = h5s_commit_read_begin(r->file);
    int rc = refresh_unlocked(r);
    h5s_commit_read_end(locked);
    return rc;
}

/*
 * One attempt at opening. Returns 0; H5S_EAGAIN (file not openable yet) or H5S_ENOTFOUND
 * (dataset not there yet), which the caller retries; or a final error.
 */
static int try_open(h5s_reader *r, hid_t fapl)
{
    /* A previous attempt may have moved the per-frame paths to another name of the data. */
    h5s_format_sidecar(r->fid_path, sizeof r->fid_path, r->data_path, H5S_SIDECAR_FRAME_ID);
    h5s_format_sidecar(r->ts_path, sizeof r->ts_path, r->data_path, H5S_SIDECAR_TIMESTAMP);
    struct stat st;
    if (stat(r->path, &st) != 0)
        return h5s_error_set(H5S_EAGAIN, "%s: %s", r->path, strerror(errno));
    r->file_dev = st.st_dev;
    r->file_ino = st.st_ino;

    r->swmr = 1;
    r->file = H5Fopen(r->path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    if (r->file < 0) {
        /* Keep the SWMR reason: it says why a live file cannot be opened (locked, or its
         * writer has not started SWMR), which is what the caller waits for. */
        h5s_error_set_h5(H5S_EAGAIN, "%s: cannot open for SWMR reading", r->path);
        /* For a closed file that SWMR_READ refuses. A live file cannot slip through here:
         * a plain open refuses a file whose superblock says it is open for writing. */
        r->swmr = 0;
        r->file = H5Fopen(r->path, H5F_ACC_RDONLY, fapl);
        H5Eclear2(H5E_DEFAULT);
        if (r->file < 0)
            return H5S_EAGAIN;
    }

    int e = h5s_rd_path_exists(r->file, r->data_path);
    if (e <= 0) {
        if (e < 0)
            return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot look up", r->path, r->data_path);
        return h5s_error_set(H5S_ENOTFOUND, "%s: no dataset %s", r->path, r->data_path);
    }
    r->data = H5Dopen2(r->file, r->data_path, H5P_DEFAULT);
    if (r->data < 0) {
        H5Eclear2(H5E_DEFAULT);
        return h5s_error_set(H5S_EFORMAT, "%s: %s is not a dataset", r->path, r->data_path);
    }
    int rc = validate_data(r);
    if (rc != 0)
        return rc;
    hid_t dcpl = H5Dget_create_plist(r->data);
    r->vds = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_VIRTUAL;
    if (dcpl >= 0)
        H5Pclose(dcpl);
    /* Only frames every shard holds: a missing one would read as the fill value. */
    if (r->vds && r->vds_dapl < 0) {
        r->vds_dapl = H5Pcreate(H5P_DATASET_ACCESS);
        if (r->vds_dapl < 0 || H5Pset_virtual_view(r->vds_dapl, H5D_VDS_FIRST_MISSING) < 0)
            return h5s_error_set_h5(H5S_EIO, "%s: cannot set the virtual view", r->path);
    }

    int found = find_sidecars(r);
    if (found < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot look up its per-frame datasets", r->path,
                                r->data_path);
    if (found == 1 && open_optional(r->file, r->fid_path, &r->frame_id) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot open", r->path, r->fid_path);
    if (r->frame_id < 0)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: %s has no %s beside it (the commit marker), so it is not an "
                             "h5stream frames dataset",
                             r->path, r->data_path, r->fid_path);
    if ((rc = check_per_frame(r, r->frame_id, r->fid_path, H5T_INTEGER)) != 0)
        return rc;

    if (open_optional(r->file, r->ts_path, &r->timestamp) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot open", r->path, r->ts_path);
    if (r->timestamp >= 0 && (rc = check_per_frame(r, r->timestamp, r->ts_path, H5T_FLOAT)) != 0)
        return rc;
    r->ts_present = r->timestamp >= 0;

    if (open_optional(r->file, H5S_STATUS_DATASET, &r->status) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot open", r->path, H5S_STATUS_DATASET);
    if (r->status >= 0 && (rc = validate_status(r)) != 0)
        return rc;

    return do_refresh(r);
}

static int normalize_path(char *out, size_t outsize, const char *dataset)
{
    const char *d = dataset && dataset[0] ? dataset : H5S_FRAMES_DEFAULT_PATH;
    int n = snprintf(out, outsize, "%s%s", d[0] == '/' ? "" : "/", d);
    if (n < 0 || (size_t)n >= outsize)
        return h5s_error_set(H5S_EINVAL, "dataset path too long: %s", d);
    return 0;
}

int h5s_reader_open(h5s_reader **out, const char *path, const char *dataset,
                    const h5s_reader_options *opts)
{
    static const h5s_reader_options defaults = H5S_READER_OPTIONS_INIT;
    if (!out)
        return h5s_error_set(H5S_EINVAL, "h5s_reader_open: out is NULL");
    *out = NULL;
    if (!path || !path[0])
        return h5s_error_set(H5S_EINVAL, "h5s_reader_open: no file name");
    if (!opts)
        opts = &defaults;
    if (opts->version < 1 || opts->open_timeout_ms < -1)
        return h5s_error_set(H5S_EINVAL, "h5s_reader_open: bad options (version %u, timeout %d)",
                             opts->version, opts->open_timeout_ms);

    h5s_hdf5_quiet();
    /* Without Blosc registered only Blosc chunks fail, and they fail at read time with a
     * message naming the frame, so a registration failure does not stop the open. */
    h5s_filters_init();

    h5s_reader *r = calloc(1, sizeof *r);
    if (!r)
        return h5s_error_set(H5S_ENOMEM, "h5s_reader_open: out of memory");
    r->file = r->data = r->frame_id = r->timestamp = r->status = H5I_INVALID_HID;
    r->vds_dapl = r->fapl = H5I_INVALID_HID;
    r->poll_ms = opts->poll_ms ? opts->poll_ms : 1;
    r->path = strdup(path);
    int rc = r->path ? 0 : h5s_error_set(H5S_ENOMEM, "h5s_reader_open: out of memory");
    if (rc == 0)
        rc = normalize_path(r->data_path, sizeof r->data_path, dataset);
    if (rc == 0)
        rc =
            h5s_format_sidecar(r->fid_path, sizeof r->fid_path, r->data_path, H5S_SIDECAR_FRAME_ID);
    if (rc == 0)
        rc = h5s_format_sidecar(r->ts_path, sizeof r->ts_path, r->data_path, H5S_SIDECAR_TIMESTAMP);
    hid_t fapl = H5I_INVALID_HID;
    if (rc == 0) {
        fapl = h5s_format_swmr_read_fapl();
        if (fapl < 0 ||
            H5Pset_cache(fapl, 0, READER_CHUNK_CACHE_SLOTS, READER_CHUNK_CACHE_BYTES, 0.75) < 0)
            rc = h5s_error_set_h5(H5S_EIO, "%s: cannot create file access properties", path);
    }
    if (rc != 0) {
        if (fapl >= 0)
            H5Pclose(fapl);
        h5s_reader_close(r);
        return rc;
    }

    int64_t start = h5s_rd_now_ms();
    char reason[READER_REASON_MAX];
    for (;;) {
        rc = try_open(r, fapl);
        if (rc == 0)
            break;
        close_handles(r);
        r->count = 0;
        if (rc != H5S_EAGAIN && rc != H5S_ENOTFOUND)
            break;
        /* Reasons start with the file name, which the final message already gives. */
        const char *why = h5s_error_message();
        size_t plen = strlen(path);
        if (strncmp(why, path, plen) == 0 && strncmp(why + plen, ": ", 2) == 0)
            why += plen + 2;
        snprintf(reason, sizeof reason, "%s", why);
        int64_t elapsed = h5s_rd_now_ms() - start;
        if (opts->open_timeout_ms >= 0 && elapsed >= opts->open_timeout_ms) {
            /* A file that is not HDF5, or is cut short, will not open by waiting. */
            if (rc == H5S_EAGAIN && h5s_rd_unopenable(path) != 0) {
                rc = H5S_EFORMAT;
                break;
            }
            /* A missing dataset in an openable file keeps its own code; everything else
             * is "not openable in time". */
            rc = rc == H5S_ENOTFOUND ? H5S_ENOTFOUND : H5S_ETIMEDOUT;
            if (opts->open_timeout_ms == 0)
                h5s_error_set(rc, "%s: %s", path, reason);
            else
                h5s_error_set(rc, "%s: still not readable after %lld ms: %s", path,
                              (long long)elapsed, reason);
            break;
        }
        int64_t wait = r->poll_ms;
        if (opts->open_timeout_ms >= 0 && wait > opts->open_timeout_ms - elapsed)
            wait = opts->open_timeout_ms - elapsed;
        h5s_rd_sleep_ms(wait);
    }
    r->fapl = fapl;
    if (rc != 0) {
        h5s_reader_close(r);
        return rc;
    }
    h5s_error_clear();
    *out = r;
    return 0;
}

int h5s_reader_shape(const h5s_reader *reader, h5s_frame_shape *out)
{
    if (!reader || !out)
        return h5s_error_set(H5S_EINVAL, "h5s_reader_shape: NULL argument");
    *out = reader->shape;
    return 0;
}

int h5s_reader_refresh(h5s_reader *reader, uint64_t *out_count)
{
    if (!reader)
        return h5s_error_set(H5S_EINVAL, "h5s_reader_refresh: reader is NULL");
    h5s_hdf5_quiet();
    int rc = do_refresh(reader);
    if (out_count)
        *out_count = reader->count;
    return rc;
}

uint64_t h5s_reader_count(const h5s_reader *reader)
{
    return reader ? reader->count : 0;
}

h5s_writer_state h5s_reader_writer_state(const h5s_reader *reader)
{
    return reader ? reader->state : H5S_WRITER_UNKNOWN;
}

static int refresh_cb(void *reader)
{
    return do_refresh(reader);
}

int h5s_reader_wait(h5s_reader *reader, uint64_t known, int timeout_ms, uint64_t *out_count)
{
    if (!reader)
        return h5s_error_set(H5S_EINVAL, "h5s_reader_wait: reader is NULL");
    h5s_hdf5_quiet();
    h5s_rd_poll p = {reader,          refresh_cb,   &reader->count, &reader->state,
                     reader->poll_ms, reader->path, "frame",        reader->data_path};
    int rc = h5s_rd_wait(&p, known, timeout_ms);
    if (out_count)
        *out_count = reader->count;
    return rc;
}

static herr_t note_pipeline(unsigned n, const H5E_error2_t *err, void *payload)
{
    (void)n;
    if (err->maj_num == H5E_PLINE)
        *(int *)payload = 1;
    return 0;
}

/* Error code of a failed read: a filter failure is a codec error, the rest is I/O. */
static int read_error_code(void)
{
    int pipeline = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, note_pipeline, &pipeline);
    return pipeline ? H5S_ECODEC : H5S_EIO;
}

/* Reads rows [first, first + n) of a dataset whose rows have the given trailing dims. */
static herr_t read_rows(hid_t dset, hid_t memtype, uint64_t first, uint64_t n, unsigned rank,
                        const uint64_t *row_dims, void *buf)
{
    hsize_t start[4] = {first, 0, 0, 0}, count[4] = {n, 1, 1, 1};
    for (unsigned i = 0; i < rank; i++)
        count[i + 1] = row_dims[i];
    hid_t fspace = H5Dget_space(dset);
    hid_t mspace = H5Screate_simple((int)rank + 1, count, NULL);
    herr_t rc = -1;
    if (fspace >= 0 && mspace >= 0 &&
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
        rc = H5Dread(dset, memtype, mspace, fspace, H5P_DEFAULT, buf);
    if (fspace >= 0)
        H5Sclose(fspace);
    if (mspace >= 0)
        H5Sclose(mspace);
    return rc;
}

static int check_range(const h5s_reader *r, uint64_t first, uint64_t n)
{
    if (first > r->count || n > r->count - first)
        return h5s_error_set(H5S_ERANGE, "%s: %s: frames %llu..%llu requested, %llu committed",
                             r->path, r->data_path, (unsigned long long)first,
                             (unsigned long long)(first + n - (n > 0)),
                             (unsigned long long)r->count);
    return 0;
}

int h5s_reader_read(h5s_reader *reader, uint64_t first, uint64_t n, void *buf, size_t bufsize)
{
    if (!reader || (!buf && n > 0))
        return h5s_error_set(H5S_EINVAL, "h5s_reader_read: NULL argument");
    int rc = check_range(reader, first, n);
    if (rc != 0)
        return rc;
    size_t fb = reader->shape.frame_bytes;
    if (n > SIZE_MAX / fb || bufsize < (size_t)n * fb)
        return h5s_error_set(H5S_EINVAL,
                             "%s: %s: buffer of %zu bytes is too small for %llu frames of %zu "
                             "bytes",
                             reader->path, reader->data_path, bufsize, (unsigned long long)n, fb);
    if (n == 0)
        return 0;
    h5s_hdf5_quiet();
    hid_t memtype = h5s_format_h5type(reader->shape.dtype);
    if (read_rows(reader->data, memtype, first, n, reader->shape.rank, reader->shape.dims, buf) >=
        0)
        return 0;
    H5Eclear2(H5E_DEFAULT);
    /* Find the first frame that fails so the message names it. */
    for (uint64_t i = 0; i < n; i++) {
        unsigned char *dst = (unsigned char *)buf + (size_t)i * fb;
        if (read_rows(reader->data, memtype, first + i, 1, reader->shape.rank, reader->shape.dims,
                      dst) < 0)
            return h5s_error_set_h5(read_error_code(), "%s: %s: cannot read frame %llu",
                                    reader->path, reader->data_path,
                                    (unsigned long long)(first + i));
    }
    return h5s_error_set(H5S_EIO, "%s: %s: cannot read frames %llu..%llu", reader->path,
                         reader->data_path, (unsigned long long)first,
                         (unsigned long long)(first + n - 1));
}

int h5s_reader_read_meta(h5s_reader *reader, uint64_t first, uint64_t n, uint64_t *frame_ids,
                         double *timestamps)
{
    if (!reader)
        return h5s_error_set(H5S_EINVAL, "h5s_reader_read_meta: reader is NULL");
    int rc = check_range(reader, first, n);
    if (rc != 0 || n == 0)
        return rc;
    h5s_hdf5_quiet();
    if (frame_ids &&
        read_rows(reader->frame_id, H5T_NATIVE_UINT64, first, n, 0, NULL, frame_ids) < 0)
        return h5s_error_set_h5(read_error_code(), "%s: %s: cannot read frames %llu..%llu",
                                reader->path, reader->fid_path, (unsigned long long)first,
                                (unsigned long long)(first + n - 1));
    if (!timestamps)
        return 0;
    if (reader->timestamp < 0) {
        for (uint64_t i = 0; i < n; i++)
            timestamps[i] = NAN;
        return 0;
    }
    if (read_rows(reader->timestamp, H5T_NATIVE_DOUBLE, first, n, 0, NULL, timestamps) < 0)
        return h5s_error_set_h5(read_error_code(), "%s: %s: cannot read frames %llu..%llu",
                                reader->path, reader->ts_path, (unsigned long long)first,
                                (unsigned long long)(first + n - 1));
    return 0;
}

void h5s_reader_close(h5s_reader *reader)
{
    if (!reader)
        return;
    close_handles(reader);
    h5s_rd_close(&reader->vds_dapl, H5Pclose);
    h5s_rd_close(&reader->fapl, H5Pclose);
    free(reader->path);
    free(reader);
}
