"""Writes the sample mailboxes the demo imports (inboxcrm/sample/*.mbox).

Run it after changing the story; the output is committed so the demo needs no network and
no generator at run time. The team is Brightpath Consulting (brightpath.example) with two
reps, Alice and Bob; every other domain is reserved (.example) or a freemail provider.
"""
from __future__ import annotations

import mailbox
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import datetime, timezone
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "inboxcrm" / "sample"
SALES, ALICE, BOB = "sales@brightpath.example", "Alice Martin <alice@brightpath.example>", "Bob Stone <bob@brightpath.example>"


def msg(mid, when, sender, to, subject, body, *, reply_to_id=None, cc=None, headers=(), reply_to=None):
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    if cc:
        m["Cc"] = cc
    if reply_to:
        m["Reply-To"] = reply_to
    m["Date"] = format_datetime(datetime(2026, 11, *when, tzinfo=timezone.utc))
    if mid:
        m["Message-ID"] = f"<{mid}>"
    if reply_to_id:
        m["In-Reply-To"] = m["References"] = f"<{reply_to_id}>"
    for key, value in headers:
        m[key] = value
    m.set_content(body)
    return m


def bounce():
    return mailbox.mboxMessage(
        b"From: Mail Delivery System <MAILER-DAEMON@mx.brightpath.example>\n"
        b"To: sales@brightpath.example\nSubject: Undelivered Mail Returned to Sender\n"
        b"Message-ID: <bounce-1@mx.brightpath.example>\nDate: Fri, 06 Nov 2026 09:12:00 +0000\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\n\n'
        b"--b1\nContent-Type: text/plain\n\nYour message could not be delivered to old@gone.example.\n"
        b"--b1\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.brightpath.example\n\n"
        b"Final-Recipient: rfc822; old@gone.example\nAction: failed\nStatus: 5.1.1\n--b1--\n")


def sales_inbox():
    form = "Webform Mailer <noreply@formmailer.example>"
    return [
        msg("form-1@formmailer.example", (2, 8, 30), form, SALES, "New submission: Contact us",
            "You have a new form submission on brightpath.example.\n\nName: Maria Lopez\n"
            "Email: maria.lopez@harbor-logistics.example\nCompany: Harbor Logistics\n"
            "Message: We need our customer portal redesigned before Q1. Budget around 40k.\n"),
        jane_first(),
        msg("tb-1@northwind.example", (4, 7, 45), "Tom Becker <tom.becker@northwind.example>", SALES,
            "IT support contract for 40 seats",
            "Hello Brightpath,\n\nwe are looking for an IT support partner for 40 workstations.\n"
            "Could you send us your rates?\n\nTom Becker\nHead of Operations, Northwind\n"),
        msg("ooo-7@contoso.example", (5, 6, 0), "Petra Ivanova <petra@contoso.example>", SALES,
            "Automatic reply: Your proposal", "I am out of the office until Monday.\n",
            headers=[("Auto-Submitted", "auto-replied")]),
        msg("news-2026-45@news.saasweekly.example", (5, 12, 0), "SaaS Weekly <news@saasweekly.example>", SALES,
            "This week in SaaS: pricing pages that convert", "Read online...\n",
            headers=[("List-Id", "<weekly.saasweekly.example>"),
                     ("List-Unsubscribe", "<mailto:unsubscribe@saasweekly.example>")]),
        bounce(),
        msg("form-2@formmailer.example", (6, 14, 20), form, SALES, "New submission: Contact us",
            "You have a new form submission on brightpath.example.\n\nName: Kenji Watanabe\n"
            "Email: kenji@sakura-dental.example\nMessage: Our clinic network needs a new booking system.\n"),
        msg("tb-2@northwind.example", (7, 9, 10), "Tom Becker <tom.becker@northwind.example>", SALES,
            "Re: IT support contract for 40 seats",
            "Thanks Alice, the rates look good. Can we meet next week?\n\nTom\n",
            reply_to_id="alice-r2@brightpath.example"),
        msg("intro-1@partnerco.example", (8, 11, 0), "Ken Adams <ken@partnerco.example>", SALES,
            "Introduction: Fjord Analytics needs a data warehouse",
            "Hi team, introducing Greta from Fjord Analytics (greta@fjord-analytics.example).\n",
            cc="Greta Holm <greta@fjord-analytics.example>"),
        msg("ln-1@northwind.example", (9, 15, 30), "Lena Novak <lena@northwind.example>", SALES,
            "Security audit for our Berlin office",
            "Hi, Tom mentioned you. We also need a security audit for our Berlin office.\n\nLena\n"),
        msg(None, (10, 8, 0), "Omar Haddad <omar@haddad-architects.example>", SALES, "Website hosting",
            "Hello, do you also offer managed hosting? (this message has no Message-ID)\n"),
        msg("internal-1@brightpath.example", (11, 16, 0), BOB, ALICE, "Lunch Thursday?",
            "Shall we review the pipeline over lunch?\n", cc=SALES),
    ]


def broken():
    """No usable sender at all: the demo shows it in quarantine instead of losing it."""
    return mailbox.mboxMessage(b"To: sales@brightpath.example\nSubject: =?bogus-charset?q?broken?=\n"
                               b"Message-ID: <broken-1@unknown.example>\nDate: Tue, 10 Nov 2026 10:00:00 +0000\n\n"
                               b"\xff\xfe garbage without a From header\n")


def jane_first():
    """Sent to sales@ with Alice in Cc: the same message in two mailboxes, stored once."""
    return msg("CAJ-jane-1@mail.gmail.com", (3, 10, 5), "Jane Doe <jane.doe@gmail.com>", SALES,
               "Quote for bookkeeping automation",
               "Hi,\n\nI run a small bakery and would like a quote for automating my bookkeeping.\n\nJane\n",
               cc=ALICE)


def alice_mailbox():
    return [
        jane_first(),
        msg("alice-r1@brightpath.example", (3, 11, 0), ALICE, "Jane Doe <jane.doe@gmail.com>",
            "Re: Quote for bookkeeping automation", "Hi Jane,\n\nhappy to help. Our starter package is...\n",
            reply_to_id="CAJ-jane-1@mail.gmail.com"),
        msg("alice-r2@brightpath.example", (4, 9, 15), ALICE, "Tom Becker <tom.becker@northwind.example>",
            "Re: IT support contract for 40 seats", "Hi Tom,\n\nour rates are attached.\n\nAlice\n",
            reply_to_id="tb-1@northwind.example"),
        msg("sam-1@contoso-dental.example", (12, 10, 0), "Sam Rivera <sam@contoso-dental.example>",
            ALICE, "Great meeting you at the conference",
            "Hi Alice, great to meet you at the expo. Could we talk about our IT setup?\n"),
    ]


def bob_mailbox():
    return [
        msg("bob-1@brightpath.example", (13, 9, 0), BOB, "Jane Doe <jane.doe@gmail.com>",
            "Bookkeeping automation", "Hi Jane, following up on your request...\n"),
    ]


def write(name, messages):
    path = OUT / name
    path.unlink(missing_ok=True)
    box = mailbox.mbox(str(path))
    for m in messages:
        box.add(m if isinstance(m, mailbox.mboxMessage) else mailbox.mboxMessage(m.as_bytes()))
    box.flush()
    box.close()


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    write("sales.mbox", sales_inbox() + [broken()])
    write("alice.mbox", alice_mailbox())
    write("bob.mbox", bob_mailbox())
    print(f"wrote {', '.join(p.name for p in sorted(OUT.glob('*.mbox')))} to {OUT}")
