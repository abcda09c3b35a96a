/* frame_source.c - the frame sources of `h5stream ingest frames` (frame_source.h). */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "frame_source.h"
#include "h5s_codec.h"
#include "h5s_format.h"

typedef enum { SRC_SIM, SRC_RAMP, SRC_RAW, SRC_H5 } source_kind;

/* ---- random numbers: xoshiro256** (Blackman & Vigna), seeded through splitmix64 ---- */

typedef struct {
    uint64_t s[4];
} rng_state;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(rng_state *r, uint64_t seed)
{
    /* splitmix64 never yields four zero words, the one state xoshiro cannot leave. */
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(rng_state *r)
{
    uint64_t *s = r->s;
    const uint64_t result = rotl64(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform on [0, 1) with 53 random bits. */
static inline double rng_uniform(rng_state *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- Poisson sampling ----
 * Each pixel's mean is turned once into the constants its sampler needs, so that a frame
 * replayed many times (the main use: one real frame resampled thousands of times) costs
 * only the draws. Small means use inversion by sequential search (one uniform, about
 * mean steps); from 10 up, Hoermann's PTRS transformed rejection (1993), as numpy does,
 * which takes about three draws in four without a logarithm. */

typedef enum {
    PS_KEEP = 0, /* negative (masked) or NaN: the value is passed through */
    PS_ZERO,
    PS_INVERSION,
    PS_PTRS
} poisson_method;

typedef struct {
    double lam;
    double c; /* inversion: exp(-lam); PTRS: a */
    double b; /* PTRS constants from here on */
    double vr;
    double invalpha;
    double loglam;
    int method;
} poisson_param;

#define PTRS_MIN_MEAN 10.0
/* Means beyond this are passed through: the noise is below double precision anyway, and
 * PTRS's integer arithmetic would overflow int64. */
#define POISSON_MAX_MEAN 4.0e18

/* 1/k for the inversion steps and log(k!) for PTRS, filled once: a division or an lgamma
 * per draw would cost more than the rest of the draw. log(k!) is tabulated up to 4096
 * (32 KiB), which covers most pixels of real photon-counting frames. */
#define INV_K_TABLE 128
#define LOG_FACT_TABLE 4096
static double inv_k[INV_K_TABLE];
static double log_fact[LOG_FACT_TABLE];

static void poisson_tables_init(void)
{
    if (inv_k[1] != 0.0)
        return;
    for (int k = 1; k < INV_K_TABLE; k++)
        inv_k[k] = 1.0 / k;
    for (int k = 1; k < LOG_FACT_TABLE; k++)
        log_fact[k] = log_fact[k - 1] + log((double)k);
}

/* log(k!) for integral k >= 0: the table, then Stirling's series for log Gamma(k + 1),
 * whose first omitted term, 1 / (1680 x^7), is below 1e-28 from k = 4096 on. */
static inline double log_factorial(double k)
{
    if (k < LOG_FACT_TABLE)
        return log_fact[(int)k];
    double x = k + 1.0, r = 1.0 / x, r2 = r * r;
    return (x - 0.5) * log(x) - x + 0.91893853320467274178 +
           r * (1.0 / 12.0 - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0)));
}

static void poisson_prepare(poisson_param *p, double lam)
{
    memset(p, 0, sizeof *p);
    p->lam = lam;
    if (!(lam >= 0.0) || lam > POISSON_MAX_MEAN) {
        p->method = PS_KEEP;
    } else if (lam == 0.0) {
        p->method = PS_ZERO;
    } else if (lam < PTRS_MIN_MEAN) {
        p->method = PS_INVERSION;
        p->c = exp(-lam);
    } else {
        double slam = sqrt(lam);
        p->method = PS_PTRS;
        p->b = 0.931 + 2.53 * slam;
        p->c = -0.059 + 0.02483 * p->b;
        p->invalpha = 1.1239 + 1.1328 / (p->b - 3.4);
        p->vr = 0.9277 - 3.6224 / (p->b - 2.0);
        p->loglam = log(lam);
    }
}

static inline double poisson_inversion(rng_state *r, const poisson_param *p)
{
    double u = rng_uniform(r);
    double term = p->c, cdf = term;
    int k = 0;
    /* The bound only matters when rounding leaves the summed cdf just below u. */
    while (u > cdf && k < INV_K_TABLE - 1) {
        k++;
        term *= p->lam * inv_k[k];
        cdf += term;
    }
    return (double)k;
}

static inline double poisson_ptrs(rng_state *r, const poisson_param *p)
{
    for (;;) {
        /* Both uniforms from one word: 32 bits each are plenty for an acceptance test,
         * and the generator is a fair share of the cost. */
        uint64_t bits = rng_next(r);
        double u = (double)(bits >> 32) * 0x1.0p-32 - 0.5;
        double v = (double)(bits & 0xffffffffu) * 0x1.0p-32;
        double us = 0.5 - fabs(u);
        double inv_us = 1.0 / us;
        double x = (2.0 * p->c * inv_us + p->b) * u + p->lam + 0.43;
        /* Also rejects the -inf of us == 0. Truncation is floor from here on. */
        if (!(x >= 0.0))
            continue;
        double k = (double)(int64_t)x;
        if (us >= 0.07 && v <= p->vr)
            return k;
        if (us < 0.013 && v > us)
            continue;
        /* Hoermann's test log(v) + log(invalpha) - log(a / us^2 + b) <= log(f(k)), with
         * the three logarithms on the left folded into one. */
        if (log(v * p->invalpha / (p->c * inv_us * inv_us + p->b)) <=
            -p->lam + k * p->loglam - log_factorial(k))
            return k;
    }
}

/* Draws n values, out[i] ~ Poisson(params[i].lam); a kept pixel's value is keep[i] (its
 * mean when keep is NULL). */
static void poisson_row(rng_state *rs, const poisson_param *params, const double *keep, double *out,
                        size_t n)
{
    /* A local copy of the generator state stays in registers; stores through out could
     * otherwise alias it. */
    rng_state r = *rs;
    for (size_t i = 0; i < n; i++) {
        const poisson_param *p = &params[i];
        switch (p->method) {
        case PS_INVERSION:
            out[i] = poisson_inversion(&r, p);
            break;
        case PS_PTRS:
            out[i] = poisson_ptrs(&r, p);
            break;
        case PS_ZERO:
            out[i] = 0.0;
            break;
        default:
            out[i] = keep ? keep[i] : p->lam;
            break;
        }
    }
    *rs = r;
}

/* Saturating conversions, as a counting detector saturates and as HDF5's own
 * conversions do; NaN becomes 0 in integer types. */
#define STORE_INT(T, LO, HI, LO_D, HI_D)                                                           \
    do {                                                                                           \
        T *o = (T *)buf + at;                                                                      \
        for (size_t i = 0; i < n; i++) {                                                           \
            double x = v[i];                                                                       \
            o[i] = x != x ? (T)0 : x <= (LO_D) ? (LO) : x >= (HI_D) ? (HI) : (T)x;                 \
        }                                                                                          \
    } while (0)

/* Stores n doubles as elements at..at+n-1 of a buffer of dtype t. */
static void store_values(void *buf, size_t at, h5s_dtype t, const double *v, size_t n)
{
    switch (t) {
    case H5S_INT8:
        STORE_INT(int8_t, INT8_MIN, INT8_MAX, INT8_MIN, INT8_MAX);
        break;
    case H5S_UINT8:
        STORE_INT(uint8_t, 0, UINT8_MAX, 0, UINT8_MAX);
        break;
    case H5S_INT16:
        STORE_INT(int16_t, INT16_MIN, INT16_MAX, INT16_MIN, INT16_MAX);
        break;
    case H5S_UINT16:
        STORE_INT(uint16_t, 0, UINT16_MAX, 0, UINT16_MAX);
        break;
    case H5S_INT32:
        STORE_INT(int32_t, INT32_MIN, INT32_MAX, INT32_MIN, INT32_MAX);
        break;
    case H5S_UINT32:
        STORE_INT(uint32_t, 0, UINT32_MAX, 0, UINT32_MAX);
        break;
    case H5S_INT64:
        /* 2^63 is the first double past INT64_MAX. */
        STORE_INT(int64_t, INT64_MIN, INT64_MAX, -0x1p63, 0x1p63);
        break;
    case H5S_UINT64:
        STORE_INT(uint64_t, 0, UINT64_MAX, 0, 0x1p64);
        break;
    case H5S_FLOAT32:
        for (size_t i = 0; i < n; i++)
            ((float *)buf)[at + i] = (float)v[i];
        break;
    case H5S_FLOAT64:
        memcpy((double *)buf + at, v, n * sizeof *v);
        break;
    case H5S_FLOAT16:
        /* Through float32, which h5s_half_from_float takes (draws are integers, exact). */
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)buf)[at + i] = h5s_half_from_float((float)v[i]);
        break;
    default:
        break;
    }
}

