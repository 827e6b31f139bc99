"""The OpenAPI part of the research routes (`node/research_api.py`, issue 13, ADR 0019).

As for every health route, nothing is restated by hand: views are the models' wire fields, limits
and code lists the named constants the handlers enforce. `node/openapi.py` merges these in.
"""

from __future__ import annotations

from typing import Any

from medledger.health.research_results import RESULT_NOISED, RESULT_PARTIAL, RESULT_SUPPRESSED
from medledger.health.research_types import (
    CELL_LABELS,
    CODE_LENGTH_MAX,
    DELTA_TOTAL_PICO_MAX,
    EPSILON_TOTAL_MICRO_MAX,
    ETHICS_REF_LENGTH_MAX,
    GROUP_NONE,
    GROUPINGS,
    QUERY_INSTITUTIONS_MAX,
    STUDY_TEMPLATES_MAX,
    STUDY_TITLE_LENGTH_MAX,
    TEMPLATE_CODES_MAX,
    TEMPLATE_KINDS,
    TEMPLATE_NAME_LENGTH_MAX,
    VALUE_MILLI_MAX,
    QueryState,
    StudyState,
)
from medledger.health.types import RESEARCH_K_MAX
from medledger.node.health_api import WriteStatus
from medledger.node.research_api import QUERY_REQUEST_BYTES_MAX, STUDY_REQUEST_BYTES_MAX

_UINT_MAX = 2**64 - 1


