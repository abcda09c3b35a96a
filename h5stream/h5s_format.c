/* h5s_format.c - layout helpers shared by the writer and the readers. */
#include "h5s_format.h"

#include <stdio.h>
#include <string.h>

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
    default:
        return H5I_INVALID_HID;
    }
}

h5s_dtype h5s_format_dtype_of(hid_t type)
{
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    if (cls == H5T_FLOAT)
        return size == 4 ? H5S_FLOAT32 : size == 8 ? H5S_FLOAT64 : H5S_DTYPE_INVALID;
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
