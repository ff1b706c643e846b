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

/* float in float (the epilogue), float through double (the row kernels), double. */
FM_DEFINE_SIGMOID(fm_sigmoid_s, float, 1, expf)
FM_DEFINE_SIGMOID(fm_sigmoid_sd, float, 1.0, exp)
FM_DEFINE_SIGMOID(fm_sigmoid_d, double, 1.0, exp)
FM_DEFINE_SOFTPLUS(fm_softplus_s, float)
FM_DEFINE_SOFTPLUS(fm_softplus_d, double)

#endif
