"""Webhook URLs: what one may look like (`parse_webhook_url`), and where a delivery may go (`HostPolicy`).

A self-hosted server that POSTs to any URL a client names is a way into the network it sits in
(server-side request forgery), so the addresses it sends to are a setting, `webhook_allowed_hosts`:
by default only addresses on the public internet. A URL is checked twice, because a name can
change its address after it was registered (DNS rebinding):

- when it is named (the API): its shape, and a literal address or `localhost` must be allowed;
- at every attempt (the sender): the host is resolved, every address it resolves to must be allowed,
  and the connection goes to an address that was checked, never to the result of a second lookup.
"""

import fnmatch
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
# What an entry of webhook_allowed_hosts may name besides a CIDR or a host name.
KINDS = ("external", "loopback", "private")
ANYWHERE = "*"
# RFC 6598 shared address space (carrier-grade NAT): neither private nor global to Python, private to us.
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$")
NAME_PATTERN = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IpAddress]]


class WebhookUrlError(ValueError):
    """Why a URL cannot take webhooks, in words a client can act on."""


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    scheme: str  # http | https
    host: str  # lower case, an IPv6 literal without its brackets
    port: int

    @property
    def address(self) -> IpAddress | None:
        """The host as an address, when the URL names one literally: also in the forms the C resolver
        reads as one (`127.1`, `2130706433`, `0x7f000001`), which are a way around a check of the
        dotted form only."""
        literal = _address(self.host)
        if literal is not None or not re.fullmatch(r"[0-9a-fx.]+", self.host):
            return literal
        try:
            return ipaddress.IPv4Address(socket.inet_aton(self.host))
        except OSError:
            return None


def parse_webhook_url(url: str) -> WebhookTarget:
    """The URL's parts, or WebhookUrlError saying what is wrong with it."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlError(f"must be at most {MAX_URL_LENGTH} characters long (got {len(url)})")
    if not url.isascii():
        raise WebhookUrlError(
            "must be ASCII: percent-encode the path, and write an international domain name in its xn-- form"
        )
    if any(char.isspace() or not char.isprintable() for char in url):
        raise WebhookUrlError("must not contain spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookUrlError(
            f"must be an http or https URL, not {scheme + ':' if scheme else 'one without a scheme'}"
        )
    if "@" in parts.netloc:
        raise WebhookUrlError(
            "must not carry a user name or password: each delivery is authenticated by its signature"
        )
    host = parts.hostname or ""
    if not host:
        raise WebhookUrlError("has no host")
    literal = _address(host)
    if literal is None and not HOST_NAME.match(host):
        raise WebhookUrlError(f"has an invalid host {host!r}")
    try:
        port = parts.port
    except ValueError:
        raise WebhookUrlError("has an invalid port (a number from 1 to 65535)") from None
    if port == 0:
        raise WebhookUrlError("has an invalid port (a number from 1 to 65535)")
    if parts.fragment or url.endswith("#"):
        raise WebhookUrlError("must not have a fragment (#...): it is never sent")
    return WebhookTarget(url=url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80))


def address_kind(address: IpAddress) -> str:
    """external | loopback | private | link-local | reserved: what the address reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified:  # 0.0.0.0 and :: reach this host on Linux
        return "loopback"
    if address.is_link_local:  # cloud metadata (169.254.169.254) lives here
        return "link-local"
    if address.is_multicast:
        return "reserved"
    if address in SHARED_ADDRESS_SPACE or address.is_private:
        return "private"
    if address.is_global:
        return "external"
    return "reserved"


@dataclass(frozen=True)
class HostPolicy:
    """webhook_allowed_hosts, parsed: kinds of address, networks, and host names allowed."""

    kinds: frozenset[str]
    networks: tuple[IpNetwork, ...]
    names: tuple[str, ...]  # exact names, or "*.example.com" for any name below example.com

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> "HostPolicy":
        kinds: set[str] = set()
        networks: list[IpNetwork] = []
        names: list[str] = []
        for raw in entries:
            entry = raw.strip().lower()
            if entry in (*KINDS, ANYWHERE):
                kinds.add(entry)
            elif "/" in entry or _address(entry) is not None:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"webhook_allowed_hosts: {raw!r} is not a valid network") from None
            elif NAME_PATTERN.match(entry):
                names.append(entry.rstrip("."))
            else:
                raise ValueError(
                    f"webhook_allowed_hosts: {raw!r} is none of {', '.join(KINDS)}, '*', "
                    "a CIDR or a host name"
                )
        return cls(frozenset(kinds), tuple(networks), tuple(names))

    def allows_name(self, host: str) -> bool:
        """Whether the host is allowed by name, whatever it resolves to."""
        host = host.rstrip(".")
        return ANYWHERE in self.kinds or any(fnmatch.fnmatchcase(host, name) for name in self.names)

    def allows_address(self, address: IpAddress) -> bool:
        if ANYWHERE in self.kinds or address_kind(address) in self.kinds:
            return True
        return any(address.version == network.version and address in network for network in self.networks)

    def check_named(self, target: WebhookTarget) -> None:
        """The check when a client names a URL: a literal address, or localhost, must be allowed. A
        name is not resolved here (the sender checks what it resolves to at every attempt)."""
        if self.allows_name(target.host):
            return
        address = target.address
        if address is None and (target.host.rstrip(".") == "localhost" or target.host.endswith(".localhost")):
            address = ipaddress.ip_address("127.0.0.1")
        if address is not None and not self.allows_address(address):
            raise _refused(target.host, address)

    def addresses(self, target: WebhookTarget, resolve: Resolver | None = None) -> list[IpAddress]:
        """Where an attempt may connect: every address the host resolves to, each of them allowed;
        WebhookUrlError when it resolves to none, or to one that is not allowed."""
        literal = target.address
        found = [literal] if literal is not None else (resolve or resolve_host)(target.host, target.port)
        if not found:
            raise WebhookUrlError(f"{target.host} resolves to no address")
        if not self.allows_name(target.host):
            for address in found:
                if not self.allows_address(address):
                    raise _refused(target.host, address)
        return found


def check_host_entries(entries: Sequence[str]) -> None:
    """ValueError naming a webhook_allowed_hosts entry that means nothing (a typo fails at start)."""
    HostPolicy.from_entries(entries)


def resolve_host(host: str, port: int) -> list[IpAddress]:
    """The addresses `host` resolves to, in the resolver's order; WebhookUrlError if it does not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise WebhookUrlError(f"{host} could not be resolved: {error}") from None
    found: list[IpAddress] = []
    for info in infos:
        address = _address(str(info[4][0]).split("%", 1)[0])
        if address is not None and address not in found:
            found.append(address)
    return found


def _address(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _refused(host: str, address: IpAddress) -> WebhookUrlError:
    where = host if str(address) == host else f"{host} ({address})"
    return WebhookUrlError(
        f"{where} is a {address_kind(address)} address, which this server does not send webhooks to "
        "(its setting webhook_allowed_hosts says where they may go)"
    )
