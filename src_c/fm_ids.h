/* The ids every layer of fastmlp shares: the C kernels, the Cython bindings,
   the Python table (fastmlp.functions, checked against this header by a test)
   and the CUDA kernels, which take theirs from that table.

   Each list is an X-macro, X(ID, "name"), in id order from 0: the enums and
   the names below are both made from it, so they cannot drift apart. */
#ifndef FASTMLP_IDS_H
#define FASTMLP_IDS_H

#define FM_ACTIVATION_LIST(X)                                                          \
    X(FM_LINEAR, "linear")                                                             \
    X(FM_RELU, "relu")                                                                 \
    X(FM_SIGMOID, "sigmoid")                                                           \
    X(FM_TANH, "tanh")                                                                 \
    X(FM_SOFTMAX, "softmax")                                                           \
    X(FM_LEAKY_RELU, "leaky_relu")

#define FM_LOSS_LIST(X)                                                                \
    X(FM_CROSS_ENTROPY, "cross_entropy")                                               \
    X(FM_BINARY_CROSS_ENTROPY, "binary_cross_entropy")                                 \
    X(FM_MSE, "mse")

/* Optimizer update rules (update.h). */
#define FM_RULE_LIST(X)                                                                \
    X(FM_SGD, "sgd")                                                                   \
    X(FM_MOMENTUM, "momentum")                                                         \
    X(FM_NESTEROV, "nesterov")                                                         \
    X(FM_RMSPROP, "rmsprop")                                                           \
    X(FM_ADAM, "adam")                                                                 \
    X(FM_ADAMW, "adamw")

/* Instruction-set levels of the SIMD kernels, lowest first. */
#define FM_LEVEL_LIST(X)                                                               \
    X(FM_LEVEL_SCALAR, "scalar")                                                       \
    X(FM_LEVEL_AVX2, "avx2")                                                           \
    X(FM_LEVEL_AVX512, "avx512")

#define FM_ID_ENUM_(id, name) id,
enum { FM_ACTIVATION_LIST(FM_ID_ENUM_) FM_N_ACTIVATIONS };
enum { FM_LOSS_LIST(FM_ID_ENUM_) FM_N_LOSSES };
enum { FM_RULE_LIST(FM_ID_ENUM_) FM_N_RULES };
enum { FM_LEVEL_LIST(FM_ID_ENUM_) FM_N_LEVELS };
#undef FM_ID_ENUM_

/* The tables, for fm_id_name. */
enum { FM_TABLE_ACTIVATIONS = 0, FM_TABLE_LOSSES = 1, FM_TABLE_RULES = 2,
       FM_TABLE_LEVELS = 3 };

/* The name of id `id` in `table` (FM_TABLE_*), or NULL past the table's end. */
const char *fm_id_name(int table, int id);

#endif
