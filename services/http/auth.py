"""Who may call what: keys checked once per request, a policy per route, tenants checked in
one place, per-key rate limits, and a limit on failed key lookups per client address (counted
by services.http.ratelimit).

Two pieces, so that no endpoint has to know about any of it:

- `AccessMiddleware` (ASGI) runs before routing and body parsing: it finds the key
  (`Authorization: Bearer …` or `X-API-Key`), answers 401 for a missing or invalid one, 429
  when the key is over its rate or its address has failed too many lookups, 413 for a body
  over the limit, and puts the `Principal` on the request.
- `authorize`, one dependency of the whole app, runs once the route is known: it looks up the
  route's policy by method and path template (`POLICIES`; a route without one is admin-only),
  answers 403 for a role the policy does not name, and checks the tenant: a `{city}` or
  `{site}` path parameter, or `city` / `cities` query parameters, must lie within the key's
  city and site. `POST /v1/events` checks each event's `source` in the ingest path instead
  (`fabcity.ingest.service.ingest(scope=…)`), so a refused event is reported by index and
  never stored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import Headers

from fabcity.core.db import transaction
from fabcity.core.errors import PayloadTooLarge
from fabcity.core.settings import Settings
from fabcity.registry import keys
from fabcity.registry.keys import Principal, Role
from services.http.dependencies import PrincipalDep
from services.http.problems import problem
from services.http.ratelimit import RateLimiter, RedisStore

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# The policy table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Who may call a route. Tenants are checked for every route alike (see the module doc)."""

    roles: frozenset[Role]
    public: bool = False  # no key needed

    def allows(self, role: Role) -> bool:
        return self.public or role in self.roles


ADMIN: Policy = Policy(frozenset({"admin"}))
READ: Policy = Policy(frozenset({"admin", "planner"}))
WRITE_EVENTS: Policy = Policy(frozenset({"admin", "site", "device"}))
PUBLIC: Policy = Policy(frozenset(), public=True)
# Events as stored: a lab manager (site key) reads its site's, a planner its city's; the
# route keeps each to them (`fabcity.read.events.Viewer`), an event outside being a 404.
READ_EVENTS: Policy = Policy(frozenset({"admin", "planner", "site"}))
LAB_READ: Policy = Policy(frozenset({"admin", "planner", "site"}))
ANY_KEY: Policy = Policy(frozenset({"admin", "planner", "site", "device"}))

