"""Validation errors of incoming events."""

__all__ = ["InvalidEvent"]


class InvalidEvent(ValueError):
    """An event does not match the prediction event schema.

    ``field`` names the offending field (``""`` for the whole event), and the
    message says what was expected and what came.
    """

    def __init__(self, field: str, expected: str, got: str) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        where = f"field {field!r}" if field else "event"
        super().__init__(f"{where}: expected {expected}, got {got}")
