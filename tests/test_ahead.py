"""Region maps made ahead of the model in a background thread (ratcli.inference.ahead):
in order, bounded, errors reach the caller, and a restore gives what maps made one by
one before each slice give."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from helpers import SMALL

from ratcli.inference.ahead import Ahead
from ratcli.inference.restorer import Restorer
from ratcli.io.image import Domain, Image
from ratcli.models import RATConfig, build_rat
from ratcli.regions import ClassicalPartitioner
from ratcli.regions.base import Partitioner
from ratcli.tasks import TASKS


def test_items_come_in_order_from_one_other_thread():
    seen: list[tuple[int, str]] = []

    def compute(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * i

    with Ahead(compute, 6, ahead=2) as ahead:
        assert [ahead.get(i) for i in range(6)] == [0, 1, 4, 9, 16, 25]
    assert [i for i, _ in seen] == list(range(6))
    assert {name for _, name in seen} == {"rat-ahead"}


def test_it_stays_at_most_ahead_items_past_the_last_one_asked_for():
    computed: list[int] = []
    ahead = Ahead(lambda i: computed.append(i) or i, 50, ahead=3)
    try:
        ahead.get(0)
        time.sleep(0.3)  # time for the thread to run on, if it wrongly did
        assert max(computed) == 3
        ahead.get(1)
        ahead.get(2)
        time.sleep(0.3)
        assert max(computed) == 5
    finally:
        ahead.close()


def test_an_error_is_raised_by_the_get_that_waits_for_its_item():
    def compute(i: int) -> int:
        if i == 2:
            raise ValueError("bad slice 2")
        return i

    with Ahead(compute, 5, ahead=4) as ahead:
        assert ahead.get(0) == 0 and ahead.get(1) == 1
        with pytest.raises(ValueError, match="bad slice 2"):
            ahead.get(2)


def test_close_stops_the_thread_and_later_gets_refuse():
    ahead = Ahead(lambda i: i, 1000, ahead=1)
    ahead.get(0)
    ahead.close()
    ahead._thread.join(timeout=5)
    assert not ahead._thread.is_alive()
    with pytest.raises(RuntimeError, match="after close"):
        ahead.get(5)  # never made: the thread stopped at item 1


class Recording(Partitioner):
    """The classical partitioner, noting which thread asked for which slice."""

    name = "recording"

    def __init__(self) -> None:
        self.inner = ClassicalPartitioner()
        self.calls: list[tuple[float, str]] = []

    def _partition(self, slice2d: np.ndarray) -> np.ndarray:
        self.calls.append((float(slice2d.mean()), threading.current_thread().name))
        return self.inner(slice2d)


def test_a_restore_with_maps_made_ahead_equals_one_with_maps_made_before_each_slice(
        monkeypatch):
    torch.manual_seed(0)
    model = build_rat(RATConfig(in_channels=1, out_channels=1, **SMALL)).eval()
    rng = np.random.default_rng(0)
    base = rng.normal(0, 200, (64, 64)).astype(np.float32)
    hu = np.stack([base + 100 * z for z in range(5)])  # slices told apart by their mean
    image = Image(hu, spacing=(0.7, 0.7, 1.0), domain=Domain.HU, modality="CT")
    part = Recording()
    threaded = Restorer(model, TASKS["ct"], tile=32, partitioner=part).restore(image)
    means = [m for m, _ in part.calls]
    assert means == sorted(means) and len(means) == 5  # each slice once, in order
    assert {name for _, name in part.calls} == {"rat-ahead"}

    class Inline:  # maps made in the caller's thread, just before each slice
        def __init__(self, compute, count, *, ahead):
            self.compute = compute

        def get(self, index):
            return self.compute(index)

        def close(self):
            pass

    monkeypatch.setattr("ratcli.inference.restorer.Ahead", Inline)
    inline = Restorer(model, TASKS["ct"], tile=32, partitioner=Recording()).restore(image)
    np.testing.assert_array_equal(threaded.array, inline.array)
