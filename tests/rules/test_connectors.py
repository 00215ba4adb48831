"""Connectors (campaigns.connectors): signed webhook pushes to a real local receiver, the sandbox,
and the signature helpers integrators rely on."""

import time

from campaigns.connectors import (
    SIGNATURE_HEADER,
    SandboxConnector,
    WebhookConnector,
    encode_body,
    new_secret,
    sign,
    verify_signature,
)
from tests.rules.receiver import Receiver

PAYLOAD = {"delivery_key": "change-7", "change_id": 7, "field": "bid", "old_value": "1.0000", "new_value": "1.1000"}


def webhook(receiver: Receiver, *, url: str | None = None) -> WebhookConnector:
    return WebhookConnector(url=url or receiver.url, secret=receiver.secret, timeout=5, clock=time.time)


def test_webhook_connector__2xx__is_a_success_and_the_receiver_verifies_the_signature():
    with Receiver(secret=new_secret()) as receiver:
        result = webhook(receiver).push(PAYLOAD)

    assert result.ok and result.status_code == 200
    [request] = receiver.requests
    assert request.signature_valid and request.json == PAYLOAD
    assert request.headers["X-Rules-Delivery"] == "change-7"


def test_webhook_connector__signed_with_another_secret__is_refused_by_the_receiver():
    with Receiver(secret=new_secret()) as receiver:
        result = WebhookConnector(url=receiver.url, secret="not-the-secret", timeout=5, clock=time.time).push(PAYLOAD)

    assert not result.ok and result.status_code == 401
    assert not receiver.requests[0].signature_valid


def test_webhook_connector__a_5xx_answer__is_a_failure_with_its_status_and_body():
    with Receiver(secret=new_secret(), statuses=[500]) as receiver:
        result = webhook(receiver).push(PAYLOAD)

    assert not result.ok and result.status_code == 500 and "not now" in result.detail


def test_webhook_connector__nobody_listening__is_a_failure_not_an_exception():
    with Receiver(secret=new_secret()) as receiver:
        url = receiver.url
    result = WebhookConnector(url=url, secret="s", timeout=2, clock=time.time).push(PAYLOAD)

    assert not result.ok and result.status_code is None and "No answer" in result.detail


class MemoryLedger:
    def __init__(self):
        self.received: dict[str, dict] = {}

    def record(self, delivery_key: str, payload: dict) -> bool:
        new = delivery_key not in self.received
        self.received.setdefault(delivery_key, payload)
        return new


def test_sandbox_connector__accepts_and_records_each_delivery_once():
    ledger = MemoryLedger()
    sandbox = SandboxConnector(ledger=ledger)

    first, again = sandbox.push(PAYLOAD), sandbox.push(PAYLOAD)

    assert first.ok and again.ok and "duplicate" in again.detail
    assert ledger.received == {"change-7": PAYLOAD}


def test_verify_signature__accepts_a_fresh_signature_and_refuses_tampering_and_replays():
    secret, body, now = "whsec_x", encode_body(PAYLOAD), 1_700_000_000
    header = sign(secret, body, now)

    assert header.startswith("t=1700000000,v1=") and SIGNATURE_HEADER == "X-Rules-Signature"
    assert verify_signature(secret, body, header, now=now + 10)
    assert not verify_signature(secret, body + b" ", header, now=now)
    assert not verify_signature("other", body, header, now=now)
    assert not verify_signature(secret, body, header, now=now + 301)
    assert not verify_signature(secret, body, "garbage", now=now)
