/* Scalar functions that several kernels use, each written once.

   They are macros that define a static inline function for one type and one
   way of computing, because two float32 paths compute them differently and
   both are kept bitwise as they have always been:
   - the matrix product's fused epilogue works in float (expf, float literals);
   - the row kernels (activations, losses) take exp, log and tanh in double and
     round, with double literals, as C does for `1.0 + (float)x`.
   Measured over every finite float, the two sigmoids differ in the last bit
   for 83,489 of 4.28e9 inputs. In double they are the same function. */
#ifndef FASTMLP_MATH_H
#define FASTMLP_MATH_H

#include <math.h>
#include <stddef.h>

/* sigmoid(z) = 1 / (1 + exp(-z)), taking exp of a non-positive number only, so
   that nothing overflows. ONE is the literal 1 of the path (1 or 1.0). */
#define FM_DEFINE_SIGMOID(NAME, T, ONE, EXP)                                           \
    static inline T NAME(T z)                                                          \
    {                                                                                  \
        T e;                                                                           \
        if (z >= 0)                                                                    \
            return ONE / (ONE + (T)EXP(-z));                                           \
        e = (T)EXP(z);                                                                 \
        return e / (ONE + e);                                                          \
    }

/* softplus(z) = log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)), without overflow,
   the logarithm taken in double. */
#define FM_DEFINE_SOFTPLUS(NAME, T)                                                    \
    static inline T NAME(T z)                                                          \
    {                                                                                  \
        T m = z > 0 ? z : 0;                                                           \
        return m + (T)log1p(exp(-fabs(z)));                                            \
    }

/* Does the prediction a match the target y over M outputs: the same largest
   entry (the first of equals), or for one output both on the same side of 0.5?
   The one definition of a hit, for the losses and the numerical trainer. */
#define FM_DEFINE_HIT(NAME, T)                                                         \
    static inline int NAME(const T *a, const T *y, ptrdiff_t M)                        \
    {                                                                                  \
        ptrdiff_t ja = 0, jy = 0;                                                      \
        if (M == 1)                                                                    \
            return (a[0] >= 0.5) == (y[0] >= 0.5);                                     \
        for (ptrdiff_t j = 1; j < M; j++) {                                            \
            if (a[j] > a[ja])                                                          \
                ja = j;                                                                \
            if (y[j] > y[jy])                                                          \
                jy = j;                                                                \
        }                                                                              \
        return ja == jy;                                                               \
    }

/* float in float (the epilogue), float through double (the row kernels), double. */
FM_DEFINE_SIGMOID(fm_sigmoid_s, float, 1, expf)
FM_DEFINE_SIGMOID(fm_sigmoid_sd, float, 1.0, exp)
FM_DEFINE_SIGMOID(fm_sigmoid_d, double, 1.0, exp)
FM_DEFINE_SOFTPLUS(fm_softplus_s, float)
FM_DEFINE_SOFTPLUS(fm_softplus_d, double)
FM_DEFINE_HIT(fm_hit_s, float)
FM_DEFINE_HIT(fm_hit_d, double)

#endif
