"""The README's examples: they must stay true as the code changes."""

import dataclasses
import re
import shlex
from datetime import UTC, datetime

import orjson
import pytest
from typer.testing import CliRunner

from detectors.metrics import parse_metric_configs
from schemas import parse_prediction
from streams.cli import app
from streams.settings import Settings
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _indented_blocks() -> list[str]:
    """Return the README's indented code blocks, dedented, split at blank lines."""
    blocks, current = [], []
    for line in README.splitlines():
        if line.startswith("    ") and line.strip():
            current.append(line[4:])
            continue
        if current:
            blocks.append("\n".join(current).strip())
            current = []
    return [block for block in blocks if block]


def _json_block(starts_with: str) -> object:
    [block] = [b for b in _indented_blocks() if b.startswith(starts_with)]
    return orjson.loads(block)


def test_readme_prediction_event_valid():
    document = _json_block('{"model"')
    event = parse_prediction(orjson.dumps(document), datetime.now(UTC))
    assert event.model == "census"
    assert event.features["age"] == 39


def test_readme_metrics_file_valid():
    configs = parse_metric_configs(_json_block('[{"name"'))
    assert [config.name for config in configs] == ["long_hours", "net_capital", "churn"]


def _commands() -> list[list[str]]:
    commands = []
    for block in _indented_blocks():
        for line in block.splitlines():
            if line.startswith("oddwatch "):
                words = shlex.split(line.split("#")[0])
                commands.append(words[1:])
    return commands


@pytest.mark.parametrize("words", _commands(), ids=lambda words: " ".join(words[:2]))
def test_readme_command_options_exist(words):
    # Every command and option the README shows is accepted by the CLI.
    command = [word for word in words if not word.startswith("-")][:2]
    runner = CliRunner()
    subcommands = command if command[0] in ("models", "metrics") else command[:1]
    result = runner.invoke(app, [*subcommands, "--help"])
    assert result.exit_code == 0, result.output
    for option in (word for word in words if word.startswith("--")):
        assert option in result.output, (
            f"{option} not in `oddwatch {' '.join(subcommands)} --help`"
        )


def test_readme_configuration_table_matches_settings():
    variables = set(re.findall(r"^\| `ODDWATCH_([A-Z_]+)`", README, re.MULTILINE))
    fields = {spec.name.upper() for spec in dataclasses.fields(Settings)}
    assert variables == fields
