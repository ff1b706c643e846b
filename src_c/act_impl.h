/* The elementwise activations and their derivatives, each written once. Included
   by gemm_impl.h (the fused epilogue) and rows_impl.h (the row kernels), each
   with its own T, FM_FN, FM_SIGMOID_FN, FM_TANH_FN and FM_ONE: the epilogue
   works in T (FM_ONE 1), the row kernels round from double (FM_ONE 1.0), as
   fm_math.h explains. Softmax is not elementwise: the row kernels do it. Not a
   public header. */

/* The slope of leaky_relu below 0 (fastmlp.functions.LEAKY_RELU_SLOPE). */
#define FM_LEAKY_RELU_SLOPE 0.01

/* act(z). */
static inline T FM_FN(fm_act)(int act, T z)
{
    switch (act) {
    case FM_RELU:
        return z > 0 ? z : 0;
    case FM_LEAKY_RELU:
        return z > 0 ? z : (T)FM_LEAKY_RELU_SLOPE * z;
    case FM_SIGMOID:
        return FM_SIGMOID_FN(z);
    case FM_TANH:
        return (T)FM_TANH_FN(z);
    default:
        return z;
    }
}

/* g times act'(z), given the activation's output a = act(z). */
static inline T FM_FN(fm_act_grad)(int act, T a, T g)
{
    switch (act) {
    case FM_RELU:
        return a > 0 ? g : 0;
    case FM_LEAKY_RELU:
        return a > 0 ? g : (T)FM_LEAKY_RELU_SLOPE * g;
    case FM_SIGMOID:
        return g * a * (FM_ONE - a);
    case FM_TANH:
        return g * (FM_ONE - a * a);
    default:
        return g;
    }
}
