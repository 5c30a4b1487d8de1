"""Timeouts and retry policies shared by workflows."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

DELIVERY_TIMEOUT = timedelta(minutes=2)

# Activities that call providers heartbeat (between recipients, and while a provider is
# being waited on), so a killed worker's attempt is retried elsewhere after this long
# instead of after its start-to-close timeout.
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
# A provider that is down is tried again for about half an hour (the first 10 tries, from
# 2 s doubling to 5 minutes apart), with room for crashes: Temporal counts a heartbeat
# timeout as an attempt like any failure, so the 10 more tries, 5 minutes apart, keep a few
# worker kills from using up what a provider outage should get. A send already made is
# never repeated by them (the delivery's key and lease).
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=20,
)

BOOKKEEPING_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)

# A failing integration is retried with backoff for a few minutes; then the poll is
# given up and the next scheduled poll tries again.
POLL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=5,
)
POLL_TIMEOUT = timedelta(minutes=10)
STOP_TIMEOUT = timedelta(minutes=10)
ATTEMPT_TIMEOUT = timedelta(minutes=10)
