"""API keys: `Authorization: Bearer <key>`, each key belonging to an owner.

Only the SHA-256 hex of a key is stored, so a leaked database yields no usable key; the plaintext
is shown once, when `create_api_key` returns it. Keys are long random strings, so an unsalted fast
hash is enough: there is nothing to brute-force the way there is with passwords.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.models import ApiKey, Owner, utcnow
from service.key_cache import AuthenticatedOwner

KEY_PREFIX = "dt-"
# What `list_api_keys` shows so a person can tell keys apart: "dt-" and 8 characters of the key.
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 8


@dataclass(frozen=True)
class ApiKeyInfo:
    id: str
    owner_name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, *, owner_name: str) -> str:
    """A new key for `owner_name` (created if new), committed; returns the plaintext, shown once."""
    owner = session.scalar(select(Owner).where(Owner.name == owner_name))
    if owner is None:
        owner = Owner(name=owner_name)
        session.add(owner)
        session.flush()
    key = KEY_PREFIX + secrets.token_urlsafe(24)  # 24 random bytes → 32 url-safe characters
    session.add(ApiKey(owner_id=owner.id, prefix=key[:SHOWN_PREFIX_LENGTH], key_hash=hash_api_key(key)))
    session.commit()
    return key


def list_api_keys(session: Session) -> list[ApiKeyInfo]:
    """Every key, oldest first, without anything that could authenticate."""
    rows = session.execute(
        select(ApiKey, Owner.name).join(Owner, ApiKey.owner_id == Owner.id).order_by(ApiKey.created_at)
    )
    return [
        ApiKeyInfo(key.id, owner_name, key.prefix, key.created_at, key.revoked_at) for key, owner_name in rows
    ]


def revoke_api_key(session: Session, *, key_id: str) -> bool:
    """Revoke a key by its id (committed); False when no active key has that id."""
    result = session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def owner_for_key(session: Session, key: str) -> AuthenticatedOwner | None:
    """The owner of an active key, or None for an unknown or revoked one."""
    return owner_for_key_hash(session, hash_api_key(key))


def owner_for_key_hash(session: Session, key_hash: str) -> AuthenticatedOwner | None:
    """The owner of the active key with this SHA-256, or None: one query, for two columns."""
    row = session.execute(
        select(Owner.id, Owner.name)
        .join(ApiKey, ApiKey.owner_id == Owner.id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    ).first()
    return None if row is None else AuthenticatedOwner(id=row.id, name=row.name)
