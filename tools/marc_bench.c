/*
 * marc_bench.c - `h5stream bench marc [--dir DIR] [--mb N] [--reps N] [--quick]`: a
 * benchmark (not a timed test) of the marc model against yaz-marcdump on the same file in
 * the same run (docs/marc-model.md, "Benchmark"):
 *   ingest with strict validation        vs  yaz-marcdump -n INPUT
 *   export to ISO 2709 from the .h5      vs  yaz-marcdump -o marc INPUT > FILE
 *   export to MARCXML from the .h5       vs  yaz-marcdump -o marcxml INPUT > FILE
 * The input repeats the real records of MMA_Pubs_records_2021_07.mrc (about 1.4 KB each)
 * up to the size asked for, in a temporary folder. Runs are interleaved and repeated (in
 * each run, ingest and yaz-marcdump -n alternate INGEST_PAIRS times); the table shows the median
 * and the best of each, ratios of the medians, and whether the targets are met: ingest >= 5x
 * yaz-marcdump -n and >= 1,000,000 records/s; MARCXML export >= 4x yaz-marcdump -o marcxml. Outputs
 * are deleted before each run and the page cache is written back (sync) between runs, outside the
 * timings. Floors, timed on the same input, show what any ingest must spend: reading the mapped
 * input, cutting and validating it (1 and N threads, nothing else), and writing its bytes to a file
 * (pwrite, 1 MiB).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "cli.h"
#include "h5s_marc_reader.h"
#include "marc_ingest.h"

extern char **environ;

#define BENCH_MB_FULL 300
#define BENCH_MB_QUICK 20
#define BENCH_REPS_FULL 3
#define BENCH_REPS_QUICK 1
#define BENCH_MAX_REPS 9
/* Ingest and yaz-marcdump -n take about 0.1 and 0.5 s: each run times them this many
 * times, alternating, so their medians are over more samples than the exports'. */
#define INGEST_PAIRS 3
#define MAX_SAMPLES (BENCH_MAX_REPS * INGEST_PAIRS)
#define BENCH_SOURCE "MMA_Pubs_records_2021_07.mrc"

static const char bench_usage[] =
    "usage: h5stream bench marc [--dir DIR] [--mb N] [--reps N] [--threads N] [--source FILE]\n"
    "                           [--quick] [--keep]\n"
    "\n"
    "Ingest (strict validation) and export (ISO 2709, MARCXML) of repeated real MARC\n"
    "records, each against yaz-marcdump on the same file in the same run.\n"
    "  --dir DIR      where to write (default: a new folder under $TMPDIR or /tmp)\n"
    "  --mb N         input size in MB (default 300; --quick: 20)\n"
    "  --reps N       runs of each measurement, interleaved (default 3; --quick: 1)\n"
    "  --threads N    parser and formatting threads (default: number of cores)\n"
    "  --source FILE  records to repeat (default: shared/data/marc/" BENCH_SOURCE ")\n"
    "  --quick        a small smoke run (the ratios then mean little)\n"
    "  --keep         keep the input and outputs\n";

typedef struct {
    double t[MAX_SAMPLES];
    int n;
    int failed;
} samples;

static double median(const samples *s)
{
    double v[MAX_SAMPLES];
    memcpy(v, s->t, sizeof v);
    qsort(v, (size_t)s->n, sizeof v[0], bench_cmp_double);
    return s->n ? (s->n % 2 ? v[s->n / 2] : (v[s->n / 2 - 1] + v[s->n / 2]) / 2) : 0;
}

static double best(const samples *s)
{
    double b = s->n ? s->t[0] : 0;
    for (int i = 1; i < s->n; i++)
        if (s->t[i] < b)
            b = s->t[i];
    return b;
}

