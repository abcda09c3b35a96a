/*
 * fuzz_common.h - shared by the fuzz targets: FUZZ_TRAP, which stops the target where a
 * check failed (file and line on stderr, so that a replay says which check); the input
 * written to a fresh file for the parsers that take a path (mkstemps in $TMPDIR, else
 * /tmp; the target unlinks it when done); and the check of a rejected input's message.
 * Header-only, so each fuzz_*.c stays one program.
 */
#ifndef H5S_FUZZ_COMMON_H
#define H5S_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5s_types.h"

/* A check of the target failed: the parser crashed, misread or lied. abort() is a crash
 * to libFuzzer and to the replayer alike. */
#define FUZZ_TRAP() fuzz_trap(__FILE__, __LINE__)

__attribute__((noreturn)) static inline void fuzz_trap(const char *file, int line)
{
    fprintf(stderr, "fuzz: check failed at %s:%d (last h5s error: \"%s\")\n", file, line,
            h5s_error_message());
    abort();
}

/*
 * Creates a file holding data[0 .. size-1] whose name ends in suffix ("" for none) and
 * writes its name into path (cap bytes). Returns 0, or -1 when the file cannot be made
 * (the target then skips the input: that is the machine's failure, not the parser's).
 */
static inline int fuzz_tmpfile(char *path, size_t cap, const char *suffix, const uint8_t *data,
                               size_t size)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !dir[0])
        dir = "/tmp";
    int n = snprintf(path, cap, "%s/h5s-fuzz-XXXXXX%s", dir, suffix);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    int fd = mkstemps(path, (int)strlen(suffix));
    if (fd < 0)
        return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t k = write(fd, data + done, size - done);
        if (k <= 0) {
            close(fd);
            unlink(path);
            return -1;
        }
        done += (size_t)k;
    }
    if (close(fd) != 0) {
        unlink(path);
        return -1;
    }
    return 0;
}

/*
 * A rejected input must say where and why: the message names the file (path) and a place
 * in it (one of the words in places, NULL-terminated: "byte ", "entry ", ...). A message
 * without them is a bug of the reader, so the target stops.
 */
static inline void fuzz_check_message(const char *msg, const char *path, const char *const *places)
{
    if (msg && strstr(msg, path))
        for (size_t i = 0; places[i]; i++)
            if (strstr(msg, places[i]))
                return;
    fprintf(stderr, "fuzz: the message does not say where: \"%s\"\n", msg ? msg : "(null)");
    FUZZ_TRAP();
}

#endif
