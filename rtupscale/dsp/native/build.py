"""cffi builder of ``rtupscale.dsp._dsp_native`` (the loops of ``dsp_kernels.c``).

Run by ``pip install`` (``setup.py``: ``cffi_modules``); it needs only a C compiler. If
the module is missing, :mod:`rtupscale.dsp.kernels` falls back to numpy.
"""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = (HERE / "dsp_kernels.h").read_text()

ffi = FFI()
ffi.cdef("\n".join(line for line in HEADER.splitlines() if not line.lstrip().startswith("#")))
ffi.set_source(
    "rtupscale.dsp._dsp_native",
    '#include "dsp_kernels.h"',
    sources=[os.path.relpath(HERE / "dsp_kernels.c")],
    include_dirs=[str(HERE)],
    libraries=["m"],
    # no -ffast-math: the sums keep their order, so a block split never changes a result
    extra_compile_args=["-O3", "-ffp-contract=off", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
