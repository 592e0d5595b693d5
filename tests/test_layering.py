"""The package boundaries hold: the method core knows nothing of the service, the API never loads torch.

`tuning/` must run from a shell without a web server, a database or a broker, so it never imports
them (or the `service` and `worker` packages). The API process must stay light and start fast, so
importing it must not import torch; it talks to workers by task name only.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUNING = ROOT / "tuning"

FORBIDDEN_IN_TUNING = frozenset(
    {
        "fastapi",
        "starlette",
        "uvicorn",
        "sqlalchemy",
        "alembic",
        "psycopg",
        "celery",
        "kombu",
        "redis",
        "service",
        "worker",
    }
)

# Modules the API process imports; none of them may bring torch in at import time.
TORCH_FREE_MODULES = (
    "service.app",
    "service.cli",
    "service.settings",
    "service.dispatch",
    "tuning.spec",
    "tuning.models",
    "tuning.data",
)


def imported_modules(source: str, module: str) -> set[str]:
    """Every module a source file imports, anywhere in it (lazy imports in functions included)."""
    package_parts = module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # `from ..x import y` inside tuning/a.py resolves against the package it sits in.
                base = package_parts[: len(package_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module:
                    names.add(target)
                else:
                    names.update(f"{target}.{alias.name}".strip(".") for alias in node.names)
            elif node.module:
                names.add(node.module)
    return names


def forbidden_imports(source: str, module: str) -> set[str]:
    return {name for name in imported_modules(source, module) if name.split(".")[0] in FORBIDDEN_IN_TUNING}


def tuning_modules() -> list[Path]:
    return sorted(TUNING.rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_tuning_has_modules_to_scan() -> None:
    assert len(tuning_modules()) >= 4


@pytest.mark.parametrize("path", tuning_modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_tuning_never_imports_the_service_stack(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8"), module_name(path)) == set()


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import fastapi", {"fastapi"}),
        ("from sqlalchemy.orm import Session", {"sqlalchemy.orm"}),
        ("def f():\n    import celery.result\n", {"celery.result"}),
        ("from service.settings import Settings", {"service.settings"}),
        ("from ... import service", {"service"}),
        ("import torch\nfrom .spec import JobSpec", set()),
    ],
)
def test_scan_finds_forbidden_imports(source: str, found: set[str]) -> None:
    # Checks the checker: a scan that could never find anything would pass any code.
    assert forbidden_imports(source, "tuning.methods.example") == found


def loaded_modules_after_import(module: str) -> set[str]:
    """sys.modules after importing `module` in a fresh interpreter (this one has torch loaded)."""
    script = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr}"
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize("module", TORCH_FREE_MODULES)
def test_api_side_modules_do_not_import_torch(module: str) -> None:
    loaded = loaded_modules_after_import(module)
    heavy = sorted(name for name in loaded if name.split(".")[0] in {"torch", "transformers", "peft"})
    assert heavy == [], f"importing {module} loads {heavy[:5]}"


def test_subprocess_check_sees_torch_when_it_is_imported() -> None:
    # The same check on a module that does import torch must see it, or the test above proves nothing.
    assert "torch" in loaded_modules_after_import("tests.tiny_models")
