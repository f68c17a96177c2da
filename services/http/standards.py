"""Open standards at the edges: sites from Open Know-Where, designs from Open Know-How, and
webhook subscriptions that forward events as CloudEvents.

Writes sit on `write` (served by the ingest role), reads on `read` (the query role).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from fabcity import webhooks
from fabcity.core import models
from fabcity.registry import designs, entries, okh, okw
from schemas import standards
from services.http.dependencies import RawBody, RowId, Sent, SessionDep
from services.http.problems import problem

write = APIRouter(prefix="/v1")
read = APIRouter(prefix="/v1")

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
TOML_TYPES = ("application/toml", "text/toml", "text/x-toml")
JSON_TYPES = ("application/json",)

# The imports read their body themselves (YAML, TOML or JSON): the body is read by an async
# dependency, so the endpoints can be plain `def` with the request's session, in the threadpool.
OkwBody = Annotated[Sent, Depends(RawBody(*YAML_TYPES, *JSON_TYPES))]
ManifestBody = Annotated[Sent, Depends(RawBody(*TOML_TYPES, *YAML_TYPES, *JSON_TYPES))]


def _import_answer(result: standards.ImportResult, what: str) -> JSONResponse:
    if result.rejected and not result.imported:
        return problem(
            422,
            f"Every {what} was refused",
            "; ".join(f"[{r.index}] {r.error}" for r in result.rejected[:20]),
            "invalid-record",
            rejected=[r.model_dump() for r in result.rejected],
        )
    return JSONResponse(result.model_dump(mode="json"))


# Open Know-Where ----------------------------------------------------------------------------


def _facility(site: models.Site, facility: models.Facility, city: str) -> standards.Facility:
    return standards.Facility.model_validate(
        {
            "slug": site.slug,
            "name": site.name,
            "kind": site.kind,
            "latitude": site.latitude,
            "longitude": site.longitude,
            "retired_at": site.retired_at,
            "city": city,
            "okw_id": facility.okw_id,
            "status": facility.status,
            "access_type": facility.access_type,
            "address": facility.address,
            "equipment": facility.equipment,
            "materials": facility.materials,
            "verified_by": facility.verified_by,
            "verified_at": facility.verified_at,
            "imported_at": facility.imported_at,
        }
    )


@write.post(
    "/cities/{city}/okw",
    response_model=standards.ImportResult,
    tags=["open standards"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {}} for t in (*YAML_TYPES[:1], *JSON_TYPES)},
        }
    },
)
def import_okw(city: str, sent: OkwBody, s: SessionDep) -> JSONResponse:
    """Import Open Know-Where facility records (YAML, several documents allowed, or JSON; a
    record or a list). Each becomes a site; a record imported before updates its site. Bad
    records are reported by index, the others imported."""
    records = okw.load_records(sent.body, sent.media_type)
    return _import_answer(okw.import_records(s, entries.get_city(s, city), records), "record")


@read.get(
    "/cities/{city}/facilities",
    response_model=list[standards.Facility],
    tags=["open standards"],
)
def list_facilities(city: str, s: SessionDep) -> list[standards.Facility]:
    """The sites imported from Open Know-Where, with their equipment, materials and
    provenance."""
    c = entries.get_city(s, city)
    return [_facility(site, f, c.slug) for site, f in okw.list_facilities(s, c)]


# Open Know-How ------------------------------------------------------------------------------


@write.post(
    "/designs",
    response_model=standards.Design,
    status_code=201,
    responses={200: {"description": "An earlier import of this URL was updated"}},
    tags=["open standards"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {}} for t in (*TOML_TYPES[:1], *YAML_TYPES[:1], *JSON_TYPES)},
        }
    },
)
def import_design(
    sent: ManifestBody,
    s: SessionDep,
    url: Annotated[
        str | None,
        Query(
            max_length=2048,
            description="Where the manifest is published; flows name the design by it. "
            "Defaults to the manifest's `manifest-url`.",
        ),
    ] = None,
) -> JSONResponse:
    """Import an Open Know-How manifest: OKH-LOSH (TOML) or OKH v1 (YAML), or either as JSON.
    Importing the same URL again updates the design."""
    doc = okh.load(sent.body, sent.media_type)
    found, created = designs.import_manifest(s, doc, url)
    design = standards.Design.model_validate(found)
    return JSONResponse(design.model_dump(mode="json"), status_code=201 if created else 200)


@read.get("/designs", response_model=list[standards.Design], tags=["open standards"])
def list_designs(
    s: SessionDep,
    open_only: Annotated[
        bool, Query(alias="open", description="Only designs under open licences.")
    ] = False,
) -> list[standards.Design]:
    return [standards.Design.model_validate(d) for d in designs.list_designs(s, open_only)]


@read.get("/designs/{design_id}", response_model=standards.Design, tags=["open standards"])
def get_design(design_id: RowId, s: SessionDep) -> standards.Design:
    return standards.Design.model_validate(designs.get(s, design_id))


# Subscriptions ------------------------------------------------------------------------------


@write.post(
    "/subscriptions",
    response_model=standards.Subscription,
    status_code=201,
    tags=["subscriptions"],
)
def create_subscription(body: standards.SubscriptionIn, s: SessionDep) -> standards.Subscription:
    """Forward stored events (and `fabcity.metrics.updated` notices) to a webhook as
    CloudEvents, in order, retried with exponential backoff until the receiver answers 2xx."""
    sub = webhooks.create(s, body)
    return webhooks.describe(sub, webhooks.city_slugs(s))


@write.delete("/subscriptions/{subscription_id}", status_code=204, tags=["subscriptions"])
def delete_subscription(subscription_id: RowId, s: SessionDep) -> Response:
    webhooks.remove(s, subscription_id)
    return Response(status_code=204)


@read.get("/subscriptions", response_model=list[standards.Subscription], tags=["subscriptions"])
def list_subscriptions(s: SessionDep) -> list[standards.Subscription]:
    slugs = webhooks.city_slugs(s)
    return [webhooks.describe(sub, slugs) for sub in webhooks.list_all(s)]


@read.get(
    "/subscriptions/{subscription_id}",
    response_model=standards.Subscription,
    tags=["subscriptions"],
)
def get_subscription(subscription_id: RowId, s: SessionDep) -> standards.Subscription:
    return webhooks.describe(webhooks.get(s, subscription_id), webhooks.city_slugs(s))


@read.get(
    "/subscriptions/{subscription_id}/deliveries",
    response_model=list[standards.Delivery],
    tags=["subscriptions"],
)
def list_deliveries(
    subscription_id: RowId,
    s: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[standards.Delivery]:
    """The delivery log, newest first: each run delivered, and each failed attempt with its
    status and error."""
    return [
        standards.Delivery.model_validate(d) for d in webhooks.deliveries(s, subscription_id, limit)
    ]
