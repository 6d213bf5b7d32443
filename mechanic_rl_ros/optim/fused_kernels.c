/*
 * Fused CPU passes of one Mechanic step, for float32 and float64 parameters.
 *
 * buckets.py and adam_fused.py describe the step; x are the parameters, g
 * their gradients, R Mechanic's offset (x - x_ref = k R, k per tensor).
 *
 * Any base optimizer (two passes around the base optimizer's own step):
 *   measure (before the base step): per tensor the sums
 *       |g|^2, |x|^2, <g, R>, <x, R>
 *     and the snapshot s = x, reading g, x, R once;
 *   finish (after the base step, p = x + u):
 *       u = p - s;  R' = R + a u;  p' = s + e u + d R'
 *     reading p, s, R once and writing p, R.
 *
 * torch.optim.Adam / AdamW as the base (its step is computed here, with
 * Mechanic's, and the base optimizer's step() does not touch these tensors):
 *   adam_measure (before the tuner update): per tensor |g|^2, <g, R> and,
 *     only where the caller has no valid ones from the previous step,
 *     |x|^2, <x, R>; reads g, R (and x where asked);
 *   adam_update (after it): torch's Adam update u of x (moments m, v updated
 *     in place, bias corrections and L2 or decoupled weight decay as torch),
 *     then R' = R + a u; x' = x + e u + d R'; and the sums |x'|^2, <x', R'>
 *     that the next step's adam_measure needs. Reads g, x, m, v, R, writes
 *     x, m, v, R.
 *
 * Reductions are deterministic for any thread count, and the same sums of the
 * same data come out bit for bit equal from every pass: each tensor is cut
 * into fixed blocks of BLOCK elements and each block into chunks of CHUNK
 * elements; a chunk is summed in explicit lanes of the data's type (lane j
 * takes elements j, j + LANES, ...), the lanes are added pairwise in double,
 * the chunk sums of a block in order, and the block sums of a tensor in
 * order by the calling thread. So the |x'|^2, <x', R'> that adam_update
 * leaves for the next step equal what adam_measure would compute from x', R'
 * (a resumed run, which recomputes them, stays bit-identical).
 * Built with -fopenmp, blocks are spread over an OpenMP team of the calling
 * thread: with torch imported first, the dynamic loader resolves libgomp.so.1
 * to the copy torch loaded, so the team is torch's own intra-op threads. Those
 * spin for a while after each torch parallel region (libgomp's default wait
 * policy); threads of our own would compete with them for the same cores,
 * which made the two-thread step no faster than one (docs/mechanic.md).
 * Without OpenMP, or when the binding finds a second OpenMP runtime in the
 * process (mechanic_threading(0)), plain pthreads that live for one call.
 *
 * Loaded with ctypes by mechanic_rl_ros/optim/fused.py; built by
 * scripts/setup.sh (gcc) and by CMakeLists.txt. Nothing here is Python-aware.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 8192
#define CHUNK 512
#define MAX_THREADS 64

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif
#define INLINE static inline __attribute__((always_inline))

/* 32-byte vectors read from any element address (GCC vector extensions:
 * lane-wise arithmetic in a fixed order, whatever the target). */
typedef float vf32 __attribute__((vector_size(32), aligned(4), may_alias));
typedef double vf64 __attribute__((vector_size(32), aligned(8), may_alias));

/* Adam coefficients per tensor, in this order (adam_fused.py fills them). */
enum {
    K_B1W,   /* 1 - beta1: weight of torch's lerp_(grad, 1 - beta1) */
    K_B2,    /* beta2 */
    K_OMB2,  /* 1 - beta2 */
    K_L2,    /* Adam's (coupled) weight decay: g + wd x */
    K_DECAY, /* AdamW's lr * weight_decay: x (1 - lr wd) */
    K_NSTEP, /* -lr / (1 - beta1^t) */
    K_IBC2S, /* 1 / sqrt(1 - beta2^t) */
    K_EPS,   /* Adam's eps */
    K_A,     /* Mechanic: R' = R + a u */
    K_E,     /* Mechanic: x' = x + e u + d R' */
    K_D,
    NCOEF
};

