"""JSON Schema (draft 2020-12) of every record, generated from its declaration.

Each record class yields one schema document: the JSON type and constraints
of each field come from the record's codec (see :mod:`schemas.record`), the
descriptions from the Attributes section of its docstring, and rules between
fields from its ``_schema_rules``. Schemas leave additional properties open,
as the decoder ignores unknown fields.

NOTE: Some rules have no JSON Schema form and are checked only in Python:
finite numbers, calendar-valid times and most rules between fields, which
each record's docstring lists.

``python -m schemas`` writes the files to ``schemas/json``.
"""

import inspect
import re
from pathlib import Path
from typing import Any

import orjson

from schemas.alert import Alert
from schemas.batch import BatchSummary
from schemas.dead_letter import DeadLetter
from schemas.examples import EXAMPLES
from schemas.prediction import PredictionEvent
from schemas.record import (
    NO_CONSTRAINTS,
    AnyNode,
    BooleanNode,
    Constraints,
    EnumNode,
    IntegerNode,
    ListNode,
    MapNode,
    NumberNode,
    OptionalNode,
    Record,
    RecordNode,
    StringNode,
    TimeNode,
    codec_of,
)
from schemas.registration import ModelRegistration
from schemas.scored import ScoredEvent

__all__ = [
    "RECORDS",
    "SCHEMA_DIR",
    "json_schema",
    "render_schema",
    "stale_schemas",
    "write_schemas",
]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR = Path(__file__).parent / "json"

RECORDS: dict[str, type[Record]] = {
    "prediction_event": PredictionEvent,
    "scored_event": ScoredEvent,
    "alert": Alert,
    "batch_summary": BatchSummary,
    "model_registration": ModelRegistration,
    "dead_letter": DeadLetter,
}
"""File stem of each shipped schema and the record it describes."""

_SECTION = re.compile(r"^(\S.*)\n-+$", re.MULTILINE)
# A Sphinx cross-reference such as :meth:`from_json`.
_ROLE = re.compile(r":[a-z]+:`([^`]+)`")


def json_schema(record_type: type[Record]) -> dict[str, Any]:
    """Generate the JSON Schema document of a record class.

    >>> schema = json_schema(PredictionEvent)
    >>> schema["required"]
    ['model', 'version', 'request_id', 'features']
    >>> schema["properties"]["version"]["minimum"]
    1
    """
    definitions: dict[str, dict[str, Any]] = {}
    document = {"$schema": DIALECT, **_object_schema(record_type, definitions)}
    if record_type in EXAMPLES:
        document["examples"] = [EXAMPLES[record_type].to_dict()]
    if definitions:
        document["$defs"] = dict(sorted(definitions.items()))
    return document


def render_schema(record_type: type[Record]) -> bytes:
    """Return the schema file of a record class: indented JSON, final newline."""
    return orjson.dumps(json_schema(record_type), option=orjson.OPT_INDENT_2) + b"\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write ``<stem>.schema.json`` for every record; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, record_type in RECORDS.items():
        path = directory / f"{stem}.schema.json"
        path.write_bytes(render_schema(record_type))
        written.append(path)
    return written


def stale_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Return the schema files that are missing or differ from the generator's."""
    stale = []
    for stem, record_type in RECORDS.items():
        path = directory / f"{stem}.schema.json"
        if not path.is_file() or path.read_bytes() != render_schema(record_type):
            stale.append(path)
    return stale


