"""Telling the admin by email what only an admin can mend: a mailbox whose OAuth2 grant is gone.

A revoked or expired grant stops a mailbox for good: retrying with backoff cannot help, only
``inboxcrm mailbox authorize NAME`` can. The log and ``status`` say so, but nobody reads them
while things look quiet, so ``[team] admin_address`` (when set) gets an email too.

Why through the outbox, keyed per mailbox and local day (``alert:grant:<mailbox>:<date>``): the
sync meets the revoked grant on every attempt, many times a day, maybe in several processes. The
unique key turns all of those into one email a day, decided in the caller's transaction and sent
with the outbox's retries, like a digest. SMTP's own grant gets no alert: with it revoked nothing
can be sent, and a mail queued then would arrive only after the admin had mended it; the log
(``smtp-grant-revoked``) and ``outbox list`` say it instead.
"""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from inboxcrm.app import outbox
from inboxcrm.config import Config
from inboxcrm.mail import render
from inboxcrm.store.db import Session

KIND = "alert"


def grant_alert_key(mailbox: str, day: date) -> str:
    """One alert per mailbox per day of the team's calendar."""
    return f"alert:grant:{mailbox}:{day.isoformat()}"


def queue_grant_alert(session: Session, config: Config, now: datetime, mailbox: str, detail: str) -> bool:
    """Queues today's "mailbox NAME needs authorize" email to the admin in the caller's transaction.

    ``detail`` is what the provider said (the GrantRevoked message; it holds no token). True when
    queued; False when no admin address is configured or today's alert for ``mailbox`` exists."""
    to_address = config.team.admin_address
    if not to_address:
        return False
    key = grant_alert_key(mailbox, now.astimezone(ZoneInfo(config.team.timezone)).date())
    if outbox.find_key(session, key) is not None:
        return False  # decided already today: spare the rendering
    command = f"inboxcrm mailbox authorize {mailbox}"
    subject = f"inboxcrm: mailbox {mailbox} stopped, its OAuth2 grant was revoked; run {command}"
    context = {"mailbox": mailbox, "detail": " ".join(detail.split()), "command": command, "when": now,
               "timezone": config.team.timezone, "subject": subject}
    text, html = render.render_pair(render.template_env(config.digest.templates_dir), "alert_grant", context)
    return outbox.enqueue(session, now, key=key, kind=KIND, to_address=to_address, subject=subject, text=text,
                          html=html, from_address=outbox.sender_address(config))
