"""atomic_output: nothing at the final path unless the write completed."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ratcli.errors import OutputExistsError, OutputNotWritableError, UsageError
from ratcli.io.atomic import TEMP_PREFIX, atomic_output


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_success_renames_temp_into_place(tmp_path):
    out = tmp_path / "sub" / "a.nii.gz"
    with atomic_output(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.endswith("a.nii.gz")
        assert not out.exists()
        tmp.write_bytes(b"data")
    assert out.read_bytes() == b"data"
    assert _leftovers(out.parent) == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_error_in_body_leaves_nothing(tmp_path, exc):
    out = tmp_path / "a.png"
    with pytest.raises(exc), atomic_output(out) as tmp:
        tmp.write_bytes(b"partial")
        raise exc()
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_existing_output_refused_then_overwritten(tmp_path):
    out = tmp_path / "a.tif"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="a.tif"), atomic_output(out) as tmp:
        tmp.write_bytes(b"new")
    assert out.read_bytes() == b"old"
    with atomic_output(out, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert out.read_bytes() == b"new"


def test_directory_output_and_overwrite(tmp_path):
    out = tmp_path / "series"
    with atomic_output(out, directory=True) as tmp:
        (tmp / "1.dcm").write_bytes(b"x")
    assert sorted(p.name for p in out.iterdir()) == ["1.dcm"]
    with atomic_output(out, directory=True, overwrite=True) as tmp:
        (tmp / "2.dcm").write_bytes(b"y")
    assert sorted(p.name for p in out.iterdir()) == ["2.dcm"]
    # A failed overwrite keeps the old folder intact.
    with pytest.raises(ValueError), atomic_output(out, directory=True, overwrite=True) as tmp:
        (tmp / "3.dcm").write_bytes(b"z")
        raise ValueError
    assert sorted(p.name for p in out.iterdir()) == ["2.dcm"]
    assert _leftovers(tmp_path) == []


def test_unwritable_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputNotWritableError, match="file"), atomic_output(blocker / "a.png"):
        pass


def test_refuses_input_as_output(tmp_path):
    src = tmp_path / "in.nii.gz"
    src.write_bytes(b"input")
    with pytest.raises(UsageError, match="input"), atomic_output(src, overwrite=True, inputs=[src]):
        pass
    assert src.read_bytes() == b"input"
    folder = tmp_path / "series"
    folder.mkdir()
    with pytest.raises(UsageError), atomic_output(folder / "out.dcm", inputs=[folder]):
        pass
    # Overwriting a folder that holds an input would delete the input.
    with pytest.raises(UsageError), atomic_output(tmp_path, overwrite=True, inputs=[src]):
        pass


def test_sigkill_mid_write_leaves_no_final_file(tmp_path):
    out = tmp_path / "big.tif"
    script = textwrap.dedent(f"""
        import sys, time
        from ratcli.io.atomic import atomic_output
        with atomic_output({str(out)!r}) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"x" * 100000)
                fh.flush()
                print("writing", flush=True)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.05)
    assert not out.exists()
    # Only a hidden temp remains, which find_inputs skips.
    assert all(p.name.startswith(".") for p in tmp_path.iterdir())
