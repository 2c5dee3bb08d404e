"""Work done one step ahead in a background thread: region maps of the next slices while
the model restores the current ones.

A LiteMedSAM map costs about as much as rat-ct's restore of a 512^2 slice, and much of it
(prompt decoding, mask filtering in numpy) keeps fewer cores busy than the model's
convolutions; computed beside the model, it adds less to the wall time of a series than
computed before each slice. The items are computed strictly in order, by one thread, so a
partitioner that carries state from slice to slice (LiteMedSAM's key slices) sees the
same sequence of calls as without the thread, and gives the same maps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import torch

__all__ = ["Ahead"]

T = TypeVar("T")


class Ahead(Generic[T]):
    """`compute(0)`, `compute(1)`, ... `compute(count - 1)` in a background thread, at most
    `ahead` items past the last one asked for; `get(i)` waits for item i.

    An exception in `compute` is raised again by the `get` that waits for its item; `close`
    (or leaving a `with` block) stops the thread after the item it is computing.
    """

    def __init__(self, compute: Callable[[int], T], count: int, *, ahead: int = 2) -> None:
        if ahead < 1:
            raise ValueError("ahead must be >= 1")
        self._compute = compute
        self._count = count
        self._ahead = ahead
        self._done: dict[int, T] = {}
        self._error: BaseException | None = None
        self._wanted = 0  # the item the consumer waits for or took last
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="rat-ahead", daemon=True)
        self._thread.start()

    def get(self, index: int) -> T:
        """Item `index` (each item once, in any order within the window)."""
        with self._cond:
            self._wanted = max(self._wanted, index)
            self._cond.notify_all()
            while index not in self._done and self._error is None and not self._stop:
                self._cond.wait()
            if index in self._done:
                return self._done.pop(index)
            if self._error is not None:
                raise self._error
            raise RuntimeError("Ahead.get after close")

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def __enter__(self) -> Ahead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            # inference mode is per thread: the caller's does not reach this one
            with torch.inference_mode():
                for index in range(self._count):
                    with self._cond:
                        while not self._stop and index > self._wanted + self._ahead:
                            self._cond.wait()
                        if self._stop:
                            return
                    value = self._compute(index)
                    with self._cond:
                        self._done[index] = value
                        self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer, who reports it
            with self._cond:
                self._error = exc
                self._cond.notify_all()
