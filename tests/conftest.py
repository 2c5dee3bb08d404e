"""Every test runs with its own empty weights home and region cache, so no test reads or
writes the user's data dirs, and a SAM checkpoint on the developer's machine changes
nothing. Torch runs one thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_rat_dirs(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("ratdirs")
    monkeypatch.setenv("RAT_HOME", str(base / "home"))
    monkeypatch.setenv("RAT_CACHE", str(base / "cache"))
    monkeypatch.delenv("RAT_SAM_CHECKPOINT", raising=False)
    # one torch thread per test process (and its subprocesses): two OpenMP threads spin
    # on a busy 2-core machine; rat itself defaults to every CPU (configure_threads)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
