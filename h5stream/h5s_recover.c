/*
 * h5s_recover.c - h5s_recover: makes the file of a killed SWMR writer readable without
 * losing a committed frame (DESIGN.md section 3; docs/format.md, "Crash recovery").
 *
 * The steps, and why they come in this order:
 *
 * 1. Read the superblock ourselves (HDF5 file format specification, superblock versions
 *    2 and 3) to learn whether a writer still has the file marked open. HDF5 refuses a
 *    normal open of such a file, so this is the only way to tell before repairing it.
 * 2. Refuse when another process has the file open for writing. File locks cannot tell:
 *    HDF5 1.10 drops its flock once H5Fstart_swmr_write returns (readers must get in), so
 *    a running SWMR writer holds no lock. On Linux /proc can tell, so we ask it.
 * 3. Clear the superblock's status flags and move the end-of-allocation (EOA) to the end
 *    of file in one RDWR open: the fapl property "clear_status_flags" that h5clear -s
 *    sets, plus "skip_eof_check" and "null_fsm_addr" that h5clear --increment sets, then
 *    H5Fincrement_filesize(fid, 0) before closing. During SWMR writing the EOA stored in
 *    the superblock lags the file; closing truncates the file to its EOA, so clearing
 *    the flags alone (`h5clear -s`) would cut off every chunk written since the last
 *    superblock flush.
 * 4. Reopen normally, find the frames datasets, trim the payload (data, timestamp,
 *    per-frame values) to the commit marker (frame_id), read every committed frame back,
 *    and mark /h5stream/writer closed. Nothing is changed in this step until the whole
 *    layout has been checked (a marker longer than its payload stops it), and a file that
 *    needs no change is only ever opened read-only, so its bytes stay as they were.
 *
 * Step 3 comes before we can look inside the file, so an HDF5 file of another program
 * whose writer died also gets its flags cleared (safely, as above) before H5S_EFORMAT.
 *
 * File locking follows HDF5_USE_FILE_LOCKING (HDF5's default: on). After a crash there
 * is no stale lock to get around: flock locks belong to open file descriptions and the
 * kernel drops them when the process dies. Keeping them on still stops us from changing
 * a file that a live non-SWMR HDF5 writer (or one still declaring its schema) holds. On
 * a file system without flock the user sets HDF5_USE_FILE_LOCKING=FALSE or BEST_EFFORT,
 * as for every other HDF5 program.
 */
#include "h5stream.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <dirent.h>
#endif

#include "h5s_codec.h"
#include "h5s_error.h"
#include "h5s_format.h"
#include "h5s_prealloc.h"

#define RC_PATH_MAX 1024
#define RC_MAX_RANK 4
#define RC_BLOCK 65536 /* elements of a 1-D per-frame dataset read at once */

/* HDF5 file format specification, "Superblock": consistency flags of versions 2 and 3. */
#define RC_SB_WRITE_ACCESS 0x01u
#define RC_SB_SWMR_WRITE_ACCESS 0x04u

/* What the superblock says. */
typedef struct {
    unsigned version;
    unsigned flags; /* consistency flags (0 for versions 0 and 1, which 1.10 never marks) */
    uint64_t eoa;   /* stored end-of-allocation, absolute (versions 2 and 3) */
} rc_super;

/* A 1-D per-frame dataset beside a frames dataset (frame_id, timestamp, scalars). */
typedef struct {
    char path[RC_PATH_MAX];
    uint64_t extent;
} rc_side;

/* A frames dataset and its per-frame datasets. */
typedef struct {
    char data[RC_PATH_MAX];   /* the name it was found under */
    char marker[RC_PATH_MAX]; /* frame_id */
    uint64_t committed;       /* frame_id extent */
    uint64_t extent;          /* data extent */
    rc_side *side;            /* per-frame datasets other than frame_id */
    size_t nside;
} rc_set;

typedef struct {
    const char *file; /* for messages */
    hid_t fid;
    rc_set *sets;
    size_t nsets;
} rc_scan;

/* ---- Superblock and other processes ---- */

/* Fills sb from the file's superblock. H5S_EFORMAT when there is no HDF5 signature or
 * a version 2/3 superblock has a bad size of offsets. */
