"""cffi builder of ``rtupscale.audio._pulse_native`` (the C streams of :mod:`.pulse_stream`).

Run by ``pip install`` (``setup.py``: ``cffi_modules``); it needs a C compiler and
libpulse's headers (Debian: ``gcc libpulse-dev``, which ``scripts/setup`` installs).
"""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = (HERE / "pulse_stream.h").read_text()

ffi = FFI()
# the header minus the preprocessor lines is exactly the API cffi needs
ffi.cdef("\n".join(line for line in HEADER.splitlines() if not line.lstrip().startswith("#")))
ffi.set_source(
    "rtupscale.audio._pulse_native",
    '#include "pulse_stream.h"',
    # relative to the repository root when pip builds it (setuptools wants relative paths)
    sources=[os.path.relpath(HERE / "pulse_stream.c")],
    include_dirs=[str(HERE)],
    libraries=["pulse"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
