"""How long to wait before trying again: one rule for mailboxes, the outbox and token endpoints.

"Equal jitter": the exponential step ``base * 2**(failures-1)``, capped at ``cap``, of which the
first half is fixed and the second half random. The fixed half keeps a broken server from being
retried at once; the random half spreads the mailboxes (or outbox rows, or daemons) that failed
together, so they do not all knock again in the same second after an outage.
"""
from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(failures: int, cap: float, base: float,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after ``failures`` failures in a row (counted from 1)."""
    step = min(float(cap), base * 2 ** min(max(failures, 1) - 1, 32))
    return step / 2 + rand() * step / 2
