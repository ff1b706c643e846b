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

#endif