/* Poisson frames are drawn a row of this many values at a time into a scratch buffer
 * that stays in L1, then converted to the dtype. */
#define POISSON_ROW 2048

static void poisson_fill(rng_state *rs, const poisson_param *params, const double *keep, void *buf,
                         size_t at, h5s_dtype t, size_t n)
{
    double row[POISSON_ROW];
    for (size_t i = 0; i < n; i += POISSON_ROW) {
        size_t m = n - i < POISSON_ROW ? n - i : POISSON_ROW;
        poisson_row(rs, params + i, keep ? keep + i : NULL, row, m);
        store_values(buf, at + i, t, row, m);
    }
}

/* ---- the source ---- */

struct frame_source {
    source_kind kind;
    h5s_dtype dtype;
    unsigned rank;
    uint64_t dims[3];
    size_t frame_elems;
    size_t frame_bytes;
    uint64_t count;    /* global frames: the stream is frames 0 .. count-1 */
    uint64_t produced; /* frames handed out by this source (its shard's, when sharded) */
    uint64_t next;     /* global number of the next frame this source hands out */
    uint64_t last;     /* global number of the frame handed out last */
    uint64_t seed;
    uint32_t shard_rank, shard_ranks;
    uint64_t shard_block;
    double rate;
    double t0;
    volatile sig_atomic_t *stop;
    rng_state rng;

