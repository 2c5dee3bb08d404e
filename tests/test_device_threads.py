"""configure_threads: explicit count, then OMP_NUM_THREADS, then every available CPU."""

from __future__ import annotations

import pytest
import torch

from ratcli.errors import UsageError
from ratcli.inference.device import configure_threads, default_threads


@pytest.fixture(autouse=True)
def _keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_explicit_count_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert configure_threads(1) == 1 and torch.get_num_threads() == 1


def test_omp_num_threads_is_used_when_no_count_is_given(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    assert configure_threads(None) == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize("env", [None, "", "zero", "0"])
def test_default_is_every_available_cpu(monkeypatch, env):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    n = configure_threads()
    assert n == default_threads() >= 1 and torch.get_num_threads() == n


def test_bad_count_is_a_usage_error():
    with pytest.raises(UsageError, match="--threads 0"):
        configure_threads(0)
