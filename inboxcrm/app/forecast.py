"""The forecast report (``inboxcrm report forecast``, the weekly review): the rows from
``store.forecast_queries``, the figures from ``core.forecast``, in the team's time zone."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from inboxcrm.config import Config
from inboxcrm.core import forecast
from inboxcrm.core.business_time import local_date
from inboxcrm.core.metrics import Report
from inboxcrm.store import forecast_queries as queries
from inboxcrm.store.db import Session


def forecast_report(session: Session, config: Config, now: datetime) -> Report:
    """This month and next as the close dates say, the slipped deals, and the last months'
    forecasts against what was won. Months and "today" are the team's (``[team] timezone``)."""
    zone = ZoneInfo(config.team.timezone)
    today = local_date(now, zone)
    months = forecast.months_around(today, zone)
    odds = queries.stage_odds(session)
    first, last = months.past[0], months.past[-1]
    return forecast.build_report(
        today, months, odds,
        dated=queries.open_deals_closing_before(session, months.until),
        past=queries.past_close_dates(session, first.start, last.start, (first.first, months.this.first)),
        closed=queries.closed_between(session, first.start, last.end, [s.id for s in odds if s.kind == "won"]),
        min_sample=config.reports.min_sample)