    /* h5 --poisson: one per element of the cached source frame. */
    poisson_param *params;
    size_t nparams;
    struct sim_tables *sim;
    size_t plane; /* sim: elements of one frame plane */

    /* raw */
    char *path; /* raw and h5: the input file (NULL for stdin) */
    FILE *fp;
    uint64_t offset;

    /* h5 */
    char *dataset;
    hid_t h5file, dset, fspace, mspace, memtype;
    unsigned h5rank;
    uint64_t h5frames;
    int poisson;
    void *cache; /* the last source frame read (dtype, or double with --poisson) */
    uint64_t cached_index;
};

static int stop_requested(const frame_source *s)
{
    return s->stop && *s->stop;
}

static int set_shape(frame_source *s, unsigned rank, const uint64_t *dims)
{
    size_t esize = h5s_dtype_size(s->dtype);
    size_t elems = 1;
    s->rank = rank;
    for (unsigned i = 0; i < 3; i++)
        s->dims[i] = i < rank ? dims[i] : 0;
    for (unsigned i = 0; i < rank; i++) {
        if (dims[i] == 0 || dims[i] > SIZE_MAX / elems)
            goto too_big;
        elems *= (size_t)dims[i];
    }
    if (elems > SIZE_MAX / esize)
        goto too_big;
    s->frame_elems = elems;
    s->frame_bytes = elems * esize;
    return 0;
too_big:
    cli_errorf("frame shape too large for memory");
    return FRAME_SOURCE_EUSAGE;
}

/* The mean photon count of a pixel of the synthetic detector: a few photons of
 * background falling off from the beam, a shadowed beam stop, and six textured powder
 * rings, so that compression sees what it sees on real photon-counting data. */
static double sim_mean(double y, double x, double h, double w)
{
    double cy = 0.42 * h, cx = 0.38 * w;
    double size = h > w ? h : w;
    double dy = y - cy, dx = x - cx;
    double r = sqrt(dy * dy + dx * dx);
    double phi = atan2(dy, dx);
    double mean = 0.6 + 2.0 * exp(-r / (0.35 * size));
    double width = 1.2 + 0.006 * size;
    for (int k = 1; k <= 6; k++) {
        double rk = 0.11 * k * size;
        double peak = 40.0 / pow(k, 0.7);
        double texture = 1.0 + 0.35 * cos(2.0 * phi + k);
        double d = (r - rk) / width;
        mean += peak * texture * exp(-0.5 * d * d);
    }
    if (r < 0.035 * size)
        mean *= 0.02;
    return mean;
}

/* The synthetic detector draws from precomputed tables rather than with the general
 * samplers: each pixel's mean is rounded to one of 256 levels, lambda = (l / 16)^2
 * (steps of 1/32 in sqrt(lambda), a sixteenth of the Poisson noise there, so invisible
 * in the counts), and each level has a Walker/Vose alias table over 0..K-1 with K a power
 * of two past lambda + 10 sqrt(lambda) + 12 (the tail cut off is below 1e-20). A draw is
 * then one random word and two loads, with no branch to mispredict. */
#define SIM_LEVELS 256

typedef struct {
    const uint32_t *thresh; /* keep column j when the low 32 bits are below thresh[j] */
    const uint16_t *alias;  /* else draw alias[j] */
    unsigned shift;         /* column j = the word's top (64 - shift) bits */
} sim_level;

struct sim_tables {
    sim_level level[SIM_LEVELS];
    uint32_t *thresh;
    uint16_t *alias;
    uint8_t *pixel_level; /* per pixel of a frame plane */
};

static void sim_tables_free(struct sim_tables *t)
{
    if (!t)
        return;
    free(t->thresh);
    free(t->alias);
    free(t->pixel_level);
    free(t);
}

static unsigned sim_level_bits(unsigned l)
{
    double lam = (l / 16.0) * (l / 16.0);
    double need = lam + 10.0 * sqrt(lam) + 12.0;
    unsigned bits = 4;
    while ((double)(1u << bits) < need)
        bits++;
    return bits;
}

/* Vose's alias method for Poisson(lam) truncated to 0..K-1 and renormalized. */
static void sim_alias_build(double lam, unsigned k_count, uint32_t *thresh, uint16_t *alias,
                            double *q, unsigned *small, unsigned *large)
{
    double term = exp(-lam), sum = 0.0;
    for (unsigned k = 0; k < k_count; k++) {
        q[k] = term;
        sum += term;
        term *= lam / (k + 1);
    }
    unsigned ns = 0, nl = 0;
    for (unsigned k = 0; k < k_count; k++) {
        q[k] *= k_count / sum;
        if (q[k] < 1.0)
            small[ns++] = k;
        else
            large[nl++] = k;
    }
    while (ns > 0 && nl > 0) {
        unsigned lo = small[--ns], hi = large[nl - 1];
        thresh[lo] = (uint32_t)(q[lo] * 4294967296.0);
        alias[lo] = (uint16_t)hi;
        q[hi] = (q[hi] + q[lo]) - 1.0;
        if (q[hi] < 1.0) {
            nl--;
            small[ns++] = hi;
        }
    }
    /* What is left has q = 1 up to rounding: always keep the column. */
    while (nl > 0) {
        unsigned k = large[--nl];
        thresh[k] = UINT32_MAX;
        alias[k] = (uint16_t)k;
    }
    while (ns > 0) {
        unsigned k = small[--ns];
        thresh[k] = UINT32_MAX;
        alias[k] = (uint16_t)k;
    }
}

