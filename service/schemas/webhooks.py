"""Bodies of /v1/webhooks: endpoints, the signing secret, and deliveries with their attempts."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.models import WebhookDeliveryStatus
from core.webhook_urls import MAX_URL_LENGTH

SECRET_DESCRIPTION = (
    "The Standard Webhooks signing secret (`whsec_...`) of all your deliveries. Shown only in the "
    "response that creates it: keep it."
)


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description=f"An http or https URL of at most {MAX_URL_LENGTH} characters.")


class WebhookEndpointObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    created_at: int
    secret: str | None = Field(
        None, description=SECRET_DESCRIPTION + " Set when this endpoint was your first, else null."
    )


class WebhookEndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookEndpointObject]
    has_more: bool


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool


class WebhookSecretObject(BaseModel):
    object: Literal["webhook_secret"] = "webhook_secret"
    secret: str = Field(description=SECRET_DESCRIPTION)
    created_at: int


class WebhookAttemptObject(BaseModel):
    attempt: int
    at: float = Field(description="Unix seconds when its outcome was recorded.")
    status_code: int | None = Field(description="The receiver's HTTP status; null when none answered.")
    error: str | None = Field(description="Why the attempt failed; null when it was delivered.")
    seconds: float


class WebhookDeliveryObject(BaseModel):
    id: str = Field(description="The `webhook-id` header and the body's `id`, the same on every attempt.")
    object: Literal["webhook_delivery"] = "webhook_delivery"
    event: str = Field(
        description="fine_tuning.job.succeeded | fine_tuning.job.failed | fine_tuning.job.cancelled"
    )
    job_id: str
    endpoint_id: str | None = Field(
        description="The endpoint it goes to; null for the job's own webhook_url."
    )
    url: str
    status: WebhookDeliveryStatus
    attempts: int
    max_attempts: int
    next_attempt_at: int | None = Field(description="When a pending delivery is tried next (unix seconds).")
    last_status_code: int | None
    last_error: str | None
    created_at: int
    delivered_at: int | None
    attempt_log: list[WebhookAttemptObject]


class WebhookDeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookDeliveryObject]
    has_more: bool
