"""The collector's pauses: settle() leaves a full collection almost nothing to walk, and
GcPauses counts every collection (see rtupscale.audio.gcpause)."""

import gc

import pytest

from rtupscale.audio import gcpause


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()


def test_settle_freezes_what_a_full_collection_would_walk(unfrozen):
    junk = [[i] for i in range(50_000)]  # long-lived containers, as a loaded daemon has
    walked_before = len(gc.get_objects())
    assert walked_before > 50_000
    gcpause.settle()
    walked_after = len(gc.get_objects())
    assert gc.get_freeze_count() >= 50_000
    # what a collection walks now is what was made since the freeze: almost nothing
    assert walked_after < walked_before / 20, (walked_before, walked_after)
    # objects made after the freeze are still collected (cycles included)
    a = []
    a.append(a)
    del a
    assert gc.collect() >= 1
    del junk


def test_freeze_does_not_collect(unfrozen):
    pauses = gcpause.GcPauses()
    pauses.install()
    try:
        gcpause.freeze()
        assert pauses.collections == [0, 0, 0]
    finally:
        pauses.uninstall()


def test_every_collection_is_counted_and_timed():
    pauses = gcpause.GcPauses()
    pauses.install()
    try:
        gc.collect(0)
        gc.collect(2)
        assert pauses.collections[0] >= 1 and pauses.collections[2] >= 1
        assert pauses.max_s > 0
        snap = pauses.snapshot()
        assert snap["collections"] == pauses.collections and snap["max_ms"] >= 0
    finally:
        pauses.uninstall()
    before = list(pauses.collections)
    gc.collect(0)
    assert pauses.collections == before  # uninstalled: no longer called
    assert pauses._callback not in gc.callbacks


def test_the_settle_before_a_session_is_not_counted(unfrozen):
    pauses = gcpause.GcPauses()
    pauses.install()
    try:
        pauses.settle()  # the daemon's, before the worker starts: not a pause it feels
        assert pauses.collections == [0, 0, 0] and pauses.max_s == 0.0
        assert gc.get_freeze_count() > 0
        gc.collect(1)
        assert pauses.collections[1] == 1  # counting goes on after it
    finally:
        pauses.uninstall()
