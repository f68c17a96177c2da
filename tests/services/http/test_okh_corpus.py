"""Real Open Know-How manifests from public repositories (`tests/fixtures/okh/corpus`, each
file's source and licence in its README), imported one by one through `POST /v1/designs` as a
publisher would send them, and what each becomes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from services.http.app import create_app
from tests.conftest import settings_for
from tests.fixtures import OKH
from workers.dispatch import NoDispatch

CORPUS = OKH / "corpus"
LOSH_2020 = "OPEN-NEXT/OKH-LOSH", "7351f34fb2b5cb856d3274036a8edd5e07385b8b"
# Where each manifest is published: repository, commit, path (as in the corpus README). The
# design is stored under that address, percent-encoded where the path holds spaces.
SOURCES: dict[str, tuple[str, str, str]] = {
    "agrocircle.yml": (
        "OSEGermany/AgroCircle", "0072e318de3e486243dc57344e43b3c246db7279", "okh.yml"
    ),
    "boxfarm.yml": ("osegermany/BoxFarm", "13dd6949f9151c97237f3b1ff6e4e2701e73e7bb", "okh.yml"),
    "braille-signage-generator.yml": (
        "7B-Things/braille-signage-generator", "f486059f142c038ec37bae35567c4ad6ba77c5b1",
        "okh.yml",
    ),
    "cubefactory.yml": (
        "hoijui/cubefactory", "c9cc856cb75a34dcc19de0c5b9e4986cf15f59d8", "okh.yml"
    ),
    "lightm.yml": ("hoijui/lightM", "8df20448eae66f06493b7e7e6e9702484d2e3e1d", "okh.yml"),
    "openat-template.yml": (
        "makersmakingchange/OpenAT-Template", "a00258c8b2b1bf22221ece06894518345f0d5c66",
        "okh.yml",
    ),
    "openerv-tw4.yml": (
        "pngdeity/TW4-Energy-Recovery-Ventilator", "0207be3fe53e844ab77164db198422c9161eb65f",
        "okh.yml",
    ),
    "openflexure-microscope.yml": (
        "courk/openflexure-microscope", "e1f2bef3b31c7ee8ad1013b71855bc4526ce37a9", "okh.yml"
    ),
    "otto-diy.yml": (
        "Open-Hardware-Leaders/Otto-DIY", "b69e42b8d75b2be4dab9e424c9856734964d7d12", "okh.yml"
    ),
    "switch-plate-gopro.yml": (
        "makersmakingchange/Switch-Mounting-Plate-GoPro-Compatible",
        "362c2a0b588f6c496f47ae9169949e93ef7385f5", "okh.yml",
    ),
    "librewater-acraea.toml": (
        "Prototype-Fund-Hardware/LibreWater", "61c60b88c01b336356c0e755628820656bb62372",
        "okh.toml",
    ),
    "losh-dummy-mosh-a.toml": (
        "OPEN-NEXT/LOSH-dummy-MOSH-A", "5a38e60c45b0643cadee3d1dbada7dfd4ef560c8", "okh.toml"
    ),
    "meditation-bench.toml": (
        "hoijui/MeditationBench", "2a44ec3477d0ec2b277a3e2232600423cb629d11", "okh.toml"
    ),
    "nimble.toml": ("Wakoma/nimble", "e7f5508c424960753878b76df7f327c642e993ff", "okh.toml"),
    "planktoscope.toml": (
        "PlanktoScope/PlanktoScope", "3af44000b94235d096b6e4967a1df33a8914451d", "okh.toml"
    ),
    "precious-hocker-ohloom.toml": (
        "tm-miha/Upcyling-stool-Precious-hocker-IF-Demo",
        "dff99e770e634a1eb6103411022a87aafd51e1a1", "okh.toml",
    ),
    "yaemk-split-kb.toml": (
        "KarlK90/yaemk-split-kb", "22e91b6fab1fbf4bca10c3b326e0805791e29afb", "okh.toml"
    ),
    "losh-2020-cosi-measure.yaml": (
        *LOSH_2020, "sample_data/COSI Measure - Mechanical System/.okh.yaml"
    ),
    "losh-2020-cosi-plate-1.yaml": (
        *LOSH_2020, "sample_data/COSI Measure - Mechanical System/.okh-alu1.yaml"
    ),
    "losh-2020-crkbd.yml": (*LOSH_2020, "sample_data/crKbd/.okh.yml"),
    "losh-2020-mppt-1210-hus.yml": (*LOSH_2020, "sample_data/MPPT-1210-HUS/.okh.yml"),
    # The two real manifests kept beside the made-up ones (their README says where from).
    "ohloom.toml": (
        "OPEN-NEXT/OKH-LOSH", "7dacd64050d2495763741a9646fcdc49684f6fe9",
        "sample_data/okh-OHLOOM.toml",
    ),
    "okh-losh-template.toml": (
        "OPEN-NEXT/OKH-LOSH", "a3b3d472f7869a61e5c36382363a27ddbb121cb6",
        "sample_data/okh-TEMPLATE.toml",
    ),
}  # fmt: skip
MEDIA_TYPES = {".toml": "application/toml", ".yml": "application/yaml", ".yaml": "application/yaml"}


def _files() -> list[Path]:
    return [*sorted(f for f in CORPUS.iterdir() if f.suffix in MEDIA_TYPES), *(
        OKH / "ohloom.toml", OKH / "okh-losh-template.toml"
    )]  # fmt: skip


def _url(name: str) -> str:
    repo, commit, path = SOURCES[name]
    return f"https://github.com/{repo}/blob/{commit}/{quote(path)}"


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    engine = make_engine(sqlite_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    app = create_app(settings_for(sqlite_url), "both", factory=factory, dispatcher=NoDispatch())
    with TestClient(app) as c:
        yield c
    engine.dispose()


def test_every_file_of_the_corpus_has_its_source() -> None:
    assert sorted(f.name for f in _files()) == sorted(SOURCES)
    readme = (CORPUS / "README.md").read_text()
    for name in SOURCES:
        if (CORPUS / name).exists():
            assert f"`{name}`" in readme, name


def test_real_manifests_import_through_the_api(client: TestClient) -> None:
    answers = {
        f.name: client.post(
            "/v1/designs",
            params={"url": _url(f.name)},
            content=f.read_bytes(),
            headers={"content-type": MEDIA_TYPES[f.suffix]},
        )
        for f in _files()
    }
    refused = {name: r.json()["detail"] for name, r in answers.items() if r.status_code != 201}
    # 23 files: the OpenAT template holds comments only, every other one is read.
    assert refused == {
        "openat-template.yml": "the manifest is empty: it holds no fields, only comments or nothing"
    }
    assert answers["openat-template.yml"].status_code == 422
    got = {name: r.json() for name, r in answers.items() if r.status_code == 201}
    assert len(got) == 22

    # Each design as (standard, title, version, hardware licence as SPDX, as written,
    # open?, mass in kg, number of parts). A licence the manifest gives in prose maps to its
    # SPDX id; one that names no single licence ("CERN OHL": 1.1, 1.2 or one of three 2.0
    # variants) stays unmapped, and so does OKH-LOSH's placeholder `the-SPDX-ID`.
    summary = {
        name: (
            d["standard"], d["title"], d["version"], d["licence"], d["licence_text"],
            d["is_open"], d["mass_kg"], len(d["parts"]),
        )
        for name, d in got.items()
    }  # fmt: skip
    v1, losh = "okh-v1", "okh-losh"
    cc_by_sa = "CC-BY-SA-4.0"
    ohl_s = "CERN-OHL-S-2.0"
    prose = "Creative Commons Attribution-ShareAlike 4.0 International"
    assert summary == {
        # OKH v1 names hardware, documentation and software licences; the hardware one is
        # kept, else the first given. Every one decides openness.
        "agrocircle.yml": (v1, "Fruit Nut Vegetable Carer", None, cc_by_sa, prose, True, None, 0),
        # "CERN OHL" is unknown, CC-BY-SA 4.0 open: unknown overall.
        "boxfarm.yml": (v1, "BoxFram", "1.1", None, "CERN OHL", None, None, 0),
        "braille-signage-generator.yml": (
            v1, "Braille Signage Generator", "1.0", "CERN-OHL-P-2.0", "CERN-OHL-P-2.0", True,
            None, 0,
        ),
        # `version: 2` is a YAML number, kept as text.
        "cubefactory.yml": (v1, "CubeFactory2", "2", cc_by_sa, cc_by_sa, True, None, 0),
        "lightm.yml": (v1, "LightM", "0.1.0", "MIT", "MIT", True, None, 0),
        # Non-commercial: not open.
        "openerv-tw4.yml": (
            v1, "OpenERV TW4 and WM12", "1.0.0", "CC-BY-NC-SA-4.0", "CC-BY-NC-SA-4.0", False,
            None, 0,
        ),
        "openflexure-microscope.yml": (
            v1, "OpenFlexure Microscope", "6.1.2", "CERN-OHL-1.2", "CERN OHL v1.2", True, None,
            0,
        ),
        "otto-diy.yml": (v1, "OttoDIY", None, cc_by_sa, f"{prose} License", True, None, 0),
        "switch-plate-gopro.yml": (
            v1, "Switch Plate - GoPro Compatible", "1.0", cc_by_sa, cc_by_sa, True, None, 0
        ),
        "librewater-acraea.toml": (
            losh, "Acraea-Prototype", "2.0.0", ohl_s, ohl_s, True, None, 0
        ),
        # One part, without a mass: no mass for the module either.
        "losh-dummy-mosh-a.toml": (
            losh, "LOSH Dummy MOSH-A", "1.0.2", ohl_s, ohl_s, True, None, 1
        ),
        "meditation-bench.toml": (losh, "MeditationBench", "0.1.0", ohl_s, ohl_s, True, None, 0),
        "nimble.toml": (losh, "nimble", "0.1.0", ohl_s, ohl_s, True, None, 0),
        "planktoscope.toml": (losh, "PlanktoScope", "2.5", ohl_s, ohl_s, True, None, 2),
        # 18 parts in `[[part.mass]]` lists: 505 g printed (30+30+85+30+65+5+5+65+65+65+60)
        # and 1855 g of wood (160+550+65+700+15+35+330), 2360 g, as OHLOOM's own manifest.
        "precious-hocker-ohloom.toml": (losh, "OHLOOM", "0.10.0", cc_by_sa, cc_by_sa, True, 2.36,
                                        18),
        "yaemk-split-kb.toml": (
            losh, "YAEMK - Yet Another Ergonomic Mechanical Keyboard", "1.2.0", "GPL-3.0-only",
            "GPL-3.0-only", True, None, 0,
        ),
        # The early OKH-LOSH YAML names its design `name`, as OKH-LOSH does.
        "losh-2020-cosi-measure.yaml": (
            losh, "COSI Measure - Mechanical System", "1.0", "CERN-OHL-1.2", "CERN-OHL-1.2",
            True, None, 0,
        ),
        # No licence at all: unknown, not closed.
        "losh-2020-cosi-plate-1.yaml": (losh, "plate 1", "1.0", None, None, None, None, 0),
        "losh-2020-crkbd.yml": (losh, "crKbd, Corne, Helidox", "v2.1", "MIT", "MIT", True, None, 0),
        # Read past the tab after `IPC:`.
        "losh-2020-mppt-1210-hus.yml": (
            losh, "MPPT 1210 HUS", "v0.7.1", cc_by_sa, cc_by_sa, True, None, 0
        ),
        "ohloom.toml": (losh, "OHLOOM", "0.10.0", cc_by_sa, cc_by_sa, True, 2.36, 18),
        # The template's module says 50.33 kg, which wins over its one 330 g part.
        "okh-losh-template.toml": (
            losh, "your-awesome-OSH", "1.0.0", None, "the-SPDX-ID", None, 50.33, 1
        ),
    }  # fmt: skip

    # The counts, derived from the rows above: 18 open, 1 closed, 3 unknown; 3 with a mass.
    assert Counter(d["is_open"] for d in got.values()) == {True: 18, False: 1, None: 3}
    assert sorted(d["mass_kg"] for d in got.values() if d["mass_kg"] is not None) == [
        2.36, 2.36, 50.33
    ]  # fmt: skip
    assert Counter(d["standard"] for d in got.values()) == {v1: 9, losh: 13}
    # OpenFlexure's documentation and software licence, "GPL-3.0", is read as GPL-3.0-only.
    assert got["yaemk-split-kb.toml"]["oshwa_uid"] == "CL000001"
    assert got["openflexure-microscope.yml"]["licensor"] == "Richard Bowman"

    listed = client.get("/v1/designs").json()
    assert len(listed) == 22
    assert len(client.get("/v1/designs?open=true").json()) == 18
    # Every design is stored under the address it is published at, spaces encoded.
    assert {d["url"] for d in listed} == {_url(name) for name in got}
