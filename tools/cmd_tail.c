/*
 * cmd_tail.c - `h5stream tail`: prints each committed frame of a frames dataset, and with
 * -f follows a live SWMR writer until it closes the file (docs/cli.md, "tail").
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "h5s_reader.h"

/* Frames per read call: large enough to keep up with a fast writer, bounded in bytes so
 * big frames do not make the batch buffer huge. */
#define TAIL_BATCH_FRAMES 64
#define TAIL_BATCH_BYTES ((size_t)64 << 20)

#define TAIL_DEFAULT_INTERVAL_MS 100
#define TAIL_DEFAULT_TIMEOUT_MS 60000

static const char tail_usage[] =
    "usage: h5stream tail FILE.h5 [PATH] [-f] [--interval MS] [--timeout MS] [--json]\n"
    "\n"
    "Prints one line per committed frame of the frames dataset PATH\n"
    "(default /entry/instrument/detector/data):\n"
    "  INDEX frame_id=ID min=MIN max=MAX mean=MEAN crc32=CRC\n"
    "\n"
    "options:\n"
    "  -f, --follow     wait for the file and its writer, then print new frames until\n"
    "                   the writer closes the file\n"
    "  --interval MS    poll interval in milliseconds (default 100)\n"
    "  --timeout MS     how long to wait for the file to become readable (default 60000\n"
    "                   with -f, 0 without); with -f on a file that has no writer status,\n"
    "                   also how long to wait for a new frame before stopping\n"
    "  --json           one JSON object per line: index, frame_id, timestamp, min, max,\n"
    "                   mean, crc32\n"
    "  -h, --help       this help\n";

typedef struct {
    const char *file;
    const char *path; /* NULL = the reader's default */
    int follow;
    int json;
    unsigned interval_ms;
    int timeout_ms;
    int timeout_given;
} tail_args;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_errorf("tail: %s", msg);
    fprintf(stderr, "usage: h5stream tail FILE.h5 [PATH] [-f] [--interval MS] [--timeout MS] "
                    "[--json]\n");
    return CLI_EUSAGE;
}

/* Parses a millisecond count in [lo, INT_MAX]. */
static int parse_ms(const char *opt, const char *s, uint64_t lo, int *out)
{
    uint64_t v;
    if (cli_parse_u64(s, &v) != 0 || v < lo || v > INT_MAX)
        return usage_error("%s: expected a whole number of milliseconds >= %llu, got '%s'", opt,
                           (unsigned long long)lo, s);
    *out = (int)v;
    return 0;
}

/* Returns 0, CLI_EUSAGE, or -1 after printing the help (exit 0). */
static int parse_args(tail_args *a, int argc, char **argv)
{
    int options_done = 0;
    int interval = TAIL_DEFAULT_INTERVAL_MS;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!options_done && arg[0] == '-' && arg[1] != '\0') {
            const char *value = NULL;
            const char *eq = strchr(arg, '=');
            size_t name_len = eq && strncmp(arg, "--", 2) == 0 ? (size_t)(eq - arg) : strlen(arg);
            int takes_value = (name_len == 10 && strncmp(arg, "--interval", 10) == 0) ||
                              (name_len == 9 && strncmp(arg, "--timeout", 9) == 0);
            if (takes_value) {
                if (arg[name_len] == '=')
                    value = arg + name_len + 1;
                else if (i + 1 < argc)
                    value = argv[++i];
                else
                    return usage_error("option '%s' needs a value", arg);
            } else if (arg[name_len] == '=') {
                return usage_error("option '%.*s' takes no value", (int)name_len, arg);
            }
            if (strcmp(arg, "--") == 0)
                options_done = 1;
            else if (strcmp(arg, "-f") == 0 || strcmp(arg, "--follow") == 0)
                a->follow = 1;
            else if (strcmp(arg, "--json") == 0)
                a->json = 1;
            else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
                return -1;
            else if (takes_value && name_len == 10) {
                if (parse_ms("--interval", value, 1, &interval) != 0)
                    return CLI_EUSAGE;
            } else if (takes_value) {
                if (parse_ms("--timeout", value, 0, &a->timeout_ms) != 0)
                    return CLI_EUSAGE;
                a->timeout_given = 1;
            } else {
                return usage_error("unknown option '%s'", arg);
            }
        } else if (!a->file) {
            a->file = arg;
        } else if (!a->path) {
            a->path = arg;
        } else {
            return usage_error("unexpected argument '%s' (FILE and PATH are already given)", arg);
        }
    }
    if (!a->file)
        return usage_error("no file given");
    a->interval_ms = (unsigned)interval;
    if (!a->timeout_given)
        a->timeout_ms = a->follow ? TAIL_DEFAULT_TIMEOUT_MS : 0;
    return 0;
}

