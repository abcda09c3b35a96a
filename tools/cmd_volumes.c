/*
 * cmd_volumes.c - the volumes model's commands (docs/volumes.md): ingest NIfTI files and
 * folders into a collection, export volumes (or parts of them) to NIfTI and tables to
 * TSV, tail a collection as volumes commit, and the volumes benchmark.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_util.h"
#include "cli.h"
#include "h5s_codec.h"
#include "h5s_nifti.h"
#include "h5s_reader.h"
#include "h5s_tsv.h"
#include "h5s_volumes.h"
#include "h5s_volumes_reader.h"
#include "h5stream.h"

#define VC_MAX_WHERE 16

/* ---- shared helpers ---------------------------------------------------------------- */

static int has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a > b && strcmp(s + a - b, suffix) == 0;
}

static int is_nifti_name(const char *s)
{
    return has_suffix(s, ".nii") || has_suffix(s, ".nii.gz");
}

typedef struct {
    char **v;
    size_t n, cap;
} str_list;

static int list_add(str_list *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s)))
        return -1;
    l->n++;
    return 0;
}

static void list_free(str_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the NIfTI files under dir (recursively, sorted per folder). */
static int scan_dir(str_list *out, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d) {
        cli_errorf("ingest: %s: %s", dir, strerror(errno));
        return -1;
    }
    str_list names = {0};
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            rc = list_add(&names, e->d_name);
    closedir(d);
    qsort(names.v, names.n, sizeof *names.v, cmp_str);
    for (size_t i = 0; rc == 0 && i < names.n; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, names.v[i]);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 16)
            rc = scan_dir(out, path, depth + 1);
        else if (S_ISREG(st.st_mode) && is_nifti_name(names.v[i]))
            rc = list_add(out, path);
    }
    list_free(&names);
    return rc;
}

static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

/* Option value: "--opt V" or "--opt=V". Returns 1 matched (value set), 0 not, -1 missing. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return 0;
    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        cli_errorf("option %s needs a value", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

/* ---- export ------------------------------------------------------------------------ */

typedef struct {
    const char *file, *out, *collection;
    int gz;
    const char *where[VC_MAX_WHERE];
    size_t nwhere;
    int slice_axis; /* -1 none */
    uint64_t slice_k;
    int has_box;
    uint64_t box[3][2];
    int tables; /* write obs.tsv and participants.tsv */
} export_args;

static const char export_usage[] =
    "usage: h5stream export FILE.h5 --to nifti -o DIR [--collection NAME] [--gz]\n"
    "         [--select obs_id=ID] [--slice axial|coronal|sagittal:K] [--box x0:x1,y0:y1,z0:z1]\n"
    "         [--where COLUMN=VALUE] [--no-tables]\n"
    "Writes DIR/COLLECTION/OBS_ID.nii[.gz] for every selected committed volume (or the\n"
    "slice or box of it), DIR/COLLECTION/obs.tsv and DIR/participants.tsv (obs_meta).\n";

static int parse_range(const char *s, uint64_t out[2])
{
    char *end;
    errno = 0;
    unsigned long long a = strtoull(s, &end, 10);
    if (end == s || *end != ':' || errno)
        return -1;
    const char *t = end + 1;
    unsigned long long b = strtoull(t, &end, 10);
    if (end == t || (*end != '\0' && *end != ',') || errno || b <= a)
        return -1;
    out[0] = a;
    out[1] = b;
    return 0;
}

static int parse_export(export_args *a, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->slice_axis = -1;
    a->tables = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int m;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(export_usage, stdout);
            return -1;
        }
        if ((m = opt_value(argc, argv, &i, "--to", &v)) != 0) {
            if (m < 0)
                return CLI_EUSAGE;
        } else if ((m = opt_value(argc, argv, &i, "-o", &v)) != 0) {
            if (m < 0)
                return CLI_EUSAGE;
            a->out = v;
        } else if ((m = opt_value(argc, argv, &i, "--collection", &v)) != 0) {
            if (m < 0)
                return CLI_EUSAGE;
            a->collection = v;
        } else if (strcmp(argv[i], "--gz") == 0) {
            a->gz = 1;
        } else if (strcmp(argv[i], "--no-tables") == 0) {
            a->tables = 0;
        } else if ((m = opt_value(argc, argv, &i, "--select", &v)) != 0 ||
                   (m = opt_value(argc, argv, &i, "--where", &v)) != 0) {
            if (m < 0)
                return CLI_EUSAGE;
            if (!strchr(v, '=') || a->nwhere == VC_MAX_WHERE) {
                cli_errorf("export: '%s': expected COLUMN=VALUE (at most %d)", v, VC_MAX_WHERE);
                return CLI_EUSAGE;
            }
            a->where[a->nwhere++] = v;
        } else if ((m = opt_value(argc, argv, &i, "--slice", &v)) != 0) {
            if (m < 0)
                return CLI_EUSAGE;
            const char *colon = strchr(v, ':');
            uint64_t k;
            size_t n = colon ? (size_t)(colon - v) : 0;
            if (colon && n == 5 && strncmp(v, "axial", 5) == 0)
                a->slice_axis = 2;
            else if (colon && n == 7 && strncmp(v, "coronal", 7) == 0)
                a->slice_axis = 1;
            else if (colon && n == 8 && strncmp(v, "sagittal", 8) == 0)
                a->slice_axis = 0;
            if (a->slice_axis < 0 || cli_parse_u64(colon + 1, &k) != 0) {
                cli_errorf("export: --slice '%s': expected axial|coronal|sagittal:K", v);
                return CLI_EUSAGE;
            }
            a->slice_k = k;
        } else if ((m = opt_value(argc, argv, &i, "--box", &v)) != 0) {
            if (m < 0)
                return CLI_EUSAGE;
            /* x0:x1,y0:y1,z0:z1: three ranges separated by commas. */
            const char *p = v;
            int ok = 1;
            for (int ax = 0; ax < 3 && ok; ax++) {
                ok = parse_range(p, a->box[ax]) == 0;
                const char *comma = strchr(p, ',');
                if (ax < 2) {
                    ok = ok && comma != NULL;
                    if (ok)
                        p = comma + 1;
                } else {
                    ok = ok && comma == NULL;
                }
            }
            if (!ok) {
                cli_errorf("export: --box '%s': expected x0:x1,y0:y1,z0:z1 (x0 < x1, ...)", v);
                return CLI_EUSAGE;
            }
            a->has_box = 1;
        } else if (argv[i][0] == '-') {
            cli_errorf("export: unknown option '%s'", argv[i]);
            fputs(export_usage, stderr);
            return CLI_EUSAGE;
        } else if (!a->file) {
            a->file = argv[i];
        } else {
            cli_errorf("export: one FILE.h5 at a time ('%s')", argv[i]);
            return CLI_EUSAGE;
        }
    }
    if (!a->file || !a->out) {
        cli_errorf("export: FILE.h5 and -o DIR are required");
        fputs(export_usage, stderr);
        return CLI_EUSAGE;
    }
    if (a->has_box && a->slice_axis >= 0) {
        cli_errorf("export: --slice and --box exclude each other");
        return CLI_EUSAGE;
    }
    return 0;
}