/* Finds the default source: $H5S_SHARED_DATA/marc, then ../shared/data/marc up from cwd. */
static int find_source(char *out, size_t cap)
{
    const char *env = getenv("H5S_SHARED_DATA");
    const char *tries[] = {"../shared/data/marc/", "../../shared/data/marc/",
                           "../../../shared/data/marc/"};
    if (env) {
        snprintf(out, cap, "%s/marc/%s", env, BENCH_SOURCE);
        if (access(out, R_OK) == 0)
            return 0;
    }
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        snprintf(out, cap, "%s%s", tries[i], BENCH_SOURCE);
        if (access(out, R_OK) == 0)
            return 0;
    }
    return -1;
}

/* Writes the source's bytes again and again until at least mb MB. Returns the records. */
static int make_input(const char *src, const char *dst, uint64_t mb, uint64_t *records,
                      uint64_t *bytes)
{
    FILE *in = fopen(src, "rb");
    if (!in) {
        cli_errorf("bench marc: cannot read %s: %s", src, strerror(errno));
        return -1;
    }
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    unsigned char *buf = size > 0 ? malloc((size_t)size) : NULL;
    int rc = buf && fread(buf, 1, (size_t)size, in) == (size_t)size ? 0 : -1;
    fclose(in);
    /* Whole records only (the scanner's rule for a clean file: the leader's length). */
    uint64_t n = 0;
    size_t pos = 0;
    while (rc == 0 && pos + 5 <= (size_t)size) {
        size_t len = 0;
        for (int i = 0; i < 5; i++)
            len = len * 10 + (size_t)(buf[pos + i] - '0');
        if (len < 25 || pos + len > (size_t)size || buf[pos + len - 1] != 0x1D)
            break;
        pos += len;
        n++;
    }
    if (rc != 0 || n == 0) {
        cli_errorf("bench marc: %s holds no well-formed ISO 2709 records", src);
        free(buf);
        return -1;
    }
    FILE *out = fopen(dst, "wb");
    if (!out) {
        cli_errorf("bench marc: cannot create %s: %s", dst, strerror(errno));
        free(buf);
        return -1;
    }
    *records = *bytes = 0;
    while (*bytes < mb * 1000000u && rc == 0) {
        if (fwrite(buf, 1, pos, out) != pos)
            rc = -1;
        *bytes += pos;
        *records += n;
    }
    if (fclose(out) != 0 || rc != 0) {
        cli_errorf("bench marc: writing %s failed", dst);
        rc = -1;
    }
    free(buf);
    return rc;
}

/* Runs argv with stdout to out_path (or /dev/null); returns the wall time or -1. */
static double run_program(char *const argv[], const char *out_path)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path ? out_path : "/dev/null",
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    double t0 = cli_now();
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    double t = cli_now() - t0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? t : -1;
}

static void settle(const char *remove)
{
    if (remove)
        unlink(remove);
    sync();
}

static void add(samples *s, double t)
{
    if (t < 0)
        s->failed = 1;
    else if (s->n < MAX_SAMPLES)
        s->t[s->n++] = t;
}

typedef struct {
    const char *dir;
    char input[4096], h5[4096], out_iso[4096], out_xml[4096], yaz_iso[4096], yaz_xml[4096];
    int threads;
    uint64_t records, bytes;
} bench;

static double our_ingest(bench *b, uint64_t *accepted)
{
    marc_ingest_args a;
    memset(&a, 0, sizeof a);
    const char *srcs[1] = {b->input};
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    h5s_codec codec = H5S_CODEC_INIT;
    a.sources = srcs;
    a.nsources = 1;
    a.output = b->h5;
    a.mode = H5S_MARC_STRICT;
    a.threads = b->threads;
    a.codec = codec;
    a.file = fo;
    a.file.encode_threads = 1;
    marc_ingest_result res;
    double t0 = cli_now();
    int rc = marc_ingest_run(&a, &res);
    double t = cli_now() - t0;
    *accepted = res.accepted;
    if (rc || res.strict_stopped) {
        cli_errorf("bench marc: ingest failed: %s%s", res.error, res.stop_message);
        return -1;
    }
    return t;
}

