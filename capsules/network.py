"""A capsule's egress policy: where it may connect to, checked the way every request value is.

    {"allow_internet": true, "allow_out": ["203.0.113.0/24"], "deny_out": ["198.51.100.7/32"]}

`allow_internet` opens the public addresses; `deny_out` closes networks even there; `allow_out`
opens networks even inside a closed range (the private ranges, or `deny_out`): allow wins over
deny. The host agent enforces it (protos/hostagent.proto, NetworkPolicy). Entries are stored in
canonical form ("2001:DB8::/32" becomes "2001:db8::/32", a bare address its /32 or /128); an entry
with host bits set ("10.1.2.3/8") is refused rather than guessed at, since either reading of it
could open more than its author meant.
"""

import ipaddress
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from capsules.validation import ValidationFailed, type_name

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

KEYS = ("allow_internet", "allow_out", "deny_out")
LISTS = ("allow_out", "deny_out")
MAX_ENTRIES = 64
# The longest IPv6 text with a prefix ("ffff:…:255.255.255.255/128") is 49 characters.
MAX_CIDR_LENGTH = 64
_PREFIX_RE = re.compile(r"[0-9]{1,3}")
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

# What no capsule may be allowed to reach, whatever its policy says: the host itself (loopback,
# and 0.0.0.0 and ::, which Linux connects to the local host) and link-local addresses, where
# clouds serve instance metadata and credentials. Operators add the platform's own networks
# (its database, Redis, daphne, agents) with WRENN_NETWORK_NEVER_ALLOW.
NEVER_ALLOWED: tuple[tuple[str, str], ...] = (
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("0.0.0.0/8", "this host"),
    ("::/128", "this host"),
    ("169.254.0.0/16", "link-local and cloud metadata"),
    ("fe80::/10", "link-local"),
)


def default_policy() -> dict[str, Any]:
    """The policy of a capsule nobody gave one: the internet, and nothing private."""
    return {"allow_internet": True, "allow_out": [], "deny_out": []}


def _and_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def clean_cidr(name: str, entry: Any) -> Network:
    """One entry of a list, or ValidationFailed saying what is wrong with it."""
    if not isinstance(entry, str):
        raise ValidationFailed(f"{name} must be a CIDR string such as 203.0.113.0/24, not {type_name(entry)}")
    if len(entry) > MAX_CIDR_LENGTH:
        raise ValidationFailed(
            f"{name} is {len(entry)} characters long; a CIDR has at most {MAX_CIDR_LENGTH}"
        )
    text, slash, prefix = entry.partition("/")
    if "%" in text:
        raise ValidationFailed(f"{name} {entry!r} has a zone index ('%…'), which means nothing to a capsule")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValidationFailed(
            f"{name} {entry!r} is not a CIDR: {text!r} is not an IPv4 or IPv6 address"
        ) from None
    bits = address.max_prefixlen
    if slash and (not _PREFIX_RE.fullmatch(prefix) or int(prefix) > bits):
        raise ValidationFailed(
            f"{name} {entry!r} is not a CIDR: the prefix length of an IPv{address.version} "
            f"network is 0 to {bits}"
        )
    network = ipaddress.ip_network(f"{address}/{prefix if slash else bits}", strict=False)
    if network.network_address != address:
        raise ValidationFailed(
            f"{name} {entry!r} has host bits set: write {str(network)!r} for the network, "
            f"or '{address}/{bits}' for the one address"
        )
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        # Rules on IPv6 packets never see these: a capsule connecting to ::ffff:10.0.0.1 sends IPv4.
        mapped = network.network_address.ipv4_mapped
        as_ipv4 = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
        raise ValidationFailed(
            f"{name} {entry!r} is an IPv4-mapped IPv6 network; write it as IPv4: {str(as_ipv4)!r}"
        )
    return network


def never_allowed() -> list[tuple[Network, str]]:
    """NEVER_ALLOWED and the operator's WRENN_NETWORK_NEVER_ALLOW, read at call time."""
    extra = []
    for entry in settings.WRENN_NETWORK_NEVER_ALLOW:
        try:
            extra.append((ipaddress.ip_network(entry), "a network of the platform"))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"WRENN_NETWORK_NEVER_ALLOW: {entry!r} is not a CIDR ({exc})"
            ) from None
    return [(ipaddress.ip_network(cidr), label) for cidr, label in NEVER_ALLOWED] + extra


def _clean_list(name: str, value: Any, closed: list[tuple[Network, str]] | None) -> list[str]:
    if not isinstance(value, list):
        raise ValidationFailed(f"{name} must be a list of CIDR strings, not {type_name(value)}")
    if len(value) > MAX_ENTRIES:
        raise ValidationFailed(f"{name} has {len(value)} entries; at most {MAX_ENTRIES} are allowed")
    cleaned = []
    for index, entry in enumerate(value):
        network = clean_cidr(f"{name}[{index}]", entry)
        for forbidden, label in closed or ():
            if network.version == forbidden.version and network.overlaps(forbidden):
                raise ValidationFailed(
                    f"{name}[{index}] {entry!r} overlaps {forbidden} ({label}), "
                    "which no capsule may be allowed to reach"
                )
        cleaned.append(str(network))
    return cleaned


def clean_network(network: Any, name: str = "network") -> dict[str, Any]:
    """The checked policy with every key present (a key left out takes its default), or ValidationFailed."""
    if not isinstance(network, dict):
        raise ValidationFailed(
            f"{name} must be an object with {_and_list(list(KEYS))}, not {type_name(network)}"
        )
    unknown = [repr(key) for key in network if key not in KEYS]
    if unknown:
        noun = "key" if len(unknown) == 1 else "keys"
        raise ValidationFailed(
            f"{name} has unknown {noun} {', '.join(unknown)}; its keys are {_and_list(list(KEYS))}"
        )
    policy = default_policy()
    if "allow_internet" in network:
        allow_internet = network["allow_internet"]
        if not isinstance(allow_internet, bool):
            raise ValidationFailed(
                f"{name}.allow_internet must be true or false, not {type_name(allow_internet)}"
            )
        policy["allow_internet"] = allow_internet
    for key in LISTS:
        if key in network:
            closed = never_allowed() if key == "allow_out" and network[key] else None
            policy[key] = _clean_list(f"{name}.{key}", network[key], closed)
    return policy