static int sim_prepare(frame_source *s)
{
    /* A 3-D frame [D, H, W] repeats one H x W plane; a 1-D frame is a single row. */
    size_t h = s->rank >= 2 ? (size_t)s->dims[s->rank - 2] : 1;
    size_t w = (size_t)s->dims[s->rank - 1];
    struct sim_tables *t = calloc(1, sizeof *t);
    size_t total = 0;
    unsigned max_k = 1u << sim_level_bits(SIM_LEVELS - 1);
    for (unsigned l = 0; l < SIM_LEVELS; l++)
        total += (size_t)1 << sim_level_bits(l);
    double *q = malloc(max_k * sizeof *q);
    unsigned *work = malloc(2 * max_k * sizeof *work);
    s->sim = t;
    s->plane = h * w;
    if (t) {
        t->thresh = malloc(total * sizeof *t->thresh);
        t->alias = malloc(total * sizeof *t->alias);
        t->pixel_level = malloc(s->plane);
    }
    if (!t || !t->thresh || !t->alias || !t->pixel_level || !q || !work) {
        free(q);
        free(work);
        cli_errorf("sim: out of memory for a %zu x %zu frame", h, w);
        return FRAME_SOURCE_EDATA;
    }
    size_t at = 0;
    for (unsigned l = 0; l < SIM_LEVELS; l++) {
        unsigned bits = sim_level_bits(l);
        sim_alias_build((l / 16.0) * (l / 16.0), 1u << bits, t->thresh + at, t->alias + at, q, work,
                        work + max_k);
        t->level[l].thresh = t->thresh + at;
        t->level[l].alias = t->alias + at;
        t->level[l].shift = 64 - bits;
        at += (size_t)1 << bits;
    }
    free(q);
    free(work);
    for (size_t y = 0; y < h; y++) {
        for (size_t x = 0; x < w; x++) {
            double l =
                floor(16.0 * sqrt(sim_mean((double)y, (double)x, (double)h, (double)w)) + 0.5);
            t->pixel_level[y * w + x] = (uint8_t)(l < SIM_LEVELS - 1 ? l : SIM_LEVELS - 1);
        }
    }
    return 0;
}

static void sim_row(rng_state *rs, const struct sim_tables *t, const uint8_t *pixel_level,
                    double *out, size_t n)
{
    rng_state r = *rs;
    for (size_t i = 0; i < n; i++) {
        const sim_level *lv = &t->level[pixel_level[i]];
        uint64_t x = rng_next(&r);
        uint32_t j = (uint32_t)(x >> lv->shift);
        out[i] = (uint32_t)x < lv->thresh[j] ? j : lv->alias[j];
    }
    *rs = r;
}

/* Every random frame draws from its own stream, seeded by (seed, frame number), so a
 * shard that makes only some frames makes them as a single writer would. */
static void seed_frame(frame_source *s, uint64_t frame)
{
    uint64_t x = s->seed;
    rng_seed(&s->rng, splitmix64(&x) ^ frame);
}

static void sim_fill(frame_source *s, void *buf)
{
    double row[POISSON_ROW];
    for (size_t at = 0; at < s->frame_elems; at += s->plane) {
        for (size_t i = 0; i < s->plane; i += POISSON_ROW) {
            size_t m = s->plane - i < POISSON_ROW ? s->plane - i : POISSON_ROW;
            sim_row(&s->rng, s->sim, s->sim->pixel_level + i, row, m);
            store_values(buf, at + i, s->dtype, row, m);
        }
    }
}

static void ramp_fill(const frame_source *s, void *buf, uint64_t frame)
{
    /* Unsigned truncation gives the two's complement bits that docs/cli.md specifies for
     * signed types too. */
    uint64_t base = frame * 7919u;
    size_t n = s->frame_elems;
    switch (s->dtype) {
    case H5S_INT8:
    case H5S_UINT8:
        for (size_t p = 0; p < n; p++)
            ((uint8_t *)buf)[p] = (uint8_t)(base + p);
        break;
    case H5S_INT16:
    case H5S_UINT16:
        for (size_t p = 0; p < n; p++)
            ((uint16_t *)buf)[p] = (uint16_t)(base + p);
        break;
    case H5S_INT32:
    case H5S_UINT32:
        for (size_t p = 0; p < n; p++)
            ((uint32_t *)buf)[p] = (uint32_t)(base + p);
        break;
    case H5S_INT64:
    case H5S_UINT64:
        for (size_t p = 0; p < n; p++)
            ((uint64_t *)buf)[p] = base + p;
        break;
    case H5S_FLOAT32:
        for (size_t p = 0; p < n; p++)
            ((float *)buf)[p] = (float)((base + p) & 0xffffu);
        break;
    case H5S_FLOAT64:
        for (size_t p = 0; p < n; p++)
            ((double *)buf)[p] = (double)((base + p) & 0xffffu);
        break;
    case H5S_FLOAT16:
        /* float16 holds integers exactly up to 2048; beyond, the nearest one (numpy's
         * float16(x)), and infinity from 65520 on. */
        for (size_t p = 0; p < n; p++)
            ((uint16_t *)buf)[p] = h5s_half_from_float((float)((base + p) & 0xffffu));
        break;
    default:
        break;
    }
}