static int read_superblock(const char *path, uint64_t fsize, rc_super *sb)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return h5s_error_set(H5S_EIO, "%s: cannot open: %s", path, strerror(errno));
    h5s_superblock s;
    int found = h5s_format_superblock(fd, fsize, &s);
    int err = errno;
    close(fd);
    if (found < 0)
        return h5s_error_set(H5S_EIO, "%s: cannot read: %s", path, strerror(err));
    if (found == 0)
        return h5s_error_set(H5S_EFORMAT, "%s: not an HDF5 file (no HDF5 signature)", path);
    memset(sb, 0, sizeof *sb);
    sb->version = s.version;
    if (s.version >= 2) {
        if (s.eof == 0)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: superblock at byte %" PRIu64 " has a bad size of "
                                 "offsets (%u)",
                                 path, s.offset, s.offset_size);
        sb->flags = s.flags;
        sb->eoa = s.eof;
    }
    return 0;
}

#ifdef __linux__
/* Reads the open flags of /proc/PID/fdinfo/FD; -1 if it cannot. */
static long fd_open_flags(const char *pid, const char *fd)
{
    char p[600];
    snprintf(p, sizeof p, "/proc/%s/fdinfo/%s", pid, fd);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    long flags = -1;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "flags:", 6) == 0) {
            flags = strtol(line + 6, NULL, 8);
            break;
        }
    fclose(f);
    return flags;
}

/*
 * Looks for another process that has the file open for writing; returns its pid (and
 * name in comm) or 0. Processes of other users are not visible and are not found.
 */
static long find_live_writer(const struct stat *target, char *comm, size_t commsize)
{
    DIR *proc = opendir("/proc");
    if (!proc)
        return 0;
    long self = (long)getpid(), found = 0;
    struct dirent *pe;
    while (!found && (pe = readdir(proc)) != NULL) {
        char *end;
        long pid = strtol(pe->d_name, &end, 10);
        if (*end != '\0' || pid <= 0 || pid == self)
            continue;
        char fddir[64];
        snprintf(fddir, sizeof fddir, "/proc/%ld/fd", pid);
        DIR *fds = opendir(fddir);
        if (!fds)
            continue;
        struct dirent *fe;
        while ((fe = readdir(fds)) != NULL) {
            if (fe->d_name[0] == '.')
                continue;
            char link[384];
            struct stat st;
            snprintf(link, sizeof link, "%s/%s", fddir, fe->d_name);
            if (stat(link, &st) != 0 || st.st_dev != target->st_dev || st.st_ino != target->st_ino)
                continue;
            long flags = fd_open_flags(pe->d_name, fe->d_name);
            if (flags >= 0 && (flags & O_ACCMODE) != O_RDONLY) {
                found = pid;
                break;
            }
        }
        closedir(fds);
    }
    closedir(proc);
    if (found) {
        char p[64];
        snprintf(p, sizeof p, "/proc/%ld/comm", found);
        FILE *f = fopen(p, "r");
        if (!f || !fgets(comm, (int)commsize, f))
            snprintf(comm, commsize, "?");
        comm[strcspn(comm, "\n")] = '\0';
        if (f)
            fclose(f);
    }
    return found;
}
#endif

/* ---- Step 3: flags and EOA ---- */

/* Sets a boolean fapl property that this HDF5 build may not have; 1 if set, 0 if absent. */
static int set_private_flag(hid_t fapl, const char *name)
{
    hbool_t yes = 1;
    if (H5Pexist(fapl, name) <= 0)
        return 0;
    return H5Pset(fapl, name, &yes) >= 0;
}

/* Gives a short file its old size back after clear_flags_keep_data extended it. */
static void undo_extension(const char *path, uint64_t size)
{
    struct stat now;
    if (stat(path, &now) == 0 && (uint64_t)now.st_size > size)
        (void)truncate(path, (off_t)size);
}

