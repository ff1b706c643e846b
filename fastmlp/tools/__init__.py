"""Tools over the library: ``train`` (the train and evaluate commands), ``bench``
(CPU timings against NumPy and PyTorch), ``profile`` (per-kernel times of a
training step on cpu and cuda), ``compare`` (the lecture recipe by numerical
derivative and by backprop), ``machine`` (what the machine is) and
``cuda_diagnostics``. The ``fastmlp`` command runs them; nothing in the library
imports them."""
