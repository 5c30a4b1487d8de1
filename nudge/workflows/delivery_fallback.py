"""Falls back to the next channel when a sent message is not delivered in time.

Started with the send (through the outbox) when its channel sets `fallback_after_minutes`:
sleeps that long, then asks whether the message reached the contact; if not, it is sent on
the next fallback channel, which is watched in turn, until one delivers or none is left.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from nudge.models.payloads import FallbackStepInput, FallbackWatchInput
from nudge.naming import DELIVERY_FALLBACK_WORKFLOW
from nudge.workflows.policies import DELIVERY_TIMEOUT, HEARTBEAT_TIMEOUT, SEND_RETRY

with workflow.unsafe.imports_passed_through():
    from nudge.activities.delivery_fallback import DeliveryFallbackActivities


@workflow.defn(name=DELIVERY_FALLBACK_WORKFLOW)
class DeliveryFallbackWorkflow:
    @workflow.run
    async def run(self, request: FallbackWatchInput) -> str:
        wait = timedelta(minutes=request.after_minutes) / request.time_scale
        watched = request.watched_delivery_id or request.delivery_id
        tries = 0
        while True:
            workflow.set_current_details(
                f"Waiting {request.after_minutes} min for delivery {watched} to be delivered"
            )
            if wait:
                await workflow.sleep(wait, summary=f"until delivery {watched} is due delivered")
            step = await workflow.execute_activity_method(
                DeliveryFallbackActivities.fall_back_if_undelivered,
                FallbackStepInput(
                    tenant_id=request.tenant_id,
                    first_delivery_id=request.delivery_id,
                    watched_delivery_id=watched,
                ),
                start_to_close_timeout=DELIVERY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=SEND_RETRY,
                summary=f"fall back unless delivery {watched} was delivered",
            )
            if step.next_delivery_id is None:
                outcome = f"Delivery {watched}: {step.outcome}; {tries} fallback tries"
                workflow.set_current_details(outcome)
                return outcome
            tries += 1
            watched = step.next_delivery_id
            if step.last:
                outcome = (
                    f"Sent on the last fallback channel as delivery {watched};"
                    f" {tries} fallback tries"
                )
                workflow.set_current_details(outcome)
                return outcome