/* Exports one collection; returns CLI status. */
static int export_collection(h5s_volumes_reader *r, const char *name, const export_args *a)
{
    char dir[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof dir, "%s/%s", a->out, name) >= sizeof dir - 100) {
        cli_errorf("export: %s: path too long", a->out);
        return CLI_EUSAGE;
    }
    if (mkdir_p(dir) != 0) {
        cli_errorf("export: cannot create %s: %s", dir, strerror(errno));
        return CLI_EDATA;
    }
    uint64_t *idx = NULL;
    size_t n = 0;
    int rc = h5s_volumes_reader_select(r, name, a->where, a->nwhere, &idx, &n);
    if (rc) {
        cli_error_h5s("export", rc);
        return rc == H5S_EINVAL ? CLI_EUSAGE : CLI_EDATA;
    }
    int status = CLI_OK;
    for (size_t i = 0; i < n; i++) {
        h5s_volume_obs o;
        rc = h5s_volumes_reader_obs(r, name, idx[i], &o);
        h5s_volume_box box, *bp = NULL;
        if (rc == 0 && a->slice_axis >= 0) {
            rc = h5s_volume_box_slice(&box, &o, a->slice_axis, a->slice_k);
            bp = &box;
        } else if (rc == 0 && a->has_box) {
            h5s_volume_box_full(&box, &o);
            for (int ax = 0; ax < 3; ax++) {
                box.lo[ax] = a->box[ax][0];
                box.hi[ax] = a->box[ax][1];
            }
            bp = &box;
        }
        char path[PATH_MAX + 128];
        snprintf(path, sizeof path, "%s/%.*s.nii%s", dir, (int)sizeof o.obs_id, o.obs_id,
                 a->gz ? ".gz" : "");
        if (rc == 0)
            rc = h5s_volumes_export_nifti(r, name, idx[i], bp, path);
        if (rc) {
            cli_error_h5s("export", rc);
            status = CLI_EDATA;
        }
    }
    if (a->tables) {
        char path[PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/obs.tsv", dir);
        rc = h5s_volumes_export_obs_tsv(r, name, idx, n, path);
        if (rc) {
            cli_error_h5s("export", rc);
            status = CLI_EDATA;
        }
    }
    free(idx);
    return status;
}

int cli_export_volumes(int argc, char **argv, const char *fmt)
{
    (void)fmt;
    export_args a;
    int rc = parse_export(&a, argc, argv);
    if (rc == -1)
        return CLI_OK;
    if (rc)
        return rc;
    h5s_volumes_reader *r = NULL;
    rc = h5s_volumes_reader_open(&r, a.file, NULL);
    if (rc) {
        cli_error_h5s("export", rc);
        return CLI_EDATA;
    }
    if (mkdir_p(a.out) != 0) {
        cli_errorf("export: cannot create %s: %s", a.out, strerror(errno));
        h5s_volumes_reader_close(r);
        return CLI_EDATA;
    }
    int status = CLI_OK, found = 0;
    for (size_t i = 0; i < h5s_volumes_reader_ncollections(r); i++) {
        const char *name = h5s_volumes_reader_collection(r, i);
        if (a.collection && strcmp(a.collection, name) != 0)
            continue;
        found = 1;
        int s = export_collection(r, name, &a);
        if (s > status)
            status = s;
    }
    if (!found) {
        cli_errorf("export: %s: no collection %s", a.file, a.collection ? a.collection : "");
        status = CLI_EDATA;
    }
    if (a.tables && status != CLI_EUSAGE) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/participants.tsv", a.out);
        rc = h5s_volumes_export_meta_tsv(r, path);
        if (rc && rc != H5S_ENOTFOUND) {
            cli_error_h5s("export", rc);
            status = CLI_EDATA;
        }
    }
    h5s_volumes_reader_close(r);
    return status;
}

/* ---- ingest ------------------------------------------------------------------------ */

typedef struct {
    str_list sources;
    const char *out, *collection, *participants, *pattern, *export_dir;
    int heterogeneous;
    uint64_t block; /* 0 = slice */
    h5s_codec codec;
    h5s_file_options file; /* --threads, --queue-mb, --flush-every, --flush-ms */
} ingest_args;

