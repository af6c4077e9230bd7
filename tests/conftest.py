"""Shared fixtures: small contract models written once per session."""

from __future__ import annotations

import numpy as np
import pytest

from tests import onnx_models


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def fir_model(model_dir):
    """Stateful test model: high-shelf FIR + x4 interpolation, two carried states."""
    return onnx_models.stateful_fir(model_dir / "fir.onnx")


@pytest.fixture(scope="session")
def quiet_model(model_dir):
    """Same model at 0.6x gain: clearly different from the bypass path (for step tests)."""
    return onnx_models.stateful_fir(model_dir / "quiet.onnx", gain=0.6)


@pytest.fixture(scope="session")
def hot_model(model_dir):
    """+3 dB gain: inside the guard, so only the soft clipper keeps it under the ceiling."""
    return onnx_models.stateful_fir(model_dir / "hot.onnx", gain=1.41)


@pytest.fixture(scope="session")
def loud_model(model_dir):
    """+20 dB gain: a runaway model the guard must replace."""
    return onnx_models.stateful_fir(model_dir / "loud.onnx", gain=10.0)


@pytest.fixture(scope="session")
def nan_model(model_dir):
    return onnx_models.stateful_fir(model_dir / "nan.onnx", nan=True)


@pytest.fixture(scope="session")
def windowed_model(model_dir):
    return onnx_models.windowed_hold(model_dir / "hold.onnx")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
