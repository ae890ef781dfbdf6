"""Whether an address is reachable from other machines: the one check before serving HTTP (metrics, dashboard)."""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one ("", "0.0.0.0" and "::" mean every interface)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host or None, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return False
    if not host or not addresses:
        return False
    return all(ipaddress.ip_address(str(address).split("%", 1)[0]).is_loopback for address in addresses)