static const char ingest_usage[] =
    "usage: h5stream ingest volumes SRC... -o OUT.h5 --collection NAME [--participants TSV]\n"
    "         [--subject-pattern REGEX] [--heterogeneous] [--chunk slice|block:N]\n"
    "         [--compress SPEC] [--threads N] [--queue-mb M] [--flush-every N]\n"
    "         [--flush-ms T] [--export nifti:DIR]\n"
    "SRC: .nii or .nii.gz files, or folders searched for them (recursively).\n";

static int parse_ingest(ingest_args *a, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    h5s_codec none = H5S_CODEC_INIT;
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    a->codec = none;
    a->file = fo;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int m;
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            fputs(ingest_usage, stdout);
            return -1;
        }
#define VC_OPT(name) ((m = opt_value(argc, argv, &i, name, &v)) != 0)
        if (VC_OPT("-o")) {
            a->out = v;
        } else if (VC_OPT("--collection")) {
            a->collection = v;
        } else if (VC_OPT("--participants")) {
            a->participants = v;
        } else if (VC_OPT("--subject-pattern")) {
            a->pattern = v;
        } else if (strcmp(arg, "--heterogeneous") == 0) {
            a->heterogeneous = 1;
            continue;
        } else if (VC_OPT("--chunk")) {
            if (m > 0 && strcmp(v, "slice") == 0) {
                a->block = 0;
            } else if (m > 0 && (strncmp(v, "block:", 6) != 0 ||
                                 cli_parse_u64(v + 6, &a->block) != 0 || a->block == 0)) {
                cli_errorf("ingest: --chunk '%s': expected slice or block:N", v);
                return CLI_EUSAGE;
            }
        } else if (VC_OPT("--compress")) {
            if (m > 0 && h5s_codec_parse(&a->codec, v) != 0) {
                cli_errorf("ingest: --compress: %s", h5s_error_message());
                return CLI_EUSAGE;
            }
        } else if (VC_OPT("--threads") || VC_OPT("--queue-mb") || VC_OPT("--flush-every") ||
                   VC_OPT("--flush-ms")) {
            /* arg may be "--name=value": the name is what comes before '='. */
            char name[16];
            snprintf(name, sizeof name, "%.*s", (int)strcspn(arg, "="), arg);
            if (m < 0 || cli_engine_option(name, v, &a->file) != 0) {
                fputs(ingest_usage, stderr);
                return CLI_EUSAGE;
            }
        } else if (VC_OPT("--export")) {
            if (m > 0 && strncmp(v, "nifti:", 6) != 0) {
                cli_errorf("ingest: --export '%s': expected nifti:DIR", v);
                return CLI_EUSAGE;
            }
            if (m > 0)
                a->export_dir = v + 6;
        } else if (arg[0] == '-') {
            cli_errorf("ingest: unknown option '%s'", arg);
            fputs(ingest_usage, stderr);
            return CLI_EUSAGE;
        } else {
            m = 0;
            if (list_add(&a->sources, arg) != 0)
                return CLI_EUSAGE;
        }
        if (m < 0)
            return CLI_EUSAGE;
#undef VC_OPT
    }
    if (!a->out || !a->collection || a->sources.n == 0) {
        cli_errorf("ingest: SRC..., -o OUT.h5 and --collection NAME are required");
        fputs(ingest_usage, stderr);
        return CLI_EUSAGE;
    }
    return 0;
}

/* obs_meta from a participants table: participant_id (or the first column) is the key,
 * its "sub-" prefix dropped so it matches the labels of file names. */
typedef struct {
    h5s_tsv_table *t;
    long key;
    h5s_meta_column cols[H5S_VOLUMES_MAX_COLUMNS];
    size_t src[H5S_VOLUMES_MAX_COLUMNS];
    size_t ncols;
} meta_plan;

static int plan_meta(meta_plan *p, const char *path)
{
    memset(p, 0, sizeof *p);
    int rc = h5s_tsv_read(&p->t, path, NULL, 0);
    if (rc)
        return rc;
    p->key = h5s_tsv_find(p->t, "participant_id");
    if (p->key < 0)
        p->key = 0;
    for (size_t c = 0; c < p->t->ncols; c++) {
        if ((long)c == p->key)
            continue;
        if (p->ncols == H5S_VOLUMES_MAX_COLUMNS) {
            cli_errorf("ingest: %s: more than %d columns", path, H5S_VOLUMES_MAX_COLUMNS);
            return H5S_EINVAL;
        }
        const h5s_tsv_column *col = &p->t->cols[c];
        h5s_meta_column *m = &p->cols[p->ncols];
        m->name = col->name;
        m->type = col->type == H5S_TSV_INT     ? H5S_META_INT
                  : col->type == H5S_TSV_FLOAT ? H5S_META_FLOAT
                                               : H5S_META_STRING;
        if (m->type == H5S_META_STRING) {
            size_t longest = 0;
            for (size_t r = 0; r < p->t->nrows; r++)
                if (col->strings && col->strings[r] && strlen(col->strings[r]) > longest)
                    longest = strlen(col->strings[r]);
            m->strsize = longest + 1 < 16 ? 16 : longest + 1;
        }
        p->src[p->ncols++] = c;
    }
    return 0;
}

static int write_meta(h5s_volumes *v, const meta_plan *p)
{
    h5s_meta_value vals[H5S_VOLUMES_MAX_COLUMNS];
    for (size_t r = 0; r < p->t->nrows; r++) {
        const h5s_tsv_column *key = &p->t->cols[p->key];
        const char *id = key->type == H5S_TSV_STRING && key->strings[r] ? key->strings[r] : NULL;
        char idbuf[64];
        if (key->type == H5S_TSV_INT && !key->missing[r]) {
            snprintf(idbuf, sizeof idbuf, "%" PRId64, key->ints[r]);
            id = idbuf;
        }
        if (!id)
            continue;
        if (strncmp(id, "sub-", 4) == 0)
            id += 4;
        for (size_t k = 0; k < p->ncols; k++) {
            const h5s_tsv_column *c = &p->t->cols[p->src[k]];
            memset(&vals[k], 0, sizeof vals[k]);
            if (c->type == H5S_TSV_STRING)
                vals[k].s = c->strings[r];
            else if (c->type == H5S_TSV_INT)
                vals[k].i = c->missing[r] ? H5S_META_MISSING_INT : c->ints[r];
            else
                vals[k].f = c->floats[r];
        }
        const char *ids[1] = {id};
        int rc = h5s_volumes_write_obs_meta(v, ids, vals, 1);
        if (rc)
            return rc;
    }
    return 0;
}

