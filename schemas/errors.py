"""The validation error of every record."""

__all__ = ["InvalidEvent"]


class InvalidEvent(ValueError):
    """A record does not match its schema.

    ``field`` names the offending field, with the path to it inside nested
    records such as ``reasons[0].status``, or is ``""`` for the whole record.
    ``expected`` and ``got`` describe what was expected and what came.
    """

    def __init__(self, field: str, expected: str, got: str) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        where = f"field {field!r}" if field else "event"
        super().__init__(f"{where}: expected {expected}, got {got}")
