"""An HTTP/2 client that shows every stream's fate: its answer, or the code it was reset
with, or the GOAWAY that ended the connection. Built on PyPI's `h2`, with its checks of
what it sends turned off where a test sends what a client must not."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions


@dataclass
class Stream:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None


class H2Client:
    """One HTTP/2 connection to 127.0.0.1:port: h2c with prior knowledge, or over TLS with
    ALPN `h2` when `ca` (a PEM file to trust) is given."""

    def __init__(self, port: int, *, ca: str | None = None, server_name: str = "localhost"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if ca is not None:
            ctx = ssl.create_default_context(cafile=ca)
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(self.sock, server_hostname=server_name)
            assert self.sock.selected_alpn_protocol() == "h2"
        config = h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.streams: dict[int, Stream] = {}
        self.goaway: int | None = None
        self.authority = f"127.0.0.1:{port}"
        self.scheme = "https" if ca else "http"
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str,
        method: str = "GET",
        headers: list[tuple[str, str]] = (),
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        """Opens a stream and sends a request on it; returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        pseudo = [
            (":method", method),
            (":scheme", self.scheme),
            (":authority", self.authority),
            (":path", path),
        ]
        self.streams[sid] = Stream()
        self.conn.send_headers(sid, pseudo + list(headers), end_stream=end and body is None)
        if body is not None:
            self.send_data(sid, body, end=end)
        self.flush()
        return sid

    def send_data(self, sid: int, body: bytes, end: bool = True) -> None:
        """Sends a body in pieces the peer's windows allow, reading its updates as it goes."""
        view = memoryview(body)
        while view:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.flush()
                self.read_some()
                continue
            self.conn.send_data(sid, bytes(view[:room]))
            view = view[room:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
        self.flush()

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid)
        self.flush()

    def read_some(self) -> bool:
        """Reads what has come and files it under its stream; False once the peer closed."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            return False
        for event in events:
            self.take(event)
        self.flush()
        return True

    def take(self, event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0))
        if isinstance(event, h2.events.ResponseReceived):
            stream.headers = {k.decode(): v.decode() for k, v in event.headers}
            stream.status = int(stream.headers[":status"])
        elif isinstance(event, h2.events.DataReceived):
            stream.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.reset = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = int(event.error_code)

    def wait(self, *sids: int) -> list[Stream]:
        """Reads until each of the streams has ended or been reset (or the connection closed)."""
        while not all(self.streams[s].ended or self.streams[s].reset is not None for s in sids):
            if not self.read_some():
                break
        return [self.streams[s] for s in sids]

    def get(self, path: str, **kw) -> Stream:
        return self.wait(self.request(path, **kw))[0]

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self.flush()
        except (OSError, h2.exceptions.ProtocolError):
            pass
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