/* --------------------------------------------------------- per-dtype code */

/* DEFINE_KERNELS(T, SFX, VT, LANES, SQRT) defines, for element type T:
 *   chunk_SFX:   sums of a*a and a*r over m <= CHUNK elements (r may be NULL)
 *   stats_SFX:   the same over a block, chunk by chunk
 *   measure_SFX: the four sums of a block (x may be NULL) and its snapshot
 *   finish_SFX:  the update after an arbitrary base step
 *   adam_SFX:    Adam + Mechanic update of a block, and the sums of x', R'  */
#define DEFINE_KERNELS(T, SFX, VT, LANES, SQRT)                                                   \
    INLINE void chunk_##SFX(const T *a, const T *r, int64_t m, double *sq, double *dot) {          \
        enum { W = LANES / 2 };                                                                    \
        VT s0 = {0}, s1 = {0}, d0 = {0}, d1 = {0};                                                 \
        T ls[LANES], ld[LANES];                                                                    \
        int64_t i = 0;                                                                             \
        for (; i + LANES <= m; i += LANES) {                                                       \
            VT a0 = *(const VT *)(a + i), a1 = *(const VT *)(a + i + W);                           \
            s0 += a0 * a0;                                                                         \
            s1 += a1 * a1;                                                                         \
            if (r) {                                                                               \
                d0 += a0 * *(const VT *)(r + i);                                                   \
                d1 += a1 * *(const VT *)(r + i + W);                                               \
            }                                                                                      \
        }                                                                                          \
        memcpy(ls, &s0, sizeof s0);                                                                \
        memcpy(ls + W, &s1, sizeof s1);                                                            \
        memcpy(ld, &d0, sizeof d0);                                                                \
        memcpy(ld + W, &d1, sizeof d1);                                                            \
        for (int64_t j = 0; i + j < m; ++j) {                                                      \
            T aj = a[i + j];                                                                       \
            ls[j] += aj * aj;                                                                      \
            if (r) ld[j] += aj * r[i + j];                                                         \
        }                                                                                          \
        double ts[LANES], td[LANES]; /* lanes added pairwise in double, a fixed tree */           \
        for (int j = 0; j < LANES; ++j) {                                                          \
            ts[j] = (double)ls[j];                                                                 \
            td[j] = (double)ld[j];                                                                 \
        }                                                                                          \
        for (int w = LANES / 2; w > 0; w /= 2)                                                     \
            for (int j = 0; j < w; ++j) {                                                          \
                ts[j] += ts[j + w];                                                                \
                td[j] += td[j + w];                                                                \
            }                                                                                      \
        *sq = ts[0];                                                                               \
        *dot = td[0];                                                                              \
    }                                                                                              \
                                                                                                   \
    INLINE void stats_##SFX(const T *a, const T *r, int64_t n, double *sq, double *dot) {          \
        double s = 0.0, d = 0.0;                                                                   \
        for (int64_t c = 0; c < n; c += CHUNK) {                                                   \
            double cs, cd;                                                                         \
            chunk_##SFX(a + c, r ? r + c : NULL, n - c < CHUNK ? n - c : CHUNK, &cs, &cd);         \
            s += cs;                                                                               \
            d += cd;                                                                               \
        }                                                                                          \
        *sq = s;                                                                                   \
        *dot = d;                                                                                  \
    }                                                                                              \
                                                                                                   \
    MULTIVERSION static void measure_##SFX(const T *g, const T *x, const T *r, T *snap,           \
                                           int64_t n, double *out) {                               \
        stats_##SFX(g, r, n, &out[0], &out[2]);                                                    \
        if (x) stats_##SFX(x, r, n, &out[1], &out[3]);                                             \
        if (snap) memcpy(snap, x, (size_t)n * sizeof(T));                                          \
    }                                                                                              \
                                                                                                   \
    MULTIVERSION static void finish_##SFX(T *p, const T *s, T *r, int64_t n, T a, T e, T d) {      \
        _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {                                      \
            T u = p[i] - s[i];                                                                     \
            T rn = r[i] + a * u;                                                                   \
            r[i] = rn;                                                                             \
            p[i] = s[i] + e * u + d * rn;                                                          \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    MULTIVERSION static void adam_##SFX(T *x, const T *g, T *m, T *v, T *r, int64_t n,             \
                                        const double *k, double *out) {                            \
        const T b1w = (T)k[K_B1W], b2 = (T)k[K_B2], omb2 = (T)k[K_OMB2], l2 = (T)k[K_L2];          \
        const T decay = (T)k[K_DECAY], nstep = (T)k[K_NSTEP], ibc2s = (T)k[K_IBC2S];                 \
        const T aeps = (T)k[K_EPS], a = (T)k[K_A], e = (T)k[K_E], d = (T)k[K_D];                   \
        const int lerp_low = k[K_B1W] < 0.5; /* torch's lerp switches formula at 0.5 */           \
        double xx = 0.0, xr = 0.0;                                                                 \
        for (int64_t c = 0; c < n; c += CHUNK) {                                                   \
            int64_t cm = n - c < CHUNK ? n - c : CHUNK;                                            \
            T *xc = x + c, *mc = m + c, *vc = v + c, *rc = r + c;                                  \
            const T *gc = g + c;                                                                   \
            _Pragma("omp simd") for (int64_t i = 0; i < cm; ++i) {                                 \
                T xi = xc[i], mi = mc[i];                                                          \
                T gi = l2 != 0 ? gc[i] + l2 * xi : gc[i];                                          \
                T mn = lerp_low ? mi + b1w * (gi - mi) : gi - (gi - mi) * (1 - b1w);               \
                T vn = vc[i] * b2 + omb2 * gi * gi;                                                \
                T u = nstep * mn / (SQRT(vn) * ibc2s + aeps) - decay * xi;                          \
                T rn = rc[i] + a * u;                                                              \
                mc[i] = mn;                                                                        \
                vc[i] = vn;                                                                        \
                rc[i] = rn;                                                                        \
                xc[i] = xi + e * u + d * rn;                                                       \
            }                                                                                      \
            double cs, cd;                                                                         \
            chunk_##SFX(xc, rc, cm, &cs, &cd);                                                     \
            xx += cs;                                                                              \
            xr += cd;                                                                              \
        }                                                                                          \
        out[0] = xx;                                                                               \
        out[1] = xr;                                                                               \
    }

