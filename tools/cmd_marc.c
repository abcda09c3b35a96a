/*
 * cmd_marc.c - the marc model's commands (docs/cli.md, docs/marc-model.md):
 *   h5stream ingest marc SRC... -o OUT.h5 [--mode strict|lenient|permissive] ...
 *   h5stream export FILE.h5 --to iso2709|marcxml|marc-json|line -o OUT [--to-utf8]
 *   h5stream tail FILE.h5 /marc[/rejected] [-f] [--json]
 * `bench marc` lives in marc_bench.c.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "h5s_codec.h"
#include "h5s_marc_reader.h"
#include "marc_ingest.h"

#define MB 1e6
#define MAX_EXPORTS 8

/* ---- ingest ----------------------------------------------------------------------- */

static const char ingest_usage[] =
    "usage: h5stream ingest marc SRC... -o OUT.h5 [options]\n"
    "\n"
    "SRC: ISO 2709 files (MARC 21 records); - reads standard input\n"
    "\n"
    "options:\n"
    "  -o, --output OUT.h5       file to create (replaced if it exists); required\n"
    "      --mode MODE           strict (default): stop at the first bad record, exit 1;\n"
    "                            lenient: store repairable records repaired (the repairs\n"
    "                            and the input bytes are kept), reject the rest;\n"
    "                            permissive: store every record whose fields can be read\n"
    "                            Every bad record's bytes go to /marc/rejected with the reason.\n"
    "      --to-utf8             store MARC-8 records converted to UTF-8 (input kept)\n"
    "      --threads N           parser threads (default: number of cores)\n"
    "      --queue-mb M          queue byte budget in MiB (default 256)\n"
    "      --flush-every N       commit every N records (default 0: off)\n"
    "      --flush-ms T          commit at least every T ms (default 1000)\n"
    "      --compress SPEC       none | deflate[:LEVEL[:shuffle|noshuffle]] |\n"
    "                            blosc[:CODEC[:LEVEL[:shuffle|bitshuffle|noshuffle]]]\n"
    "      --locking MODE        on | off | best-effort (default: HDF5_USE_FILE_LOCKING)\n"
    "      --export FORMAT:PATH  after closing, export to PATH (iso2709, marcxml,\n"
    "                            marc-json, line); may be repeated\n"
    "  -q, --quiet               no summary on stdout\n"
    "  -h, --help                this help\n"
    "\n"
    "Exit status: 0 success, 1 data error (strict mode's first bad record: file, byte\n"
    "offset, ordinal and 001 on stderr; the records before it are kept), 2 usage error.\n";

#define INGEST_LINE                                                                                \
    "usage: h5stream ingest marc SRC... -o OUT.h5 [options] (--help lists them; docs/cli.md)"

typedef struct {
    h5s_marc_format format;
    const char *path;
} export_spec;

static int parse_export_spec(const char *s, export_spec *out)
{
    const char *colon = strchr(s, ':');
    char name[32];
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof name || !colon[1])
        return -1;
    memcpy(name, s, (size_t)(colon - s));
    name[colon - s] = '\0';
    if (h5s_marc_format_parse(&out->format, name) != 0)
        return -1;
    out->path = colon + 1;
    return 0;
}

static const char *const format_names[] = {"iso2709", "marcxml", "marc-json", "line"};

/*
 * After a writer error (a full disk) only the records committed before it are in the
 * file, not every one read: read the count back, as any reader would see it.
 */
static void report_kept_after_writer_error(const char *out)
{
    h5s_marc_reader *r = NULL;
    if (h5s_marc_reader_open(&r, out, NULL) == 0)
        cli_errorf("ingest marc: the writer stopped at the error above: the %llu records "
                   "committed before it are kept in %s (if h5py or h5dump cannot open it, run "
                   "`h5stream recover %s` once there is room)",
                   (unsigned long long)h5s_marc_reader_count(r), out, out);
    else
        cli_errorf("ingest marc: the writer stopped at the error above and %s cannot be read "
                   "back (%s): once there is room, run `h5stream recover %s`; it keeps every "
                   "record committed before the error",
                   out, h5s_error_message(), out);
    h5s_marc_reader_close(r);
}

