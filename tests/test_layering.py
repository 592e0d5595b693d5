"""The package boundaries hold: one core under the API and the workers, a method core that knows neither.

`tuning/` must run from a shell without a web server, a database or a broker, so it imports none of
them (nor deltatune's other packages). `core/` is the ground both processes stand on (settings, the
database, its tables, dispatch): it imports neither `service` nor `worker`, and no web framework.
`service/` (the API) and `worker/` each import `core` and `tuning`, never each other: the API talks
to workers by task name only. The API process must stay light and start fast, so importing it must
not import torch, and importing the API or the worker must create nothing on disk.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WEB = frozenset({"fastapi", "starlette", "uvicorn"})
SERVICE_STACK = WEB | {"sqlalchemy", "alembic", "psycopg", "celery", "kombu", "redis"}

# For each package: the top-level names it must never import.
FORBIDDEN = {
    "tuning": SERVICE_STACK | {"core", "service", "worker"},
    "core": WEB | {"service", "worker"},
    "service": frozenset({"worker"}),
    "worker": WEB | {"service"},
    "migrations": WEB | {"service", "worker"},
}

# Modules the API process imports; none of them may bring torch in at import time.
TORCH_FREE_MODULES = (
    "service.app",
    "service.cli",
    "core.settings",
    "core.models",
    "core.dispatch",
    "tuning.spec",
    "tuning.spec.transferability",
    "tuning.models",
    "tuning.data",
    "tuning.resume",
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
    """The imports of `module` (e.g. `core.db`) that its package's rule forbids."""
    forbidden = FORBIDDEN[module.split(".")[0]]
    return {name for name in imported_modules(source, module) if name.split(".")[0] in forbidden}


def package_modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_every_package_has_modules_to_scan(package: str) -> None:
    assert len(package_modules(package)) >= 2


@pytest.mark.parametrize(
    "path",
    [path for package in sorted(FORBIDDEN) for path in package_modules(package)],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_no_module_imports_what_its_package_must_not(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8"), module_name(path)) == set()


@pytest.mark.parametrize(
    ("source", "module", "found"),
    [
        ("import fastapi", "tuning.methods.example", {"fastapi"}),
        ("from sqlalchemy.orm import Session", "tuning.methods.example", {"sqlalchemy.orm"}),
        ("def f():\n    import celery.result\n", "tuning.methods.example", {"celery.result"}),
        ("from core.settings import Settings", "tuning.methods.example", {"core.settings"}),
        ("from ... import service", "tuning.methods.example", {"service"}),
        ("import torch\nfrom .spec import JobSpec", "tuning.methods.example", set()),
        ("from service.app import create_app", "core.dispatch", {"service.app"}),
        ("from fastapi import Request", "core.db", {"fastapi"}),
        ("from sqlalchemy import update\nfrom celery import Celery", "core.dispatch", set()),
        ("def serve():\n    from worker.app import celery_app\n", "service.cli", {"worker.app"}),
        ("from core.models import Job\nfrom tuning.spec import JobSpec", "service.submit", set()),
        ("from service.schemas.jobs import JobObject", "worker.tasks", {"service.schemas.jobs"}),
        ("from .. import service", "worker.example", {"service"}),
        ("from core.dispatch import enqueue_job\nimport tuning", "worker.lifecycle", set()),
        ("from service.settings import Settings", "migrations.env", {"service.settings"}),
    ],
)
def test_scan_finds_forbidden_imports(source: str, module: str, found: set[str]) -> None:
    # Checks the checker: a scan that could never find anything would pass any code.
    assert forbidden_imports(source, module) == found


def run_python(script: str, *, cwd: Path) -> str:
    """Run `script` in a fresh interpreter (this one has torch loaded) with no deltatune settings set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTATUNE_") and k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"{script!r} failed:\n{result.stderr}"
    return result.stdout


def loaded_modules_after_import(module: str) -> set[str]:
    script = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    stdout = run_python(script, cwd=ROOT)
    return set(json.loads(stdout.splitlines()[-1]))


@pytest.mark.parametrize("module", TORCH_FREE_MODULES)
def test_api_side_modules_do_not_import_torch(module: str) -> None:
    loaded = loaded_modules_after_import(module)
    heavy = sorted(name for name in loaded if name.split(".")[0] in {"torch", "transformers", "peft"})
    assert heavy == [], f"importing {module} loads {heavy[:5]}"


def test_subprocess_check_sees_torch_when_it_is_imported() -> None:
    # The same check on a module that does import torch must see it, or the test above proves nothing.
    assert "torch" in loaded_modules_after_import("tests.tiny_models")


@pytest.mark.parametrize(
    "script",
    [
        "import service.app",
        "import service.cli",
        # What `celery -A worker.app worker` loads before it consumes: the app and its task modules.
        "import worker.app; worker.app.celery_app.loader.import_default_modules()",
    ],
)
def test_importing_creates_nothing_on_disk(script: str, tmp_path: Path) -> None:
    # With no settings, data_dir is .deltatune in the current folder: the folder must stay empty.
    run_python(script, cwd=tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_disk_check_sees_what_sending_creates(tmp_path: Path) -> None:
    # Preparing the broker, as a send does, creates its folders there: the test above can fail.
    run_python(
        "from core.dispatch import make_celery, prepare_broker; from core.settings import Settings; "
        "prepare_broker(make_celery(Settings()))",
        cwd=tmp_path,
    )
    assert (tmp_path / ".deltatune" / "broker" / "queue").is_dir()