DEFINE_KERNELS(float, f32, vf32, 16, sqrtf)
DEFINE_KERNELS(double, f64, vf64, 8, sqrt)

/* ------------------------------------------------------- blocks, threads */

#ifdef _OPENMP
static int use_openmp = 1;
#else
static int use_openmp = 0;
#endif

typedef enum { MEASURE, FINISH, ADAM_MEASURE, ADAM_UPDATE } kind_t;

typedef struct {
    int64_t tensor;
    int64_t start;
    int64_t len;
} block_t;

typedef struct {
    kind_t kind;
    int is_double;
    int64_t ntensors;
    const int64_t *numel;
    /* per tensor pointers; meaning by kind:
     *   MEASURE:      g, x, R (may be NULL), snap
     *   FINISH:       p, snap, R
     *   ADAM_MEASURE: g, x, R; x[t] is only read where need_x[t]
     *   ADAM_UPDATE:  x, g, m, v, R */
    void *const *t[5];
    const int8_t *need_x; /* ADAM_MEASURE */
    const double *coef;   /* FINISH: a, d per tensor (2 each); ADAM_UPDATE: NCOEF each */
    double e;             /* FINISH */
    int nsums;            /* sums per block: 4, 0, 4, 2 */
    block_t *blocks;
    double *partial; /* nsums per block */
    int64_t nblocks;
    int64_t next; /* the next block to take (atomic) */
} job_t;


