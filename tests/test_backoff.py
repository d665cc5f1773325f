"""The house backoff (``core.backoff``): the one rule for how long mailboxes, the outbox and
token endpoints wait before trying again after failures in a row."""
from __future__ import annotations

import random

from inboxcrm.core.backoff import backoff_delay

LOW, HIGH = (lambda: 0.0), (lambda: 1.0)  # the jitter's two extremes


def test_the_wait_is_between_half_the_step_and_the_whole_step():
    for failures in range(1, 12):
        step = min(900.0, 5.0 * 2 ** (failures - 1))
        assert backoff_delay(failures, 900, 5, LOW) == step / 2
        assert backoff_delay(failures, 900, 5, HIGH) == step
        assert step / 2 <= backoff_delay(failures, 900, 5) <= step


def test_each_failure_doubles_the_step():
    assert [backoff_delay(n, 10_000, 80, HIGH) for n in range(1, 7)] == [80, 160, 320, 640, 1280, 2560]
    assert [backoff_delay(n, 10_000, 80, LOW) for n in range(1, 7)] == [40, 80, 160, 320, 640, 1280]


def test_the_step_stops_at_the_cap():
    assert backoff_delay(6, 900, 30, HIGH) == 900  # 30 * 32 = 960 would be more
    for failures in (7, 10, 33, 64, 10_000):  # no overflow however long the outage
        assert backoff_delay(failures, 900, 30, HIGH) == 900
        assert backoff_delay(failures, 900, 30, LOW) == 450


def test_no_failure_counted_yet_waits_like_the_first():
    assert backoff_delay(0, 900, 5, HIGH) == backoff_delay(-3, 900, 5, HIGH) == backoff_delay(1, 900, 5, HIGH) == 5


def test_the_jitter_spreads_waits_that_failed_together():
    """Mailboxes (or outbox rows) that failed in the same outage come back at different times,
    spread over the random half of the step, not bunched at one end."""
    rng = random.Random(12)
    waits = [backoff_delay(4, 900, 5, rng.random) for _ in range(1000)]  # step 40 s: 20 to 40 s
    assert 20 <= min(waits) < 21 and 39 < max(waits) <= 40
    assert len({round(w, 3) for w in waits}) > 900
    below_middle = sum(w < 30 for w in waits)
    assert 400 < below_middle < 600
