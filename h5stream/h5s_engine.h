/*
 * h5s_engine.h - private to h5stream/: the engine's objects and the bounded queue that
 * connects producers, encoders and the writer thread (docs/architecture.md).
 */
#ifndef H5S_ENGINE_H
#define H5S_ENGINE_H

#include <hdf5.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "h5s_codec.h"
#include "h5s_prealloc.h"
#include "h5stream.h"

#define H5S_DSET_RANK_MAX 4 /* frame rank 3 + the frame axis */
#define H5S_MAX_SCALARS 64
#define H5S_NAME_MAX 256

/*
 * BAND: frames for the encoders; CHUNK: a column's chunk for the encoders; MARK: a group's
 * commit point; CALL: a function the writer runs in sequence; FLUSH and STOP: markers the
 * writer acts on once everything before them is written.
 */
typedef enum {
    H5S_JOB_BAND,
    H5S_JOB_FLUSH,
    H5S_JOB_STOP,
    H5S_JOB_CHUNK,
    H5S_JOB_MARK,
    H5S_JOB_CALL
} h5s_job_kind;

/* One encoded chunk, ready for H5Dwrite_chunk. */
typedef struct {
    hsize_t offset[H5S_DSET_RANK_MAX];
    void *bytes; /* owned unless it points into the job's raw band */
    size_t size;
    uint32_t mask; /* filter mask: bit i set = filter i skipped */
} h5s_chunk;

/*
 * A unit of work in sequence order. A band is frames_per_chunk consecutive frames of one
 * dataset (fewer for the last one, padded with the fill value); FLUSH and STOP are
 * markers the writer acts on once everything before them is written.
 */
typedef struct h5s_job {
    struct h5s_job *next; /* in the encoders' FIFO */
    uint64_t seq;
    h5s_job_kind kind;
    struct h5s_frames *frames;
    uint64_t first_frame; /* index of the band's first frame in its dataset */
    uint32_t nframes;     /* frames in the band */
    unsigned char *raw;   /* frames_per_chunk * frame_bytes */
    uint64_t *ids;        /* per frame */
    double *stamps;       /* per frame */
    double *scalars;      /* per frame, nscalars each */
    h5s_chunk *chunks;    /* filled by the encoder */
    size_t nchunks;
    size_t charged; /* bytes counted against the queue budget */
    int status;     /* encoder result */
    char *errmsg;   /* encoder message when status != 0 */

    /* CHUNK: rows [row0, row0 + nrows) of a column, in raw (a whole chunk's buffer). */
    struct h5s_column *column;
    uint64_t row0, nrows;
    /* raw is a producer's memory, lent (h5s_column_append_lent), not a pool buffer: it is
     * never written, and lent_done(lent_ctx, raw, chunk bytes) gives it back. */
    void (*lent_done)(void *ctx, const void *bytes, size_t len);
    void *lent_ctx;
    size_t reserved; /* part of charged taken by h5s_queue_reserve (still "open" then) */
    /* MARK: the group's items and marker rows at the cut. */
    struct h5s_group *group;
    uint64_t mark_items, mark_rows;
    /* CALL */
    int (*call)(hid_t fid, void *payload);
    void *call_payload;
    void (*call_free)(void *payload);
} h5s_job;

/* Bounded queue: byte budget, encoders' FIFO, and the writer's in-order window. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv_budget; /* producers waiting for budget */
    pthread_cond_t cv_work;   /* encoders waiting for a band */
    pthread_cond_t cv_ready;  /* writer waiting for the next job in sequence */
    pthread_cond_t cv_done;   /* flush callers waiting for the writer */
    size_t cap, used, peak;
    size_t open_bytes; /* part of used held by bands still being filled by producers */
    int nonblocking;
    h5s_job *work_head, *work_tail;
    h5s_job **ring; /* jobs ready for the writer, slot seq % ring_cap */
    uint64_t ring_cap;
    h5s_job *overflow;  /* ready jobs the ring could not grow for (out of memory) */
    uint64_t next_seq;  /* given to the next submitted job */
    uint64_t write_seq; /* the next job the writer takes */
    uint64_t done_seq;  /* every job below it has been written and committed as asked */
    int stop_encoders;
    int err_code; /* first writer/encoder error, kept */
    char err_msg[1024];
} h5s_queue;

int h5s_queue_init(h5s_queue *q, size_t cap, int nonblocking);
void h5s_queue_destroy(h5s_queue *q);
/*
 * Takes bytes of budget for a band a producer is about to fill ("open" until submitted).
 * Blocks (or H5S_EAGAIN) while the budget is used and bytes are in flight to the writer;
 * bands still being filled never make it wait, since the thread waiting may be the one
 * that would fill them. Returns 0 or the kept error.
 */
int h5s_queue_reserve(h5s_queue *q, size_t bytes);
/* As h5s_queue_reserve, but waits even in non-blocking mode (half an item appended to a
 * group must not be left there). */
