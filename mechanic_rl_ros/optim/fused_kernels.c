/*
 * Fused CPU passes of one Mechanic step, for float32 and float64 parameters.
 *
 * mechanic.py (class _Bucket) describes the step. With torch kernels it costs
 * about 20 passes over parameter-sized memory on top of the base optimizer;
 * these two functions do the same arithmetic in two passes:
 *
 *   measure (before the base step): per tensor the sums
 *       |g|^2, |x|^2, <g, R>, <x, R>
 *     and the snapshot s = x, reading g, x, R once;
 *   finish (after the base step, p = x + u):
 *       u = p - s;  R' = R + a u;  p' = s + e u + d R'
 *     reading p, s, R once and writing p, R.
 *
 * Reductions are deterministic for any thread count: each tensor is cut into
 * fixed blocks of BLOCK elements, a block is summed in double (float32 data:
 * in float over CHUNK elements first), and the block
 * sums of a tensor are added in order by the calling thread. Work is spread
 * over plain pthreads that live for one call, so no thread pool spins beside
 * torch's between steps.
 *
 * Loaded with ctypes by mechanic_rl_ros/optim/fused.py; built by
 * scripts/setup.sh (gcc) and by CMakeLists.txt. Nothing here is Python-aware.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 8192
#define MAX_THREADS 64

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

typedef struct {
    int64_t tensor;
    int64_t start;
    int64_t len;
} block_t;

typedef struct {
    int is_double;
    int64_t ntensors;
    const int64_t *numel;
    void *const *a0; /* measure: g    finish: p    */
    void *const *a1; /* measure: x    finish: snap */
    void *const *a2; /* measure: R    finish: R    (entries may be NULL in measure) */
    void *const *a3; /* measure: snap              */
    const double *ka; /* finish: a per tensor */
    const double *kd; /* finish: d per tensor */
    double e;
    block_t *blocks;
    double *partial; /* 4 per block (measure) */
    int64_t nblocks;
} job_t;

typedef struct {
    job_t *job;
    int64_t first, last;
    int measure;
} slice_t;

/* ----------------------------------------------------------------- blocks */

/* float32: sums of CHUNK elements in float (vectorised, CHUNK / lanes terms
 * per lane), added up in double. */
#define CHUNK 256
MULTIVERSION static void measure_f32(const float *g, const float *x, const float *r, float *s,
                                     int64_t n, double *out) {
    double gg = 0.0, xx = 0.0, gr = 0.0, xr = 0.0;
    for (int64_t c = 0; c < n; c += CHUNK) {
        int64_t m = n - c < CHUNK ? n - c : CHUNK;
        const float *gc = g + c, *xc = x + c;
        float *sc = s + c;
        float a = 0.0f, b = 0.0f, e = 0.0f, f = 0.0f;
        if (r) {
            const float *rc = r + c;
#pragma omp simd reduction(+ : a, b, e, f)
            for (int64_t i = 0; i < m; ++i) {
                float gi = gc[i], xi = xc[i], ri = rc[i];
                a += gi * gi;
                b += xi * xi;
                e += gi * ri;
                f += xi * ri;
                sc[i] = xi;
            }
        } else {
#pragma omp simd reduction(+ : a, b)
            for (int64_t i = 0; i < m; ++i) {
                float gi = gc[i], xi = xc[i];
                a += gi * gi;
                b += xi * xi;
                sc[i] = xi;
            }
        }
        gg += a; xx += b; gr += e; xr += f;
    }
    out[0] = gg; out[1] = xx; out[2] = gr; out[3] = xr;
}

MULTIVERSION static void measure_f64(const double *g, const double *x, const double *r, double *s,
                                     int64_t n, double *out) {
    double gg = 0.0, xx = 0.0, gr = 0.0, xr = 0.0;
    if (r) {
#pragma omp simd reduction(+ : gg, xx, gr, xr)
        for (int64_t i = 0; i < n; ++i) {
            double gi = g[i], xi = x[i], ri = r[i];
            gg += gi * gi;
            xx += xi * xi;
            gr += gi * ri;
            xr += xi * ri;
            s[i] = xi;
        }
    } else {
#pragma omp simd reduction(+ : gg, xx)
        for (int64_t i = 0; i < n; ++i) {
            double gi = g[i], xi = x[i];
            gg += gi * gi;
            xx += xi * xi;
            s[i] = xi;
        }
    }
    out[0] = gg; out[1] = xx; out[2] = gr; out[3] = xr;
}

MULTIVERSION static void finish_f32(float *p, const float *s, float *r, int64_t n, float a, float e,
                                    float d) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        float u = p[i] - s[i];
        float rn = r[i] + a * u;
        r[i] = rn;
        p[i] = s[i] + e * u + d * rn;
    }
}

MULTIVERSION static void finish_f64(double *p, const double *s, double *r, int64_t n, double a,
                                    double e, double d) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        double u = p[i] - s[i];
        double rn = r[i] + a * u;
        r[i] = rn;
        p[i] = s[i] + e * u + d * rn;
    }
}