/* ---- raw ---- */

static int raw_open(frame_source *s, const char *path)
{
    if (strcmp(path, "-") == 0) {
        s->fp = stdin;
        return 0;
    }
    s->path = strdup(path);
    if (!s->path)
        return FRAME_SOURCE_EDATA;
    s->fp = fopen(path, "rb");
    if (!s->fp) {
        cli_errorf("raw:%s: cannot open: %s", path, strerror(errno));
        return FRAME_SOURCE_EDATA;
    }
    return 0;
}

/* Reads up to one frame at s->offset into buf and sets *got to the bytes read (fewer only
 * where the input ends). Returns 1, 0 when stop was set while a read waited, or
 * FRAME_SOURCE_EDATA for a read error (printed). s->offset is left to the caller. */
static int raw_read(frame_source *s, void *buf, size_t *got)
{
    const char *name = s->path ? s->path : "-";
    *got = 0;
    while (*got < s->frame_bytes) {
        errno = 0;
        *got += fread((char *)buf + *got, 1, s->frame_bytes - *got, s->fp);
        if (*got == s->frame_bytes || feof(s->fp))
            break;
        if (ferror(s->fp)) {
            /* Signals are not restarted, so that Ctrl-C also ends a read that waits on a
             * pipe; any other interruption resumes the read where it stopped. */
            if (errno == EINTR) {
                clearerr(s->fp);
                if (stop_requested(s))
                    return 0;
                continue;
            }
            cli_errorf("raw:%s: read error at byte offset %llu: %s", name,
                       (unsigned long long)(s->offset + *got), strerror(errno));
            return FRAME_SOURCE_EDATA;
        }
    }
    return 1;
}

static int raw_next(frame_source *s, void *buf)
{
    size_t got;
    int rc = raw_read(s, buf, &got);
    if (rc != 1 || got == 0)
        return rc == 1 ? 0 : rc;
    if (got < s->frame_bytes) {
        cli_errorf("raw:%s: short last frame: frame %llu starts at byte offset %llu but the "
                   "input ends at byte offset %llu (%zu of %zu bytes)",
                   s->path ? s->path : "-", (unsigned long long)s->next,
                   (unsigned long long)s->offset, (unsigned long long)(s->offset + got), got,
                   s->frame_bytes);
        return FRAME_SOURCE_EDATA;
    }
    s->offset += got;
    return 1;
}

/* Passes over n frames of raw input that other shards own: a seek on a regular file, a
 * read into scratch otherwise. Returns 1, 0 (the input ends before this shard's next
 * frame: a short last frame among the ones passed over is its owner's error, not this
 * shard's) or FRAME_SOURCE_EDATA. */
static int raw_skip(frame_source *s, uint64_t n, void *scratch)
{
    struct stat st;
    if (n == 0)
        return 1;
    if (fstat(fileno(s->fp), &st) == 0 && S_ISREG(st.st_mode)) {
        /* This shard's next frame starts at offset + n x frame_bytes, compared without
         * overflow: n can be near 2^64 / frame_bytes with large blocks. */
        uint64_t size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
        uint64_t left = size > s->offset ? size - s->offset : 0;
        if (n >= left / s->frame_bytes + (left % s->frame_bytes != 0))
            return 0;
        off_t to = (off_t)(s->offset + n * s->frame_bytes);
        if (fseeko(s->fp, to, SEEK_SET) == 0) {
            s->offset = (uint64_t)to;
            return 1;
        }
    }
    for (uint64_t i = 0; i < n; i++) {
        size_t got;
        int rc = raw_read(s, scratch, &got);
        if (rc != 1 || got < s->frame_bytes)
            return rc == 1 ? 0 : rc;
        s->offset += got;
    }
    return 1;
}

/* ---- HDF5 ---- */

/* Splits FILE.h5:/dataset at the first ":/" whose left part is an existing file, so that
 * file names with colons still work. Returns 0, or FRAME_SOURCE_EDATA when no left part
 * exists (the message names the first candidate). */
static int h5_split(frame_source *s, const char *spec)
{
    const char *first = strstr(spec, ":/");
    for (const char *p = first; p; p = strstr(p + 1, ":/")) {
        char *file = strndup(spec, (size_t)(p - spec));
        struct stat st;
        if (!file)
            return FRAME_SOURCE_EDATA;
        if (stat(file, &st) == 0 && S_ISREG(st.st_mode)) {
            s->path = file;
            s->dataset = strdup(p + 1);
            return s->dataset ? 0 : FRAME_SOURCE_EDATA;
        }
        free(file);
    }
    char *file = strndup(spec, (size_t)(first - spec));
    struct stat st;
    int err = file && stat(file, &st) != 0 ? errno : EISDIR;
    cli_errorf("%s: cannot open '%s': %s", spec, file ? file : "", strerror(err));
    free(file);
    return FRAME_SOURCE_EDATA;
}

/* With chunks spanning several frames, reading frame by frame would decode each chunk
 * once per frame unless every chunk that one frame touches fits in the chunk cache. */