/* tensor `ten`'s pointer number `which`, offset by `off` elements, or NULL */
#define PTR(job, which, ten, off, T) \
    ((job)->t[which][ten] ? (T *)(job)->t[which][ten] + (off) : (T *)NULL)

static void run_block(job_t *job, int64_t b) {
    const block_t *blk = &job->blocks[b];
    int64_t t = blk->tensor, o = blk->start, n = blk->len;
    double *out = job->partial ? job->partial + job->nsums * b : NULL;
    const double *k = job->coef;
    switch (job->kind) {
    case MEASURE:
    case ADAM_MEASURE: {
        int with_x = job->kind == MEASURE || job->need_x[t];
        if (job->is_double)
            measure_f64(PTR(job, 0, t, o, const double), with_x ? PTR(job, 1, t, o, const double) : NULL,
                        PTR(job, 2, t, o, const double),
                        job->kind == MEASURE ? PTR(job, 3, t, o, double) : NULL, n, out);
        else
            measure_f32(PTR(job, 0, t, o, const float), with_x ? PTR(job, 1, t, o, const float) : NULL,
                        PTR(job, 2, t, o, const float),
                        job->kind == MEASURE ? PTR(job, 3, t, o, float) : NULL, n, out);
        break;
    }
    case FINISH:
        if (job->is_double)
            finish_f64(PTR(job, 0, t, o, double), PTR(job, 1, t, o, const double),
                       PTR(job, 2, t, o, double), n, k[2 * t], job->e, k[2 * t + 1]);
        else
            finish_f32(PTR(job, 0, t, o, float), PTR(job, 1, t, o, const float),
                       PTR(job, 2, t, o, float), n, (float)k[2 * t], (float)job->e,
                       (float)k[2 * t + 1]);
        break;
    case ADAM_UPDATE:
        if (job->is_double)
            adam_f64(PTR(job, 0, t, o, double), PTR(job, 1, t, o, const double),
                     PTR(job, 2, t, o, double), PTR(job, 3, t, o, double), PTR(job, 4, t, o, double),
                     n, k + NCOEF * t, out);
        else
            adam_f32(PTR(job, 0, t, o, float), PTR(job, 1, t, o, const float),
                     PTR(job, 2, t, o, float), PTR(job, 3, t, o, float), PTR(job, 4, t, o, float),
                     n, k + NCOEF * t, out);
        break;
    }
}

/* Take blocks until none is left. Blocks are handed out one at a time, so a
 * thread that the OS runs late (a busy machine) delays the call by about one
 * block, not by its share; which thread runs a block does not change any sum
 * (each block's sums have their own slot). */
static void *work(void *arg) {
    job_t *job = (job_t *)arg;
    for (;;) {
        int64_t b = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (b >= job->nblocks) return NULL;
        run_block(job, b);
    }
}

/* Cut every tensor into blocks, run them on nthreads threads (the caller is
 * one of them), then add each tensor's block sums in order into
 * out[nsums * t + j]. Returns 0, or -1 when out of memory. */
