"""Webhook endpoints, an owner's signing secret, and the deliveries behind /v1/webhooks."""

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint, WebhookSecret, utcnow
from core.webhook_signing import new_secret
from service.crud import storable
from service.crud.pages import newest_first_page


def get_secret(session: Session, *, owner_id: str) -> WebhookSecret | None:
    return session.get(WebhookSecret, owner_id)


def replace_secret(session: Session, *, owner_id: str) -> WebhookSecret:
    """A new signing secret for the owner (the old one, if any, stops signing at once); not committed."""
    row = session.get(WebhookSecret, owner_id)
    if row is None:
        row = WebhookSecret(owner_id=owner_id, secret=new_secret())
        session.add(row)
    else:
        row.secret, row.created_at = new_secret(), utcnow()
    session.flush()
    return row


def count_endpoints(session: Session, *, owner_id: str) -> int:
    query = select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.owner_id == owner_id)
    return int(session.scalar(query) or 0)


def endpoint_with_url(session: Session, *, owner_id: str, url: str) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(WebhookEndpoint.owner_id == owner_id, WebhookEndpoint.url == url)
    return session.scalars(query.limit(1)).first()


def create_endpoint(session: Session, *, owner_id: str, url: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(owner_id=owner_id, url=url)
    session.add(endpoint)
    session.flush()
    return endpoint


def get_endpoint(session: Session, *, owner_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    if not storable(endpoint_id):
        return None
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.owner_id == owner_id
    )
    return session.scalar(query)


def list_endpoints(
    session: Session, *, owner_id: str, limit: int, after: WebhookEndpoint | None = None
) -> tuple[list[WebhookEndpoint], bool]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.owner_id == owner_id)
    return newest_first_page(session, query, WebhookEndpoint, limit=limit, after=after)


def delete_endpoint(session: Session, *, endpoint: WebhookEndpoint) -> None:
    """Delete it, and give up its deliveries still pending: nothing more goes to a deleted endpoint."""
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.status == WebhookDeliveryStatus.PENDING,
        )
        .values(
            status=WebhookDeliveryStatus.FAILED, next_attempt_at=None, last_error="the endpoint was deleted"
        )
    )
    session.delete(endpoint)


def get_delivery(session: Session, *, owner_id: str, delivery_id: str) -> WebhookDelivery | None:
    if not storable(delivery_id):
        return None
    query = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.owner_id == owner_id
    )
    return session.scalar(query)


def list_deliveries(
    session: Session,
    *,
    owner_id: str,
    limit: int,
    after: WebhookDelivery | None = None,
    job_id: str | None = None,
) -> tuple[list[WebhookDelivery], bool]:
    query = select(WebhookDelivery).where(WebhookDelivery.owner_id == owner_id)
    if job_id is not None:
        query = query.where(WebhookDelivery.job_id == job_id)
    return newest_first_page(session, query, WebhookDelivery, limit=limit, after=after)
