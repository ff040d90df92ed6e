"""Configuration from the environment."""

from __future__ import annotations

import pytest

from core.errors import ConfigurationError
from core.settings import load_settings


def test_broker_security_settings_are_read_and_secrets_never_appear_in_the_repr() -> None:
    settings = load_settings(
        {
            "KAFKA_BOOTSTRAP": "kafka-1:9093",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "lifecycle",
            "KAFKA_SASL_PASSWORD": "TOPSECRET-pw",
        }
    )
    config = settings.kafka_client_config()
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.password"] == "TOPSECRET-pw"
    assert "TOPSECRET" not in repr(settings) and "TOPSECRET" not in str(settings)


def test_a_bad_partition_count_is_named() -> None:
    with pytest.raises(ConfigurationError, match="LIFECYCLE_PARTITIONS"):
        load_settings({"LIFECYCLE_PARTITIONS": "four"})


def test_without_a_bootstrap_the_embedded_broker_is_the_default() -> None:
    settings = load_settings({})
    assert settings.embedded and settings.previous_master_key_file is None


def test_consumers_fetch_wait_is_configurable_and_checked() -> None:
    settings = load_settings({"KAFKA_BOOTSTRAP": "k:9092", "LIFECYCLE_FETCH_WAIT_MS": "20"})
    assert settings.kafka_consumer_config()["fetch.wait.max.ms"] == "20"
    assert "fetch.wait.max.ms" not in settings.kafka_client_config()  # producers: no such thing
    with pytest.raises(ConfigurationError, match="LIFECYCLE_FETCH_WAIT_MS must be at least 0"):
        load_settings({"LIFECYCLE_FETCH_WAIT_MS": "-5"})
    with pytest.raises(ConfigurationError, match="LIFECYCLE_PARTITIONS must be at least 1"):
        load_settings({"LIFECYCLE_PARTITIONS": "0"})


def test_the_key_cache_size_and_warming_are_configurable_and_checked() -> None:
    default = load_settings({})
    assert (default.key_cache, default.key_cache_warm) == (1_000_000, False)
    settings = load_settings({"LIFECYCLE_KEY_CACHE": "5000", "LIFECYCLE_KEY_CACHE_WARM": "1"})
    assert (settings.key_cache, settings.key_cache_warm) == (5000, True)
    assert load_settings({"LIFECYCLE_KEY_CACHE_WARM": "false"}).key_cache_warm is False
    with pytest.raises(ConfigurationError, match="LIFECYCLE_KEY_CACHE must be at least 1"):
        load_settings({"LIFECYCLE_KEY_CACHE": "0"})
    with pytest.raises(ConfigurationError, match="LIFECYCLE_KEY_CACHE_WARM must be 1 or 0"):
        load_settings({"LIFECYCLE_KEY_CACHE_WARM": "sometimes"})


def test_the_event_loop_defaults_to_uvloop_and_is_checked() -> None:
    assert load_settings({}).event_loop == "uvloop"
    assert load_settings({"LIFECYCLE_EVENT_LOOP": " AsyncIO "}).event_loop == "asyncio"
    with pytest.raises(ConfigurationError, match="LIFECYCLE_EVENT_LOOP must be one of"):
        load_settings({"LIFECYCLE_EVENT_LOOP": "trio"})