static double our_export(bench *b, h5s_marc_format format, const char *path)
{
    h5s_marc_export_options o = H5S_MARC_EXPORT_OPTIONS_INIT;
    o.format = format;
    o.threads = b->threads;
    double t0 = cli_now();
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    h5s_marc_export_stats st;
    int rc = h5s_marc_export_file(b->h5, fp, &o, &st);
    if (fclose(fp) != 0)
        rc = -1;
    double t = cli_now() - t0;
    if (rc) {
        cli_error_h5s("bench marc: export", rc);
        return -1;
    }
    return st.records == b->records ? t : -1;
}

/* ---- floors: the parts of an ingest timed alone ----------------------------------- */

typedef struct {
    const unsigned char *base;
    const uint64_t *offs; /* record i is base[offs[i], offs[i + 1]) */
    size_t first, end;    /* records of this thread */
    uint64_t sum, bad;
} floor_job;

/* Maps the whole input (fresh, so page faults count as they do in an ingest). */
static const unsigned char *map_input(const char *path, size_t *size)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    *size = (size_t)st.st_size;
    return m == MAP_FAILED ? NULL : m;
}

static void *touch_main(void *arg)
{
    floor_job *j = arg;
    uint64_t sum = 0;
    for (size_t i = j->first; i + 8 <= j->end; i += 8) {
        uint64_t w;
        memcpy(&w, j->base + i, 8);
        sum += w;
    }
    j->sum = sum;
    return NULL;
}

static void *validate_main(void *arg)
{
    floor_job *j = arg;
    for (size_t i = j->first; i < j->end; i++) {
        h5s_marc_report r;
        const unsigned char *rec = j->base + j->offs[i];
        if (h5s_marc_check(&r, NULL, rec, (size_t)(j->offs[i + 1] - j->offs[i]), H5S_MARC_STRICT) !=
            1)
            j->bad++;
    }
    return NULL;
}

/* Runs fn on threads jobs (record or byte ranges split evenly); returns the wall time. */
static double run_jobs(void *(*fn)(void *), floor_job *jobs, int threads)
{
    pthread_t th[64];
    double t0 = cli_now();
    int started = 0;
    for (; started < threads; started++)
        if (pthread_create(&th[started], NULL, fn, &jobs[started]) != 0)
            break;
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    return started == threads ? cli_now() - t0 : -1;
}

typedef struct {
    samples read, cut, check1, checkn, write;
} floors;

/* One run of each floor. The record offsets come from the cut run. */
static void measure_floors(bench *b, floors *f, int threads)
{
    size_t size = 0;
    const unsigned char *m = map_input(b->input, &size);
    if (!m) {
        f->read.failed = f->cut.failed = f->check1.failed = f->checkn.failed = 1;
        return;
    }
    floor_job jobs[64];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < threads; i++) {
        jobs[i].base = m;
        jobs[i].first = size / (size_t)threads * (size_t)i;
        jobs[i].end = i == threads - 1 ? size : size / (size_t)threads * (size_t)(i + 1);
    }
    add(&f->read, run_jobs(touch_main, jobs, threads));
    munmap((void *)(uintptr_t)m, size);

    uint64_t *offs = malloc((b->records + 1) * sizeof *offs);
    m = map_input(b->input, &size);
    h5s_marc_cursor c;
    h5s_marc_cursor_init(&c, 0);
    size_t n = 0;
    double t0 = cli_now();
    if (m && offs && h5s_marc_cursor_window(&c, m, size, 0, 1) == 0) {
        h5s_marc_span sp;
        while (n < b->records && h5s_marc_cursor_next(&c, &sp) == 1)
            offs[n++] = sp.offset;
        offs[n] = c.offset;
    }
    add(&f->cut, n == b->records ? cli_now() - t0 : -1);
    if (m)
        munmap((void *)(uintptr_t)m, size);
    for (int k = 0; k < 2 && n == b->records; k++) {
        int nt = k == 0 ? 1 : threads;
        m = map_input(b->input, &size);
        if (!m)
            break;
        for (int i = 0; i < nt; i++) {
            jobs[i].base = m;
            jobs[i].offs = offs;
            jobs[i].first = n / (size_t)nt * (size_t)i;
            jobs[i].end = i == nt - 1 ? n : n / (size_t)nt * (size_t)(i + 1);
            jobs[i].bad = 0;
        }
        double t = run_jobs(validate_main, jobs, nt);
        for (int i = 0; i < nt; i++)
            if (jobs[i].bad)
                t = -1;
        add(k == 0 ? &f->check1 : &f->checkn, t);
        munmap((void *)(uintptr_t)m, size);
    }
    free(offs);

    /* The bytes an ingest stores, written as the engine's writer thread writes them. */
    char path[4200];
    snprintf(path, sizeof path, "%s/floor.bin", b->dir);
    unsigned char *block = calloc(1, (size_t)1 << 20);
    settle(path);
    t0 = cli_now();
    int fd = block ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
    int ok = fd >= 0;
    for (uint64_t off = 0; ok && off < b->bytes; off += (uint64_t)1 << 20) {
        size_t k =
            b->bytes - off < ((uint64_t)1 << 20) ? (size_t)(b->bytes - off) : (size_t)1 << 20;
        ok = pwrite(fd, block, k, (off_t)off) == (ssize_t)k;
    }
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    add(&f->write, ok ? cli_now() - t0 : -1);
    free(block);
    settle(path);
}

