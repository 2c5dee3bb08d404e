"""atomic_output: nothing at the final path unless the write completed."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ratcli.errors import OutputExistsError, OutputNotWritableError, UsageError
from ratcli.io.atomic import (
    TEMP_PREFIX,
    atomic_output,
    check_output_name,
    is_temp_name,
    remove_stale_temps,
)


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
    # Only a hidden temp remains, which find_inputs skips ...
    (left,) = tmp_path.iterdir()
    assert is_temp_name(left) and left.stat().st_size == 100000
    # ... and the next write into that folder removes it (its process is gone).
    with atomic_output(tmp_path / "other.tif") as tmp:
        tmp.write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.tif"]


def test_stale_temps_of_dead_or_old_foreign_runs_removed_live_ones_kept(tmp_path):
    from ratcli.io import atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    host = atomic._HOST
    names = {
        "dead": f"{TEMP_PREFIX}{host}.{int(dead.stdout)}-abcdef-a.nii.gz",
        "live": f"{TEMP_PREFIX}{host}.{os.getppid()}-abcdef-b.nii.gz",
        "mine": f"{TEMP_PREFIX}{host}.{os.getpid()}-abcdef-c.nii.gz",
        "foreign_old": f"{TEMP_PREFIX}000000.{os.getppid()}-abcdef-d.png",
        "legacy_old": f"{TEMP_PREFIX}0123abcd-e.png",
        "foreign_new": f"{TEMP_PREFIX}000000.1-abcdef-f.png",
    }
    for key, name in names.items():
        path = tmp_path / name
        path.mkdir() if key == "dead" else path.write_bytes(b"partial")
        if key.endswith("_old"):
            two_hours_ago = time.time() - 7200
            os.utime(path, (two_hours_ago, two_hours_ago))
    (tmp_path / "input.png").write_bytes(b"not a temp")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(
        names[k] for k in ("dead", "foreign_old", "legacy_old"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["live"], names["mine"], names["foreign_new"], "input.png"])
    assert remove_stale_temps(tmp_path) == []  # once per folder per run


def test_is_temp_name():
    assert is_temp_name(Path("/x") / f"{TEMP_PREFIX}abc-a.nii.gz")
    assert is_temp_name(f"{TEMP_PREFIX}old-abc-series")
    assert not is_temp_name("rat-tmp-a.png") and not is_temp_name(".hidden.png")


def test_output_name_too_long_with_temp_prefix_refused_before_any_work(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    long_name = "a" * (limit - 10) + ".nii.gz"  # fits the folder, not with the temp prefix
    check_output_name(tmp_path / ("a" * 150 + ".nii.gz"))
    with pytest.raises(UsageError, match=r"output name is too long .*choose a shorter name"):
        check_output_name(tmp_path / "new" / long_name)
    with pytest.raises(UsageError, match="too long"), atomic_output(tmp_path / "new" / long_name):
        pass
    assert list(tmp_path.iterdir()) == []  # not even the folder was created


def test_write_error_in_body_is_one_line_and_cleans_up(tmp_path):
    out = tmp_path / "made" / "by" / "us" / "a.nii"
    full = pytest.raises(OutputNotWritableError, match=r"a\.nii: cannot write: No space left")
    with full, atomic_output(out) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    # other errors pass through unchanged
    with pytest.raises(FileNotFoundError), atomic_output(out):
        raise FileNotFoundError(errno.ENOENT, "input vanished")
