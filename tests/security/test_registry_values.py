"""Values the registry took that it should have refused: a design at a `javascript:` URL,
device topics that write their own lines into the broker's access rules, and Celery beat's
schedule in the system's shared temporary folder."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from fabcity.core import models
from fabcity.core.db import transaction
from fabcity.registry import entries
from tests.fixtures import OKH
from tests.services.http.support import assert_problem
from tests.support.api import CityClient, city_client
from tests.support.city import CITY, SITE

DEVICES = f"/v1/cities/{CITY}/sites/{SITE}/devices"
STOOL = (OKH / "stool.toml").read_text()
TOML = {"content-type": "application/toml"}

# Each adapter's topic settings, and what an attacker with an admin's form puts in them.
INJECTED = "\ntopic readwrite #"
TOPIC_ATTACKS: list[tuple[str, dict[str, Any]]] = [
    # Tasmota's FullTopic: a newline writes a rule of its own; wildcards reach every device.
    ("tasmota", {"topic": "plug", "full_topic": "%prefix%/%topic%/" + INJECTED}),
    ("tasmota", {"topic": "plug", "full_topic": "%prefix%/%topic%/#"}),
    ("tasmota", {"topic": "plug", "full_topic": "+/%prefix%/%topic%/"}),
    ("tasmota", {"topic": "plug", "full_topic": "%prefix%/%topic%/\x00"}),
    ("tasmota", {"topic": "plug", "full_topic": "%prefix%/%topic%/" + "x" * 300}),
    ("tasmota", {"topic": "plug" + INJECTED}),
    # Every other topic a device is registered with reaches the broker's rules as well.
    ("octoprint", {"base_topic": "octoPrint" + INJECTED}),
    ("octoprint", {"base_topic": "$share/ingest/fabcity"}),  # the bridges' shared group
    ("moonraker", {"instance_name": "host\r\nuser fabcity-bridge"}),
    ("bambu", {"serial": "01S00\u2028x"}),
    ("shelly", {"topic_prefix": "$SYS"}),
    ("esphome", {"topic_prefix": "node", "discovery_prefix": "ha\x7f"}),
    ("esphome", {"topic_prefix": "node", "node_id": "n\tx"}),
    ("sparkplug", {"group_id": "g" + INJECTED, "edge_node_id": "n"}),
    ("cloudevents", {"topic": "machines/laser\x85"}),
    # PrusaLink's address names its messages (`prusalink:{url}`), a topic of its rules.
    ("prusalink", {"url": "http://192.168.1.40" + INJECTED}),
    ("prusalink", {"url": "http://192.168.1.40/#"}),
]


@pytest.fixture
def client(db_url: str) -> Iterator[CityClient]:
    with city_client(db_url) as test_client:
        yield test_client


def run_beat(data_dir: Path | None, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The arguments `fabcity beat` gives Celery (which is not started)."""
    from services.cli.main import app
    from workers.celery_app import app as celery

    given: list[list[str]] = []
    monkeypatch.setattr(celery, "start", given.append)
    args = ["beat"] if data_dir is None else ["beat", "--data-dir", str(data_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [argv] = given
    return argv


class TestRegistryValues:
    def test_a_design_at_a_javascript_url_is_refused(self, client: CityClient) -> None:
        # The dashboard and clients follow a design's URL as a link.
        for url in ("javascript:alert(1)", "JavaScript:alert(document.cookie)",
                    "data:text/html,<script>alert(1)</script>", "file:///etc/passwd",
                    "https://designs.example.org/a\nb", "http://"):  # fmt: skip
            response = client.post("/v1/designs", params={"url": url}, content=STOOL, headers=TOML)
            assert "manifest URL" in assert_problem(response, 422)["detail"], url
        # The same from the manifest's own `manifest-url`.
        planted = "manifest-url = 'javascript:alert(1)'\n" + STOOL
        response = client.post("/v1/designs", content=planted, headers=TOML)
        assert "manifest URL" in assert_problem(response, 422)["detail"]
        assert client.get("/v1/designs").json() == []
        # What designs are published at is still taken.
        for url in ("https://designs.example.org/okh/stool.toml", "http://lab.local/okh.toml"):
            response = client.post("/v1/designs", params={"url": url}, content=STOOL, headers=TOML)
            assert response.status_code in (200, 201), response.text

    def test_device_topics_that_would_rewrite_broker_rules_are_refused(
        self, client: CityClient
    ) -> None:
        for adapter, settings in TOPIC_ATTACKS:
            body = {"slug": "evil", "name": "Evil", "adapter": adapter, "settings": settings}
            detail = assert_problem(client.post(DEVICES, json=body), 422)["detail"]
            assert "settings" in detail, (adapter, settings)
        assert "evil" not in [d["slug"] for d in client.get(DEVICES).json()["items"]]

    def test_the_device_topics_that_are_used_are_taken(self, client: CityClient) -> None:
        for i, (adapter, settings) in enumerate([
            ("tasmota", {"topic": "plug-laser", "full_topic": "tasmota/%topic%/%prefix%/"}),
            ("octoprint", {"base_topic": "octoPrint"}),
            ("shelly", {"topic_prefix": "shellyplusplugs-e86beae12f10"}),
            ("esphome", {"topic_prefix": "scale-bins", "discovery_prefix": "homeassistant"}),
            ("sparkplug", {"group_id": "Fab Lab", "edge_node_id": "node-1"}),
            ("prusalink", {"url": "http://192.168.1.40:8080"}),
        ]):  # fmt: skip
            body = {"slug": f"d{i}", "name": "D", "adapter": adapter, "settings": settings}
            response = client.post(DEVICES, json=body)
            assert response.status_code == 201, response.text

    def test_a_device_stored_before_the_rules_reaches_no_broker_rule(
        self, client: CityClient
    ) -> None:
        # A device registered before the topics were checked is left out of what the broker
        # configuration is written from (`entries.adapter_devices`), not written into it.
        with transaction(client.factory) as s:
            site = s.scalar(select(models.Site.id).where(models.Site.slug == SITE))
            settings = {"topic": "plug", "full_topic": "%prefix%/%topic%/" + INJECTED}
            s.execute(
                insert(models.Device).values(
                    site_id=site, slug="old", name="Old", kind="plug", adapter="tasmota",
                    settings=settings,
                )
            )  # fmt: skip
        with transaction(client.factory) as s:
            assert [d.source for d in entries.adapter_devices(s)] == []

    def test_beat_keeps_its_schedule_in_the_data_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A fixed name in the shared temporary folder: any local user could plant a schedule
        # (a shelve of pickles, loaded at start) or a symbolic link there before beat starts.
        data = tmp_path / "data"
        argv = run_beat(data, monkeypatch)
        [schedule] = [a.removeprefix("--schedule=") for a in argv if a.startswith("--schedule=")]
        assert Path(schedule).parent == data
        assert (data.stat().st_mode & 0o077) == 0  # its directory is ours alone
        monkeypatch.chdir(tmp_path)
        [default] = [a for a in run_beat(None, monkeypatch) if a.startswith("--schedule=")]
        where = (tmp_path / default.removeprefix("--schedule=")).resolve()
        assert where.parent == (tmp_path / "data").resolve()
        assert where.parent != Path(tempfile.gettempdir()).resolve()
