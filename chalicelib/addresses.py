"""Addresses an outgoing request of ours must never reach: link-local and instance-metadata
addresses given literally in a URL, in every spelling a resolver accepts.

Pure: no I/O (nothing is resolved; a host name is judged by what it spells, not where DNS
points it). Used by :func:`chalicelib.webhook_settings.webhook_targets` (``PUSHER_WEBHOOKS``): a
webhook target at ``http://169.254.169.254/`` would POST signed events to the instance
metadata service, and its answers would reach the dead-letter queue and the logs.

Spellings judged (``socket.getaddrinfo`` on Linux, which every HTTP client calls, takes them
all; glibc ``inet_aton``): dotted quads, and the shorter and numeric ones ``inet_aton`` reads
(``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``169.254.43518``); full-width digits
and dots (IDNA maps them to ASCII); IPv6 literals (``[fe80::1%eth0]``) and IPv6 forms that
carry an IPv4 address: IPv4-mapped (``::ffff:169.254.169.254``), IPv4-compatible, 6to4,
NAT64 (``64:ff9b::/96``, RFC 6052) and Teredo.
"""
from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Iterator, Optional, Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: networks never reached: IPv4 link-local (RFC 3927; EC2's instance metadata
#: 169.254.169.254, ECS task metadata 169.254.170.2, the Lambda runtime's link-local
#: services), IPv6 link-local (RFC 4291 ``fe80::/10``) and AWS's IPv6 instance services
#: (``fd00:ec2::/32``: metadata ``fd00:ec2::254``, DNS ``fd00:ec2::253``; EC2 User Guide,
#: "Instance metadata service" IPv6 endpoint)
FORBIDDEN_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::/32"),
)
#: NAT64's well-known prefix (RFC 6052): its last 32 bits are an IPv4 address
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")

_HEX = re.compile(r"0x[0-9a-f]*", re.ASCII)
_OCTAL = re.compile(r"0[0-7]*", re.ASCII)
_DECIMAL = re.compile(r"[1-9][0-9]*", re.ASCII)
#: dots IDNA reads as the label separator (UTS #46): ideographic, full-width, half-width
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def inet_aton_address(host: str) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address a host spells in ``inet_aton``'s forms, else None.

    One to four dot-separated parts, each decimal, ``0x`` hexadecimal or ``0``-led octal;
    the last part fills the bytes the others leave (``a``: 32 bits; ``a.b``: 8 + 24;
    ``a.b.c``: 8 + 8 + 16), as glibc's ``inet_aton`` reads them (one trailing dot, which a
    resolver also accepts, is allowed).

    Args:
        host: a URL's host, lower-cased.
    Returns:
        the address, or None when ``host`` is not such a number (a name, or a part too big).
    """
    text = host[:-1] if host.endswith(".") else host
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        if _HEX.fullmatch(part):
            values.append(int(part[2:] or "0", 16))
        elif _OCTAL.fullmatch(part):
            values.append(int(part, 8))
        elif _DECIMAL.fullmatch(part):
            values.append(int(part))
        else:
            return None
    *head, last = values
    if any(value > 255 for value in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def literal_address(host: str) -> Optional[Address]:
    """The IP address a URL's host spells literally, else None (a name).

    Args:
        host: ``urlsplit(url).hostname`` (brackets already removed; any case). Full-width
            digits and dots are read as ASCII (NFKC, as IDNA does); an IPv6 zone
            (``%eth0``, ``%25eth0``) is dropped.
    Returns:
        an ``IPv4Address`` or ``IPv6Address``, or None.
    """
    text = unicodedata.normalize("NFKC", host).translate(_DOTS).strip().lower()
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
    return inet_aton_address(text)


def _embedded(address: Address) -> Iterator[Address]:
    """``address`` and every IPv4 address an IPv6 form of it carries."""
    yield address
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            yield address.ipv4_mapped
        if int(address) >> 32 == 0:  # IPv4-compatible ::a.b.c.d (RFC 4291 §2.5.5.1)
            yield ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address in NAT64_PREFIX:
            yield ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            yield address.sixtofour
        if address.teredo is not None:
            yield from address.teredo


def forbidden_host(host: Optional[str]) -> bool:
    """True when a URL's host is, literally, a link-local or instance-metadata address
    (:data:`FORBIDDEN_NETWORKS`) in any spelling of :func:`literal_address`, including an
    IPv4 one carried in IPv6 (mapped, compatible, 6to4, NAT64, Teredo).

    Args:
        host: ``urlsplit(url).hostname``, or None.
    Returns:
        False for names (not resolved here) and other addresses.
    """
    if not host:
        return False
    address = literal_address(host)
    if address is None:
        return False
    return any(candidate in network for candidate in _embedded(address)
               for network in FORBIDDEN_NETWORKS if candidate.version == network.version)
