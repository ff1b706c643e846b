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
#include <stdint.h>
#include <string.h>

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
        /* The first index of each row's max, by selects rather than branches (the   \
           maxima of a batch's rows fall at random places). */                        \
        ptrdiff_t ja = 0, jy = 0;                                                      \
        T ba = a[0], by = y[0];                                                        \
        if (M == 1)                                                                    \
            return (a[0] >= 0.5) == (y[0] >= 0.5);                                     \
        for (ptrdiff_t j = 1; j < M; j++) {                                            \
            ja = a[j] > ba ? j : ja;                                                   \
            ba = a[j] > ba ? a[j] : ba;                                                \
            jy = y[j] > by ? j : jy;                                                   \
            by = y[j] > by ? y[j] : by;                                                \
        }                                                                              \
        return ja == jy;                                                               \
    }

static inline ptrdiff_t fm_min(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }
static inline ptrdiff_t fm_max(ptrdiff_t a, ptrdiff_t b) { return a > b ? a : b; }

/* e^x rounded to float, for a float x: the float that (float)exp((double)x) gives,
   without the C library. Range reduction x = k ln2 + r (ln2 in two parts, the first
   with trailing zeros so that k times it is exact), e^r by its Taylor polynomial to
   r^12 / 12! (|r| <= ln2 / 2: truncation below 2^-47), times 2^k; basic double
   operations only (no fused multiply-add: the extension is compiled with
   -ffp-contract=off), so every machine and level gives the same bits. Measured on
   every one of the 2^32 floats, it gives the same float as glibc 2.36's exp, its
   double within 3 units in the last place of glibc's: the row kernels' softmax
   keeps the bits it had, and no longer depends on the C library's version
   (fm_exp_mismatches in rows.h checks a range of floats against the C library).
   rows.c runs it over a row's values in vectors. */
static inline float fm_exp_to_float(float xf)
{
    /* Adding 1.5 * 2^52 rounds to an integer k, in the low bits of the sum. */
    const double shift = 6755399441055744.0;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    uint32_t u, mag, nan, low, high, c;
    double x, t, k, r, p, scale;
    uint64_t bits;
    float f;
    /* Special values by masks on the bits, not branches, so that a loop of it
       vectorizes: beyond -110 and 100 float's result is 0 or inf whatever the exact
       value, so x is held there; a NaN gives itself, quieted (as the library does). */
    memcpy(&u, &xf, sizeof u);
    mag = u & 0x7fffffffu;
    nan = 0u - (uint32_t)(mag > 0x7f800000u);
    low = 0u - ((u >> 31) & (uint32_t)(mag > 0x42dc0000u));   /* below -110 */
    high = 0u - ((~u >> 31) & (uint32_t)(mag > 0x42c80000u)); /* above 100 */
    c = (u & ~(low | high)) | (0xc2dc0000u & low) | (0x42c80000u & high);
    memcpy(&f, &c, sizeof f);
    x = f;
    t = x * 1.44269504088896338700e+00 + shift;
    k = t - shift;
    r = (x - k * ln2_hi) - k * ln2_lo;
    p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* 2^k from the sum's bits: k + 1023 (mod 2^12) into the exponent field. */
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + 1023) << 52;
    memcpy(&scale, &bits, sizeof scale);
    f = (float)(p * scale);
    memcpy(&c, &f, sizeof c);
    c = (c & ~nan) | ((u | 0x00400000u) & nan);
    memcpy(&f, &c, sizeof f);
    return f;
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
