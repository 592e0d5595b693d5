"""POST /v1/jobs refuses parts that cannot work together, or with the base model, before storing anything."""

import json
from pathlib import Path
from typing import Any, Self

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, model_validator

from core.settings import Settings
from tests.service.helpers import broker_messages, job_body, jsonl, upload, uploaded_file_id
from tuning.spec import CompositionError

L2SP = {"l2sp": {"weight": 0.01}}
KL = {"kl": {"weight": 0.1, "temperature": 2.0}}
HEAD_ONLY = {"type": "partial", "head_only": True}
# A model family without attention: its config names width and layers, never heads.
NO_ATTENTION_CONFIG = {"model_type": "mamba", "hidden_size": 32, "num_hidden_layers": 2}


@pytest.fixture
def settings(tmp_path: Path, tiny_bert_dir: Path) -> Settings:
    """The usual settings plus a second model directory holding a config-only model without attention."""
    extra = tmp_path / "more-models"
    (extra / "tiny-ssm").mkdir(parents=True)
    (extra / "tiny-ssm" / "config.json").write_text(json.dumps(NO_ATTENTION_CONFIG))
    return Settings(
        data_dir=tmp_path / "data", model_dirs=[tiny_bert_dir.parent, extra], max_upload_bytes=64 * 1024
    )


def refused(
    client: TestClient, auth: dict[str, str], settings: Settings, body: Any, status: int = 422
) -> dict[str, Any]:
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == status, response.text
    assert broker_messages(settings) == [], "nothing may be enqueued for a refused job"
    assert client.get("/v1/jobs", headers=auth).json()["data"] == []
    return dict(response.json()["error"])


