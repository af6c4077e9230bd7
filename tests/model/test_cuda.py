"""CUDA provider: parity with the CPU over consecutive blocks, with and without CUDA graphs,
and reset / swap under graphs. Skipped with the reason where CUDA does not load."""

import numpy as np
import pytest

from rtupscale.engine import Engine
from rtupscale.model.runner import ModelRunner, cuda_unavailable_reason
from tests.signals import run_blocks, tone

REASON = cuda_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"no CUDA: {REASON}")]

BLOCK = 256
BLOCKS = 100


@pytest.fixture
def signal(rng):
    return (0.3 * rng.standard_normal((2, BLOCK * BLOCKS))).astype(np.float32)


@pytest.mark.parametrize("graph", [False, True])
def test_cuda_equals_cpu_over_100_blocks(fir_model, signal, graph):
    cpu = ModelRunner(fir_model, "cpu")
    gpu = ModelRunner(fir_model, "cuda", cuda_graph=graph)
    assert gpu.provider == "cuda"
    assert gpu.cuda_graph == graph, "the test model must be capturable as a CUDA graph"
    a = run_blocks(cpu.stream(2, BLOCK).process, signal, BLOCK)
    b = run_blocks(gpu.stream(2, BLOCK).process, signal, BLOCK)
    assert np.abs(a - b).max() <= 1e-4


def test_reset_under_graphs_matches_cpu(fir_model, signal):
    cpu = ModelRunner(fir_model, "cpu").stream(2, BLOCK)
    gpu = ModelRunner(fir_model, "cuda", cuda_graph=True).stream(2, BLOCK)
    outs_c, outs_g = [], []
    for k in range(BLOCKS):
        if k in (17, 50):
            cpu.reset()
            gpu.reset()
        block = signal[:, k * BLOCK:(k + 1) * BLOCK]
        outs_c.append(cpu.process(block).copy())
        outs_g.append(gpu.process(block).copy())
    assert np.abs(np.concatenate(outs_c, 1) - np.concatenate(outs_g, 1)).max() <= 1e-4


def test_snapshot_restore_under_graphs(fir_model, signal):
    gpu = ModelRunner(fir_model, "cuda", cuda_graph=True).stream(2, BLOCK)
    for k in range(10):
        gpu.process(signal[:, k * BLOCK:(k + 1) * BLOCK])
    snap = gpu.snapshot()
    tail = signal[:, 10 * BLOCK:20 * BLOCK]
    first = run_blocks(gpu.process, tail, BLOCK)
    gpu.restore(snap)
    assert np.abs(run_blocks(gpu.process, tail, BLOCK) - first).max() <= 1e-6


def test_engine_swap_and_reset_under_graphs(fir_model, quiet_model):
    x = tone(440, 44100, BLOCK * BLOCKS, amp=0.5)
    engines = [Engine(2, 44100, BLOCK, ModelRunner(quiet_model, p)) for p in ("cpu", "cuda")]
    new = [ModelRunner(fir_model, p) for p in ("cpu", "cuda")]
    outs = [[], []]
    for k in range(BLOCKS):
        for e, eng in enumerate(engines):
            if k == 20:
                eng.swap_runner(new[e])
            if k == 60:
                eng.request_reset()
            outs[e].append(eng.process(x[:, k * BLOCK:(k + 1) * BLOCK]).copy())
    a, b = (np.concatenate(o, 1) for o in outs)
    assert engines[1].counters.swaps == 1 and engines[1].counters.resets == 1
    assert np.abs(a - b).max() <= 1e-4
