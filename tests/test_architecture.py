"""The architecture as drawn and as checked: imports go one way (services → workers → fabcity →
schemas, and inside fabcity by layers; contracts in pyproject.toml), and docs/architecture.md
names every module there is."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("schemas", "fabcity", "workers", "services")


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


def test_import_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("where", "line", "caught"),
    [
        # Across the top level: the domain may not reach up into the processes.
        ("fabcity/bad.py", "import services.http.app\n", "fabcity.bad -> services.http.app"),
        # Inside the domain: the bottom layer may not reach up into the read side...
        (
            "fabcity/core/bad.py",
            "import fabcity.read.metrics\n",
            "fabcity.core.bad -> fabcity.read.metrics",
        ),
        # ...and the decoders stay apart from the database, their sibling at the bottom.
        (
            "fabcity/adapters/bad.py",
            "import fabcity.core.db\n",
            "fabcity.adapters.bad -> fabcity.core.db",
        ),
    ],
)
def test_a_backward_import_would_be_caught(
    tmp_path: Path, where: str, line: str, caught: str
) -> None:
    # Guard against a contract that silently checks nothing: break it in a copy.
    for package in PACKAGES:
        subprocess.run(["cp", "-r", str(ROOT / package), str(tmp_path / package)], check=True)
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / where).write_text(line)
    result = lint_imports(tmp_path, {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    if "3 kept" in result.stdout:
        pytest.fail("a backward import went unnoticed:\n" + result.stdout)
    assert result.returncode != 0
    assert caught in result.stdout


def _modules() -> set[str]:
    """Every module of the domain, the workers and the processes, as a path from the root."""
    found = set()
    for package in ("fabcity", "workers", "services"):
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if path.name != "__init__.py" and "/migrations/versions/" not in relative:
                found.add(relative)
    return found


def _named_paths() -> set[str]:
    return set(re.findall(r"`((?:schemas|fabcity|workers|services)/[\w./]*)`", DOC.read_text()))


def test_the_architecture_page_names_every_module() -> None:
    missing = sorted(_modules() - _named_paths())
    assert not missing, f"docs/architecture.md does not say what these own: {missing}"


def test_every_path_the_architecture_page_names_exists() -> None:
    named = _named_paths()
    assert len(named) > 60  # the page really lists the modules
    gone = sorted(p for p in named if not (ROOT / p).exists())
    assert not gone, f"docs/architecture.md names what is not there: {gone}"


def test_the_layers_drawn_are_the_layers_checked() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (inner,) = [c for c in contracts if c.get("containers") == ["fabcity"]]
    drawn = "  →  ".join(inner["layers"])
    assert drawn in DOC.read_text(), f"docs/architecture.md should draw: {drawn}"
    (outer,) = [c for c in contracts if c["type"] == "layers" and "containers" not in c]
    assert "  →  ".join(outer["layers"]) in DOC.read_text()
