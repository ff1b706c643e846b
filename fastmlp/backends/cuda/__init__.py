"""The ``cuda`` backend: Numba CUDA kernels on an NVIDIA GPU.

* :mod:`.ops`: the backend's functions (see ``fastmlp.backends``) on device arrays;
* :mod:`.kernels`: the CUDA kernels they launch; :mod:`.shuffle`: the device shuffle;
* :mod:`.trainer`: ``fit``'s runner, resident on the GPU;
* :mod:`.backend`: the backend module ``fastmlp.backends.get_backend("cuda")`` loads.

Importing ``backend`` raises ``ImportError`` with the reason when numba-cuda, the driver
or a GPU is missing. With ``NUMBA_ENABLE_CUDASIM=1`` the kernels run in Numba's
CUDA simulator instead, on the CPU, slowly: that is how they are tested without
a GPU.
"""
