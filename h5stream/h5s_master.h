/*
 * h5s_master.h - sharded frames: N writer processes each own one ordinary SWMR shard file,
 * and a master file maps the shards into one logical dataset with HDF5 virtual datasets
 * (VDS). DESIGN.md section 6; the layout is in docs/shards.md.
 *
 * Frames are dealt round-robin in blocks of B: frame f belongs to rank (f / B) mod N and
 * is frame ((f / (N B)) B + f mod B) of that rank's shard. Shard r of master "DIR/run.h5"
 * is "DIR/run_r.h5" (the rank goes before the last extension).
 *
 * The master has two forms, both written whole to a temporary file then renamed over the
 * master's path, so a reader opening the path always finds a complete file:
 *   live   (h5s_master_create): per dataset, one strided unlimited mapping per shard;
 *          /h5stream/writer state 0. Readers open it with SWMR read, the view
 *          H5D_VDS_FIRST_MISSING, and reopen the datasets every poll.
 *   final  (h5s_master_finalize): fixed mappings with the exact counts of a gap-free
 *          prefix; /h5stream/writer state 1 (or 2). Any HDF5 reader sees the exact count.
 *
 * Every function here runs on the calling thread and uses HDF5 directly, so it must not
 * run while another thread calls a non-thread-safe HDF5 build (Debian's is thread-safe).
 */
#ifndef H5S_MASTER_H
#define H5S_MASTER_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_types.h"
#include "h5stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most shards a master may map (a shard count is also a process count). */
#define H5S_MASTER_MAX_RANKS 4096

/* Rank that owns global frame f. ranks >= 1, block >= 1. Pure. */
uint32_t h5s_shard_owner(uint64_t f, uint32_t ranks, uint64_t block);

/* Index, within its owner's shard, of global frame f. Pure. */
uint64_t h5s_shard_local(uint64_t f, uint32_t ranks, uint64_t block);

/* Global frame number of frame `local` of rank's shard. Pure. */
uint64_t h5s_shard_global(uint64_t local, uint32_t rank, uint32_t ranks, uint64_t block);

/* How many of the global frames [0, total) rank owns. Pure. */
uint64_t h5s_shard_count(uint64_t total, uint32_t rank, uint32_t ranks, uint64_t block);

/*
 * Length of the gap-free prefix when shard r holds counts[r] frames: the first global
 * frame that some shard does not hold (every frame below it is held). counts: ranks
 * values. With the counts of a complete run of T frames this is T. Pure.
 */
uint64_t h5s_shard_prefix(const uint64_t *counts, uint32_t ranks, uint64_t block);

/*
 * Writes the path of rank's shard of master into out: the rank, after an underscore,
 * goes before the master name's last extension ("d/run.h5" -> "d/run_2.h5", "run" ->
 * "run_2"). Returns 0, or H5S_EINVAL when it does not fit in outsize bytes.
 */
int h5s_master_shard_path(char *out, size_t outsize, const char *master, uint32_t rank);

#define H5S_MASTER_OPTIONS_VERSION 1

typedef struct {
    unsigned version;      /* H5S_MASTER_OPTIONS_VERSION */
    const char *data_path; /* frames dataset in master and shards; NULL = NeXus default */
    h5s_dtype dtype;       /* element type of a frame */
    unsigned rank;         /* frame rank, 1 to 3 */
    uint64_t dims[3];      /* frame shape, slowest axis first */
    double fill_value;     /* what a reader sees for a frame no shard holds */
    uint32_t ranks;        /* shards, 1 to H5S_MASTER_MAX_RANKS */
    uint64_t block;        /* frames per round-robin block, >= 1 */
    const char *creator;   /* root attribute "creator"; NULL = "h5stream VERSION" */
} h5s_master_options;

#define H5S_MASTER_OPTIONS_INIT                                                                    \
    {                                                                                              \
        H5S_MASTER_OPTIONS_VERSION, NULL, H5S_UINT16, 2, {0, 0, 0}, 0.0, 1, 1, NULL                \
    }

