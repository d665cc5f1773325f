"""Deal score = fit (who they are) + engagement (how they talk to us), recomputed on activity."""
from __future__ import annotations

COMPANY_DOMAIN_POINTS = 10
INBOUND_POINTS = 5
OUTBOUND_POINTS = 2
ENGAGEMENT_CAP = 50


def fit_points(has_company: bool, rule_points: int) -> int:
    """A business domain is worth more than a freemail address; rules add their own points."""
    return (COMPANY_DOMAIN_POINTS if has_company else 0) + rule_points


def engagement_points(inbound: int, outbound: int) -> int:
    """Replies count, capped so that a chatty thread cannot outweigh fit forever."""
    return min(ENGAGEMENT_CAP, inbound * INBOUND_POINTS + outbound * OUTBOUND_POINTS)


def score(fit: int, inbound: int, outbound: int) -> int:
    return fit + engagement_points(inbound, outbound)
