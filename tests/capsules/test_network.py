"""clean_network: the default policy, canonical entries, and a message naming the key, the entry and why
for every policy refused, written from the side of a caller trying to open what must stay closed."""

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from pytest_django import Settings

from capsules.network import MAX_ENTRIES, clean_network, default_policy
from capsules.validation import ValidationFailed

DEFAULT = {"allow_internet": True, "allow_out": [], "deny_out": []}
IPV4_PREFIX = "the prefix length of an IPv4 network is 0 to 32"


def refusal(network: Any) -> str:
    with pytest.raises(ValidationFailed) as caught:
        clean_network(network)
    return caught.value.message


def test_the_default_policy_is_the_internet_and_nothing_else() -> None:
    assert default_policy() == DEFAULT


def test_the_default_policy_is_a_new_object_each_time() -> None:
    default_policy()["allow_out"].append("203.0.113.0/24")
    assert default_policy() == DEFAULT


def test_an_empty_object_is_the_default_policy() -> None:
    assert clean_network({}) == DEFAULT


def test_a_key_left_out_takes_its_default() -> None:
    assert clean_network({"deny_out": ["198.51.100.0/24"]}) == {**DEFAULT, "deny_out": ["198.51.100.0/24"]}


def test_a_full_policy_is_kept() -> None:
    policy = {"allow_internet": False, "allow_out": ["10.1.0.0/16"], "deny_out": ["203.0.113.7/32"]}
    assert clean_network(policy) == policy


