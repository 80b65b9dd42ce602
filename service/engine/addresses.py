"""Which addresses the image fetcher may connect to: public unicast only, unless settings say otherwise.

Refused: unspecified (0.0.0.0, ::), multicast, link-local (169.254/16 with the cloud metadata
endpoints, fe80::/10), loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), shared (100.64/10),
reserved (240/4) and every other range that is not globally routable (documentation, benchmarking...).
An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``,
6to4, Teredo) is judged by the IPv4 address it reaches.

``image_url_allow_private`` admits loopback, private and shared addresses (not link-local: the
metadata endpoints stay closed unless named); ``image_url_allowed_hosts`` admits what it names.
"""

from __future__ import annotations

import ipaddress

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches: IPv4-mapped, NAT64, 6to4 or Teredo; else None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def refusal(address: Address, allow_private: bool = False) -> str | None:
    """Why ``address`` is refused ("loopback", "private"...), or None when it may be fetched from."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return refusal(inner, allow_private)
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_link_local:
        return "link-local"
    if address.is_loopback:  # before reserved: ::1 is in IPv6's reserved ::/8
        kind = "loopback"
    elif address.is_reserved:
        return "reserved"
    elif isinstance(address, ipaddress.IPv4Address) and address in SHARED:
        kind = "shared (carrier-grade NAT)"
    elif address.is_private:
        kind = "private"
    elif not address.is_global:
        return "not globally routable"
    else:
        return None
    return None if allow_private else kind
