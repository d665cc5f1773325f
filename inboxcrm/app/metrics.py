"""The daemon's metrics in Prometheus text format, and ``/health``, on a loopback port.

The only module that uses ``prometheus_client``. Nearly every figure is read from the database
when Prometheus scrapes (``store.metrics_queries``: counts on indexed columns and the small
mailbox tables), not counted in the process: the numbers are then right after a restart, the
same whichever process serves them, and include what ``poll`` or ``import`` did. Only what the
process alone knows (its open IDLE connections) is kept in memory, and handed in as a function.

``health`` is what ``/health`` and ``inboxcrm status --check`` answer; ``core.health.problems``
decides it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from inboxcrm.clock import utcnow
from inboxcrm.config import Config
from inboxcrm.core.health import MailboxHealth, Thresholds, problems
from inboxcrm.errors import InboxCRMError
from inboxcrm.logs import event
from inboxcrm.store import metrics_queries
from inboxcrm.store.db import unusable_database
from inboxcrm.store.outbox_queries import outbox_counts

log = logging.getLogger("inboxcrm.app.metrics")

UNHEALTHY_EXIT = 1  # ``status --check``: at least one problem (the database's included)


def health(factory, config: Config, now: datetime) -> tuple[str, ...]:
    """One line per problem, none when healthy; an unreachable or outdated database is one."""
    thresholds = Thresholds(config.metrics.failing_minutes, config.metrics.stale_minutes)
    try:
        with factory() as session:
            wrong = metrics_queries.schema_problem(session)
            if wrong is not None:
                return problems((), {}, now, thresholds, database=wrong)
            boxes = [MailboxHealth(m.name, m.has_connection, m.last_success_at, m.failures, m.failing_since)
                     for m in metrics_queries.mailbox_rows(session)]
            outbox = outbox_counts(session)
    except Exception as exc:
        reason = unusable_database(exc)
        if reason is None:
            raise
        return problems((), {}, now, thresholds, database=reason.strip().splitlines()[0])
    return problems(boxes, outbox, now, thresholds)


class StoreCollector(Collector):
    """Reads the figures from the database at every scrape; a failing read gives
    ``inboxcrm_database_up 0`` and nothing else, never a scrape error."""

    def __init__(self, factory, idle_connections: Callable[[], int] | None = None):
        self.factory, self.idle_connections = factory, idle_connections

    def describe(self) -> list:
        return []  # figures come and go with the rows: no checks at registration

    def collect(self) -> Iterator:
        up = GaugeMetricFamily("inboxcrm_database_up", "1 when the database answered this scrape")
        if self.idle_connections is not None:
            yield GaugeMetricFamily("inboxcrm_idle_connections", "IMAP IDLE connections this daemon holds open",
                                    value=self.idle_connections())
        try:
            with self.factory() as session:
                messages = metrics_queries.message_counts(session)
                outbox = metrics_queries.outbox_counts(session)
                boxes = metrics_queries.mailbox_rows(session)
                folders = metrics_queries.folder_rows(session)
        except Exception as exc:  # noqa: BLE001 - the scrape says the database is down instead
            event(log, logging.WARNING, "metrics-read-failed", reason=unusable_database(exc) or type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_status = GaugeMetricFamily("inboxcrm_messages", "Messages on record, by status", labels=["status"])
        for status, n in sorted(messages.items()):
            by_status.add_metric([status], n)
        yield by_status
        yield GaugeMetricFamily("inboxcrm_messages_quarantined", "Messages in quarantine",
                                value=messages.get("quarantined", 0))
        yield CounterMetricFamily("inboxcrm_command_refusals", "Command emails refused",
                                  value=messages.get("refused", 0))
        box = GaugeMetricFamily("inboxcrm_outbox_messages", "Outbox rows, by kind and status", labels=["kind", "status"])
        for (kind, status), n in sorted(outbox.items()):
            box.add_metric([kind, status], n)
        yield box
        for status in ("pending", "failed"):
            yield GaugeMetricFamily(f"inboxcrm_outbox_{status}", f"Outbox rows {status}, all kinds",
                                    value=sum(n for (_, s), n in outbox.items() if s == status))
        yield CounterMetricFamily("inboxcrm_digests_sent", "Digests sent",
                                  value=outbox.get(("digest", "sent"), 0))
        success = GaugeMetricFamily("inboxcrm_mailbox_last_success_timestamp_seconds",
                                    "When the mailbox's last pass succeeded (Unix time)", labels=["mailbox"])
        failures = GaugeMetricFamily("inboxcrm_mailbox_failures", "Consecutive failed passes", labels=["mailbox"])
        for m in boxes:
            if m.has_connection:
                failures.add_metric([m.name], m.failures)
                if m.last_success_at is not None:
                    success.add_metric([m.name], m.last_success_at.timestamp())
        yield success
        yield failures
        lag = GaugeMetricFamily("inboxcrm_mailbox_backlog_messages",
                                "Messages on the server beyond the folder's position (UIDNEXT - 1 - last UID) "
                                "as last seen", labels=["mailbox", "folder"])
        for f in folders:
            left = max(0, f.uidnext - 1 - f.last_uid) if f.uidnext is not None else f.message_count
            if left is not None:
                lag.add_metric([f.mailbox, f.folder], left)
        yield lag


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the scraper's requests are not news
        pass


class MetricsServer:
    """``/metrics`` and ``/health`` over HTTP on (host, port); port 0 takes a free one."""

    def __init__(self, factory, config: Config, host: str, port: int,
                 idle_connections: Callable[[], int] | None = None, now: Callable[[], datetime] = utcnow):
        self.factory, self.config, self.now = factory, config, now
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(factory, idle_connections))
        self._metrics = make_wsgi_app(self.registry)
        try:
            self._server = make_server(host, port, self._app, server_class=_Server, handler_class=_QuietHandler)
        except OSError as exc:
            raise InboxCRMError(f"[metrics]: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    def start(self) -> MetricsServer:
        self._thread.start()
        event(log, logging.INFO, "metrics-listening", host=self.address[0], port=self.address[1])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/health":
            try:
                found = health(self.factory, self.config, self.now())
            except Exception as exc:  # noqa: BLE001 - monitoring must hear "unhealthy", not a dropped connection
                found = (f"health check failed: {type(exc).__name__}: {exc}",)
            body = ("\n".join(found) if found else "ok").encode() + b"\n"
            start_response("503 Service Unavailable" if found else "200 OK",
                           [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
            return [body]
        if path in ("/metrics", "/"):
            return self._metrics(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics or /health\n"]
