/*
 * cli.h - private to tools/: the subcommands of the h5stream command line and the small
 * helpers they share. The commands use the public headers only.
 *
 * Exit status of every command: 0 success, 1 data error (with the item and reason on
 * stderr), 2 usage error.
 */
#ifndef H5S_CLI_H
#define H5S_CLI_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "h5s_types.h"
#include "h5stream.h"

#define CLI_OK 0
#define CLI_EDATA 1
#define CLI_EUSAGE 2

/* Subcommands: argv[0] is the subcommand's own name ("tail"; "frames" for ingest). */
int cli_ingest(int argc, char **argv);
int cli_tail(int argc, char **argv);
int cli_info(int argc, char **argv);
int cli_recover(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_export(int argc, char **argv);

/*
 * The models' commands, one file each (cmd_tracts.c, cmd_volumes.c, cmd_marc.c).
 * ingest: argv[0] is the model name. export: argv[0] is "export" and fmt the --to value.
 * tail: argv[0] is "tail", path the dataset path that chose the model. bench: argv[0] is
 * the model name, options follow.
 */
int cli_ingest_tracts(int argc, char **argv);
int cli_ingest_volumes(int argc, char **argv);
int cli_ingest_marc(int argc, char **argv);
int cli_export_tracts(int argc, char **argv, const char *fmt);
int cli_export_volumes(int argc, char **argv, const char *fmt);
int cli_export_marc(int argc, char **argv, const char *fmt);
int cli_tail_tracts(int argc, char **argv, const char *path);
int cli_tail_volumes(int argc, char **argv, const char *path);
int cli_tail_marc(int argc, char **argv, const char *path);
int cli_bench_tracts(int argc, char **argv);
int cli_bench_volumes(int argc, char **argv);
int cli_bench_marc(int argc, char **argv);
/* `bench frames --ranks N` (tools/shard_bench.c): argv[0] is "frames". */
int cli_bench_frames_ranks(int argc, char **argv);

/*
 * SIGINT and SIGTERM for the ingest commands: cli_signals_catch installs a handler that
 * sets cli_stop_flag and cli_stop_signal, which the commands' loops poll between items,
 * and restores the default action, so a second signal while the file is being closed
 * kills at once (`h5stream recover` then saves what was committed). No SA_RESTART: a
 * read or a rate sleep that a signal interrupts returns early.
 * cli_signals_block blocks both in the calling thread (old: the mask before), so the
 * engine's threads started next inherit the block and only this thread sees them once it
 * restores old.
 */
extern volatile sig_atomic_t cli_stop_flag;
extern volatile sig_atomic_t cli_stop_signal;
void cli_signals_catch(void);
void cli_signals_block(sigset_t *old);

/*
 * The engine options every ingest command takes (DESIGN.md section 5), with one set of
 * limits and messages: name is "--threads" (encoder threads, 0 = one per core, up to
 * 256), "--queue-mb" (>= 1), "--flush-every" (items, 0 = off) or "--flush-ms"
 * (milliseconds, 0 = off); value its text. Returns 0 with fo set, CLI_EUSAGE after
 * printing why the value is bad, or -1 when name is none of these.
 */
int cli_engine_option(const char *name, const char *value, h5s_file_options *fo);

/* Prints "h5stream: " + the formatted message, then the usage text (a newline added if it
 * has none), on stderr; returns CLI_EUSAGE. */
int cli_usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "h5stream: " + the formatted message + newline on stderr. */
void cli_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints the last h5s error: "h5stream: WHAT: <short text>: <detail>". */
void cli_error_h5s(const char *what, int code);

/* The innermost description on this thread's HDF5 error stack ("" if none), which it
 * then clears: the reason behind a failed HDF5 call, for a message. */
void cli_hdf5_reason(char *out, size_t outsize);

/* Parses "512x512", "16", "4x256x256" (1 to 3 dims, each >= 1). 0 or -1 (message). */
int cli_parse_shape(const char *s, unsigned *rank, uint64_t dims[3]);

/* Parses a whole unsigned decimal (with optional k/M/G suffix = 10^3/10^6/10^9). */
int cli_parse_u64(const char *s, uint64_t *out);

/* Parses a finite double. 0 or -1. */
int cli_parse_double(const char *s, double *out);

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double cli_now(void);

/* 1 when stderr is a terminal (progress lines are shown only then). */
int cli_stderr_is_tty(void);

#endif
