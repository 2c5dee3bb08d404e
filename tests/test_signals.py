"""SIGTERM, SIGHUP and SIGINT stop `rat` like Ctrl-C: temp files removed, exit 128+N,
one line naming what was interrupted; a reader closing stdout (`| head -n1`) ends the
run quietly. Each test runs a real `rat` process and signals it while it writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import SMALL

from ratcli.models import RATConfig, build_rat, save_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _checkpoint(path: Path, task: str, channels: int, scale: int = 1) -> str:
    torch.manual_seed(0)
    cfg = RATConfig(in_channels=channels, out_channels=channels, scale=scale, **SMALL)
    save_checkpoint(path, build_rat(cfg), cfg, meta={"task": task})
    return str(path)


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> tuple[Path, str]:
    """A 2048^2 pyramidal slide (glass with tissue in the last chunk, so the output
    pyramid is written from the start) and a small x4 checkpoint."""
    from ratcli.io.wsi import PyramidWriter, SlideWriterConfig, slide_tiles
    from ratcli.phantoms import he_tile

    folder = tmp_path_factory.mktemp("slide")
    rgb = np.full((2048, 2048, 3), 243, np.uint8)
    rgb[-128:, -128:] = he_tile(size=128)
    PyramidWriter(folder / "big.tif", width=2048, height=2048,
                  config=SlideWriterConfig(tile_px=512), mpp=(0.5, 0.5)
                  ).write(slide_tiles(rgb, 512))
    return folder / "big.tif", _checkpoint(folder / "x4.pt", "sr-x4", 3, scale=4)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_while_writing_cleans_up(tmp_path, slide, sig):
    src, weights = slide
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "ratcli", "sr", str(src), "-o", str(out / "big.tif"),
           "--scale", "4", "--tile", "64", "--regions", "none", "--weights", weights]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    deadline = time.monotonic() + 120
    temp: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None and not temp:
        # the output's temp file exists and holds tiles: rat is writing it now
        temp = [p for p in out.iterdir() if p.name.startswith(".rat-tmp-")
                and _size(p) > 100_000]
        time.sleep(0.01)
    assert temp and proc.poll() is None, "finished before it could be signalled"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert list(out.iterdir()) == []  # no temp file, no partial output
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert f"interrupted by {signal.Signals(sig).name}" in lines[0]
    assert f"restoring {src}" in lines[0] and "Traceback" not in stderr
    assert stdout == ""


@pytest.mark.slow
def test_closed_stdout_ends_quietly(tmp_path):
    """`rat denoise ... --json | head -n1`: no BrokenPipe "internal error", exit 141."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 24, 24), 100.0 * i, np.float32)),
                        str(folder / f"v{i}.nii.gz"))
    weights = _checkpoint(tmp_path / "ct.pt", "ct", 1)
    script = (f"{sys.executable} -m ratcli denoise {folder} -o {tmp_path / 'out'} --json "
              f"--regions none --weights {weights} | head -n1; "
              "echo \"rat exit ${PIPESTATUS[0]}\" >&2")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert json.loads(proc.stdout)["status"] == "ok"
    assert proc.stderr.strip() == "rat exit 141", proc.stderr


def _size(path: Path) -> int:
    """Bytes in `path`, 0 once it is gone (rat's per-level temp files come and go)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


SLOW_IMPORT = """
import os, signal, time
os.kill(os.getpid(), signal.SIG{name})  # arrives while this module is being imported
t = time.monotonic()
while time.monotonic() - t < 0.3:  # Python code still running inside the import
    pass
DONE = True
"""
IMPORTER = """
import sys, time
from ratcli.cli.app import install_signal_handlers, state
install_signal_handlers()
try:
    import slow_import
    print(f"imported: {slow_import.DONE}", flush=True)
    time.sleep(5)
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print(f"then unwound: signum={state.signum}", flush=True)
"""


@pytest.mark.parametrize("name", ["INT", "TERM"])
def test_signal_during_an_import_waits_for_the_import(tmp_path, name):
    """A C extension's initialisation may run Python (torch's does, through pybind11);
    the handler raising there aborted the process (SIGABRT) or broke the module
    ("ImportError: initialization failed"). During an import the signal is held, and
    raised again once the import is done: the usual one-line unwind follows."""
    (tmp_path / "slow_import.py").write_text(SLOW_IMPORT.format(name=name))
    proc = subprocess.run([sys.executable, "-c", IMPORTER], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path,
                          env={**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])})
    assert proc.returncode == 0, proc.stderr
    signum = int(getattr(signal, f"SIG{name}"))
    assert proc.stdout.splitlines() == ["imported: True", f"then unwound: signum={signum}"]


EXEC_MAIN = """
import os, signal, sys
from ratcli.cli.app import install_signal_handlers
install_signal_handlers()
try:  # dataclasses and namedtuples run their generated code like this
    exec("import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10**7): pass")
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_signal_inside_exec_keeps_rat_exit_code(tmp_path):
    """Under `python -m`, a bare KeyboardInterrupt escaping `exec(str)` makes CPython
    kill the process with SIGINT at exit (returncode -2, not rat's 130)."""
    (tmp_path / "exec_main.py").write_text(EXEC_MAIN)
    proc = subprocess.run([sys.executable, "-m", "exec_main"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path,
                          env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 130, proc.stderr
