"""Where a webhook may go (SPEC 8): https and global addresses only, unless private targets
are allowed (development and tests). The check runs at creation and again at send time, and
the connection goes to the address that was checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class TargetRefused(ValueError):
    """A webhook URL that may not be used; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`address`) and what to say (`host`, for Host and SNI)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str  # the IP to connect to


def is_public(address: str) -> bool:
    """Global unicast only: not loopback, private, link-local, shared, reserved, multicast,
    unspecified, nor an IPv4-mapped or 6to4/Teredo form of one of these."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(str(ip.ipv4_mapped))
        if ip.sixtofour is not None and not is_public(str(ip.sixtofour)):
            return False
        if ip.teredo is not None:
            return False
    return bool(
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_private
        and not ip.is_unspecified
    )


def allowed_schemes(allow_private: bool) -> str:
    """What this hub takes, as said to the caller: http only where private targets are."""
    return "https:// or http://" if allow_private else "https:// (http:// is not accepted here)"


def parse(url: str, *, allow_private: bool) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL fit for webhooks, or TargetRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or (scheme == "http" and not allow_private):
        raise TargetRefused(f"the URL must start with {allowed_schemes(allow_private)}")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL are not allowed; use the signature")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


async def resolve(url: str, *, allow_private: bool) -> Target:
    """Check the URL and every address its host resolves to; the first address is used."""
    scheme, host, port = parse(url, allow_private=allow_private)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"the host {host!r} does not resolve") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise TargetRefused(f"the host {host!r} does not resolve")
    if not allow_private:
        blocked = [a for a in addresses if not is_public(a)]
        if blocked:
            raise TargetRefused(
                f"the host {host!r} resolves to a non-public address ({blocked[0]}); "
                "this hub sends webhooks only to hosts whose every address is public"
            )
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])