typedef struct {
    h5s_collection *coll;
    h5s_subject_matcher *matcher;
    str_list *files;
    pthread_mutex_t mu;
    size_t next;
    uint64_t done, failed;
    int fatal;
    uint64_t bytes;
} ingest_work;

/*
 * After a writer error (a full disk) only the volumes committed before it are in the
 * file, not every one queued: read the count back, as any reader would see it.
 */
static void report_kept_after_writer_error(const char *out, const char *collection, uint64_t queued)
{
    h5s_volumes_reader *r = NULL;
    uint64_t committed = 0;
    int rc = h5s_volumes_reader_open(&r, out, NULL);
    if (rc == 0)
        rc = h5s_volumes_reader_refresh(r, collection, &committed);
    if (rc == 0)
        cli_errorf("ingest: the writer stopped at the error above: %" PRIu64 " of the %" PRIu64
                   " volumes queued were committed before it and are kept in %s:/volumes/%s "
                   "(if h5py or h5dump cannot open it, run `h5stream recover %s` once there is "
                   "room); the files after it were not read",
                   committed, queued, out, collection, out);
    else
        cli_errorf("ingest: the writer stopped at the error above and %s cannot be read back "
                   "(%s): once there is room, run `h5stream recover %s`; it keeps every volume "
                   "committed before the error",
                   out, h5s_error_message(), out);
    h5s_volumes_reader_close(r);
}

