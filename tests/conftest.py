from pathlib import Path

import pytest

from tests.integration.services import POSTGRES_ADMIN_URL, REDIS_URL, require_postgres, require_redis
from tests.s3_server import s3_bucket, s3_endpoint  # noqa: F401  (fixtures: a real S3 endpoint)
from tests.tiny_models import make_tiny_bert, make_tiny_gpt2, make_tiny_roberta

# A test needs the local PostgreSQL or Redis, or starts servers of its own (the fault suite's
# deployments and its own PostgreSQL), exactly when it asks for one of these fixtures; the
# `integration` marker must say so (checked at collection below), so `-m "not integration"` runs
# everything that needs no server and nothing that does.
SERVICE_FIXTURES = frozenset({"postgres_server", "redis_server", "deployment", "own_postgres"})


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The local PostgreSQL's admin URL, once it answers; the test fails saying how to start it."""
    require_postgres()
    return POSTGRES_ADMIN_URL


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The Redis URL (index) these tests own, once it answers."""
    require_redis()
    return REDIS_URL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        needs = bool(SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())))
        marked = item.get_closest_marker("integration") is not None
        if needs != marked:
            wrong.append(f"{item.nodeid}: {'unmarked but needs' if needs else 'marked but needs neither'}")
    if wrong:
        raise pytest.UsageError(
            "the integration marker must sit on exactly the tests that use PostgreSQL or Redis "
            f"(fixtures {', '.join(sorted(SERVICE_FIXTURES))}):\n  " + "\n  ".join(wrong)
        )


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding one tiny BERT named `tiny-bert` (pass the parent as a model dir)."""
    root = tmp_path_factory.mktemp("models")
    make_tiny_bert(root / "tiny-bert")
    return root / "tiny-bert"


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny RoBERTa named `tiny-roberta`, in a models directory of its own (the shared one's
    listing is what the catalogue tests check)."""
    return make_tiny_roberta(tmp_path_factory.mktemp("roberta-models") / "tiny-roberta")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tiny_bert_dir: Path) -> Path:
    """A tiny GPT-2 named `tiny-gpt2`, in the same models directory as `tiny-bert`."""
    return make_tiny_gpt2(tiny_bert_dir.parent / "tiny-gpt2")
