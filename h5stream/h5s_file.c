/*
 * h5s_file.c - the file object: declaration phase, SWMR start, the writer thread and its
 * commit protocol, the encoder pool, flush and close.
 *
 * Commit protocol (docs/format.md): chunks are stored as bands arrive; a commit then
 * writes and flushes every payload dataset (data, timestamp, per-frame values) of every
 * frames dataset, and only after that extends, writes and flushes the commit markers
 * (frame_id) and the status row. A reader that refreshes the marker first therefore never
 * sees a frame whose payload is not on disk.
 */
#include <signal.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "h5s_column.h"
#include "h5s_commit_lock.h"
#include "h5s_engine.h"
#include "h5s_error.h"
#include "h5s_format.h"
#include "h5s_prealloc.h"

/* Commit anyway once this many frames wait for one, so the pending meta stays small. */
#define H5S_MAX_PENDING_FRAMES 65536
/* H5Fflush at least this often (seconds) so the superblock's EOA stays fresh. */
#define H5S_FFLUSH_INTERVAL 1.0
#define H5S_BATCH 256

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Writes (or, before SWMR starts, replaces) a fixed-length string attribute. */
static int write_string_attr(hid_t obj, const char *name, const char *value)
{
    if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0)
        return -1;
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(value) > 0 ? strlen(value) : 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = attr >= 0 ? H5Awrite(attr, type, value) : -1;
    if (attr >= 0)
        H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
    return st < 0 ? -1 : 0;
}

int h5s_attr_string(hid_t obj, const char *name, const char *value)
{
    return write_string_attr(obj, name, value);
}

static int write_int_attr(hid_t obj, const char *name, int value)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(obj, name, H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = attr >= 0 ? H5Awrite(attr, H5T_NATIVE_INT, &value) : -1;
    if (attr >= 0)
        H5Aclose(attr);
    H5Sclose(space);
    return st < 0 ? -1 : 0;
}

static int write_status(h5s_file *f, int32_t state)
{
    h5s_status_row row = {state, wall_now(), (uint64_t)atomic_load(&f->st_committed)};
    hid_t type = h5s_format_status_type();
    herr_t st = H5Dwrite(f->status_dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &row);
    H5Tclose(type);
    if (st < 0 || H5Dflush(f->status_dset) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot write %s", f->path, H5S_STATUS_DATASET);
    return 0;
}

static int create_status(h5s_file *f)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t type = h5s_format_status_type();
    hsize_t one = 1;
    hid_t space = H5Screate_simple(1, &one, NULL);
    /* Contiguous and allocated now: overwriting it in place needs no new space later. */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_layout(dcpl, H5D_CONTIGUOUS);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    f->status_dset = H5Dcreate2(f->fid, H5S_STATUS_DATASET, type, space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Tclose(type);
    H5Pclose(lcpl);
    if (f->status_dset < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", f->path, H5S_STATUS_DATASET);
    return write_status(f, H5S_STATE_WRITING);
}

static hid_t make_fapl(const h5s_file_options *o)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    switch (o->locking) {
    case H5S_LOCKING_ON:
        H5Pset_file_locking(fapl, 1, 0);
        break;
    case H5S_LOCKING_OFF:
        H5Pset_file_locking(fapl, 0, 0);
        break;
    case H5S_LOCKING_BEST_EFFORT:
        H5Pset_file_locking(fapl, 1, 1);
        break;
    default: /* HDF5 reads HDF5_USE_FILE_LOCKING itself */
        break;
    }
    return fapl;
}

static int check_file_options(const h5s_file_options *opts, const char *path, h5s_file_options *out)
{
    h5s_file_options o = H5S_FILE_OPTIONS_INIT;
    if (opts)
        o = *opts;
    *out = o;
    if (o.version != H5S_FILE_OPTIONS_VERSION)
        return h5s_error_set(H5S_EINVAL, "%s: options version %u, expected %u", path, o.version,
                             H5S_FILE_OPTIONS_VERSION);
    if (o.queue_bytes < ((size_t)1 << 20))
        return h5s_error_set(H5S_EINVAL, "%s: queue budget %zu bytes is below 1 MiB", path,
                             o.queue_bytes);
    if (o.encode_threads < 0 || o.encode_threads > 256)
        return h5s_error_set(H5S_EINVAL, "%s: %d encoder threads (expected 0 to 256)", path,
                             o.encode_threads);
    if (o.locking < H5S_LOCKING_ENV || o.locking > H5S_LOCKING_BEST_EFFORT)
        return h5s_error_set(H5S_EINVAL, "%s: unknown locking policy %d", path, (int)o.locking);
    return h5s_filters_init();
}

/* A file object in its declaration phase, with no HDF5 file yet. */
static int file_new(h5s_file **out, const char *path, const h5s_file_options *opts)
{
    h5s_error_clear();
    h5s_hdf5_quiet();
    if (!out || !path || !path[0])
        return h5s_error_set(H5S_EINVAL, "h5stream: no output or path given");
    *out = NULL;
    h5s_file_options o;
    int rc = check_file_options(opts, path, &o);
    if (rc)
        return rc;
    h5s_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    }
    f->opts = o;
    snprintf(f->creator, sizeof f->creator, "%s",
             o.creator ? o.creator : "h5stream " H5S_VERSION_STRING);
    f->opts.creator = f->creator;
    f->status_dset = H5I_INVALID_HID;
    f->fid = H5I_INVALID_HID;
    h5s_prealloc_init(&f->prealloc, -1, 0);
    *out = f;
    return 0;
}

