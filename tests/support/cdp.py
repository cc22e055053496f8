"""A minimal Chrome DevTools Protocol client over a hand-written RFC 6455
websocket (client side: masked frames, text messages, no extensions, over TLS
too), so the browser test needs no extra Python package.

Every read has a deadline: a silent browser makes the test fail, not hang.
"""

import base64
import hashlib
import json
import os
import socket
import struct
import time
from urllib.parse import urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketError(Exception):
    pass


class WebSocket:
    """`protocols` are offered as subprotocols; `source` is the local address to connect
    from. `headers` holds the handshake's answer."""

    def __init__(self, url, timeout=10.0, protocols=(), source=None, context=None):
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise WebSocketError(f"only ws:// and wss:// are supported, not {url!r}")
        self.sock = socket.create_connection(
            (parts.hostname, parts.port or 80),
            timeout=timeout,
            source_address=(source, 0) if source else None,
        )
        if parts.scheme == "wss":
            self.sock = context.wrap_socket(self.sock, server_hostname=parts.hostname)
        self.buf = b""
        self.texts = []
        key = base64.b64encode(os.urandom(16)).decode()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        offered = f"Sec-WebSocket-Protocol: {', '.join(protocols)}\r\n" if protocols else ""
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offered}\r\n"
            ).encode()
        )
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise WebSocketError(f"handshake refused: {lines[0]!r}")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        got = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        if got.get("sec-websocket-accept") != accept:
            raise WebSocketError("bad Sec-WebSocket-Accept")
        self.headers = got

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("websocket read timed out")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise WebSocketError("connection closed by the browser")
        self.buf += chunk

    def _parse_frame(self):
        """(fin, opcode, payload, frame length) if a whole frame is buffered, else None.
        Nothing is consumed until the frame is complete, so a timeout never
        leaves a half-read frame behind."""
        buf = self.buf
        if len(buf) < 2:
            return None
        fin, opcode, masked, n = buf[0] & 0x80, buf[0] & 0x0F, buf[1] & 0x80, buf[1] & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n = struct.unpack("!H", buf[2:4])[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n = struct.unpack("!Q", buf[2:10])[0]
            pos = 10
        mask = None
        if masked:
            if len(buf) < pos + 4:
                return None
            mask, pos = buf[pos : pos + 4], pos + 4
        if len(buf) < pos + n:
            return None
        payload = buf[pos : pos + n]
        if mask:
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        return fin, opcode, payload, pos + n

    def _next_frame(self, deadline):
        """(fin, opcode, payload) of the next frame, read as far as it takes."""
        while (frame := self._parse_frame()) is None:
            self._fill(deadline)
        fin, opcode, payload, size = frame
        self.buf = self.buf[size:]
        return fin, opcode, payload

    def _send_frame(self, opcode, payload):
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        # XOR with the mask repeated to the payload's length, as one big integer.
        repeated = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            n, "big"
        )
        self.sock.sendall(header + mask + masked)

    def ping(self, deadline):
        """Sends a ping and reads until its pong; text messages on the way are kept in
        `texts`."""
        payload = os.urandom(8)
        self._send_frame(0x9, payload)
        while True:
            _fin, opcode, got = self._next_frame(deadline)
            if opcode == 0xA and got == payload:
                return
            if opcode == 0x1:
                self.texts.append(got.decode("utf-8", "replace"))
            elif opcode == 0x8:
                raise WebSocketError("the peer closed the websocket")

    def send_text(self, text):
        self._send_frame(0x1, text.encode("utf-8"))

    def recv_text(self, deadline):
        """The next whole text message (continuation frames joined); answers
        pings on the way."""
        parts = []
        while True:
            fin, opcode, payload = self._next_frame(deadline)
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode == 0x8:
                raise WebSocketError("browser closed the websocket")
            if opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode("utf-8")
                continue
            raise WebSocketError(f"unexpected opcode {opcode}")


class CDPError(Exception):
    pass


class CDP:
    """Commands and events on one DevTools websocket; with `session` set, on
    a target attached in flat mode."""

    def __init__(self, ws_url, timeout=30.0):
        self.ws = WebSocket(ws_url, timeout=timeout)
        self.timeout = timeout
        self.next_id = 0
        self.events = []  # (method, params, sessionId), in arrival order

    def close(self):
        self.ws.close()

    def _dispatch(self, msg):
        if "method" in msg:
            self.events.append((msg["method"], msg.get("params", {}), msg.get("sessionId")))

    def call(self, method, params=None, session=None, timeout=None):
        self.next_id += 1
        mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send_text(json.dumps(msg))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = json.loads(self.ws.recv_text(deadline))
            if reply.get("id") == mid:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._dispatch(reply)

    def wait_event(self, method, session=None, timeout=None):
        """The first event named `method` (already received or arriving
        within the timeout)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        seen = 0
        while True:
            for name, params, sid in self.events[seen:]:
                if name == method and (session is None or sid == session):
                    return params
            seen = len(self.events)
            self._dispatch(json.loads(self.ws.recv_text(deadline)))

    def drain(self, seconds):
        """Collect whatever events arrive in the next `seconds`."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._dispatch(json.loads(self.ws.recv_text(deadline)))
        except TimeoutError:
            pass


class PageLoad:
    """What loading one page in a fresh tab did: the requests it sent to `origin` (the
    browser's own favicon lookup left out), their responses and failures."""

    def __init__(self, cdp, url, origin, *, block=(), wait=30.0):
        self.cdp = cdp
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = s = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        cdp.call("Network.enable", session=s)
        cdp.call("Network.setCacheDisabled", {"cacheDisabled": True}, session=s)
        if block:
            # Failing at once instead of waiting on a network this machine may not have.
            cdp.call("Network.setBlockedURLs", {"urls": list(block)}, session=s)
        cdp.call("Page.enable", session=s)
        cdp.call("Runtime.enable", session=s)
        nav = cdp.call("Page.navigate", {"url": url}, session=s)
        assert not nav.get("errorText"), f"navigation to {url} failed: {nav}"
        cdp.wait_event("Page.loadEventFired", session=s, timeout=wait)
        # Late events (a response body finishing after load) have a moment to arrive.
        cdp.drain(0.5)
        events = [(m, p) for m, p, sid in cdp.events if sid == s]
        favicon = origin + "/favicon.ico"
        sent = {
            p["requestId"]: p["request"]["url"]
            for m, p in events
            if m == "Network.requestWillBeSent"
            and p["request"]["url"].startswith(origin + "/")
            and p["request"]["url"] != favicon
        }
        self.sent = sent
        self.failed = [
            p for m, p in events if m == "Network.loadingFailed" and p["requestId"] in sent
        ]
        self.responses = {
            p["response"]["url"]: p["response"]
            for m, p in events
            if m == "Network.responseReceived" and p["requestId"] in sent
        }
        self.unanswered = sorted(url for url in sent.values() if url not in self.responses)

    def assert_all_served(self):
        assert not self.failed, f"failed sub-requests: {self.failed}"
        assert not self.unanswered, f"requests without a response: {self.unanswered}"
        bad = {url: r["status"] for url, r in self.responses.items() if r["status"] >= 400}
        assert not bad, f"responses with an error status: {bad}"

    def evaluate(self, expr):
        res = self.cdp.call(
            "Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=self.session
        )
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")
