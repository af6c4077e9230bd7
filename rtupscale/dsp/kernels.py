"""The C loops of ``native/dsp_kernels.c``, where they are built.

:class:`~rtupscale.dsp.interp.Interpolator` and :class:`~rtupscale.audio.drift.RateAdjuster`
use them when :func:`available`; otherwise (no C compiler at install) their numpy code,
which stays the reference the C is tested against (``tests/dsp/test_kernels.py``).
"""

from __future__ import annotations

import numpy as np

try:
    from rtupscale.dsp import _dsp_native as _native
except ImportError as e:  # not built
    _native = None
    _IMPORT_ERROR = str(e)
else:
    _IMPORT_ERROR = ""


def available() -> bool:
    return _native is not None


def why_not() -> str:
    """Why the C loops are not in use ('' if they are)."""
    return "" if _native is not None else f"rtupscale's C DSP loops are not built ({_IMPORT_ERROR}): numpy is used"


def resolve(native: bool | None) -> bool:
    """Whether a class uses the C loops: where they are built (None), or as asked (True
    raises RuntimeError where they are not)."""
    if native is None:
        return available()
    if native and not available():
        raise RuntimeError(why_not())
    return bool(native)


def float_ptr(arr: np.ndarray):
    """A ``float *`` to a C-contiguous float32 array (held alive by the returned object:
    keep it as long as the pointer is used)."""
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        raise ValueError(f"need a C-contiguous float32 array, got {arr.dtype} {arr.flags.c_contiguous}")
    return _native.ffi.cast("float *", _native.ffi.from_buffer(arr))


def interp4(buf_p, buf_stride: int, channels: int, n: int, rev_p, taps: int, out_p, out_stride: int) -> None:
    _native.lib.rtu_interp4(buf_p, buf_stride, channels, n, rev_p, taps, out_p, out_stride)


def sinc_read(buf_p, buf_stride: int, channels: int, t: float, step: float, n: int, table_p, slope_p,
              phases: int, taps: int, out_p) -> None:
    _native.lib.rtu_sinc_read(buf_p, buf_stride, channels, t, step, n, table_p, slope_p, phases, taps, out_p)
