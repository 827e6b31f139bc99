"""Who may read what on the node's API (DESIGN.md §7 "Read access is authenticated").

Every route is registered with an `Access` level (`add_route`), and one middleware decides before
any handler runs; a route registered without a level (e.g. by a module that calls
`app.router.add_get` itself) gets `Access.READER`, so a new route is closed unless someone opens
it on purpose. Two credentials:

- **The API token** (`Authorization: Bearer <token>`, the file `[api] token_file` in the node's
  home, compared in constant time): the institution that runs the node and its operator's tools.
  It reads every route; it is root on this node, which holds all of this in its store anyway.
- **A patient's signed request** (`Authorization: Medledger-Signature ...`, format in
  `medledger.health.auth`): the signer holds an ed25519 key and acts for a patient, as the
  patient themself or as one of their representatives. The challenge is taken from the store
  before the signature is checked (single use, even for a failed attempt), must be unexpired and
  issued by this node, and the signed time must be near the node's clock. A patient reads
  `Access.READER` routes (blocks, transactions, status, the institution list: what a light client
  needs) and only their own `Access.PATIENT` routes (the `{patient_id}` in the path).

Peers never use this API: they get blocks over their authenticated p2p link. `/livez`, `/readyz`,
`/metrics` are not here either: they are served on the separate operations address.

A refusal is `401` (no or bad credentials, with `WWW-Authenticate` naming both schemes) or `403`
(authenticated, not allowed), as `application/problem+json`; details never echo the header.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Literal

from aiohttp import web

from medledger.health.auth import (
    CHALLENGE_SIZE,
    CHALLENGE_TTL_MS,
    REQUEST_TIME_SKEW_MS_MAX,
    SIGNATURE_SCHEME,
    SIGNED_TARGET_CHARS_MAX,
    RequestAuthError,
    SignedRequest,
    is_request_signature_valid,
    parse_authorization,
)
from medledger.node.errors import ConfigError, NodeError
from medledger.node.problems import problem_response

log = logging.getLogger("medledger.api.auth")

#: Shortest API token the node accepts (`medledger init` writes 43 characters).
API_TOKEN_CHARS_MIN: Final = 16
#: Challenges outstanding at once (each about 100 bytes); the oldest is dropped beyond this.
CHALLENGES_MAX: Final = 65_536
#: Challenges outstanding per client address: one address cannot push the others' out.
CHALLENGES_PER_ADDRESS_MAX: Final = 256
BEARER_SCHEME: Final = "Bearer"
WWW_AUTHENTICATE: Final = f'{BEARER_SCHEME} realm="medledger", {SIGNATURE_SCHEME} realm="medledger"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access(enum.Enum):
    """Who may call a route."""

    #: Anyone who reaches the API: the challenge, the OpenAPI document, transaction submission
    #: (a transaction carries its own signature; its sender needs no other credential).
    PUBLIC = "public"
    #: The API token, or any registered patient's (or representative's) signed request.
    READER = "reader"
    #: The API token, or a signed request of the patient named by `{patient_id}` in the path.
    PATIENT = "patient"
    #: The API token only (the institution API, which acts with the node's own keys).
    TOKEN = "token"


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who made an authenticated request."""

    kind: Literal["token", "patient"]
    #: For a patient: the patient acted for, and the key that signed (theirs or a representative's).
    patient_id: bytes = b""
    signer: bytes = b""


#: Whether `signer` may act for `patient_id` (the patient's own key or a representative's); the
#: health application answers it from its state. `None` on chains without patients.
PatientCheck = Callable[[bytes, bytes], bool]


class AuthError(NodeError):
    """A request the access rules refuse; `status` is 401 or 403."""

    code = "unauthorized"

    def __init__(self, message: str, *, status: int = 401, code: str = "unauthorized") -> None:
        super().__init__(message)
        self.status = status
        self.problem_code = code


