"""A city's official statistics in parts, through the API on SQLite and PostgreSQL: each part
is optional, an absent one gives null (never 0), and a sector may come as its published ratio."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.api import CityClient, city_client
from tests.support.city import CITY

URL = f"/v1/cities/{CITY}/statistics/2024"


@pytest.fixture
def client(db_url: str) -> Iterator[CityClient]:
    with city_client(db_url) as test_client:
        yield test_client


def put(client: CityClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.put(URL, json=body)
    assert response.status_code == 200, response.text
    stored = client.get(URL)
    assert stored.status_code == 200, stored.text
    assert stored.json() == response.json()
    got: dict[str, Any] = stored.json()
    return got


SECTOR_RATIOS = [
    # As a study publishes them: self-sufficiency p/c per sector, weights per mille.
    {"name": "food", "ratio": "0.5", "weight": 600},
    {"name": "furniture", "ratio": "2", "weight": 400},
]


def test_sectors_alone_give_the_index_and_no_accounts(client: CityClient) -> None:
    # Uploading sectors needed `"mfa": {}`, which then answered DMC 0.
    got = put(client, {"sectors": SECTOR_RATIOS})
    # 100 × (min(1, 0.5)·600 + min(1, 2)·400) / 1000 = 70
    assert float(got["sector_self_sufficiency"]["value"]) == 70
    accounts = got["accounts"]
    for name in ("de", "imp", "exp", "dmi", "dmc", "ptb", "dmc_per_person", "cmu", "u"):
        assert accounts[name] is None, name
    assert accounts["by_category"] == {}


def test_an_empty_mfa_table_is_not_a_table_of_zeros(client: CityClient) -> None:
    got = put(client, {"mfa": {}, "population": 1000, "gdp": "5000"})
    accounts = got["accounts"]
    assert accounts["dmc"] is None and accounts["dmc_per_person"] is None
    assert accounts["resource_productivity"] is None
    assert got["sector_self_sufficiency"] is None


def test_cmu_inputs_without_a_table_give_u_but_no_rate(client: CityClient) -> None:
    # U = RCV_R − IMP_w + EXP_w = 15 − 3 + 2 = 14; CMU = U / (DMC + U) needs DMC.
    got = put(client, {"cmu": {"rcv_r": 15, "imp_w": 3, "exp_w": 2}})
    assert got["accounts"]["u"] == "14" and got["accounts"]["cmu"] is None


def test_a_ratio_gives_what_its_production_and_consumption_give(client: CityClient) -> None:
    values = [
        {"name": "food", "production": 30, "consumption": 60, "weight": 600},
        {"name": "furniture", "production": 90, "consumption": 45, "weight": 400},
    ]
    by_values = put(client, {"sectors": values})["sector_self_sufficiency"]
    by_ratios = put(client, {"sectors": SECTOR_RATIOS})["sector_self_sufficiency"]
    assert by_values == by_ratios == {"value": "70.000000", "sectors": 2}
    # Mixed in one table: 100 × (1·300 + (1/3)·300 + 0.25·400) / 1000 = 50, to six places.
    mixed = [
        {"name": "energy", "ratio": "1.4", "weight": 300},
        {"name": "textiles", "production": 1, "consumption": 3, "weight": 300},
        {"name": "metal", "ratio": "0.25", "weight": 400},
    ]
    assert put(client, {"sectors": mixed})["sector_self_sufficiency"]["value"] == "50.000000"


@pytest.mark.parametrize(
    "sector",
    [
        {"name": "food", "ratio": "0.5", "production": 1, "consumption": 2, "weight": 1},
        {"name": "food", "ratio": "0.5", "consumption": 2, "weight": 1},
        {"name": "food", "production": 1, "weight": 1},
        {"name": "food", "weight": 1},
        {"name": "food", "production": 1, "consumption": 0, "weight": 1},
        {"name": "food", "ratio": "-0.5", "weight": 1},
        {"name": "food", "ratio": "NaN", "weight": 1},
        {"name": "food", "ratio": "0.5"},
    ],
)
def test_a_sector_that_does_not_hold_together_is_refused(
    client: CityClient, sector: dict[str, Any]
) -> None:
    response = client.put(URL, json={"sectors": [sector]})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get(URL).status_code == 404


def test_a_table_replaced_is_kept_in_the_log(client: CityClient) -> None:
    first = {"sectors": SECTOR_RATIOS}
    put(client, first)
    put(client, first)  # the same again: nothing changed, nothing logged
    put(client, {"sectors": SECTOR_RATIOS[:1]})
    logged = client.get(f"/v1/cities/{CITY}/changes").json()["items"]
    assert [(c["entry"], c["name"], c["action"]) for c in logged] == [
        ("statistics", f"/{CITY}/2024", "create"),
        ("statistics", f"/{CITY}/2024", "update"),
    ]
    assert logged[1]["before"]["sectors"][1]["name"] == "furniture"
    assert [s["name"] for s in logged[1]["after"]["sectors"]] == ["food"]
