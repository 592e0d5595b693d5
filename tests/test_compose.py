"""docker-compose.yml agrees with the code: Docker cannot run here, so check what can be checked.

Each check returns the problems it finds. The real file must have none, and every check is also run
on a copy broken in its own way, to prove it would notice.
"""

import copy
import os
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices, ValidationError

from core.settings import Settings
from service.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = "/data"

Compose = dict[str, Any]
Check = Callable[[Compose], list[str]]


# --- reading the files -----------------------------------------------------------------------------


def load_compose() -> Compose:
    with (ROOT / "docker-compose.yml").open(encoding="utf-8") as handle:
        compose = yaml.safe_load(handle)
    assert isinstance(compose, dict) and isinstance(compose.get("services"), dict)
    return compose


def dockerfile_instructions(path: Path) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        yield keyword.upper(), arguments.strip()


def dockerfile_stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Instructions per named build stage (`FROM image AS name`)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, arguments in dockerfile_instructions(path):
        if keyword == "FROM":
            words = arguments.split()
            current = []
            if len(words) >= 3 and words[-2].lower() == "as":
                stages[words[-1]] = current
        current.append((keyword, arguments))
    return stages


def stage_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def stage_entrypoint(instructions: list[tuple[str, str]]) -> list[str]:
    # Exec form is a JSON array, which YAML reads too.
    entrypoints = [yaml.safe_load(args) for keyword, args in instructions if keyword == "ENTRYPOINT"]
    return entrypoints[-1] if entrypoints else []


def built_services(compose: Compose) -> dict[str, dict[str, Any]]:
    """The services built from this repository (the others are stock images)."""
    return {name: service for name, service in compose["services"].items() if "build" in service}


