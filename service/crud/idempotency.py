"""Idempotency-key rows: reserve one, find one, purge the expired (plain queries, no HTTP)."""

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.models import IdempotencyKey


def reserve_key(
    session: Session, *, owner_id: str, route: str, key: str, request_hash: str, now: datetime
) -> IdempotencyKey | None:
    """INSERT and COMMIT the key as in flight; None when the owner already holds it on this route.

    The unique constraint decides between racing requests: on PostgreSQL the second INSERT waits for
    the first to commit, then fails, so exactly one request owns a key.
    """
    row = IdempotencyKey(owner_id=owner_id, route=route, key=key, request_hash=request_hash, created_at=now)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return row


def get_key(session: Session, *, owner_id: str, route: str, key: str) -> IdempotencyKey | None:
    return session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.owner_id == owner_id, IdempotencyKey.route == route, IdempotencyKey.key == key
        )
    )


def has_response(session: Session, *, key_id: int) -> bool:
    """Whether the key's response was committed (read afresh from the database)."""
    status = session.scalar(select(IdempotencyKey.response_status).where(IdempotencyKey.id == key_id))
    return status is not None


def delete_key(session: Session, *, key_id: int) -> None:
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == key_id))
    session.commit()


def purge_expired(session: Session, *, before: datetime) -> None:
    """Delete every key created before `before`, of any owner (the created_at index makes it cheap)."""
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before))
    session.commit()
