"""Settings from the environment and from flags."""

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import Settings, mask_url


def test_settings_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings.kafka == "127.0.0.1:9092"
    assert settings.topic("predictions") == "oddwatch.predictions"


def test_settings_read_from_environment():
    settings = Settings.from_env(
        {
            "ODDWATCH_KAFKA": "broker:9093",
            "ODDWATCH_STORE": "/models",
            "ODDWATCH_BLOCK_SIZE": "250",
            "ODDWATCH_BLOCK_TIMEOUT": "0.25",
            "ODDWATCH_TOPIC_PREFIX": "prod.",
        }
    )
    assert settings.kafka == "broker:9093"
    assert settings.store == Path("/models")
    assert settings.block_size == 250
    assert settings.block_timeout == 0.25
    assert settings.topic("alerts") == "prod.alerts"


def test_settings_flags_win_over_environment():
    settings = Settings.from_env({"ODDWATCH_KAFKA": "env:9092"}, kafka="flag:9092")
    assert settings.kafka == "flag:9092"


def test_settings_unset_flag_falls_through():
    settings = Settings.from_env({"ODDWATCH_KAFKA": "env:9092"}, kafka=None)
    assert settings.kafka == "env:9092"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ODDWATCH_BLOCK_SIZE": "many"}, "ODDWATCH_BLOCK_SIZE='many' is invalid"),
        ({"ODDWATCH_BLOCK_SIZE": "0"}, "block_size must be between 1 and"),
        ({"ODDWATCH_BLOCK_SIZE": "2000000"}, "block_size must be between 1 and"),
        ({"ODDWATCH_PARTITIONS": "-1"}, "partitions must be at least 1"),
        ({"ODDWATCH_TOPIC_PREFIX": "bad prefix"}, "topic prefix 'bad prefix'"),
        ({"ODDWATCH_CLICKHOUSE": "mysql://db"}, "expected chdb://DIR"),
        ({"ODDWATCH_KAFKA": " "}, "ODDWATCH_KAFKA is empty"),
        ({"ODDWATCH_READER": "aiokafka"}, "ODDWATCH_READER='aiokafka' is invalid"),
    ],
)
def test_settings_invalid_value_named(environ, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_env(environ)


def test_describe_masks_password():
    settings = Settings.from_env(
        {"ODDWATCH_CLICKHOUSE": "http://alice:hunter2@db:8123/monitoring"}
    )
    assert "hunter2" not in settings.describe()
    assert "alice:***@db:8123" in settings.describe()
    assert "hunter2" not in repr(mask_url(settings.clickhouse))


def test_reader_defaults_to_blocks():
    assert Settings.from_env({}).reader == "blocks"
    assert Settings.from_env({"ODDWATCH_READER": "faust"}).reader == "faust"


def test_block_reader_commits_only_by_hand():
    from streams.reader import consumer_config

    config = consumer_config(Settings.from_env({"ODDWATCH_GROUP": "g1"}))
    assert config["group.id"] == "g1"
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["auto.offset.reset"] == "earliest"