static int clear_flags_keep_data(const char *path)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create a file access list", path);
    /* "clear_status_flags" is private to HDF5 (H5Fprivate.h) and registered in every
     * fapl since 1.10.0; h5clear relies on it. Without it there is no safe way in C. */
    if (!set_private_flag(fapl, "clear_status_flags")) {
        H5Pclose(fapl);
        return h5s_error_set(H5S_EIO,
                             "%s: this HDF5 library has no \"clear_status_flags\" file "
                             "access property; run `h5clear -s --increment=0 %s` instead",
                             path, path);
    }
    /* A superblock flushed mid-stream may record an EOA past bytes never written (the
     * allocator reserves ahead); HDF5's EOF check would then call the file truncated. */
    set_private_flag(fapl, "skip_eof_check");
    /* Persistent free-space managers, if the file had them, are stale after a crash. */
    set_private_flag(fapl, "null_fsm_addr");

    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, fapl);
    H5Pclose(fapl);
    if (fid < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot open for repair", path);
    if (H5Fincrement_filesize(fid, 0) < 0) {
        /* It only sets a number in memory, so this does not happen in practice. There is
         * no way back: the handle must be closed (HDF5 would close it at exit anyway),
         * and closing truncates to the stale EOA. Say so plainly. */
        int rc = h5s_error_set_h5(H5S_EIO,
                                  "%s: cannot move the end-of-allocation to the "
                                  "end of file; data past the stored end may be lost",
                                  path);
        H5Fclose(fid);
        return rc;
    }
    if (H5Fclose(fid) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: closing after clearing the status flags", path);
    return 0;
}

/* ---- Step 4: finding frames datasets ---- */

/* 1 when name (relative to loc) is a dataset; its rank and extent. */
static int probe_dataset(hid_t loc, const char *name, int *rank, hsize_t dims[RC_MAX_RANK])
{
    H5O_info_t oi;
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return 0;
    if (H5Oget_info_by_name2(loc, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0 ||
        oi.type != H5O_TYPE_DATASET)
        return 0;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0)
        return 0;
    hid_t s = H5Dget_space(d);
    int r = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    int ok = r >= 1 && r <= RC_MAX_RANK && H5Sget_simple_extent_dims(s, dims, NULL) >= 0;
    if (s >= 0)
        H5Sclose(s);
    H5Dclose(d);
    if (!ok)
        return 0;
    *rank = r;
    return 1;
}

/* Keeps one frames dataset found by h5s_format_find_frames, with the extents of its
 * marker, its data and every per-frame dataset its h5stream_per_frame attribute lists
 * (recovery trims exactly those, never a neighbour). */
static int collect_set(const h5s_format_frames *found, void *payload)
{
    rc_scan *sc = payload;
    rc_set s;
    memset(&s, 0, sizeof s);
    snprintf(s.data, sizeof s.data, "%s", found->data);
    snprintf(s.marker, sizeof s.marker, "%s", found->marker);
    int rank = 0;
    hsize_t dims[RC_MAX_RANK];
    if (!probe_dataset(sc->fid, s.data, &rank, dims))
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot read its extent", sc->file, s.data);
    s.extent = dims[0];
    if (!probe_dataset(sc->fid, s.marker, &rank, dims))
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot read its extent", sc->file, s.marker);
    s.committed = dims[0];
    s.side = calloc(found->nper_frame ? found->nper_frame : 1, sizeof *s.side);
    if (!s.side)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", sc->file);
    for (unsigned i = 0; i < found->nper_frame; i++) {
        rc_side *side = &s.side[s.nside];
        snprintf(side->path, sizeof side->path, "%s", found->per_frame[i]);
        if (!probe_dataset(sc->fid, side->path, &rank, dims) || rank != 1) {
            free(s.side);
            return h5s_error_set(H5S_EFORMAT, "%s: %s: per-frame dataset %s is missing or not 1-D",
                                 sc->file, s.data, side->path);
        }
        side->extent = dims[0];
        s.nside++;
    }
    rc_set *grown = realloc(sc->sets, (sc->nsets + 1) * sizeof *grown);
    if (!grown) {
        free(s.side);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", sc->file);
    }
    sc->sets = grown;
    sc->sets[sc->nsets++] = s;
    return 0;
}

static void scan_free(rc_scan *sc)
{
    for (size_t i = 0; i < sc->nsets; i++)
        free(sc->sets[i].side);
    free(sc->sets);
    sc->sets = NULL;
    sc->nsets = 0;
}

static int scan_file(rc_scan *sc)
{
    return h5s_format_find_frames(sc->fid, sc->file, collect_set, sc);
}

/* ---- Step 4: trimming, status ---- */

static int trim_to(const char *file, hid_t fid, const char *path, uint64_t n)
{
    hid_t d = H5Dopen2(fid, path, H5P_DEFAULT);
    if (d < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot open", file, path);
    hid_t s = H5Dget_space(d);
    hsize_t dims[RC_MAX_RANK];
    int rank = s >= 0 ? H5Sget_simple_extent_dims(s, dims, NULL) : -1;
    if (s >= 0)
        H5Sclose(s);
    int rc = 0;
    if (rank < 1) {
        rc = h5s_error_set_h5(H5S_EIO, "%s: %s: cannot read its extent", file, path);
    } else {
        dims[0] = n;
        if (H5Dset_extent(d, dims) < 0)
            rc = h5s_error_set_h5(H5S_EIO, "%s: %s: cannot trim to %" PRIu64 " frames", file, path,
                                  n);
    }
    H5Dclose(d);
    return rc;
}

/* Reads (write = 0) or writes the status row. 1 read, 0 absent, < 0 error. */
static int status_io(const char *file, hid_t fid, h5s_status_row *row, int write)
{
    if (H5Lexists(fid, H5S_STATUS_GROUP, H5P_DEFAULT) <= 0 ||
        H5Lexists(fid, H5S_STATUS_DATASET, H5P_DEFAULT) <= 0)
        return 0;
    hid_t d = H5Dopen2(fid, H5S_STATUS_DATASET, H5P_DEFAULT);
    hid_t t = h5s_format_status_type();
    herr_t st = -1;
    if (d >= 0 && t >= 0)
        st = write ? H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, row)
                   : H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, row);
    if (t >= 0)
        H5Tclose(t);
    if (d >= 0)
        H5Dclose(d);
    if (st < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot %s the writer status", file,
                                H5S_STATUS_DATASET, write ? "write" : "read");
    return 1;
}