static hid_t h5_access_plist(hid_t dset, unsigned rank)
{
    hid_t dapl = H5I_INVALID_HID;
    hid_t dcpl = H5Dget_create_plist(dset);
    hsize_t chunk[H5S_MAX_RANK];
    hsize_t dims[H5S_MAX_RANK];
    hid_t space = H5Dget_space(dset);
    hid_t type = H5Dget_type(dset);
    if (dcpl < 0 || space < 0 || type < 0 || H5Pget_layout(dcpl) != H5D_CHUNKED ||
        H5Pget_chunk(dcpl, (int)rank, chunk) != (int)rank ||
        H5Sget_simple_extent_dims(space, dims, NULL) != (int)rank)
        goto done;
    double bytes = (double)H5Tget_size(type), chunks = 1.0;
    for (unsigned i = 0; i < rank; i++) {
        bytes *= (double)chunk[i];
        /* A 2-D dataset is one frame, read whole; otherwise axis 0 is one frame thick. */
        if (rank == 2 || i > 0)
            chunks *= ceil((double)dims[i] / (double)chunk[i]);
    }
    double need = bytes * chunks * 1.25;
    if (need <= 1024.0 * 1024.0)
        goto done;
    if (need > 1024.0 * 1024.0 * 1024.0)
        need = 1024.0 * 1024.0 * 1024.0;
    size_t nslots = chunks * 10 < 1009 ? 1009 : chunks * 10 < 10007 ? 10007 : 100003;
    dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0 && H5Pset_chunk_cache(dapl, nslots, (size_t)need, 1.0) < 0) {
        H5Pclose(dapl);
        dapl = H5I_INVALID_HID;
    }
done:
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    if (type >= 0)
        H5Tclose(type);
    return dapl;
}