/* Exports the file to path ("-" = stdout). Returns 0 or prints the error. */
static int export_to(const char *const *h5paths, size_t n, const char *path,
                     const h5s_marc_export_options *o, h5s_marc_export_stats *st)
{
    FILE *fp = strcmp(path, "-") == 0 ? stdout : fopen(path, "wb");
    if (!fp) {
        cli_errorf("export: cannot create %s: %s", path, strerror(errno));
        return CLI_EDATA;
    }
    int rc = h5s_marc_export_files(h5paths, n, fp, o, st);
    if (fp != stdout && fclose(fp) != 0 && rc == 0) {
        cli_errorf("export: writing %s failed: %s", path, strerror(errno));
        return CLI_EDATA;
    }
    if (rc) {
        cli_error_h5s("export", rc);
        return CLI_EDATA;
    }
    return CLI_OK;
}

/* A usage error inside cli_ingest_marc's option loop. */
#define INGEST_USAGE(...)                                                                          \
    do {                                                                                           \
        status = cli_usage_error(INGEST_LINE, __VA_ARGS__);                                        \
        goto done;                                                                                 \
    } while (0)

int cli_ingest_marc(int argc, char **argv)
{
    enum {
        OPT_MODE = 256,
        OPT_UTF8,
        OPT_THREADS,
        OPT_QUEUE,
        OPT_EVERY,
        OPT_MS,
        OPT_COMPRESS,
        OPT_LOCKING,
        OPT_EXPORT
    };
    static const struct option longopts[] = {{"output", required_argument, NULL, 'o'},
                                             {"mode", required_argument, NULL, OPT_MODE},
                                             {"to-utf8", no_argument, NULL, OPT_UTF8},
                                             {"threads", required_argument, NULL, OPT_THREADS},
                                             {"queue-mb", required_argument, NULL, OPT_QUEUE},
                                             {"flush-every", required_argument, NULL, OPT_EVERY},
                                             {"flush-ms", required_argument, NULL, OPT_MS},
                                             {"compress", required_argument, NULL, OPT_COMPRESS},
                                             {"locking", required_argument, NULL, OPT_LOCKING},
                                             {"export", required_argument, NULL, OPT_EXPORT},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    marc_ingest_args a;
    memset(&a, 0, sizeof a);
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    h5s_codec codec = H5S_CODEC_INIT;
    a.file = fo;
    a.codec = codec;
    a.mode = H5S_MARC_STRICT;
    export_spec exports[MAX_EXPORTS];
    int nexports = 0, quiet = 0;
    uint64_t v;
    /* Sources in order; "-" (standard input) at most once. */
    const char **sources = calloc((size_t)argc + 1, sizeof *sources);
    if (!sources)
        return CLI_EDATA;
    size_t nsrc = 0;
    int stdin_count = 0, status = CLI_OK;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "-o:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 1: /* "-" in the option string: sources come back in order as option 1 */
            sources[nsrc++] = optarg;
            stdin_count += strcmp(optarg, "-") == 0;
            break;
        case 'o':
            a.output = optarg;
            break;
        case OPT_MODE:
            if (h5s_marc_mode_parse(&a.mode, optarg) != 0)
                INGEST_USAGE("ingest marc: --mode: expected strict, lenient "
                             "or permissive, got '%s'",
                             optarg);
            break;
        case OPT_UTF8:
            a.to_utf8 = 1;
            break;
        case OPT_THREADS:
            if (cli_parse_u64(optarg, &v) != 0 || v < 1 || v > 64)
                INGEST_USAGE("ingest marc: --threads: expected 1 to 64, got "
                             "'%s'",
                             optarg);
            a.threads = (int)v;
            break;
        case OPT_QUEUE:
        case OPT_EVERY:
        case OPT_MS:
            if (cli_engine_option(c == OPT_QUEUE   ? "--queue-mb"
                                  : c == OPT_EVERY ? "--flush-every"
                                                   : "--flush-ms",
                                  optarg, &a.file) != 0) {
                status = CLI_EUSAGE;
                goto done;
            }
            break;
        case OPT_COMPRESS:
            if (h5s_codec_parse(&a.codec, optarg) != 0)
                INGEST_USAGE("ingest marc: --compress: %s", h5s_error_message());
            break;
        case OPT_LOCKING:
            if (strcmp(optarg, "on") == 0)
                a.file.locking = H5S_LOCKING_ON;
            else if (strcmp(optarg, "off") == 0)
                a.file.locking = H5S_LOCKING_OFF;
            else if (strcmp(optarg, "best-effort") == 0)
                a.file.locking = H5S_LOCKING_BEST_EFFORT;
            else
                INGEST_USAGE("ingest marc: --locking: expected on, off or "
                             "best-effort, got '%s'",
                             optarg);
            break;
        case OPT_EXPORT:
            if (nexports == MAX_EXPORTS)
                INGEST_USAGE("ingest marc: at most %d --export options", MAX_EXPORTS);
            if (parse_export_spec(optarg, &exports[nexports]) != 0)
                INGEST_USAGE("ingest marc: --export: expected FORMAT:PATH "
                             "with FORMAT iso2709, marcxml, marc-json or line, "
                             "got '%s'",
                             optarg);
            nexports++;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            fputs(ingest_usage, stdout);
            free(sources);
            return CLI_OK;
        default:
            INGEST_USAGE("ingest marc: unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (!a.output)
        status = cli_usage_error(INGEST_LINE, "ingest marc: -o OUT.h5 is required");
    else if (nsrc == 0)
        status = cli_usage_error(INGEST_LINE, "ingest marc: no source file (use - for stdin)");
    else if (stdin_count > 1)
        status = cli_usage_error(INGEST_LINE, "ingest marc: standard input (-) given twice");
    if (status != CLI_OK)
        goto done;
    a.sources = sources;
    a.nsources = nsrc;
    /* Encoders only matter with compression; parsers take the cores otherwise. */
    a.file.encode_threads = a.codec.kind == H5S_CODEC_NONE ? 1 : 0;
    a.stop = &cli_stop_flag;
    /* No SA_RESTART: a read() waiting on a quiet pipe returns, and the reader stops. */
    cli_signals_catch();

    marc_ingest_result res;
    int rc = marc_ingest_run(&a, &res);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (rc) {
        cli_errorf("ingest marc: %s: %s", h5s_strerror(rc), res.error);
        if (res.source_failed)
            cli_errorf("ingest marc: %llu records accepted and %llu rejected before it are "
                       "committed in %s (file closed)",
                       (unsigned long long)res.accepted, (unsigned long long)res.rejected,
                       a.output);
        else if (rc == H5S_EIO)
            report_kept_after_writer_error(a.output);
        status = CLI_EDATA;
    } else if (cli_stop_flag) {
        cli_errorf("ingest marc: interrupted by %s: %llu records accepted and %llu rejected are "
                   "committed in %s (file closed)",
                   cli_stop_signal == SIGTERM ? "SIGTERM" : "SIGINT",
                   (unsigned long long)res.accepted, (unsigned long long)res.rejected, a.output);
        status = CLI_EDATA;
    } else if (res.strict_stopped) {
        cli_errorf("ingest marc: strict mode stopped at the first bad record: %s; the %llu "
                   "records before it are committed in %s and the bad one is kept in "
                   "/marc/rejected (--mode lenient or permissive go on)",
                   res.stop_message, (unsigned long long)res.accepted, a.output);
        status = CLI_EDATA;
    }
    if (!quiet && rc == 0) {
        double mb = (double)res.bytes_in / MB;
        double s = res.seconds > 0 ? res.seconds : 1e-9;
        printf("ingest marc: %llu records read, %llu accepted, %llu rejected, %llu repaired",
               (unsigned long long)res.read, (unsigned long long)res.accepted,
               (unsigned long long)res.rejected, (unsigned long long)res.repaired);
        if (a.to_utf8)
            printf(", %llu converted to UTF-8", (unsigned long long)res.converted);
        printf(" -> %s (%.1f MB in %.3f s: %.1f MB/s, %.0f records/s)\n", a.output, mb, s, mb / s,
               (double)res.read / s);
        fflush(stdout);
    }
    for (int i = 0; i < nexports && rc == 0; i++) {
        h5s_marc_export_options eo = H5S_MARC_EXPORT_OPTIONS_INIT;
        eo.format = exports[i].format;
        h5s_marc_export_stats st;
        const char *one[1] = {a.output};
        int e = export_to(one, 1, exports[i].path, &eo, &st);
        if (e != CLI_OK)
            status = e;
        else if (!quiet)
            printf("export %s: %llu records -> %s\n", format_names[eo.format],
                   (unsigned long long)st.records, exports[i].path);
    }
done:
    free(sources);
    return status;
}

/* ---- export ----------------------------------------------------------------------- */

#define EXPORT_LINE                                                                                \
    "usage: h5stream export FILE.h5... --to iso2709|marcxml|marc-json|line -o OUT [--to-utf8] "    \
    "[--rejected] [--threads N]"

static const char export_help[] =
    EXPORT_LINE "\n"
                "\n"
                "Writes the records of a marc file (also one still being written: the\n"
                "committed ones) in input order. OUT - is standard output.\n"
                "  --to iso2709      the stored bytes, byte for byte\n"
                "  --to marcxml      MARCXML (http://www.loc.gov/MARC21/slim), <collection>\n"
                "  --to marc-json    MARC-in-JSON, one JSON array\n"
                "  --to line         yaz-marcdump's line format\n"
                "  --to-utf8         convert MARC-8 records (leader/09 ' ') to UTF-8\n"
                "  --rejected        export /marc/rejected instead of the accepted records\n"
                "  --threads N       formatting threads (default: number of cores)\n";

int cli_export_marc(int argc, char **argv, const char *fmt)
{
    h5s_marc_export_options o = H5S_MARC_EXPORT_OPTIONS_INIT;
    if (h5s_marc_format_parse(&o.format, fmt) != 0)
        return cli_usage_error(EXPORT_LINE, "export: unknown marc format '%s'", fmt);
    const char **ins = calloc((size_t)argc, sizeof *ins);
    size_t nin = 0;
    const char *out = NULL;
    if (!ins) {
        cli_errorf("export: out of memory");
        return CLI_EDATA;
    }
    int status = CLI_OK;
    for (int i = 1; i < argc && status == CLI_OK; i++) {
        const char *s = argv[i];
        uint64_t v;
        if (strcmp(s, "--to") == 0 && i + 1 < argc) {
            i++;
        } else if (strncmp(s, "--to=", 5) == 0) {
            continue;
        } else if ((strcmp(s, "-o") == 0 || strcmp(s, "--output") == 0) && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(s, "--to-utf8") == 0) {
            o.flags |= H5S_MARC_WRITE_MARC8_TO_UTF8;
        } else if (strcmp(s, "--rejected") == 0) {
            o.rejected = 1;
        } else if (strcmp(s, "--threads") == 0 && i + 1 < argc) {
            if (cli_parse_u64(argv[++i], &v) != 0 || v < 1 || v > 16)
                status = cli_usage_error(EXPORT_LINE,
                                         "export: --threads: expected 1 to 16, got '%s'", argv[i]);
            o.threads = (int)v;
        } else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            fputs(export_help, stdout);
            free(ins);
            return CLI_OK;
        } else if (s[0] == '-' && s[1] != '\0') {
            status = cli_usage_error(EXPORT_LINE, "export: unknown option '%s'", s);
        } else {
            ins[nin++] = s;
        }
    }
    if (status != CLI_OK) {
        free(ins);
        return status;
    }
    if (nin == 0 || !out) {
        free(ins);
        return cli_usage_error(EXPORT_LINE, "export: FILE.h5 and -o OUT are required");
    }
    h5s_marc_export_stats st;
    int rc = export_to(ins, nin, out, &o, &st);
    free(ins);
    if (rc == CLI_OK && st.skipped)
        cli_errorf("export: %llu records without a readable directory could not be written as "
                   "%s",
                   (unsigned long long)st.skipped, fmt);
    return rc;
}

/* ---- tail ------------------------------------------------------------------------- */

#define TAIL_LINE                                                                                  \
    "usage: h5stream tail FILE.h5 /marc[/rejected] [-f] [--interval MS] [--timeout MS] [--json]"

static const char tail_help[] =
    TAIL_LINE "\n"
              "\n"
              "Prints one line per committed record, in input order:\n"
              "  ORDINAL<TAB>001<TAB>245$a            (/marc)\n"
              "  ORDINAL<TAB>001<TAB>245$a<TAB>ERROR  (/marc/rejected)\n"
              "  -f, --follow     wait for the file, then print records as they are committed\n"
              "                   until the writer closes the file\n"
              "  --interval MS    poll interval (default 100)\n"
              "  --timeout MS     how long to wait for the file (default 60000 with -f, else 0)\n"
              "  --json           one JSON object per line: row, ordinal, control, title\n"
              "                   (and error)\n";

/* Copies s into out (cap >= 4 * n + 1) with invalid UTF-8 bytes as U+FFFD and control
 * characters (tab, newline) as spaces, so every line stays one line of valid text. */
static void clean_text(char *out, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < cap;) {
        const unsigned char *p = (const unsigned char *)s + i;
        size_t k = h5s_marc_utf8_seq(p, n - i);
        if (k == 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else if (k == 1 && p[0] < 0x20) {
            out[o++] = ' ';
            i++;
        } else {
            memcpy(out + o, p, k);
            o += k;
            i += k;
        }
    }
    out[o] = '\0';
}

static int print_record(h5s_marc_reader *r, const h5s_marc_record *rec, int json, int rejected)
{
    char title[1024], ctl[4 * H5S_MARC_CONTROL_BYTES + 1], tclean[4 * sizeof title + 1];
    size_t tl = h5s_marc_title(title, sizeof title, rec->data, rec->len);
    clean_text(tclean, sizeof tclean, title, tl);
    clean_text(ctl, sizeof ctl, rec->index.control,
               h5s_marc_fixed_len(rec->index.control, H5S_MARC_CONTROL_BYTES));
    char err[4 * H5S_MARC_MESSAGE_BYTES + 1] = "";
    if (rejected) {
        h5s_marc_error_row e;
        if (h5s_marc_reader_error(r, rec->row, &e) == 0)
            clean_text(err, sizeof err, e.message,
                       h5s_marc_fixed_len(e.message, H5S_MARC_MESSAGE_BYTES));
    }
    if (json) {
        json_t *o = json_pack("{s:I,s:I,s:s,s:s}", "row", (json_int_t)rec->row, "ordinal",
                              (json_int_t)rec->index.ordinal, "control", ctl, "title", tclean);
        if (o && rejected)
            json_object_set_new(o, "error", json_string(err));
        char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (text)
            printf("%s\n", text);
        free(text);
        json_decref(o);
        if (!text)
            return -1;
    } else if (rejected) {
        printf("%llu\t%s\t%s\t%s\n", (unsigned long long)rec->index.ordinal, ctl, tclean, err);
    } else {
        printf("%llu\t%s\t%s\n", (unsigned long long)rec->index.ordinal, ctl, tclean);
    }
    return 0;
}

int cli_tail_marc(int argc, char **argv, const char *path)
{
    const char *file = NULL;
    int follow = 0, json = 0, timeout = -2;
    unsigned interval = 100;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        uint64_t v;
        if (strcmp(s, "-f") == 0 || strcmp(s, "--follow") == 0) {
            follow = 1;
        } else if (strcmp(s, "--json") == 0) {
            json = 1;
        } else if ((strcmp(s, "--interval") == 0 || strcmp(s, "--timeout") == 0) && i + 1 < argc) {
            if (cli_parse_u64(argv[i + 1], &v) != 0 || v > INT_MAX || (v == 0 && s[2] == 'i'))
                return cli_usage_error(TAIL_LINE, "tail: %s: expected milliseconds, got '%s'", s,
                                       argv[i + 1]);
            if (s[2] == 'i')
                interval = (unsigned)v;
            else
                timeout = (int)v;
            i++;
        } else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            fputs(tail_help, stdout);
            return CLI_OK;
        } else if (s[0] == '-' && s[1] != '\0') {
            return cli_usage_error(TAIL_LINE, "tail: unknown option '%s'", s);
        } else if (!file) {
            file = s;
        }
    }
    int rejected;
    if (strcmp(path, "/marc") == 0 || strcmp(path, "/marc/index") == 0)
        rejected = 0;
    else if (strcmp(path, "/marc/rejected") == 0 || strcmp(path, "/marc/rejected/index") == 0)
        rejected = 1;
    else
        return cli_usage_error(TAIL_LINE, "tail: %s: expected /marc or /marc/rejected", path);
    if (!file)
        return cli_usage_error(TAIL_LINE, "tail: FILE.h5 is required");
    if (timeout == -2)
        timeout = follow ? 60000 : 0;
    h5s_marc_reader_options o = H5S_MARC_READER_OPTIONS_INIT;
    o.open_timeout_ms = timeout;
    o.poll_ms = interval;
    o.rejected = rejected;
    h5s_marc_reader *r = NULL;
    int rc = h5s_marc_reader_open(&r, file, &o);
    if (rc) {
        cli_error_h5s("tail", rc);
        return CLI_EDATA;
    }
    int status = CLI_OK;
    for (;;) {
        h5s_marc_record rec;
        while ((rc = h5s_marc_reader_next(r, &rec)) == 1)
            if (print_record(r, &rec, json, rejected) != 0) {
                rc = -1;
                break;
            }
        fflush(stdout);
        if (rc < 0) {
            cli_error_h5s("tail", rc);
            status = CLI_EDATA;
            break;
        }
        h5s_writer_state st = h5s_marc_reader_writer_state(r);
        if (!follow || st == H5S_WRITER_CLOSED || st == H5S_WRITER_FAILED) {
            /* The count read after "closed" is final: print what is left, then stop. */
            uint64_t before = h5s_marc_reader_count(r);
            if (follow && h5s_marc_reader_refresh(r, NULL) == 0 &&
                h5s_marc_reader_count(r) > before)
                continue;
            break;
        }
        uint64_t count;
        rc = h5s_marc_reader_wait(r, h5s_marc_reader_count(r), -1, &count);
        if (rc) {
            cli_error_h5s("tail", rc);
            status = CLI_EDATA;
            break;
        }
    }
    h5s_marc_reader_close(r);
    return status;
}
