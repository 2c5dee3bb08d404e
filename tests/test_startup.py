"""Start-up: help, version, weights list and usage / bad-input errors import no torch,
numpy, pydantic or rich (each real subprocess reports its sys.modules at exit); Ctrl-C
while starting prints one line and no traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HEAVY = ("torch", "numpy", "pydantic", "rich", "ratcli.api", "ratcli.io")
# Runs `rat ARGS...` through the console-script entry and writes sys.modules at exit.
WRAPPER = """
import atexit, json, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["rat", *sys.argv[2:]]
from ratcli.__main__ import main
main()
"""


def run_rat(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    report = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", WRAPPER, str(report), *args],
                          capture_output=True, text=True, timeout=120)
    return proc, set(json.loads(report.read_text()))


@pytest.mark.parametrize(("args", "code"), [
    (["--help"], 0),
    (["-h"], 0),
    (["--version"], 0),
    (["weights", "list"], 0),
    (["weights", "list", "--json"], 0),
    (["denoise", "-h"], 0),
    (["train", "-h"], 0),
    (["denoise"], 2),  # missing input and -o
    (["denoise", "x.nii.gz", "-o", "out", "--device", "gpu"], 2),
    (["denoise", "x.nii.gz", "-o", "out", "--tile", "1.5"], 2),
    (["denoise", "x.nii.gz", "-o", "out", "--overlap", "0.9"], 2),
    (["sr", "x.tif", "-o", "out", "--threads", "0"], 2),
    (["no-such-command"], 2),
    (["denoise", "missing.nii.gz", "-o", "out"], 1),  # bad input: the path does not exist
    (["denoise", "junk.nii.gz", "-o", "out", "--weights", "no-such-weights"], 1),
    (["regions", "missing.png", "-o", "out"], 1),
])
def test_no_heavy_imports(tmp_path, monkeypatch, args, code):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a volume")
    proc, modules = run_rat(tmp_path, *args)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not [m for m in HEAVY if m in modules], sorted(m for m in HEAVY if m in modules)


@pytest.mark.parametrize("command", ["denoise", "regions"])
def test_unsupported_input_file_is_refused_without_torch(tmp_path, monkeypatch, command):
    """Issue 25: `rat denoise notes.txt` is sniffed by the format table before torch is
    imported (it took as long as `import torch`)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image\n")
    proc, modules = run_rat(tmp_path, command, "notes.txt", "-o", "x.dcm", "--json")
    assert proc.returncode == 1, proc.stderr
    message = "notes.txt: not a supported image (DICOM, NIfTI, PNG/TIFF/JPEG, whole-slide)"
    assert proc.stderr.strip() == f"error: {message}"
    assert json.loads(proc.stdout)["error"] == message
    assert "torch" not in modules and "ratcli.api" not in modules
    assert not (tmp_path / "x.dcm").exists()


def test_usage_error_is_short_and_names_the_option(tmp_path):
    proc, _ = run_rat(tmp_path, "denoise", "x.nii.gz", "-o", "out", "--device", "gpu")
    assert "'gpu' is not a valid choice (auto, cpu, cuda, mps)" in proc.stderr


def test_missing_input_is_one_error_line_and_json_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc, _ = run_rat(tmp_path, "denoise", "missing.nii.gz", "-o", "out", "--json")
    assert proc.stderr.strip() == "error: missing.nii.gz: no such file or folder"
    rec = json.loads(proc.stdout)
    assert rec["status"] == "error" and rec["input"] == "missing.nii.gz"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.1, 0.6, 1.2, 1.8, 2.5])
def test_ctrl_c_while_starting_prints_no_traceback(tmp_path, delay):
    """SIGINT while `rat denoise` starts (the delays span the interpreter, torch's ~3 s
    import, whose C++ part once turned the signal into SIGABRT, and model loading): one
    line, exit 130, no traceback, nothing written."""
    import SimpleITK as sitk

    from ratcli.phantoms import ct_phantom

    src = tmp_path / "ct.nii.gz"  # big enough to take seconds with the shipped rat-ct
    sitk.WriteImage(sitk.GetImageFromArray(ct_phantom(size=256, slices=8).astype("float32")),
                    str(src))
    proc = subprocess.Popen([sys.executable, "-m", "ratcli", "denoise", str(src), "-o",
                             str(tmp_path / "out.nii.gz"), "--task", "ct"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == ""
    lines = [ln for ln in err.splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1 and "interrupted by SIGINT while" in lines[0], err
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]