/* ---- Step 4: reading everything back ---- */

typedef struct {
    const char *file;
    unsigned char *bad; /* one flag per committed frame */
    uint64_t nbad;
    char first_msg[768]; /* message of the first failure, with HDF5's reason */
} rc_check;

static void mark_bad(rc_check *ck, uint64_t frame)
{
    if (!ck->bad[frame]) {
        ck->bad[frame] = 1;
        ck->nbad++;
    }
}

/* Keeps the message of the first failure (with HDF5's reason) for the final error. */
static void note_failure(rc_check *ck, const char *path, uint64_t frame, const char *what)
{
    if (ck->first_msg[0])
        return;
    h5s_error_set_h5(H5S_ECODEC, "%s: %s: frame %" PRIu64 " %s", ck->file, path, frame, what);
    snprintf(ck->first_msg, sizeof ck->first_msg, "%s", h5s_error_message());
}

/* Reads the first n values of a 1-D per-frame dataset; marks the frames that fail. */
static int check_side(rc_check *ck, hid_t fid, const char *path, uint64_t n)
{
    hid_t d = H5Dopen2(fid, path, H5P_DEFAULT);
    if (d < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot open", ck->file, path);
    hid_t t = H5Dget_type(d), fs = H5Dget_space(d);
    size_t tsize = t >= 0 ? H5Tget_size(t) : 0;
    unsigned char *buf = tsize ? malloc(RC_BLOCK * tsize) : NULL;
    int rc = 0;
    if (!buf || fs < 0) {
        rc = h5s_error_set(H5S_ENOMEM, "%s: %s: cannot set up reading", ck->file, path);
        goto done;
    }
    for (uint64_t first = 0; first < n; first += RC_BLOCK) {
        hsize_t start = first, count = n - first < RC_BLOCK ? n - first : RC_BLOCK;
        hid_t ms = H5Screate_simple(1, &count, NULL);
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
        herr_t st = H5Dread(d, t, ms, fs, H5P_DEFAULT, buf);
        H5Sclose(ms);
        if (st >= 0)
            continue;
        /* Narrow the failure down to the frames whose values cannot be read. */
        hsize_t one = 1;
        ms = H5Screate_simple(1, &one, NULL);
        for (hsize_t i = start; i < start + count; i++) {
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, &i, NULL, &one, NULL);
            if (H5Dread(d, t, ms, fs, H5P_DEFAULT, buf) < 0) {
                note_failure(ck, path, i, "cannot be read");
                mark_bad(ck, i);
            }
        }
        H5Sclose(ms);
    }
done:
    free(buf);
    if (fs >= 0)
        H5Sclose(fs);
    if (t >= 0)
        H5Tclose(t);
    H5Dclose(d);
    return rc;
}

