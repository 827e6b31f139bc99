"""The research routes of the institution API (issue 13, ADR 0019), for the institution's token.

- `POST /v1/health/institution/studies`: a research institute registers a study (its node signs
  `health.register_study`); any other role is a 403.
- `GET /v1/health/institution/studies`, `GET .../studies/{study_id}`: every study on the ledger
  with its public accounts (remaining budget, members, queries), and a study's queries.
- `POST /v1/health/institution/studies/{study_id}/queries`: the study's institute submits a query
  (`health.submit_query`); institutions default to every registered clinic and hospital, the data
  version to the node's current height.
- `GET /v1/health/institution/queries/{query_id}`: the answers combined into one result with its
  noise and suppressed cells marked (`health.research_results`); `.../histogram` the same as an
  HTML page with an SVG chart (histogram queries only).

Values travel in the ledger's fixed point (ε in millionths, δ in 10^-12, values in thousandths),
so what the caller sends is exactly what is charged. Every field is checked here for its type and
range; the rules then decide (a refusal is a 422 naming the rule), and nothing is written.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from medledger.chain.codec import decode, encode
from medledger.chain.errors import CodecError
from medledger.chain.limits import TX_BYTES_MAX
from medledger.health import policy, research
from medledger.health import state as st
from medledger.health.research_client import build_register_study, build_submit_query
from medledger.health.research_results import combine_answers, render_histogram_html
from medledger.health.research_types import (
    CODE_LENGTH_MAX,
    DELTA_TOTAL_PICO_MAX,
    EPSILON_TOTAL_MICRO_MAX,
    ETHICS_REF_LENGTH_MAX,
    GROUP_NONE,
    STUDY_TEMPLATES_MAX,
    STUDY_TITLE_LENGTH_MAX,
    TEMPLATE_CODES_MAX,
    TEMPLATE_HISTOGRAM,
    TEMPLATE_NAME_LENGTH_MAX,
    VALUE_MILLI_MAX,
    QueryParams,
    QueryState,
    QueryTemplate,
    RegisterStudyBody,
    StudyState,
    SubmitQueryBody,
)
from medledger.health.types import RESEARCH_K_MAX, ROLE_RESEARCH
from medledger.node.auth import Access, add_route
from medledger.node.errors import BadRequestError
from medledger.node.health_api import (
    ApiProblem,
    Handler,
    HealthService,
    _check_keys,
    _hex_id,
    _int_field,
    _json,
    _me,
    _page,
    _read_object,
    _state,
    _submit_and_wait,
    _wait_ms,
    _write_result,
    institution_route,
    model_json,
)

#: Largest body of a study registration (16 templates of 64 codes) or a query.
STUDY_REQUEST_BYTES_MAX: Final = 128 * 1024
QUERY_REQUEST_BYTES_MAX: Final = 16 * 1024
TEMPLATE_FIELDS: Final = frozenset(
    {"name", "kind", "codes", "groupings", "value_min_milli", "value_max_milli", "epsilon_max_micro"}
)
_UINT_MAX: Final = 2**64 - 1


def _text(data: dict[str, Any], name: str, length_max: int) -> str:
    value = data[name]
    if not isinstance(value, str) or not 1 <= len(value) <= length_max:
        raise BadRequestError(f"{name} must be a string of 1 to {length_max} characters")
    return value


def _texts(value: object, name: str, count_max: int, length_max: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > count_max:
        raise BadRequestError(f"{name} must be a list of at most {count_max} strings")
    if not all(isinstance(v, str) and 1 <= len(v) <= length_max for v in value):
        raise BadRequestError(f"{name} must be a list of strings of 1 to {length_max} characters")
    return tuple(sorted(set(value)))


def _template(value: object) -> QueryTemplate:
    if not isinstance(value, dict):
        raise BadRequestError("a template is a JSON object")
    _check_keys(value, set(TEMPLATE_FIELDS), {"delta_max_pico"})
    return QueryTemplate(
        name=_text(value, "name", TEMPLATE_NAME_LENGTH_MAX),
        kind=_text(value, "kind", TEMPLATE_NAME_LENGTH_MAX),
        codes=_texts(value["codes"], "codes", TEMPLATE_CODES_MAX, CODE_LENGTH_MAX),
        groupings=_texts(value["groupings"], "groupings", 3, TEMPLATE_NAME_LENGTH_MAX),
        value_min_milli=_int_field(value, "value_min_milli", 0, 0, VALUE_MILLI_MAX),
        value_max_milli=_int_field(value, "value_max_milli", 0, 0, VALUE_MILLI_MAX),
        epsilon_max_micro=_int_field(value, "epsilon_max_micro", 0, 1, EPSILON_TOTAL_MICRO_MAX),
        delta_max_pico=_int_field(value, "delta_max_pico", 0, 0, DELTA_TOTAL_PICO_MAX),
    )


def _checked_encoding(body: RegisterStudyBody | SubmitQueryBody) -> None:
    """The body fits its wire type (closed vocabularies, printable ASCII codes), as the ledger will
    decode it: else a 422, nothing sent (the schema states lengths, not every character rule)."""
    try:
        decode(type(body), encode(body), max_bytes=TX_BYTES_MAX)
    except CodecError as exc:
        raise ApiProblem(
            422,
            "Not a valid ledger value",
            f"the request does not fit the ledger's types: {exc.message}",
            code="wire_type",
        ) from None


def _load_study(service: HealthService, study_id: bytes) -> StudyState:
    study = st.get_study(_state(service), study_id)
    if study is None:
        raise ApiProblem(404, "Unknown study", "no study has this id", code="study_unknown")
    return study


def _load_query(service: HealthService, query_id: bytes) -> QueryState:
    query = st.get_query(_state(service), query_id)
    if query is None:
        raise ApiProblem(404, "Unknown query", "no query has this id", code="query_unknown")
    return query


def study_json(service: HealthService, study: StudyState) -> dict[str, Any]:
    return {**model_json(study), "institute_name": service.name_of(study.institute)}


# --- handlers -----------------------------------------------------------------------------------


async def post_study(request: web.Request) -> web.Response:
    service, me = _me(request)
    wait_ms = _wait_ms(request)
    data = await _read_object(request, STUDY_REQUEST_BYTES_MAX)
    required = {"title", "ethics_ref", "templates", "epsilon_total_micro", "expires_ms"}
    _check_keys(data, required, {"delta_total_pico", "k_min"})
    if me.role != ROLE_RESEARCH:
        raise ApiProblem(
            403,
            "Forbidden",
            f"an institution with role {me.role!r} cannot register studies",
            code="study_registrar",
        )
    templates = data["templates"]
    if not isinstance(templates, list) or not 1 <= len(templates) <= STUDY_TEMPLATES_MAX:
        raise BadRequestError(f"templates must be a list of 1 to {STUDY_TEMPLATES_MAX} templates")
    state = _state(service)
    body = RegisterStudyBody(
        title=_text(data, "title", STUDY_TITLE_LENGTH_MAX),
        ethics_ref=_text(data, "ethics_ref", ETHICS_REF_LENGTH_MAX),
        templates=tuple(sorted((_template(t) for t in templates), key=lambda t: t.name)),
        epsilon_total_micro=_int_field(data, "epsilon_total_micro", 0, 1, EPSILON_TOTAL_MICRO_MAX),
        delta_total_pico=_int_field(data, "delta_total_pico", 0, 0, DELTA_TOTAL_PICO_MAX),
        k_min=_int_field(data, "k_min", st.get_research_k_min(state), 1, RESEARCH_K_MAX),
        expires_ms=_int_field(data, "expires_ms", 0, 0, _UINT_MAX),
    )
    _checked_encoding(body)
    node = service.node
    _, raw, tx_id = build_register_study(node.identity, body, chain_id=node.genesis.chain_id)
    location = await _submit_and_wait(service, raw, wait_ms)
    return _json({**_write_result(tx_id, location), "study_id": tx_id.hex()}, 201 if location else 202)


async def list_studies(request: web.Request) -> web.Response:
    service, _ = _me(request)
    start, limit = _page(request)
    state = _state(service)
    studies = [st.get_study(state, i) for i in st.list_study_ids(state, start=start, limit=limit)]
    return _json({"studies": [study_json(service, s) for s in studies if s is not None]})


async def get_study(request: web.Request) -> web.Response:
    service, _ = _me(request)
    study = _load_study(service, _hex_id(request.match_info["study_id"], "study id"))
    start, limit = _page(request)
    state = _state(service)
    queries = [
        st.get_query(state, i) for i in st.list_query_ids(state, study.study_id, start=start, limit=limit)
    ]
    return _json({**study_json(service, study), "queries": [model_json(q) for q in queries if q is not None]})


async def post_query(request: web.Request) -> web.Response:
    service, _ = _me(request)
    wait_ms = _wait_ms(request)
    study = _load_study(service, _hex_id(request.match_info["study_id"], "study id"))
    data = await _read_object(request, QUERY_REQUEST_BYTES_MAX)
    optional = {
        "grouping",
        "value_low_milli",
        "value_high_milli",
        "institutions",
        "delta_pico",
        "as_of_height",
    }
    _check_keys(data, {"template", "code", "epsilon_micro"}, optional)
    if "institutions" in data:
        asked = data["institutions"]
        if not isinstance(asked, list) or not asked:
            raise BadRequestError("institutions must be a non-empty list of institution keys")
        institutions = tuple(sorted({_hex_id(k, "institution key") for k in asked}))
    else:
        institutions = tuple(
            sorted(
                k
                for k, i in service.institutions.items()
                if policy.is_author_role(i.role) and service.is_active(k)
            )
        )
    grouping = data.get("grouping", GROUP_NONE)
    if not isinstance(grouping, str):
        raise BadRequestError("grouping must be a string")
    height = service.node.store.height
    body = SubmitQueryBody(
        study_id=study.study_id,
        template=_text(data, "template", TEMPLATE_NAME_LENGTH_MAX),
        params=QueryParams(
            code=_text(data, "code", CODE_LENGTH_MAX),
            grouping=grouping,
            value_low_milli=_int_field(data, "value_low_milli", 0, 0, VALUE_MILLI_MAX),
            value_high_milli=_int_field(data, "value_high_milli", 0, 0, VALUE_MILLI_MAX),
        ),
        institutions=institutions,
        epsilon_micro=_int_field(data, "epsilon_micro", 0, 1, EPSILON_TOTAL_MICRO_MAX),
        delta_pico=_int_field(data, "delta_pico", 0, 0, DELTA_TOTAL_PICO_MAX),
        as_of_height=_int_field(data, "as_of_height", height, 0, _UINT_MAX),
    )
    _checked_encoding(body)
    repeated = st.get_query_id_by_digest(_state(service), research.compute_query_digest(body))
    if repeated is not None:
        raise ApiProblem(
            409,
            "Query asked before",
            "this query was asked before; its answers are on the ledger (read the query given)",
            code="query_repeated",
            headers={"Location": f"/v1/health/institution/queries/{repeated.hex()}"},
        )
    node = service.node
    _, raw, tx_id = build_submit_query(node.identity, body, chain_id=node.genesis.chain_id)
    location = await _submit_and_wait(service, raw, wait_ms)
    return _json({**_write_result(tx_id, location), "query_id": tx_id.hex()}, 201 if location else 202)


def _result(service: HealthService, query: QueryState) -> tuple[StudyState, Any]:
    state = _state(service)
    study = st.get_study(state, query.study_id)
    if study is None:  # a charged query's study exists (rules); a broken store is a 500
        raise ApiProblem(404, "Unknown study", "the query's study is missing", code="study_unknown")
    return study, combine_answers(study, query, research.list_answers(state, query))


async def get_query_result(request: web.Request) -> web.Response:
    service, _ = _me(request)
    query = _load_query(service, _hex_id(request.match_info["query_id"], "query id"))
    _, result = _result(service, query)
    names = {k: i.name for k, i in service.institutions.items()}
    return _json(result.to_json(names))


async def get_query_histogram(request: web.Request) -> web.Response:
    service, _ = _me(request)
    query = _load_query(service, _hex_id(request.match_info["query_id"], "query id"))
    study, result = _result(service, query)
    template = study.get_template(query.template)
    if template is None or template.kind != TEMPLATE_HISTOGRAM:
        raise ApiProblem(
            409, "Not a histogram", "only a histogram query has a histogram", code="not_histogram"
        )
    page = render_histogram_html(result, study.title)
    return web.Response(
        status=200,
        text=page,
        content_type="text/html",
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


def add_research_routes(app: web.Application) -> None:
    """Register the research routes (called by `health_api.add_health_routes`, after its own)."""
    institution: list[tuple[str, str, Handler]] = [
        ("POST", "/v1/health/institution/studies", post_study),
        ("GET", "/v1/health/institution/studies", list_studies),
        ("GET", "/v1/health/institution/studies/{study_id}", get_study),
        ("POST", "/v1/health/institution/studies/{study_id}/queries", post_query),
        ("GET", "/v1/health/institution/queries/{query_id}", get_query_result),
        ("GET", "/v1/health/institution/queries/{query_id}/histogram", get_query_histogram),
    ]
    for method, path, handler in institution:
        add_route(app, method, path, institution_route(handler), Access.TOKEN)