static void *ingest_worker(void *arg)
{
    ingest_work *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        size_t i = w->next++;
        int stop = w->fatal || cli_stop_flag;
        pthread_mutex_unlock(&w->mu);
        if (stop || i >= w->files->n)
            break;
        const char *path = w->files->v[i];
        char subject[H5S_VOLUMES_ID_MAX] = "";
        if (h5s_subject_match(w->matcher, path, subject, sizeof subject) != 0)
            subject[0] = '\0';
        int rc = h5s_collection_import_nifti(w->coll, path, NULL, subject, NULL);
        struct stat st;
        pthread_mutex_lock(&w->mu);
        if (rc) {
            cli_error_h5s("ingest", rc);
            w->failed++;
            /* A stream error (the file being written) ends the run; bad input does not. */
            if (rc == H5S_EIO || rc == H5S_ESTATE || rc == H5S_ENOMEM)
                w->fatal = 1;
        } else {
            w->done++;
            if (stat(path, &st) == 0)
                w->bytes += (uint64_t)st.st_size;
        }
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

static int export_all(const char *file, const char *dir)
{
    char *argv[] = {"export", (char *)file, "-o", (char *)dir, "--gz", NULL};
    return cli_export_volumes(5, argv, "nifti");
}

int cli_ingest_volumes(int argc, char **argv)
{
    ingest_args a;
    int rc = parse_ingest(&a, argc, argv);
    if (rc == -1)
        return CLI_OK;
    if (rc) {
        list_free(&a.sources);
        return rc;
    }
    str_list files = {0};
    int status = CLI_OK;
    for (size_t i = 0; i < a.sources.n && status == CLI_OK; i++) {
        struct stat st;
        const char *s = a.sources.v[i];
        if (stat(s, &st) != 0) {
            cli_errorf("ingest: %s: %s", s, strerror(errno));
            status = CLI_EDATA;
        } else if (S_ISDIR(st.st_mode)) {
            if (scan_dir(&files, s, 0) != 0)
                status = CLI_EDATA;
        } else if (list_add(&files, s) != 0) {
            status = CLI_EDATA;
        }
    }
    list_free(&a.sources);
    if (status == CLI_OK && files.n == 0) {
        cli_errorf("ingest: no .nii or .nii.gz files in the sources");
        status = CLI_EDATA;
    }
    h5s_subject_matcher *matcher = NULL;
    meta_plan plan;
    memset(&plan, 0, sizeof plan);
    if (status == CLI_OK && (rc = h5s_subject_matcher_create(&matcher, a.pattern)) != 0) {
        cli_error_h5s("ingest: --subject-pattern", rc);
        status = CLI_EUSAGE;
    }
    if (status == CLI_OK && a.participants && (rc = plan_meta(&plan, a.participants)) != 0) {
        cli_error_h5s("ingest: --participants", rc);
        status = CLI_EDATA;
    }
    /* The collection takes the first readable file's dtype (and shape, if uniform). */
    h5s_nifti_header first;
    memset(&first, 0, sizeof first);
    size_t first_ok = files.n;
    for (size_t i = 0; status == CLI_OK && i < files.n && first_ok == files.n; i++) {
        if (h5s_nifti_read_header(&first, files.v[i]) == 0)
            first_ok = i;
    }
    if (status == CLI_OK && first_ok == files.n) {
        cli_error_h5s("ingest", H5S_EFORMAT);
        status = CLI_EDATA;
    }
    /* 5-D and more fit only the pool. */
    if (status == CLI_OK && first.ndim > 4)
        a.heterogeneous = 1;
    h5s_file *f = NULL;
    h5s_volumes *v = NULL;
    h5s_collection *coll = NULL;
    if (status == CLI_OK) {
        h5s_file_options fo = a.file;
        h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
        co.dtype = first.dtype;
        co.heterogeneous = a.heterogeneous;
        co.codec = a.codec;
        if (!a.heterogeneous) {
            int t4 = first.ndim >= 4 && first.dim[4] > 1;
            co.ndim = t4 ? 4 : 3;
            for (int i = 0; i < co.ndim; i++)
                co.shape[i] = (uint64_t)(i < first.ndim ? first.dim[i + 1] : 1);
            for (int i = 0; i < 3; i++)
                co.block[i] = a.block;
        }
        /* SIGINT/SIGTERM stop between volumes and close the file (the engine's threads,
         * started with the signals blocked, leave them to this command's threads). */
        cli_signals_catch();
        sigset_t old;
        cli_signals_block(&old);
        rc = h5s_file_create(&f, a.out, &fo);
        if (rc == 0)
            rc = h5s_volumes_create(&v, f, plan.ncols ? plan.cols : NULL, plan.ncols);
        if (rc == 0)
            rc = h5s_volumes_add_collection(&coll, v, a.collection, &co);
        if (rc == 0)
            rc = h5s_file_start_swmr(f);
        if (rc == 0 && plan.t)
            rc = write_meta(v, &plan);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc) {
            cli_error_h5s("ingest", rc);
            status = rc == H5S_EINVAL ? CLI_EUSAGE : CLI_EDATA;
        }
    }
    ingest_work w;
    memset(&w, 0, sizeof w);
    double t0 = cli_now();
    if (status == CLI_OK) {
        w.coll = coll;
        w.matcher = matcher;
        w.files = &files;
        pthread_mutex_init(&w.mu, NULL);
        /* --threads also sets the readers of NIfTI files (one producer each). */
        int nthreads = a.file.encode_threads > 1 && !a.heterogeneous ? a.file.encode_threads : 1;
        if (nthreads > 64)
            nthreads = 64;
        if ((size_t)nthreads > files.n)
            nthreads = (int)files.n;
        pthread_t th[64];
        int started = 0;
        for (int i = 1; i < nthreads; i++)
            if (pthread_create(&th[started], NULL, ingest_worker, &w) == 0)
                started++;
        ingest_worker(&w);
        for (int i = 0; i < started; i++)
            pthread_join(th[i], NULL);
        pthread_mutex_destroy(&w.mu);
        if (w.failed)
            status = CLI_EDATA;
    }
    if (f) {
        rc = h5s_file_close(f);
        if (rc) {
            cli_error_h5s("ingest: closing", rc);
            status = CLI_EDATA;
        }
    }
    double secs = cli_now() - t0;
    h5s_volumes_free(v);
    h5s_subject_matcher_free(matcher);
    h5s_tsv_free(plan.t);
    if (f && status != CLI_EUSAGE) {
        fprintf(stderr,
                "h5stream: ingest: %" PRIu64 " volumes into %s:/volumes/%s in %.2f s (%.1f MB of "
                "files)%s%" PRIu64 " failed\n",
                w.done, a.out, a.collection, secs, (double)w.bytes / 1e6, w.failed ? ", " : ", ",
                w.failed);
        if (cli_stop_flag) {
            cli_errorf("interrupted by %s: %" PRIu64 " volumes written to %s:/volumes/%s%s",
                       cli_stop_signal == SIGTERM ? "SIGTERM" : "SIGINT", w.done, a.out,
                       a.collection, status == CLI_OK ? " (committed, file closed)" : "");
            status = CLI_EDATA;
        } else if (w.fatal)
            report_kept_after_writer_error(a.out, a.collection, w.done);
        else if (w.failed)
            cli_errorf("ingest: kept the %" PRIu64 " good volumes; %" PRIu64
                       " files were refused (see above)",
                       w.done, w.failed);
    }
    if (f && a.export_dir && status != CLI_EUSAGE && !cli_stop_flag) {
        int s = export_all(a.out, a.export_dir);
        if (s > status)
            status = s;
    }
    list_free(&files);
    return status;
}

/* ---- tail -------------------------------------------------------------------------- */

typedef struct {
    double min, max, sum;
    uint64_t n;
} vc_stats;

static void stats_add(vc_stats *s, const void *buf, size_t nvox, h5s_dtype dt)
{
    for (size_t i = 0; i < nvox; i++) {
        double x;
        switch (dt) {
        case H5S_INT8:
            x = ((const int8_t *)buf)[i];
            break;
        case H5S_UINT8:
            x = ((const uint8_t *)buf)[i];
            break;
        case H5S_INT16:
            x = ((const int16_t *)buf)[i];
            break;
        case H5S_UINT16:
            x = ((const uint16_t *)buf)[i];
            break;
        case H5S_INT32:
            x = ((const int32_t *)buf)[i];
            break;
        case H5S_UINT32:
            x = ((const uint32_t *)buf)[i];
            break;
        case H5S_INT64:
            x = (double)((const int64_t *)buf)[i];
            break;
        case H5S_UINT64:
            x = (double)((const uint64_t *)buf)[i];
            break;
        case H5S_FLOAT32:
            x = ((const float *)buf)[i];
            break;
        default:
            x = ((const double *)buf)[i];
            break;
        }
        if (isnan(x))
            continue;
        if (s->n == 0 || x < s->min)
            s->min = x;
        if (s->n == 0 || x > s->max)
            s->max = x;
        s->sum += x;
        s->n++;
    }
}

