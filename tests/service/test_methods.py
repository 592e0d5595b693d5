"""GET /v1/methods lists every method and part, generated from the models that validate job specs."""

import re
import types
import typing
from typing import Any, get_args, get_origin

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tests.service.helpers import job_body, uploaded_file_id
from tuning.auto import auto_learning_rate
from tuning.spec import MERGEABLE_METHODS, PEFT_METHODS, CatalogueEntry, JobSpec, Method

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def method_models() -> dict[str, type[CatalogueEntry]]:
    """The discriminated union of job specs, member by member: what the catalogue must list."""
    return {model.model_fields["type"].default: model for model in get_args(get_args(Method)[0])}


def part_models(model: type[BaseModel] = JobSpec, prefix: str = "") -> dict[str, type[CatalogueEntry]]:
    """Every catalogue model reachable through the job spec's fields (but `method`), by dotted field."""
    found: dict[str, type[CatalogueEntry]] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        for member in _members(field.annotation):
            if path == "method" or not (isinstance(member, type) and issubclass(member, BaseModel)):
                continue
            if issubclass(member, CatalogueEntry):
                found[path] = member
            else:
                found |= part_models(member, f"{path}.")
    return found


def _members(annotation: Any) -> tuple[Any, ...]:
    origin = get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return tuple(member for arg in get_args(annotation) for member in _members(arg))
    if origin is typing.Annotated:
        return _members(get_args(annotation)[0])
    return (annotation,)


def schema_accepts(schema: dict[str, Any], value: Any, defs: dict[str, Any] | None = None) -> bool:
    """A small JSON-schema check (the subset pydantic emits for our models), to test the schemas
    as a client uses them, not only the pydantic models behind them."""
    defs = schema.get("$defs", defs or {})
    if "$ref" in schema:
        return schema_accepts(defs[schema["$ref"].rsplit("/", 1)[-1]], value, defs)
    if "anyOf" in schema:
        return any(schema_accepts(option, value, defs) for option in schema["anyOf"])
    if "const" in schema and value != schema["const"]:
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    kind = schema.get("type")
    if kind is not None and not _is_json_type(value, kind):
        return False
    if kind == "object":
        properties = schema.get("properties", {})
        if not set(schema.get("required", [])) <= set(value):
            return False
        if schema.get("additionalProperties") is False and not set(value) <= set(properties):
            return False
        return all(
            schema_accepts(properties[key], item, defs) for key, item in value.items() if key in properties
        )
    if kind == "array":
        return all(schema_accepts(schema.get("items", {}), item, defs) for item in value)
    return True


