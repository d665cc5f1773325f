"""The report benchmark's data: three years of a 20-rep sales team, generated into a migrated database.

What the reports read has to look like a real pipeline, or the plans and the times say nothing:
deals arrive over three years (a few more each month), most of them closed (won or lost at the
stage they reached), the recent ones still open and spread over the stages; every deal's stage
history starts with its creation row (None -> New) and walks the pipeline, sometimes back a stage
and forward again; messages fall between a deal's creation and its close, the first one inbound
and, on most deals, an answer (the first response) minutes to days later; open deals carry expected
close dates, some of them passed and moved (close_date_history, slips); paid sources have monthly
costs. Deals, messages and stage changes come to exactly the numbers asked for (the default
100,000 / 1,000,000 / 500,000); contacts, companies, message copies (one per message), the audit
log (one entry per deal) and the outbox (a digest per rep per day, three years of them at full
size) come along at their natural size.

SQLite is written with SQLAlchemy Core executemany in big batches; PostgreSQL with psycopg's COPY
(measured at a tenth of the size: the whole generation in 6.4 s instead of 11.0 s with
executemany). ``analyze`` refreshes the planner's statistics.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import JSON, insert, select, text

from digest_bench import chunks  # a sibling script: bench/ is on sys.path
from inboxcrm.store.models import (
    AuditEntry,
    CloseDateChange,
    Company,
    Contact,
    ContactAddress,
    Deal,
    Mailbox,
    Message,
    MessageCopy,
    OutboxMessage,
    Rep,
    RepAddress,
    SourceCost,
    Stage,
    StageChange,
)

NOW = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)  # a Tuesday morning: the data's "now"
TEAM_ZONE = "Europe/Berlin"
YEARS = 3
REPS = 20
BATCH = 20_000
VERSION = 1  # bump when the generated data changes shape: a cached SQLite file is then regenerated

# source -> (share of leads, how much likelier than average a deal from it is won)
SOURCES = {"website": (0.30, 1.0), "referral": (0.12, 1.6), "google-ads": (0.15, 0.8), "linkedin": (0.10, 0.9),
           "trade-show": (0.06, 1.2), "partner": (0.07, 1.4), "cold-outreach": (0.12, 0.6), "newsletter": (0.08, 0.9)}
PAID = {"google-ads": 4000, "linkedin": 2500, "trade-show": 6000, "newsletter": 800}  # monthly cost at the start
LOST_REASONS = ("price", "no budget", "went with a competitor", "no response", "timing", "not a fit")
OPEN_STAGES = ("New", "Contacted", "Qualified", "Proposal", "Negotiation")
# mean days a deal spends in each open stage before it moves on
STAGE_DAYS = {"New": 2.0, "Contacted": 9.0, "Qualified": 13.0, "Proposal": 11.0, "Negotiation": 9.0}
LOST_AT = (0.30, 0.30, 0.20, 0.12, 0.08)  # where lost deals drop out
OPEN_AT = (0.25, 0.25, 0.20, 0.18, 0.12)  # where open deals stand now


@dataclass
class DealPlan:
    """One deal before its timestamps: the stages it walks and how much mail it gets."""

    outcome: str  # won | lost | open
    path: list[str]  # stage names after the creation row's "New", in order
    source: str
    owner: int
    contact: int
    created: datetime
    messages: int = 0
    extra: list[int] = field(default_factory=list)  # positions in path where it bounces back a stage


@dataclass(frozen=True)
class Counts:
    deals: int
    messages: int
    stage_changes: int
    close_date_changes: int
    contacts: int
    companies: int
    open_deals: int

    def __str__(self) -> str:
        return (f"{self.deals:,} deals ({self.open_deals:,} open), {self.messages:,} messages, "
                f"{self.stage_changes:,} stage changes, {self.close_date_changes:,} close date changes, "
                f"{self.contacts:,} contacts, {self.companies:,} companies")


def _weighted(rng: random.Random, weights) -> int:
    return rng.choices(range(len(weights)), weights)[0]


def _open_chance(age_days: float) -> float:
    """Young deals are mostly still open; old ones mostly closed, a few left stale."""
    return 0.9 if age_days < 30 else 0.6 if age_days < 90 else 0.3 if age_days < 180 else 0.12


def plan_deals(rng: random.Random, deals: int, messages: int, stage_changes: int, contacts: int,
               now: datetime) -> tuple[list[DealPlan], int]:
    """Every deal's path and mail count, with the bounces that bring the stage changes to the
    number asked for; returns the plans and how many messages belong to no deal (noise)."""
    span = timedelta(days=365 * YEARS)
    start = now - span
    sources = list(SOURCES)
    share = [SOURCES[s][0] for s in sources]
    skill = [0.7 + 0.6 * rng.random() for _ in range(REPS)]  # some reps win more
    plans = []
    for _ in range(deals):
        created = start + span * (rng.random() ** 0.85)  # a few more leads each month
        source = sources[_weighted(rng, share)]
        owner = rng.randrange(REPS) + 1
        age = (now - created).total_seconds() / 86400
        if rng.random() < _open_chance(age):
            outcome, path = "open", list(OPEN_STAGES[1:_weighted(rng, OPEN_AT) + 1])
        elif rng.random() < min(0.9, 0.3 * SOURCES[source][1] * skill[owner - 1]):
            path = [s for s in OPEN_STAGES[1:] if not (s in ("Qualified", "Negotiation") and rng.random() < 0.1)]
            outcome, path = "won", path + ["Won"]
        else:
            outcome, path = "lost", list(OPEN_STAGES[1:_weighted(rng, LOST_AT) + 1]) + ["Lost"]
        plans.append(DealPlan(outcome, path, source, owner, rng.randrange(contacts) + 1, created))
    # bounces (Proposal -> Qualified -> Proposal) until the history has exactly stage_changes rows
    rows = sum(1 + len(p.path) for p in plans)
    movers = [p for p in plans if sum(s in OPEN_STAGES for s in p.path) >= 2]
    while rows + 2 <= stage_changes and movers:
        plan = rng.choice(movers)
        plan.extra.append(rng.choice([i for i, s in enumerate(plan.path) if s in OPEN_STAGES and i >= 1]))
        rows += 2
    stuck = next((p for p in plans if p.outcome == "open" and p.path), None)
    if rows < stage_changes and stuck:  # one short: an open deal moved back a stage and stays there
        stuck.path.append(OPEN_STAGES[OPEN_STAGES.index(stuck.path[-1]) - 1])
        rows += 1
    # mail: more on deals that went further, about 5% of all messages belong to no deal
    weights = [(1 + len(p.path) + 2 * len(p.extra)) * (0.5 + rng.random()) for p in plans]
    per_weight = messages * 0.95 / sum(weights)
    for plan, weight in zip(plans, weights):
        plan.messages = max(1, round(weight * per_weight))
    noise = messages - sum(p.messages for p in plans)
    while noise < 0:  # rounding gave the deals too many: take them back from the busiest
        busiest = max(plans, key=lambda p: p.messages)
        take = min(-noise, busiest.messages - 1)
        busiest.messages -= take
        noise += take
    return plans, noise


def _timeline(rng: random.Random, plan: DealPlan, now: datetime) -> list[tuple[str | None, str, datetime]]:
    """(from, to, at) rows of a deal's stage history: the creation row, the path, the bounces;
    squeezed into the time between its creation and now when the walk would end in the future."""
    steps: list[tuple[str, float]] = []
    here = "New"
    for i, stage in enumerate(plan.path):
        for _ in range(plan.extra.count(i)):
            back = OPEN_STAGES[OPEN_STAGES.index(here) - 1] if here in OPEN_STAGES[1:] else here
            steps.append((back, rng.expovariate(1 / 4)))
            steps.append((here, rng.expovariate(1 / 5)))
        mean = STAGE_DAYS.get(here, 10.0) * (1.5 if stage == "Lost" else 1.0)
        steps.append((stage, rng.expovariate(1 / mean)))
        here = stage
    total = sum(days for _, days in steps)
    room = (now - plan.created).total_seconds() / 86400
    if plan.outcome == "open":
        room *= 0.2 + 0.8 * rng.random()  # an open deal has been sitting in its stage for a while
    scale = min(1.0, room * 0.98 / total) if total else 1.0
    rows = [(None, "New", plan.created)]
    at, here = plan.created, "New"
    for stage, days in steps:
        at += timedelta(days=days * scale, seconds=60)
        rows.append((here, stage, min(at, now - timedelta(minutes=1))))
        here = stage
    return rows


def _mail_times(rng: random.Random, plan: DealPlan,
                end: datetime) -> tuple[list[tuple[datetime, str]], datetime | None]:
    """(when, direction) of a deal's messages, the first inbound at creation; and its first response."""
    created, n = plan.created, plan.messages
    answered = n > 1 and rng.random() < 0.9
    first_response = None
    mail = [(created, "inbound")]
    if answered:
        # median ~40 minutes: a third within 5 minutes, a long tail into the next days
        delay = timedelta(minutes=min(60 * 24 * 6, math.exp(rng.gauss(3.7, 1.8))))
        first_response = min(created + delay, end)
        mail.append((first_response, "outbound"))
    start = first_response or created
    room = max((end - start).total_seconds(), 60.0)
    for _ in range(n - len(mail)):
        mail.append((start + timedelta(seconds=room * rng.random()),
                     "outbound" if answered and rng.random() < 0.5 else "inbound"))
    mail.sort()
    return mail, first_response