int h5s_queue_reserve_wait(h5s_queue *q, size_t bytes);
/* Gives back the budget of an open band that will never be submitted. */
void h5s_queue_unreserve(h5s_queue *q, size_t bytes);
/* Counts bytes against the budget without waiting (the writer thread's own cuts). */
void h5s_queue_charge(h5s_queue *q, size_t bytes);
void h5s_queue_release(h5s_queue *q, size_t bytes);
/* Gives the job its sequence number; bands go to the encoders, markers straight to the
 * writer. Returns the sequence number. */
uint64_t h5s_queue_submit(h5s_queue *q, h5s_job *job);
/* Encoder side: the next band, or NULL once stopped and drained. */
h5s_job *h5s_queue_take_work(h5s_queue *q);
/* Encoder side: hands an encoded band to the writer; charge is its new budget share. */
void h5s_queue_put_ready(h5s_queue *q, h5s_job *job, size_t charge);
/* Writer side: up to max jobs in sequence order; waits until at least one is ready or
 * the monotonic deadline (seconds, < 0 = none) passes. Returns the count. */
size_t h5s_queue_take_ready(h5s_queue *q, h5s_job **out, size_t max, double deadline);
/* Writer side: every job with seq < seq_end is done. */
void h5s_queue_mark_done(h5s_queue *q, uint64_t seq_end);
/* Waits until the job seq is done; returns the kept error, if any. */
int h5s_queue_wait_done(h5s_queue *q, uint64_t seq);
/* Keeps the first error (code, message) and wakes every waiter. */
void h5s_queue_fail(h5s_queue *q, int code, const char *msg);
/* Appends note to the kept error's message (cut to fit); nothing when none is kept. */
void h5s_queue_note(h5s_queue *q, const char *note);
/* The kept error (with its message restored on this thread), or 0. */
int h5s_queue_error(h5s_queue *q);
void h5s_queue_stop_encoders(h5s_queue *q);

/*
 * A free list of equal-sized buffers. Bands are filled on producer threads and released
 * on the writer thread; recycling them instead of malloc/free keeps peak RSS flat over
 * long streams (no arena fragmentation) and saves the page faults of fresh memory.
 */
typedef struct {
    pthread_mutex_t mu;
    void **free;
    size_t n, cap; /* buffers kept, most kept */
    size_t size;   /* bytes per buffer */
} h5s_pool;

void h5s_pool_init(h5s_pool *p, size_t size, size_t keep);
void h5s_pool_destroy(h5s_pool *p);
/* A buffer of p->size bytes (recycled or new), or NULL. */
void *h5s_pool_get(h5s_pool *p);
/* Returns a buffer; kept for reuse unless the list is full. NULL is a no-op. */
void h5s_pool_put(h5s_pool *p, void *buf);

/* Monotonic clock in seconds. */
double h5s_mono_now(void);

typedef struct {
    char name[H5S_NAME_MAX];
    char path[2 * H5S_NAME_MAX];
    h5s_dtype dtype;
    hid_t dset;
} h5s_scalar;

struct h5s_frames {
    struct h5s_file *file;
    char path[2 * H5S_NAME_MAX];
    char id_path[2 * H5S_NAME_MAX];
    char ts_path[2 * H5S_NAME_MAX];
    h5s_frames_options opts;
    size_t frame_bytes;
    size_t band_bytes;     /* frames_per_chunk * frame_bytes */
    unsigned char fill[8]; /* one element of the fill value */
    h5s_scalar scalars[H5S_MAX_SCALARS];
    unsigned nscalars;
    hsize_t chunk_dims[H5S_DSET_RANK_MAX];
    size_t chunk_bytes;
    hsize_t tiles[3];        /* tiles along each frame axis (3-D view, leading axes 1) */
    size_t chunk_bound;      /* encoded chunk buffer size: h5s_codec_bound(chunk_bytes) */
    size_t band_bytes_alloc; /* size of band buffers: >= band_bytes */
    h5s_pool band_pool;      /* band buffers; untiled, also the encoded chunks' */
    h5s_pool chunk_pool;     /* chunk_bound buffers, for tiled datasets */

    /* Producer side, under mu. */
    pthread_mutex_t mu;
    h5s_job *band;
    atomic_uint_fast64_t appended;

    /* Writer side (writer thread only). */
    hid_t dset, id_dset, ts_dset;
    uint64_t extent;    /* the data dataset's extent along N */
    uint64_t written;   /* frames whose chunks are written */
    uint64_t committed; /* frames covered by frame_id */
    uint64_t *p_ids;    /* meta of frames [committed, written) */
    double *p_stamps;
    double *p_scalars;
    size_t p_cap;
    uint64_t chunk_writes;
    uint64_t break_after; /* test seam: see h5s_frames_test_break_after */
    int adopted;          /* found in the file by h5s_file_open_append */
    int sealed;           /* adopted with a padded partial last chunk: no appends */
};

#define H5S_MAX_MODELS 8