def _is_json_type(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    return isinstance(value, JSON_TYPES[kind])


@pytest.fixture
def listing(client: TestClient, auth: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get("/v1/methods", headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    return list(body["data"])


def test_methods_need_an_api_key(client: TestClient) -> None:
    response = client.get("/v1/methods")
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"


def test_every_method_of_the_spec_is_listed_with_its_schema(listing: list[dict[str, Any]]) -> None:
    methods = {entry["name"]: entry for entry in listing if entry["kind"] == "method"}
    models = method_models()
    assert set(methods) == set(models)
    for name, model in models.items():
        entry = methods[name]
        assert entry["spec_field"] == "method"
        assert entry["options_schema"] == model.model_json_schema()
        assert entry["artifact_layout"] == ("peft" if name in PEFT_METHODS else "deltatune")
        assert entry["mergeable"] is (name in MERGEABLE_METHODS)


def test_every_method_lists_the_rate_auto_trains_it_at(listing: list[dict[str, Any]]) -> None:
    methods = {entry["name"]: entry for entry in listing if entry["kind"] == "method"}
    for name, entry in methods.items():
        body = job_body("file-x", method=entry["example"], hyperparameters={"batch_size": 16})
        rate, _ = auto_learning_rate(JobSpec.model_validate(body))
        assert entry["auto_learning_rate"] == pytest.approx(rate), name
        assert re.search(r"\d", entry["auto_learning_rate_source"]), name  # a paper and its range
    assert methods["lora"]["auto_learning_rate"] == 5e-4
    assert all(e["auto_learning_rate"] is None for e in listing if e["kind"] == "part")


def test_every_part_of_the_spec_is_listed_where_it_goes(listing: list[dict[str, Any]]) -> None:
    parts = {entry["spec_field"]: entry for entry in listing if entry["kind"] == "part"}
    models = part_models()
    assert {"head", "layer_lr_decay", "gradual_unfreeze", "regularizers.l2sp", "export"} <= set(models)
    assert set(parts) == set(models)
    for spec_field, model in models.items():
        entry = parts[spec_field]
        assert entry["name"] == spec_field.rsplit(".", 1)[-1]
        assert entry["options_schema"] == model.model_json_schema()
        assert entry["artifact_layout"] is None and entry["mergeable"] is None


def test_descriptions_and_papers_come_from_the_spec_models(listing: list[dict[str, Any]]) -> None:
    models = {**method_models(), **{path.rsplit(".", 1)[-1]: m for path, m in part_models().items()}}
    assert len({entry["name"] for entry in listing}) == len(listing) == len(models)
    for entry in listing:
        model = models[entry["name"]]
        assert entry["description"].strip() and "\n" not in entry["description"]
        assert entry["description"] == (model.__doc__ or "").strip().splitlines()[0]
        assert entry["paper"].strip() and entry["paper"] == model.paper
        # Every paper is one a reader can find: an arXiv id, or authors with a year.
        assert "arXiv:" in entry["paper"] or re.search(r"\b(19|20)\d\d\b", entry["paper"])


def test_every_example_satisfies_its_schema_and_its_model(listing: list[dict[str, Any]]) -> None:
    for entry in listing:
        assert schema_accepts(entry["options_schema"], entry["example"]), entry["name"]
    models = {**method_models(), **part_models()}
    for entry in listing:
        key = entry["name"] if entry["kind"] == "method" else entry["spec_field"]
        models[key].model_validate(entry["example"])


def test_the_schema_check_can_refuse(listing: list[dict[str, Any]]) -> None:
    # The check above would pass anything if schema_accepts accepted everything.
    lora = next(entry for entry in listing if entry["name"] == "lora")
    ewc = next(entry for entry in listing if entry["name"] == "ewc")
    assert schema_accepts(lora["options_schema"], {"type": "lora", "r": 4})
    assert not schema_accepts(lora["options_schema"], {"type": "lora", "rank": 4})
    assert not schema_accepts(lora["options_schema"], {"type": "full"})
    assert not schema_accepts(lora["options_schema"], {"type": "lora", "r": "4"})
    assert not schema_accepts(lora["options_schema"], {"type": "lora", "use_rslora": 1})
    assert not schema_accepts(lora["options_schema"], {"type": "lora", "target_modules": [3]})
    assert not schema_accepts(ewc["options_schema"], {"fisher_file": "file-x"})


def test_every_example_is_accepted_in_a_job_at_its_spec_field(
    client: TestClient, auth: dict[str, str], listing: list[dict[str, Any]]
) -> None:
    training = uploaded_file_id(client, auth)
    for entry in listing:
        options = dict(entry["example"])
        if entry["name"] == "ewc":
            options["fisher_file"] = training  # the example's id is no file of this owner
        body = job_body(training)
        *parents, leaf = entry["spec_field"].split(".")
        target = body
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = options
        response = client.post("/v1/jobs", headers=auth, json=body)
        assert response.status_code == 201, (entry["name"], response.text)
        stored = response.json()["spec"]
        for step in entry["spec_field"].split("."):
            stored = stored[step]
        assert stored == options


def test_the_openapi_document_shares_the_catalogue_schemas(
    client: TestClient, listing: list[dict[str, Any]]
) -> None:
    components = client.get("/openapi.json").json()["components"]["schemas"]
    models = {**method_models(), **part_models()}
    for entry in listing:
        key = entry["name"] if entry["kind"] == "method" else entry["spec_field"]
        published = components[models[key].__name__]
        assert set(published["properties"]) == set(entry["options_schema"]["properties"])
        assert published.get("required", []) == entry["options_schema"].get("required", [])
