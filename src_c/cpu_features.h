/* What the running CPU supports, and OpenMP helpers that compile without OpenMP. */
#ifndef FASTMLP_CPU_FEATURES_H
#define FASTMLP_CPU_FEATURES_H

/* Best SIMD instruction set of the running CPU: "avx512", "avx2", "avx", "sse4.2",
   "sse2", "neon" or "scalar". */
const char *fm_simd_level(void);

/* 1 when the extension was compiled with OpenMP, else 0. */
int fm_have_openmp(void);

/* Threads the next parallel region will use (1 without OpenMP). */
int fm_get_max_threads(void);

/* Set the threads for later parallel regions; no effect without OpenMP. */
void fm_set_num_threads(int n);

/* The fused multiply-add peak: `threads` threads each run `iters` iterations of 16
   independent float FMA chains in registers at SIMD level `level` (FM_LEVEL_* of
   fm_ids.h, at most what the CPU has). Returns the flops done and sets *seconds
   to the wall time they took. */
double fm_fma_peak(int level, long iters, int threads, double *seconds);

/* The square-root-and-divide rate of the optimizer's updates: `threads` threads
   each run `iters` iterations of 8 independent float chains of x = 1 / (sqrt(x) +
   eps) in registers, with the instructions update.c uses at SIMD level `level`
   (AVX2 from AVX2 up, else scalar). Returns the elements computed (one square root
   and one division each) and sets *seconds. */
double fm_root_peak(int level, long iters, int threads, double *seconds);

/* Streaming bandwidth: `threads` threads copy their shares of src (n floats) to
   dst, or with dst NULL only read them, or with aux (and dst) read src, dst and
   aux and write dst and aux (the optimizer's pattern), `reps` times. Returns the
   bytes read and written and sets *seconds. */
double fm_stream_bandwidth(const float *src, float *dst, float *aux, long n, int reps,
                           int threads, double *seconds);

#endif
