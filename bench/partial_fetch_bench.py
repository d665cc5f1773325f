"""Benchmark: bytes downloaded per message by a first backfill with max_attachment_bytes, against
the bare full-fetch loop, in the same run.

Gmail lets IMAP download about 2.5 GB a day. Starts a private Dovecot (tests/dovecot.py, real TLS
verified against a private CA), loads N generated messages into INBOX with MULTIAPPEND (a share
of them carrying a large PDF, the rest small text-and-HTML mail with a small attachment), then
counts the bytes read from the IMAP connection (after TLS: what the server sends, which is what
a provider's quota counts) and the wall time of:
  baseline  EXAMINE, UID SEARCH, FETCH BODY.PEEK[] of everything in batches (what any client does)
  whole     inboxcrm's imap.fetch without an attachment limit (RFC822.SIZE first, bounded batches)
  partial   inboxcrm's imap.fetch with --max-attachment-bytes (BODYSTRUCTURE of the large ones,
            then header, text parts and MIME headers; attachments over the limit left out)
Each phase on its own connection; the messages are consumed, not parsed or stored.

    python bench/partial_fetch_bench.py [--messages 500] [--large-share 0.2] [--attachment-mb 3]
                                        [--limit-mb 1]
"""
from __future__ import annotations

import argparse
import base64
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this tree's code and tests/dovecot.py, without installing

MB = 1024 * 1024


def generate(count: int, large_share: float, attachment_mb: float, seed: int = 13) -> list[bytes]:
    """Prospects' mail as mail clients send it: text and HTML alternatives, one PDF; a share of
    them with a PDF of ``attachment_mb``, the rest with one of 20-120 kB."""
    rng = random.Random(seed)
    messages = []
    for i in range(count):
        size = int(attachment_mb * MB) if rng.random() < large_share else rng.randint(20_000, 120_000)
        pdf = base64.encodebytes(b"%PDF" + rng.randbytes(size)).replace(b"\n", b"\r\n")
        text = f"Hello,\r\n\r\nplease find offer {i} attached.\r\n\r\nRegards,\r\nProspect {i}\r\n"
        messages.append(
            (f"From: Prospect {i} <p{i}@company{i % 97}.example>\r\nTo: sales@acme.example\r\n"
             f"Subject: Offer {i}\r\nMessage-ID: <offer-{i}@company{i % 97}.example>\r\n"
             f"Date: Mon, 02 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
             f'Content-Type: multipart/mixed; boundary="m{i}"\r\n\r\n'
             f'--m{i}\r\nContent-Type: multipart/alternative; boundary="a{i}"\r\n\r\n'
             f"--a{i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"
             f"--a{i}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>{text}</p>\r\n--a{i}--\r\n"
             f'--m{i}\r\nContent-Type: application/pdf; name="offer-{i}.pdf"\r\n'
             f'Content-Disposition: attachment; filename="offer-{i}.pdf"\r\n'
             f"Content-Transfer-Encoding: base64\r\n\r\n").encode() + pdf + f"--m{i}--\r\n".encode())
    return messages


class Counting:
    """The file imaplib reads server answers from, counting the bytes it hands over."""

    def __init__(self, file):
        self.file, self.bytes = file, 0

    def read(self, size=-1):
        data = self.file.read(size)
        self.bytes += len(data)
        return data

    def readline(self, size=-1):
        data = self.file.readline(size)
        self.bytes += len(data)
        return data

    def close(self):
        self.file.close()


def counted(client) -> Counting:
    client._imap.file = counter = Counting(client._imap.file)
    return counter


def phase(settings, run) -> dict:
    from inboxcrm.mail import imap

    client = imap.connect(settings)
    try:
        counter = counted(client)
        t0 = time.perf_counter()
        count = run(client)
        return {"messages": count, "bytes": counter.bytes, "seconds": time.perf_counter() - t0}
    finally:
        imap.close(client)


def baseline(client) -> int:
    from inboxcrm.mail import imap

    client.select_folder("INBOX", readonly=True)
    uids = sorted(client.search("ALL"))
    count = 0
    for start in range(0, len(uids), imap.FETCH_BATCH):
        for data in client.fetch(uids[start:start + imap.FETCH_BATCH], ["BODY.PEEK[]"]).values():
            count += bool(data[b"BODY[]"])
    return count


def inboxcrm_fetch(limit: int | None):
    def run(client) -> int:
        from inboxcrm.mail import imap

        folder = imap.examine(client, "INBOX")
        uids = imap.new_uids(client, 0, None)
        return sum(1 for _ in imap.fetch(client, folder, uids, max_attachment_bytes=limit))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--large-share", type=float, default=0.2)
    parser.add_argument("--attachment-mb", type=float, default=3.0)
    parser.add_argument("--limit-mb", type=float, default=1.0)
    args = parser.parse_args()

    from tests.certs import make_tls_files
    from tests.dovecot import Dovecot

    messages = generate(args.messages, args.large_share, args.attachment_mb)
    stored = sum(len(m) for m in messages)
    with tempfile.TemporaryDirectory() as tmp:
        server = Dovecot(make_tls_files(Path(tmp) / "tls"))
        try:
            server.start()
            user = server.add_user("bench", "bench")
            t0 = time.perf_counter()
            server.append(user, "INBOX", messages)
            print(f"loaded {len(messages)} messages ({stored / MB:.1f} MB, "
                  f"{sum(len(m) > args.limit_mb * MB for m in messages)} with a {args.attachment_mb:g} MB PDF) "
                  f"by MULTIAPPEND in {time.perf_counter() - t0:.1f} s")
            settings = server.settings(user)
            results = {"baseline": phase(settings, baseline),
                       "whole": phase(settings, inboxcrm_fetch(None)),
                       "partial": phase(settings, inboxcrm_fetch(int(args.limit_mb * MB)))}
        finally:
            server.close()
    base = results["baseline"]
    print(f"{'phase':<9} {'messages':>8} {'MB read':>9} {'kB/message':>11} {'seconds':>8} {'msg/s':>8} "
          f"{'bytes vs baseline':>18}")
    for name, r in results.items():
        print(f"{name:<9} {r['messages']:>8} {r['bytes'] / MB:>9.1f} {r['bytes'] / r['messages'] / 1024:>11.1f} "
              f"{r['seconds']:>8.2f} {r['messages'] / r['seconds']:>8.0f} {r['bytes'] / base['bytes']:>17.3f}x")
    partial = results["partial"]
    quota = 2.5 * 1000 ** 3
    print(f"partial / baseline: {partial['bytes'] / base['bytes']:.3f} of the bytes "
          f"({base['bytes'] / partial['bytes']:.1f}x fewer), {partial['seconds'] / base['seconds']:.2f} of the time")
    print(f"messages per 2.5 GB of Gmail's daily IMAP quota: baseline "
          f"{quota / (base['bytes'] / base['messages']):,.0f}, partial {quota / (partial['bytes'] / partial['messages']):,.0f}")


if __name__ == "__main__":
    main()