/* Frees a file object that never started SWMR, closing what it opened. */
static void file_discard(h5s_file *f)
{
    if (f->status_dset >= 0)
        H5Dclose(f->status_dset);
    for (size_t i = 0; i < f->nframes; i++)
        h5s_frames_free(f->frames[i]);
    free(f->frames);
    for (size_t i = 0; i < f->ngroups; i++) {
        h5s_group_close_handles(f->groups[i]);
        h5s_group_free(f->groups[i]);
    }
    free(f->groups);
    h5s_file_free_attached(f);
    if (f->fid >= 0)
        H5Fclose(f->fid);
    free(f->path);
    free(f);
}

int h5s_file_create(h5s_file **out, const char *path, const h5s_file_options *opts)
{
    h5s_file *f;
    int rc = file_new(&f, path, opts);
    if (rc)
        return rc;
    hid_t fapl = make_fapl(&f->opts);
    f->fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f->fid < 0) {
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot create the file", path);
        file_discard(f);
        return rc;
    }
    if (write_string_attr(f->fid, H5S_ATTR_FORMAT, H5S_FORMAT_NAME) < 0 ||
        write_int_attr(f->fid, H5S_ATTR_FORMAT_VERSION, H5S_FORMAT_VERSION) < 0 ||
        write_string_attr(f->fid, H5S_ATTR_CREATOR, f->creator) < 0) {
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot write the root attributes", path);
        file_discard(f);
        return rc;
    }
    rc = create_status(f);
    if (rc) {
        file_discard(f);
        return rc;
    }
    *out = f;
    return 0;
}

/* 1 when the root attribute name holds the string want. */
static int root_string_is(hid_t fid, const char *name, const char *want)
{
    char buf[64] = "";
    hid_t a = H5Aexists(fid, name) > 0 ? H5Aopen(fid, name, H5P_DEFAULT) : H5I_INVALID_HID;
    hid_t t = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
    int ok = t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t) &&
             H5Tget_size(t) < sizeof buf && H5Aread(a, t, buf) >= 0 && strcmp(buf, want) == 0;
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return ok;
}

static int root_int(hid_t fid, const char *name, int *value)
{
    hid_t a = H5Aexists(fid, name) > 0 ? H5Aopen(fid, name, H5P_DEFAULT) : H5I_INVALID_HID;
    int ok = a >= 0 && H5Aread(a, H5T_NATIVE_INT, value) >= 0;
    if (a >= 0)
        H5Aclose(a);
    return ok;
}