/*
 * Writes the live master at path (replacing a file there): the frames dataset, its
 * frame_id (fill UINT64_MAX) and timestamp (fill NaN) as virtual datasets with one strided
 * unlimited mapping per shard (virtual start r*B, stride N*B, block B; the shard's
 * dataset from 0 on), the NeXus groups when data_path is the default, the root
 * attributes, the shard attributes (docs/shards.md) and /h5stream/writer with state 0.
 * Shards are named relative to the master's folder, so the set can be moved together;
 * they need not exist yet.
 * Errors: H5S_EINVAL (bad options), H5S_EIO (HDF5 cannot write the file; the message
 * names it). Nothing is left at path on failure (a previous file there stays).
 * Thread safety: see the file comment.
 */
int h5s_master_create(const char *path, const h5s_master_options *opts);

/* What h5s_master_shard_poll read from one shard. */
typedef struct {
    int exists;         /* the file exists */
    int readable;       /* it opened (its writer has started SWMR, or it is closed) */
    int32_t state;      /* its /h5stream/writer state (H5S_STATE_*), -1 if unreadable */
    double heartbeat;   /* seconds since the epoch of its last commit */
    uint64_t committed; /* its status row's committed count */
    uint64_t frames;    /* the extent of its frame_id: committed frames */
} h5s_shard_status;

/*
 * Reads a shard's writer status and committed frame count, opening it with SWMR read
 * and HDF5 file locking off (so polling never blocks its writer), then closing it.
 * data_path: the frames dataset (NULL = NeXus default). The status row is read before the
 * frame_id extent, so a shard seen in a final state shows its final frame count
 * (tests/test_shard_poll.c). Never fails for a shard that is missing or not readable yet:
 * out says so. Returns 0, or H5S_EINVAL.
 */
int h5s_master_shard_poll(h5s_shard_status *out, const char *shard_path, const char *data_path);

/*
 * Rewrites the master at path with fixed mappings: given shard r's committed frame count
 * counts[r] (ranks values), the master holds the gap-free prefix P =
 * h5s_shard_prefix(counts): each shard maps its frames below P (full blocks, then a
 * partial one), the datasets' extent is exactly P, and /h5stream/writer says `state`
 * (H5S_STATE_CLOSED, or H5S_STATE_FAILED when a shard failed or was cut short) with
 * committed = P. out_frames: P (may be NULL).
 * Errors: as h5s_master_create. Thread safety: see the file comment.
 */
int h5s_master_finalize(const char *path, const h5s_master_options *opts, const uint64_t *counts,
                        int32_t state, uint64_t *out_frames);

/*
 * Reads a master's options back from the file at path (shard count and block, the frames
 * dataset's path, dtype, frame shape and fill value, creator), for h5s_master_finalize.
 * data_path and creator receive the strings out->data_path and out->creator point to.
 * Errors: H5S_EINVAL (NULL), H5S_EIO (cannot open), H5S_EFORMAT (not a shard master).
 * Thread safety: see the file comment.
 */
int h5s_master_read_options(const char *path, h5s_master_options *out, char *data_path,
                            size_t data_path_size, char *creator, size_t creator_size);

/* Called by h5s_master_recover once per shard with h5s_recover's result (rc, and its
 * report when rc is 0 or H5S_ECODEC). */
typedef void (*h5s_master_recover_fn)(const char *shard, uint32_t rank, int rc,
                                      const h5s_recover_report *report, void *payload);

/*
 * Ends a run whose ranks did not all close cleanly (docs/shards.md, "Recovery"): runs
 * h5s_recover on every shard (a cleanly closed one is only read), then rewrites the master
 * final with the gap-free prefix of what the shards hold: state 1 if every shard had
 * closed cleanly and together they hold exactly that prefix, else 2 (a shard died, failed
 * or is missing, or frames past the prefix had to be left out). out_frames: the master's
 * frame count; out_state: the state written (both may be NULL).
 * Errors: those of h5s_master_read_options; H5S_ESTATE when a shard's writer is still
 * running (nothing is rewritten); H5S_EIO writing the master.
 * Thread safety: see the file comment.
 */
int h5s_master_recover(const char *path, h5s_master_recover_fn each, void *payload,
                       uint64_t *out_frames, int32_t *out_state);

#ifdef __cplusplus
}
#endif
#endif /* H5S_MASTER_H */
