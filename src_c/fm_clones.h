/* One function compiled for each SIMD level and chosen by fm_gemm_level() on each
   call, for loops that the compiler vectorizes: the extension is built for the
   baseline instruction set, so without this they would run 4 floats wide on any
   CPU. Only for elementwise work and sums in a fixed order, whose results do not
   depend on the vector width (and the extension is built with
   -ffp-contract=off, so no level fuses a product and a sum that another does
   not). Not a public header.

   FM_LEVEL_CLONES(NAME, PARAMS, ARGS) defines static void NAME PARAMS, which runs
   the static inline void NAME##_body PARAMS (defined before it, with
   FM_CLONE_BODY) compiled for AVX-512, AVX2 or the baseline; ARGS lists the
   parameters' names in parentheses. */
#ifndef FASTMLP_CLONES_H
#define FASTMLP_CLONES_H

#include "fm_ids.h"
#include "gemm.h"

#define FM_CLONE_CAT_(a, b) a##b
#define FM_CLONE_CAT(a, b) FM_CLONE_CAT_(a, b)

#define FM_CLONE_BODY __attribute__((always_inline)) static inline void

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FM_LEVEL_CLONES(NAME, PARAMS, ARGS)                                            \
    __attribute__((target("avx512f"))) static void FM_CLONE_CAT(NAME, _avx512) PARAMS  \
    {                                                                                  \
        FM_CLONE_CAT(NAME, _body) ARGS;                                                \
    }                                                                                  \
    __attribute__((target("avx2"))) static void FM_CLONE_CAT(NAME, _avx2) PARAMS       \
    {                                                                                  \
        FM_CLONE_CAT(NAME, _body) ARGS;                                                \
    }                                                                                  \
    static void NAME PARAMS                                                            \
    {                                                                                  \
        int level = fm_gemm_level();                                                   \
        if (level == FM_LEVEL_AVX512)                                                  \
            FM_CLONE_CAT(NAME, _avx512) ARGS;                                          \
        else if (level == FM_LEVEL_AVX2)                                               \
            FM_CLONE_CAT(NAME, _avx2) ARGS;                                            \
        else                                                                           \
            FM_CLONE_CAT(NAME, _body) ARGS;                                            \
    }
#else
#define FM_LEVEL_CLONES(NAME, PARAMS, ARGS)                                            \
    static void NAME PARAMS { FM_CLONE_CAT(NAME, _body) ARGS; }
#endif

#endif
