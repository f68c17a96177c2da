"""The committed JSON Schema files are what the models generate, and drift is detected.

Senders validate against the committed files; if a model changes and the files are not
regenerated, they would validate against a contract the server no longer speaks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from schemas import generate

COMMITTED = Path(generate.__file__).parent / "json"


@pytest.fixture
def copy_of_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the committed schema files, which `drift()` then checks instead."""
    out = tmp_path / "json"
    shutil.copytree(COMMITTED, out)
    monkeypatch.setattr(generate, "OUT", out)
    return out


def test_committed_files_match_the_models() -> None:
    assert generate.drift() == []


def test_every_model_has_a_committed_file_and_nothing_else_is_committed() -> None:
    # Guards against `drift()` passing vacuously (e.g. an empty render or a wrong directory).
    expected = {f"{name}.schema.json" for name in generate.MODELS}
    assert {p.name for p in COMMITTED.glob("*.schema.json")} == expected
    assert set(generate.render()) == expected


def test_committed_files_are_json_schema_2020_12() -> None:
    for path in COMMITTED.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", path.name


def test_the_copy_alone_shows_no_drift(copy_of_committed: Path) -> None:
    # The baseline for the tests below: only the change each one makes is reported.
    assert generate.drift() == []


def test_a_modified_file_is_named(copy_of_committed: Path) -> None:
    path = copy_of_committed / "flow.schema.json"
    schema = json.loads(path.read_text())
    schema["properties"]["quantity"]["minimum"] = -1
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")

    assert generate.drift() == ["flow.schema.json"]


def test_a_whitespace_only_change_is_drift(copy_of_committed: Path) -> None:
    # The files are compared as text, so a hand-reformatted file is caught too.
    path = copy_of_committed / "city.schema.json"
    path.write_text(path.read_text().rstrip("\n"))

    assert generate.drift() == ["city.schema.json"]


def test_a_missing_file_is_named(copy_of_committed: Path) -> None:
    (copy_of_committed / "problem.schema.json").unlink()

    assert generate.drift() == ["problem.schema.json"]


def test_a_stray_file_is_named(copy_of_committed: Path) -> None:
    (copy_of_committed / "old-event.schema.json").write_text("{}\n")
    # Files that are not schema files are not part of the contract directory's checks.
    (copy_of_committed / "README.md").write_text("notes\n")

    assert generate.drift() == ["old-event.schema.json"]


def test_stray_and_modified_files_are_named_together(copy_of_committed: Path) -> None:
    (copy_of_committed / "zz-extra.schema.json").write_text("{}\n")
    (copy_of_committed / "site.schema.json").write_text("{}\n")

    assert sorted(generate.drift()) == ["site.schema.json", "zz-extra.schema.json"]


def test_a_model_change_is_detected(
    copy_of_committed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a model edit: the rendered schema of one model differs from the file.
    real = generate.render

    def changed() -> dict[str, str]:
        files = real()
        schema = json.loads(files["meter-reading.schema.json"])
        schema["properties"]["energy_wh"] = {"type": "number"}
        files["meter-reading.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        return files

    monkeypatch.setattr(generate, "render", changed)

    assert generate.drift() == ["meter-reading.schema.json"]


def test_a_new_model_without_a_file_is_detected(
    copy_of_committed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = generate.render
    monkeypatch.setattr(generate, "render", lambda: {**real(), "new.schema.json": "{}\n"})

    assert generate.drift() == ["new.schema.json"]


def test_check_mode_fails_on_drift_and_writing_mode_repairs_it(
    copy_of_committed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (copy_of_committed / "device.schema.json").write_text("{}\n")
    (copy_of_committed / "stray.schema.json").write_text("{}\n")

    assert generate.main(["--check"]) == 1
    assert "device.schema.json" in capsys.readouterr().out

    assert generate.main([]) == 0
    assert generate.drift() == []
    assert not (copy_of_committed / "stray.schema.json").exists()
    assert generate.main(["--check"]) == 0