def _close_dates(rng: random.Random, plan: DealPlan, history, now: datetime):
    """(close_date, at, slipped) rows for a deal that got an expected close date, and the date it has now."""
    set_at = history[min(2, len(history) - 1)][2]  # when it was qualified, or soon after creation
    end = history[-1][2] if plan.outcome != "open" else now
    rows, current = [], None
    at = set_at
    for _ in range(1 + _weighted(rng, (0.55, 0.3, 0.15))):
        if at > end:
            break
        new = (at + timedelta(days=rng.randrange(10, 75))).date()
        slipped = current is not None and current < at.date() and new > current
        rows.append((new, at, slipped))
        current = new
        at = datetime.combine(current, datetime.min.time(), timezone.utc) + timedelta(days=rng.randrange(-10, 20),
                                                                                      hours=9)
    if plan.outcome == "open" and current is not None and rng.random() < 0.25:
        # some open deals' dates were pushed well into the coming months
        pushed = (now + timedelta(days=rng.randrange(5, 120))).date()
        at = min(now, max(now - timedelta(days=rng.randrange(1, 20)), rows[-1][1] + timedelta(minutes=1)))
        rows.append((pushed, at, current < at.date()))
        current = pushed
    return rows, current


class Writer:
    """Bulk rows into one table: Core executemany on SQLite, COPY on PostgreSQL."""

    def __init__(self, conn):
        self.conn = conn
        self.copy = conn.dialect.name == "postgresql"

    def write(self, model, rows: list[dict]) -> None:
        if not rows:
            return
        if not self.copy:
            self.conn.execute(insert(model), rows)
            return
        table = model.__table__
        columns = list(rows[0])
        json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)}
        cursor = self.conn.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([json.dumps(row[c]) if c in json_columns else row[c] for c in columns])


