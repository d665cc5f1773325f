"""Benchmark: inboxcrm.core.html_text.html_to_text on ~5 MB HTML parts, realistic and hostile.

Each shape runs in its own child process, so its peak RSS is its own; prints seconds, the peak
RSS above a bare process that imported html_text, and the size of the text produced. Tables are
the costly shape (inscriptis lays out ~1 KB per cell); deep nesting and unclosed tags test the
parser's cap. ``--unbounded`` raises MAX_MARKUP past the input: what the bound saves.

    python bench/html_text_bench.py [--mb 5] [--unbounded] [SHAPE ...]
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

UNITS = {
    "newsletter": "<table><tr><td>Name:</td><td>Anna &amp; co</td></tr><tr><td><p>Lorem <b>ipsum</b> "
                  "<a href='https://x.example'>dolor</a> sit amet.</p></td></tr></table><!-- c -->\n",
    "paragraphs": "<p>Email: anna@example.com</p><div>text &nbsp; more</div>\n",
    "tall-table": "<tr><td>Email:</td><td>a@b.example</td></tr>",
    "wide-table": "<td>c</td>",
    "deep-nesting": "<div>",
    "unclosed-font": "<font face=Arial>line<br>",
    "comment": "<!-- a comment that never ends ",
    "entities": "&amp;&lt;&#x41;&bogus;",
}


def markup(shape: str, size: int) -> str:
    body = UNITS[shape] * (size // len(UNITS[shape]))
    return f"<table><tr>{body}</tr></table>" if "table" in shape else body


def run(shape: str, size: int, unbounded: bool, out) -> None:
    from inboxcrm.core import html_text

    if unbounded:
        html_text.MAX_MARKUP = size * 2
    html = markup(shape, size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    text = html_text.html_to_text(html)
    out.send((time.perf_counter() - started, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
              len(html), len(text)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5)
    parser.add_argument("--unbounded", action="store_true")
    parser.add_argument("shapes", nargs="*", default=list(UNITS))
    args = parser.parse_args()
    print(f"{'shape':15} {'input MB':>8} {'seconds':>8} {'RSS +MB':>8} {'text KB':>8}")
    for shape in args.shapes:
        receive, send = multiprocessing.Pipe(duplex=False)
        child = multiprocessing.Process(target=run, args=(shape, int(args.mb * 1024 * 1024), args.unbounded, send))
        child.start()
        seconds, rss, size, text = receive.recv()
        child.join()
        print(f"{shape:15} {size / 1e6:8.1f} {seconds:8.2f} {rss:8.0f} {text / 1e3:8.0f}", flush=True)


if __name__ == "__main__":
    main()
