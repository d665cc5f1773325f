"""``contact forget`` and ``retention run``: erasing personal data on request and by age."""
from __future__ import annotations

import click

from inboxcrm.cli.common import App, echo, pass_app
from inboxcrm.core.views import plural

THEN_CHOICES = ("ignore", "new-lead")


def _describe(summary) -> str:
    lines = [f"name: {summary.name or '(no contact)'}",
             f"addresses: {', '.join(summary.addresses)}",
             f"deals kept for the reports, without personal data: {summary.deals}",
             f"messages erased (bytes, subjects, senders, attachments, every copy): {summary.messages}",
             f"raw messages dropped (theirs and others that name them): {summary.raw_dropped}",
             f"notes deleted: {summary.notes_deleted}, flags deleted: {summary.flags_deleted}",
             f"outbox: {summary.outbox_dropped} unsent dropped, {summary.outbox_erased} sent emptied",
             f"their own company erased: {'yes' if summary.company_erased else 'no'}"]
    lines += [f"rows where they are mentioned, redacted in {table}: {n}" for table, n in sorted(summary.redacted.items())]
    lines.append(f"later mail from these addresses: {summary.then}")
    return "\n".join(lines)


@click.command("forget")
@click.argument("address")
@click.option("--then", "then", type=click.Choice(THEN_CHOICES),
              help="What later mail from the address does: ignore it (kept only as the fact that it came) or "
                   "treat it as a new lead (default: [retention] forgotten_mail).")
@click.option("--yes", is_flag=True, help="Erase without showing what goes and asking first.")
@pass_app
def contact_forget(app: App, address: str, then: str | None, yes: bool) -> None:
    """Erase a person on request.

    Erases the contact who has ADDRESS, with all their addresses: their name, their mail (bytes,
    subjects, attachments, in every mailbox), notes and flags that name them, and every mention of
    them in the audit log, the outbox and other mail. Their deals stay for the reports (stages,
    values, dates, owner), titled "(forgotten)". The address is kept only as a keyed hash, so
    later mail from it is recognised. This cannot be undone."""
    from inboxcrm.app import forget

    if not yes:
        summary = forget.preview(app.factory(), app.config, app.now(), app.actor, address, then)
        echo(_describe(summary))
        click.confirm("Erase this person? This cannot be undone", abort=True)
    summary = app.write(lambda session, now, actor: forget.forget(session, app.config, now, actor, address, then))
    echo(f"erased {summary.name or address}: {summary.messages} messages, {summary.deals} deals kept "
         f"as (forgotten); later mail: {summary.then}")


@click.group("retention")
def retention() -> None:
    """Personal data kept no longer than the configuration says ([retention])."""


@retention.command("run")
@click.option("--days", type=click.IntRange(min=1), metavar="N",
              help="Drop raw bytes of messages received more than N days ago (default: [retention] raw_days).")
@pass_app
def retention_run(app: App, days: int | None) -> None:
    """Drop the raw bytes of old messages now, as the daemon does daily.

    Their records stay (sender, subject, deal); a message without its bytes can no longer be
    re-run, retried or accepted from review."""
    from inboxcrm.app.forget import run_retention

    dropped = run_retention(app.factory(), app.config, app.now(), days)
    if dropped is None:
        echo("nothing to do: [retention] raw_days is not set; set it, or give --days N")
    else:
        echo(f"dropped the raw bytes of {plural(dropped, 'message')}")