static void run_block(job_t *job, int64_t b, int measure) {
    const block_t *blk = &job->blocks[b];
    int64_t t = blk->tensor, o = blk->start, n = blk->len;
    if (measure) {
        double *out = job->partial + 4 * b;
        if (job->is_double) {
            const double *r = (const double *)job->a2[t];
            measure_f64((const double *)job->a0[t] + o, (const double *)job->a1[t] + o,
                        r ? r + o : NULL, (double *)job->a3[t] + o, n, out);
        } else {
            const float *r = (const float *)job->a2[t];
            measure_f32((const float *)job->a0[t] + o, (const float *)job->a1[t] + o,
                        r ? r + o : NULL, (float *)job->a3[t] + o, n, out);
        }
    } else if (job->is_double) {
        finish_f64((double *)job->a0[t] + o, (const double *)job->a1[t] + o,
                   (double *)job->a2[t] + o, n, job->ka[t], job->e, job->kd[t]);
    } else {
        finish_f32((float *)job->a0[t] + o, (const float *)job->a1[t] + o,
                   (float *)job->a2[t] + o, n, (float)job->ka[t], (float)job->e,
                   (float)job->kd[t]);
    }
}

static void *run_slice(void *arg) {
    slice_t *sl = (slice_t *)arg;
    for (int64_t b = sl->first; b < sl->last; ++b) run_block(sl->job, b, sl->measure);
    return NULL;
}

/* Cut every tensor into blocks, run them on nthreads threads (contiguous
 * ranges of blocks, the caller takes the first). Returns 0, or -1 when out of
 * memory. */
static int run(job_t *job, int measure, int nthreads) {
    int64_t nb = 0;
    for (int64_t t = 0; t < job->ntensors; ++t) nb += (job->numel[t] + BLOCK - 1) / BLOCK;
    job->nblocks = nb;
    job->blocks = (block_t *)malloc((size_t)(nb > 0 ? nb : 1) * sizeof(block_t));
    job->partial = measure ? (double *)calloc((size_t)(nb > 0 ? nb : 1) * 4, sizeof(double)) : NULL;
    if (!job->blocks || (measure && !job->partial)) {
        free(job->blocks);
        free(job->partial);
        return -1;
    }
    int64_t b = 0;
    for (int64_t t = 0; t < job->ntensors; ++t)
        for (int64_t o = 0; o < job->numel[t]; o += BLOCK) {
            int64_t left = job->numel[t] - o;
            job->blocks[b].tensor = t;
            job->blocks[b].start = o;
            job->blocks[b].len = left < BLOCK ? left : BLOCK;
            ++b;
        }

    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (nthreads > nb) nthreads = nb > 0 ? (int)nb : 1;
    slice_t slices[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 0; i < nthreads; ++i) {
        slices[i].job = job;
        slices[i].first = nb * i / nthreads;
        slices[i].last = nb * (i + 1) / nthreads;
        slices[i].measure = measure;
    }
    for (int i = 1; i < nthreads; ++i)
        started[i] = pthread_create(&threads[i], NULL, run_slice, &slices[i]) == 0;
    run_slice(&slices[0]);
    for (int i = 1; i < nthreads; ++i) {
        if (started[i])
            pthread_join(threads[i], NULL);
        else
            run_slice(&slices[i]); /* could not start a thread: do its share here */
    }
    return 0;
}

/* --------------------------------------------------------------- entry points */

/* out[4 t + k] = (|g_t|^2, |x_t|^2, <g_t, R_t>, <x_t, R_t>)[k]; snap_t = x_t.
 * r[t] may be NULL (a parameter without state yet): its two dots are 0. */
int mechanic_measure(int is_double, int64_t ntensors, const int64_t *numel, void *const *g,
                     void *const *x, void *const *r, void *const *snap, double *out,
                     int nthreads) {
    job_t job = {0};
    job.is_double = is_double;
    job.ntensors = ntensors;
    job.numel = numel;
    job.a0 = g;
    job.a1 = x;
    job.a2 = r;
    job.a3 = snap;
    if (run(&job, 1, nthreads) != 0) return -1;
    int64_t b = 0;
    for (int64_t t = 0; t < ntensors; ++t) {
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        for (; b < job.nblocks && job.blocks[b].tensor == t; ++b)
            for (int k = 0; k < 4; ++k) acc[k] += job.partial[4 * b + k];
        for (int k = 0; k < 4; ++k) out[4 * t + k] = acc[k];
    }
    free(job.blocks);
    free(job.partial);
    return 0;
}

/* u = p - snap; R' = R + a_t u; p' = snap + e u + d_t R' (in place on p and R). */
int mechanic_finish(int is_double, int64_t ntensors, const int64_t *numel, void *const *p,
                    void *const *snap, void *const *r, const double *a, const double *d, double e,
                    int nthreads) {
    job_t job = {0};
    job.is_double = is_double;
    job.ntensors = ntensors;
    job.numel = numel;
    job.a0 = p;
    job.a1 = snap;
    job.a2 = r;
    job.ka = a;
    job.kd = d;
    job.e = e;
    if (run(&job, 0, nthreads) != 0) return -1;
    free(job.blocks);
    return 0;
}
