"""The app as a whole: its OpenAPI document, and an API process that never loads torch."""

import subprocess
import sys
from pathlib import Path

from fastapi import FastAPI

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_api_process_does_not_import_torch() -> None:
    # The API validates uploads and lists models without torch; importing it would cost seconds
    # and gigabytes in every API process.
    code = "import sys, service.app; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_openapi_documents_bodies_responses_and_errors(app: FastAPI) -> None:
    document = app.openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"], "422s must use the error shape"
    create = document["paths"]["/v1/jobs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobRequest")
    assert create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobObject")
    upload = document["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(upload["schema"]["required"]) == {"file", "purpose"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation.get("description"), f"{method} {path} has no docstring"
            errors = {code: r for code, r in operation["responses"].items() if code.startswith(("4", "5"))}
            assert errors, f"{method} {path} documents no error response"
            for code, response in errors.items():
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("/ErrorResponse"), (method, path, code)
            if path.startswith("/v1/"):
                assert "401" in operation["responses"] and operation["security"] == [{"HTTPBearer": []}]
