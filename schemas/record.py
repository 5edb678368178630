"""Records declared once for validation, JSON encoding and JSON Schema.

A record is a frozen dataclass that subclasses :class:`Record`. The type hint
of each field gives its JSON type, and :func:`schema_field` adds constraints
such as a length limit or a minimum. From these the module compiles one codec
per record class. The codec validates incoming JSON and outgoing records, and
:mod:`schemas.export` turns the same codec into JSON Schema, so the Python
validator and the shipped schema files follow one declaration.

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``datetime``,
``StrEnum`` subclasses, ``Any`` (any JSON value), other records, ``list[T]``,
``dict[str, T]`` and ``T | None``.

JSON objects may carry fields a record does not declare. The decoder ignores
them, so a consumer keeps working when a later version adds a field.
"""

import dataclasses
import enum
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import orjson

from schemas.errors import InvalidEvent

__all__ = [
    "COUNT",
    "NAME",
    "NO_CONSTRAINTS",
    "SHARE",
    "VERSION",
    "Constraints",
    "Record",
    "codec_of",
    "describe",
    "format_time",
    "schema_field",
]

_OPTIONS_KEY = "oddwatch.schema"

TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)
"""RFC 3339 date-time with an offset, as every record oddwatch writes has."""

LENIENT_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
"""ISO 8601 date and time whose offset may be missing, for producers' events."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Constraints:
    """Limits on a value, checked in Python and written to JSON Schema.

    Each attribute maps to the JSON Schema keyword of the same meaning, except
    for ``pattern_text``, which describes in words what ``pattern`` requires, for
    error messages, and ``naive_time_is_utc``, which lets a time come without
    an offset and reads it as UTC. ``pattern`` is an ECMA-262 regular
    expression searched in the value, so anchor it with ``^...$`` to match the
    whole string. ``excluded`` lists strings that are not allowed.
    """

    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    pattern_text: str | None = None
    excluded: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    unique_items: bool = False
    naive_time_is_utc: bool = False


NO_CONSTRAINTS = Constraints()
NAME = Constraints(max_length=256, pattern=r"\S", pattern_text="a non-blank string")
"""Model names, request and batch ids, feature and check names."""
VERSION = Constraints(minimum=1, maximum=2**32 - 1)
"""Model versions: they are stored as ClickHouse UInt32."""
COUNT = Constraints(minimum=0)
SHARE = Constraints(minimum=0, maximum=1)


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldOptions:
    constraints: Constraints
    items: Constraints
    keys: Constraints
    wire_name: str | None
    fallback: bool


def schema_field(
    constraints: Constraints = NO_CONSTRAINTS,
    *,
    items: Constraints = NO_CONSTRAINTS,
    keys: Constraints = NO_CONSTRAINTS,
    wire_name: str | None = None,
    fallback: bool = False,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """Declare a record field together with the constraints on its value.

    ``constraints`` apply to the value itself, ``items`` to each element of a
    list or each value of a dict, and ``keys`` to each key of a dict.
    ``wire_name`` is the JSON name when it differs from the attribute name. A
    ``fallback`` field may be missing or null in JSON, and the decoder then
    takes its value from the caller.
    """
    options = _FieldOptions(constraints, items, keys, wire_name, fallback)
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={_OPTIONS_KEY: options},
    )


def format_time(moment: datetime) -> str:
    """Format an aware datetime as ISO 8601 UTC with milliseconds and ``Z``.

    Digits below the millisecond are dropped, as ClickHouse DateTime64(3)
    stores them.

    >>> from datetime import datetime, timedelta, timezone
    >>> format_time(datetime(2026, 12, 4, 16, 0, 0, 123456,
    ...                      tzinfo=timezone(timedelta(hours=1))))
    '2026-12-04T15:00:00.123Z'
    """
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"


def describe(value: Any) -> str:
    """Describe a value for the "got" part of an error message, shortened."""
    if value is None:
        return "nothing"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    text = repr(value)
    if len(text) > 64:
        text = text[:61] + "..."
    return f"{_json_kind(value)} {text}"


def _json_kind(value: Any) -> str:
    kinds = {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }
    return kinds.get(type(value), type(value).__name__)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _plain(value: Any) -> Any:
    """Turn a NumPy scalar into the Python scalar of the same value."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _python_regex(pattern: str) -> re.Pattern[str]:
    # In ECMA-262, as JSON Schema uses it, "$" matches only at the very end.
    # In Python it also matches before a final newline, but "\Z" does not.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