def contains(stored: Any, sent: Any) -> bool:
    """Whether what was stored holds everything that was sent (it adds the defaults)."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(
            key in stored and contains(stored[key], sent[key]) for key in sent
        )
    return bool(stored == sent)


def ewc(fisher_file: str) -> dict[str, Any]:
    return {"ewc": {"weight": 10.0, "fisher_file": fisher_file}}


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        *[
            ({"method": method, "regularizers": L2SP}, "regularizers.l2sp", "changes no pretrained weight")
            for method in (
                {"type": "adapter"},
                {"type": "input_adapter"},
                {"type": "prompt_tuning"},
                {"type": "prefix_tuning"},
                HEAD_ONLY,
            )  # fmt: skip
        ],
        *[
            (
                {"method": method, "regularizers": ewc("FISHER")},
                "regularizers.ewc",
                "changes no pretrained weight",
            )
            for method in (
                {"type": "adapter"},
                {"type": "input_adapter"},
                {"type": "prompt_tuning"},
                {"type": "prefix_tuning"},
                HEAD_ONLY,
            )  # fmt: skip
        ],
        (
            {"method": {"type": "prompt_tuning"}, "gradual_unfreeze": {}},
            "gradual_unfreeze",
            "nothing to unfreeze",
        ),
        (
            {"method": {"type": "prefix_tuning"}, "gradual_unfreeze": {}},
            "gradual_unfreeze",
            "nothing to unfreeze",
        ),
        ({"method": HEAD_ONLY, "gradual_unfreeze": {"every": 2}}, "gradual_unfreeze", "trains none"),
        ({"method": {"type": "adapter"}, "export": {"merged": True}}, "export.merged", "merging works for"),
        (
            {"method": {"type": "prompt_tuning"}, "export": {"merged": True}},
            "export.merged",
            "merging works for",
        ),
        (
            {"method": {"type": "full"}, "head": {"type": "mlp"}, "export": {"merged": True}},
            "export.merged",
            "linear head",
        ),  # fmt: skip
        ({"method": {"type": "lora"}, "export": {"lora_rank": 4}}, "export", "not 'delta'"),
        ({"method": {"type": "full"}, "export": {"lora_energy": 0.9}}, "export", "not 'delta'"),
    ],
)
def test_impossible_combinations_are_refused_naming_the_part(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    change: dict[str, Any],
    param: str,
    words: str,
) -> None:
    training = uploaded_file_id(client, auth)
    body = json.loads(json.dumps(job_body(training, **change)).replace("FISHER", training))
    error = refused(client, auth, settings, body)
    assert error["param"] == param and error["code"] == "invalid_combination"
    assert words in error["message"]
    assert error["type"] == "invalid_request_error"


def test_ewc_without_source_data_is_refused(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = job_body(
        uploaded_file_id(client, auth), method={"type": "full"}, regularizers={"ewc": {"weight": 1}}
    )
    error = refused(client, auth, settings, body)
    assert error["param"] == "regularizers.ewc.fisher_file" and error["code"] == "missing_fisher_file"
    assert "source job's training file only when base_model is a finished job" in error["message"]


@pytest.mark.parametrize(
    "change",
    [
        {
            "method": {"type": "full"},
            "layer_lr_decay": {"decay": 0.8},
            "gradual_unfreeze": {"every": 1, "unit": "epochs"},
            "regularizers": L2SP | KL,
            "export": {"merged": True},
        },
        {"method": {"type": "lora", "r": 4}, "regularizers": KL},
        {"method": {"type": "prompt_tuning", "num_virtual_tokens": 4}, "regularizers": KL},
        {"method": {"type": "delta"}, "export": {"lora_rank": 2}, "regularizers": L2SP},
        {"method": {"type": "adapter", "placement": "pfeiffer"}, "head": {"type": "mlp", "hidden_size": 16}},
        {"method": {"type": "partial", "last_n_layers": 2}, "gradual_unfreeze": {"unit": "steps"}},
        {"method": {"type": "bitfit"}, "regularizers": "EWC"},
    ],
)
def test_combinations_that_work_are_accepted_as_sent(
    client: TestClient, auth: dict[str, str], change: dict[str, Any]
) -> None:
    training = uploaded_file_id(client, auth)
    if change.get("regularizers") == "EWC":
        change = change | {"regularizers": ewc(uploaded_file_id(client, auth))}
    response = client.post("/v1/jobs", headers=auth, json=job_body(training, **change))
    assert response.status_code == 201, response.text
    spec = response.json()["spec"]
    assert contains(spec, change), (spec, change)
    assert [job["id"] for job in client.get("/v1/jobs", headers=auth).json()["data"]] == [
        response.json()["id"]
    ]


def test_fisher_file_must_be_owned_and_processed(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], settings: Settings
) -> None:
    training = uploaded_file_id(client, auth)
    theirs = uploaded_file_id(client, other_auth)
    assert upload(client, auth, jsonl([{"text": 5, "label": "a"}])).status_code == 422
    unusable = next(
        f["id"] for f in client.get("/v1/files", headers=auth).json()["data"] if f["id"] != training
    )
    for fisher_file, code in (("file-missing", "file_not_found"), (theirs, "file_not_found"),
                              (unusable, "file_not_ready")):  # fmt: skip
        body = job_body(training, method={"type": "full"}, regularizers=ewc(fisher_file))
        error = refused(client, auth, settings, body, status=400)
        assert error["param"] == "regularizers.ewc.fisher_file" and error["code"] == code
        assert fisher_file in error["message"]

    mine = uploaded_file_id(client, auth)
    body = job_body(training, method={"type": "full"}, regularizers=ewc(mine))
    assert client.post("/v1/jobs", headers=auth, json=body).status_code == 201


def test_prefix_tuning_on_a_model_without_attention_is_refused(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    training = uploaded_file_id(client, auth)
    body = job_body(training, base_model="tiny-ssm", method={"type": "prefix_tuning"})
    error = refused(client, auth, settings, body)
    assert error["param"] == "method.type" and error["code"] == "invalid_spec"
    assert "tiny-ssm" in error["message"] and "attention" in error["message"]
    # The same model takes a method that needs no attention, and tiny-bert takes prefix tuning.
    for model, method in (("tiny-ssm", {"type": "bitfit"}), ("tiny-bert", {"type": "prefix_tuning"})):
        response = client.post(
            "/v1/jobs", headers=auth, json=job_body(training, base_model=model, method=method)
        )
        assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("method", "param"),
    [
        ({"type": "partial", "last_n_layers": 3}, "method.last_n_layers"),
        ({"type": "lora", "layers_to_transform": [0, 2]}, "method.layers_to_transform"),
        ({"type": "prompt_tuning", "num_virtual_tokens": 128}, "method.num_virtual_tokens"),
        ({"type": "lora", "target_modules": ["nonexistent"]}, "method.target_modules"),
        ({"type": "lora", "rank_pattern": {"nonexistent": 2}}, "method.rank_pattern"),
        ({"type": "delta", "target_modules": ["query", "nonexistent"]}, "method.target_modules"),
    ],
)
def test_options_larger_than_the_model_are_refused(
    client: TestClient, auth: dict[str, str], settings: Settings, method: dict[str, Any], param: str
) -> None:
    # tiny-bert: 2 layers, 32 wide, 128 positions.
    body = job_body(uploaded_file_id(client, auth), method=method)
    error = refused(client, auth, settings, body)
    assert error["param"] == param and error["code"] == "invalid_spec"


@pytest.mark.parametrize(
    ("content", "kind"), [([1, 2], "an array"), ("text", "a string"), (7, "a number"), (True, "a boolean")]
)
def test_a_body_that_is_not_an_object_names_the_body(
    client: TestClient, auth: dict[str, str], settings: Settings, content: Any, kind: str
) -> None:
    error = refused(client, auth, settings, content)
    assert error["param"] == "body" and error["message"] == f"request body must be a JSON object, not {kind}"


def test_a_missing_body_names_the_body(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    response = client.post("/v1/jobs", headers=auth)
    assert response.status_code == 422
    assert response.json()["error"] == {
        "message": "request body is missing",
        "type": "invalid_request_error",
        "param": "body",
        "code": "missing",
    }
    assert broker_messages(settings) == []


class Inner(BaseModel):
    size: int = 1

    @model_validator(mode="after")
    def _refuse(self) -> Self:
        if self.size > 1:
            raise CompositionError("size above 1 does not fit", param="size")
        return self


class Outer(BaseModel):
    inner: Inner


def test_a_nested_composition_error_is_named_from_the_body_root(app: FastAPI, auth: dict[str, str]) -> None:
    # A part's own validator names the field relative to itself; the client reads it from the root.
    @app.post("/nested")
    def nested(body: Outer) -> None:
        return None

    with TestClient(app) as client:
        response = client.post("/nested", json={"inner": {"size": 2}})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "inner.size"
    assert response.json()["error"]["message"] == "size above 1 does not fit"


@pytest.mark.parametrize("dry_run", [False, True])
def test_target_modules_matching_no_layer_are_refused_at_post_and_by_the_dry_run(
    client: TestClient, auth: dict[str, str], settings: Settings, dry_run: bool
) -> None:
    method = {"type": "lora", "target_modules": ["nonexistent"]}
    body = job_body(uploaded_file_id(client, auth), method=method, dry_run=dry_run)
    error = refused(client, auth, settings, body)
    assert error["param"] == "method.target_modules"
    assert "['nonexistent']" in error["message"] and "query" in error["message"]
