"""Schemathesis over every operation of the OpenAPI document, in process, with a real key on a
throwaway SQLite data dir: no answer is a 5xx, every answer matches its documented schema and status.

Bounded for `make test` (FUZZ_MAX_EXAMPLES per operation, 60 by default: over 1,000 cases in all) and
derandomized, so CI sees the same cases every run; `make fuzz` raises the count for a longer search.
"""

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from tests.service.conftest import key_headers
from tests.service.helpers import create_job

DEFAULT_MAX_EXAMPLES = 30
# Per operation and generation mode (valid data, and data that breaks the schema on purpose).
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", str(DEFAULT_MAX_EXAMPLES)))
MIN_CASES = 1000
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@pytest.fixture
def fuzz_app(tmp_path: Path, tiny_bert_dir: Path) -> FastAPI:
    settings_ = Settings(
        data_dir=tmp_path / "data", model_dirs=[tiny_bert_dir.parent], max_upload_bytes=64 * 1024
    )
    settings_.data_dir.mkdir(parents=True)
    upgrade_to_head(settings_.database_url)
    return create_app(settings_)


@pytest.fixture
def fuzz_auth(fuzz_app: FastAPI) -> dict[str, str]:
    """A real key of an owner who has a file and a job, so list routes answer non-empty pages."""
    from fastapi.testclient import TestClient

    headers = key_headers(fuzz_app, "fuzz")
    with TestClient(fuzz_app) as client:
        create_job(client, dict(headers))
    return headers


def test_no_server_error_and_every_response_as_documented(
    fuzz_app: FastAPI, fuzz_auth: dict[str, str]
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    cases: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(operation, mode, fuzz_auth, cases)
    documented = {
        f"{method.upper()} {path}"
        for path, entries in fuzz_app.openapi()["paths"].items()
        for method in entries
    }
    assert set(cases) == documented
    print(f"fuzz: {sum(cases.values())} cases over {len(cases)} operations")
    if MAX_EXAMPLES >= DEFAULT_MAX_EXAMPLES:
        assert sum(cases.values()) >= MIN_CASES, cases


def run_operation(operation: Any, mode: GenerationMode, auth: dict[str, str], cases: dict[str, int]) -> None:
    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure names its case as found
    )
    def check(case: Any) -> None:
        cases[operation.label] = cases.get(operation.label, 0) + 1
        case.call_and_validate(headers=dict(auth), checks=CHECKS)

    try:
        check()
    except Unsatisfiable:
        # An operation without parameters or body (GET /healthz) has nothing to break on purpose.
        if mode is not GenerationMode.NEGATIVE:
            raise