/* Prints one committed volume, reading it one (t, z) plane at a time. */
static int tail_one(h5s_volumes_reader *r, const char *name, uint64_t index, h5s_dtype dt, int json)
{
    h5s_volume_obs o;
    int rc = h5s_volumes_reader_obs(r, name, index, &o);
    if (rc)
        return rc;
    h5s_volume_box full;
    h5s_volume_box_full(&full, &o);
    size_t plane = (size_t)(full.hi[0] * full.hi[1]);
    void *buf = malloc(plane * h5s_dtype_size(dt));
    if (!buf)
        return H5S_ENOMEM;
    vc_stats s = {0, 0, 0, 0};
    for (uint64_t t = 0; t < full.hi[3] && rc == 0; t++)
        for (uint64_t z = 0; z < full.hi[2] && rc == 0; z++) {
            h5s_volume_box b = full;
            b.lo[2] = z;
            b.hi[2] = z + 1;
            b.lo[3] = t;
            b.hi[3] = t + 1;
            rc = h5s_volumes_reader_read(r, name, index, &b, buf, plane * h5s_dtype_size(dt));
            if (rc == 0)
                stats_add(&s, buf, plane, dt);
        }
    free(buf);
    if (rc)
        return rc;
    double mean = s.n ? s.sum / (double)s.n : NAN;
    if (json) {
        /* One JSON object per line (JSON Lines), as `tail --json` does for frames. */
        json_t *obj = json_object(), *dims = json_array();
        for (int d = 0; d < o.ndim; d++)
            json_array_append_new(dims, json_integer((json_int_t)o.shape[d]));
        json_object_set_new(obj, "collection", json_string(name));
        json_object_set_new(obj, "index", json_integer((json_int_t)index));
        json_object_set_new(obj, "obs_id",
                            json_stringn(o.obs_id, strnlen(o.obs_id, sizeof o.obs_id)));
        json_object_set_new(
            obj, "obs_subject_id",
            json_stringn(o.obs_subject_id, strnlen(o.obs_subject_id, sizeof o.obs_subject_id)));
        json_object_set_new(obj, "shape", dims);
        json_object_set_new(obj, "min", s.n ? json_real(s.min) : json_null());
        json_object_set_new(obj, "max", s.n ? json_real(s.max) : json_null());
        json_object_set_new(obj, "mean", s.n ? json_real(mean) : json_null());
        int rc_dump = json_dumpf(obj, stdout, JSON_COMPACT);
        json_decref(obj);
        fputc('\n', stdout);
        fflush(stdout);
        return rc_dump == 0 ? 0 : H5S_EIO;
    }
    char shape[128];
    int len = 0;
    for (int d = 0; d < o.ndim; d++)
        len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%lld", d ? "x" : "",
                        (long long)o.shape[d]);
    printf("%s %" PRIu64 " obs_id=%.*s subject=%.*s shape=%s min=%.9g max=%.9g mean=%.9g\n", name,
           index, (int)sizeof o.obs_id, o.obs_id, (int)sizeof o.obs_subject_id, o.obs_subject_id,
           shape, s.min, s.max, mean);
    fflush(stdout);
    return 0;
}

