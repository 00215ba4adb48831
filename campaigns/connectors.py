"""Connectors to ad platforms: how an applied change reaches the platform that serves the ads.

A connector takes a plain payload (a dict: the change as JSON) and answers with a `PushResult`;
it knows nothing of rules or changes (campaigns imports no other app of ours). Two kinds:

  WebhookConnector  POSTs the payload as JSON to the integrator's endpoint, signed (below);
                    any 2xx answer acknowledges it, anything else (or no answer) is a failure.
  SandboxConnector  a stand-in platform for the demo, the simulator and tests: it accepts every
                    change and records it in a ledger (the caller gives a database-backed one),
                    once per delivery key however often it is sent.

Retries, the circuit breaker and the push log belong to the caller (rules.pushes), which keeps
their state in the database so that every worker shares it.

Signatures (webhooks here and notification webhooks alike): the header
`X-Rules-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the endpoint's
secret>`. Signing the timestamp with the body lets a receiver refuse replays of old deliveries
(`verify_signature` allows five minutes of clock difference).
"""

import hashlib
import hmac
import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Protocol

SIGNATURE_HEADER = "X-Rules-Signature"
DELIVERY_HEADER = "X-Rules-Delivery"
SIGNATURE_TOLERANCE_SECONDS = 300
_ERROR_BODY_CHARS = 500


@dataclass(frozen=True)
class PushResult:
    ok: bool
    status_code: int | None = None
    detail: str = ""


class Connector(Protocol):
    kind: str

    def push(self, payload: dict) -> PushResult: ...


# --- signing --------------------------------------------------------------------------------------

def new_secret() -> str:
    """A signing secret for an endpoint: shown to its owner once, then only used to sign."""
    return f"whsec_{secrets.token_urlsafe(32)}"


def encode_body(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, body: bytes, header: str, *, now: int,
                     tolerance: int = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """What a receiver does: the header's timestamp is recent and its HMAC matches the body."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), f"t={timestamp},v1={parts.get('v1', '')}")


def post_signed_json(url: str, secret: str, payload: dict, *, timestamp: int, timeout: float,
                     headers: dict | None = None) -> PushResult:
    """POST `payload` signed; a 2xx answer is success. Network errors are results, not exceptions."""
    body = encode_body(payload)
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "rulesplatform-webhook/1",
        SIGNATURE_HEADER: sign(secret, body, timestamp), **(headers or {}),
    })
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return PushResult(ok=200 <= response.status < 300, status_code=response.status)
    except urllib.error.HTTPError as error:
        text = error.read(_ERROR_BODY_CHARS).decode(errors="replace")
        return PushResult(ok=False, status_code=error.code, detail=f"HTTP {error.code}: {text}".strip())
    except (urllib.error.URLError, OSError) as error:
        return PushResult(ok=False, detail=f"No answer from {url}: {getattr(error, 'reason', error)}")


# --- connectors ---------------------------------------------------------------------------------

class WebhookConnector:
    kind = "webhook"

    def __init__(self, *, url: str, secret: str, timeout: float, clock):
        self.url, self.secret, self.timeout, self.clock = url, secret, timeout, clock

    def push(self, payload: dict) -> PushResult:
        return post_signed_json(self.url, self.secret, payload, timestamp=int(self.clock()), timeout=self.timeout,
                                headers={DELIVERY_HEADER: str(payload.get("delivery_key", ""))})


class SandboxLedger(Protocol):
    def record(self, delivery_key: str, payload: dict) -> bool:
        """Keep the payload under its key; True when the key is new."""


class SandboxConnector:
    kind = "sandbox"

    def __init__(self, *, ledger: SandboxLedger):
        self.ledger = ledger

    def push(self, payload: dict) -> PushResult:
        new = self.ledger.record(str(payload["delivery_key"]), payload)
        return PushResult(ok=True, status_code=200, detail="received" if new else "received before (duplicate)")
