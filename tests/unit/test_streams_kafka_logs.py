"""Rate limiting of librdkafka's log lines."""

import logging

from streams.kafka_logs import RepeatFilter


def _record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("kafka", level, __file__, 1, message, None, None)


def test_repeat_filter_keeps_first_of_kind():
    repeat = RepeatFilter(interval=60)
    first = _record("FAIL [thrd:a]: connect to 127.0.0.1:1 failed")
    assert repeat.filter(first)
    assert not repeat.filter(_record("FAIL [thrd:a]: connect failed again"))
    assert repeat.filter(_record("REQTMOUT [thrd:a]: timed out"))
    assert repeat.filter(_record("FAIL [thrd:a]: other level", logging.WARNING))


def test_repeat_filter_counts_left_out_lines():
    repeat = RepeatFilter(interval=0.0)
    assert repeat.filter(_record("FAIL one"))
    repeat.interval = 3600
    for _ in range(5):
        assert not repeat.filter(_record("FAIL again"))
    repeat.interval = 0.0
    later = _record("FAIL later")
    assert repeat.filter(later)
    assert later.getMessage() == "FAIL later (5 similar lines left out)"
