from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine
from core.schema_version import upgrade_to_head
from core.settings import Settings


@pytest.fixture()
def settings(tmp_path: Path, tiny_bert_dir: Path) -> Settings:
    data_dir = tmp_path / "data"
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'deltatune.db'}",
        broker_url="filesystem://",
        model_dirs=[tiny_bert_dir.parent],
        heartbeat_seconds=0.05,
    )


@pytest.fixture()
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A SQLite database migrated to head the way the service migrates its own."""
    settings.data_dir.mkdir(parents=True)
    upgrade_to_head(settings.database_url)
    engine = make_engine(settings.database_url)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()