struct h5s_file {
    char *path;
    h5s_file_options opts;
    hid_t fid;
    int started;
    atomic_int closing;
    struct h5s_frames **frames;
    size_t nframes;
    struct h5s_group **groups;
    size_t ngroups;
    char models[H5S_MAX_MODELS][32];
    unsigned nmodels;
    void *attached[H5S_MAX_MODELS]; /* models' handles, freed at close (h5s_file_attach) */
    void (*attached_free[H5S_MAX_MODELS])(void *obj);
    unsigned nattached;
    char creator[128];

    h5s_queue q;
    h5s_job *stop_job; /* allocated at start, so close never needs memory */
    pthread_t writer;
    pthread_t *encoders;
    int nencoders;

    /* Writer thread only. */
    hid_t status_dset;
    double last_commit, last_fflush;
    h5s_prealloc prealloc; /* file space reserved ahead of the chunk writes */

    /* Counters (atomics: read by h5s_file_stats_get from any thread). */
    atomic_uint_fast64_t st_committed, st_commits, st_bytes_raw, st_bytes_stored;
};

/* frames model hooks used by the file object */
/* Finds and adopts every frames dataset of a file opened for appending. */
int h5s_frames_adopt_all(struct h5s_file *f);
void h5s_frames_free(struct h5s_frames *fr);
int h5s_frames_open_swmr(struct h5s_frames *fr);
/* Declaration phase, last step: writes the frames dataset's layout attributes. */
int h5s_frames_write_attrs(struct h5s_frames *fr);
void h5s_frames_close_handles(struct h5s_frames *fr);
int h5s_frames_submit_partial(struct h5s_frames *fr);
/* Encodes a band into chunks (encoder thread). scratch: two buffers of chunk_bytes. */
int h5s_frames_encode(h5s_job *job, unsigned char *gather, unsigned char *scratch);
/* Bytes a job holds now (raw band and/or chunk buffers), for the queue budget. */
size_t h5s_job_held_bytes(const h5s_job *job);
/* Writer thread: extend the data extent to cover `end` frames. */
int h5s_frames_extend(struct h5s_frames *fr, uint64_t end);
/* Writer thread: store a band's chunks and keep its meta for the next commit. */
int h5s_frames_write_band(struct h5s_frames *fr, h5s_job *job);
/* Writer thread: commit phase 1 (payload) and phase 2 (marker). */
int h5s_frames_commit_payload(struct h5s_frames *fr);
int h5s_frames_commit_marker(struct h5s_frames *fr);
void h5s_job_free(h5s_job *job);

/* groups and columns (h5s_column.c) used by the file object */
/* Frees the models' attached handles (h5s_file_attach). */
void h5s_file_free_attached(struct h5s_file *f);
void h5s_group_free(struct h5s_group *g);
int h5s_group_open_swmr(struct h5s_group *g);
void h5s_group_close_handles(struct h5s_group *g);
/* Hands the writer every partial chunk and a commit point. wait_budget: 0 on the writer
 * thread (charges without waiting). Group locked. */
int h5s_group_cut(struct h5s_group *g, int wait_budget);
/* Writer thread: the group's items appended since its last cut (atomic read). */
int h5s_group_needs_cut(struct h5s_group *g, double now, double interval);
/* Writer thread: tries the group's lock and cuts; skips when a producer holds it. */
void h5s_group_try_cut(struct h5s_group *g);
/* Encoder: encodes a column chunk. scratch: the column's chunk_bytes. */
int h5s_column_encode(h5s_job *job, unsigned char *scratch);
/* The largest chunk of the group's columns, in bytes (the encoders' scratch size). */
size_t h5s_group_max_chunk_bytes(const struct h5s_group *g);
/* Writer thread: a CHUNK job (stores it, or holds a marker chunk for the commit). */
int h5s_column_write(h5s_job *job);
/* Writer thread: a MARK job. */
void h5s_group_mark(h5s_job *job);
/* Writer thread: 1 when a commit point waits. */
int h5s_group_pending(const struct h5s_group *g);
/* Writer thread: commit phase 1 (flush the payload columns) and phase 2 (marker). */
int h5s_group_commit_payload(struct h5s_group *g);
int h5s_group_commit_marker(struct h5s_group *g);
/* Frees a non-band job's buffers and payload (CHUNK, CALL; the others hold none). */
void h5s_column_job_release(h5s_job *job);
/* Bytes a CHUNK job holds now, for the queue budget. */
size_t h5s_column_held_bytes(const h5s_job *job);

/*
 * Test seam: after `chunks` more chunk writes, the writer hands HDF5 an invalid dataset
 * id, so the real failure path (HDF5 error, kept error, message) runs. 0 turns it off.
 * Call before h5s_file_start_swmr.
 */
void h5s_frames_test_break_after(h5s_frames *fr, uint64_t chunks);

/* Small HDF5 helpers shared by the engine's files. */
int h5s_attr_string(hid_t obj, const char *name, const char *value);

#endif