@pytest.mark.parametrize(
    ("entry", "canonical"),
    [
        ("203.0.113.0/24", "203.0.113.0/24"),
        ("203.0.113.7", "203.0.113.7/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("2001:db8:0:0::1", "2001:db8::1/128"),
        ("::/0", "::/0"),
        ("10.0.0.0/08", "10.0.0.0/8"),
    ],
)
def test_entries_are_stored_in_canonical_form(entry: str, canonical: str) -> None:
    assert clean_network({"deny_out": [entry]})["deny_out"] == [canonical]


def test_ipv4_and_ipv6_mix_in_one_list() -> None:
    policy = clean_network({"allow_out": ["10.2.0.0/16", "fd00:1::/64"]})
    assert policy["allow_out"] == ["10.2.0.0/16", "fd00:1::/64"]


def test_order_and_repeats_are_kept() -> None:
    entries = ["198.51.100.0/24", "192.0.2.0/24", "198.51.100.0/24"]
    assert clean_network({"deny_out": entries})["deny_out"] == entries


@pytest.mark.parametrize(
    ("network", "message"),
    [
        (None, "network must be an object with allow_internet, allow_out and deny_out, not null"),
        ([], "network must be an object with allow_internet, allow_out and deny_out, not list"),
        ("open", "network must be an object with allow_internet, allow_out and deny_out, not str"),
        (
            {"allow_in": []},
            "network has unknown key 'allow_in'; its keys are allow_internet, allow_out and deny_out",
        ),
        (
            {"allow": [], "deny": []},
            "network has unknown keys 'allow', 'deny'; its keys are allow_internet, allow_out and deny_out",
        ),
        ({"allow_internet": "true"}, "network.allow_internet must be true or false, not str"),
        ({"allow_internet": 1}, "network.allow_internet must be true or false, not int"),
        ({"allow_internet": None}, "network.allow_internet must be true or false, not null"),
        ({"allow_out": "10.0.0.0/8"}, "network.allow_out must be a list of CIDR strings, not str"),
        ({"deny_out": None}, "network.deny_out must be a list of CIDR strings, not null"),
        ({"deny_out": {"a": 1}}, "network.deny_out must be a list of CIDR strings, not dict"),
        (
            {"deny_out": ["192.0.2.0/24", 5]},
            "network.deny_out[1] must be a CIDR string such as 203.0.113.0/24, not int",
        ),
        (
            {"deny_out": [["192.0.2.0/24"]]},
            "network.deny_out[0] must be a CIDR string such as 203.0.113.0/24, not list",
        ),
        (
            {"deny_out": ["10.0.0.300/8"]},
            "network.deny_out[0] '10.0.0.300/8' is not a CIDR: '10.0.0.300' is not an IPv4 or IPv6 address",
        ),
        (
            {"deny_out": ["example.com"]},
            "network.deny_out[0] 'example.com' is not a CIDR: 'example.com' is not an IPv4 or IPv6 address",
        ),
        ({"deny_out": [""]}, "network.deny_out[0] '' is not a CIDR: '' is not an IPv4 or IPv6 address"),
        (
            {"deny_out": [" 192.0.2.0/24"]},
            "network.deny_out[0] ' 192.0.2.0/24' is not a CIDR: ' 192.0.2.0' is not an IPv4 or IPv6 address",
        ),
        (
            {"deny_out": ["192.0.2.0/33"]},
            "network.deny_out[0] '192.0.2.0/33' is not a CIDR: " + IPV4_PREFIX,
        ),
        (
            {"deny_out": ["2001:db8::/129"]},
            "network.deny_out[0] '2001:db8::/129' is not a CIDR: the prefix length of an IPv6 network "
            "is 0 to 128",
        ),
        (
            {"deny_out": ["192.0.2.0/"]},
            "network.deny_out[0] '192.0.2.0/' is not a CIDR: " + IPV4_PREFIX,
        ),
        (
            {"deny_out": ["192.0.2.0/255.255.255.0"]},
            "network.deny_out[0] '192.0.2.0/255.255.255.0' is not a CIDR: the prefix length of an IPv4 "
            "network is 0 to 32",
        ),
        (
            {"deny_out": ["192.0.2.0/-1"]},
            "network.deny_out[0] '192.0.2.0/-1' is not a CIDR: " + IPV4_PREFIX,
        ),
        (
            {"deny_out": ["10.1.2.3/8"]},
            "network.deny_out[0] '10.1.2.3/8' has host bits set: write '10.0.0.0/8' for the network, "
            "or '10.1.2.3/32' for the one address",
        ),
        (
            {"allow_out": ["2001:db8::1/32"]},
            "network.allow_out[0] '2001:db8::1/32' has host bits set: write '2001:db8::/32' for the network, "
            "or '2001:db8::1/128' for the one address",
        ),
        (
            {"deny_out": ["fe80::1%eth0/128"]},
            "network.deny_out[0] 'fe80::1%eth0/128' has a zone index ('%…'), "
            "which means nothing to a capsule",
        ),
        (
            {"deny_out": ["1" * 65]},
            "network.deny_out[0] is 65 characters long; a CIDR has at most 64",
        ),
    ],
)
def test_a_bad_policy_is_refused_with_the_reason(network: Any, message: str) -> None:
    assert refusal(network) == message


@pytest.mark.parametrize("key", ["allow_out", "deny_out"])
def test_a_list_holds_at_most_64_entries(key: str) -> None:
    entries = [f"198.51.{i}.0/24" for i in range(MAX_ENTRIES)]
    assert len(clean_network({key: entries})[key]) == MAX_ENTRIES
    assert (
        refusal({key: [*entries, "192.0.2.0/24"]}) == f"network.{key} has 65 entries; at most 64 are allowed"
    )


def test_the_first_bad_entry_is_named() -> None:
    assert refusal({"deny_out": ["192.0.2.0/24", "192.0.2.1/24", "bad"]}).startswith(
        "network.deny_out[1] '192.0.2.1/24' has host bits set"
    )


# From the attacker's side: a caller (or code in a capsule holding its team's key) opening a way
# back to the host or to cloud metadata.


@pytest.mark.parametrize(
    ("entry", "closed"),
    [
        ("127.0.0.1/32", "127.0.0.0/8 (loopback)"),
        ("127.0.0.0/8", "127.0.0.0/8 (loopback)"),
        ("0.0.0.0/0", "127.0.0.0/8 (loopback)"),
        ("96.0.0.0/3", "127.0.0.0/8 (loopback)"),
        ("::1", "::1/128 (loopback)"),
        ("::/0", "::1/128 (loopback)"),
        ("0.0.0.0/32", "0.0.0.0/8 (this host)"),
        ("169.254.169.254/32", "169.254.0.0/16 (link-local and cloud metadata)"),
        ("169.0.0.0/8", "169.254.0.0/16 (link-local and cloud metadata)"),
        ("fe80::/64", "fe80::/10 (link-local)"),
    ],
)
def test_allow_out_may_never_open_the_host_or_metadata(entry: str, closed: str) -> None:
    assert refusal({"allow_out": ["203.0.113.0/24", entry]}) == (
        f"network.allow_out[1] {entry!r} overlaps {closed}, which no capsule may be allowed to reach"
    )


def test_deny_out_may_name_them() -> None:
    policy = {"deny_out": ["127.0.0.0/8", "169.254.169.254/32", "::/0"]}
    assert clean_network(policy)["deny_out"] == policy["deny_out"]


@pytest.mark.parametrize(
    ("entry", "as_ipv4"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1/32"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
    ],
)
@pytest.mark.parametrize("key", ["allow_out", "deny_out"])
def test_ipv4_mapped_ipv6_networks_are_refused_for_their_ipv4_form(
    key: str, entry: str, as_ipv4: str
) -> None:
    # A rule on IPv6 never sees such a connection: the kernel sends it as IPv4. Allowing one would
    # be a way around the loopback check; denying one would deny nothing.
    assert refusal({key: [entry]}) == (
        f"network.{key}[0] {entry!r} is an IPv4-mapped IPv6 network; write it as IPv4: {as_ipv4!r}"
    )


def test_the_operator_closes_the_platforms_networks(settings: Settings) -> None:
    settings.WRENN_NETWORK_NEVER_ALLOW = ["10.20.0.0/16", "fd00:20::/48"]
    assert refusal({"allow_out": ["10.0.0.0/8"]}) == (
        "network.allow_out[0] '10.0.0.0/8' overlaps 10.20.0.0/16 (a network of the platform), "
        "which no capsule may be allowed to reach"
    )
    assert refusal({"allow_out": ["fd00:20:0:1::/64"]}).startswith(
        "network.allow_out[0] 'fd00:20:0:1::/64' overlaps fd00:20::/48 (a network of the platform)"
    )
    assert clean_network({"allow_out": ["10.30.0.0/16"]})["allow_out"] == ["10.30.0.0/16"]


def test_a_bad_operator_setting_is_a_configuration_error(settings: Settings) -> None:
    settings.WRENN_NETWORK_NEVER_ALLOW = ["10.20.0.1/16"]
    with pytest.raises(
        ImproperlyConfigured, match=r"WRENN_NETWORK_NEVER_ALLOW: '10.20.0.1/16' is not a CIDR"
    ):
        clean_network({"allow_out": ["192.0.2.0/24"]})


def test_the_message_names_another_field(settings: Settings) -> None:
    with pytest.raises(ValidationFailed, match=r"^policy\.allow_internet must be true or false, not str$"):
        clean_network({"allow_internet": "no"}, name="policy")