int h5s_file_open_append(h5s_file **out, const char *path, const h5s_file_options *opts)
{
    h5s_file *f;
    int rc = file_new(&f, path, opts);
    if (rc)
        return rc;
    if (access(path, F_OK) != 0) {
        file_discard(f);
        return h5s_error_set(H5S_ENOTFOUND, "%s: no such file", path);
    }
    hid_t fapl = make_fapl(&f->opts);
    f->fid = H5Fopen(path, H5F_ACC_RDWR, fapl);
    H5Pclose(fapl);
    if (f->fid < 0) {
        rc = h5s_error_set_h5(H5S_EIO,
                              "%s: cannot open it to append (if its writer was killed, run "
                              "`h5stream recover` first)",
                              path);
        file_discard(f);
        return rc;
    }
    int version = 0;
    if (!root_string_is(f->fid, H5S_ATTR_FORMAT, H5S_FORMAT_NAME) ||
        !root_int(f->fid, H5S_ATTR_FORMAT_VERSION, &version) || version != H5S_FORMAT_VERSION) {
        file_discard(f);
        return h5s_error_set(H5S_EFORMAT, "%s: not an h5stream file of format version %d", path,
                             H5S_FORMAT_VERSION);
    }
    f->status_dset = H5Dopen2(f->fid, H5S_STATUS_DATASET, H5P_DEFAULT);
    if (f->status_dset < 0) {
        file_discard(f);
        return h5s_error_set(H5S_EFORMAT, "%s: no %s", path, H5S_STATUS_DATASET);
    }
    rc = h5s_frames_adopt_all(f);
    if (rc) {
        file_discard(f);
        return rc;
    }
    uint64_t committed = 0;
    for (size_t i = 0; i < f->nframes; i++)
        committed += f->frames[i]->committed;
    atomic_store(&f->st_committed, committed);
    *out = f;
    return 0;
}

int h5s_frames_get(h5s_frames **out, h5s_file *file, const char *path)
{
    if (!out || !file)
        return h5s_error_set(H5S_EINVAL, "h5s_frames_get: NULL argument");
    if (!path || strcmp(path, H5S_FRAMES_NXDATA_LINK) == 0)
        path = H5S_FRAMES_DEFAULT_PATH;
    for (size_t i = 0; i < file->nframes; i++) {
        if (strcmp(file->frames[i]->path, path) == 0) {
            *out = file->frames[i];
            return 0;
        }
    }
    return h5s_error_set(H5S_ENOTFOUND, "%s: no frames dataset %s", file->path, path);
}

const char *h5s_file_path(const h5s_file *file)
{
    return file ? file->path : NULL;
}

int h5s_file_link(h5s_file *file, const char *link_path, const char *target_path)
{
    h5s_error_clear();
    if (!file || !link_path || !target_path || link_path[0] != '/' || target_path[0] != '/')
        return h5s_error_set(H5S_EINVAL, "h5s_file_link: paths must be absolute");
    if (file->started)
        return h5s_error_set(H5S_ESTATE, "%s: hard link %s after SWMR started", file->path,
                             link_path);
    if (!h5s_format_path_exists(file->fid, target_path))
        return h5s_error_set(H5S_ENOTFOUND, "%s: link target %s does not exist", file->path,
                             target_path);
    if (h5s_format_path_exists(file->fid, link_path))
        return h5s_error_set(H5S_EINVAL, "%s: %s already exists", file->path, link_path);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    herr_t st = H5Lcreate_hard(file->fid, target_path, file->fid, link_path, lcpl, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (st < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot link %s -> %s", file->path, link_path,
                                target_path);
    return 0;
}

/* ---- writer thread ---------------------------------------------------------------- */

/* Records the error on this thread's message as the stream's kept error. */
static void writer_fail(h5s_file *f, int code)
{
    h5s_queue_fail(&f->q, code, h5s_error_message());
}

static int commit(h5s_file *f, int fflush);

/*
 * Keeps the error on this thread's message as the stream's error, after committing the
 * frames stored before it: they are whole, and append said so to their producers. The
 * commit is best effort (when the file itself failed it may fail too).
 */
static void fail_after_commit(h5s_file *f, int code)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", h5s_error_message());
    commit(f, 1);
    h5s_error_restore(code, msg);
    writer_fail(f, code);
}

