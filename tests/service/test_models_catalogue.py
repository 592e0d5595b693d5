"""/v1/models: parameter counts, tasks, and the owner's finished jobs' models."""

import json
import struct
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.service.helpers import create_job, set_job
from tuning.models import parameter_count


def models_by_id(client: TestClient, headers: dict[str, str]) -> dict[str, dict[str, object]]:
    response = client.get("/v1/models", headers=headers)
    assert response.status_code == 200, response.text
    return {model["id"]: model for model in response.json()["data"]}


def test_parameters_match_the_model_loaded_by_transformers(
    client: TestClient, auth: dict[str, str], tiny_bert_dir: Path, tiny_gpt2_dir: Path
) -> None:
    from transformers import AutoModel

    models = models_by_id(client, auth)
    for name, directory in (("tiny-bert", tiny_bert_dir), ("tiny-gpt2", tiny_gpt2_dir)):
        loaded = AutoModel.from_pretrained(directory)
        # Tied weights (GPT-2's) are stored once, as they are counted once here.
        assert models[name]["parameters"] == sum(p.numel() for p in loaded.parameters())
    assert models["sentence-transformers/all-MiniLM-L6-v2"]["parameters"] == 22_713_728


def test_tasks_by_architecture(client: TestClient, auth: dict[str, str], tiny_gpt2_dir: Path) -> None:
    models = models_by_id(client, auth)
    assert models["tiny-bert"]["tasks"] == ["sequence_classification"]
    assert models["tiny-gpt2"]["tasks"] == ["sequence_classification", "causal_lm"]


def test_sharded_safetensors_are_summed(tmp_path: Path) -> None:
    for index, shapes in enumerate(([[3, 4], [5]], [[2, 2, 2]])):
        header = {
            f"t{index}_{n}": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}
            for n, shape in enumerate(shapes)
        }
        header["__metadata__"] = {"format": "pt"}  # type: ignore[assignment]
        encoded = json.dumps(header).encode()
        (tmp_path / f"model-0000{index + 1}-of-00002.safetensors").write_bytes(
            struct.pack("<Q", len(encoded)) + encoded
        )
    assert parameter_count(tmp_path) == 12 + 5 + 8
    assert parameter_count(tmp_path / "missing") is None


def test_finished_jobs_are_listed_for_their_owner_only(
    app: FastAPI, client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    done = create_job(client, auth)
    running = create_job(client, auth)
    frozen_base = create_job(client, auth, method={"type": "prompt_tuning", "num_virtual_tokens": 4})
    set_job(app, done["id"], status="succeeded")
    set_job(app, running["id"], status="running")
    set_job(app, frozen_base["id"], status="succeeded")
    chained = create_job(client, auth, base_model=done["id"])
    set_job(app, chained["id"], status="succeeded")

    models = models_by_id(client, auth)
    tiny = models["tiny-bert"]
    for job in (done, chained):
        assert models[job["id"]] == {
            "id": job["id"],
            "object": "model",
            "created": models[job["id"]]["created"],
            "owned_by": models[job["id"]]["owned_by"],
            "source": "job",
            "architecture": tiny["architecture"],
            "parameters": tiny["parameters"],
            "tasks": ["sequence_classification"],
        }
    assert running["id"] not in models and frozen_base["id"] not in models
    assert not any(model["source"] == "job" for model in models_by_id(client, other_auth).values())
