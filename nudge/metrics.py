"""What an operator scrapes from `/metrics`: Nudge's own metrics and the Temporal SDK's.

Every process (the API, the worker) has one registry, ``REGISTRY``, and one scrape of its
`/metrics` shows all of it in the Prometheus text format (version 0.0.4):

- Nudge's counters below, which the code increments where the thing happens. They count in
  this process since it started, as Prometheus counters do; sum them over processes.
- ``nudge_deliveries{channel,status}``, rows of the `deliveries` table read at scrape time
  (`nudge.store.metrics`), so the figure is the database's, exact whichever process sent.
  Only the API reports it: it is one figure for the whole deployment, and N workers
  reporting it would only repeat it N times (and query the database N times).
- The Temporal SDK's own metrics (``temporal_request_total``, ``temporal_workflow_completed_total``,
  ``temporal_activity_execution_latency_seconds``, ...) of the process's clients and workers.

How the SDK's metrics get here. The SDK's Core can export Prometheus itself
(``PrometheusConfig``), but only on an HTTP server of its own: a second port per process
that a scrape of ours would have to fetch and splice in, bound before we could know a free
one (the SDK does not say which port it bound). Instead the process's Temporal runtime
records into a ``MetricBuffer``, and ``TemporalSdkMetrics`` turns the buffered updates into
Prometheus families of this registry: one port, one scrape, nothing fetched over the
network, and the SDK's metrics keep their kinds (counter, gauge, histogram). The buffer is
drained every second by a daemon thread (it must not fill up when nobody scrapes) and at
each scrape, so a scrape sees what happened up to that moment. The names are what the
Core exporter gives with ``counters_total_suffix``, ``unit_suffix`` and
``durations_as_seconds`` on: counters end in ``_total``, durations are in seconds and end in
``_seconds``. Histogram buckets are ours (``SDK_DURATION_BUCKETS``): the buffer hands over
each observation, not buckets.

Label cardinality stays bounded: no label holds a tenant, a contact or anything a tenant
names. Deliveries are labelled by channel *type* (`log`, `webhook`, `email`, `slack`), not
by a tenant's channel name; the SDK labels by namespace, task queue, workflow and activity
type, and RPC name, all fixed by the code.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from pydantic import SecretStr
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BufferedMetricUpdate,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# No `*_created` series beside each counter: they double the series and nobody reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

REGISTRY = CollectorRegistry()
"""This process's metrics; `render()` writes them out."""

ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
if GC_COLLECTOR is not None:  # None on interpreters without gc statistics
    GCCollector(registry=REGISTRY)

# -- Nudge's counters -------------------------------------------------------------------

EventKind = Literal["message", "assignment", "receipt"]
EventOutcome = Literal["accepted", "duplicate"]
RelayedBy = Literal["inline", "relay"]
RelayOutcome = Literal["delivered", "started", "no_run", "gave_up", "failed"]
RateLimitScope = Literal["events", "notifications", "poll"]

EVENT_KINDS: tuple[EventKind, ...] = ("message", "assignment", "receipt")
EVENT_OUTCOMES: tuple[EventOutcome, ...] = ("accepted", "duplicate")
RELAYED_BY: tuple[RelayedBy, ...] = ("inline", "relay")
RELAY_OUTCOMES: tuple[RelayOutcome, ...] = ("delivered", "started", "no_run", "gave_up", "failed")
RATE_LIMIT_SCOPES: tuple[RateLimitScope, ...] = ("events", "notifications", "poll")