/* Integral values print as integers (as the frame's own values do), others with enough
 * digits to tell float32 values apart. */
static const char *format_value(char *buf, size_t size, double v)
{
    if (isfinite(v) && v == floor(v) && fabs(v) < 1e20)
        snprintf(buf, size, "%.0f", v);
    else
        snprintf(buf, size, "%.9g", v);
    return buf;
}

static json_t *json_value(double v)
{
    /* JSON has no NaN or infinity; an all-NaN frame or a missing timestamp is null. */
    if (!isfinite(v))
        return json_null();
    if (v == floor(v) && fabs(v) < 9.0e15)
        return json_integer((json_int_t)v);
    return json_real(v);
}

static json_t *json_u64(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v);
}

static int print_json(uint64_t index, uint64_t frame_id, double timestamp,
                      const h5s_frame_summary *s)
{
    json_t *o = json_object();
    if (!o)
        return -1;
    int rc = json_object_set_new(o, "index", json_u64(index));
    rc |= json_object_set_new(o, "frame_id", json_u64(frame_id));
    rc |= json_object_set_new(o, "timestamp",
                              isfinite(timestamp) ? json_real(timestamp) : json_null());
    rc |= json_object_set_new(o, "min", json_value(s->min));
    rc |= json_object_set_new(o, "max", json_value(s->max));
    rc |= json_object_set_new(o, "mean", isfinite(s->mean) ? json_real(s->mean) : json_null());
    rc |= json_object_set_new(o, "crc32", json_integer((json_int_t)s->crc32));
    if (rc == 0)
        rc = json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (rc == 0 && putchar('\n') == EOF)
        rc = -1;
    json_decref(o);
    return rc;
}

static void print_text(uint64_t index, uint64_t frame_id, const h5s_frame_summary *s)
{
    char lo[64], hi[64], mean[64];
    if (isfinite(s->mean) && fabs(s->mean) < 1e15)
        snprintf(mean, sizeof mean, "%.4f", s->mean);
    else
        snprintf(mean, sizeof mean, "%.9g", s->mean);
    printf("%llu frame_id=%llu min=%s max=%s mean=%s crc32=%08x\n", (unsigned long long)index,
           (unsigned long long)frame_id, format_value(lo, sizeof lo, s->min),
           format_value(hi, sizeof hi, s->max), mean, (unsigned)s->crc32);
}

typedef struct {
    const tail_args *args;
    h5s_reader *reader;
    h5s_frame_shape shape;
    uint64_t batch;
    unsigned char *frames;
    uint64_t *ids;
    double *timestamps;
} tail_state;

/* Prints frames [*next, count) in batches, flushing after each. Returns a CLI status. */
static int print_frames(tail_state *t, uint64_t *next, uint64_t count)
{
    while (*next < count) {
        uint64_t n = count - *next < t->batch ? count - *next : t->batch;
        int rc = h5s_reader_read(t->reader, *next, n, t->frames, (size_t)n * t->shape.frame_bytes);
        if (rc == 0)
            rc = h5s_reader_read_meta(t->reader, *next, n, t->ids, t->timestamps);
        if (rc != 0) {
            cli_error_h5s("tail", rc);
            return CLI_EDATA;
        }
        for (uint64_t i = 0; i < n; i++) {
            h5s_frame_summary s;
            rc = h5s_frame_summarize(&s, t->frames + (size_t)i * t->shape.frame_bytes, &t->shape);
            if (rc != 0) {
                cli_error_h5s("tail", rc);
                return CLI_EDATA;
            }
            if (t->args->json) {
                if (print_json(*next + i, t->ids[i], t->timestamps[i], &s) != 0) {
                    cli_errorf("tail: cannot write frame %llu as JSON",
                               (unsigned long long)(*next + i));
                    return CLI_EDATA;
                }
            } else {
                print_text(*next + i, t->ids[i], &s);
            }
        }
        *next += n;
        /* Readers downstream (often a pipe) see each batch as soon as it is read. */
        if (fflush(stdout) != 0 || ferror(stdout)) {
            cli_errorf("tail: cannot write to standard output: %s", strerror(errno));
            return CLI_EDATA;
        }
    }
    return CLI_OK;
}

