# Everything is in pyproject.toml; this file only adds the C extension (cffi builds it).
from setuptools import setup

setup(cffi_modules=["rtupscale/audio/native/build.py:ffi"])