EVENTS_ACCEPTED = Counter(
    "nudge_events_accepted",
    "Events answered 202 by `POST /v1/events/*`, by kind (message, assignment, receipt) and"
    " outcome: `accepted` (new: stored and acted on) or `duplicate` (an event id already"
    " stored: nothing new stored).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
"""`nudge_events_accepted_total{kind, outcome}`: `.labels(kind=..., outcome=...).inc()`, or
`count_event()`."""

EVENTS_REDELIVERED = Counter(
    "nudge_events_redelivered",
    "Events whose pending work (a signal or a start that did not reach Temporal) was completed"
    " by a client's retry of the same event, by kind.",
    ["kind"],
    registry=REGISTRY,
)
"""`nudge_events_redelivered_total{kind}`: a retry of a stored event that found work of the
first try still pending and completed it (it is counted as a `duplicate` in
``EVENTS_ACCEPTED`` too)."""

OUTBOX_RELAYED = Counter(
    "nudge_outbox_relayed",
    "Outbox entries (starts and signals to tell Temporal) handled, by who handled them:"
    " `inline` (the request or activity that wrote them) or `relay` (the reconciler, repairing"
    " what the writer could not finish), and outcome: `delivered` (a signal), `started` (a"
    " run), `no_run` (nothing to signal any more), `gave_up`, `failed` (to be retried).",
    ["by", "outcome"],
    registry=REGISTRY,
)
"""`nudge_outbox_relayed_total{by, outcome}`; the reconciler's repairs are `by="relay"`."""

RATE_LIMIT_REFUSALS = Counter(
    "nudge_rate_limit_refusals",
    "Requests answered 429 by a rate limit, by limit: `events`, `notifications`, `poll`.",
    ["scope"],
    registry=REGISTRY,
)
"""`nudge_rate_limit_refusals_total{scope}`, counted by `nudge.api.rate_limits`."""

RATE_LIMIT_UNCHECKED = Counter(
    "nudge_rate_limit_unchecked",
    "Requests let through without a rate-limit check because the counters' storage did not"
    " answer, by limit.",
    ["scope"],
    registry=REGISTRY,
)
"""`nudge_rate_limit_unchecked_total{scope}`: non-zero means Redis is not answering."""

# Every series exists from the start, at 0: a rate over a series that appears only at its
# first increment misses that increment, and "absent" is no value to alert on.
for _kind in EVENT_KINDS:
    EVENTS_REDELIVERED.labels(kind=_kind)
    for _outcome in EVENT_OUTCOMES:
        EVENTS_ACCEPTED.labels(kind=_kind, outcome=_outcome)
for _by in RELAYED_BY:
    for _relayed in RELAY_OUTCOMES:
        OUTBOX_RELAYED.labels(by=_by, outcome=_relayed)
for _scope in RATE_LIMIT_SCOPES:
    RATE_LIMIT_REFUSALS.labels(scope=_scope)
    RATE_LIMIT_UNCHECKED.labels(scope=_scope)


def count_event(kind: EventKind, outcome: EventOutcome, count: int = 1) -> None:
    """Events answered 202: ``EVENTS_ACCEPTED``, with labels mypy checks."""
    EVENTS_ACCEPTED.labels(kind=kind, outcome=outcome).inc(count)


def count_redelivery(kind: EventKind) -> None:
    """A retry completed what the first try of an event left pending: ``EVENTS_REDELIVERED``."""
    EVENTS_REDELIVERED.labels(kind=kind).inc()


def count_relayed(by: RelayedBy, outcome: RelayOutcome, amount: int = 1) -> None:
    """Outbox entries handled: ``OUTBOX_RELAYED``."""
    OUTBOX_RELAYED.labels(by=by, outcome=outcome).inc(amount)


# -- Deliveries, from the database at scrape time -----------------------------------------


def deliveries_families(counts: Mapping[tuple[str, str], int] | None) -> list[Metric]:
    """``nudge_deliveries{channel, status}`` from (channel type, status) -> rows, and
    ``nudge_database_up``; ``counts`` is None when the database did not answer."""
    up = GaugeMetricFamily(
        "nudge_database_up",
        "1 when this scrape read the database (and nudge_deliveries is present), else 0.",
        value=0 if counts is None else 1,
    )
    if counts is None:
        return [up]
    deliveries = GaugeMetricFamily(
        "nudge_deliveries",
        "Deliveries stored, by channel type and status (sending, retrying, sent, failed,"
        " unknown: the provider may or may not have taken it); read from the database at"
        " scrape time, the same figure from every API process.",
        labels=["channel", "status"],
    )
    for (channel, status), rows in sorted(counts.items()):
        deliveries.add_metric([channel, status], rows)
    return [deliveries, up]


# -- The Temporal SDK's metrics -----------------------------------------------------------

# Seconds, from a quick workflow task to a follow-up chasing for a week.
SDK_DURATION_BUCKETS: tuple[float, ...] = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    *(300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0, math.inf),
)
SDK_BUFFER_SIZE = 100_000  # updates; drained every second, so far more than a second's worth
SDK_DRAIN_SECONDS = 1.0

_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")
Labels = tuple[tuple[str, str], ...]


def _labels(attributes: Mapping[str, str | int | float | bool]) -> Labels:
    def text(value: str | int | float | bool) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    return tuple(sorted((_LABEL_NAME.sub("_", k), text(v)) for k, v in attributes.items()))


def _float_text(value: float) -> str:
    return "+Inf" if value == math.inf else repr(value)


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(SDK_DURATION_BUCKETS))
    count: int = 0
    total: float = 0.0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(SDK_DURATION_BUCKETS):
            if value <= bound:
                self.buckets[index] += 1
        self.count += 1
        self.total += value


