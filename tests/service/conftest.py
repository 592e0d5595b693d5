"""An app per test: its own data dir, a SQLite database migrated to head, the real filesystem broker."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from service.auth import create_api_key


@pytest.fixture
def settings(tmp_path: Path, tiny_bert_dir: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_dirs=[tiny_bert_dir.parent], max_upload_bytes=64 * 1024)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    settings.data_dir.mkdir(parents=True)
    upgrade_to_head(settings.database_url)
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def key_headers(app: FastAPI, owner_name: str) -> dict[str, str]:
    with app.state.sessionmaker() as session:
        return {"Authorization": f"Bearer {create_api_key(session, owner_name=owner_name)}"}


@pytest.fixture
def auth(app: FastAPI) -> dict[str, str]:
    """Headers carrying a key of the owner 'alice'."""
    return key_headers(app, "alice")


@pytest.fixture
def other_auth(app: FastAPI) -> dict[str, str]:
    """Headers carrying a key of another owner, 'mallory'."""
    return key_headers(app, "mallory")
