"""Fixtures of the fault suite: deployments a test breaks, and servers of its own."""

from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Deployment, deploy
from tests.faults.servers import PostgresServer, start_postgres
from tests.integration.services import POSTGRES_ADMIN_URL, require_postgres

DeployFactory = Callable[..., Deployment]


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own, which it may stop and start."""
    with start_postgres() as server:
        yield server


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_bert_dir: Path
) -> Iterator[DeployFactory]:
    """Opens deployments (see tests.faults.harness.deploy): on the shared PostgreSQL unless given
    `admin_url`; all of them are stopped at the test's end, and a failing test shows their logs."""
    opened: list[Deployment] = []
    request.node.fault_deployments = opened
    with ExitStack() as stack:

        def open_deployment(**options: Any) -> Deployment:
            if "admin_url" not in options:
                require_postgres()
                options["admin_url"] = POSTGRES_ADMIN_URL
            root = tmp_path / f"deployment-{len(opened)}"
            root.mkdir()
            return stack.enter_context(
                deploy(root, models_root=tiny_bert_dir.parent, opened=opened, **options)
            )

        yield open_deployment


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing fault test shows the tail of every process's log."""
    report: pytest.TestReport = yield
    if report.failed:
        for deployment in getattr(item, "fault_deployments", []):
            for name, tail in deployment.logs().items():
                report.sections.append((f"{deployment.root.name}/{name}", tail))
    return report