/*
 * Without -f: print what is committed and stop. With -f: print, then wait for more until
 * the writer marks the file closed (the reader reads that mark before the commit marker,
 * so the count seen with it is final). A file without a writer status (state unknown)
 * has no such mark, so -f stops after --timeout ms without a new frame instead of
 * waiting forever.
 */
static int follow_frames(tail_state *t)
{
    uint64_t next = 0;
    uint64_t count = h5s_reader_count(t->reader);
    for (;;) {
        int status = print_frames(t, &next, count);
        if (status != CLI_OK || !t->args->follow)
            return status;
        h5s_writer_state state = h5s_reader_writer_state(t->reader);
        if (state == H5S_WRITER_CLOSED)
            return CLI_OK;
        if (state == H5S_WRITER_FAILED) {
            cli_errorf("tail: the writer of %s stopped after an error; its %llu committed "
                       "frames are whole",
                       t->args->file, (unsigned long long)next);
            return CLI_EDATA;
        }
        int limit = state == H5S_WRITER_UNKNOWN ? t->args->timeout_ms : -1;
        int rc = h5s_reader_wait(t->reader, next, limit, &count);
        if (rc == H5S_ETIMEDOUT && state == H5S_WRITER_UNKNOWN &&
            h5s_reader_writer_state(t->reader) == H5S_WRITER_UNKNOWN) {
            cli_errorf("tail: %s has no writer status and no new frame came in %d ms; "
                       "stopping after %llu frames",
                       t->args->file, limit, (unsigned long long)next);
            return CLI_OK;
        }
        if (rc != 0 && rc != H5S_ETIMEDOUT) {
            cli_error_h5s("tail", rc);
            return CLI_EDATA;
        }
    }
}

int cli_tail(int argc, char **argv)
{
    tail_args args = {0};
    int rc = parse_args(&args, argc, argv);
    if (rc == -1) {
        fputs(tail_usage, stdout);
        return CLI_OK;
    }
    if (rc != 0)
        return rc;
    /* The other models' tails take the same options; the path picks the model. */
    static const struct {
        const char *prefix;
        int (*tail)(int, char **, const char *);
    } models[] = {
        {"/tracts", cli_tail_tracts}, {"/volumes", cli_tail_volumes}, {"/marc", cli_tail_marc}};
    for (size_t i = 0; args.path && i < sizeof models / sizeof models[0]; i++) {
        size_t n = strlen(models[i].prefix);
        if (strncmp(args.path, models[i].prefix, n) == 0 &&
            (args.path[n] == '\0' || args.path[n] == '/'))
            return models[i].tail(argc, argv, args.path);
    }

    h5s_reader_options opts = H5S_READER_OPTIONS_INIT;
    opts.open_timeout_ms = args.timeout_ms;
    opts.poll_ms = args.interval_ms;
    tail_state t = {&args, NULL, {0}, 0, NULL, NULL, NULL};
    rc = h5s_reader_open(&t.reader, args.file, args.path, &opts);
    if (rc != 0) {
        cli_error_h5s("tail", rc);
        return CLI_EDATA;
    }
    h5s_reader_shape(t.reader, &t.shape);
    t.batch = TAIL_BATCH_BYTES / t.shape.frame_bytes;
    if (t.batch > TAIL_BATCH_FRAMES)
        t.batch = TAIL_BATCH_FRAMES;
    if (t.batch == 0)
        t.batch = 1;
    t.frames = malloc((size_t)t.batch * t.shape.frame_bytes);
    t.ids = malloc((size_t)t.batch * sizeof *t.ids);
    t.timestamps = malloc((size_t)t.batch * sizeof *t.timestamps);
    int status;
    if (!t.frames || !t.ids || !t.timestamps) {
        cli_errorf("tail: out of memory for %llu frames of %zu bytes", (unsigned long long)t.batch,
                   t.shape.frame_bytes);
        status = CLI_EDATA;
    } else {
        status = follow_frames(&t);
    }
    free(t.timestamps);
    free(t.ids);
    free(t.frames);
    h5s_reader_close(t.reader);
    return status;
}
