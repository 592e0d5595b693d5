"""/v1/webhooks: register endpoints that get a signed POST when a job ends, the signing secret, and
the deliveries with each attempt's outcome."""

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from core.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from core.settings import Settings
from service.crud import jobs as job_crud
from service.crud import webhooks as crud
from service.deps import CurrentOwner, SessionDep, SettingsDep
from service.errors import ApiError, Conflict, NotFound
from service.schemas.common import error_responses, optional_unix_seconds, unix_seconds
from service.schemas.webhooks import (
    WebhookAttemptObject,
    WebhookDeliveryList,
    WebhookDeliveryObject,
    WebhookEndpointCreate,
    WebhookEndpointDeleted,
    WebhookEndpointList,
    WebhookEndpointObject,
    WebhookSecretObject,
)
from service.webhook_urls import checked_webhook_url

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=error_responses(401, 422, 500, 503))

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
# Each job's end fans out to every endpoint: a bound keeps one owner from making a sender's day.
MAX_ENDPOINTS = 10


def endpoint_object(endpoint: WebhookEndpoint, secret: str | None = None) -> WebhookEndpointObject:
    return WebhookEndpointObject(
        id=endpoint.id, url=endpoint.url, created_at=unix_seconds(endpoint.created_at), secret=secret
    )


def delivery_object(delivery: WebhookDelivery, settings: Settings) -> WebhookDeliveryObject:
    return WebhookDeliveryObject(
        id=delivery.id,
        event=delivery.event,
        job_id=delivery.job_id,
        endpoint_id=delivery.endpoint_id,
        url=delivery.url,
        status=WebhookDeliveryStatus(delivery.status),
        attempts=delivery.attempts,
        max_attempts=1 + len(settings.webhook_retry_seconds),
        next_attempt_at=optional_unix_seconds(delivery.next_attempt_at)
        if delivery.status == "pending"
        else None,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=unix_seconds(delivery.created_at),
        delivered_at=optional_unix_seconds(delivery.delivered_at),
        attempt_log=[WebhookAttemptObject.model_validate(entry) for entry in delivery.log or []],
    )


def owned_endpoint(session: Session, owner_id: str, webhook_id: str) -> WebhookEndpoint:
    endpoint = crud.get_endpoint(session, owner_id=owner_id, endpoint_id=webhook_id)
    if endpoint is None:
        raise NotFound(
            f"no webhook endpoint with id {webhook_id!r}", param="webhook_id", code="webhook_not_found"
        )
    return endpoint


@router.post("", status_code=201, responses=error_responses(400, 409, 413, 415))
def create_endpoint(
    body: WebhookEndpointCreate, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> WebhookEndpointObject:
    """Register a URL that gets a signed POST whenever one of your jobs ends; your first one also
    creates your signing secret, shown this once."""
    url = checked_webhook_url(settings, body.url, param="url")
    if crud.endpoint_with_url(session, owner_id=owner.id, url=url) is not None:
        raise Conflict(
            f"url: an endpoint with URL {url!r} is already registered", param="url", code="webhook_exists"
        )
    if crud.count_endpoints(session, owner_id=owner.id) >= MAX_ENDPOINTS:
        raise Conflict(
            f"at most {MAX_ENDPOINTS} webhook endpoints per owner; delete one first", code="too_many_webhooks"
        )
    secret = None
    if crud.get_secret(session, owner_id=owner.id) is None:
        secret = crud.replace_secret(session, owner_id=owner.id).secret
    endpoint = crud.create_endpoint(session, owner_id=owner.id, url=url)
    session.commit()
    return endpoint_object(endpoint, secret)


@router.get("", responses=error_responses(400))
def list_endpoints(
    owner: CurrentOwner,
    session: SessionDep,
    limit: Limit = 20,
    after: Annotated[str | None, Query(description="The last endpoint id of the previous page.")] = None,
) -> WebhookEndpointList:
    """List your webhook endpoints, newest first."""
    cursor = None
    if after is not None:
        cursor = crud.get_endpoint(session, owner_id=owner.id, endpoint_id=after)
        if cursor is None:
            raise ApiError(
                f"after: no webhook endpoint with id {after!r}", param="after", code="invalid_cursor"
            )
    endpoints, has_more = crud.list_endpoints(session, owner_id=owner.id, limit=limit, after=cursor)
    return WebhookEndpointList(data=[endpoint_object(e) for e in endpoints], has_more=has_more)


@router.post("/secret", status_code=201, responses=error_responses(413))
def rotate_secret(owner: CurrentOwner, session: SessionDep) -> WebhookSecretObject:
    """Create your signing secret, or replace it: deliveries from now on, retries included, are
    signed with the new one only. Shown this once."""
    row = crud.replace_secret(session, owner_id=owner.id)
    session.commit()
    return WebhookSecretObject(secret=row.secret, created_at=unix_seconds(row.created_at))


@router.get("/deliveries", responses=error_responses(400, 404))
def list_deliveries(
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    limit: Limit = 20,
    after: Annotated[str | None, Query(description="The last delivery id of the previous page.")] = None,
    job_id: Annotated[str | None, Query(description="Only this job's deliveries.")] = None,
) -> WebhookDeliveryList:
    """List your webhook deliveries, newest first: event, URL, status, attempts and the last outcome."""
    if job_id is not None and job_crud.get_job(session, owner_id=owner.id, job_id=job_id) is None:
        raise NotFound(f"no job with id {job_id!r}", param="job_id", code="job_not_found")
    cursor = None
    if after is not None:
        cursor = crud.get_delivery(session, owner_id=owner.id, delivery_id=after)
        if cursor is None:
            raise ApiError(f"after: no delivery with id {after!r}", param="after", code="invalid_cursor")
    deliveries, has_more = crud.list_deliveries(
        session, owner_id=owner.id, limit=limit, after=cursor, job_id=job_id
    )
    return WebhookDeliveryList(data=[delivery_object(d, settings) for d in deliveries], has_more=has_more)


@router.get("/deliveries/{delivery_id}", responses=error_responses(404))
def get_delivery(
    delivery_id: str, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> WebhookDeliveryObject:
    """Get one delivery, with every attempt's status code or error."""
    delivery = crud.get_delivery(session, owner_id=owner.id, delivery_id=delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery with id {delivery_id!r}", param="delivery_id", code="delivery_not_found")
    return delivery_object(delivery, settings)


@router.get("/{webhook_id}", responses=error_responses(404))
def get_endpoint(webhook_id: str, owner: CurrentOwner, session: SessionDep) -> WebhookEndpointObject:
    """Get a webhook endpoint."""
    return endpoint_object(owned_endpoint(session, owner.id, webhook_id))


@router.delete("/{webhook_id}", responses=error_responses(404))
def delete_endpoint(webhook_id: str, owner: CurrentOwner, session: SessionDep) -> WebhookEndpointDeleted:
    """Delete a webhook endpoint; its deliveries still pending are given up."""
    endpoint = owned_endpoint(session, owner.id, webhook_id)
    crud.delete_endpoint(session, endpoint=endpoint)
    session.commit()
    return WebhookEndpointDeleted(id=webhook_id, deleted=True)
