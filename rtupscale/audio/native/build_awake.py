"""cffi builder of ``rtupscale.audio._awake_native`` (``cpu_awake.c``: the spinners of
``latency.keep_cpus_awake``).

Run by ``pip install`` (``setup.py``: ``cffi_modules``); it needs only a C compiler and
pthreads. Without it, :mod:`rtupscale.audio.cpuawake` says the option is unavailable.
"""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = (HERE / "cpu_awake.h").read_text()

ffi = FFI()
ffi.cdef(HEADER)  # cffi drops the comment
ffi.set_source(
    "rtupscale.audio._awake_native",
    '#include "cpu_awake.h"',
    sources=[os.path.relpath(HERE / "cpu_awake.c")],
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
    extra_link_args=["-pthread"],
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