def research_openapi_paths() -> dict[str, Any]:
    from medledger.node import openapi as oa  # noqa: PLC0415

    bad = {"400": oa._problem("Bad parameter or body.")}
    study_id = {"name": "study_id", "in": "path", "required": True, "schema": oa._HEX64_INPUT}
    query_id = {"name": "query_id", "in": "path", "required": True, "schema": oa._HEX64_INPUT}
    unknown_study = {"404": oa._problem("No study has this id.")}
    unknown_query = {"404": oa._problem("No query has this id.")}

    def post(operation_id: str, summary: str, body: str, params: list[Any], errors: dict[str, Any]) -> Any:
        written = {"$ref": oa._REF + "ResearchWrite"}
        return {
            "post": {
                "operationId": operation_id,
                "summary": summary,
                "security": oa._SECURED,
                "parameters": [*params, oa._WRITE_WAIT],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": oa._REF + body}}},
                },
                "responses": {
                    "201": oa._ok("Committed.", written),
                    "202": oa._ok("Admitted, not yet committed.", written),
                    **bad,
                    **oa._AUTH_ERRORS,
                    "413": oa._problem("The body is too large."),
                    "415": oa._problem("Unsupported content type."),
                    "422": oa._problem("Refused by the rules, or not a value the ledger holds."),
                    "429": oa._problem("The mempool is full."),
                    **errors,
                },
            }
        }

    histogram = oa._get(
        "getQueryHistogram",
        "A histogram query's combined result as a self-contained HTML page with an SVG chart; "
        "suppressed cells are marked, not drawn.",
        {"type": "string"},
        params=[query_id],
        secured=True,
        errors={
            **bad,
            **oa._AUTH_ERRORS,
            **unknown_query,
            "409": oa._problem("The query is not a histogram."),
        },
    )
    histogram["get"]["responses"]["200"] = {
        "description": "OK.",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
    return {
        "/v1/health/institution/studies": {
            **post(
                "registerStudy",
                "A research institute registers a study: its ethics approval, query templates, total "
                "privacy budget (ε in millionths, δ in 10^-12), smallest released cell and expiry.",
                "NewStudy",
                [],
                {"403": oa._problem("This institution is not a research institute.")},
            ),
            **oa._get(
                "listStudies",
                "Every study on the ledger with its public accounts (remaining budget, members, queries).",
                oa._object({"studies": {"type": "array", "items": {"$ref": oa._REF + "Study"}}}),
                params=[*oa._PAGE],
                secured=True,
                errors={**bad, **oa._AUTH_ERRORS},
            ),
        },
        "/v1/health/institution/studies/{study_id}": oa._get(
            "getStudy",
            "A study and its queries.",
            {"$ref": oa._REF + "StudyWithQueries"},
            params=[study_id, *oa._PAGE],
            secured=True,
            errors={**bad, **oa._AUTH_ERRORS, **unknown_study},
        ),
        "/v1/health/institution/studies/{study_id}/queries": post(
            "submitQuery",
            "The study's institute asks institutions (default: every clinic and hospital) one of the "
            "study's templates over the ledger as of a block (default: the current one); the study is "
            "charged ε × institutions asked.",
            "NewQuery",
            [study_id],
            {
                **unknown_study,
                "409": oa._problem("This query was asked before; the Location header names it."),
            },
        ),
        "/v1/health/institution/queries/{query_id}": oa._get(
            "getQueryResult",
            "A query's answers combined: per cell the summed (a mean: averaged) noised values, "
            "suppressed cells marked, the noise's standard deviation, and who has not answered yet.",
            {"$ref": oa._REF + "QueryResult"},
            params=[query_id],
            secured=True,
            errors={**bad, **oa._AUTH_ERRORS, **unknown_query},
        ),
        "/v1/health/institution/queries/{query_id}/histogram": histogram,
    }


def research_openapi_schemas() -> dict[str, Any]:
    from medledger.node import openapi as oa  # noqa: PLC0415

    def uint(low: int, high: int) -> dict[str, Any]:
        return {"type": "integer", "minimum": low, "maximum": high}

    def text(length_max: int) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": length_max}

    template = oa._object(
        {
            "name": text(TEMPLATE_NAME_LENGTH_MAX),
            "kind": oa._enum(TEMPLATE_KINDS),
            "codes": {
                "type": "array",
                "maxItems": TEMPLATE_CODES_MAX,
                "items": text(CODE_LENGTH_MAX),
                "description": "SNOMED CT, LOINC or ICD-10 codes: sct:…, loinc:…, icd10:….",
            },
            "groupings": {"type": "array", "maxItems": len(GROUPINGS), "items": oa._enum(GROUPINGS)},
            "value_min_milli": uint(0, VALUE_MILLI_MAX),
            "value_max_milli": uint(0, VALUE_MILLI_MAX),
            "epsilon_max_micro": uint(1, EPSILON_TOTAL_MICRO_MAX),
        },
        {"delta_max_pico": uint(0, DELTA_TOTAL_PICO_MAX)},
        closed=True,
    )
    study = {**oa._model_fields(StudyState), "institute_name": oa._NAME}
    institution = oa._object({"key": oa._HEX64, "name": oa._NAME})
    number = {"type": "number"}
    return {
        "NewStudy": {
            **oa._object(
                {
                    "title": text(STUDY_TITLE_LENGTH_MAX),
                    "ethics_ref": text(ETHICS_REF_LENGTH_MAX),
                    "templates": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": STUDY_TEMPLATES_MAX,
                        "items": template,
                    },
                    "epsilon_total_micro": uint(1, EPSILON_TOTAL_MICRO_MAX),
                    "expires_ms": uint(0, _UINT_MAX),
                },
                {
                    "delta_total_pico": uint(0, DELTA_TOTAL_PICO_MAX),
                    "k_min": {**uint(1, RESEARCH_K_MAX), "description": "Default: the network's."},
                },
                closed=True,
            ),
            "description": f"At most {STUDY_REQUEST_BYTES_MAX} bytes.",
        },
        "NewQuery": {
            **oa._object(
                {
                    "template": text(TEMPLATE_NAME_LENGTH_MAX),
                    "code": text(CODE_LENGTH_MAX),
                    "epsilon_micro": uint(1, EPSILON_TOTAL_MICRO_MAX),
                },
                {
                    "grouping": {**oa._enum(GROUPINGS | {GROUP_NONE}), "description": "Default: none."},
                    "value_low_milli": uint(0, VALUE_MILLI_MAX),
                    "value_high_milli": uint(0, VALUE_MILLI_MAX),
                    "institutions": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": QUERY_INSTITUTIONS_MAX,
                        "items": oa._HEX64_INPUT,
                    },
                    "delta_pico": uint(0, DELTA_TOTAL_PICO_MAX),
                    "as_of_height": uint(0, _UINT_MAX),
                },
                closed=True,
            ),
            "description": f"At most {QUERY_REQUEST_BYTES_MAX} bytes.",
        },
        "ResearchWrite": oa._object(
            {"tx_id": oa._HEX64, "status": oa._enum(WriteStatus)},
            {"height": {"type": "integer"}, "study_id": oa._HEX64, "query_id": oa._HEX64},
        ),
        "Study": oa._object(study),
        "StudyWithQueries": oa._object(
            {**study, "queries": {"type": "array", "items": oa._object(oa._model_fields(QueryState))}}
        ),
        "QueryResult": oa._object(
            {
                "query_id": oa._HEX64,
                "study_id": oa._HEX64,
                "template": {"type": "string"},
                "kind": {"type": "string"},
                "code": {"type": "string"},
                "grouping": oa._enum(GROUPINGS | {GROUP_NONE}),
                "mechanism": oa._enum(["discrete Gaussian", "discrete Laplace"]),
                "epsilon": number,
                "delta": number,
                "as_of_height": {"type": "integer"},
                "answered": {"type": "array", "items": institution},
                "pending": {"type": "array", "items": institution},
                "noise_sd": number,
                "noise_scales": {"type": "array", "items": number},
                "cells": {
                    "type": "array",
                    "items": oa._object(
                        {
                            "label": oa._enum(CELL_LABELS),
                            "status": oa._enum([RESULT_NOISED, RESULT_PARTIAL, RESULT_SUPPRESSED]),
                            "value": {**number, "nullable": True},
                            "noised_at": {"type": "integer"},
                            "suppressed_at": {"type": "integer"},
                        }
                    ),
                },
            }
        ),
    }
