"""Requests that made the API answer 500: each must be a 4xx problem that says what to fix.

Dates at the end of the calendar (windows that would end in the year 10000), a NUL byte in a
path, a time zone name longer than a file name, and a client that hangs up mid-body.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
from httpx import Response

from tests.conftest import free_port
from tests.services.http.support import assert_problem
from tests.support.api import CityClient, city_client
from tests.support.city import CITY
from tests.support.procs import Proc, wait_until

METRICS = f"/v1/cities/{CITY}/metrics"
LAST_MONTH = {"from": "9999-12-01", "to": "9999-12-31"}


@pytest.fixture
def client(db_url: str) -> Iterator[CityClient]:
    """The whole app with its test city, on SQLite and on PostgreSQL; a 500 is a response
    here (as a client sees it), not an exception raised into the test."""
    with city_client(db_url) as test_client:
        test_client.raise_server_exceptions = False
        yield test_client


def refused(response: Response, status: int = 422) -> str:
    """The problem's detail; it must say what to fix."""
    detail: str = assert_problem(response, status)["detail"]
    return detail


class TestTheEndOfTheCalendar:
    """Windows of the last days Python can hold overflowed computing their ends
    (`next_start`, `_sources`): `OverflowError`, a 500."""

    @pytest.mark.parametrize(
        ("interval", "first"),
        [("year", "9999-01-01"), ("month", "9999-01-01"), ("week", "9999-01-01"),
         ("day", "9999-01-01"), ("hour", "9999-12-01")],
    )  # fmt: skip
    def test_metrics_of_the_year_9999(self, client: CityClient, interval: str, first: str) -> None:
        asked = {"names": "input_kg", "interval": interval, "from": first, "to": "9999-12-31"}
        assert "9998-12-31" in refused(client.get(METRICS, params=asked))
        assert "9998-12-31" in refused(client.get(METRICS, params={**asked, "format": "csv"}))

    @pytest.mark.parametrize("report", ["summary", "flows", "ngsi-ld"])
    def test_reports_of_the_last_month_there_is(self, client: CityClient, report: str) -> None:
        assert "9998-12-31" in refused(client.get(f"/v1/cities/{CITY}/{report}", params=LAST_MONTH))

    def test_a_comparison_of_the_last_month_there_is(self, client: CityClient) -> None:
        asked = {"cities": CITY, "interval": "year", **LAST_MONTH}
        assert "9998-12-31" in refused(client.get("/v1/compare", params=asked))

    def test_the_first_days_there_are(self, client: CityClient) -> None:
        # Without `from`, the period starts 29 days before `to`: before the year 1.
        assert "`to`" in refused(client.get(METRICS, params={"to": "0001-01-05"}))
        early = {"from": "0001-01-01", "to": "0001-01-31", "interval": "week"}
        assert "`from`" in refused(client.get(METRICS, params=early))
        assert "`from`" in refused(client.get(f"/v1/cities/{CITY}/summary", params=early))

    def test_the_last_days_that_can_be_read_are_read(self, client: CityClient) -> None:
        # The bound refuses only what cannot be computed: the last year there is, is read.
        for interval in ("year", "month", "week", "day"):
            asked = {"names": "input_kg", "interval": interval, "from": "9998-01-01",
                     "to": "9998-12-31"}  # fmt: skip
            assert client.get(METRICS, params=asked).status_code == 200, interval
        hours = {"names": "input_kg", "interval": "hour", "from": "9998-12-31", "to": "9998-12-31"}
        assert len(client.get(METRICS, params=hours).json()["series"][0]["points"]) == 24
        summary = client.get(f"/v1/cities/{CITY}/summary", params={"from": "9998-12-01"})
        assert summary.status_code == 422  # `to` is today: before `from`
        whole = client.get(
            f"/v1/cities/{CITY}/flows", params={"from": "0002-01-01", "to": "9998-12-31"}
        )
        assert whole.status_code == 200, whole.text