@dataclass
class _SdkMetric:
    name: str  # as exposed, without the `_total` a counter's samples get
    kind: int
    description: str
    values: dict[Labels, float] = field(default_factory=dict)
    histograms: dict[Labels, _Histogram] = field(default_factory=dict)

    def apply(self, labels: Labels, value: float) -> None:
        if self.kind == BUFFERED_METRIC_KIND_COUNTER:
            self.values[labels] = self.values.get(labels, 0) + value
        elif self.kind == BUFFERED_METRIC_KIND_GAUGE:
            self.values[labels] = value
        else:
            self.histograms.setdefault(labels, _Histogram()).observe(value)

    def family(self) -> Metric:
        if self.kind == BUFFERED_METRIC_KIND_COUNTER:
            family = Metric(self.name, self.description, "counter")
            for labels, value in self.values.items():
                family.add_sample(f"{self.name}_total", dict(labels), value)
        elif self.kind == BUFFERED_METRIC_KIND_GAUGE:
            family = Metric(self.name, self.description, "gauge")
            for labels, value in self.values.items():
                family.add_sample(self.name, dict(labels), value)
        else:
            family = Metric(self.name, self.description, "histogram")
            for labels, histogram in self.histograms.items():
                for bound, hits in zip(SDK_DURATION_BUCKETS, histogram.buckets, strict=True):
                    bucket = {**dict(labels), "le": _float_text(bound)}
                    family.add_sample(f"{self.name}_bucket", bucket, hits)
                family.add_sample(f"{self.name}_count", dict(labels), histogram.count)
                family.add_sample(f"{self.name}_sum", dict(labels), histogram.total)
        return family


class TemporalSdkMetrics:
    """A collector of ``REGISTRY``: the SDK's buffered metric updates, as Prometheus families.

    Thread-safe: the drain thread, scrapes of the worker's server (threads) and of the API
    (its event loop) all go through one lock.
    """

    def __init__(self, buffer: MetricBuffer) -> None:
        self._buffer = buffer
        self._lock = threading.Lock()
        self._metrics: dict[str, _SdkMetric] = {}
        self._thread: threading.Thread | None = None

    def drain(self) -> None:
        """Fold every update buffered since the last drain into the totals."""
        with self._lock:
            self._apply(self._buffer.retrieve_updates())

    def _apply(self, updates: Sequence[BufferedMetricUpdate]) -> None:
        for update in updates:
            metric = update.metric
            name = metric.name
            if metric.unit == "s":
                name += "_seconds"
            found = self._metrics.get(name)
            if found is None:
                found = _SdkMetric(name, metric.kind, metric.description or name)
                self._metrics[name] = found
            found.apply(_labels(update.attributes), update.value)

    def describe(self) -> Iterable[Metric]:
        # The SDK's names are known only once it reports them; nothing to check up front.
        return ()

    def collect(self) -> Iterator[Metric]:
        self.drain()
        with self._lock:
            families = [metric.family() for metric in self._metrics.values()]
        yield from families

    def start_draining(self) -> None:
        """Drain every ``SDK_DRAIN_SECONDS`` in a daemon thread, scraped or not."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._drain_forever, name="nudge-sdk-metrics", daemon=True
            )
            self._thread.start()

    def _drain_forever(self) -> None:
        while True:
            time.sleep(SDK_DRAIN_SECONDS)
            try:
                self.drain()
            except Exception:  # a bad update must not end the thread and fill the buffer
                log.exception("could not read the Temporal SDK's metrics")


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def use_temporal_runtime() -> Runtime:
    """The process's Temporal runtime, its metrics in ``REGISTRY``; made the SDK's default.

    Call it before the process connects its first client: every client connected from then
    on (``nudge.temporal_client.connect``), and every worker on such a client, reports to
    `/metrics`. Idempotent; one runtime per process (each has a thread pool of its own).
    """
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            buffer = MetricBuffer(SDK_BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
            runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
            sdk = TemporalSdkMetrics(buffer)
            REGISTRY.register(sdk)
            sdk.start_draining()
            Runtime.set_default(runtime, error_if_already_set=False)
            _runtime = runtime
        return _runtime


# -- Writing it out, and who may read it --------------------------------------------------


class _Scrape:
    """``REGISTRY`` and families of this scrape only, as one collector for the writer."""

    def __init__(self, extra: Sequence[Metric]) -> None:
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from self._extra


def render(extra: Sequence[Metric] = ()) -> bytes:
    """The text of one scrape (``CONTENT_TYPE``): ``REGISTRY``, then ``extra``."""
    return generate_latest(_Scrape(extra))


def token_accepts(expected: SecretStr | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header may read `/metrics` (``NUDGE_METRICS_TOKEN``)."""
    if expected is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.get_secret_value().encode()
    )