static void print_row(const char *what, const samples *s, uint64_t records, uint64_t bytes)
{
    if (s->failed || s->n == 0) {
        printf("  %-34s %s\n", what, "failed or not run");
        return;
    }
    double m = median(s), bst = best(s);
    printf("  %-34s %12.0f %9.1f %9.3f %9.3f\n", what, (double)records / m, (double)bytes / 1e6 / m,
           m, bst);
}

static double ratio(const samples *ours, const samples *theirs)
{
    if (ours->failed || theirs->failed || !ours->n || !theirs->n)
        return 0;
    return median(theirs) / median(ours);
}

int cli_bench_marc(int argc, char **argv)
{
    const char *dir_opt = NULL, *source = NULL;
    uint64_t mb = 0, reps = 0, threads = 0;
    int quick = 0, keep = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(s, "--quick") == 0) {
            quick = 1;
        } else if (strcmp(s, "--keep") == 0) {
            keep = 1;
        } else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            fputs(bench_usage, stdout);
            return CLI_OK;
        } else if (v && strcmp(s, "--dir") == 0) {
            dir_opt = argv[++i];
        } else if (v && strcmp(s, "--source") == 0) {
            source = argv[++i];
        } else if (v && (strcmp(s, "--mb") == 0 || strcmp(s, "--reps") == 0 ||
                         strcmp(s, "--threads") == 0)) {
            uint64_t x;
            if (cli_parse_u64(v, &x) != 0 || x == 0 || (s[2] == 'r' && x > BENCH_MAX_REPS) ||
                (s[2] == 't' && x > 64) || (s[2] == 'm' && x > 100000)) {
                cli_errorf("bench marc: %s: bad value '%s'", s, v);
                fputs(bench_usage, stderr);
                return CLI_EUSAGE;
            }
            *(s[2] == 'm' ? &mb : s[2] == 'r' ? &reps : &threads) = x;
            i++;
        } else {
            cli_errorf("bench marc: unknown option '%s'", s);
            fputs(bench_usage, stderr);
            return CLI_EUSAGE;
        }
    }
    if (!mb)
        mb = quick ? BENCH_MB_QUICK : BENCH_MB_FULL;
    if (!reps)
        reps = quick ? BENCH_REPS_QUICK : BENCH_REPS_FULL;
    char src[4096];
    if (source)
        snprintf(src, sizeof src, "%s", source);
    else if (find_source(src, sizeof src) != 0) {
        cli_errorf("bench marc: cannot find %s (set H5S_SHARED_DATA or use --source)",
                   BENCH_SOURCE);
        return CLI_EUSAGE;
    }
    char dir[3000];
    if (dir_opt) {
        snprintf(dir, sizeof dir, "%s/h5s-bench-marc-XXXXXX", dir_opt);
    } else {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/h5s-bench-marc-XXXXXX", t && t[0] ? t : "/tmp");
    }
    if (!mkdtemp(dir)) {
        cli_errorf("bench marc: cannot make a folder in %s: %s", dir_opt ? dir_opt : "/tmp",
                   strerror(errno));
        return CLI_EDATA;
    }
    bench b;
    memset(&b, 0, sizeof b);
    b.dir = dir;
    b.threads = (int)threads;
    snprintf(b.input, sizeof b.input, "%s/input.mrc", dir);
    snprintf(b.h5, sizeof b.h5, "%s/bench.h5", dir);
    snprintf(b.out_iso, sizeof b.out_iso, "%s/export.mrc", dir);
    snprintf(b.out_xml, sizeof b.out_xml, "%s/export.xml", dir);
    snprintf(b.yaz_iso, sizeof b.yaz_iso, "%s/yaz.mrc", dir);
    snprintf(b.yaz_xml, sizeof b.yaz_xml, "%s/yaz.xml", dir);
    if (make_input(src, b.input, mb, &b.records, &b.bytes) != 0)
        return CLI_EDATA;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("h5stream bench marc%s\n", quick ? " --quick (smoke run: the ratios mean little)" : "");
    printf("  input   %s: %llu records, %.1f MB (%.0f bytes a record), repeating %s\n", b.input,
           (unsigned long long)b.records, (double)b.bytes / 1e6,
           (double)b.bytes / (double)b.records, src);
    printf("  machine %ld cores; %llu interleaved runs of each (ingest and yaz-marcdump -n: "
           "%d alternating pairs a run); outputs deleted and the page cache written back "
           "(sync) between runs\n",
           cores, (unsigned long long)reps, INGEST_PAIRS);
    fflush(stdout);

    samples ingest = {{0}, 0, 0}, yaz_n = {{0}, 0, 0}, iso = {{0}, 0, 0}, yaz_iso = {{0}, 0, 0},
            xml = {{0}, 0, 0}, yaz_xml = {{0}, 0, 0};
    char *yaz_n_argv[] = {"yaz-marcdump", "-n", b.input, NULL};
    char *yaz_iso_argv[] = {"yaz-marcdump", "-o", "marc", b.input, NULL};
    char *yaz_xml_argv[] = {"yaz-marcdump", "-o", "marcxml", b.input, NULL};
    int have_yaz = run_program((char *[]){"yaz-marcdump", "-V", NULL}, NULL) >= 0;
    if (!have_yaz)
        printf("  yaz-marcdump not found (Debian package yaz): ratios are not measured\n");
    uint64_t accepted = 0;
    int nthreads = b.threads ? b.threads : (int)(cores > 0 ? (cores < 64 ? cores : 64) : 1);
    floors fl;
    memset(&fl, 0, sizeof fl);
    for (uint64_t r = 0; r < reps; r++) {
        settle(NULL);
        measure_floors(&b, &fl, nthreads);
        for (int k = 0; k < INGEST_PAIRS; k++) {
            settle(b.h5);
            add(&ingest, our_ingest(&b, &accepted));
            if (accepted != b.records)
                ingest.failed = 1;
            if (have_yaz) {
                settle(NULL);
                add(&yaz_n, run_program(yaz_n_argv, NULL));
            }
        }
        settle(b.out_iso);
        add(&iso, our_export(&b, H5S_MARC_ISO2709, b.out_iso));
        if (have_yaz) {
            settle(b.yaz_iso);
            add(&yaz_iso, run_program(yaz_iso_argv, b.yaz_iso));
        }
        settle(b.out_xml);
        add(&xml, our_export(&b, H5S_MARC_MARCXML, b.out_xml));
        if (have_yaz) {
            settle(b.yaz_xml);
            add(&yaz_xml, run_program(yaz_xml_argv, b.yaz_xml));
        }
    }
    /* The ISO 2709 export must be the input, byte for byte. */
    struct stat st_in, st_out;
    int same_size = stat(b.input, &st_in) == 0 && stat(b.out_iso, &st_out) == 0 &&
                    st_in.st_size == st_out.st_size;

    printf("\n  %-34s %12s %9s %9s %9s\n", "", "records/s", "MB/s", "median s", "best s");
    print_row("h5stream ingest --mode strict", &ingest, b.records, b.bytes);
    print_row("yaz-marcdump -n", &yaz_n, b.records, b.bytes);
    print_row("h5stream export --to iso2709", &iso, b.records, b.bytes);
    print_row("yaz-marcdump -o marc", &yaz_iso, b.records, b.bytes);
    print_row("h5stream export --to marcxml", &xml, b.records, b.bytes);
    print_row("yaz-marcdump -o marcxml", &yaz_xml, b.records, b.bytes);
    printf("  (MB/s of the ISO 2709 input in every row; ISO 2709 export %s the input's size)\n",
           same_size ? "has" : "DOES NOT HAVE");
    printf("\n  floors: parts of an ingest timed alone (ratio: yaz-marcdump -n / floor)\n");
    char what[64];
    snprintf(what, sizeof what, "read the mapped input, %d thread%s", nthreads,
             nthreads > 1 ? "s" : "");
    print_row(what, &fl.read, b.records, b.bytes);
    print_row("cut records (cursor), 1 thread", &fl.cut, b.records, b.bytes);
    print_row("validate strict, 1 thread", &fl.check1, b.records, b.bytes);
    snprintf(what, sizeof what, "validate strict, %d thread%s", nthreads, nthreads > 1 ? "s" : "");
    print_row(what, &fl.checkn, b.records, b.bytes);
    print_row("pwrite the bytes (1 MiB blocks)", &fl.write, b.records, b.bytes);
    printf("  %-34s %8.2fx (validate, %d threads) %8.2fx (pwrite alone)\n",
           "yaz-marcdump -n / floor", ratio(&fl.checkn, &yaz_n), nthreads,
           ratio(&fl.write, &yaz_n));

    double r_ing = ratio(&ingest, &yaz_n), r_iso = ratio(&iso, &yaz_iso),
           r_xml = ratio(&xml, &yaz_xml);
    double rps = ingest.n && !ingest.failed ? (double)b.records / median(&ingest) : 0;
    printf("\n  ratios (median against median) and targets\n");
    printf("  %-46s %8.2fx  target >= 5x        %s\n", "ingest vs yaz-marcdump -n", r_ing,
           !have_yaz    ? "not measured"
           : r_ing >= 5 ? "met"
                        : "NOT MET");
    printf("  %-46s %8.0f   target >= 1000000   %s\n", "ingest records/s", rps,
           rps >= 1e6 ? "met" : "NOT MET");
    printf("  %-46s %8.2fx  (no target)\n", "ISO 2709 export vs yaz-marcdump -o marc", r_iso);
    printf("  %-46s %8.2fx  target >= 4x        %s\n", "MARCXML export vs yaz-marcdump -o marcxml",
           r_xml,
           !have_yaz    ? "not measured"
           : r_xml >= 4 ? "met"
                        : "NOT MET");
    fflush(stdout);
    int failed = ingest.failed || iso.failed || xml.failed || !same_size;
    if (!keep) {
        const char *files[] = {b.input, b.h5, b.out_iso, b.out_xml, b.yaz_iso, b.yaz_xml};
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
            unlink(files[i]);
        rmdir(dir);
    } else {
        printf("  kept in %s\n", dir);
    }
    if (failed)
        cli_errorf("bench marc: a run of h5stream failed (see above)");
    return failed ? CLI_EDATA : CLI_OK;
}
