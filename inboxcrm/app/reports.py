"""``inboxcrm report NAME`` and the weekly review's figures: loads a period's rows through
``store.report_queries`` and hands them to the pure report builders of ``core.metrics``.

Read-only, so there is nothing to audit. The period is made of whole local days of the team's
time zone, because a manager asks about "the last four weeks", not about UTC instants.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from inboxcrm.config import Config, parse_weekdays
from inboxcrm.core import metrics
from inboxcrm.core.business_time import at_wall, local_date, parse_span
from inboxcrm.core.metrics import Period, Report
from inboxcrm.errors import Invalid
from inboxcrm.store import report_queries as queries
from inboxcrm.store.db import Session
from inboxcrm.values import BY_CHOICES, REPORT_NAMES

DEFAULT_WEEKS = 4


def period_for(now: datetime, zone: ZoneInfo, since: date | None, until: date | None,
               weeks: int | None) -> Period:
    """Local days -> UTC instants: from the start of ``since`` to the end of ``until`` (both
    included); by default the last ``DEFAULT_WEEKS`` weeks ending with today. ``weeks`` counts
    back from ``until`` (or today)."""
    if weeks is not None and since is not None:
        raise Invalid("give --weeks or --since, not both: --weeks N counts back from --until (or today)")
    if weeks is not None and weeks < 1:
        raise Invalid(f"--weeks must be 1 or more, not {weeks}")
    last = until if until is not None else local_date(now, zone)
    end = last + timedelta(days=1)
    start = since if since is not None else end - timedelta(weeks=weeks or DEFAULT_WEEKS)
    if start >= end:
        raise Invalid(f"--since {start.isoformat()} is after --until {last.isoformat()}; "
                      f"give a --since on or before {last.isoformat()}")
    return Period(at_wall(start, time(0), zone), at_wall(end, time(0), zone))


def run_report(session: Session, config: Config, name: str, period: Period, by: str | None,
               now: datetime) -> Report:
    if name not in REPORT_NAMES:
        raise Invalid(f'unknown report "{name}"; reports are: {", ".join(REPORT_NAMES)}')
    choices = BY_CHOICES[name]
    if by is not None and by not in choices:
        if not choices:
            raise Invalid(f"the {name} report has no --by breakdown; leave --by out")
        raise Invalid(f'the {name} report cannot be broken down by "{by}"; --by takes: {", ".join(choices)}')
    if name == "forecast":
        from inboxcrm.app.forecast import forecast_report
        return forecast_report(session, config, now)
    return _BUILDERS[name](_Inputs(session, config, period, now), by or (choices[0] if choices else None))


def headline_figures(session: Session, config: Config, period: Period, now: datetime) -> dict[str, Report]:
    """Every report but the forecast over ``period``, each with its default breakdown: what the
    weekly review compares with the previous period."""
    inputs = _Inputs(session, config, period, now)
    return {name: _BUILDERS[name](inputs, BY_CHOICES[name][0] if BY_CHOICES[name] else None)
            for name in REPORT_NAMES if name != "forecast"}


class _Inputs:
    """A report run's session, settings and period; each kind of row is loaded once, however
    many reports of the run read it (the review runs them all)."""

    def __init__(self, session: Session, config: Config, period: Period, now: datetime):
        self.session, self.config, self.period, self.now = session, config, period, now
        self.min_sample = config.reports.min_sample
        self.zone = ZoneInfo(config.team.timezone)
        self._cache: dict[str, object] = {}

    def _once(self, key: str, load: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    def stages(self):
        return self._once("stages", lambda: queries.stages(self.session))

    def rep_names(self):
        return self._once("reps", lambda: queries.rep_names(self.session))

    def created(self):
        return self._once("created", lambda: queries.created_in(self.session, self.period.since, self.period.until))

    def closed(self):
        return self._once("closed", lambda: queries.closed_in(self.session, self.period.since, self.period.until))

    def moves(self):
        return self._once("moves", lambda: queries.moves_in(self.session, self.period.since, self.period.until))

    def open_deals(self):
        return self._once("open", lambda: queries.open_deals(self.session))


def _pipeline(run: _Inputs, by: str) -> Report:
    return metrics.pipeline_report(run.period, by, run.stages(), queries.open_totals(run.session, by),
                                   run.rep_names())


def _funnel(run: _Inputs, by: None) -> Report:
    return metrics.funnel_report(run.period, run.stages(), run.moves(), run.created(), run.min_sample)


def _velocity(run: _Inputs, by: None) -> Report:
    earlier = queries.history_of(run.session, sorted(metrics.needs_earlier_history(run.moves(), run.period)),
                                 before=run.period.since)
    return metrics.velocity_report(run.period, run.now, run.stages(), run.open_deals(), run.moves(), earlier,
                                   run.closed(), run.min_sample)


def _wins(run: _Inputs, by: None) -> Report:
    history = queries.history_of(run.session, [d.id for d in run.closed()])
    return metrics.wins_report(run.period, run.stages(), run.closed(), history, run.rep_names(), run.min_sample)


def _sources(run: _Inputs, by: None) -> Report:
    return metrics.sources_report(run.period, run.zone, run.stages(), run.created(), run.moves(), run.closed(),
                                  queries.source_costs(run.session))


def _response(run: _Inputs, by: str) -> Report:
    digest = run.config.digest
    hours = metrics.BusinessHours(run.zone, parse_weekdays(digest.days), parse_span(digest.business_hours))
    return metrics.response_report(run.period, by, run.created(), queries.waiting(run.session), run.rep_names(),
                                   hours, run.config.reports.response_target_minutes, run.min_sample)


def _activity(run: _Inputs, by: str) -> Report:
    pipe = metrics.Pipeline(run.stages())
    movers = queries.deals_by_id(run.session, sorted({m.deal_id for m in run.moves() if pipe.forward(m)}))
    return metrics.activity_report(run.period, by, run.stages(), run.created(), run.moves(), movers, run.closed(),
                                   run.rep_names())


_BUILDERS: dict[str, Callable[[_Inputs, str | None], Report]] = {
    "pipeline": _pipeline, "funnel": _funnel, "velocity": _velocity, "wins": _wins, "sources": _sources,
    "response": _response, "activity": _activity,
}
