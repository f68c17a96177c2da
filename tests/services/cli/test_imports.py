"""`fabcity import`: refusals before anything is read into the database."""

from __future__ import annotations

from pathlib import Path

from tests.services.cli.runner import assert_refused, fabcity


def test_a_path_that_is_neither_file_nor_directory_is_refused(
    sqlite_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "labs.yml"
    done = fabcity(sqlite_url, "import", "okw", str(missing), "--city", "lagos")
    assert_refused(done, 2, f"{missing} is neither a file nor a directory")


def test_one_url_for_a_directory_of_manifests_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    for name in ("stool.toml", "table.toml"):
        (tmp_path / name).write_text("")
    done = fabcity(sqlite_url, "import", "okh", str(tmp_path), "--url", "https://x.org/stool")
    assert_refused(done, 2, "--url names one manifest; use --url-prefix for a directory")