def _object_schema(
    record_type: type[Record], definitions: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    summary, descriptions = _read_docstring(record_type)
    codec = codec_of(record_type)
    properties = {}
    for spec in codec.fields:
        description = descriptions.get(spec.name)
        if description is None:
            raise ValueError(
                f"{record_type.__name__}.{spec.name} has no description; add it "
                "to the Attributes section of the class docstring"
            )
        node = OptionalNode(spec.node) if spec.fallback else spec.node
        schema = {"description": description, **_node_schema(node, definitions)}
        if spec.default is not None:
            schema["default"] = spec.node.encode(spec.default(), spec.name)
        properties[spec.wire_name] = schema

    document: dict[str, Any] = {
        "title": record_type.__name__,
        "description": summary,
        "type": "object",
        "required": [spec.wire_name for spec in codec.fields if spec.required],
        "properties": properties,
    }
    rules = record_type._schema_rules()
    if rules:
        document["allOf"] = rules
    return document


def _node_schema(node: Any, definitions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    scalar = _scalar_schema(node)
    if scalar is not None:
        return scalar

    if isinstance(node, OptionalNode):
        return _nullable(_node_schema(node.inner, definitions))
    if isinstance(node, ListNode):
        schema = {"type": "array", "items": _node_schema(node.item, definitions)}
        if node.constraints.unique_items:
            schema["uniqueItems"] = True
        return schema
    if isinstance(node, MapNode):
        schema = {"type": "object"}
        if node.key.constraints != NO_CONSTRAINTS:
            schema["propertyNames"] = _node_schema(node.key, definitions)
        schema["additionalProperties"] = _node_schema(node.value, definitions)
        return schema
    if isinstance(node, RecordNode):
        name = node.record_type.__name__
        if name not in definitions:
            # Reserve the name first, so a record that contains itself ends.
            definitions[name] = {}
            definitions[name] = _object_schema(node.record_type, definitions)
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON Schema form for {node!r}")


def _scalar_schema(node: Any) -> dict[str, Any] | None:
    """Return the schema of a node without children, or None for other nodes."""
    if isinstance(node, AnyNode):
        return {}
    if isinstance(node, BooleanNode):
        return {"type": "boolean"}
    if isinstance(node, StringNode):
        return {"type": "string", **_string_keywords(node.constraints)}
    if isinstance(node, IntegerNode):
        return {"type": "integer", **_number_keywords(node.constraints)}
    if isinstance(node, NumberNode):
        return {"type": "number", **_number_keywords(node.constraints)}
    if isinstance(node, TimeNode):
        return _time_schema(node)
    if isinstance(node, EnumNode):
        return {"type": "string", "enum": node.values}
    return None


def _string_keywords(limits: Constraints) -> dict[str, Any]:
    keywords: dict[str, Any] = {}
    if limits.min_length is not None:
        keywords["minLength"] = limits.min_length
    if limits.max_length is not None:
        keywords["maxLength"] = limits.max_length
    if limits.pattern is not None:
        keywords["pattern"] = limits.pattern
    if limits.excluded:
        keywords["not"] = {"enum": list(limits.excluded)}
    return keywords


def _number_keywords(limits: Constraints) -> dict[str, Any]:
    names = {
        "minimum": limits.minimum,
        "maximum": limits.maximum,
        "exclusiveMinimum": limits.exclusive_minimum,
        "exclusiveMaximum": limits.exclusive_maximum,
    }
    return {name: bound for name, bound in names.items() if bound is not None}


def _time_schema(node: TimeNode) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    # A time without an offset is not an RFC 3339 date-time, so only the strict
    # form carries the format annotation.
    if not node.constraints.naive_time_is_utc:
        schema["format"] = "date-time"
    schema["pattern"] = node.pattern
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str) and "$ref" not in schema:
        widened = {**schema, "type": [kind, "null"]}
        if "enum" in schema:
            widened["enum"] = [*schema["enum"], None]
        return widened
    if not schema:
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


def _read_docstring(record_type: type) -> tuple[str, dict[str, str]]:
    """Split a numpydoc class docstring into its text and field descriptions.

    The text is everything before the first section, in Markdown: lines of a
    paragraph are joined, and ``literal`` and Sphinx references such as
    :meth:`from_json` become `literal`.
    """
    text = inspect.cleandoc(record_type.__doc__ or "")
    sections = {}
    heads = list(_SECTION.finditer(text))
    for head, following in zip(heads, [*heads[1:], None], strict=True):
        end = following.start() if following else len(text)
        sections[head.group(1).strip()] = text[head.end() : end]
    intro = text[: heads[0].start()] if heads else text
    return _markdown(intro), _attribute_descriptions(sections.get("Attributes", ""))


def _attribute_descriptions(section: str) -> dict[str, str]:
    descriptions: dict[str, list[str]] = {}
    current = None
    for line in section.splitlines():
        if line and not line[0].isspace():
            current = line.split(":")[0].strip()
            descriptions[current] = []
        elif current is not None:
            descriptions[current].append(line)
    return {name: _markdown("\n".join(lines)) for name, lines in descriptions.items()}


def _markdown(text: str) -> str:
    paragraphs = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
    joined = "\n\n".join(paragraph for paragraph in paragraphs if paragraph)
    return _ROLE.sub(r"`\1`", joined).replace("``", "`")