class TestNulBytes:
    """A NUL byte reached psycopg (`PostgreSQL text fields cannot contain NUL`): a 500."""

    def test_in_the_path_or_the_query(self, client: CityClient) -> None:
        for url in ("/v1/cities/%00/metrics", "/v1/cities/%00", f"{METRICS}?names=input_kg%00",
                    "/v1/cities/a%00b/sites"):  # fmt: skip
            assert "NUL" in refused(client.get(url), 400), url

    def test_in_a_body(self, client: CityClient) -> None:
        city = {"slug": "nul", "name": "Nul\u0000City", "country": "ES"}
        assert "name" in refused(client.post("/v1/cities", json=city))
        site = {"slug": "nul", "name": "Lab\u0000"}
        assert "name" in refused(client.post(f"/v1/cities/{CITY}/sites", json=site))

    def test_a_value_the_database_refuses_is_still_a_problem(self, pg_url: str) -> None:
        # Whatever the checks let through that PostgreSQL refuses (a NUL in a device's kind,
        # say) is the request's fault: a 422, never a 500.
        with city_client(pg_url) as client:
            client.raise_server_exceptions = False
            device = {"slug": "nul", "name": "Nul", "kind": "printer\u0000"}
            response = client.post(f"/v1/cities/{CITY}/sites/lab/devices", json=device)
            assert "database" in refused(response)


class TestTimeZones:
    def test_a_name_longer_than_a_file_name(self, client: CityClient) -> None:
        # `OSError: [Errno 36] File name too long` from the time zone database: a 500.
        city = {"slug": "long", "name": "Long", "country": "ES", "timezone": "a" * 300}
        assert "timezone" in refused(client.post("/v1/cities", json=city))

    @pytest.mark.parametrize(
        "name", ["Europe/" + "x" * 57, "../../../../etc/passwd", "/etc/localtime", "Europe/\u0000"]
    )
    def test_names_that_are_paths(self, client: CityClient, name: str) -> None:
        city = {"slug": "path", "name": "Path", "country": "ES", "timezone": name}
        detail = refused(client.post("/v1/cities", json=city))
        assert "time zone" in detail or "timezone" in detail, detail
        assert client.get("/v1/cities/path").status_code == 404


# A client that hangs up ------------------------------------------------------------------------


@pytest.fixture
def api_process(sqlite_url: str) -> Iterator[tuple[Proc, int]]:
    """`fabcity api` as a real uvicorn server, with its log."""
    port = free_port()
    env = {**os.environ, "FABCITY_DATABASE_URL": sqlite_url, "FABCITY_AUTH": "off"}
    proc = Proc(["api", "--port", str(port)], env=env)
    try:
        proc.wait_for_output("Uvicorn running", timeout=60)
        yield proc, port
    finally:
        proc.stop()


def cut_short(port: int, path: str, media_type: str) -> None:
    """Headers that promise 1000 bytes, then 10 of them, then the connection closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {media_type}\r\n"
            "Content-Length: 1000\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"id": "12')
        time.sleep(0.3)  # the server is reading the body when the client goes


def test_a_client_that_hangs_up_mid_body_is_no_server_error(
    api_process: tuple[Proc, int],
) -> None:
    proc, port = api_process
    for path, media_type in [
        ("/v1/events", "application/cloudevents+json"),  # a body the endpoint reads itself
        ("/v1/cities", "application/json"),  # a body FastAPI reads for a model
        ("/v1/designs?url=https://designs.example.org/a.toml", "application/toml"),
    ]:
        cut_short(port, path, media_type)
    # A request after them is answered, and logged: so the log holds theirs too.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    wait_until(lambda: '"GET /healthz HTTP/1.1" 200' in proc.output, timeout=10)
    log = proc.output
    assert "Exception in ASGI application" not in log, log
    assert "unhandled error" not in log, log
    assert " 500" not in log, log
