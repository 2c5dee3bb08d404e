"""Distributed training under torchrun (gloo, CPU): identical replicas, rank 0 writes
(issue 5, point 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ratcli.models import load_checkpoint
from ratcli.training.state import load_state

# Each rank trains through the library and then dumps its own weights into `dumps/`
# (outside the run folder), so the test can compare the two replicas directly.
SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from ratcli.training.config import TrainConfig
    from ratcli.training.distributed import unwrap
    from ratcli.training.trainer import Trainer

    run, dumps = sys.argv[1], sys.argv[2]
    cfg = TrainConfig(task="ct", data="synthetic:ct,volumes=3,slices=2,size=32", width=16,
                      patch=32, batch_size=2, regions="none", photons=1e5, iters=6,
                      val_every=3, log_every=2, device="cpu")
    trainer = Trainer(cfg, run)
    result = trainer.fit()
    state = unwrap(trainer.model).state_dict()
    torch.save({"rank": trainer.ctx.rank, "world": trainer.ctx.world_size,
                "backend": trainer.ctx.backend, "finished": result.finished, "state": state},
               f"{dumps}/rank{trainer.ctx.rank}.pt")
    trainer.close()
""")


@pytest.mark.slow
def test_two_process_torchrun_keeps_replicas_identical_and_rank0_writes(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    run, dumps = tmp_path / "run", tmp_path / "dumps"
    dumps.mkdir()
    torchrun = Path(sys.executable).with_name("torchrun")
    env = os.environ | {"RAT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(run),
         str(dumps)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0 = torch.load(dumps / "rank0.pt", weights_only=True)
    r1 = torch.load(dumps / "rank1.pt", weights_only=True)
    assert (r0["rank"], r1["rank"], r0["world"], r0["backend"]) == (0, 1, 2, "gloo")
    assert r0["finished"] and r1["finished"]
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k

    # the run folder holds one set of files, written by rank 0 alone
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt", "config.json", "last.pt", "metrics.jsonl", "model.pt", "model.pt.sha256"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 3, 4, 6, 6]  # each line once: no second writer
    ckpt = load_checkpoint(run / "model.pt")
    assert ckpt.meta["provenance"]["world_size"] == 2
    last = load_state(run / "last.pt")  # rank 0's final state is the replicas' state
    assert last["step"] == 6
    assert all(torch.equal(last["model"][k], v) for k, v in r0["state"].items())
