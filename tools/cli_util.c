/* cli_util.c - helpers shared by the h5stream subcommands (declared in cli.h). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <hdf5.h>
#include <signal.h>
#include <pthread.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

void cli_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    /* One buffered write, so that the line is not interleaved with the progress line or
     * another process's output on the same terminal. */
    char line[4096];
    int n = snprintf(line, sizeof line, "h5stream: ");
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

void cli_error_h5s(const char *what, int code)
{
    const char *detail = h5s_error_message();
    if (detail && detail[0])
        cli_errorf("%s: %s: %s", what, h5s_strerror(code), detail);
    else
        cli_errorf("%s: %s", what, h5s_strerror(code));
}

/* Parses one decimal size >= 1 from *s, leaving *s after it. strtoull alone would accept
 * signs, spaces and "0x", none of which belong in a shape. */
static int parse_dim(const char **s, uint64_t *out)
{
    const char *p = *s;
    if (!isdigit((unsigned char)*p))
        return -1;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v == 0)
        return -1;
    *out = v;
    *s = p;
    return 0;
}

int cli_parse_shape(const char *s, unsigned *rank, uint64_t dims[3])
{
    uint64_t d[3] = {0, 0, 0};
    unsigned n = 0;
    const char *p = s ? s : "";
    for (;;) {
        if (n == 3 || parse_dim(&p, &d[n]) != 0)
            goto bad;
        n++;
        if (*p == '\0')
            break;
        if (*p != 'x')
            goto bad;
        p++;
    }
    *rank = n;
    memcpy(dims, d, sizeof d);
    return 0;
bad:
    cli_errorf("bad shape '%s': expected 1 to 3 sizes >= 1 joined by 'x' (1024, 512x512, "
               "4x256x256)",
               s ? s : "");
    return -1;
}

int cli_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)s[0]))
        return -1;
    uint64_t v = 0;
    const char *p = s;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    uint64_t mult = 1;
    if (*p == 'k')
        mult = 1000;
    else if (*p == 'M')
        mult = 1000000;
    else if (*p == 'G')
        mult = 1000000000;
    if (mult != 1)
        p++;
    if (*p != '\0' || (v != 0 && v > UINT64_MAX / mult))
        return -1;
    *out = v * mult;
    return 0;
}

int cli_parse_double(const char *s, double *out)
{
    if (!s || !s[0] || isspace((unsigned char)s[0]))
        return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cli_stderr_is_tty(void)
{
    return isatty(STDERR_FILENO) ? 1 : 0;
}

static herr_t keep_innermost(unsigned n, const H5E_error2_t *e, void *payload)
{
    (void)n;
    char **out = payload;
    if (e->desc && e->desc[0])
        snprintf(out[0], (size_t)(out[1] - out[0]), "%s", e->desc);
    return 0;
}

void cli_hdf5_reason(char *out, size_t outsize)
{
    char *span[2] = {out, out + outsize};
    out[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, keep_innermost, span);
    H5Eclear2(H5E_DEFAULT);
}

volatile sig_atomic_t cli_stop_flag = 0;
volatile sig_atomic_t cli_stop_signal = 0;

static void on_stop_signal(int sig)
{
    cli_stop_flag = 1;
    cli_stop_signal = sig;
    signal(sig, SIG_DFL);
}

void cli_signals_catch(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void cli_signals_block(sigset_t *old)
{
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, old);
}

int cli_usage_error(const char *usage, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_errorf("%s", msg);
    size_t n = strlen(usage);
    fprintf(stderr, "%s%s", usage, n && usage[n - 1] == '\n' ? "" : "\n");
    return CLI_EUSAGE;
}

int cli_engine_option(const char *name, const char *value, h5s_file_options *fo)
{
    uint64_t v = 0;
    int bad = cli_parse_u64(value, &v) != 0;
    if (strcmp(name, "--threads") == 0) {
        if (bad || v > 256) {
            cli_errorf("--threads: expected 0 (one per core) to 256 encoder threads, got '%s'",
                       value);
            return CLI_EUSAGE;
        }
        fo->encode_threads = (int)v;
    } else if (strcmp(name, "--queue-mb") == 0) {
        if (bad || v == 0 || v > (SIZE_MAX >> 20)) {
            cli_errorf("--queue-mb: expected a whole number of MiB >= 1, got '%s'", value);
            return CLI_EUSAGE;
        }
        fo->queue_bytes = (size_t)v << 20;
    } else if (strcmp(name, "--flush-every") == 0) {
        if (bad) {
            cli_errorf("--flush-every: expected a whole number of items (0: off), got '%s'", value);
            return CLI_EUSAGE;
        }
        fo->flush_every = v;
    } else if (strcmp(name, "--flush-ms") == 0) {
        if (bad || v > UINT_MAX) {
            cli_errorf("--flush-ms: expected a whole number of milliseconds (0: off), got '%s'",
                       value);
            return CLI_EUSAGE;
        }
        fo->flush_ms = (unsigned)v;
    } else {
        return -1;
    }
    return 0;
}
