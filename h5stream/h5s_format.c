/* h5s_format.c - layout helpers shared by the writer and the readers. */
#include "h5s_format.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "h5s_error.h"

hid_t h5s_format_status_type(void)
{
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(h5s_status_row));
    if (t < 0)
        return t;
    H5Tinsert(t, "state", HOFFSET(h5s_status_row, state), H5T_NATIVE_INT32);
    H5Tinsert(t, "heartbeat", HOFFSET(h5s_status_row, heartbeat), H5T_NATIVE_DOUBLE);
    H5Tinsert(t, "committed", HOFFSET(h5s_status_row, committed), H5T_NATIVE_UINT64);
    return t;
}

/* Rank of the dataset at name (relative to loc), or -1 if it is not a dataset. */
static int dataset_rank(hid_t loc, const char *name)
{
    H5O_info_t oi;
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0 ||
        H5Oget_info_by_name(loc, name, &oi, H5P_DEFAULT) < 0 || oi.type != H5O_TYPE_DATASET)
        return -1;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    hid_t s = d >= 0 ? H5Dget_space(d) : H5I_INVALID_HID;
    int rank = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    if (s >= 0)
        H5Sclose(s);
    if (d >= 0)
        H5Dclose(d);
    return rank;
}

int h5s_format_path_exists(hid_t loc, const char *path)
{
    char buf[H5S_FORMAT_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return 0;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        htri_t e = H5Lexists(loc, buf, H5P_DEFAULT);
        *p = '/';
        if (e <= 0)
            return 0;
    }
    return H5Lexists(loc, buf, H5P_DEFAULT) > 0;
}

/* Fills f->per_frame from the data's h5stream_per_frame attribute (names in its group). */
static int read_per_frame(hid_t fid, h5s_format_frames *f, const char *file)
{
    char list[H5S_FORMAT_PER_FRAME_MAX * 64];
    f->nper_frame = 0;
    char group[H5S_FORMAT_PATH_MAX];
    snprintf(group, sizeof group, "%.*s", (int)(strrchr(f->data, '/') - f->data), f->data);
    if (H5Aexists_by_name(fid, f->data, H5S_ATTR_PER_FRAME, H5P_DEFAULT) <= 0) {
        char ts[H5S_FORMAT_PATH_MAX];
        if (h5s_format_sidecar(ts, sizeof ts, f->data, H5S_SIDECAR_TIMESTAMP) == 0 &&
            h5s_format_path_exists(fid, ts) && dataset_rank(fid, ts) == 1)
            snprintf(f->per_frame[f->nper_frame++], H5S_FORMAT_PATH_MAX, "%s", ts);
        return 0;
    }
    hid_t a = H5Aopen_by_name(fid, f->data, H5S_ATTR_PER_FRAME, H5P_DEFAULT, H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
    int ok = t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t) &&
             H5Tget_size(t) < sizeof list;
    memset(list, 0, sizeof list);
    ok = ok && H5Aread(a, t, list) >= 0;
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    if (!ok)
        return h5s_error_set(H5S_EFORMAT, "%s: %s: unreadable %s attribute", file, f->data,
                             H5S_ATTR_PER_FRAME);
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
         name = strtok_r(NULL, ",", &save)) {
        if (f->nper_frame == H5S_FORMAT_PER_FRAME_MAX)
            return h5s_error_set(H5S_EFORMAT, "%s: %s: more than %d per-frame datasets", file,
                                 f->data, H5S_FORMAT_PER_FRAME_MAX);
        char *out = f->per_frame[f->nper_frame++];
        if (snprintf(out, H5S_FORMAT_PATH_MAX, "%s/%s", group, name) >= H5S_FORMAT_PATH_MAX)
            return h5s_error_set(H5S_EFORMAT, "%s: %s: per-frame name too long", file, f->data);
    }
    return 0;
}

typedef struct {
    hid_t fid;
    const char *file;
    int (*fn)(const h5s_format_frames *, void *);
    void *payload;
    h5s_format_frames *found; /* scratch, reused for every dataset */
    haddr_t *seen;            /* object addresses already reported */
    size_t nseen;
    int rc;
} find_walk;

static herr_t find_link(hid_t root, const char *name, const H5L_info_t *info, void *payload)
{
    find_walk *w = payload;
    h5s_format_frames *f = w->found;
    if (info->type != H5L_TYPE_HARD ||
        snprintf(f->data, sizeof f->data, "/%s", name) >= (int)sizeof f->data ||
        dataset_rank(root, name) < 2 ||
        h5s_format_sidecar(f->marker, sizeof f->marker, f->data, H5S_SIDECAR_FRAME_ID) != 0 ||
        !h5s_format_path_exists(w->fid, f->marker) || dataset_rank(w->fid, f->marker) != 1)
        return 0;
    for (size_t i = 0; i < w->nseen; i++)
        if (w->seen[i] == info->u.address)
            return 0;
    haddr_t *grown = realloc(w->seen, (w->nseen + 1) * sizeof *grown);
    if (!grown) {
        w->rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", w->file);
        return -1;
    }
    w->seen = grown;
    w->seen[w->nseen++] = info->u.address;
    if ((w->rc = read_per_frame(w->fid, f, w->file)) != 0 || (w->rc = w->fn(f, w->payload)) != 0)
        return -1;
    return 0;
}