def generate(engine, deals: int = 100_000, messages: int = 1_000_000, stage_changes: int = 500_000,
             seed: int = 14, now: datetime = NOW) -> Counts:
    """Fills a freshly migrated database (default stages only) and analyzes it."""
    rng = random.Random(seed)
    companies = max(1, deals * 3 // 10)
    contacts = max(1, deals * 85 // 100)
    plans, noise = plan_deals(rng, deals, messages, stage_changes, contacts, now)
    start = now - timedelta(days=365 * YEARS)
    with engine.connect() as conn:
        stage_ids = dict(conn.execute(select(Stage.name, Stage.id)).all())
    rep_names = [f"rep{i:02d}" for i in range(1, REPS + 1)]
    zones = (TEAM_ZONE, TEAM_ZONE, TEAM_ZONE, "Europe/London", "America/New_York")
    with engine.begin() as conn:
        out = Writer(conn)
        out.write(Rep, [dict(id=i, name=rep_names[i - 1], timezone=zones[i % len(zones)], active=True,
                             created_at=start, digest_always=False, digest_enabled=True, command_token_generation=0,
                             manager=i == 1) for i in range(1, REPS + 1)])
        out.write(RepAddress, [dict(id=i, rep_id=i, address=f"{rep_names[i - 1]}@acme.example")
                               for i in range(1, REPS + 1)])
        out.write(Mailbox, [dict(id=1, name="sales", owner_rep_id=1, role="capture", default_source="website",
                                 new_sender_policy="create", created_at=start, failures=0)]
                  + [dict(id=i + 1, name=f"{rep_names[i - 1]}-inbox", owner_rep_id=i, role="rep",
                          default_source="email", new_sender_policy="review", created_at=start, failures=0)
                     for i in range(1, REPS + 1)])
        for batch in chunks(dict(id=i, domain=f"company{i}.example", name=f"Company {i}", created_at=start)
                             for i in range(1, companies + 1)):
            out.write(Company, batch)

        def company_of(contact: int) -> int | None:
            return None if contact % 10 == 0 else (contact % companies) + 1  # one in ten writes from freemail

        def address_of(contact: int) -> str:
            company = company_of(contact)
            return f"person{contact}@" + (f"company{company}.example" if company else "freemail.example")

        first_source = {}
        for plan in plans:
            first_source.setdefault(plan.contact, (plan.source, plan.owner, plan.created))
        for batch in chunks(dict(id=c, name=f"Person {c}", company_id=company_of(c),
                                  owner_rep_id=first_source.get(c, ("", None))[1],
                                  source=first_source.get(c, ("website",))[0],
                                  first_seen=first_source.get(c, (None, None, start))[2])
                             for c in range(1, contacts + 1)):
            out.write(Contact, batch)
        for batch in chunks(dict(id=c, contact_id=c, address=address_of(c)) for c in range(1, contacts + 1)):
            out.write(ContactAddress, batch)
        # paid sources: a cost from the first month, raised by 5% every half year
        out.write(SourceCost, [dict(source=source, month=date(start.year + m // 12, m % 12 + 1, 1),
                                    amount=Decimal(round(base * 1.05 ** step)), at=start, actor="admin")
                               for source, base in PAID.items()
                               for step, m in enumerate(range(start.month - 1, start.month - 1 + 12 * YEARS, 6))])

        counts = dict(history=0, close=0, messages=0, open=0)
        message_id = 0
        history_id = 0
        close_id = 0
        for first in range(0, len(plans), BATCH // 4):
            deal_rows, history_rows, close_rows, message_rows, copy_rows, audit_rows = [], [], [], [], [], []
            for deal_id, plan in enumerate(plans[first:first + BATCH // 4], start=first + 1):
                history = _timeline(rng, plan, now)
                closed_at = history[-1][2] if plan.outcome != "open" else None
                counts["open"] += closed_at is None
                actor = rep_names[plan.owner - 1]
                for from_stage, to_stage, at in history:
                    history_id += 1
                    history_rows.append(dict(id=history_id, deal_id=deal_id, from_stage=from_stage,
                                             to_stage=to_stage, at=at, actor=actor if from_stage else "intake",
                                             reason="" if from_stage else "new lead"))
                mail, first_response = _mail_times(rng, plan, closed_at or now)
                contact_address = address_of(plan.contact)
                for when, direction in mail:
                    message_id += 1
                    inbound = direction == "inbound"
                    message_rows.append(dict(
                        id=message_id, message_id=f"<{message_id}@gen.example>", synthetic_id=False,
                        sha256=f"{message_id:064x}", size=4000, truncated=False, subject=f"Re: deal {deal_id}",
                        from_address=contact_address if inbound else f"{actor}@acme.example", sent_at=when,
                        received_at=when, status="processed", direction=direction, kind="reply",
                        deal_id=deal_id, contact_id=plan.contact, processed_at=when))
                    copy_rows.append(dict(id=message_id, message_id=message_id,
                                          mailbox_id=1 if inbound and plan.source == "website" else plan.owner + 1,
                                          folder="INBOX" if inbound else "Sent", location=f"gen:{message_id}",
                                          seen_at=when))
                inbound_at = [w for w, d in mail if d == "inbound"]
                outbound_at = [w for w, d in mail if d == "outbound"]
                expected = None
                slips = 0
                if rng.random() < (0.7 if plan.outcome == "open" else 0.4) and len(history) > 1:
                    dates, expected = _close_dates(rng, plan, history, now)
                    for close_date, at, slipped in dates:
                        close_id += 1
                        slips += slipped
                        close_rows.append(dict(id=close_id, deal_id=deal_id, close_date=close_date, at=at,
                                               actor=actor, slipped=slipped))
                has_step = closed_at is None and rng.random() < 0.6
                value = Decimal(round(math.exp(rng.gauss(9.2, 0.9)), -2)) if rng.random() < 0.85 else None
                deal_rows.append(dict(
                    id=deal_id, title=f"Company {company_of(plan.contact) or plan.contact}", contact_id=plan.contact,
                    company_id=company_of(plan.contact), stage_id=stage_ids[history[-1][1]], owner_rep_id=plan.owner,
                    value=value, source=plan.source, fit_score=10, score=rng.randrange(0, 80),
                    inbound_count=len(inbound_at), outbound_count=len(outbound_at),
                    next_step="call back" if has_step else None,
                    next_step_due=(now + timedelta(days=rng.randrange(-20, 30))).date() if has_step else None,
                    next_step_owner_id=plan.owner if has_step else None,
                    created_at=plan.created, last_activity_at=max(mail[-1][0], history[-1][2]),
                    last_inbound_at=inbound_at[-1] if inbound_at else None,
                    last_outbound_at=outbound_at[-1] if outbound_at else None,
                    last_stage_change_at=history[-1][2], first_response_at=first_response,
                    first_response_seconds=int((first_response - plan.created).total_seconds())
                    if first_response else None,
                    closed_at=closed_at,
                    expected_close=expected, close_slips=slips,
                    lost_reason=rng.choice(LOST_REASONS) if plan.outcome == "lost" and rng.random() < 0.8 else None))
                audit_rows.append(dict(at=plan.created, actor="intake", action="create", entity="deal",
                                       entity_id=deal_id, detail={"source": plan.source}, reason="new lead"))
            out.write(Deal, deal_rows)
            out.write(StageChange, history_rows)
            out.write(CloseDateChange, close_rows)
            for batch in chunks(message_rows):
                out.write(Message, batch)
            for batch in chunks(copy_rows):
                out.write(MessageCopy, batch)
            out.write(AuditEntry, audit_rows)
            counts["history"] += len(history_rows)
            counts["close"] += len(close_rows)
        span = (now - start).total_seconds()
        for batch in chunks(_noise(rng, message_id, noise, start, span)):
            out.write(Message, [row for row, _ in batch])
            out.write(MessageCopy, [copy for _, copy in batch])
        message_id += noise
        for batch in chunks(dict(key=f"digest:{rep}:{day.isoformat()}", kind="digest", rep_id=rep, deal_id=None,
                                  to_address=f"{rep_names[rep - 1]}@acme.example", subject="Your deals today",
                                  message_id=f"<digest.{rep}.{day.isoformat()}@acme.example>", body=b"digest",
                                  status="sent", attempts=1,
                                  next_attempt_at=datetime.combine(day, datetime.min.time(), timezone.utc),
                                  created_at=datetime.combine(day, datetime.min.time(), timezone.utc),
                                  sent_at=datetime.combine(day, datetime.min.time(), timezone.utc))
                             for rep in range(1, REPS + 1)
                             for day in (now.date() - timedelta(days=d)
                                         for d in range(1, min(365 * YEARS, deals // 90) + 1))):
            out.write(OutboxMessage, batch)
    _fix_sequences(engine)
    analyze(engine)
    return Counts(len(plans), message_id, counts["history"], counts["close"], contacts, companies, counts["open"])


def _noise(rng: random.Random, after: int, count: int, start: datetime, span: float):
    """Newsletters and notifications the capture mailbox also received: on record, on no deal."""
    for message_id in range(after + 1, after + count + 1):
        when = start + timedelta(seconds=span * rng.random())
        yield (dict(id=message_id, message_id=f"<{message_id}@gen.example>", synthetic_id=False,
                    sha256=f"{message_id:064x}", size=9000, truncated=False, subject="Newsletter",
                    from_address=f"news{message_id % 500}@lists.example", sent_at=when, received_at=when,
                    status="noise", direction="inbound", kind=None, deal_id=None, contact_id=None, processed_at=when),
               dict(id=message_id, message_id=message_id, mailbox_id=1, folder="INBOX", location=f"gen:{message_id}",
                    seen_at=when))


_SEQUENCED = ("reps", "rep_addresses", "mailboxes", "companies", "contacts", "contact_addresses", "deals",
              "stage_history", "close_date_history", "messages", "message_copies", "source_costs", "audit_log",
              "outbox")


def _fix_sequences(engine) -> None:
    """Ids were given explicitly: PostgreSQL's sequences must continue after them (a review run
    writes to the outbox)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        for table in _SEQUENCED:
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"))


def analyze(engine) -> None:
    """The planner's statistics, as a database in use would have them."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