def service_dockerfile(service: dict[str, Any]) -> Path:
    build = service["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    return context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {name: str(value) for name, value in env.items()}


def deltatune_env(service: dict[str, Any]) -> dict[str, str]:
    """The variables of a service's environment that deltatune's Settings may read."""
    return {key: value for key, value in environment(service).items() if is_deltatune_variable(key)}


def command_args(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def deltatune_args(service: dict[str, Any]) -> list[str]:
    """The arguments the `deltatune` CLI receives: the image's entrypoint is `deltatune` itself."""
    args = command_args(service)
    return args[1:] if args[:1] == ["deltatune"] else args


def settings_variables() -> set[str]:
    """Every environment variable name Settings reads: DELTATUNE_<field> and validation aliases."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def settings_for(env: dict[str, str]) -> Settings:
    """Settings as the container would build them from exactly `env` (nothing from this machine)."""
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings()


def is_deltatune_variable(name: str) -> bool:
    return name.startswith("DELTATUNE_") or name == "DATABASE_URL"


def queues_of(args: list[str]) -> set[str]:
    parsed = build_parser().parse_args(args)
    queues = parsed.queues
    words = [queues] if isinstance(queues, str) else list(queues)
    return {queue.strip() for word in words for queue in str(word).split(",") if queue.strip()}


# --- the checks ------------------------------------------------------------------------------------


def check_depends_on(compose: Compose) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on") or []:
            if dependency not in compose["services"]:
                problems.append(f"{name} depends on unknown service {dependency!r}")
    return problems


def check_build_targets(compose: Compose) -> list[str]:
    problems = []
    for name, service in built_services(compose).items():
        build = service["build"]
        target = None if isinstance(build, str) else build.get("target")
        dockerfile = service_dockerfile(service)
        if not dockerfile.exists():
            problems.append(f"{name}: {dockerfile.name} not found")
        elif target not in dockerfile_stages(dockerfile):
            problems.append(f"{name}: build target {target!r} is not a stage of {dockerfile.name}")
        elif stage_entrypoint(dockerfile_stages(dockerfile)[target]) != ["deltatune"]:
            problems.append(f'{name}: stage {target!r} does not have ENTRYPOINT ["deltatune"]')
    return problems


def check_commands(compose: Compose) -> list[str]:
    problems = []
    parser = build_parser()
    for name, service in built_services(compose).items():
        args = deltatune_args(service)
        if not args:
            problems.append(f"{name}: no deltatune command")
            continue
        try:
            parser.parse_args(args)
        except SystemExit:
            problems.append(f"{name}: `deltatune {' '.join(args)}` is refused by the CLI's parser")
    return problems


def check_environment(compose: Compose) -> list[str]:
    problems = []
    known = settings_variables()
    for name, service in built_services(compose).items():
        env = image_env(service) | deltatune_env(service)
        unknown = sorted(set(env) - known)
        if unknown:
            problems.append(f"{name}: variables that Settings does not read: {unknown}")
        try:
            settings_for(env)
        except ValidationError as error:
            problems.append(f"{name}: environment does not validate: {error}")
    return problems


def image_env(service: dict[str, Any]) -> dict[str, str]:
    """The DELTATUNE_* variables the image itself sets (ENV in its build stage)."""
    build = service["build"]
    target = None if isinstance(build, str) else build.get("target")
    stages = dockerfile_stages(service_dockerfile(service)) if service_dockerfile(service).exists() else {}
    env = stage_env(stages.get(target, [])) if target else {}
    return {key: value for key, value in env.items() if is_deltatune_variable(key)}


def check_data_volume(compose: Compose) -> list[str]:
    """Every deltatune service mounts the same named volume at the data dir, and uses it as data_dir."""
    problems = []
    sources: set[str] = set()
    declared = set(compose.get("volumes") or {})
    for name, service in built_services(compose).items():
        mounts = [
            str(volume).split(":")[0]
            for volume in service.get("volumes") or []
            if str(volume).split(":")[1:2] == [DATA_DIR]
        ]
        if len(mounts) != 1:
            problems.append(f"{name}: expected one volume at {DATA_DIR}, found {mounts}")
        sources.update(mounts)
        for source in mounts:
            if source not in declared:
                problems.append(f"{name}: {source!r} at {DATA_DIR} is not a named volume")
        data_dir = (image_env(service) | environment(service)).get("DELTATUNE_DATA_DIR")
        if data_dir != DATA_DIR:
            problems.append(f"{name}: DELTATUNE_DATA_DIR is {data_dir!r}, not {DATA_DIR}")
    if len(sources) > 1:
        problems.append(f"services mount different volumes at {DATA_DIR}: {sorted(sources)}")
    return problems


def check_api_port(compose: Compose) -> list[str]:
    """The port compose publishes is the one the API listens on (its --port, else its settings)."""
    api = compose["services"]["api"]
    parsed = build_parser().parse_args(deltatune_args(api))
    listening = getattr(parsed, "port", None) or settings_for(deltatune_env(api)).port
    published = [str(port).rsplit(":", 1)[-1].split("/")[0] for port in api.get("ports") or []]
    if published != [str(listening)]:
        return [f"api listens on {listening} but publishes container ports {published}"]
    return []


def check_gpu_worker(compose: Compose) -> list[str]:
    worker = compose["services"].get("worker", {})
    devices = (((worker.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
    for device in devices or []:
        wants_gpu = "gpu" in (device.get("capabilities") or [])
        how_many = device.get("count") or device.get("device_ids")
        if device.get("driver") == "nvidia" and wants_gpu and how_many:
            return []
    return ["worker reserves no NVIDIA GPU (deploy.resources.reservations.devices)"]


def check_queues(compose: Compose) -> list[str]:
    """The queue the API sends jobs to is consumed by the GPU worker and by the CPU workers."""
    job_queue = settings_for(deltatune_env(compose["services"]["api"])).job_queue
    problems = []
    for name in ("worker", "worker-cpu"):
        service = compose["services"].get(name)
        if service is None:
            problems.append(f"no {name} service")
        elif job_queue not in queues_of(deltatune_args(service)):
            problems.append(f"{name} does not consume the API's queue {job_queue!r}")
    return problems


def check_cpu_workers(compose: Compose) -> list[str]:
    worker_cpu = compose["services"].get("worker-cpu", {})
    problems = []
    if "deploy" in worker_cpu and "devices" in str(worker_cpu["deploy"]):
        problems.append("worker-cpu reserves a device")
    if "cpu" not in (worker_cpu.get("profiles") or []):
        problems.append("worker-cpu is not under the `cpu` profile")
    return problems


def check_object_store(compose: Compose) -> list[str]:
    """Every deltatune service stores into one bucket, of the compose file's own S3 service."""
    problems = []
    stores = set()
    for name, service in built_services(compose).items():
        try:
            settings = settings_for(image_env(service) | deltatune_env(service))
        except ValidationError as error:
            problems.append(f"{name}: {error}")
            continue
        if not settings.s3_bucket:
            problems.append(f"{name}: no DELTATUNE_S3_BUCKET: it would keep files in its own /data")
            continue
        host = urlsplit(settings.s3_endpoint_url or "").hostname
        if host not in compose["services"]:
            problems.append(f"{name}: the S3 endpoint {settings.s3_endpoint_url!r} is no service here")
        stores.add((settings.s3_endpoint_url, settings.s3_bucket, settings.s3_prefix))
    if len(stores) > 1:
        problems.append(f"services store into different buckets: {sorted(map(str, stores))}")
    return problems


def check_startup_order(compose: Compose) -> list[str]:
    """migrate waits for a healthy postgres; api and workers wait for migrate to finish and the bucket
    to exist."""
    services = compose["services"]
    problems = []
    ready = {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
        "bucket": "service_completed_successfully",
    }
    expected = {
        "migrate": {"postgres": "service_healthy"},
        "bucket": {"minio": "service_healthy"},
        "api": ready,
        "worker": ready,
    }
    for name, conditions in expected.items():
        depends_on = services.get(name, {}).get("depends_on") or {}
        for dependency, condition in conditions.items():
            actual = depends_on.get(dependency, {}).get("condition") if isinstance(depends_on, dict) else None
            if actual != condition:
                problems.append(f"{name} should wait for {dependency} to be {condition}, not {actual}")
    for name in ("postgres", "redis", "minio"):
        if "healthcheck" not in services.get(name, {}):
            problems.append(f"{name} has no healthcheck")
    return problems


CHECKS: list[Check] = [
    check_depends_on,
    check_build_targets,
    check_commands,
    check_environment,
    check_data_volume,
    check_api_port,
    check_gpu_worker,
    check_queues,
    check_cpu_workers,
    check_startup_order,
    check_object_store,
]


# --- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_compose_file_passes(check: Check) -> None:
    assert check(load_compose()) == []


def test_compose_runs_the_expected_processes() -> None:
    services = load_compose()["services"]
    assert {"postgres", "redis", "minio", "bucket", "migrate", "api", "worker", "worker-cpu"} <= set(services)
    assert deltatune_args(services["migrate"])[0] == "migrate"
    assert deltatune_args(services["api"])[0] == "api"
    assert environment(services["api"])["DELTATUNE_AUTO_MIGRATE"] == "false"
    assert environment(services["api"])["DATABASE_URL"].startswith("postgresql://")
    assert environment(services["api"])["DELTATUNE_BROKER_URL"] == "redis://redis:6379/0"
    assert settings_for(environment(services["api"])).job_queue == "gpu"


def _set(path: list[str], value: Any) -> Callable[[Compose], None]:
    def mutate(compose: Compose) -> None:
        node = compose
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(path: list[str]) -> Callable[[Compose], None]:
    def mutate(compose: Compose) -> None:
        node = compose
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def _with_env(service: str, **env: str) -> Callable[[Compose], None]:
    def mutate(compose: Compose) -> None:
        compose["services"][service]["environment"] = environment(compose["services"][service]) | env

    return mutate


BREAKAGES: list[tuple[str, Callable[[Compose], None], Check]] = [
    ("unknown dependency", _set(["services", "api", "depends_on", "rabbitmq"], {}), check_depends_on),
    ("missing build target", _set(["services", "worker", "build", "target"], "gpu"), check_build_targets),
    ("unknown subcommand", _set(["services", "migrate", "command"], ["upgrade"]), check_commands),
    ("unknown option", _set(["services", "worker", "command"], ["worker", "--no-such-flag"]), check_commands),
    ("misspelt variable", _with_env("api", DELTATUNE_BROKER="redis://redis:6379/0"), check_environment),
    ("invalid value", _with_env("worker", DELTATUNE_JOB_QUEUE="tpu"), check_environment),
    ("invalid number", _with_env("api", DELTATUNE_MAX_UPLOAD_BYTES="lots"), check_environment),
    ("other volume at /data", _set(["services", "worker", "volumes"], ["scratch:/data"]), check_data_volume),
    ("bind mount at /data", _set(["services", "api", "volumes"], ["./data:/data"]), check_data_volume),
    ("no volume at /data", _set(["services", "worker-cpu", "volumes"], []), check_data_volume),
    ("data dir elsewhere", _with_env("worker", DELTATUNE_DATA_DIR="/srv"), check_data_volume),
    ("port mismatch", _with_env("api", DELTATUNE_PORT="9000"), check_api_port),
    ("published port mismatch", _set(["services", "api", "ports"], ["8000:8080"]), check_api_port),
    ("no GPU reservation", _delete(["services", "worker", "deploy"]), check_gpu_worker),
    ("worker on cpu", _set(["services", "worker", "command"], ["worker", "--queues", "cpu"]), check_queues),
    ("api on another queue", _with_env("api", DELTATUNE_JOB_QUEUE="cpu"), check_queues),
    ("CPU worker not in a profile", _delete(["services", "worker-cpu", "profiles"]), check_cpu_workers),
    ("api before migrate", _delete(["services", "api", "depends_on", "migrate"]), check_startup_order),
    ("postgres without healthcheck", _delete(["services", "postgres", "healthcheck"]), check_startup_order),
    ("worker before bucket", _delete(["services", "worker", "depends_on", "bucket"]), check_startup_order),
    ("no bucket", _with_env("worker-cpu", DELTATUNE_S3_BUCKET=""), check_object_store),
    ("another bucket", _with_env("api", DELTATUNE_S3_BUCKET="elsewhere"), check_object_store),
    ("unknown store", _with_env("worker", DELTATUNE_S3_ENDPOINT_URL="http://s3:9000"), check_object_store),
]


@pytest.mark.parametrize(("mutate", "check"), [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_check_notices_a_broken_file(mutate: Callable[[Compose], None], check: Check) -> None:
    broken = copy.deepcopy(load_compose())
    mutate(broken)
    assert check(broken) != []


def test_dockerfile_stage_sets_the_data_dir_and_entrypoint() -> None:
    stages = dockerfile_stages(ROOT / "Dockerfile")
    assert "runtime" in stages
    assert stage_env(stages["runtime"])["DELTATUNE_DATA_DIR"] == DATA_DIR
    assert stage_entrypoint(stages["runtime"]) == ["deltatune"]
    users = [arguments for keyword, arguments in stages["runtime"] if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image must not run as root"
