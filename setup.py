# Everything is in pyproject.toml; this file only adds the C extensions (cffi builds them).
from setuptools import setup

setup(
    cffi_modules=[
        "rtupscale/audio/native/build.py:ffi",
        "rtupscale/audio/native/build_awake.py:ffi",
        "rtupscale/dsp/native/build.py:ffi",
    ]
)