class ChallengeStore:
    """Outstanding challenges: random, single-use, expiring after `ttl_ms`, bounded in number."""

    def __init__(
        self,
        *,
        ttl_ms: int = CHALLENGE_TTL_MS,
        capacity: int = CHALLENGES_MAX,
        per_address: int = CHALLENGES_PER_ADDRESS_MAX,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_ms = ttl_ms
        self.capacity = capacity
        self.per_address = per_address
        self._clock_s = clock_s
        # Insertion order is expiry order (one TTL for all), so the oldest is always first.
        self._outstanding: collections.OrderedDict[bytes, tuple[float, str]] = collections.OrderedDict()
        self._per_address: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self._outstanding)

    def issue(self, address: str) -> bytes:
        """A fresh challenge for a client at `address`; `AuthError` (429) past its share."""
        self._expire()
        if self._per_address[address] >= self.per_address:
            raise AuthError(
                f"at most {self.per_address} challenges may be outstanding per client; "
                "use them or let them expire",
                status=429,
                code="too_many_challenges",
            )
        while len(self._outstanding) >= self.capacity:
            self._drop_oldest()
        challenge = secrets.token_bytes(CHALLENGE_SIZE)
        self._outstanding[challenge] = (self._clock_s() + self.ttl_ms / 1000, address)
        self._per_address[address] += 1
        return challenge

    def consume(self, challenge: bytes) -> bool:
        """Take `challenge` out (it is never accepted again); whether it was outstanding and live."""
        self._expire()
        entry = self._outstanding.pop(challenge, None)
        if entry is None:
            return False
        self._release(entry[1])
        return entry[0] > self._clock_s()

    def _expire(self) -> None:
        now = self._clock_s()
        while self._outstanding:
            expires, _ = next(iter(self._outstanding.values()))
            if expires > now:
                return
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, (_, address) = self._outstanding.popitem(last=False)
        self._release(address)

    def _release(self, address: str) -> None:
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]


@dataclasses.dataclass(slots=True)
class ApiAuth:
    """The access rules of one node's API: its token, its challenges, how patients are checked."""

    token: str
    chain_id: str
    clock_ms: Callable[[], int]
    challenges: ChallengeStore = dataclasses.field(default_factory=ChallengeStore)
    #: Set by the health routes on health nodes; without it, no signed request is accepted.
    patient_check: PatientCheck | None = None
    #: Access level by (method, route's canonical path); missing: `Access.READER`.
    routes: dict[tuple[str, str], Access] = dataclasses.field(default_factory=dict)

    def access_of(self, method: str, canonical: str) -> Access:
        if method == "HEAD":
            method = "GET"
        return self.routes.get((method, canonical), Access.READER)

    def authenticate(self, request: web.Request) -> Principal:
        """The request's principal; `AuthError` (401) without valid credentials."""
        header = request.headers.get("Authorization", "")
        if not header.isascii():
            # aiohttp hands a non-ASCII byte on as a surrogate escape, which no comparison below
            # may meet (issue 14, defect 6): credentials are ASCII in both schemes.
            raise AuthError("the Authorization header must be ASCII text")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == BEARER_SCHEME.lower():
            if hmac.compare_digest(credentials.strip().encode(), self.token.encode()):
                return Principal("token")
            raise AuthError("the API token is wrong")
        if scheme.lower() == SIGNATURE_SCHEME.lower():
            return self._authenticate_signed(request, credentials)
        raise AuthError(
            "this route needs credentials: the node's API token (`Authorization: Bearer <token>`) or "
            f"a patient's signed request (`Authorization: {SIGNATURE_SCHEME} ...` over a challenge "
            "from POST /v1/auth/challenge)"
        )

    def _authenticate_signed(self, request: web.Request, credentials: str) -> Principal:
        try:
            signed = parse_authorization(credentials)
        except RequestAuthError as exc:
            raise AuthError(f"malformed {SIGNATURE_SCHEME} header: {exc.message}") from None
        # The challenge goes first and for good: a request that fails below cannot be retried
        # with the same challenge (no grinding, no replay of a captured request).
        if not self.challenges.consume(signed.challenge):
            raise AuthError(
                "the challenge is unknown, expired or already used; "
                "ask POST /v1/auth/challenge for a new one",
                code="challenge_invalid",
            )
        if request.can_read_body:
            raise AuthError("a signed request carries no body (signed requests are reads)")
        now_ms = self.clock_ms()
        if abs(now_ms - signed.time_ms) > REQUEST_TIME_SKEW_MS_MAX:
            raise AuthError(
                f"the signed time is more than {REQUEST_TIME_SKEW_MS_MAX} ms from the node's clock "
                f"(node time {now_ms} ms); check the device's clock",
                code="time_skew",
            )
        target = request.raw_path
        if len(target) > SIGNED_TARGET_CHARS_MAX or not is_request_signature_valid(
            signed, chain_id=self.chain_id, method=request.method, target=target
        ):
            raise AuthError(
                "the signature does not verify over this method, path and challenge", code="bad_signature"
            )
        return self._authorize_patient(signed)

    def _authorize_patient(self, signed: SignedRequest) -> Principal:
        check = self.patient_check
        if check is None or not check(signed.key, signed.patient_id):
            raise AuthError(
                "the signing key is neither the registered patient's nor one of their representatives'",
                status=403,
                code="not_patient",
            )
        return Principal("patient", patient_id=signed.patient_id, signer=signed.key)

    def authorize(self, request: web.Request, access: Access) -> Principal | None:
        """The principal allowed to make `request` under `access` (None for a public route)."""
        if access is Access.PUBLIC:
            return None
        principal = self.authenticate(request)
        if principal.kind == "token":
            return principal
        if access is Access.TOKEN:
            raise AuthError(
                "this route is the institution API: it needs the node's API token",
                status=403,
                code="token_required",
            )
        if access is Access.PATIENT:
            raw = request.match_info.get("patient_id", "")
            if raw.lower() != principal.patient_id.hex():
                raise AuthError("a patient may read only their own data", status=403, code="other_patient")
        return principal


