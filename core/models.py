"""SQL tables: owners, API keys, files, jobs, events, artifacts, checkpoints, transferability runs,
idempotency keys, webhooks (secrets, endpoints, deliveries) and the workers' measured figures.

Every file, job, event and artifact query is scoped to an owner. Schema changes go through Alembic
(`migrations/`), never create_all outside throwaway test databases.
"""

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class JobStatus(StrEnum):
    """A job's status: OpenAI's fine-tuning names, shared by the API and the workers."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # deltatune's own: stopped at a step boundary with a resume point, until a client resumes it.
    PAUSED = "paused"


# A cancel can still stop these before the job ever runs.
NOT_STARTED = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED)
# Not running and not finished: a cancel ends these at once.
CANCELLABLE_AT_ONCE = (*NOT_STARTED, JobStatus.PAUSED)
# Not finished yet: may still be cancelled, and may still read their files (a paused one its resume point).
ACTIVE = (*NOT_STARTED, JobStatus.RUNNING, JobStatus.PAUSED)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


JOB_ID_PREFIX = "ftjob-"  # a base_model naming a finished job starts so
# The longest chain of jobs built on jobs followed; create_job cannot make a loop, this guards the rows.
MAX_JOB_CHAIN = 32


def is_job_id(name: str) -> bool:
    return name.startswith(JOB_ID_PREFIX)


# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
AUTOINCREMENT_ID = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Owner(Base):
    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("owner"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """Only the SHA-256 of a key is stored; `prefix` lets a person tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("key"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class File(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("file"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    # processed: validated and stored; error: refused, with status_details naming the line.
    status: Mapped[str] = mapped_column(String(16))
    status_details: Mapped[str | None] = mapped_column(Text, default=None)
    examples: Mapped[int | None] = mapped_column(Integer, default=None)
    # A processed file's data format (tuning.spec.DataFormat), detected from its lines.
    format: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id(JOB_ID_PREFIX[:-1]))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)  # a JobStatus
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    base_model: Mapped[str] = mapped_column(String(512))
    method: Mapped[str] = mapped_column(String(64))
    training_file_id: Mapped[str] = mapped_column(ForeignKey("files.id"))
    validation_file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id"), default=None)
    queue: Mapped[str] = mapped_column(String(32))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # Asked of a running job: its worker keeps a resume point at the next step boundary and stops, paused.
    pause_requested: Mapped[bool] = mapped_column(default=False)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    examples_seen: Mapped[int] = mapped_column(BigInteger, default=0)
    trained_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # When the running attempt expects its last step, from its rate so far (worker/progress.py).
    estimated_finish_at: Mapped[datetime | None] = mapped_column(default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The validating_files report (tuning.validation), made with the base model's tokenizer at POST.
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    error_param: Mapped[str | None] = mapped_column(String(255), default=None)
    worker: Mapped[str | None] = mapped_column(String(255), default=None)  # the last claimer, for display
    # The lease (worker/lifecycle.py): each claim increments `attempt`, the fencing token every write of
    # that attempt is conditional on; `lease_expires_at` is set while running and renewed by heartbeats.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    # When its run message was last sent, and how many times it was re-sent (the sweep's backoff).
    dispatched_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    dispatches: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # Where this job's own webhook goes when it ends (beside its owner's endpoints); not in the spec,
    # which says how to train and is copied into every artifact's manifest.
    webhook_url: Mapped[str | None] = mapped_column(String(2048), default=None)


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(AUTOINCREMENT_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    # message | metrics | eval | status
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Artifact(Base):
    """One published file of a job; the bytes live under core.storage.keys.artifact_prefix(job, attempt)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[int] = mapped_column(AUTOINCREMENT_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """One kept checkpoint of a job; its files live under core.storage.keys.checkpoint_prefix(job, id)."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("ckpt"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"name", "bytes", "sha256"}] of the checkpoint's artifact files.
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TransferabilityRun(Base):
    """Scoring candidate base models on a training file before any fine-tuning (POST /v1/transferability).

    `request` keeps what the client asked (training_file, base_models, task, max_examples); `results`
    holds one score per candidate, best first, once a worker has run it. Statuses are JobStatus's
    queued, running, succeeded and failed.
    """

    __tablename__ = "transferability_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("tfrun"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(32))
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    worker: Mapped[str | None] = mapped_column(String(255), default=None)  # the last claimer, for display
    # The lease (worker/lifecycle.py): each claim increments `attempt`, the fencing token every write of
    # that attempt is conditional on; `lease_expires_at` is set while running and renewed by heartbeats.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    # When its run message was last sent, and how many times it was re-sent (the sweep's backoff).
    dispatched_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    dispatches: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class IdempotencyKey(Base):
    """A client's Idempotency-Key on a creating route, with the first response it got (see
    service/idempotency.py). `response_status` is None while that first request is still running."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("owner_id", "route", "key"),)

    id: Mapped[int] = mapped_column(AUTOINCREMENT_ID, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    route: Mapped[str] = mapped_column(String(64))  # "POST /v1/jobs"
    key: Mapped[str] = mapped_column(String(255))
    # sha256 of the method, the path and the body (for an upload: its file's bytes and form fields).
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WebhookDeliveryStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at
    DELIVERED = "delivered"  # a 2xx answered
    FAILED = "failed"  # every attempt failed, or its endpoint was deleted


class WebhookSecret(Base):
    """An owner's webhook signing secret (`whsec_...`, core/webhook_signing.py). Kept as it is, unlike
    an API key's hash: the sender needs the secret itself to sign. Shown to its owner once."""

    __tablename__ = "webhook_secrets"

    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEndpoint(Base):
    """A URL an owner registered: every one of its jobs that ends is POSTed there."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("whep"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WebhookDelivery(Base):
    """One event on its way to one URL: the outbox row, written in the transaction that ended the job.

    `id` is the `webhook-id` header and the body's `id`, the same on every attempt; `body` is the exact
    JSON sent each time. `attempts` counts the attempts begun; a sender claims the next one by raising
    it conditionally, which fences the attempt's outcome as a job's attempt number does.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("msg"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    # None: the job's own webhook_url.
    endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="SET NULL"), default=None
    )
    event: Mapped[str] = mapped_column(String(64))  # fine_tuning.job.succeeded | failed | cancelled
    url: Mapped[str] = mapped_column(String(2048))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=WebhookDeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # One entry per attempt: {"attempt", "at", "status_code", "error", "seconds"}.
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class WorkerFigures(Base):
    """What a worker measured on its machine when it started (tuning.estimate.Worker's figures), for the
    dry run's estimate of jobs on its queues; `seen_at` is refreshed every sweep while it runs, so a
    worker that stopped drops out (service/worker_figures.py). One row per worker hostname."""

    __tablename__ = "worker_figures"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)  # Celery's, e.g. w1@host
    queues: Mapped[str] = mapped_column(String(255))  # the queues it consumes, comma-separated
    device: Mapped[str] = mapped_column(String(8))  # cpu | cuda
    float32_flops: Mapped[float] = mapped_column(Float)
    bf16_flops: Mapped[float] = mapped_column(Float)
    layer_seconds: Mapped[float] = mapped_column(Float)
    branch_seconds: Mapped[float] = mapped_column(Float)
    dropout_seconds: Mapped[float] = mapped_column(Float)
    optimizer_parameters_per_second: Mapped[float] = mapped_column(Float)
    # inf on a machine with one GPU: a job there exchanges no gradients.
    exchange_bytes_per_second: Mapped[float] = mapped_column(Float)
    baseline_bytes: Mapped[int] = mapped_column(BigInteger)
    measured_at: Mapped[datetime] = mapped_column()
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
