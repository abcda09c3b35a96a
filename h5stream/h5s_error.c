/* h5s_error.c - error table, per-thread messages and HDF5 error-stack capture. */
#include "h5s_error.h"

#include <hdf5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H5S_MSG_MAX 1024

static _Thread_local char tls_message[H5S_MSG_MAX];

const char *h5s_strerror(int code)
{
    switch (code) {
#define H5S_X_CASE(name, value, text)                                                              \
    case value:                                                                                    \
        return text;
        H5S_ERROR_TABLE(H5S_X_CASE)
#undef H5S_X_CASE
    default:
        return "unknown error";
    }
}

const char *h5s_error_message(void)
{
    return tls_message;
}

void h5s_error_clear(void)
{
    tls_message[0] = '\0';
}

static void vset(const char *fmt, va_list ap)
{
    vsnprintf(tls_message, sizeof tls_message, fmt, ap);
}

int h5s_error_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(fmt, ap);
    va_end(ap);
    return code;
}

int h5s_error_prefix(int code, const char *fmt, ...)
{
    char cause[H5S_MSG_MAX];
    snprintf(cause, sizeof cause, "%s", tls_message);
    va_list ap;
    va_start(ap, fmt);
    vset(fmt, ap);
    va_end(ap);
    size_t len = strlen(tls_message), room = sizeof tls_message - len;
    if (cause[0] && room > 3) {
        /* ": cause", cut to fit: the prefix matters most, then the start of the cause. */
        size_t n = strnlen(cause, room - 3);
        memcpy(tls_message + len, ": ", 2);
        memcpy(tls_message + len + 2, cause, n);
        tls_message[len + 2 + n] = '\0';
    }
    return code;
}

int h5s_error_restore(int code, const char *msg)
{
    snprintf(tls_message, sizeof tls_message, "%s", msg ? msg : "");
    return code;
}

#define H5S_INNER_MAX 256

/*
 * A description for a message. HDF5's POSIX drivers describe a failed read or write as
 * "file write failed: time = <ctime, with its newline>, filename = ..., errno = 28,
 * error message = 'No space left on device', buf = ..., ..." (H5FDsec2.c); the name, the
 * time and the buffer address are noise here, and cut at the buffer's size the reason
 * could be lost, so that form becomes "file write failed: No space left on device (errno
 * 28)". Other descriptions are kept, with line breaks made spaces.
 */
static void tidy_description(char *out, size_t size, const char *desc)
{
    const char *time_at = strstr(desc, ": time = ");
    const char *errno_at = strstr(desc, "errno = ");
    const char *text_at = strstr(desc, "error message = '");
    const char *text_end = text_at ? strchr(text_at + 17, '\'') : NULL;
    if (time_at && errno_at && text_at && text_end) {
        snprintf(out, size, "%.*s: %.*s (errno %d)", (int)(time_at - desc), desc,
                 (int)(text_end - (text_at + 17)), text_at + 17, atoi(errno_at + 8));
    } else {
        snprintf(out, size, "%s", desc);
    }
    for (char *c = out; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
}

/* Walk callback: keeps the description of the deepest entry that has one. */
static herr_t keep_innermost(unsigned n, const H5E_error2_t *err, void *payload)
{
    (void)n;
    char *out = payload;
    if (err->desc && err->desc[0]) {
        char desc[H5S_INNER_MAX - 64]; /* room for the function name */
        tidy_description(desc, sizeof desc, err->desc);
        snprintf(out, H5S_INNER_MAX, "%s (%s)", desc, err->func_name ? err->func_name : "?");
    }
    return 0;
}

int h5s_error_set_h5(int code, const char *fmt, ...)
{
    char inner[H5S_INNER_MAX] = "";
    va_list ap;
    va_start(ap, fmt);
    vset(fmt, ap);
    va_end(ap);
    hid_t stack = H5Eget_current_stack();
    if (stack >= 0) {
        /* Downward ends at the innermost call, whose description the callback keeps. */
        H5Ewalk2(stack, H5E_WALK_DOWNWARD, keep_innermost, inner);
        H5Eclose_stack(stack);
    }
    if (inner[0]) {
        size_t len = strlen(tls_message);
        snprintf(tls_message + len, sizeof tls_message - len, ": %s", inner);
    }
    return code;
}

void h5s_hdf5_quiet(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}
