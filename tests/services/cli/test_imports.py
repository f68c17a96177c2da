"""`fabcity import`: refusals before anything is read into the database."""

from __future__ import annotations

from pathlib import Path

from fabcity.core.db import make_engine, make_sessionmaker
from tests.fixtures import OKH, OKW
from tests.services.cli.runner import assert_refused, fabcity
from tests.support.city import CITY, register


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


def test_okw_import_says_what_each_site_was_matched_on(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    register(make_sessionmaker(engine))
    engine.dispose()
    sample = str(OKW / "iopa-2024-sample.json")

    first = fabcity(sqlite_url, "import", "okw", sample, "--city", CITY)
    assert first.returncode == 0, first.stderr
    assert "16 sites created, 3 updated, 0 refused" in first.stdout
    assert "matched on name and location: 3" in first.stdout
    again = fabcity(sqlite_url, "import", "okw", sample, "--city", CITY)
    assert "0 sites created, 19 updated, 0 refused" in again.stdout
    assert "matched on id: 16, name and location: 3" in again.stdout


def test_okw_notes_what_it_left_out(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    register(make_sessionmaker(engine))
    engine.dispose()
    labs = tmp_path / "labs.yml"
    labs.write_text("- {name: Garage, access_type: VIP}\n")
    done = fabcity(sqlite_url, "import", "okw", str(labs), "--city", CITY)
    assert done.returncode == 0, done.stderr
    assert "1 sites created, 0 updated, 0 refused" in done.stdout
    assert f"{labs}#0 (garage): `access_type` 'VIP' is not one of" in done.stderr.replace("\n", "")


def test_okh_import_reads_losh_mass_tables(sqlite_url: str) -> None:
    done = fabcity(
        sqlite_url,
        "import",
        "okh",
        str(OKH / "ohloom.toml"),
        "--url",
        "https://designs.example.org/okh/ohloom.toml",
    )
    assert done.returncode == 0, done.stderr
    assert "1 designs created, 0 updated, 0 refused" in done.stdout


def test_okh_import_of_the_real_corpus(sqlite_url: str) -> None:
    # tests/fixtures/okh/corpus: 21 manifests from public repositories, of which only the
    # OpenAT template (comments only) cannot be read.
    corpus = OKH / "corpus"
    done = fabcity(
        sqlite_url, "import", "okh", str(corpus), "--url-prefix", "https://designs.example.org/"
    )
    assert done.returncode == 1, done.stderr
    assert "20 designs created, 0 updated, 1 refused" in done.stdout
    assert f"{corpus / 'openat-template.yml'}: the manifest is empty" in done.stderr.replace(
        "\n", ""
    )
