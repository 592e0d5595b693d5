"""One webhook POST, to an address that was checked: what the receiver answered, or why nothing did.

The connection goes to the address `HostPolicy.addresses` allowed, never to a second lookup of the
name (which could answer another address: DNS rebinding), while the Host header and TLS's server
name stay the URL's, so certificates are checked against the name as usual. Redirects are not
followed (a redirect could point anywhere): a 3xx is a failed attempt. Only the status code is
kept; the response body is read (a little, so the receiver is not cut off) and dropped, never shown
to a client, so a webhook cannot be used to read a page of the server's network.
"""

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.webhook_urls import IpAddress, WebhookTarget

USER_AGENT = "deltatune-webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    seconds: float

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: IpAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = str(address)

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: IpAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = str(address)

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def post(
    target: WebhookTarget,
    addresses: list[IpAddress],
    headers: dict[str, str],
    body: bytes,
    *,
    timeout: float,
) -> Outcome:
    """POST `body` to the first of `addresses` that accepts a connection; `timeout` bounds each step
    (connect, send, each read)."""
    started = time.monotonic()
    parts = urlsplit(target.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    error = "no address to connect to"
    for address in addresses:
        kind = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        connection = kind(target.host, target.port, address, timeout)
        try:
            try:
                connection.connect()
            except OSError as failure:
                error = f"could not connect to {address} port {target.port}: {_reason(failure, timeout)}"
                continue  # the next address may answer
            connection.request("POST", path, body=body, headers={"user-agent": USER_AGENT, **headers})
            response = connection.getresponse()
            response.read(MAX_RESPONSE_BYTES)
            return Outcome(response.status, _status_error(response.status), time.monotonic() - started)
        except (OSError, http.client.HTTPException) as failure:
            return Outcome(None, _reason(failure, timeout), time.monotonic() - started)
        finally:
            connection.close()
    return Outcome(None, error, time.monotonic() - started)


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed; register the URL it redirects to"
    return f"HTTP {status}"


def _reason(failure: BaseException, timeout: float) -> str:
    if isinstance(failure, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g}s"
    if isinstance(failure, ConnectionRefusedError):
        return "connection refused"
    if isinstance(failure, ssl.SSLError):
        return f"TLS failed: {failure.reason or failure}"
    if isinstance(failure, http.client.HTTPException):
        return f"not an HTTP answer: {type(failure).__name__}"
    return f"{type(failure).__name__}: {failure}"
