"""Signing webhooks the Standard Webhooks way (standardwebhooks.com), as OpenAI's webhooks are signed.

Each delivery carries three headers: `webhook-id` (the delivery's id, the same on every retry, so a
receiver can drop a duplicate), `webhook-timestamp` (unix seconds of this attempt, so a receiver can
refuse a replayed old one) and `webhook-signature`: `v1,` and the base64 HMAC-SHA256, keyed with the
secret's decoded bytes, of `{id}.{timestamp}.{body}`. A secret is `whsec_` and 32 random bytes in
base64, the form the Standard Webhooks libraries take as it is.
"""

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt to deliver `body`."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
