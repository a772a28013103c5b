"""clean_create_params: defaults, each rule on each field, and messages that name the field."""

from typing import Any

import pytest
from pytest_django import Settings

from capsules.validation import CreateParams, ValidationFailed, clean_create_params


def clean(**fields: Any) -> CreateParams:
    params: dict[str, Any] = {
        "template": None,
        "vcpus": None,
        "memory_mb": None,
        "timeout_sec": None,
        "metadata": None,
    }
    params.update(fields)
    return clean_create_params(**params)


def message_of(**fields: Any) -> str:
    with pytest.raises(ValidationFailed) as caught:
        clean(**fields)
    assert str(caught.value) == caught.value.message
    return caught.value.message


def test_nothing_given_means_the_defaults() -> None:
    assert clean() == CreateParams(template="minimal", vcpus=1, memory_mb=512, timeout_sec=300, metadata={})


def test_disk_size_comes_from_the_template() -> None:
    assert clean().disk_size_mb == 1024
    assert clean(template="base").disk_size_mb > 1024


def test_given_values_are_kept() -> None:
    params = clean(template="base", vcpus=2, memory_mb=1024, timeout_sec=600, metadata={"env": "ci"})
    assert params == CreateParams(
        template="base", vcpus=2, memory_mb=1024, timeout_sec=600, metadata={"env": "ci"}
    )


def test_unknown_template_names_the_known_ones() -> None:
    assert message_of(template="ubuntu") == "template 'ubuntu' is unknown; known templates: base, minimal"


def test_template_must_be_a_string() -> None:
    assert message_of(template=3) == "template must be a string, not int"


@pytest.mark.parametrize("vcpus", [0, -1, 9])
def test_vcpus_out_of_range(vcpus: int) -> None:
    assert message_of(vcpus=vcpus) == f"vcpus must be between 1 and 8, got {vcpus}"


def test_vcpus_limit_follows_settings(settings: Settings) -> None:
    settings.WRENN_MAX_VCPUS = 2
    assert message_of(vcpus=3) == "vcpus must be between 1 and 2, got 3"


@pytest.mark.parametrize(("value", "type_name"), [(True, "bool"), ("2", "str"), (1.5, "float")])
def test_vcpus_must_be_an_integer(value: Any, type_name: str) -> None:
    assert message_of(vcpus=value) == f"vcpus must be an integer, not {type_name}"


@pytest.mark.parametrize("memory_mb", [127, 16385])
def test_memory_out_of_range(memory_mb: int) -> None:
    assert message_of(memory_mb=memory_mb) == f"memory_mb must be between 128 and 16384, got {memory_mb}"


def test_memory_limit_follows_settings(settings: Settings) -> None:
    settings.WRENN_MAX_MEMORY_MB = 1024
    assert message_of(memory_mb=2048) == "memory_mb must be between 128 and 1024, got 2048"


def test_memory_must_be_an_integer() -> None:
    assert message_of(memory_mb=False) == "memory_mb must be an integer, not bool"


def test_negative_timeout_is_refused() -> None:
    assert message_of(timeout_sec=-1) == "timeout_sec must be 0 (never pause) or positive, got -1"


def test_short_timeout_is_raised_to_a_minute() -> None:
    assert clean(timeout_sec=1).timeout_sec == 60
    assert clean(timeout_sec=59).timeout_sec == 60


def test_zero_timeout_means_never_pause() -> None:
    assert clean(timeout_sec=0).timeout_sec == 0


def test_timeout_above_the_maximum_is_refused(settings: Settings) -> None:
    settings.WRENN_MAX_TIMEOUT_SEC = 3600
    assert message_of(timeout_sec=3601) == "timeout_sec must be at most 3600, got 3601"


def test_timeout_must_be_an_integer() -> None:
    assert message_of(timeout_sec="300") == "timeout_sec must be an integer, not str"


def test_metadata_must_be_an_object() -> None:
    assert message_of(metadata=["a"]) == "metadata must be an object of strings, not list"


def test_metadata_has_at_most_twenty_keys() -> None:
    assert clean(metadata={f"k{i}": "v" for i in range(20)}).metadata["k19"] == "v"
    assert message_of(metadata={f"k{i}": "v" for i in range(21)}) == (
        "metadata has 21 keys; at most 20 are allowed"
    )


@pytest.mark.parametrize("key", ["", "-lead", "has space", "x" * 65, "ümlaut"])
def test_metadata_key_shape(key: str) -> None:
    assert message_of(metadata={key: "v"}).startswith(f"metadata key {key!r} is invalid: use 1 to 64")


def test_metadata_key_may_use_dots_dashes_and_underscores() -> None:
    assert clean(metadata={"a.b_c-d": "v", "x" * 64: "v"}).metadata["a.b_c-d"] == "v"


@pytest.mark.parametrize("key", ["kernel_version", "vmm_version", "agent_version", "envd_version"])
def test_reserved_metadata_keys(key: str) -> None:
    assert message_of(metadata={key: "1"}) == f"metadata key '{key}' is reserved for the system"


def test_metadata_values_are_strings() -> None:
    assert message_of(metadata={"n": 1}) == "metadata value of 'n' must be a string, not int"


def test_metadata_values_are_at_most_64_characters() -> None:
    assert clean(metadata={"v": "x" * 64}).metadata["v"] == "x" * 64
    assert message_of(metadata={"v": "x" * 65}) == (
        "metadata value of 'v' is 65 characters; at most 64 are allowed"
    )