# Nodes: one per JSON type, each decoding a JSON value into its Python value
# and encoding a Python value into JSON, and raising InvalidEvent on the way.


@dataclasses.dataclass(frozen=True)
class StringNode:
    constraints: Constraints = NO_CONSTRAINTS

    @functools.cached_property
    def regex(self) -> re.Pattern[str] | None:
        pattern = self.constraints.pattern
        return None if pattern is None else _python_regex(pattern)

    @property
    def expected(self) -> str:
        limits = self.constraints
        text = limits.pattern_text or "a string"
        lengths = []
        if limits.min_length is not None:
            lengths.append(f"at least {limits.min_length} characters")
        if limits.max_length is not None:
            lengths.append(f"at most {limits.max_length} characters")
        if lengths:
            text += " of " + " and ".join(lengths)
        return text

    def decode(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise InvalidEvent(path, self.expected, describe(value))
        limits = self.constraints
        if limits.min_length is not None and len(value) < limits.min_length:
            raise InvalidEvent(path, self.expected, describe(value))
        if limits.max_length is not None and len(value) > limits.max_length:
            raise InvalidEvent(
                path,
                f"at most {limits.max_length} characters",
                f"{len(value)} characters",
            )
        if self.regex is not None and self.regex.search(value) is None:
            raise InvalidEvent(path, self.expected, describe(value))
        if value in limits.excluded:
            allowed = f"{self.expected} other than " + ", ".join(
                repr(name) for name in limits.excluded
            )
            raise InvalidEvent(path, allowed, describe(value))
        return value

    encode = decode


def _bounds_text(limits: Constraints) -> str:
    bounds = [
        (">=", limits.minimum),
        (">", limits.exclusive_minimum),
        ("<=", limits.maximum),
        ("<", limits.exclusive_maximum),
    ]
    return " and ".join(
        f"{operator} {bound!r}" for operator, bound in bounds if bound is not None
    )


def _within_bounds(number: float, limits: Constraints) -> bool:
    return not (
        (limits.minimum is not None and number < limits.minimum)
        or (limits.maximum is not None and number > limits.maximum)
        or (limits.exclusive_minimum is not None and number <= limits.exclusive_minimum)
        or (limits.exclusive_maximum is not None and number >= limits.exclusive_maximum)
    )


@dataclasses.dataclass(frozen=True)
class IntegerNode:
    """An integer; JSON numbers with a zero fraction, such as 3.0, count too."""

    constraints: Constraints = NO_CONSTRAINTS

    @property
    def expected(self) -> str:
        bounds = _bounds_text(self.constraints)
        return f"an integer {bounds}" if bounds else "an integer"

    def decode(self, value: Any, path: str) -> int:
        value = _plain(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidEvent(path, self.expected, describe(value))
        if not _within_bounds(value, self.constraints):
            raise InvalidEvent(path, self.expected, describe(value))
        return value

    encode = decode


@dataclasses.dataclass(frozen=True)
class NumberNode:
    """A finite number; NaN and infinity have no JSON form."""

    constraints: Constraints = NO_CONSTRAINTS

    @property
    def expected(self) -> str:
        bounds = _bounds_text(self.constraints)
        return f"a finite number {bounds}" if bounds else "a finite number"

    def decode(self, value: Any, path: str) -> float:
        value = _plain(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidEvent(path, self.expected, describe(value))
        try:
            number = float(value)
        except OverflowError:
            raise InvalidEvent(path, self.expected, describe(value)) from None
        if not math.isfinite(number) or not _within_bounds(number, self.constraints):
            raise InvalidEvent(path, self.expected, describe(value))
        return number

    encode = decode


@dataclasses.dataclass(frozen=True)
class BooleanNode:
    expected: ClassVar[str] = "true or false"

    def decode(self, value: Any, path: str) -> bool:
        value = _plain(value)
        if not isinstance(value, bool):
            raise InvalidEvent(path, self.expected, describe(value))
        return value

    encode = decode


@dataclasses.dataclass(frozen=True)
class TimeNode:
    """A point in time: an ISO 8601 string in JSON, an aware datetime in Python."""

    constraints: Constraints = NO_CONSTRAINTS

    @property
    def pattern(self) -> str:
        if self.constraints.naive_time_is_utc:
            return LENIENT_TIME_PATTERN
        return TIME_PATTERN

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        return _python_regex(self.pattern)

    @property
    def expected(self) -> str:
        if self.constraints.naive_time_is_utc:
            return "an ISO 8601 time such as 2026-12-04T15:00:00.123Z"
        return "an ISO 8601 time with offset such as 2026-12-04T15:00:00.123Z"

    def decode(self, value: Any, path: str) -> datetime:
        if not isinstance(value, str):
            raise InvalidEvent(path, self.expected, describe(value))
        if self.regex.search(value) is None:
            raise InvalidEvent(path, self.expected, repr(value[:64]))
        try:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC)
        except (ValueError, OverflowError) as error:
            raise InvalidEvent(
                path, self.expected, f"{value[:64]!r} ({error})"
            ) from None

    def encode(self, value: Any, path: str) -> str:
        if not isinstance(value, datetime):
            raise InvalidEvent(path, "a datetime", describe(value))
        if value.utcoffset() is None:
            raise InvalidEvent(path, "a timezone-aware datetime", f"naive {value}")
        try:
            return format_time(value)
        except OverflowError:
            raise InvalidEvent(
                path, "a time within years 1 to 9999 in UTC", str(value)
            ) from None


@dataclasses.dataclass(frozen=True)
class EnumNode:
    """A string from a fixed set, a ``StrEnum`` member in Python.

    Members of another ``StrEnum`` with an allowed value encode too.
    """

    enum_type: type[enum.StrEnum]

    @functools.cached_property
    def members(self) -> dict[str, enum.StrEnum]:
        """Each allowed value and its member, in definition order."""
        return {member.value: member for member in self.enum_type}

    @property
    def values(self) -> list[str]:
        return list(self.members)

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(repr(value) for value in self.values)

    def decode(self, value: Any, path: str) -> enum.StrEnum:
        member = self.members.get(value) if isinstance(value, str) else None
        if member is None:
            raise InvalidEvent(path, self.expected, describe(value))
        return member

    def encode(self, value: Any, path: str) -> str:
        return self.decode(value, path).value


@dataclasses.dataclass(frozen=True)
class AnyNode:
    expected: ClassVar[str] = "any JSON value"

    def decode(self, value: Any, path: str) -> Any:
        return value

    encode = decode


@dataclasses.dataclass(frozen=True)
class OptionalNode:
    inner: Any

    @property
    def expected(self) -> str:
        return f"{self.inner.expected} or null"

    def decode(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.decode(value, path)

    def encode(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.encode(value, path)


@dataclasses.dataclass(frozen=True)
class ListNode:
    item: Any
    constraints: Constraints = NO_CONSTRAINTS

    expected: ClassVar[str] = "an array"

    def decode(self, value: Any, path: str) -> list:
        return self._convert(value, path, self.item.decode)

    def encode(self, value: Any, path: str) -> list:
        return self._convert(value, path, self.item.encode)

    def _convert(self, value: Any, path: str, convert: Callable) -> list:
        if not isinstance(value, list | tuple):
            raise InvalidEvent(path, self.expected, describe(value))
        try:
            converted = [convert(item, path) for item in value]
        except InvalidEvent:
            # As in MapNode, item paths are built only to name the item at fault.
            converted = [convert(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if self.constraints.unique_items:
            _require_unique(converted, path)
        return converted


def _require_unique(items: list, path: str) -> None:
    seen = set()
    for i, item in enumerate(items):
        key = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
        if key in seen:
            raise InvalidEvent(
                f"{path}[{i}]", "no repeated items", f"{describe(item)} again"
            )
        seen.add(key)


@dataclasses.dataclass(frozen=True)
class MapNode:
    key: StringNode
    value: Any

    expected: ClassVar[str] = "an object"

    def decode(self, value: Any, path: str) -> dict:
        return self._convert(value, path, self.value.decode)

    def encode(self, value: Any, path: str) -> dict:
        return self._convert(value, path, self.value.encode)

    def _convert(self, value: Any, path: str, convert: Callable) -> dict:
        if not isinstance(value, Mapping):
            raise InvalidEvent(path, self.expected, describe(value))
        self._check_keys(value, path)
        # Any JSON value passes, so the loop below would only copy.
        if isinstance(self.value, AnyNode):
            return dict(value)
        try:
            return {key: convert(item, path) for key, item in value.items()}
        except InvalidEvent:
            # Building each item's path costs more than converting most items,
            # so it is done only to name the item at fault.
            return {
                key: convert(item, f"{path}[{key!r}]") for key, item in value.items()
            }

    def _check_keys(self, value: Mapping, path: str) -> None:
        for key in value:
            if not isinstance(key, str):
                raise InvalidEvent(path, "an object with string keys", describe(key))
        if self.key.constraints == NO_CONSTRAINTS:
            return
        for key in value:
            try:
                self.key.decode(key, path)
            except InvalidEvent as error:
                raise InvalidEvent(
                    path, f"keys that are {error.expected}", error.got
                ) from None


@dataclasses.dataclass(frozen=True)
class RecordNode:
    record_type: type["Record"]

    expected: ClassVar[str] = "an object"

    def decode(self, value: Any, path: str) -> "Record":
        if not isinstance(value, Mapping):
            raise InvalidEvent(path, self.expected, describe(value))
        return codec_of(self.record_type).decode(value, path)

    def encode(self, value: Any, path: str) -> dict:
        if not isinstance(value, self.record_type):
            raise InvalidEvent(path, f"a {self.record_type.__name__}", describe(value))
        return codec_of(self.record_type).encode(value, path)


@dataclasses.dataclass(frozen=True, slots=True)
class FieldCodec:
    """One record field: its attribute and JSON names, and how to convert it."""

    name: str
    wire_name: str
    node: Any
    default: Callable[[], Any] | None
    fallback: bool

    @property
    def required(self) -> bool:
        """Whether the field must appear in JSON."""
        return self.default is None and not self.fallback


@dataclasses.dataclass(frozen=True, slots=True)
class RecordCodec:
    """The compiled declaration of one record class."""

    record_type: type["Record"]
    fields: tuple[FieldCodec, ...]

    def decode(
        self,
        document: Mapping[str, Any],
        path: str = "",
        fallbacks: Mapping[str, Any] | None = None,
    ) -> "Record":
        """Validate a decoded JSON object and build the record from it."""
        values = {}
        for spec in self.fields:
            where = _join(path, spec.wire_name)
            raw = document.get(spec.wire_name)
            if spec.wire_name not in document and spec.default is not None:
                values[spec.name] = spec.default()
            elif raw is None and spec.fallback and spec.name in (fallbacks or {}):
                values[spec.name] = fallbacks[spec.name]
            elif spec.wire_name not in document:
                raise InvalidEvent(where, spec.node.expected, "nothing")
            else:
                values[spec.name] = spec.node.decode(raw, where)
        record = self.record_type(**values)
        record._check(path)
        return record

    def encode(self, record: "Record", path: str = "") -> dict[str, Any]:
        """Validate a record and return it as a JSON-ready dict."""
        document = {
            spec.wire_name: spec.node.encode(
                getattr(record, spec.name), _join(path, spec.wire_name)
            )
            for spec in self.fields
        }
        record._check(path)
        return document


@functools.cache
def codec_of(record_type: type["Record"]) -> RecordCodec:
    """Compile, once per class, the fields of a record class into a codec."""
    hints = typing.get_type_hints(record_type)
    fields = []
    for field in dataclasses.fields(record_type):
        options = field.metadata.get(_OPTIONS_KEY) or _FieldOptions(
            NO_CONSTRAINTS, NO_CONSTRAINTS, NO_CONSTRAINTS, None, False
        )
        where = f"{record_type.__name__}.{field.name}"
        node = _node_for(hints[field.name], options.constraints, options, where)
        fields.append(
            FieldCodec(
                name=field.name,
                wire_name=options.wire_name or field.name,
                node=node,
                default=_default_of(field),
                fallback=options.fallback,
            )
        )
    return RecordCodec(record_type, tuple(fields))


def _default_of(field: dataclasses.Field) -> Callable[[], Any] | None:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory
    if field.default is not dataclasses.MISSING:
        value = field.default
        return lambda: value
    return None


def _node_for(
    hint: Any, constraints: Constraints, options: _FieldOptions, where: str
) -> Any:
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if hint is Any:
        return AnyNode()
    if origin in (types.UnionType, typing.Union):
        others = [argument for argument in arguments if argument is not type(None)]
        if len(others) != 1 or len(arguments) != 2:
            raise TypeError(f"{where}: only `T | None` unions are supported")
        return OptionalNode(_node_for(others[0], constraints, options, where))
    if origin is list:
        item = _node_for(arguments[0], options.items, options, where)
        return ListNode(item, constraints)
    if origin is dict:
        if arguments[0] is not str:
            raise TypeError(f"{where}: JSON object keys are strings, not {hint}")
        value = _node_for(arguments[1], options.items, options, where)
        return MapNode(StringNode(options.keys), value)
    if hint is bool:
        return BooleanNode()
    scalars = {int: IntegerNode, float: NumberNode, str: StringNode, datetime: TimeNode}
    if hint in scalars:
        return scalars[hint](constraints)
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return EnumNode(hint)
    if isinstance(hint, type) and issubclass(hint, Record):
        return RecordNode(hint)
    raise TypeError(f"{where}: type {hint!r} has no JSON form")


def load_object(raw: bytes | str, max_bytes: int | None = None) -> dict[str, Any]:
    """Decode JSON text that must contain one object; raise InvalidEvent if not."""
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidEvent("", f"at most {max_bytes} bytes", f"{len(raw)} bytes")
    if len(raw) == 0:
        raise InvalidEvent(
            "", "a JSON object in UTF-8", "invalid JSON (an empty message or tombstone)"
        )
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent(
            "", "a JSON object in UTF-8", f"invalid JSON ({error})"
        ) from None
    if not isinstance(document, dict):
        raise InvalidEvent("", "a JSON object", f"a JSON {_json_kind(document)}")
    return document


class Record:
    """Base of the records: validated JSON encoding and decoding.

    Subclasses are frozen dataclasses with slots whose fields are declared as
    described in this module. Constructing a record does not validate it,
    which keeps the stream's hot path cheap: :meth:`to_json` and
    :meth:`to_dict` validate before encoding, and :meth:`from_json` and
    :meth:`from_dict` validate while decoding. Both raise InvalidEvent naming
    the field, such as ``reasons[0].status``, what was expected and what came.
    """

    __slots__ = ()

    max_json_bytes: ClassVar[int | None] = None
    """Longest JSON text :meth:`from_json` accepts, or None for no limit."""

    def to_dict(self) -> dict[str, Any]:
        """Validate the record and return it as a JSON-ready dict."""
        return codec_of(type(self)).encode(self)

    def to_json(self) -> bytes:
        """Validate the record and encode it as compact UTF-8 JSON."""
        document = self.to_dict()
        try:
            return orjson.dumps(document)
        except orjson.JSONEncodeError as error:
            raise InvalidEvent(
                "", "values that JSON can represent", str(error)
            ) from None

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Self:
        """Validate a decoded JSON object and build the record from it."""
        if not isinstance(document, Mapping):
            raise InvalidEvent("", "a JSON object", describe(document))
        return codec_of(cls).decode(document)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        """Decode and validate JSON text holding one record."""
        return codec_of(cls).decode(load_object(raw, cls.max_json_bytes))

    def _check(self, path: str) -> None:
        """Check rules that span fields; raise InvalidEvent on a violation.

        Called after the fields are validated one by one, with ``path`` the
        location of this record inside the enclosing one ("" at the top).
        """

    @classmethod
    def _schema_rules(cls) -> list[dict[str, Any]]:
        """Return the JSON Schema form of the rules of :meth:`_check`.

        Rules JSON Schema cannot express are left out and stated in the
        record's docstring instead.
        """
        return []
