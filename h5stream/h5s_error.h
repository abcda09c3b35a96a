/*
 * h5s_error.h - private: raising errors with a detailed, per-thread message.
 *
 * Used by every part (filters/, h5stream/, readers/, tools/). Not installed.
 */
#ifndef H5S_ERROR_H
#define H5S_ERROR_H

#include "h5s_types.h"

#if defined(__GNUC__)
#define H5S_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define H5S_PRINTF(f, a)
#endif

/* Sets this thread's message from a printf format and returns code (for `return`). */
int h5s_error_set(int code, const char *fmt, ...) H5S_PRINTF(2, 3);

/*
 * As h5s_error_set, then appends ": " and the innermost description on this thread's
 * HDF5 error stack (for example "unable to extend dataset"), and clears that stack.
 */
int h5s_error_set_h5(int code, const char *fmt, ...) H5S_PRINTF(2, 3);

/*
 * Puts a formatted prefix and ": " before this thread's current message (the cause) and
 * returns code. Use it, never h5s_error_set with h5s_error_message() as an argument: that
 * would format the message into itself.
 */
int h5s_error_prefix(int code, const char *fmt, ...) H5S_PRINTF(2, 3);

/* Copies msg (a message saved from another thread) into this thread's message. */
int h5s_error_restore(int code, const char *msg);

/* Clears this thread's message. */
void h5s_error_clear(void);

/* Turns off HDF5's automatic printing of its error stack for the calling thread. */
void h5s_hdf5_quiet(void);

#endif