# (method, path template) → policy. A route missing here is admin-only at run time, and fails
# tests/services/http/test_access_matrix.py until it is added: decide who may call it.
POLICIES: dict[tuple[str, str], Policy] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    # Prometheus scrapes without a key, as it did the mount this route replaced
    ("GET", "/metrics"): PUBLIC,
    # the dashboard's page and assets: it asks the person for a planner key to fetch data
    ("GET", "/"): PUBLIC,
    ("GET", "/dashboard/{name}"): PUBLIC,
    # the lab's page: it asks for the lab's site key before it posts anything
    ("GET", "/lab"): PUBLIC,
    # what the metrics mean: no city's data, and the explanation page is read without a key
    ("GET", "/explain"): PUBLIC,
    ("GET", "/v1/definitions"): PUBLIC,
    # ingest: sites and devices write their own events (the source is checked per event)
    ("POST", "/v1/events"): WRITE_EVENTS,
    # what a message became; corrections are events, posted above
    ("GET", "/v1/events"): READ_EVENTS,
    ("GET", "/v1/events/{source:path}/{id}"): READ_EVENTS,
    # a lab's spreadsheet: the same check per event as above; the template is a blank form
    ("POST", "/v1/events/import"): WRITE_EVENTS,
    ("GET", "/v1/events/template"): PUBLIC,
    # the registry: planners read, admins write
    ("GET", "/v1/cities"): READ,
    ("POST", "/v1/cities"): ADMIN,
    ("GET", "/v1/cities/{city}"): READ,
    ("PATCH", "/v1/cities/{city}"): ADMIN,
    ("DELETE", "/v1/cities/{city}"): ADMIN,
    ("GET", "/v1/cities/{city}/sites"): READ,
    ("POST", "/v1/cities/{city}/sites"): ADMIN,
    ("PATCH", "/v1/cities/{city}/sites/{site}"): ADMIN,
    ("DELETE", "/v1/cities/{city}/sites/{site}"): ADMIN,
    # a lab's page lists its own machines (the tenant check keeps a site key to its site)
    ("GET", "/v1/cities/{city}/sites/{site}/devices"): LAB_READ,
    ("POST", "/v1/cities/{city}/sites/{site}/devices"): ADMIN,
    ("PATCH", "/v1/cities/{city}/sites/{site}/devices/{device}"): ADMIN,
    ("DELETE", "/v1/cities/{city}/sites/{site}/devices/{device}"): ADMIN,
    ("GET", "/v1/cities/{city}/devices"): READ,
    # who changed what in the registry, and how many hours it sent to be recomputed
    ("GET", "/v1/cities/{city}/changes"): READ,
    # the vocabulary: whoever writes events needs it as much as whoever reads figures
    ("GET", "/v1/resources"): ANY_KEY,
    ("POST", "/v1/resources"): ADMIN,
    # metrics and statistics
    ("GET", "/v1/cities/{city}/metrics"): READ,
    ("GET", "/v1/cities/{city}/summary"): READ,
    ("GET", "/v1/cities/{city}/breakdown"): READ,
    ("GET", "/v1/cities/{city}/flows"): READ,
    ("GET", "/v1/compare"): READ,
    ("GET", "/v1/cities/{city}/ngsi-ld"): READ,
    ("GET", "/v1/cities/{city}/statistics/{year}"): READ,
    ("PUT", "/v1/cities/{city}/statistics/{year}"): ADMIN,
    ("POST", "/v1/mci"): READ,  # a calculation: reads and writes nothing
    ("GET", "/v1/designs/{design_id}/mci"): READ,
    # open standards
    ("POST", "/v1/cities/{city}/okw"): ADMIN,
    ("GET", "/v1/cities/{city}/facilities"): READ,
    ("POST", "/v1/designs"): ADMIN,
    ("GET", "/v1/designs"): READ,
    ("GET", "/v1/designs/{design_id}"): READ,
    # webhooks carry receivers' URLs and every city's events: operators only
    ("POST", "/v1/subscriptions"): ADMIN,
    ("GET", "/v1/subscriptions"): ADMIN,
    ("GET", "/v1/subscriptions/{subscription_id}"): ADMIN,
    ("DELETE", "/v1/subscriptions/{subscription_id}"): ADMIN,
    ("GET", "/v1/subscriptions/{subscription_id}/deliveries"): ADMIN,
    # keys and dead letters: operators only
    ("GET", "/v1/whoami"): ANY_KEY,
    # targets are the planners' to set, for their city (the tenant check holds them to it)
    ("GET", "/v1/cities/{city}/targets"): READ,
    ("PUT", "/v1/cities/{city}/targets/{metric}"): READ,
    ("DELETE", "/v1/cities/{city}/targets/{metric}"): READ,
    ("GET", "/v1/keys"): ADMIN,
    ("POST", "/v1/keys"): ADMIN,
    ("GET", "/v1/keys/{key_id}"): ADMIN,
    ("DELETE", "/v1/keys/{key_id}"): ADMIN,
    ("POST", "/v1/keys/{key_id}/rotate"): ADMIN,
    ("GET", "/v1/dead-letters"): ADMIN,
    ("GET", "/v1/dead-letters/{letter_id}"): ADMIN,
    ("POST", "/v1/dead-letters/{letter_id}/replay"): ADMIN,
    ("POST", "/v1/dead-letters/replay"): ADMIN,
}

# Served without a key, before any route is known: operations, the API's own documentation,
# and the dashboard's static pages (which ask the person for a planner key to fetch data).
PUBLIC_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc"}
    | {"/openapi.json", "/dashboard", "/favicon.ico"}
    # the lab's page (it asks for the lab's key) and its blank spreadsheet, a plain link
    | {"/lab", "/v1/events/template", "/explain", "/v1/definitions"}
)
PUBLIC_PREFIXES = ("/metrics/", "/static/", "/dashboard/")


