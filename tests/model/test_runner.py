"""ONNX runner: carried state, streaming equals offline, snapshot/restore, windowed OLA."""

import numpy as np
import pytest

from rtupscale.model.contract import ModelError
from rtupscale.model.runner import ModelRunner, cuda_unavailable_reason
from tests.onnx_models import reference_fir
from tests.signals import run_blocks

N = 10000  # not a multiple of any block size below


@pytest.fixture
def noise(rng):
    return (0.3 * rng.standard_normal((2, N))).astype(np.float32)


def _offline(runner, x):
    """One call over the whole signal (padded to the block multiple)."""
    m = runner.contract.block_multiple
    pad = (-x.shape[1]) % m
    xp = np.concatenate([x, np.zeros((x.shape[0], pad), np.float32)], axis=1)
    return runner.stream(x.shape[0], xp.shape[1]).process(xp)[:, : 4 * x.shape[1]].copy()


@pytest.mark.parametrize("block", [64, 256, 1024, 16 * 37])
def test_stateful_streaming_equals_offline(fir_model, noise, block):
    runner = ModelRunner(fir_model)
    once = _offline(runner, noise)
    streamed = run_blocks(runner.stream(2, block).process, noise, block)
    assert np.abs(streamed - once).max() <= 1e-5


def test_offline_matches_reference_computation(fir_model, noise):
    runner = ModelRunner(fir_model)
    y = _offline(runner, noise)
    lat = 4 * runner.latency
    ref = reference_fir(noise)
    assert np.abs(y[:, lat:] - ref[:, : ref.shape[1] - lat]).max() <= 1e-5


def test_dropping_state_breaks_equality(fir_model, noise):
    """The streaming test above can fail: a runner that resets state every block differs."""
    runner = ModelRunner(fir_model)
    once = _offline(runner, noise)
    stream = runner.stream(2, 256)

    def forgetful(block):
        stream.reset()
        return stream.process(block)

    assert np.abs(run_blocks(forgetful, noise, 256) - once).max() > 1e-2


def test_snapshot_restore_gives_same_continuation(fir_model, noise):
    stream = ModelRunner(fir_model).stream(2, 256)
    for i in range(10):
        stream.process(noise[:, i * 256:(i + 1) * 256])
    snap = stream.snapshot()
    tail = noise[:, 2560:2560 + 8 * 256]
    first = run_blocks(stream.process, tail, 256)
    stream.restore(snap)
    again = run_blocks(stream.process, tail, 256)
    assert np.array_equal(first, again)
    stream.reset()
    assert np.abs(run_blocks(stream.process, tail, 256) - first).max() > 1e-2


def test_block_size_must_be_multiple(fir_model):
    runner = ModelRunner(fir_model)
    with pytest.raises(ModelError, match="not a multiple of the model's block multiple 16"):
        runner.stream(2, 250)


@pytest.mark.parametrize("block", [64, 128, 640])
def test_windowed_overlap_add_is_seamless(windowed_model, rng, block):
    """Sample-and-hold windows overlap-added with complementary fades give the plain hold."""
    runner = ModelRunner(windowed_model)
    x = (0.3 * rng.standard_normal((2, 6400))).astype(np.float32)
    y = run_blocks(runner.stream(2, block).process, x, block)
    lat = 4 * runner.latency
    hold = 0.8 * np.repeat(x, 4, axis=1)
    assert np.abs(y[:, lat:] - hold[:, : hold.shape[1] - lat]).max() <= 1e-6


def test_cpu_provider_reports_truth(fir_model):
    runner = ModelRunner(fir_model, provider="auto")
    if cuda_unavailable_reason() is not None:
        assert runner.provider == "cpu"
        assert runner.session.get_providers()[0] == "CPUExecutionProvider"


def test_cuda_request_falls_back_with_reason(fir_model, caplog):
    reason = cuda_unavailable_reason()
    if reason is None:
        pytest.skip("CUDA loads on this machine")
    with caplog.at_level("WARNING"):
        runner = ModelRunner(fir_model, provider="cuda")
    assert runner.provider == "cpu"
    assert any("CUDA is unavailable" in r.message for r in caplog.records)


@pytest.mark.parametrize("blocks_before", [3, 4])
def test_snapshot_after_odd_and_even_block_counts(fir_model, noise, blocks_before):
    """The ping-pong phase flips every block; a snapshot must read the live buffer set."""
    stream = ModelRunner(fir_model).stream(2, 256)
    for i in range(blocks_before):
        stream.process(noise[:, i * 256:(i + 1) * 256])
    snap = stream.snapshot()
    tail = noise[:, 2048:2048 + 4 * 256]
    first = run_blocks(stream.process, tail, 256)
    other = ModelRunner(fir_model).stream(2, 256)
    other.process(noise[:, :256])  # put it in the opposite phase
    other.restore(snap)
    assert np.array_equal(run_blocks(other.process, tail, 256), first)


def test_each_stream_gets_its_own_graph_ids(fir_model):
    runner = ModelRunner(fir_model)
    assert runner.next_graph_ids() != runner.next_graph_ids()


def test_auto_without_cuda_picks_cpu_and_says_why(fir_model, caplog):
    from rtupscale.model.runner import select_runner

    if cuda_unavailable_reason() is None:
        pytest.skip("CUDA loads here: auto measures instead")
    with caplog.at_level("INFO", logger="rtupscale.model"):
        runner = select_runner(fir_model, "auto", threads=1, channels=2, block_size=256)
    assert runner.provider == "cpu"
    assert any("model.provider auto: CPU (" in r.message and "CUDA" in r.message for r in caplog.records)


def test_threads_capped_at_cores(fir_model):
    import os

    runner = ModelRunner(fir_model, threads=64)
    opts = runner.session.get_session_options()
    assert opts.intra_op_num_threads == min(64, os.cpu_count())


def test_a_second_stream_reuses_the_rest_state_exactly(noise):
    """File mode makes a stream per file: the rest state (2 s of silence from zeros) is
    computed once per shape and reused; the output is that of a stream that ran it."""
    from pathlib import Path

    model = Path(__file__).resolve().parents[2] / "models" / "rtupscale-restore-v2.onnx"  # recurrent: rests off zero
    fresh = ModelRunner(model).stream(2, 1024)
    runner = ModelRunner(model)
    runner.stream(2, 1024)
    calls = []
    real = runner.session.run_with_iobinding
    runner.session.run_with_iobinding = lambda *a: (calls.append(1), real(*a))[1]
    second = runner.stream(2, 1024)
    assert len(calls) == 1  # one shape-checking block, not the silence run again
    assert any(np.abs(t).max() > 1e-6 for t in second.snapshot().tensors.values())
    np.testing.assert_array_equal(run_blocks(second.process, noise, 1024), run_blocks(fresh.process, noise, 1024))
