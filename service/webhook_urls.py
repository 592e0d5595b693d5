"""The API's side of core.webhook_urls: a URL a client names, checked, or a 400 naming its field."""

from core.settings import Settings
from core.webhook_urls import HostPolicy, WebhookUrlError, parse_webhook_url
from service.errors import ApiError


def checked_webhook_url(settings: Settings, url: str, *, param: str) -> str:
    """`url` if webhooks may go there (its shape, and a literal address or localhost allowed by
    webhook_allowed_hosts); the sender checks what a name resolves to at every attempt."""
    try:
        target = parse_webhook_url(url)
        HostPolicy.from_entries(settings.webhook_allowed_hosts).check_named(target)
    except WebhookUrlError as error:
        raise ApiError(f"{param}: {error}", param=param, code="invalid_webhook_url") from None
    return url