static int uncommitted(const h5s_file *f)
{
    for (size_t i = 0; i < f->nframes; i++)
        if (f->frames[i]->written > f->frames[i]->committed)
            return 1;
    for (size_t i = 0; i < f->ngroups; i++)
        if (h5s_group_pending(f->groups[i]))
            return 1;
    return 0;
}

static uint64_t pending_frames(const h5s_file *f)
{
    uint64_t n = 0;
    for (size_t i = 0; i < f->nframes; i++)
        n += f->frames[i]->written - f->frames[i]->committed;
    return n;
}

static int commit(h5s_file *f, int fflush)
{
    int rc = 0;
    uint64_t total = 0;
    /* A reader in this process sees each HDF5 call below as it returns: it waits for the
     * whole commit (h5s_commit_lock.h). */
    h5s_commit_lock_exclusive();
    /* Every payload first, then every marker. */
    for (size_t i = 0; i < f->nframes && rc == 0; i++)
        rc = h5s_frames_commit_payload(f->frames[i]);
    for (size_t i = 0; i < f->ngroups && rc == 0; i++)
        rc = h5s_group_commit_payload(f->groups[i]);
    for (size_t i = 0; i < f->nframes && rc == 0; i++)
        rc = h5s_frames_commit_marker(f->frames[i]);
    for (size_t i = 0; i < f->ngroups && rc == 0; i++)
        rc = h5s_group_commit_marker(f->groups[i]);
    for (size_t i = 0; i < f->nframes; i++)
        total += f->frames[i]->committed;
    for (size_t i = 0; i < f->ngroups; i++)
        total += h5s_group_committed(f->groups[i]);
    atomic_store(&f->st_committed, total);
    if (rc == 0)
        rc = write_status(f, H5S_STATE_WRITING);
    double now = h5s_mono_now();
    int flushed = rc == 0 && fflush;
    if (flushed && H5Fflush(f->fid, H5F_SCOPE_LOCAL) < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: H5Fflush failed", f->path);
    h5s_commit_unlock_exclusive();
    if (flushed) {
        f->last_fflush = now;
#ifdef __GLIBC__
        /* Blosc allocates its temporaries on every call, between HDF5's small objects;
         * glibc then keeps the freed pages and RSS creeps up with stream length. Handing
         * them back once a second keeps peak RSS flat (docs/architecture.md, Memory). */
        malloc_trim(0);
#endif
    }
    f->last_commit = now;
    atomic_fetch_add(&f->st_commits, 1);
    return rc;
}

/* Reserves file space for the chunks of a batch before they are written (h5s_prealloc.h):
 * the file's end of allocation plus their bytes, plus 1 MiB for HDF5's metadata. */
static void reserve_for(h5s_file *f, h5s_job *const *batch, size_t n)
{
    if (f->prealloc.fd < 0)
        return;
    uint64_t bytes = 1 << 20;
    for (size_t i = 0; i < n; i++)
        if ((batch[i]->kind == H5S_JOB_CHUNK || batch[i]->kind == H5S_JOB_BAND) &&
            !batch[i]->status)
            for (size_t k = 0; k < batch[i]->nchunks; k++)
                bytes += batch[i]->chunks[k].size;
    hsize_t size = 0;
    if (H5Fget_filesize(f->fid, &size) < 0) {
        H5Eclear2(H5E_DEFAULT);
        return;
    }
    h5s_prealloc_ensure(&f->prealloc, (uint64_t)size + bytes);
}

/* Writes a batch of jobs taken in sequence order. Returns 1 after the STOP job. */
static int writer_batch(h5s_file *f, h5s_job **batch, size_t n, uint64_t *since_commit)
{
    int failed = h5s_queue_error(&f->q) != 0;
    int want_commit = 0, stop = 0;
    uint64_t end_seq = 0;
    if (!failed)
        reserve_for(f, batch, n);

    /* One extent change per dataset per batch, covering all its bands. */
    if (!failed) {
        for (size_t i = 0; i < n; i++) {
            h5s_job *j = batch[i];
            if (j->kind != H5S_JOB_BAND || j->status)
                continue;
            uint64_t end = j->first_frame + j->nframes;
            size_t k = i + 1;
            for (; k < n; k++)
                if (batch[k]->kind == H5S_JOB_BAND && batch[k]->frames == j->frames)
                    end = batch[k]->first_frame + batch[k]->nframes;
            if (h5s_frames_extend(j->frames, end) != 0) {
                fail_after_commit(f, H5S_EIO);
                failed = 1;
                break;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        h5s_job *j = batch[i];
        end_seq = j->seq + 1;
        if (j->kind == H5S_JOB_CHUNK && !failed) {
            int rc = j->status;
            if (rc)
                h5s_error_restore(rc, j->errmsg);
            else
                rc = h5s_column_write(j);
            if (rc < 0) {
                fail_after_commit(f, rc);
                failed = 1;
            } else if (rc == 1) {
                h5s_queue_release(&f->q, j->charged);
                continue; /* a marker chunk, kept until the commit */
            }
        } else if (j->kind == H5S_JOB_MARK) {
            h5s_group_mark(j);
            want_commit = want_commit ? want_commit : 1;
        } else if (j->kind == H5S_JOB_CALL && !failed) {
            int rc = j->call(f->fid, j->call_payload);
            if (rc) {
                fail_after_commit(f, rc);
                failed = 1;
            }
        } else if (j->kind == H5S_JOB_BAND && !failed) {
            int rc = j->status;
            if (rc)
                h5s_error_restore(rc, j->errmsg);
            else
                rc = h5s_frames_write_band(j->frames, j);
            if (rc) {
                fail_after_commit(f, rc);
                failed = 1;
            } else {
                *since_commit += j->nframes;
            }
        } else if (j->kind == H5S_JOB_FLUSH) {
            want_commit = 2;
        } else if (j->kind == H5S_JOB_STOP) {
            stop = 1;
        }
        h5s_queue_release(&f->q, j->charged);
        h5s_job_free(j);
    }
    if (!failed && !want_commit) {
        double now = h5s_mono_now();
        if ((f->opts.flush_every && *since_commit >= f->opts.flush_every) ||
            pending_frames(f) >= H5S_MAX_PENDING_FRAMES ||
            (f->opts.flush_ms && uncommitted(f) &&
             now - f->last_commit >= f->opts.flush_ms / 1000.0))
            want_commit = 1;
    }
    if (!failed && (want_commit || stop)) {
        int fflush =
            want_commit == 2 || stop || h5s_mono_now() - f->last_fflush >= H5S_FFLUSH_INTERVAL;
        if (commit(f, fflush) != 0)
            writer_fail(f, H5S_EIO);
        *since_commit = 0;
    }
    h5s_queue_mark_done(&f->q, end_seq);
    return stop;
}

static void writer_finish(h5s_file *f)
{
    /* Always a final state, so readers following the file stop: 2 after an error. */
    if (h5s_queue_error(&f->q) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", h5s_error_message());
        write_status(f, H5S_STATE_FAILED); /* best effort: the file may be what failed */
        h5s_error_restore(H5S_EIO, msg);
    } else if (write_status(f, H5S_STATE_CLOSED) != 0) {
        writer_fail(f, H5S_EIO);
    }
    for (size_t i = 0; i < f->nframes; i++)
        h5s_frames_close_handles(f->frames[i]);
    for (size_t i = 0; i < f->ngroups; i++)
        h5s_group_close_handles(f->groups[i]);
    H5Dclose(f->status_dset);
    f->status_dset = H5I_INVALID_HID;
    if (H5Fclose(f->fid) < 0) {
        if (h5s_queue_error(&f->q) == 0) {
            h5s_error_set_h5(H5S_EIO, "%s: closing the file failed", f->path);
            writer_fail(f, H5S_EIO);
        }
        /* HDF5 could not write its metadata at close (a full disk): the file is left
         * marked open for writing, or shorter than its superblock says, and no reader
         * opens it until recover has run. The committed items are still there. */
        char note[1536];
        snprintf(note, sizeof note,
                 "; the file could not be closed cleanly either: once there is room, run "
                 "`h5stream recover %s` (h5s_recover), which keeps every committed item",
                 f->path);
        h5s_queue_note(&f->q, note);
    }
    f->fid = H5I_INVALID_HID;
    h5s_prealloc_trim(&f->prealloc);
}

static void *writer_main(void *arg)
{
    h5s_file *f = arg;
    h5s_hdf5_quiet();
    h5s_job *batch[H5S_BATCH];
    uint64_t since_commit = 0;
    f->last_commit = h5s_mono_now();
    /* The first commit also flushes the file, so the superblock's EOA is current from
     * the first committed frame on (h5clear -s, if someone runs it anyway). */
    f->last_fflush = f->last_commit - 2 * H5S_FFLUSH_INTERVAL;
    for (;;) {
        double deadline = -1;
        if (h5s_queue_error(&f->q) != 0)
            deadline = -1; /* failed: nothing to commit, only the STOP job to wait for */
        else if (f->opts.flush_ms && uncommitted(f))
            deadline = f->last_commit + f->opts.flush_ms / 1000.0;
        else if (f->opts.flush_ms)
            deadline = h5s_mono_now() + f->opts.flush_ms / 1000.0;
        size_t n = h5s_queue_take_ready(&f->q, batch, H5S_BATCH, deadline);
        if (writer_batch(f, batch, n, &since_commit))
            break;
        /* Groups whose producers went quiet: cut for them, so readers see their last
         * items within flush_ms (the cut's jobs come back through the queue). */
        if (f->opts.flush_ms && f->ngroups && h5s_queue_error(&f->q) == 0) {
            double now = h5s_mono_now(), interval = f->opts.flush_ms / 1000.0;
            for (size_t i = 0; i < f->ngroups; i++)
                if (h5s_group_needs_cut(f->groups[i], now, interval))
                    h5s_group_try_cut(f->groups[i]);
        }
    }
    writer_finish(f);
    return NULL;
}

/* ---- encoder pool ----------------------------------------------------------------- */

static void *encoder_main(void *arg)
{
    h5s_file *f = arg;
    size_t biggest = 1;
    for (size_t i = 0; i < f->nframes; i++)
        if (f->frames[i]->chunk_bytes > biggest)
            biggest = f->frames[i]->chunk_bytes;
    for (size_t i = 0; i < f->ngroups; i++)
        if (h5s_group_max_chunk_bytes(f->groups[i]) > biggest)
            biggest = h5s_group_max_chunk_bytes(f->groups[i]);
    unsigned char *gather = malloc(biggest);
    unsigned char *scratch = malloc(biggest);
    for (;;) {
        h5s_job *job = h5s_queue_take_work(&f->q);
        if (!job)
            break;
        if (!gather || !scratch)
            job->status = h5s_error_set(H5S_ENOMEM, "%s: encoder out of memory", f->path);
        else if (job->kind == H5S_JOB_CHUNK)
            job->status = h5s_column_encode(job, scratch);
        else
            job->status = h5s_frames_encode(job, gather, scratch);
        if (job->status)
            job->errmsg = strdup(h5s_error_message());
        h5s_queue_put_ready(&f->q, job, h5s_job_held_bytes(job));
    }
    free(gather);
    free(scratch);
    return NULL;
}

/* ---- start, flush, close ---------------------------------------------------------- */

/* Free-list length: what the budget allows, capped (a huge budget of tiny bands would
 * otherwise size a huge list up front). */
static size_t pool_keep(size_t n)
{
    return n < 65536 ? n : 65536;
}

/* The sec2 driver's descriptor, for h5s_prealloc; other drivers get none. */
static void start_prealloc(h5s_file *f)
{
    h5s_prealloc_init(&f->prealloc, -1, 0);
    hid_t fapl = H5Fget_access_plist(f->fid);
    int *fd = NULL;
    if (fapl >= 0 && H5Pget_driver(fapl) == H5FD_SEC2 &&
        H5Fget_vfd_handle(f->fid, fapl, (void **)&fd) >= 0 && fd)
        h5s_prealloc_init(&f->prealloc, *fd, H5S_PREALLOC_STEP);
    if (fapl >= 0)
        H5Pclose(fapl);
    H5Eclear2(H5E_DEFAULT);
}

int h5s_file_start_swmr(h5s_file *f)
{
    h5s_error_clear();
    if (!f)
        return h5s_error_set(H5S_EINVAL, "h5s_file_start_swmr: no file");
    if (f->started)
        return h5s_error_set(H5S_ESTATE, "%s: SWMR already started", f->path);
    char models[H5S_MAX_MODELS * 33 + 8] = "";
    if (f->nframes)
        strcat(models, "frames");
    for (unsigned i = 0; i < f->nmodels; i++) {
        if (models[0])
            strcat(models, ",");
        strcat(models, f->models[i]);
    }
    if (write_string_attr(f->fid, H5S_ATTR_MODELS, models) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot write %s", f->path, H5S_ATTR_MODELS);
    for (size_t i = 0; i < f->nframes; i++) {
        int rc = f->frames[i]->adopted ? 0 : h5s_frames_write_attrs(f->frames[i]);
        if (rc)
            return rc;
    }
    /* A file reopened to append says "closed" until now; readers must see it live. */
    int rc_status = write_status(f, H5S_STATE_WRITING);
    if (rc_status)
        return rc_status;
    /* Datasets are reopened after the switch: access properties set before it can be lost
     * in HDF5 1.10.8 (DESIGN.md section 3). */
    H5Dclose(f->status_dset);
    f->status_dset = H5I_INVALID_HID;
    if (H5Fstart_swmr_write(f->fid) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: H5Fstart_swmr_write failed", f->path);
    f->status_dset = H5Dopen2(f->fid, H5S_STATUS_DATASET, H5P_DEFAULT);
    if (f->status_dset < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot reopen %s", f->path, H5S_STATUS_DATASET);
    for (size_t i = 0; i < f->nframes; i++) {
        int rc = h5s_frames_open_swmr(f->frames[i]);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < f->ngroups; i++) {
        int rc = h5s_group_open_swmr(f->groups[i]);
        if (rc)
            return rc;
    }
    f->stop_job = calloc(1, sizeof *f->stop_job);
    if (!f->stop_job)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    f->stop_job->kind = H5S_JOB_STOP;
    start_prealloc(f);
    int rc = h5s_queue_init(&f->q, f->opts.queue_bytes, f->opts.nonblocking);
    if (rc)
        return rc;
    int n = f->opts.encode_threads;
    if (n == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = cores > 0 ? (int)cores : 1;
    }
    f->encoders = calloc((size_t)n, sizeof *f->encoders);
    if (!f->encoders)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    /* Free lists big enough for every buffer the budget lets exist at once, plus what
     * the encoders and one open band per dataset hold outside it. */
    for (size_t i = 0; i < f->nframes; i++) {
        h5s_frames *fr = f->frames[i];
        size_t tiles = (size_t)(fr->tiles[0] * fr->tiles[1] * fr->tiles[2]);
        if (tiles == 1) {
            /* Untiled: a band's buffer becomes its encoded chunk's, so one pool serves
             * both and what it keeps stays within the budget. */
            size_t size = fr->band_bytes > fr->chunk_bound ? fr->band_bytes : fr->chunk_bound;
            fr->band_bytes_alloc = size;
            h5s_pool_init(&fr->band_pool, size,
                          pool_keep(f->opts.queue_bytes / size + (size_t)n + 2));
        } else {
            fr->band_bytes_alloc = fr->band_bytes;
            h5s_pool_init(&fr->band_pool, fr->band_bytes,
                          pool_keep(f->opts.queue_bytes / fr->band_bytes + (size_t)n + 2));
            h5s_pool_init(
                &fr->chunk_pool, fr->chunk_bound,
                pool_keep(f->opts.queue_bytes / fr->chunk_bound + tiles * ((size_t)n + 1)));
        }
    }
    /* The engine's threads block every signal, so the application's own threads are the
     * ones that handle SIGINT and friends; new threads inherit the creator's mask. */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&f->encoders[i], NULL, encoder_main, f) != 0)
            break;
        f->nencoders++;
    }
    int writer_rc = f->nencoders == n ? pthread_create(&f->writer, NULL, writer_main, f) : -1;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (writer_rc != 0) {
        h5s_queue_stop_encoders(&f->q);
        for (int i = 0; i < f->nencoders; i++)
            pthread_join(f->encoders[i], NULL);
        f->nencoders = 0;
        return h5s_error_set(H5S_ENOMEM, "%s: cannot start the writer threads", f->path);
    }
    f->started = 1;
    return 0;
}

/* Hands the writer every group's partial chunks and a commit point. */
static int cut_groups(h5s_file *f)
{
    int rc = 0;
    for (size_t i = 0; i < f->ngroups; i++) {
        h5s_group_lock(f->groups[i]);
        int r = h5s_group_cut(f->groups[i], 1);
        h5s_group_unlock(f->groups[i]);
        if (r && !rc)
            rc = r;
    }
    return rc;
}

int h5s_file_flush(h5s_file *f)
{
    h5s_error_clear();
    if (!f)
        return h5s_error_set(H5S_EINVAL, "h5s_file_flush: no file");
    if (!f->started || atomic_load(&f->closing))
        return h5s_error_set(H5S_ESTATE, "%s: flush before SWMR started or after close", f->path);
    h5s_job *job = calloc(1, sizeof *job);
    if (!job)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    job->kind = H5S_JOB_FLUSH;
    int rc = cut_groups(f);
    if (rc) {
        free(job);
        return rc;
    }
    uint64_t seq = h5s_queue_submit(&f->q, job);
    return h5s_queue_wait_done(&f->q, seq);
}

int h5s_file_stats_get(h5s_file *f, h5s_file_stats *out)
{
    if (!f || !out)
        return h5s_error_set(H5S_EINVAL, "h5s_file_stats_get: NULL argument");
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < f->nframes; i++)
        out->appended += atomic_load(&f->frames[i]->appended);
    for (size_t i = 0; i < f->ngroups; i++)
        out->appended += h5s_group_items(f->groups[i]);
    out->committed = atomic_load(&f->st_committed);
    out->commits = atomic_load(&f->st_commits);
    out->bytes_raw = atomic_load(&f->st_bytes_raw);
    out->bytes_stored = atomic_load(&f->st_bytes_stored);
    if (f->started) {
        pthread_mutex_lock(&f->q.mu);
        out->queue_bytes = f->q.used;
        out->queue_peak_bytes = f->q.peak;
        pthread_mutex_unlock(&f->q.mu);
    }
    return 0;
}

int h5s_file_close(h5s_file *f)
{
    if (!f)
        return 0;
    int rc = 0;
    if (f->started) {
        atomic_store(&f->closing, 1);
        for (size_t i = 0; i < f->nframes; i++)
            h5s_frames_submit_partial(f->frames[i]);
        cut_groups(f); /* an error here is the stream's kept error, returned below */
        h5s_queue_submit(&f->q, f->stop_job); /* the writer frees it */
        f->stop_job = NULL;
        /* Encoders drain the FIFO before they stop; the writer ends at STOP. */
        h5s_queue_stop_encoders(&f->q);
        for (int i = 0; i < f->nencoders; i++)
            pthread_join(f->encoders[i], NULL);
        pthread_join(f->writer, NULL);
        rc = h5s_queue_error(&f->q);
        h5s_queue_destroy(&f->q);
    } else {
        h5s_queue_destroy(&f->q); /* a start that failed half-way may have made it */
        if (f->status_dset >= 0) {
            write_status(f, H5S_STATE_CLOSED);
            H5Dclose(f->status_dset);
        }
        for (size_t i = 0; i < f->nframes; i++)
            h5s_frames_close_handles(f->frames[i]);
        for (size_t i = 0; i < f->ngroups; i++)
            h5s_group_close_handles(f->groups[i]);
        if (f->fid >= 0 && H5Fclose(f->fid) < 0)
            rc = h5s_error_set_h5(H5S_EIO, "%s: closing the file failed", f->path);
    }
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", h5s_error_message());
    for (size_t i = 0; i < f->nframes; i++)
        h5s_frames_free(f->frames[i]);
    free(f->frames);
    for (size_t i = 0; i < f->ngroups; i++)
        h5s_group_free(f->groups[i]);
    free(f->groups);
    h5s_file_free_attached(f);
    free(f->encoders);
    free(f->stop_job);
    free(f->path);
    free(f);
    if (rc)
        h5s_error_restore(rc, msg);
    return rc;
}
