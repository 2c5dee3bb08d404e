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


@pytest.fixture(autouse=True)
def _classical_auto_regions(request, monkeypatch):
    """`--regions auto` is LiteMedSAM when it is installed (seconds per slice); in-process
    tests get the classical fallback instead unless marked `litemedsam`."""
    if "litemedsam" not in request.keywords:
        monkeypatch.setattr("ratcli.regions.factory._litemedsam_installed", lambda: False)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Torch imported before the test (at module level) keeps its thread count: pin it to
    one for the test and put it back after."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