int h5s_format_find_frames(hid_t fid, const char *file,
                           int (*fn)(const h5s_format_frames *frames, void *payload), void *payload)
{
    find_walk w = {fid, file, fn, payload, malloc(sizeof(h5s_format_frames)), NULL, 0, 0};
    if (!w.found)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", file);
    if (H5Lvisit(fid, H5_INDEX_NAME, H5_ITER_INC, find_link, &w) < 0 && !w.rc)
        w.rc = h5s_error_set_h5(H5S_EIO, "%s: cannot list its objects", file);
    free(w.found);
    free(w.seen);
    return w.rc;
}

hid_t h5s_format_swmr_read_fapl(void)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0 && H5Pset_metadata_read_attempts(fapl, H5S_SWMR_READ_ATTEMPTS) < 0) {
        H5Pclose(fapl);
        return H5I_INVALID_HID;
    }
    return fapl;
}

int h5s_format_sidecar(char *out, size_t outsize, const char *data_path, const char *what)
{
    const char *slash = strrchr(data_path, '/');
    const char *base = slash ? slash + 1 : data_path;
    int group_len = slash ? (int)(slash - data_path) : 0;
    int n;
    if (strcmp(base, "data") == 0)
        n = snprintf(out, outsize, "%.*s/%s", group_len, data_path, what);
    else
        n = snprintf(out, outsize, "%.*s/%s_%s", group_len, data_path, base, what);
    if (n < 0 || (size_t)n >= outsize)
        return h5s_error_set(H5S_EINVAL, "dataset path too long: %s", data_path);
    return 0;
}

static hid_t half_type = H5I_INVALID_HID;

static void make_half_type(void)
{
    /* binary16 as numpy and h5py spell it: sign bit 15, exponent 10..14 (bias 15),
     * mantissa 0..9, little-endian. */
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0)
        return;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 ||
        H5Tset_ebias(t, 15) < 0 || H5Tlock(t) < 0) {
        H5Tclose(t);
        return;
    }
    half_type = t;
}

hid_t h5s_format_half_type(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, make_half_type);
    return half_type;
}

hid_t h5s_format_h5type(h5s_dtype dtype)
{
    switch (dtype) {
    case H5S_INT8:
        return H5T_STD_I8LE;
    case H5S_UINT8:
        return H5T_STD_U8LE;
    case H5S_INT16:
        return H5T_STD_I16LE;
    case H5S_UINT16:
        return H5T_STD_U16LE;
    case H5S_INT32:
        return H5T_STD_I32LE;
    case H5S_UINT32:
        return H5T_STD_U32LE;
    case H5S_INT64:
        return H5T_STD_I64LE;
    case H5S_UINT64:
        return H5T_STD_U64LE;
    case H5S_FLOAT32:
        return H5T_IEEE_F32LE;
    case H5S_FLOAT64:
        return H5T_IEEE_F64LE;
    case H5S_FLOAT16:
        return h5s_format_half_type();
    default:
        return H5I_INVALID_HID;
    }
}

h5s_dtype h5s_format_dtype_of(hid_t type)
{
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    if (cls == H5T_FLOAT)
        return size == 4   ? H5S_FLOAT32
               : size == 8 ? H5S_FLOAT64
               : size == 2 ? H5S_FLOAT16
                           : H5S_DTYPE_INVALID;
    if (cls != H5T_INTEGER)
        return H5S_DTYPE_INVALID;
    int is_signed = H5Tget_sign(type) == H5T_SGN_2;
    switch (size) {
    case 1:
        return is_signed ? H5S_INT8 : H5S_UINT8;
    case 2:
        return is_signed ? H5S_INT16 : H5S_UINT16;
    case 4:
        return is_signed ? H5S_INT32 : H5S_UINT32;
    case 8:
        return is_signed ? H5S_INT64 : H5S_UINT64;
    default:
        return H5S_DTYPE_INVALID;
    }
}

static uint64_t load_le(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;)
        v = (v << 8) | p[i];
    return v;
}

int h5s_format_superblock(int fd, uint64_t size, h5s_superblock *out)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    memset(out, 0, sizeof *out);
    for (uint64_t off = 0; off + sizeof sig <= size; off = off ? off * 2 : 512) {
        unsigned char b[64];
        ssize_t n;
        do
            n = pread(fd, b, sizeof b, (off_t)off);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            return -1;
        if (n < (ssize_t)sizeof sig || memcmp(b, sig, sizeof sig) != 0)
            continue;
        out->offset = off;
        out->version = n > 8 ? b[8] : 0;
        size_t base_at = 0;
        if (out->version == 2 || out->version == 3) {
            out->offset_size = n > 9 ? b[9] : 0;
            out->flags = n > 11 ? b[11] : 0;
            base_at = 12;
        } else if (out->version <= 1) {
            out->offset_size = n > 13 ? b[13] : 0;
            base_at = out->version == 0 ? 24 : 28;
        }
        unsigned osz = out->offset_size;
        if (base_at && (osz == 2 || osz == 4 || osz == 8) &&
            base_at + 3 * (size_t)osz <= (size_t)n) {
            uint64_t base = load_le(b + base_at, osz), eof = load_le(b + base_at + 2 * osz, osz);
            out->eof = base + eof >= base ? base + eof : 0;
        }
        return 1;
    }
    return 0;
}
