"""Every failure answers the one error shape, with the right status and nothing internal."""

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.errors import field_path

ERROR_KEYS = {"message", "type", "param", "code"}


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    return dict(body["error"])


def test_unknown_route_is_404_in_the_error_shape(client: TestClient, auth: dict[str, str]) -> None:
    error = error_of(client.get("/v1/nothing-here", headers=auth), 404)
    assert error["code"] == "route_not_found"
    assert "/v1/nothing-here" in error["message"]


def test_wrong_method_is_405_with_allow_header(client: TestClient, auth: dict[str, str]) -> None:
    response = client.delete("/v1/models", headers=auth)
    error = error_of(response, 405)
    assert error["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


def test_unexpected_exception_is_500_without_internals(app: FastAPI) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")

    with TestClient(app, raise_server_exceptions=False) as client:
        error = error_of(client.get("/boom"), 500)
    assert error["type"] == "server_error"
    assert "hunter2" not in error["message"] and "RuntimeError" not in error["message"]


def test_bad_query_parameter_names_it(client: TestClient, auth: dict[str, str]) -> None:
    error = error_of(client.get("/v1/jobs?limit=0", headers=auth), 422)
    assert error["param"] == "limit"
    assert error["message"].startswith("limit:")
    error = error_of(client.get("/v1/jobs?limit=many", headers=auth), 422)
    assert error["param"] == "limit"


def test_field_path_skips_the_union_tag_pydantic_adds() -> None:
    body = {"method": {"type": "lora", "target_modules": ["q", 3]}}
    assert field_path(("body", "method", "lora", "target_modules", 1), body) == "method.target_modules[1]"
    assert (
        field_path(("body", "hyperparameters", "epochs"), {"hyperparameters": {}}) == "hyperparameters.epochs"
    )
    assert field_path(("query", "limit"), None) == "limit"
    assert field_path(("body",), {}) is None
