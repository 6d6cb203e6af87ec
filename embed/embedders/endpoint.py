"""Classify where an embedding endpoint sends text: in-process, loopback, private network, cloud.

The class is decided from the addresses the host resolves to *now* (socket.getaddrinfo), never
from the name alone:

- no URL                                    -> in-process
- every address is loopback (127/8, ::1) or
  unspecified (0.0.0.0, ::, which Linux
  routes to this host)                      -> loopback
- every address is loopback or private:
  RFC 1918 (10/8, 172.16/12, 192.168/16),
  shared CGNAT space 100.64/10 (Tailscale
  and friends), link-local 169.254/16 and
  fe80::/10, IPv6 ULA fc00::/7              -> private-network
- anything else (public, documentation or
  reserved ranges), or a host that does not
  resolve                                   -> cloud

Anything not positively known to stay on this host or a private network counts as cloud, so
the refusal fails closed. Messages name the host and addresses, never userinfo or query strings.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from embed.errors import EmbedError

IN_PROCESS = "in-process"
LOOPBACK = "loopback"
PRIVATE = "private-network"
CLOUD = "cloud"

_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


def safe_url(url: str) -> str:
    """`url` without userinfo, query or fragment: safe for logs, errors and evidence."""
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        port = p.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return f"{p.scheme}://{netloc}{p.path}"


def parse_endpoint(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) endpoint URL, or a clear EmbedError."""
    if not isinstance(url, str) or not url.strip():
        raise EmbedError("endpoint must be a non-empty http(s) URL")
    try:
        p = urlsplit(url.strip())
        port = p.port
    except ValueError:
        raise EmbedError(f"endpoint {safe_url(url)} is not a valid URL") from None
    if p.scheme not in ("http", "https"):
        raise EmbedError(f"endpoint {safe_url(url)} must use http or https")
    if not p.hostname:
        raise EmbedError(f"endpoint {safe_url(url)} has no host")
    return p.scheme, p.hostname, port or (443 if p.scheme == "https" else 80)


def address_class(ip: str) -> str:
    """The class of one IP address."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback or addr.is_unspecified:
        return LOOPBACK
    if any(addr in net for net in _PRIVATE_NETS if net.version == addr.version):
        return PRIVATE
    return CLOUD


def classify(url: str | None) -> tuple[str, str]:
    """(class, reason) for an endpoint URL; None means the model runs in this process."""
    if url is None:
        return IN_PROCESS, "no endpoint: the model runs in this process"
    _scheme, host, port = parse_endpoint(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        return CLOUD, f"host {host} did not resolve ({why}); an unknown host counts as cloud"
    addrs = sorted({str(info[4][0]) for info in infos})
    if not addrs:
        return CLOUD, f"host {host} resolved to no addresses; counts as cloud"
    classes = {a: address_class(a) for a in addrs}
    shown = ", ".join(addrs[:4]) + (f" (+{len(addrs) - 4} more)" if len(addrs) > 4 else "")
    if all(c == LOOPBACK for c in classes.values()):
        return LOOPBACK, f"host {host} resolves only to loopback addresses ({shown})"
    if all(c in (LOOPBACK, PRIVATE) for c in classes.values()):
        return PRIVATE, f"host {host} resolves only to private-network addresses ({shown})"
    public = [a for a, c in classes.items() if c == CLOUD]
    return CLOUD, f"host {host} resolves to {len(public)} non-private address(es) (e.g. {public[0]})"
