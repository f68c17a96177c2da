"""Write the JSON Schema files of the contract: `python -m schemas.generate [--check]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from schemas import api, events, reports, standards

OUT = Path(__file__).parent / "json"

MODELS: dict[str, type[BaseModel] | TypeAdapter[Any]] = {
    "cloudevent": events.CloudEvent,
    "cloudevent-batch": TypeAdapter(list[events.CloudEvent]),
    "flow": events.FlowData,
    "machine-job": events.MachineJobData,
    "meter-reading": events.MeterReadingData,
    "scale-reading": events.ScaleReadingData,
    "device-status": events.DeviceStatusData,
    "event-retracted": events.RetractedData,
    "event-view": events.EventView,
    "ingest-result": api.IngestResult,
    "problem": api.Problem,
    "city": api.City,
    "site": api.Site,
    "device": api.Device,
    "metrics-response": api.MetricsResponse,
    "summary": reports.Summary,
    "breakdown": reports.Breakdown,
    "comparison": reports.Comparison,
    "flows": reports.Flows,
    "design": standards.Design,
    "facility": standards.Facility,
    "import-result": standards.ImportResult,
    "subscription-in": standards.SubscriptionIn,
    "subscription": standards.Subscription,
    "delivery": standards.Delivery,
}


def render() -> dict[str, str]:
    """File name to its text, exactly as committed."""
    files = {}
    for name, model in MODELS.items():
        schema = model.model_json_schema() if isinstance(model, type) else model.json_schema()
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        files[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def drift() -> list[str]:
    """Files that differ from what the models generate (or are missing or extra)."""
    wanted = render()
    have = {p.name for p in OUT.glob("*.schema.json")}
    out = sorted(have - wanted.keys())
    for name, text in wanted.items():
        path = OUT / name
        if not path.exists() or path.read_text() != text:
            out.append(name)
    return out


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = drift()
        if stale:
            print("schemas drifted from the models:", ", ".join(stale))
            print("run: python -m schemas.generate")
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for path in OUT.glob("*.schema.json"):
        path.unlink()
    for name, text in render().items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
