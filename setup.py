"""Build the compiled CPU engine (Cython + OpenMP, with C helpers from src_c/).

Where the compiler has no OpenMP, the extension is still built, serial, and a
warning says so.
"""

import os
import shutil
import sys
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def _openmp_flags(compiler_type):
    """Candidate (compile, link) flag pairs for this compiler, most likely first."""
    if compiler_type == "msvc":
        return [(["/openmp"], [])]
    if sys.platform == "darwin":
        return [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    return [(["-fopenmp"], ["-fopenmp"])]


def _compiles_and_links(compiler, cflags, ldflags):
    tmp = tempfile.mkdtemp(prefix="fastmlp-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objects = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
        compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=ldflags)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        ctype = self.compiler.compiler_type
        # -ffp-contract=off: no product and sum is fused unless the code says so (fma()
        # and FMA intrinsics), so the bits do not depend on the compiler, -march or the
        # instruction set (MSVC does not fuse without /fp:fast).
        opt = ["/O2"] if ctype == "msvc" else ["-O3", "-fno-math-errno", "-ffp-contract=off"]
        cflags, ldflags = [], []
        if os.environ.get("FASTMLP_NO_OPENMP"):
            warnings.warn("FASTMLP_NO_OPENMP is set: building fastmlp without OpenMP (serial).",
                          stacklevel=1)
        else:
            for cf, lf in _openmp_flags(ctype):
                if _compiles_and_links(self.compiler, cf, lf):
                    cflags, ldflags = cf, lf
                    break
            else:
                warnings.warn(
                    "The C compiler does not support OpenMP: fastmlp's cpu backend is built "
                    "serial (one thread). Install a compiler with OpenMP for parallel kernels.",
                    stacklevel=1,
                )
        # FASTMLP_SANITIZE="-fsanitize=..." (.ci/sanitize): flags for the extension's
        # compile and link only, not for the OpenMP probe above.
        san = os.environ.get("FASTMLP_SANITIZE", "").split()
        for ext in self.extensions:
            ext.extra_compile_args = opt + cflags + san + list(ext.extra_compile_args or [])
            ext.extra_link_args = ldflags + san + list(ext.extra_link_args or [])
        super().build_extensions()


extensions = [
    Extension(
        "fastmlp._cpu",
        sources=["fastmlp/_cpu.pyx", "src_c/cpu_features.c", "src_c/fm_ids.c", "src_c/gemm.c",
                 "src_c/rows.c", "src_c/update.c", "src_c/numdiff.c", "src_c/step.c",
                 "src_c/peak.c"],
        depends=["src_c/act_impl.h", "src_c/fm_ids.h", "src_c/fm_math.h", "src_c/gemm.h",
                 "src_c/gemm_impl.h", "src_c/fm_clones.h", "src_c/cpu_features.h",
                 "src_c/rows.h", "src_c/rows_impl.h",
                 "src_c/update.h", "src_c/numdiff.h", "src_c/numdiff_impl.h",
                 "src_c/step.h", "src_c/step_impl.h", "src_c/fm_team.h"],
        include_dirs=[numpy.get_include(), "src_c"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
