"""A small registered city for tests, and event builders."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.registry import entries
from schemas import api

CITY = "testville"
SITE = "lab"
OTHER_SITE = "hub"
DEVICE = "printer"


def register(factory: sessionmaker[Session], timezone: str = "Europe/Madrid") -> None:
    """City `testville` with sites `lab` (device `printer`) and `hub`."""
    with transaction(factory) as s:
        city = entries.create_city(
            s, api.CityIn(slug=CITY, name="Testville", country="ES", timezone=timezone)
        )
        lab = entries.create_site(s, city, api.SiteIn(slug=SITE, name="Lab"))
        entries.create_site(s, city, api.SiteIn(slug=OTHER_SITE, name="Hub"))
        entries.create_device(s, lab, api.DeviceIn(slug=DEVICE, name="Printer"))


def flow(
    action: str = "consume",
    resource: str = "filament",
    quantity: float = 1.0,
    unit: str = "kg",
    ring: str = "city",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "action": action,
        "resource": resource,
        "quantity": quantity,
        "unit": unit,
        "ring": ring,
        **extra,
    }


def event(
    data: Any,
    *,
    id: str | None = None,
    source: str = f"/{CITY}/{SITE}",
    time: datetime | str | None = "2026-03-10T10:00:00+01:00",
    type: str = "fabcity.flow",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": id or uuid.uuid4().hex,
        "source": source,
        "type": type,
        "data": data,
    }
    if time is not None:
        body["time"] = time if isinstance(time, str) else time.isoformat()
    return body


def count_rows(factory: sessionmaker[Session], model: type, *where: Any) -> int:
    """How many rows of `model` (matching `where`) are stored."""
    with transaction(factory) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0