def is_public_path(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def policy_for(method: str, path: str) -> Policy:
    return POLICIES.get(("GET" if method == "HEAD" else method, path), ADMIN)


# The dependency: role and tenant, once the route is known ------------------------------------


class Refused(Exception):
    """An access refusal, turned into a problem by `install`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def authorize(request: Request, who: PrincipalDep) -> None:
    """Every route's one access check: its policy's roles, then the tenant. `async`: it only
    reads the request, and FastAPI would run a plain `def` in the threadpool, a second thread
    hop for every request beside the endpoint's own."""
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    policy = policy_for(request.method, template)
    if policy.public:
        return
    if not policy.allows(who.role):
        raise Refused(403, f"a {who.role} key may not call {request.method} {template}")
    if who.key_id is None and who.role != "admin" and request.method not in ("GET", "HEAD"):
        raise Refused(401, "without a key only reads are public; send a key")
    check_tenant(who, request)


def check_tenant(who: Principal, request: Request) -> None:
    """The one place where a request's city and site are held against the key's."""
    params = request.path_params
    cities = [str(params["city"])] if "city" in params else []
    cities += request.query_params.getlist("city")
    for value in request.query_params.getlist("cities"):
        cities += [c.strip() for c in value.split(",") if c.strip()]
    for city in cities:
        if not who.may_see_city(city):
            raise Refused(403, f"this key is for city {who.city!r}, not {city!r}")
    if "site" in params and cities and not who.may_see_site(cities[0], str(params["site"])):
        raise Refused(403, f"this key is for site {who.site!r}, not {params['site']!r}")


# The middleware ------------------------------------------------------------------------------


def presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key") or None


class AccessMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, factory: sessionmaker[Session]) -> None:
        self.app = app
        self.settings = settings
        self.factory = factory
        # Beside Celery there is a Redis, and several API processes that share the limits.
        store = RedisStore(settings) if settings.worker_mode == "celery" else None
        self.limiter = RateLimiter(
            settings, settings.rate_limit_per_s, settings.rate_limit_burst, "ratelimit", store
        )
        # Keys are guessed from an address, not with a key: failures are counted per address.
        per_s = settings.auth_failure_per_min / 60
        self.failures = RateLimiter(settings, per_s, settings.auth_failure_burst, "authfail", store)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        limit = self.settings.max_body_bytes
        if declared.isdigit() and int(declared) > limit:
            await _answer(scope, receive, send, 413, f"body of {declared} bytes; at most {limit}")
            return
        address = (scope.get("client") or ("?", 0))[0]
        # An address that failed too many lookups is refused before its key is looked up, a
        # good key too: answering a good key would tell a guesser which guess was right.
        guessing = presented_key(headers) is not None and not is_public_path(scope["path"])
        if self.settings.auth == "required" and guessing:
            wait = await self.failures.blocked_s(address)
            if wait > 0:
                await _too_many(scope, receive, send, wait, FAILED_LOOKUPS)
                return
        who, refusal = await self._identify(scope, headers)
        if refusal is not None:
            if who is None and presented_key(headers) is not None:
                wait = await self.failures.wait_s(address)
                if wait > 0:
                    await _too_many(scope, receive, send, wait, FAILED_LOOKUPS)
                    return
            await _answer(scope, receive, send, 401, refusal, {"WWW-Authenticate": "Bearer"})
            return
        if who is not None and who.key_id is not None:
            wait = await self.limiter.wait_s(f"key:{who.key_id}")
        elif who is not None and self.settings.auth == "required":  # anonymous public reads
            wait = await self.limiter.wait_s(f"ip:{address}")
        else:
            wait = 0.0
        if wait > 0:
            why = f"over {self.settings.rate_limit_per_s:g} requests/s"
            await _too_many(scope, receive, send, wait, why)
            return
        if who is not None:
            scope.setdefault("state", {})["principal"] = who
        await self.app(scope, _limited(receive, limit), send)

    async def _identify(
        self, scope: Scope, headers: Headers
    ) -> tuple[Principal | None, str | None]:
        """The caller, or why it is refused (None, None: a public path)."""
        if self.settings.auth == "off":
            return keys.ADMIN, None
        if is_public_path(scope["path"]):
            return None, None
        presented = presented_key(headers)
        if presented is None:
            if self.settings.public_reads and scope["method"] in ("GET", "HEAD"):
                return Principal("planner"), None
            return None, "send a key: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"

        # The middleware runs before routing, where no dependency (SessionDep) is solved: it
        # opens its own short read, off the event loop.
        def lookup() -> Principal | None:
            with transaction(self.factory) as session:
                return keys.authenticate(session, presented)

        found = await run_in_threadpool(lookup)
        if found is None:
            return None, "the key is not valid (unknown, revoked or mistyped)"
        return found, None


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive` that refuses a body (chunked, say) once it passes `limit` bytes."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"body over {limit} bytes")
        return message

    return wrapped


async def _answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    await _problem(status, detail, headers)(scope, receive, send)


TITLES = {
    401: ("Unauthorized", "unauthorized"),
    403: ("Forbidden", "forbidden"),
    413: ("Payload too large", "too-large"),
    429: ("Too many requests", "rate-limited"),
}


FAILED_LOOKUPS = "too many unknown keys from this address"


async def _too_many(scope: Scope, receive: Receive, send: Send, wait: float, why: str) -> None:
    retry = str(max(1, math.ceil(wait)))
    await _answer(scope, receive, send, 429, f"{why}; retry in {retry} s", {"Retry-After": retry})


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    title, slug = TITLES[status]
    return problem(status, title, detail, slug, headers=headers)


def install(app: FastAPI, settings: Settings, factory: sessionmaker[Session]) -> None:
    """The middleware and the handler of refusals. Add `Depends(authorize)` to the app."""
    app.add_middleware(AccessMiddleware, settings=settings, factory=factory)

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _problem(exc.status, exc.detail, headers)

    if settings.auth == "off":
        log.warning("API keys are off (FABCITY_AUTH=off): every caller is an admin")
