"""The README's commands run exactly as written, against a copy of the bundled examples,
and `make demo` writes only git-ignored paths.

Every fenced block of README.md runs: unlabelled blocks line by line through bash (with
`set -o pipefail`, `rat` being this checkout's `python -m ratcli`), python blocks as a
script, all in one scratch folder in README order (a later block may use an earlier
one's output). Lines in SKIPPED are not run, each for the reason given; the test fails
if a SKIPPED entry no longer matches any line, so the list cannot rot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLES = ("ct_series", "pet.nii.gz", "slide.tif")
SKIPPED = {
    "make demo": "runs the whole demo (minutes); test_demo_writes_only_ignored_paths "
                 "checks where it writes",
    "make test": "runs this whole test suite",
    "--data scans/": "needs a folder of the user's own scans",
    "--data heldout/": "needs the user's held-out scans (and runs/ct from scans/)",
    "torchrun": "needs several processes or GPUs, and scans/",
    "rat sr examples/slide.tif": "minutes of CPU for the 1024x768 slide with the shipped "
                                 "x2 model; test_cli_restore.py::"
                                 "test_sr_example_slide_end_to_end restores the same slide "
                                 "with a small checkpoint",
}


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def shell_lines(text: str) -> list[str]:
    """Commands of a shell block: backslash continuations joined, blank lines dropped."""
    return [c.strip() for c in re.sub(r"\\\n\s*", " ", text).splitlines() if c.strip()]


def commands() -> list[tuple[str, str]]:
    """("sh" | "python", command) for each README command that runs, in README order."""
    out = []
    for lang, text in readme_blocks():
        if lang == "python":
            out.append(("python", text))
        elif lang in ("", "sh", "bash"):
            out += [("sh", line) for line in shell_lines(text)
                    if not any(key in line for key in SKIPPED)]
    return out


@pytest.fixture
def scratch(tmp_path) -> tuple[Path, dict]:
    """A folder with examples/ (copies of the inputs) and an env whose `rat` is this
    checkout."""
    work = tmp_path / "work"
    (work / "examples").mkdir(parents=True)
    for name in EXAMPLES:
        src = ROOT / "examples" / name
        if src.is_dir():
            shutil.copytree(src, work / "examples" / name)
        else:
            shutil.copy(src, work / "examples" / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rat").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ratcli "$@"\n')
    (bin_dir / "rat").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    return work, env


def test_every_skip_matches_a_readme_line():
    lines = [ln for lang, text in readme_blocks() if lang in ("", "sh", "bash")
             for ln in shell_lines(text)]
    for key in SKIPPED:
        assert any(key in ln for ln in lines), f"SKIPPED entry {key!r} matches no line"


def test_readme_promises_o_and_folder_rules():
    text = " ".join(README.read_text().split())
    for phrase in ("`-o/--output` is required", "go straight into `-o`",
                   "mirrors each input", "skipped with one note each", "--no-cache",
                   "--max-pixels", "--threads", "128+N", "SIGTERM", "DICOM Modality"):
        assert phrase in text, phrase


@pytest.mark.slow
def test_readme_commands_run_as_written(scratch):
    work, env = scratch
    ran = commands()
    assert any("find examples" in c for _, c in ran)  # the batch one-liner is among them
    for kind, command in ran:
        argv = (["bash", "-o", "pipefail", "-c", command] if kind == "sh"
                else [sys.executable, "-c", command])
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"{command}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
        if "| jq -r '.status'" in command:
            assert proc.stdout.split() == ["ok"], proc.stdout
    assert (work / "out" / "pet_full.nii.gz").is_file()
    assert sorted(p.name for p in (work / "examples").iterdir()) == sorted(EXAMPLES)


def test_demo_writes_only_ignored_paths(tmp_path):
    """`make demo` runs examples/demo.py with its defaults: every path it writes
    (outputs and figures) is git-ignored, so `git status` stays clean."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import demo
    finally:
        sys.path.remove(str(ROOT / "examples"))
    import inspect

    defaults = inspect.signature(demo.run_demo).parameters
    out, figures = defaults["out"].default, defaults["figures"].default
    written = [out / ex.output for ex in demo.EXAMPLES]
    written += [figures / f"{Path(ex.output).name.split('.')[0]}.png" for ex in demo.EXAMPLES]
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "check-ignore", "--no-index", *map(str, written)],
                          cwd=ROOT, capture_output=True, text=True)
    assert sorted(proc.stdout.split()) == sorted(map(str, written))
