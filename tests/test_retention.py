"""[retention] raw_days: the raw bytes of old messages go, their records stay; the daemon runs the
same sweep daily as ``inboxcrm retention run``."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from inboxcrm.app.forget import drop_old_raw, run_retention
from inboxcrm.config import load_config
from inboxcrm.store.db import transaction
from inboxcrm.store.models import AuditEntry, Message, MessageRaw

from .test_forget import FIRST, OSCAR_MAIL, import_mail


def age(factory, sender: str, days: int) -> None:
    with transaction(factory) as s:
        s.execute(update(Message).where(Message.from_address == sender)
                  .values(received_at=datetime.now(timezone.utc) - timedelta(days=days)))


def kept_raw(factory) -> list[str]:
    with factory() as s:
        return sorted(s.scalars(select(Message.from_address).join(MessageRaw, MessageRaw.message_id == Message.id)))


def test_raw_bytes_older_than_the_limit_go_and_the_records_stay(team, cli, tmp_path, factory):
    import_mail(cli, tmp_path, "old", FIRST)
    import_mail(cli, tmp_path, "new", OSCAR_MAIL)
    age(factory, "zelda.quimby@quimbyworks.example", 40)
    age(factory, "oscar.pennywhistle@globex.example", 20)
    with transaction(factory) as s:
        assert drop_old_raw(s, datetime.now(timezone.utc), 30) == 1
    assert kept_raw(factory) == ["oscar.pennywhistle@globex.example"]
    with factory() as s:
        assert len(s.scalars(select(Message)).all()) == 2  # the records stay
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "drop-raw")).one()
        assert entry.detail == {"dropped": 1} and entry.actor == "retention"
    with transaction(factory) as s:
        assert drop_old_raw(s, datetime.now(timezone.utc), 30) == 0  # nothing left that old


def test_the_sweep_follows_the_configuration_and_the_command(team, cli, tmp_path, factory, config_file):
    import_mail(cli, tmp_path, "old", FIRST)
    import_mail(cli, tmp_path, "new", OSCAR_MAIL)
    age(factory, "zelda.quimby@quimbyworks.example", 40)
    age(factory, "oscar.pennywhistle@globex.example", 20)
    assert run_retention(factory, load_config(config_file, True), datetime.now(timezone.utc)) is None
    assert "raw_days is not set" in cli("retention", "run").output
    assert len(kept_raw(factory)) == 2
    config_file.write_text(config_file.read_text() + "\n[retention]\nraw_days = 30\n")
    assert "raw bytes of 1 message" in cli("retention", "run").output
    assert kept_raw(factory) == ["oscar.pennywhistle@globex.example"]
    assert "raw bytes of 1 message" in cli("retention", "run", "--days", "10").output
    assert kept_raw(factory) == []


def test_the_daemon_schedules_the_sweep_daily(factory, config_file):
    from inboxcrm.app.daemon import RETENTION_INTERVAL_HOURS, Daemon

    config = load_config(config_file, True)
    daemon = Daemon(factory, config, lambda: config, environ={})
    daemon.start()
    try:
        job = daemon.scheduler.get_job("retention")
        assert job is not None and job.trigger.interval == timedelta(hours=RETENTION_INTERVAL_HOURS)
    finally:
        daemon.shutdown()
