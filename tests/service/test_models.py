"""/v1/models: the base models workers can load, without the server's paths."""

from pathlib import Path

from fastapi.testclient import TestClient


def test_models_lists_bundled_and_directory_models(
    client: TestClient, auth: dict[str, str], tiny_bert_dir: Path
) -> None:
    response = client.get("/v1/models", headers=auth)
    assert response.status_code == 200
    models = {model["id"]: model for model in response.json()["data"]}
    assert isinstance(models["tiny-bert"]["created"], int) and models["tiny-bert"]["created"] > 0
    assert models["tiny-bert"] == {
        "id": "tiny-bert",
        "object": "model",
        "created": models["tiny-bert"]["created"],
        "owned_by": "system",
        "source": "directory",
        "architecture": "BertModel",
        "parameters": 999072,
        "tasks": ["sequence_classification"],
    }
    assert models["sentence-transformers/all-MiniLM-L6-v2"]["source"] == "bundled"
    assert all(
        set(model) == {"id", "object", "created", "owned_by", "source", "architecture", "parameters", "tasks"}
        for model in models.values()
    )
    assert str(tiny_bert_dir.parent) not in response.text