/* Reads every committed frame of a frames dataset one by one; marks those that fail. */
static int check_frames(rc_check *ck, hid_t fid, const rc_set *s)
{
    int rc = 0;
    hid_t d = H5Dopen2(fid, s->data, H5P_DEFAULT);
    if (d < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot open", ck->file, s->data);
    hid_t t = H5Dget_type(d), fs = H5Dget_space(d), dcpl = H5Dget_create_plist(d);
    hid_t dapl = H5I_INVALID_HID, d2 = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    hsize_t dims[RC_MAX_RANK], chunk[RC_MAX_RANK], start[RC_MAX_RANK] = {0}, count[RC_MAX_RANK];
    int rank = fs >= 0 ? H5Sget_simple_extent_dims(fs, dims, NULL) : -1;
    int crank = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED
                    ? H5Pget_chunk(dcpl, RC_MAX_RANK, chunk)
                    : 0;
    size_t tsize = t >= 0 ? H5Tget_size(t) : 0;
    unsigned char *buf = NULL;
    if (rank < 2 || tsize == 0) {
        rc = h5s_error_set_h5(H5S_EIO, "%s: %s: cannot read its type and shape", ck->file, s->data);
        goto done;
    }
    size_t frame_bytes = tsize;
    for (int i = 1; i < rank; i++)
        frame_bytes *= (size_t)dims[i];
    uint64_t k = crank == rank ? chunk[0] : 1;

    /* Reopen with a chunk cache that holds one band (k frames) of chunks, so that reading
     * a band frame by frame decompresses each chunk once, not k times. */
    dapl = H5Pcreate(H5P_DATASET_ACCESS);
    size_t cache = frame_bytes * (size_t)k + ((size_t)1 << 20);
    if (dapl < 0 || H5Pset_chunk_cache(dapl, 12421, cache, 1.0) < 0 ||
        (d2 = H5Dopen2(fid, s->data, dapl)) < 0) {
        rc = h5s_error_set_h5(H5S_EIO, "%s: %s: cannot open for checking", ck->file, s->data);
        goto done;
    }
    buf = malloc(frame_bytes);
    count[0] = 1;
    for (int i = 1; i < rank; i++)
        count[i] = dims[i];
    ms = H5Screate_simple(rank, count, NULL);
    if (!buf || ms < 0) {
        rc = h5s_error_set(H5S_ENOMEM, "%s: %s: out of memory", ck->file, s->data);
        goto done;
    }
    for (uint64_t f = 0; f < s->committed; f++) {
        /* A chunk that was never written reads back as fill values without an error, so
         * ask the chunk index first (once per band, every tile of it). */
        if (crank == rank && f % k == 0) {
            hsize_t off[RC_MAX_RANK] = {f};
            int missing = 0;
            for (;;) {
                hsize_t bytes = 0;
                if (H5Dget_chunk_storage_size(d2, off, &bytes) < 0 || bytes == 0) {
                    missing = 1;
                    break;
                }
                int ax = rank - 1;
                for (; ax >= 1; ax--) {
                    off[ax] += chunk[ax];
                    if (off[ax] < dims[ax])
                        break;
                    off[ax] = 0;
                }
                if (ax < 1)
                    break;
            }
            if (missing) {
                H5Eclear2(H5E_DEFAULT);
                for (uint64_t g = f; g < f + k && g < s->committed; g++) {
                    note_failure(ck, s->data, g, "is committed but its chunk is missing");
                    mark_bad(ck, g);
                }
                f += k - 1;
                continue;
            }
        }
        start[0] = f;
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
        if (H5Dread(d2, t, ms, fs, H5P_DEFAULT, buf) < 0) {
            note_failure(ck, s->data, f, "does not decode");
            mark_bad(ck, f);
        }
    }
done:
    free(buf);
    if (ms >= 0)
        H5Sclose(ms);
    if (d2 >= 0)
        H5Dclose(d2);
    if (dapl >= 0)
        H5Pclose(dapl);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (fs >= 0)
        H5Sclose(fs);
    if (t >= 0)
        H5Tclose(t);
    H5Dclose(d);
    return rc;
}

/* ---- The whole ---- */

/* Checks the layout before anything is changed: payload never shorter than its marker. */
static int validate(const rc_scan *sc, int *needs_trim)
{
    *needs_trim = 0;
    for (size_t i = 0; i < sc->nsets; i++) {
        const rc_set *s = &sc->sets[i];
        if (s->extent < s->committed)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: %s: commit marker %s covers %" PRIu64
                                 " frames but the data holds only %" PRIu64,
                                 sc->file, s->data, s->marker, s->committed, s->extent);
        *needs_trim |= s->extent > s->committed;
        for (size_t j = 0; j < s->nside; j++) {
            if (s->side[j].extent < s->committed)
                return h5s_error_set(
                    H5S_EFORMAT,
                    "%s: %s: commit marker %s covers %" PRIu64 " frames but %s holds only %" PRIu64,
                    sc->file, s->data, s->marker, s->committed, s->side[j].path, s->side[j].extent);
            *needs_trim |= s->side[j].extent > s->committed;
        }
    }
    return 0;
}

