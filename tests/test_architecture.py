"""Imports go one way: services → workers → fabcity → schemas (contracts in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def test_import_contracts_hold() -> None:
    result = subprocess.run([LINT_IMPORTS], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_a_backward_import_would_be_caught(tmp_path: Path) -> None:
    # Guard against a contract that silently checks nothing: break it in a copy.
    for package in ("schemas", "fabcity", "workers", "services"):
        subprocess.run(["cp", "-r", str(ROOT / package), str(tmp_path / package)], check=True)
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "fabcity" / "bad.py").write_text("import services.http.app\n")
    result = subprocess.run(
        [LINT_IMPORTS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    if "2 kept" in result.stdout:
        pytest.fail("a backward import went unnoticed:\n" + result.stdout)
    assert result.returncode != 0
    assert "fabcity.bad -> services.http.app" in result.stdout
