"""The SQL queries shipped with oddwatch, read together with their headers.

Each ``.sql`` file in ``deploy/clickhouse/queries`` contains one ClickHouse
query that starts with a block of ``--`` comments. The block has a summary
line and an explanation, then a ``Parameters:`` section with one
``{name:Type}`` placeholder per entry and a ``Columns:`` section with one
result column per entry. The placeholders are ClickHouse server-side
parameters, so a file runs unchanged through
:meth:`streams.storage.Storage.query_frame` and through any client that binds
``{name:Type}`` parameters.

NOTE: the default folder is found relative to this package, which works in a
source checkout only. The wheel and the worker image do not contain the
files, so pass ``directory`` there.

Examples
--------
>>> query = load_query("score_over_time")
>>> query.summary
'Outlier score and threshold of every request of a model version over time.'
>>> query.parameters["since"]
"Nullable(DateTime64(3, 'UTC'))"
>>> query.bind({"model": "census", "version": 1})
{'model': 'census', 'version': 1, 'since': None}
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.errors import ConfigError

__all__ = ["QUERY_DIRECTORY", "Query", "list_queries", "load_query"]

QUERY_DIRECTORY = (
    Path(__file__).resolve().parent.parent / "deploy" / "clickhouse" / "queries"
)
"""Folder of the shipped query files in a source checkout."""

# A placeholder's type may contain brackets and quotes but never braces.
_PLACEHOLDER = re.compile(r"\{(\w+):([^{}]+)\}")
_SECTIONS = ("Parameters:", "Columns:")


@dataclass(frozen=True)
class Query:
    """One documented query file.

    ``parameters`` maps each parameter name to its ClickHouse type, in the
    order of the header. ``columns`` lists the result columns in order.
    """

    name: str
    path: Path
    sql: str
    summary: str
    parameters: dict[str, str]
    columns: list[str]

    def bind(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Return the parameters to run the query with, checked against the header.

        A ``Nullable`` parameter that is not given is bound to None, which the
        query reads as NULL. Raise ConfigError for an unknown or missing name.
        """
        unknown = sorted(set(values) - set(self.parameters))
        if unknown:
            raise ConfigError(
                f"query {self.name!r} has no parameter {', '.join(unknown)}; "
                f"expected {_describe(self.parameters)}"
            )
        bound = {}
        missing = []
        for name, type_name in self.parameters.items():
            if name in values:
                bound[name] = values[name]
            elif type_name.startswith("Nullable("):
                bound[name] = None
            else:
                missing.append(name)
        if missing:
            raise ConfigError(
                f"query {self.name!r} is missing parameter {', '.join(missing)}; "
                f"expected {_describe(self.parameters)}"
            )
        return bound


def list_queries(directory: Path | None = None) -> list[Query]:
    """Read every ``.sql`` file of ``directory``, sorted by name."""
    folder = _folder(directory)
    return [_read(path) for path in sorted(folder.glob("*.sql"))]


def load_query(name: str, directory: Path | None = None) -> Query:
    """Read the query file ``name`` (without ``.sql``) of ``directory``."""
    folder = _folder(directory)
    path = folder / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.sql")))
        raise ConfigError(
            f"query {name!r} not found in {folder}; expected one of: {known}"
        )
    return _read(path)


def _folder(directory: Path | None) -> Path:
    folder = Path(directory) if directory is not None else QUERY_DIRECTORY
    if not folder.is_dir():
        raise ConfigError(
            f"query folder {folder} not found; pass the folder that contains the "
            "files of deploy/clickhouse/queries"
        )
    return folder


def _read(path: Path) -> Query:
    """Parse one query file and check its header against its placeholders."""
    sql = path.read_text(encoding="utf-8")
    header = _header_lines(sql)
    if not header or not header[0].strip():
        raise ValueError(f"{path}: expected a '--' comment block with a summary line")
    sections = _sections(header)
    if not sections.get("Columns:"):
        raise ValueError(f"{path}: the header has no 'Columns:' section")

    parameters = {}
    for entry in sections.get("Parameters:", []):
        match = _PLACEHOLDER.match(entry)
        if match is None:
            raise ValueError(
                f"{path}: parameter entry {entry!r} must start with {{name:Type}}"
            )
        parameters[match.group(1)] = match.group(2)
    _check_placeholders(path, sql, parameters)

    return Query(
        name=path.stem,
        path=path,
        sql=sql,
        summary=header[0].strip(),
        parameters=parameters,
        columns=[entry.split()[0] for entry in sections["Columns:"]],
    )


def _header_lines(sql: str) -> list[str]:
    """Return the leading ``--`` comment lines without their ``--`` and one space."""
    lines = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[3:] if line.startswith("-- ") else line[2:])
    return lines


def _sections(header: list[str]) -> dict[str, list[str]]:
    """Return the entries of each section of the header.

    A section runs from its title to the next blank line. Its first line sets
    the indent of an entry, and a line indented further continues the entry.
    """
    sections: dict[str, list[str]] = {}
    entries: list[str] | None = None
    entry_indent = 0
    for line in header:
        text = line.strip()
        if text in _SECTIONS:
            entries = sections.setdefault(text, [])
            continue
        if not text:
            entries = None
            continue
        if entries is None:
            continue
        indent = len(line) - len(line.lstrip())
        if not entries:
            entry_indent = indent
        if indent <= entry_indent:
            entries.append(text)
    return sections


def _check_placeholders(path: Path, sql: str, parameters: dict[str, str]) -> None:
    """Raise ValueError unless the header lists exactly the placeholders used."""
    body = "\n".join(
        line for line in sql.splitlines() if not line.lstrip().startswith("--")
    )
    used: dict[str, str] = {}
    for name, type_name in _PLACEHOLDER.findall(body):
        if used.setdefault(name, type_name) != type_name:
            raise ValueError(
                f"{path}: parameter {name!r} is used as {used[name]} and as {type_name}"
            )
    if used != parameters:
        raise ValueError(
            f"{path}: the header lists parameters {_describe(parameters)} but the "
            f"query uses {_describe(used)}"
        )


def _describe(parameters: Mapping[str, str]) -> str:
    if not parameters:
        return "none"
    return ", ".join(
        f"{{{name}:{type_name}}}" for name, type_name in parameters.items()
    )