static int h5_open(frame_source *s, const char *spec, const frame_source_options *o)
{
    int rc = h5_split(s, spec);
    if (rc != 0)
        return rc;
    /* The messages below say what went wrong; HDF5's own stack would only add noise. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    /* A Blosc-compressed source decodes with the filter h5stream registers. */
    h5s_filters_init();
    s->h5file = H5Fopen(s->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (s->h5file < 0) {
        cli_errorf("%s: cannot open '%s' as an HDF5 file", spec, s->path);
        return FRAME_SOURCE_EDATA;
    }
    s->dset = H5Dopen2(s->h5file, s->dataset, H5P_DEFAULT);
    if (s->dset < 0) {
        cli_errorf("%s: no dataset '%s' in %s", spec, s->dataset, s->path);
        return FRAME_SOURCE_EDATA;
    }
    s->fspace = H5Dget_space(s->dset);
    int rank = s->fspace >= 0 ? H5Sget_simple_extent_ndims(s->fspace) : -1;
    if (rank < 2 || rank > 4) {
        cli_errorf("%s: the dataset has rank %d; expected 2 (one frame), or 3 or 4 "
                   "([N, frame...])",
                   spec, rank);
        return FRAME_SOURCE_EDATA;
    }
    s->h5rank = (unsigned)rank;
    hid_t dapl = h5_access_plist(s->dset, s->h5rank);
    if (dapl >= 0) {
        H5Dclose(s->dset);
        s->dset = H5Dopen2(s->h5file, s->dataset, dapl);
        H5Pclose(dapl);
        if (s->dset < 0) {
            cli_errorf("%s: cannot reopen the dataset", spec);
            return FRAME_SOURCE_EDATA;
        }
    }
    hsize_t hd[4] = {0, 0, 0, 0};
    H5Sget_simple_extent_dims(s->fspace, hd, NULL);
    hid_t ftype = H5Dget_type(s->dset);
    h5s_dtype own = ftype >= 0 ? h5s_format_dtype_of(ftype) : H5S_DTYPE_INVALID;
    if (ftype >= 0)
        H5Tclose(ftype);
    if (own == H5S_DTYPE_INVALID) {
        cli_errorf("%s: unsupported element type (expected integers of 1 to 8 bytes, "
                   "float32 or float64)",
                   spec);
        return FRAME_SOURCE_EDATA;
    }
    /* --dtype converts through HDF5, which saturates out-of-range values. */
    s->dtype = o->dtype != H5S_DTYPE_INVALID ? o->dtype : own;

    unsigned frank = s->h5rank == 2 ? 2 : s->h5rank - 1;
    uint64_t fdims[3] = {0, 0, 0};
    for (unsigned i = 0; i < frank; i++)
        fdims[i] = hd[s->h5rank - frank + i];
    s->h5frames = s->h5rank == 2 ? 1 : hd[0];
    for (unsigned i = 0; i < frank; i++) {
        if (fdims[i] == 0) {
            cli_errorf("%s: the frames have an empty axis", spec);
            return FRAME_SOURCE_EDATA;
        }
    }
    if (o->rank != 0 && (o->rank != frank || memcmp(o->dims, fdims, frank * sizeof *fdims))) {
        cli_errorf("--shape does not match the frames of %s; leave it out to use theirs", spec);
        return FRAME_SOURCE_EUSAGE;
    }
    rc = set_shape(s, frank, fdims);
    if (rc != 0)
        return rc;

    uint64_t repeat = o->repeat ? o->repeat : 1;
    if (o->has_count)
        s->count = o->count;
    else
        s->count = s->h5frames > UINT64_MAX / repeat ? UINT64_MAX - 1 : s->h5frames * repeat;
    if (s->h5frames == 0 && s->count > 0) {
        cli_errorf("%s: the dataset has no frames", spec);
        return FRAME_SOURCE_EDATA;
    }

    hsize_t mdims[3] = {fdims[0], frank > 1 ? fdims[1] : 0, frank > 2 ? fdims[2] : 0};
    s->mspace = H5Screate_simple((int)frank, mdims, NULL);
    s->poisson = o->poisson;
    s->memtype = s->poisson ? H5T_NATIVE_DOUBLE : h5s_format_h5type(s->dtype);
    if (s->poisson && s->frame_elems > SIZE_MAX / sizeof(poisson_param)) {
        cli_errorf("%s: frames too large for memory", spec);
        return FRAME_SOURCE_EDATA;
    }
    s->cache = malloc(s->poisson ? s->frame_elems * sizeof(double) : s->frame_bytes);
    if (s->poisson)
        s->params = malloc(s->frame_elems * sizeof *s->params);
    if (s->mspace < 0 || !s->cache || (s->poisson && !s->params)) {
        cli_errorf("%s: out of memory", spec);
        return FRAME_SOURCE_EDATA;
    }
    s->nparams = s->poisson ? s->frame_elems : 0;
    s->cached_index = UINT64_MAX;
    return 0;
}

static int h5_read(frame_source *s, uint64_t index)
{
    hsize_t start[4] = {0, 0, 0, 0}, count[4];
    if (s->h5rank == 2) {
        if (H5Sselect_all(s->fspace) < 0)
            goto fail;
    } else {
        start[0] = index;
        count[0] = 1;
        for (unsigned i = 0; i < s->rank; i++)
            count[i + 1] = s->dims[i];
        if (H5Sselect_hyperslab(s->fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0)
            goto fail;
    }
    if (H5Dread(s->dset, s->memtype, s->mspace, s->fspace, H5P_DEFAULT, s->cache) < 0)
        goto fail;
    if (s->poisson) {
        const double *v = s->cache;
        for (size_t i = 0; i < s->frame_elems; i++)
            poisson_prepare(&s->params[i], v[i]);
    }
    s->cached_index = index;
    return 0;
fail:
    cli_errorf("%s:%s: cannot read frame %llu (HDF5 read failed)", s->path, s->dataset,
               (unsigned long long)index);
    return FRAME_SOURCE_EDATA;
}

static int h5_next(frame_source *s, void *buf)
{
    uint64_t index = s->next % s->h5frames;
    if (index != s->cached_index && h5_read(s, index) != 0)
        return FRAME_SOURCE_EDATA;
    if (!s->poisson) {
        memcpy(buf, s->cache, s->frame_bytes);
        return 1;
    }
    seed_frame(s, s->next);
    poisson_fill(&s->rng, s->params, s->cache, buf, 0, s->dtype, s->frame_elems);
    return 1;
}

/* ---- public ---- */

int frame_source_open(frame_source **out, const char *spec, const frame_source_options *opts)
{
    frame_source_options defaults = FRAME_SOURCE_OPTIONS_INIT;
    const frame_source_options *o = opts ? opts : &defaults;
    *out = NULL;
    frame_source *s = calloc(1, sizeof *s);
    if (!s) {
        cli_errorf("out of memory");
        return FRAME_SOURCE_EDATA;
    }
    s->h5file = s->dset = s->fspace = s->mspace = H5I_INVALID_HID;
    s->rate = o->rate;
    s->stop = o->stop;
    s->seed = o->seed;
    s->shard_rank = o->shard_rank;
    s->shard_ranks = o->shard_ranks ? o->shard_ranks : 1;
    s->shard_block = o->shard_block ? o->shard_block : 1;
    if (s->shard_rank >= s->shard_ranks) {
        cli_errorf("rank %u is not below the rank count %u", s->shard_rank, s->shard_ranks);
        free(s);
        return FRAME_SOURCE_EUSAGE;
    }
    /* Frame numbers go up by blocks of every rank: ranks x block frames must be countable,
     * or a shard's first frame (rank x block) and its next block wrap around. */
    if (s->shard_block > UINT64_MAX / s->shard_ranks) {
        cli_errorf("a block of %llu frames for each of %u ranks overflows the frame numbers",
                   (unsigned long long)s->shard_block, s->shard_ranks);
        free(s);
        return FRAME_SOURCE_EUSAGE;
    }
    /* A shard starts at the first frame of its first block. */
    s->next = (uint64_t)s->shard_rank * s->shard_block;
    rng_seed(&s->rng, o->seed);
    poisson_tables_init();

    if (strcmp(spec, "sim") == 0 || strcmp(spec, "sim:poisson") == 0)
        s->kind = SRC_SIM;
    else if (strcmp(spec, "sim:ramp") == 0)
        s->kind = SRC_RAMP;
    else if (strncmp(spec, "raw:", 4) == 0 && spec[4] != '\0')
        s->kind = SRC_RAW;
    else if (strncmp(spec, "sim:", 4) != 0 && strncmp(spec, "raw:", 4) != 0 &&
             strstr(spec, ":/") != NULL && spec[0] != ':')
        s->kind = SRC_H5;
    else {
        cli_errorf("unknown source '%s' (expected sim, sim:poisson, sim:ramp, raw:PATH, "
                   "raw:- or FILE.h5:/dataset)",
                   spec);
        free(s);
        return FRAME_SOURCE_EUSAGE;
    }

    int rc = 0;
    if (s->kind != SRC_H5 && (o->repeat != 0 || o->poisson)) {
        cli_errorf("%s only applies to FILE.h5:/dataset sources",
                   o->poisson ? "--poisson" : "--repeat");
        rc = FRAME_SOURCE_EUSAGE;
    } else if (s->kind == SRC_RAW && s->shard_ranks > 1 && strcmp(spec, "raw:-") == 0) {
        cli_errorf("raw:- cannot be sharded: each rank reads the input itself; give a file");
        rc = FRAME_SOURCE_EUSAGE;
    } else if (s->kind == SRC_RAW && (o->dtype == H5S_DTYPE_INVALID || o->rank == 0)) {
        cli_errorf("%s needs --dtype and --shape", spec);
        rc = FRAME_SOURCE_EUSAGE;
    } else if (s->kind == SRC_H5) {
        rc = h5_open(s, spec, o);
    } else {
        static const uint64_t sim_dims[2] = {512, 512};
        s->dtype = o->dtype != H5S_DTYPE_INVALID ? o->dtype : H5S_UINT16;
        rc = o->rank ? set_shape(s, o->rank, o->dims) : set_shape(s, 2, sim_dims);
        if (rc == 0 && s->kind == SRC_RAW) {
            s->count = o->has_count ? o->count : FRAME_SOURCE_UNTIL_END;
            rc = raw_open(s, spec + 4);
        } else if (rc == 0) {
            s->count = o->has_count ? o->count : 1000;
            if (s->kind == SRC_SIM)
                rc = sim_prepare(s);
        }
    }
    if (rc != 0) {
        frame_source_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* Sleeps until global frame s->next is due (frame f at f / rate after the start, so N
 * shards together keep the rate). Returns 0, or 1 if stop was asked. */
static int pace(frame_source *s)
{
    if (s->produced == 0)
        s->t0 = cli_now() - (double)s->next / s->rate;
    double due = s->t0 + (double)s->next / s->rate;
    /* cli_now() is CLOCK_MONOTONIC, so the deadline converts directly. */
    struct timespec ts;
    ts.tv_sec = (time_t)due;
    ts.tv_nsec = (long)((due - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_nsec = 999999999L;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        if (stop_requested(s))
            return 1;
    return 0;
}

int frame_source_next(frame_source *s, void *buf)
{
    if (s->next >= s->count || stop_requested(s))
        return 0;
    if (s->rate > 0.0 && pace(s) != 0)
        return 0;
    int rc = 1;
    switch (s->kind) {
    case SRC_SIM:
        seed_frame(s, s->next);
        sim_fill(s, buf);
        break;
    case SRC_RAMP:
        ramp_fill(s, buf, s->next);
        break;
    case SRC_RAW: {
        /* Raw input first moves past the frames other shards own. */
        uint64_t at = s->offset / s->frame_bytes;
        rc = at < s->next ? raw_skip(s, s->next - at, buf) : 1;
        if (rc == 1)
            rc = raw_next(s, buf);
        break;
    }
    case SRC_H5:
        rc = h5_next(s, buf);
        break;
    }
    if (rc != 1)
        return rc;
    s->produced++;
    s->last = s->next;
    /* On to this shard's next frame: the next in the block, or the next block's first. */
    uint64_t after = s->next + 1;
    if (s->shard_ranks > 1 && after % s->shard_block == 0) {
        uint64_t skip = s->shard_block * (s->shard_ranks - 1);
        after = skip > UINT64_MAX - after ? UINT64_MAX : after + skip;
    }
    s->next = after;
    return 1;
}

void frame_source_close(frame_source *s)
{
    if (!s)
        return;
    if (s->fp && s->fp != stdin)
        fclose(s->fp);
    if (s->mspace >= 0)
        H5Sclose(s->mspace);
    if (s->fspace >= 0)
        H5Sclose(s->fspace);
    if (s->dset >= 0)
        H5Dclose(s->dset);
    if (s->h5file >= 0)
        H5Fclose(s->h5file);
    free(s->params);
    sim_tables_free(s->sim);
    free(s->cache);
    free(s->path);
    free(s->dataset);
    free(s);
}

h5s_dtype frame_source_dtype(const frame_source *s)
{
    return s->dtype;
}

unsigned frame_source_rank(const frame_source *s)
{
    return s->rank;
}

const uint64_t *frame_source_dims(const frame_source *s)
{
    return s->dims;
}

size_t frame_source_frame_bytes(const frame_source *s)
{
    return s->frame_bytes;
}

uint64_t frame_source_count(const frame_source *s)
{
    return s->count;
}

uint64_t frame_source_index(const frame_source *s)
{
    return s->last;
}

const char *frame_source_file(const frame_source *s)
{
    return s->path;
}
