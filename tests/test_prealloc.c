/*
 * test_prealloc.c - file space reserved ahead of the writers (h5stream/h5s_prealloc.c):
 * on ext4 and xfs the space is reserved past the file's size (which does not change) and
 * given back by the trim, also by path after a crash; elsewhere, and with
 * H5STREAM_PREALLOC=0, nothing is reserved. The engine's writer reserves while a file is
 * written and gives it back at close.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "h5s_column.h"
#include "h5s_prealloc.h"
#include "test_bytes_file.h"

static char tmpdir[1024];

#define MIB ((uint64_t)1 << 20)

/* 1 when the folder's file system is one h5s_prealloc reserves on (ext4, xfs). */
static int reserving_fs(int fd)
{
    struct statfs sf;
    assert_int_equal(fstatfs(fd, &sf), 0);
    return sf.f_type == 0xEF53 || sf.f_type == 0x58465342;
}

static uint64_t allocated(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

static uint64_t size_of(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return (uint64_t)st.st_size;
}

static int new_file(const char *name, char *path, size_t n)
{
    snprintf(path, n, "%s/%s", tmpdir, name);
    unlink(path);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    return fd;
}

static void write_mib(int fd, uint64_t at)
{
    static unsigned char block[1 << 20];
    memset(block, 0x5A, sizeof block);
    assert_int_equal(pwrite(fd, block, sizeof block, (off_t)at), (ssize_t)sizeof block);
}

static void test_prealloc__reserves_ahead_and_trims(void **state)
{
    (void)state;
    unsetenv("H5STREAM_PREALLOC");
    char path[1200];
    int fd = new_file("reserve.bin", path, sizeof path);
    int yes = reserving_fs(fd);
    h5s_prealloc p;
    h5s_prealloc_init(&p, fd, 8 * MIB);
    assert_int_equal(p.fd >= 0, yes);
    write_mib(fd, 0);
    h5s_prealloc_ensure(&p, 2 * MIB);
    assert_int_equal(size_of(fd), MIB); /* the size is what was written */
    if (yes)
        assert_true(allocated(fd) >= 10 * MIB); /* [0, 2 MiB + step) */
    else
        assert_true(allocated(fd) <= 2 * MIB);
    /* Within the reservation: no new call needed, the writes go on. */
    write_mib(fd, MIB);
    h5s_prealloc_ensure(&p, 3 * MIB);
    h5s_prealloc_trim(&p);
    assert_int_equal(p.fd, -1);
    assert_int_equal(size_of(fd), 2 * MIB);
    assert_true(allocated(fd) <= 2 * MIB + 64 * 1024); /* given back */
    /* The caller's descriptor is still its own. */
    write_mib(fd, 2 * MIB);
    assert_int_equal(close(fd), 0);
    unlink(path);
}

static void test_prealloc__off_by_environment(void **state)
{
    (void)state;
    char path[1200];
    int fd = new_file("off.bin", path, sizeof path);
    setenv("H5STREAM_PREALLOC", "0", 1);
    h5s_prealloc p;
    h5s_prealloc_init(&p, fd, 8 * MIB);
    unsetenv("H5STREAM_PREALLOC");
    assert_int_equal(p.fd, -1);
    h5s_prealloc_ensure(&p, 4 * MIB); /* nothing happens */
    h5s_prealloc_trim(&p);
    assert_true(allocated(fd) == 0);
    /* A descriptor that is not a file, or none, is off as well. */
    h5s_prealloc_init(&p, -1, 0);
    assert_int_equal(p.fd, -1);
    assert_int_equal(close(fd), 0);
    unlink(path);
}

/* A killed writer leaves its reservation: trimming by path gives it back. */
static void test_prealloc__trim_by_path(void **state)
{
    (void)state;
    char path[1200];
    int fd = new_file("killed.bin", path, sizeof path);
    write_mib(fd, 0);
    int reserved = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)(16 * MIB)) == 0;
    if (reserved)
        assert_true(allocated(fd) >= 16 * MIB);
    assert_int_equal(h5s_prealloc_trim_path(path), 0);
    assert_int_equal(size_of(fd), MIB);
    assert_true(allocated(fd) <= MIB + 64 * 1024);
    assert_int_equal(close(fd), 0);
    unlink(path);
    assert_int_equal(h5s_prealloc_trim_path(path), -1); /* no such file */
}

/* The engine's writer reserves ahead while it writes and gives the rest back at close. */
static void test_prealloc__engine_reserves_while_writing(void **state)
{
    (void)state;
    unsetenv("H5STREAM_PREALLOC");
    char path[1200];
    snprintf(path, sizeof path, "%s/engine.h5", tmpdir);
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.flush_ms = 0;
    bytes_file bf;
    bytes_file_open(&bf, path, &fo, "/g", MIB, NULL);
    h5s_file *f = bf.f;
    h5s_group *g = bf.g;
    h5s_column *marker = bf.marker, *bytes = bf.bytes;
    unsigned char *data = malloc(4 * MIB);
    assert_non_null(data);
    memset(data, 0x33, 4 * MIB);
    h5s_group_lock(g);
    assert_int_equal(h5s_column_append(bytes, data, 4 * MIB), 0);
    uint64_t one = 1;
    assert_int_equal(h5s_column_append(marker, &one, 1), 0);
    assert_int_equal(h5s_group_item_done(g, 1), 0);
    h5s_group_unlock(g);
    assert_int_equal(h5s_file_flush(f), 0); /* the chunks are written when it returns */
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    int yes = reserving_fs(fd);
    uint64_t size = size_of(fd), held = allocated(fd);
    assert_true(size >= 4 * MIB);
    if (yes)
        assert_true(held >= size + H5S_PREALLOC_STEP / 2);
    else
        assert_true(held <= size + MIB);
    assert_int_equal(h5s_file_close(f), 0);
    assert_true(allocated(fd) <= size_of(fd) + 64 * 1024);
    close(fd);
    free(data);
    unlink(path);
}

int main(void)
{
    const char *t = getenv("H5S_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s", t ? t : "/tmp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prealloc__reserves_ahead_and_trims),
        cmocka_unit_test(test_prealloc__off_by_environment),
        cmocka_unit_test(test_prealloc__trim_by_path),
        cmocka_unit_test(test_prealloc__engine_reserves_while_writing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