static int run(job_t *job, int nthreads, double *out) {
    int64_t nb = 0;
    for (int64_t t = 0; t < job->ntensors; ++t) nb += (job->numel[t] + BLOCK - 1) / BLOCK;
    job->nblocks = nb;
    size_t nb1 = (size_t)(nb > 0 ? nb : 1);
    job->blocks = (block_t *)malloc(nb1 * sizeof(block_t));
    job->partial = job->nsums ? (double *)calloc(nb1 * (size_t)job->nsums, sizeof(double)) : NULL;
    if (!job->blocks || (job->nsums && !job->partial)) {
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
    job->next = 0;
    if (nthreads == 1) {
        work(job);
    } else if (use_openmp) {
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
        work(job); /* a team smaller than asked just takes more blocks each */
#endif
    } else {
        pthread_t threads[MAX_THREADS];
        int started[MAX_THREADS] = {0};
        for (int i = 1; i < nthreads; ++i)
            started[i] = pthread_create(&threads[i], NULL, work, job) == 0;
        work(job); /* threads that could not start leave their blocks to the others */
        for (int i = 1; i < nthreads; ++i)
            if (started[i]) pthread_join(threads[i], NULL);
    }

    int ns = job->nsums;
    b = 0;
    for (int64_t t = 0; t < job->ntensors && ns; ++t) {
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        for (; b < nb && job->blocks[b].tensor == t; ++b)
            for (int j = 0; j < ns; ++j) acc[j] += job->partial[ns * b + j];
        for (int j = 0; j < ns; ++j) out[ns * t + j] = acc[j];
    }
    free(job->blocks);
    free(job->partial);
    return 0;
}

/* --------------------------------------------------------------- entry points */

/* out[4 t + k] = (|g_t|^2, |x_t|^2, <g_t, R_t>, <x_t, R_t>)[k]; snap_t = x_t.
 * r[t] may be NULL (a parameter without state yet): its two dots are 0. */
int mechanic_measure(int is_double, int64_t ntensors, const int64_t *numel, void *const *g,
                     void *const *x, void *const *r, void *const *snap, double *out,
                     int nthreads) {
    job_t job = {.kind = MEASURE, .is_double = is_double, .ntensors = ntensors, .numel = numel,
                 .t = {g, x, r, snap}, .nsums = 4};
    return run(&job, nthreads, out);
}

/* u = p - snap; R' = R + a_t u; p' = snap + e u + d_t R' (in place on p and R);
 * ad[2 t], ad[2 t + 1] = a_t, d_t. */
int mechanic_finish(int is_double, int64_t ntensors, const int64_t *numel, void *const *p,
                    void *const *snap, void *const *r, const double *ad, double e,
                    int nthreads) {
    job_t job = {.kind = FINISH, .is_double = is_double, .ntensors = ntensors, .numel = numel,
                 .t = {p, snap, r}, .coef = ad, .e = e};
    return run(&job, nthreads, NULL);
}

/* out[4 t + k] as mechanic_measure, without a snapshot; |x_t|^2 and <x_t, R_t>
 * only where need_x[t] (0 elsewhere). */
int mechanic_adam_measure(int is_double, int64_t ntensors, const int64_t *numel, void *const *g,
                          void *const *x, void *const *r, const int8_t *need_x, double *out,
                          int nthreads) {
    job_t job = {.kind = ADAM_MEASURE, .is_double = is_double, .ntensors = ntensors,
                 .numel = numel, .t = {g, x, r}, .need_x = need_x, .nsums = 4};
    return run(&job, nthreads, out);
}

/* Adam (coefficients coef[NCOEF t + K_*]) and Mechanic's update in place on x,
 * m, v, R; out[2 t + k] = (|x'_t|^2, <x'_t, R'_t>)[k]. */
int mechanic_adam_update(int is_double, int64_t ntensors, const int64_t *numel, void *const *x,
                         void *const *g, void *const *m, void *const *v, void *const *r,
                         const double *coef, double *out, int nthreads) {
    job_t job = {.kind = ADAM_UPDATE, .is_double = is_double, .ntensors = ntensors,
                 .numel = numel, .t = {x, g, m, v, r}, .coef = coef, .nsums = 2};
    return run(&job, nthreads, out);
}

/* Threads for calls with nthreads > 1: want 1 an OpenMP team (when built with
 * OpenMP), 0 pthreads, -1 leaves it; returns what is used now (1 or 0). */
int mechanic_threading(int want) {
#ifdef _OPENMP
    if (want >= 0) use_openmp = want != 0;
#else
    (void)want;
#endif
    return use_openmp;
}

/* NCOEF, for the binding to check its table against. */
int mechanic_adam_ncoef(void) { return NCOEF; }
