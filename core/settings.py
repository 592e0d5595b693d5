"""The one settings object. Nothing else in deltatune reads os.environ.

Embedded default (no variables set): SQLite file, local artifact folder and kombu's filesystem
broker, all under `data_dir`. Distributed: set DATABASE_URL and DELTATUNE_BROKER_URL.
"""

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.webhook_urls import check_host_entries

Queue = Literal["gpu", "cpu"]
# Retries beyond this are a typo, not a policy (the default waits about 1 h 13 min in all).
MAX_WEBHOOK_RETRIES = 20


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DELTATUNE_", extra="ignore")

    data_dir: Path = Field(
        Path(".deltatune"), description="Root of the embedded database, files and artifacts."
    )
    # Object storage (core/storage/): with a bucket, files, artifacts, checkpoints and resume points
    # live in an S3-compatible store, so the API and workers may run on separate hosts.
    s3_bucket: str | None = Field(
        None, description="S3 bucket for files, artifacts, checkpoints and resume points; unset: data_dir."
    )
    s3_endpoint_url: str | None = Field(
        None, description="The store's URL (MinIO, Ceph, ...); unset: AWS S3 itself."
    )
    s3_prefix: str = Field("", description="Keys are stored under this prefix in the bucket.")
    s3_region: str | None = Field(None, description="The bucket's region; unset: boto3's default.")
    s3_access_key_id: str | None = Field(
        None, description="With s3_secret_access_key; unset: boto3's own chain (AWS_* variables, a role)."
    )
    s3_secret_access_key: str | None = Field(None, description="The secret of s3_access_key_id.")
    database_url: str = Field(
        "",
        validation_alias=AliasChoices("DATABASE_URL", "DELTATUNE_DATABASE_URL"),
        description="SQLAlchemy URL; empty means a SQLite file in data_dir.",
    )
    broker_url: str = Field(
        "", description="Celery broker; empty means kombu's filesystem transport in data_dir."
    )
    job_queue: Queue = Field("cpu", description="Queue new jobs are sent to; compose sets 'gpu'.")
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1)
    model_dirs: list[Path] = Field(default_factory=list, description="Directories holding base models.")
    auto_migrate: bool = Field(
        True,
        description="Upgrade the schema at start-up (embedded); when false, refuse a schema behind head.",
    )
    retry_after_seconds: int = Field(
        5, ge=1, le=3600, description="Retry-After of a 503 while the database cannot be reached."
    )
    idempotency_ttl_seconds: int = Field(
        24 * 3600, ge=1, description="How long an Idempotency-Key is remembered with its first response."
    )
    validation_concurrency: int = Field(
        2,
        ge=1,
        description="File validations (POST /v1/jobs, dry runs included) one API process runs at once.",
    )
    validation_wait_seconds: float = Field(
        30.0, gt=0, description="How long a POST /v1/jobs waits for a validation slot before answering 503."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    api_processes: int = Field(
        1,
        ge=0,
        description="Server processes of `deltatune api` (0: one per CPU core); `serve` always runs one.",
    )
    api_key_cache_seconds: float = Field(
        10.0,
        ge=0,
        le=300,
        description="How long an API process trusts a key the database accepted (0: ask every request); "
        "a revoked key stops working at most this long after.",
    )
    api_database_connections: int = Field(
        10,
        ge=1,
        description="Database connections one API process keeps open, and reads it runs at once; as many "
        "again are opened for a burst of other requests and closed after.",
    )
    # Leases (worker/lifecycle.py, worker/sweep.py). A dead worker's job is queued again at most
    # lease_seconds + sweep_seconds after its last heartbeat.
    lease_seconds: float = Field(
        60.0, gt=0, description="How long a running attempt holds its job without renewing its lease."
    )
    heartbeat_seconds: float = Field(
        10.0,
        gt=0,
        description="How often a running attempt renews its lease and reads whether it was cancelled.",
    )
    sweep_seconds: float = Field(
        15.0, gt=0, description="How often each worker looks for expired leases and lost messages."
    )
    resend_after_seconds: float = Field(
        60.0, gt=0, description="A queued row's message is sent again after this long (doubling each time)."
    )
    database_outage_seconds: float = Field(
        120.0, gt=0, description="How long a running job retries the database before it fails."
    )
    storage_outage_seconds: float = Field(
        120.0, gt=0, description="How long a running job retries the object store before it fails."
    )
    resume_every_steps: int | None = Field(
        200, ge=1, description="A running job writes a resume point after every N steps (null: never)."
    )
    resume_every_seconds: float | None = Field(
        300.0, gt=0, description="... and when this long has passed since its last one (null: never)."
    )
    # The live event stream (GET /v1/jobs/{id}/events/stream, service/routes/event_stream.py).
    event_stream_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="How often an open event stream reads the database for new events."
    )
    event_stream_keep_alive_seconds: float = Field(
        15.0, gt=0, le=3600, description="An event stream with nothing to send sends a keep-alive this often."
    )
    max_event_streams_per_owner: int = Field(
        16, ge=1, description="Event streams one owner may hold open at once on one API process."
    )
    # The worker the dry run's estimate describes (tuning.estimate.Worker). Each worker measures its own
    # machine when it starts (tuning.machine, measure_worker below) and publishes the figures; the API
    # uses a figure set here only when the variable is given (service/worker_figures.py): for a queue
    # whose workers do not measure, or to overrule them. The defaults, used when no worker of the queue
    # published any, are one machine's: the project's 2-core CPU build machine (AVX512-BF16), measured
    # under load (about 5); another machine may be 10x off.
    worker_flops: float = Field(
        1.3e10,
        gt=0,
        description="Matmul FLOP/s a worker sustains in float32 (evaluations, float32 training).",
    )
    worker_bf16_flops: float = Field(
        2.2e10,
        ge=0,
        description="FLOP/s in bf16, what mixed_precision auto trains in; 0: no native bf16 (float32).",
    )
    worker_layer_seconds: float = Field(
        1.9e-3, ge=0, description="Fixed cost of one transformer layer's forward operations on one batch."
    )
    worker_branch_seconds: float = Field(
        2.8e-5,
        ge=0,
        description="Fixed cost of one low-rank branch's forward operations (LoRA) on one batch.",
    )
    worker_dropout_seconds: float = Field(
        1.2e-8,
        ge=0,
        description="What dropout adds to a LoRA branch per float32 input activation, forward and backward.",
    )
    worker_optimizer_parameters_per_second: float = Field(
        7.8e7, gt=0, description="AdamW updates (with gradient clipping) per second."
    )
    worker_exchange_bytes_per_second: float = Field(
        6.1e8,
        gt=0,
        description="Bytes per second a gradient all-reduce moves between two of a job's processes.",
    )
    worker_baseline_bytes: int = Field(
        474_460_160, ge=0, description="Resident memory of a CPU job's libraries before its model loads."
    )
    measure_worker: bool = Field(
        True,
        description="A worker measures its machine's figures when it starts, before it takes a job "
        "(cached per machine under data_dir, so a restart does not measure again), and publishes them for "
        "the dry run's estimate; false: it publishes none.",
    )
    worker_seen_seconds: float = Field(
        60.0,
        gt=0,
        description="The dry run uses the figures of workers seen this recently (a worker refreshes its "
        "own every sweep_seconds); longer than sweep_seconds.",
    )
    # Data-parallel jobs (resources.processes, tuning.launch): read by the API, which refuses a job
    # asking for more, and by the worker, which starts that many processes under torchrun.
    worker_max_processes_per_job: int | None = Field(
        None,
        ge=1,
        description="Processes (one device each) one job may ask for on a worker of job_queue's class. "
        "null: this machine's CPU count (a worker with CUDA: its GPU count); set it where the API runs "
        "on another machine than the workers.",
    )
    worker_process_restarts: int = Field(
        2,
        ge=0,
        le=10,
        description="How often a worker starts a job's processes again (a fresh torchrun) after one "
        "died; they resume from the latest resume point; then the attempt fails.",
    )
    worker_memory_bytes: int | None = Field(
        None,
        ge=1,
        description="Memory one job may use on a worker of job_queue's class (RAM on cpu, GPU memory on "
        "gpu); a job whose estimated peak is larger is refused with 422 (a dry run says so). null: no check.",
    )

    # Webhooks (core/webhook_urls.py, worker/webhook_sender.py). The default sends only to addresses
    # on the public internet, as GitLab and Gitea do: a self-hosted server sits beside services that
    # never meant to take a POST from whoever holds an API key.
    webhook_allowed_hosts: list[str] = Field(
        default_factory=lambda: ["external"],
        description="Where webhooks may go: 'external' (public addresses), 'loopback', 'private', "
        "'*' (anywhere), a CIDR such as '10.1.0.0/16', or a host name ('hooks.example.com', "
        "'*.example.com').",
    )
    webhook_retry_seconds: list[float] = Field(
        default_factory=lambda: [10.0, 30.0, 120.0, 600.0, 3600.0],
        description="A failed delivery is tried again after each of these delays in turn, then given up.",
    )
    webhook_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="How long one delivery attempt waits to connect, send and be answered.",
    )
    webhook_poll_seconds: float = Field(
        2.0, gt=0, description="How often each worker looks for webhook deliveries that are due."
    )

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> "Settings":
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be shorter than lease_seconds "
                f"({self.lease_seconds}), or every lease expires before it is renewed"
            )
        if self.worker_seen_seconds <= self.sweep_seconds:
            raise ValueError(
                f"worker_seen_seconds ({self.worker_seen_seconds}) must be longer than sweep_seconds "
                f"({self.sweep_seconds}), or a live worker's figures look stale between two sweeps"
            )
        check_host_entries(self.webhook_allowed_hosts)
        self._check_object_store()
        if len(self.webhook_retry_seconds) > MAX_WEBHOOK_RETRIES or any(
            delay < 0 for delay in self.webhook_retry_seconds
        ):
            raise ValueError(
                f"webhook_retry_seconds: at most {MAX_WEBHOOK_RETRIES} delays, none negative "
                f"(got {self.webhook_retry_seconds})"
            )
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'deltatune.db').resolve()}"
        elif self.database_url.startswith(("postgresql://", "postgres://")):
            # Plain URLs would pick psycopg2; deltatune ships psycopg 3.
            self.database_url = "postgresql+psycopg://" + self.database_url.split("://", 1)[1]
        if not self.broker_url:
            self.broker_url = "filesystem://"
        return self

    def _check_object_store(self) -> None:
        # An endpoint or keys without a bucket would quietly keep everything in this host's data_dir,
        # where the API or the other workers never find it.
        if self.s3_bucket:
            return
        given = [
            name
            for name in ("s3_endpoint_url", "s3_prefix", "s3_access_key_id", "s3_secret_access_key")
            if getattr(self, name)
        ]
        if given:
            raise ValueError(f"s3_bucket: required with {', '.join(given)} (DELTATUNE_S3_BUCKET is unset)")

    @property
    def max_processes_per_job(self) -> int:
        """What the API allows a job's resources.processes; a CUDA worker counts its GPUs instead
        (tuning.distribution.processes_offered), where the API, which loads no torch, cannot."""
        return self.worker_max_processes_per_job or len(os.sched_getaffinity(0))

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def checkpoints_dir(self) -> Path:
        """checkpoints/<job_id>/<checkpoint id>/: apart from artifacts/, which a job's publish replaces."""
        return self.data_dir / "checkpoints"

    @property
    def work_dir(self) -> Path:
        """Scratch space on the same filesystem as artifacts_dir, so publishing is one rename."""
        return self.data_dir / "work"

    @property
    def resume_dir(self) -> Path:
        """resume/<job_id>/step-<k>/: a job's latest resume point, kept across its attempts."""
        return self.data_dir / "resume"

    @property
    def machine_figures_dir(self) -> Path:
        """A worker's measured figures, one file per machine fingerprint (worker/machine_figures.py)."""
        return self.data_dir / "machine-figures"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")


@lru_cache
def get_settings() -> Settings:
    return Settings()


class ClientSettings(BaseSettings):
    """What the `deltatune` client commands read from the environment: where the server is and which
    key to send. Apart from `Settings` because a client runs without any server configuration (on
    another machine, say), and a server variable it has no use for must not stop it; kept here so
    that this module stays the only one that reads the environment."""

    model_config = SettingsConfigDict(env_prefix="DELTATUNE_", extra="ignore")

    url: str = Field("http://127.0.0.1:8000", description="The deltatune server's base URL.")
    api_key: str | None = Field(None, description="The key sent as `Authorization: Bearer <key>`.")
    data_dir: Path = Field(
        Path(".deltatune"), description="The embedded default's data dir, where `serve` saves its key."
    )
