"""A commit group's messages are atomic each without a savepoint each (``intake.Group``), on both backends.

The fast path gives a group one savepoint and writes its audit entries, stage history and flags
together at the end. These tests hold it to what a savepoint per message promised: a message that
meets a bug half-way leaves none of its records, is quarantined with its reason, and the rest of
its group is recorded exactly once, committed together with the source's position.
"""
from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

import inboxcrm.app.bounces
from inboxcrm.app import importer
from inboxcrm.app.importer import feed
from inboxcrm.store.models import AuditEntry, Contact, ContactAddress, Deal, DealFlag, Message, StageChange
from inboxcrm.store.records import mailbox_info
from inboxcrm.values import RawMessage

from .test_import import CONFIG, PIPELINE, empty

# New leads no other fixture message answers or names, so what they made is theirs alone: a
# contact, a company, a deal, its stage history and audit entries.
JENS = "jm-1@mueller-bau.example"
NORA = "nq-1@quinn-legal.example"


@pytest.fixture(autouse=True)
def one_group(monkeypatch):
    """All the fixtures in one group, however slow the machine: the bug strikes mid-group."""
    monkeypatch.setattr(importer, "GROUP_SECONDS", 600.0)


def raws() -> list[RawMessage]:
    return [RawMessage(path.read_bytes(), f"test:{path.name}") for path in PIPELINE]


def run(factory, checkpoint=None) -> Counter:
    with factory() as s:
        info = mailbox_info(s, "sales")
    return feed(factory, CONFIG, info, raws(), parse_workers=0, checkpoint=checkpoint).counts


def records(factory) -> dict:
    """The records by what they are, not by id: a rolled back PostgreSQL sequence does not give
    its numbers back, so the deals after a replay have other ids."""
    with factory() as s:
        contact_of = dict(s.execute(select(ContactAddress.contact_id, ContactAddress.address)).all())
        deal_contact = {pk: contact_of.get(c) for pk, c in s.execute(select(Deal.id, Deal.contact_id))}
        return {
            "messages": {mid: (status, reason, deal_contact.get(deal)) for mid, status, reason, deal in s.execute(
                select(Message.message_id, Message.status, Message.reason, Message.deal_id))},
            "deals": Counter((contact_of.get(c), title, inbound, outbound) for c, title, inbound, outbound in s.execute(
                select(Deal.contact_id, Deal.title, Deal.inbound_count, Deal.outbound_count))),
            "contacts": sorted(contact_of.values()),
            "history": Counter(s.execute(select(StageChange.to_stage, StageChange.reason)).all()),
            "flags": Counter(s.scalars(select(DealFlag.kind))),
            "audit": Counter(s.execute(select(AuditEntry.action, AuditEntry.entity, AuditEntry.reason)).all()),
        }


def bug_in(monkeypatch, *message_ids: str) -> None:
    """A bug after the message's records are written (its contact, deal, audit entries wait in the
    group): only a rollback can take them back. No fixture message triggers one, so it is injected."""
    real = inboxcrm.app.bounces.after_message

    def after_message(store, msg, *args):
        if msg.message_id in message_ids:
            raise RuntimeError(f"a bug met by {msg.message_id}")
        return real(store, msg, *args)

    monkeypatch.setattr(inboxcrm.app.bounces, "after_message", after_message)


def without(made: dict, *message_ids: str) -> dict:
    """The clean run's records less everything the given messages made."""
    own = {f"message <{mid}>" for mid in message_ids}
    addresses = {made["messages"][mid][2] for mid in message_ids}
    return dict(
        messages={mid: ("quarantined", "internal-error", None) if mid in message_ids else outcome
                  for mid, outcome in made["messages"].items()},
        deals=Counter({deal: n for deal, n in made["deals"].items() if deal[0] not in addresses}),
        contacts=[a for a in made["contacts"] if a not in addresses],
        history=Counter({row: n for row, n in made["history"].items() if row[1] not in {f"new lead from {r}" for r in own}}),
        flags=made["flags"],
        audit=Counter({row: n for row, n in made["audit"].items() if row[2] not in own}),
    )


def test_a_bug_mid_group_quarantines_that_message_alone_and_the_group_commits_once(team, engine, factory,
                                                                                   monkeypatch):
    empty(engine)  # the team's setup has audit entries of its own
    assert run(factory).total() == len(PIPELINE)
    clean = records(factory)
    assert clean["messages"][JENS][:2] == ("processed", "new-lead") and clean["messages"][JENS][2]
    empty(engine)

    bug_in(monkeypatch, JENS)
    counts = run(factory)
    assert counts.total() == len(PIPELINE) and counts["quarantined"] == 2  # his and the message without a sender
    assert records(factory) == without(clean, JENS)
    with factory() as s:
        jens = s.execute(select(Message.detail, Message.subject).where(Message.message_id == JENS)).one()
        assert jens.detail == f"RuntimeError: a bug met by {JENS}" and jens.subject  # recognisable in the list
        assert s.scalar(select(func.count()).select_from(Contact)) == len(clean["contacts"]) - 1


def test_two_bugs_in_one_group_the_second_after_the_replay(team, engine, factory, monkeypatch):
    """After a replay the rest of the group runs a savepoint each: a second bug costs no replay."""
    empty(engine)
    assert run(factory).total() == len(PIPELINE)
    clean = records(factory)
    empty(engine)

    bug_in(monkeypatch, JENS, NORA)
    assert run(factory)["quarantined"] == 3
    assert records(factory) == without(clean, JENS, NORA)


def test_the_position_commits_with_the_records_after_the_replay(team, factory, monkeypatch):
    """The checkpoint runs once per group, in its transaction, after the replay and after the rows
    that waited for the end of the group: it sees every message recorded and every audit entry."""
    seen = []

    def checkpoint(session, last):
        pending = session.scalar(select(func.count()).where(Message.status == "pending"))
        seen.append((last.location, session.scalar(select(func.count()).select_from(Message)), pending,
                     session.scalar(select(func.count()).select_from(AuditEntry))))

    bug_in(monkeypatch, JENS)
    run(factory, checkpoint)
    with factory() as s:
        audited = s.scalar(select(func.count()).select_from(AuditEntry))
    assert seen == [(f"test:{PIPELINE[-1].name}", len(PIPELINE), 0, audited)]
    assert audited > 0


def test_a_failing_checkpoint_takes_the_group_back_with_it(team, factory):
    def checkpoint(session, last):
        raise RuntimeError("lost the lease")

    def audited() -> int:
        with factory() as s:
            return s.scalar(select(func.count()).select_from(AuditEntry))

    before = audited()
    with pytest.raises(RuntimeError, match="lost the lease"):
        run(factory, checkpoint)
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 0
    assert audited() == before