int cli_tail_volumes(int argc, char **argv, const char *path)
{
    const char *file = NULL;
    int follow = 0, json = 0;
    uint64_t interval = 100, timeout = 0;
    int timeout_given = 0, npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int m;
        if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--follow") == 0) {
            follow = 1;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if ((m = opt_value(argc, argv, &i, "--interval", &v)) != 0) {
            if (m < 0 || cli_parse_u64(v, &interval) != 0 || interval == 0) {
                cli_errorf("tail: --interval: expected milliseconds >= 1");
                return CLI_EUSAGE;
            }
        } else if ((m = opt_value(argc, argv, &i, "--timeout", &v)) != 0) {
            if (m < 0 || cli_parse_u64(v, &timeout) != 0 || timeout > INT_MAX) {
                cli_errorf("tail: --timeout: expected milliseconds");
                return CLI_EUSAGE;
            }
            timeout_given = 1;
        } else if (argv[i][0] == '-') {
            cli_errorf("tail: unknown option '%s' for %s", argv[i], path);
            return CLI_EUSAGE;
        } else if (npos++ == 0) {
            file = argv[i];
        }
    }
    if (!file) {
        cli_errorf("tail: no file given");
        return CLI_EUSAGE;
    }
    const char *coll = NULL;
    if (strncmp(path, "/volumes/", 9) == 0 && path[9])
        coll = path + 9;
    h5s_reader_options o = H5S_READER_OPTIONS_INIT;
    o.poll_ms = (unsigned)interval;
    o.open_timeout_ms = timeout_given ? (int)timeout : follow ? 60000 : 0;
    h5s_volumes_reader *r = NULL;
    int rc = h5s_volumes_reader_open(&r, file, &o);
    if (rc) {
        cli_error_h5s("tail", rc);
        return CLI_EDATA;
    }
    size_t nc = h5s_volumes_reader_ncollections(r);
    uint64_t *seen = calloc(nc ? nc : 1, sizeof *seen);
    int status = CLI_OK;
    if (!seen) {
        cli_errorf("tail: out of memory");
        h5s_volumes_reader_close(r);
        return CLI_EDATA;
    }
    if (coll) {
        h5s_collection_desc d;
        if (h5s_volumes_reader_describe(r, coll, &d) != 0) {
            cli_errorf("tail: %s: no collection %s", file, coll);
            h5s_volumes_reader_close(r);
            free(seen);
            return CLI_EDATA;
        }
    }
    for (;;) {
        int grew = 0;
        for (size_t i = 0; i < nc && status == CLI_OK; i++) {
            const char *name = h5s_volumes_reader_collection(r, i);
            if (coll && strcmp(coll, name) != 0)
                continue;
            h5s_collection_desc d;
            uint64_t n = 0;
            rc = h5s_volumes_reader_refresh(r, name, &n);
            if (rc == 0)
                rc = h5s_volumes_reader_describe(r, name, &d);
            for (; rc == 0 && seen[i] < n; seen[i]++, grew = 1)
                rc = tail_one(r, name, seen[i], d.dtype, json);
            if (rc) {
                cli_error_h5s("tail", rc);
                status = CLI_EDATA;
            }
        }
        h5s_writer_state st = h5s_volumes_reader_state(r);
        if (!follow || status != CLI_OK || st == H5S_WRITER_CLOSED || st == H5S_WRITER_FAILED) {
            /* One more pass after a final state: the marker read before it may be stale. */
            if (follow && status == CLI_OK && !grew) {
                int more = 0;
                for (size_t i = 0; i < nc; i++) {
                    uint64_t n = 0;
                    const char *name = h5s_volumes_reader_collection(r, i);
                    if ((!coll || strcmp(coll, name) == 0) &&
                        h5s_volumes_reader_refresh(r, name, &n) == 0 && n > seen[i])
                        more = 1;
                }
                if (more)
                    continue;
            }
            if (st == H5S_WRITER_FAILED) {
                cli_errorf("tail: %s: the writer stopped after an error", file);
                status = CLI_EDATA;
            }
            break;
        }
        if (!grew) {
            struct timespec ts = {(time_t)(interval / 1000), (long)(interval % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    h5s_volumes_reader_close(r);
    free(seen);
    return status;
}

/* ---- bench ------------------------------------------------------------------------- */

/* A 256^3-style int16 test volume: smooth ramps plus noise, like an MR image's range. */
static void fill_volume(int16_t *v, uint64_t n, uint64_t seed)
{
    uint64_t s = seed * 2654435761u + 1;
    for (uint64_t z = 0; z < n; z++)
        for (uint64_t y = 0; y < n; y++)
            for (uint64_t x = 0; x < n; x++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                int r = (int)((s >> 33) & 63);
                v[(z * n + y) * n + x] = (int16_t)((x + y + z) * 4 + r);
            }
}

typedef struct {
    double seconds;
    double mb;
    long maxrss_kib;
    int ok;
} bench_result;

/* Writes nvol volumes of n^3 int16 into an h5stream file (mode 0) or as .nii files
 * (mode 1); returns seconds. */
static int bench_write(const char *dir, int mode, uint64_t n, int nvol, const char *codec,
                       bench_result *res)
{
    size_t nvox = (size_t)(n * n * n);
    int16_t *vol = malloc(nvox * 2);
    if (!vol)
        return -1;
    fill_volume(vol, n, 1);
    char path[PATH_MAX];
    double t0 = cli_now();
    int rc = 0;
    if (mode == 0) {
        snprintf(path, sizeof path, "%s/bench.h5", dir);
        h5s_file *f = NULL;
        h5s_volumes *v = NULL;
        h5s_collection *c = NULL;
        h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
        fo.queue_bytes = (size_t)8 << 20; /* below the data of 100 volumes: RSS shows the bound */
        h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
        co.dtype = H5S_INT16;
        co.shape[0] = co.shape[1] = co.shape[2] = n;
        h5s_codec_parse(&co.codec, codec);
        rc = h5s_file_create(&f, path, &fo);
        if (rc == 0)
            rc = h5s_volumes_create(&v, f, NULL, 0);
        if (rc == 0)
            rc = h5s_volumes_add_collection(&c, v, "bench", &co);
        if (rc == 0)
            rc = h5s_file_start_swmr(f);
        for (int i = 0; rc == 0 && i < nvol; i++) {
            char id[32];
            snprintf(id, sizeof id, "vol%05d", i);
            int64_t shape[3] = {(int64_t)n, (int64_t)n, (int64_t)n};
            h5s_volume_obs o;
            vol[0] = (int16_t)i;
            rc = h5s_volume_obs_init(&o, id, "s", "T1w", 3, shape, NULL, NULL);
            if (rc == 0)
                rc = h5s_collection_write_volume(c, vol, nvox * 2, &o, NULL);
        }
        int rc2 = f ? h5s_file_close(f) : 0;
        if (rc == 0)
            rc = rc2;
        h5s_volumes_free(v);
    } else {
        for (int i = 0; rc == 0 && i < nvol; i++) {
            snprintf(path, sizeof path, "%s/vol%05d.nii", dir, i);
            h5s_nifti_header h;
            int64_t shape[3] = {(int64_t)n, (int64_t)n, (int64_t)n};
            vol[0] = (int16_t)i;
            rc = h5s_nifti_header_init(&h, H5S_INT16, 3, shape);
            if (rc == 0)
                rc = h5s_nifti_write(path, &h, vol, NULL);
        }
    }
    sync();
    res->seconds = cli_now() - t0;
    res->mb = (double)nvox * 2 * nvol / 1e6;
    res->ok = rc == 0;
    if (rc)
        cli_error_h5s("bench", rc);
    free(vol);
    return rc;
}

typedef struct {
    const char *dir;
    int mode;
    uint64_t n;
    int nvol;
    const char *codec;
} bench_job;

static void bench_child_main(void *arg, void *res)
{
    const bench_job *job = arg;
    memset(res, 0, sizeof(bench_result));
    bench_write(job->dir, job->mode, job->n, job->nvol, job->codec, res);
}

/* Runs bench_write in a forked child: its own peak RSS and time. */
static int bench_child(const char *dir, int mode, uint64_t n, int nvol, const char *codec,
                       bench_result *res)
{
    bench_job job = {dir, mode, n, nvol, codec};
    struct rusage ru;
    char why[256];
    memset(res, 0, sizeof *res);
    if (bench_fork_run(bench_child_main, &job, res, sizeof *res, &ru, why, sizeof why)) {
        cli_errorf("bench: %s", why);
        return -1;
    }
    res->maxrss_kib = ru.ru_maxrss;
    return res->ok ? 0 : -1;
}

int cli_bench_volumes(int argc, char **argv)
{
    int quick = 0;
    const char *dir = NULL;
    const char *codec = "none";
    for (int i = 1; i < argc; i++) {
        const char *v;
        int m;
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if ((m = opt_value(argc, argv, &i, "--dir", &v)) != 0) {
            if (m < 0)
                return CLI_EUSAGE;
            dir = v;
        } else if ((m = opt_value(argc, argv, &i, "--compress", &v)) != 0) {
            h5s_codec c;
            if (m < 0 || h5s_codec_parse(&c, v) != 0) {
                cli_errorf("bench volumes: --compress '%s'", v ? v : "");
                return CLI_EUSAGE;
            }
            codec = v;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: h5stream bench volumes [--quick] [--dir DIR] [--compress SPEC]\n");
            return CLI_OK;
        } else {
            cli_errorf("bench volumes: unknown argument '%s'", argv[i]);
            return CLI_EUSAGE;
        }
    }
    char tmpl[] = "/tmp/h5s-bench-volumes-XXXXXX";
    if (!dir) {
        dir = mkdtemp(tmpl);
        if (!dir) {
            cli_errorf("bench volumes: mkdtemp: %s", strerror(errno));
            return CLI_EDATA;
        }
    }
    uint64_t n = quick ? 64 : 256;
    int nvol = quick ? 4 : 8;
    /* 128^3 int16 is 4.2 MB: 10 volumes already pass the 8 MiB queue budget, so both runs
     * hold a full queue and the ratio shows whether memory grows with the volume count. */
    uint64_t rss_n = quick ? 64 : 128;
    printf("bench volumes: %d volumes of %llu^3 int16 (%.1f MB each), codec %s, in %s\n", nvol,
           (unsigned long long)n, (double)(n * n * n * 2) / 1e6, codec, dir);
    bench_result h5, nii, r10, r100;
    int bad = 0;
    bad |= bench_child(dir, 0, n, nvol, codec, &h5) != 0;
    bad |= bench_child(dir, 1, n, nvol, codec, &nii) != 0;
    if (!bad) {
        printf("write: h5stream %.1f MB/s, libnifti2 .nii files %.1f MB/s; ratio %.2f\n",
               h5.mb / h5.seconds, nii.mb / nii.seconds,
               (h5.mb / h5.seconds) / (nii.mb / nii.seconds));
    }
    /* One axial slice: from the collection versus from a .nii.gz (gzip: read up to it). */
    char h5path[PATH_MAX], gzpath[PATH_MAX];
    snprintf(h5path, sizeof h5path, "%s/bench.h5", dir);
    snprintf(gzpath, sizeof gzpath, "%s/slice.nii.gz", dir);
    if (!bad) {
        size_t nvox = (size_t)(n * n * n);
        int16_t *vol = malloc(nvox * 2);
        h5s_nifti_header h;
        int64_t shape[3] = {(int64_t)n, (int64_t)n, (int64_t)n};
        int rc = vol ? 0 : -1;
        if (rc == 0) {
            fill_volume(vol, n, 1);
            rc = h5s_nifti_header_init(&h, H5S_INT16, 3, shape);
        }
        if (rc == 0)
            rc = h5s_nifti_write(gzpath, &h, vol, NULL);
        free(vol);
        uint64_t k = n / 2;
        int16_t *slice = malloc((size_t)(n * n * 2));
        double best_h5 = 1e9, best_gz = 1e9;
        for (int rep = 0; rc == 0 && slice && rep < 5; rep++) {
            double t0 = cli_now();
            h5s_volumes_reader *r = NULL;
            h5s_volume_obs o;
            h5s_volume_box b;
            rc = h5s_volumes_reader_open(&r, h5path, NULL);
            if (rc == 0)
                rc = h5s_volumes_reader_obs(r, "bench", 0, &o);
            if (rc == 0)
                rc = h5s_volume_box_slice(&b, &o, 2, k);
            if (rc == 0)
                rc = h5s_volumes_reader_read(r, "bench", 0, &b, slice, (size_t)(n * n * 2));
            h5s_volumes_reader_close(r);
            double t1 = cli_now();
            h5s_nifti_reader *nr = NULL;
            if (rc == 0)
                rc = h5s_nifti_open(&nr, gzpath, NULL);
            for (uint64_t s = 0; rc == 0 && s <= k; s++)
                rc = h5s_nifti_read_slices(nr, slice, (size_t)(n * n * 2), 1);
            h5s_nifti_close(nr);
            double t2 = cli_now();
            if (t1 - t0 < best_h5)
                best_h5 = t1 - t0;
            if (t2 - t1 < best_gz)
                best_gz = t2 - t1;
        }
        free(slice);
        if (rc == 0)
            printf("axial slice %llu: h5stream %.2f ms (open + read), .nii.gz %.2f ms (open + "
                   "decompress to it); ratio %.3f\n",
                   (unsigned long long)k, best_h5 * 1e3, best_gz * 1e3, best_h5 / best_gz);
        else {
            cli_error_h5s("bench volumes: slice", rc);
            bad = 1;
        }
    }
    bench_empty_dir(dir);
    bad |= bench_child(dir, 0, rss_n, 10, codec, &r10) != 0;
    bench_empty_dir(dir);
    bad |= bench_child(dir, 0, rss_n, 100, codec, &r100) != 0;
    if (!bad)
        printf("memory: peak RSS %.1f MB for 10 volumes of %llu^3, %.1f MB for 100; ratio %.2f\n",
               r10.maxrss_kib / 1024.0, (unsigned long long)rss_n, r100.maxrss_kib / 1024.0,
               (double)r100.maxrss_kib / (double)r10.maxrss_kib);
    bench_empty_dir(dir);
    if (dir == tmpl)
        rmdir(dir);
    if (bad) {
        cli_errorf("bench volumes: a run failed");
        return CLI_EDATA;
    }
    return CLI_OK;
}
