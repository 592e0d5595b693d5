"""Where webhooks may go: the kinds of address, and webhook_allowed_hosts' entries, checked directly."""

import ipaddress

import pytest

from core.webhook_urls import HostPolicy, WebhookUrlError, address_kind, parse_webhook_url


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", "external"),
        ("2606:4700::1111", "external"),
        ("127.0.0.1", "loopback"),
        ("127.5.6.7", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "loopback"),  # connecting to it reaches this host
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "private"),
        ("fd12::1", "private"),
        ("224.0.0.1", "reserved"),
        ("240.0.0.1", "private"),  # Python counts 240/4 as private; either way not external
    ],
)
def test_address_kinds(address: str, kind: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    ("entries", "allowed", "refused"),
    [
        (["external"], "https://93.184.215.14/", "http://127.0.0.1/"),
        (["loopback"], "http://127.0.0.1:9/hook", "http://10.0.0.5/hook"),
        (["private"], "http://10.0.0.5/hook", "http://127.0.0.1:9/hook"),
        (["private"], "http://192.168.1.1/", "http://169.254.169.254/"),
        (["192.168.7.0/24"], "http://192.168.7.20/hook", "http://192.168.8.1/hook"),
        (["169.254.169.254/32"], "http://169.254.169.254/", "http://169.254.169.253/"),
        (["hooks.internal", "*.corp.example"], "http://a.corp.example/hook", "http://localhost/"),
        (["hooks.internal"], "http://hooks.internal/hook", "http://[::1]/"),
        (["*"], "http://169.254.169.254/", None),
    ],
)
def test_what_an_entry_opens(entries: list[str], allowed: str, refused: str | None) -> None:
    policy = HostPolicy.from_entries(entries)
    policy.check_named(parse_webhook_url(allowed))
    if refused is not None:
        with pytest.raises(WebhookUrlError, match="webhook_allowed_hosts"):
            policy.check_named(parse_webhook_url(refused))


def test_a_name_is_checked_by_what_it_resolves_to() -> None:
    """DNS rebinding: a public-looking name that resolves inside the network is refused at send time,
    unless the name itself is allowed."""
    target = parse_webhook_url("https://rebind.example.com/hook")
    inside = lambda host, port: [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("10.0.0.1")]  # noqa: E731
    HostPolicy.from_entries(["external"]).check_named(target)  # not resolved when named
    with pytest.raises(WebhookUrlError, match=r"rebind.example.com \(10.0.0.1\) is a private address"):
        HostPolicy.from_entries(["external"]).addresses(target, inside)
    assert len(HostPolicy.from_entries(["rebind.example.com"]).addresses(target, inside)) == 2
    with pytest.raises(WebhookUrlError, match="resolves to no address"):
        HostPolicy.from_entries(["*"]).addresses(target, lambda host, port: [])


def test_a_literal_address_is_never_resolved() -> None:
    def fail(host: str, port: int) -> list[ipaddress.IPv4Address]:
        raise AssertionError("resolved")

    target = parse_webhook_url("http://127.1:8080/x")
    assert target.port == 8080 and str(target.address) == "127.0.0.1"
    assert HostPolicy.from_entries(["loopback"]).addresses(target, fail) == [
        ipaddress.ip_address("127.0.0.1")
    ]


def test_default_ports() -> None:
    assert parse_webhook_url("https://example.com").port == 443
    assert parse_webhook_url("HTTP://Example.COM/a?b=c").port == 80
    assert parse_webhook_url("HTTP://Example.COM/a?b=c").host == "example.com"
