from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from ratcli import __version__
from ratcli.cli import app


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"rat {__version__}"


def test_info_json_is_clean_stdout():
    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["rat"] == __version__
    assert data["torch"].startswith("2.14.1")
    assert "cpu" in data["devices"]


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "ratcli", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"rat {__version__}"