API_AUTH_KEY: Final = web.AppKey("api_auth", ApiAuth)
PRINCIPAL_KEY: Final = web.RequestKey("principal", Principal)


def add_route(app: web.Application, method: str, path: str, handler: Handler, access: Access) -> None:
    """Register a route and who may call it."""
    resource = app.router.add_route(method, path, handler)
    app[API_AUTH_KEY].routes[(method.upper(), resource.resource.canonical)] = access  # type: ignore[union-attr]


def get_principal(request: web.Request) -> Principal | None:
    """Who made the request (None on a public route)."""
    return request.get(PRINCIPAL_KEY)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses a request its route's access level does not allow, before the handler runs."""
    route = request.match_info.route
    resource = route.resource
    if resource is None or route.method == "*":  # unmatched (404/405): nothing to protect
        return await handler(request)
    auth = request.app[API_AUTH_KEY]
    try:
        principal = auth.authorize(request, auth.access_of(route.method, resource.canonical))
    except AuthError as exc:
        headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if exc.status == 401 else None
        title = {401: "Unauthorized", 403: "Forbidden", 429: "Too many requests"}.get(exc.status, "Refused")
        return problem_response(exc.status, title, exc.message, code=exc.problem_code, headers=headers)
    if principal is not None:
        request[PRINCIPAL_KEY] = principal
    return await handler(request)


async def post_challenge(request: web.Request) -> web.Response:
    """`POST /v1/auth/challenge`: a fresh challenge for one signed request."""
    auth = request.app[API_AUTH_KEY]
    try:
        challenge = auth.challenges.issue(request.remote or "")
    except AuthError as exc:
        return problem_response(
            exc.status, "Too many requests", exc.message, code=exc.problem_code, headers={"Retry-After": "5"}
        )
    body = {
        "challenge": challenge.hex(),
        "expires_ms": auth.clock_ms() + auth.challenges.ttl_ms,
        "chain_id": auth.chain_id,
        "scheme": SIGNATURE_SCHEME,
    }
    return web.json_response(body, status=201)


def load_api_token(path: Path) -> str:
    """The API token from its file; a missing or short token is a `ConfigError`."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"{path}: the API token cannot be read ({exc.strerror}); write one there (mode 0600, at "
            f"least {API_TOKEN_CHARS_MIN} characters, e.g. `openssl rand -base64 32`) or set [api] token_file"
        ) from None
    if len(token) < API_TOKEN_CHARS_MIN or not token.isprintable() or " " in token:
        raise ConfigError(
            f"{path}: the API token must be at least {API_TOKEN_CHARS_MIN} printable characters, no spaces"
        )
    return token