/* other_items: what the other models' markers commit (count_models), so the status row
 * says what the writer's last commit said: every marker's items (docs/format.md). */
static int repair(const char *path, rc_scan *sc, h5s_status_row *status, int has_status,
                  uint64_t other_items)
{
    for (size_t i = 0; i < sc->nsets; i++) {
        rc_set *s = &sc->sets[i];
        int rc = 0;
        if (s->extent > s->committed)
            rc = trim_to(path, sc->fid, s->data, s->committed);
        for (size_t j = 0; rc == 0 && j < s->nside; j++)
            if (s->side[j].extent > s->committed)
                rc = trim_to(path, sc->fid, s->side[j].path, s->committed);
        if (rc)
            return rc;
    }
    if (has_status) {
        uint64_t committed = other_items;
        for (size_t i = 0; i < sc->nsets; i++)
            committed += sc->sets[i].committed;
        status->state = H5S_STATE_CLOSED;
        status->committed = committed;
        int rc = status_io(path, sc->fid, status, 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Reads every committed item of every frames dataset. H5S_ECODEC names the first
 * failure; rep counts all of them. Other errors stop the check. */
static int check_all(const char *path, rc_scan *sc, h5s_recover_report *rep)
{
    char first_msg[1024] = "";
    for (size_t i = 0; i < sc->nsets; i++) {
        rc_set *s = &sc->sets[i];
        rc_check ck;
        memset(&ck, 0, sizeof ck);
        ck.file = path;
        ck.bad = calloc(s->committed ? s->committed : 1, 1);
        if (!ck.bad)
            return h5s_error_set(H5S_ENOMEM, "%s: %s: out of memory", path, s->data);
        int rc = check_side(&ck, sc->fid, s->marker, s->committed);
        for (size_t j = 0; rc == 0 && j < s->nside; j++)
            rc = check_side(&ck, sc->fid, s->side[j].path, s->committed);
        if (rc == 0)
            rc = check_frames(&ck, sc->fid, s);
        if (rc == 0 && ck.nbad) {
            uint64_t first = 0;
            while (!ck.bad[first])
                first++;
            if (rep->unreadable == 0)
                rep->first_unreadable = first;
            rep->unreadable += ck.nbad;
            if (!first_msg[0])
                snprintf(first_msg, sizeof first_msg,
                         "%s (%" PRIu64 " of its %" PRIu64 " committed frames unreadable, "
                         "kept)",
                         ck.first_msg, ck.nbad, s->committed);
        }
        free(ck.bad);
        if (rc)
            return rc;
    }
    return first_msg[0] ? h5s_error_restore(H5S_ECODEC, first_msg) : 0;
}

static void fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* The rows a marker dataset commits (its first axis), or -1 if it is not there. */
static int64_t marker_rows(hid_t fid, const char *path)
{
    if (!h5s_format_path_exists(fid, path))
        return -1;
    hid_t d = H5Dopen2(fid, path, H5P_DEFAULT);
    hid_t sp = d >= 0 ? H5Dget_space(d) : H5I_INVALID_HID;
    hsize_t dims[8] = {0};
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (rank >= 1 && rank <= 8)
        H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0)
        H5Sclose(sp);
    if (d >= 0)
        H5Dclose(d);
    return rank >= 1 && rank <= 8 ? (int64_t)dims[0] : -1;
}

static void count_marker(hid_t fid, const char *path, int leading_zero, h5s_recover_report *rep)
{
    int64_t n = marker_rows(fid, path);
    if (n < 0)
        return;
    rep->markers++;
    if (leading_zero)
        n = n > 0 ? n - 1 : 0; /* offsets[0] = 0 is not an item */
    rep->items += (uint64_t)n;
}

static herr_t count_collection(hid_t g, const char *name, const H5L_info_t *info, void *payload)
{
    (void)info;
    void **args = payload;
    char path[512];
    snprintf(path, sizeof path, "/volumes/%s/obs", name);
    (void)g;
    count_marker(*(hid_t *)args[0], path, 0, args[1]);
    return 0;
}

/* The commit markers of the models built on groups of columns (docs/format.md, "Models").
 * Their payload columns may hold rows past the markers after a crash; readers never look
 * past a marker, so nothing there needs trimming: the report only counts what is kept. */
static void count_models(hid_t fid, h5s_recover_report *rep)
{
    count_marker(fid, "/tracts/offsets", 1, rep);
    count_marker(fid, "/marc/index", 0, rep);
    count_marker(fid, "/marc/rejected/index", 0, rep);
    count_marker(fid, "/obs_meta", 0, rep);
    if (h5s_format_path_exists(fid, "/volumes")) {
        hid_t g = H5Gopen2(fid, "/volumes", H5P_DEFAULT);
        void *args[2] = {&fid, rep};
        if (g >= 0) {
            H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, count_collection, args);
            H5Gclose(g);
        }
    }
}

/* The error for a file whose writer died before SWMR writing started and whose objects
 * HDF5 cannot read whole (the cause, HDF5's, ends the message). */
static int died_before_swmr(const char *path)
{
    return h5s_error_prefix(H5S_EFORMAT,
                            "%s: its writer died before SWMR writing started (the superblock "
                            "says open for writing, not for SWMR writing): it had committed "
                            "nothing, and the objects it was declaring are not all on disk; a "
                            "file it was creating holds nothing, remove it and run the writer "
                            "again",
                            path);
}

static int recover(const char *path, h5s_recover_report *rep)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? h5s_error_set(H5S_ENOTFOUND, "%s: no such file", path)
                               : h5s_error_set(H5S_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return h5s_error_set(H5S_EFORMAT, "%s: not a regular file", path);
    rc_super sb;
    int rc = read_superblock(path, (uint64_t)st.st_size, &sb);
    if (rc)
        return rc;
#ifdef __linux__
    char comm[64] = "";
    long pid = find_live_writer(&st, comm, sizeof comm);
    if (pid)
        return h5s_error_set(H5S_ESTATE,
                             "%s: process %ld (%s) has it open for writing; recover only "
                             "a file whose writer has exited",
                             path, pid, comm);
#endif
    rc = h5s_filters_init();
    if (rc)
        return rc;

    /* Open for writing but not for SWMR writing: a writer that died while it declared
     * its schema, before H5Fstart_swmr_write and so before its first commit. Its objects
     * may be on disk only in part; if HDF5 cannot read them, say so (--append's file was
     * whole before the writer opened it, so it reads, and recovers as any other). */
    int before_swmr =
        (sb.flags & RC_SB_WRITE_ACCESS) != 0 && (sb.flags & RC_SB_SWMR_WRITE_ACCESS) == 0;
    /* Shorter than the end of allocation its superblock records: a writer whose metadata
     * found no room at close (a full disk without sparse files), or a crash right after
     * the allocator reserved ahead. The repair open below extends it with zeros to that
     * end, where no committed item lies (a commit whose bytes failed is taken back). A
     * file closed cleanly and cut short later is another matter: checked after the scan. */
    int was_short = sb.eoa > (uint64_t)st.st_size;
    if (sb.flags & (RC_SB_WRITE_ACCESS | RC_SB_SWMR_WRITE_ACCESS) || was_short) {
        rep->was_open = (sb.flags & (RC_SB_WRITE_ACCESS | RC_SB_SWMR_WRITE_ACCESS)) != 0;
        rc = clear_flags_keep_data(path);
        if (rc) {
            if (was_short)
                undo_extension(path, (uint64_t)st.st_size);
            return before_swmr ? died_before_swmr(path) : rc;
        }
    }

    rc_scan sc = {path, H5I_INVALID_HID, NULL, 0};
    sc.fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (sc.fid < 0) {
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot open", path);
        if (was_short)
            undo_extension(path, (uint64_t)st.st_size);
        return before_swmr ? died_before_swmr(path) : rc;
    }
    h5s_status_row status;
    memset(&status, 0, sizeof status);
    int needs_trim = 0, has_status = 0, is_ours = 0, cut_after_close = 0;
    rc = scan_file(&sc);
    if (rc == 0)
        rc = validate(&sc, &needs_trim);
    if (rc == 0) {
        has_status = status_io(path, sc.fid, &status, 0);
        if (has_status < 0)
            rc = has_status;
    }
    if (rc == 0) {
        is_ours = has_status > 0 || sc.nsets > 0 || H5Aexists(sc.fid, H5S_ATTR_FORMAT) > 0;
        count_models(sc.fid, rep);
        if (!is_ours)
            rc = h5s_error_set(H5S_EFORMAT,
                               "%s: not an h5stream file (no %s, no root attribute %s, and "
                               "no dataset with a %s beside it)",
                               path, H5S_STATUS_DATASET, H5S_ATTR_FORMAT, H5S_SIDECAR_FRAME_ID);
    }
    if (rc != 0 && rc != H5S_ENOMEM && before_swmr)
        rc = died_before_swmr(path);
    if (rc == 0 && was_short && !rep->was_open &&
        (has_status <= 0 || status.state == H5S_STATE_CLOSED)) {
        /* Closed cleanly (or no writer status to say otherwise), yet short: the file was
         * cut after it was written (an interrupted copy). Zeros would stand in for real
         * bytes: refuse, and give the file back as it was once it is closed. */
        cut_after_close = 1;
        rc = h5s_error_set(H5S_EFORMAT,
                           "%s: the file is shorter (%" PRIu64 " bytes) than its HDF5 "
                           "superblock says (%" PRIu64 " bytes), but its writer closed it "
                           "cleanly: it was cut short afterwards (an interrupted copy?); "
                           "recover does not pad it, copy it again from its source",
                           path, (uint64_t)st.st_size, sb.eoa);
    }
    int must_write = needs_trim || (has_status > 0 && status.state != H5S_STATE_CLOSED);
    if (rc == 0 && must_write) {
        /* The scan's handles were read-only; change the file through a fresh RDWR open. */
        H5Fclose(sc.fid);
        sc.fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        if (sc.fid < 0)
            rc = h5s_error_set_h5(H5S_EIO, "%s: cannot open for writing", path);
        else
            rc = repair(path, &sc, &status, has_status > 0, rep->items);
    }
    for (size_t i = 0; i < sc.nsets; i++) {
        const rc_set *s = &sc.sets[i];
        uint64_t extra = s->extent - s->committed;
        for (size_t j = 0; j < s->nside; j++)
            if (s->side[j].extent - s->committed > extra)
                extra = s->side[j].extent - s->committed;
        rep->datasets++;
        rep->committed += s->committed;
        if (rc == 0)
            rep->dropped += extra;
    }
    if (rc == 0)
        rc = check_all(path, &sc, rep);
    scan_free(&sc);
    if (sc.fid >= 0 && H5Fclose(sc.fid) < 0 && (rc == 0 || rc == H5S_ECODEC))
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot close after repair", path);
    if (rc != 0 && was_short) {
        /* Not repaired: the zeros added at the end go again, and the message says what
         * the file's size suggests (unless the cut-after-close check said it already). */
        undo_extension(path, (uint64_t)st.st_size);
        if (!cut_after_close && rc != H5S_ENOMEM) {
            char why[1024];
            snprintf(why, sizeof why, "%s", h5s_error_message());
            rc = h5s_error_set(rc,
                               "%s: the file is shorter (%" PRIu64 " bytes) than its HDF5 "
                               "superblock says (%" PRIu64 " bytes), and what is there "
                               "cannot be repaired: %s",
                               path, (uint64_t)st.st_size, sb.eoa, why);
        }
    } else if (must_write || rep->was_open || was_short) {
        fsync_path(path);
    }
    return rc;
}

int h5s_recover(const char *path, h5s_recover_report *out)
{
    h5s_recover_report rep;
    memset(&rep, 0, sizeof rep);
    h5s_error_clear();
    if (!path || !path[0]) {
        if (out)
            *out = rep;
        return h5s_error_set(H5S_EINVAL, "h5s_recover: no file path");
    }
    /* Failures are reported through h5s_error_message; keep HDF5 from printing its
     * stack, and give the caller back its own setting afterwards. */
    H5E_auto2_t old_func = NULL;
    void *old_data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rc = recover(path, &rep);
    /* A killed writer leaves the space it reserved ahead (h5s_prealloc.h): give it back.
     * Only the blocks past the file's size go; its bytes stay as they are. */
    if (rc == 0)
        h5s_prealloc_trim_path(path);
    H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
    if (out)
        *out = rep;
    return rc;
}
