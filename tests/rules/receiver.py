"""A real HTTP receiver for webhook tests: http.server in a thread on 127.0.0.1, on a free port.

It answers each POST with the next status of its script (the last one repeats) and checks the
signature of every request itself, as an integrator would, from the documented scheme alone
(X-Rules-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">), without our code.
"""

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict
    body: bytes
    signature_valid: bool

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str = ""
    statuses: list[int] = field(default_factory=lambda: [200])
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address
        return f"http://{host}:{port}/hooks"

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def signature_valid(self, body: bytes, header: str) -> bool:
        parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
        if not parts.get("t", "").isdigit() or abs(time.time() - int(parts["t"])) > 300:
            return False
        expected = hmac.new(self.secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts.get("v1", ""))

    def _next_status(self) -> int:
        index = min(len(self.requests), len(self.statuses)) - 1
        return self.statuses[index]

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                valid = receiver.signature_valid(body, self.headers.get("X-Rules-Signature", ""))
                receiver.requests.append(Received(dict(self.headers), body, valid))
                status = receiver._next_status() if valid else 401
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"not now")

            def log_message(self, *args):
                pass

        return Handler
