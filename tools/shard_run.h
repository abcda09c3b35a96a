/*
 * shard_run.h - private to tools/: `h5stream ingest frames` as one of N sharded writers
 * (docs/shards.md). Finds the rank (--rank/--ranks, or Open MPI's environment under
 * mpirun), names the shard, and on rank 0 writes the live master at the start and the
 * final one once every shard has closed.
 */
#ifndef H5S_SHARD_RUN_H
#define H5S_SHARD_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_master.h"

#define SHARD_DEFAULT_TIMEOUT_MS 60000
/* After SIGINT/SIGTERM rank 0 waits at most this long for the other shards. */
#define SHARD_INTERRUPTED_TIMEOUT_MS 5000

typedef struct {
    int sharded;           /* 1: write a shard (and on rank 0 the master) */
    int rank_given;        /* --rank given */
    int ranks_given;       /* --ranks given */
    uint32_t rank;         /* this process's rank */
    uint32_t ranks;        /* N */
    uint64_t block;        /* B; 0 = not given (then frames per chunk) */
    unsigned timeout_ms;   /* rank 0: give up on a shard silent for this long */
    const char *from;      /* where the rank came from: "--rank" or "mpirun" */
    char shard_path[4096]; /* this rank's file */
} shard_args;

/*
 * Decides whether this run is sharded, from --rank/--ranks (given in s) or else
 * OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE, and fills rank, ranks and shard_path for
 * the master at output. Returns 0, or CLI_EUSAGE after printing why (only one of --rank
 * and --ranks, a rank not below ranks, a malformed environment, a path too long).
 */
int shard_resolve(shard_args *s, const char *output);

/* Rank 0: writes the live master (h5s_master_create). Returns 0 or CLI_EDATA (printed). */
int shard_master_begin(const shard_args *s, const char *master, const h5s_master_options *mo);

/*
 * Rank 0, after closing its own shard: polls every shard's /h5stream/writer until it
 * says closed (1) or failed (2), then rewrites the master with exact counts
 * (h5s_master_finalize). total: the stream's global frame count when known
 * (UINT64_MAX otherwise): a closed shard whose count differs and whose last commit is
 * older than started_wall (seconds since the epoch) is left from an earlier run, and
 * waited for. A shard whose status does not change for timeout_ms (or
 * SHARD_INTERRUPTED_TIMEOUT_MS when interrupted) is given up: the master stays live and
 * the message says which shard to recover.
 * out_frames: the final master's frame count. Returns 0 or CLI_EDATA (printed).
 */
int shard_master_end(const shard_args *s, const char *master, const h5s_master_options *mo,
                     uint64_t total, double started_wall, int interrupted, uint64_t *out_frames);

/* Seconds since the epoch (CLOCK_REALTIME), the status rows' clock. */
double shard_wall_now(void);

#endif
