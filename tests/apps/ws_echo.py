"""A minimal WebSocket echo server (RFC 6455), standing in for an upstream
that speaks WebSocket behind the reverse proxy.

It runs on threads inside the test process: one thread accepts, one thread
per connection. The handshake is checked (Upgrade: websocket, a
Sec-WebSocket-Key, version 13) and answered with 101 and the
Sec-WebSocket-Accept the RFC computes; then every text or binary frame is
echoed back in a frame of the same type, pings get pongs and a close is
answered with a close. Client frames must be masked (RFC 6455 section 5.1);
an unmasked one ends the connection.

Every socket operation has a timeout, and `close()` ends all threads.
"""

import base64
import hashlib
import socket
import struct
import threading

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
IO_TIMEOUT = 10.0


def accept_value(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1((key + WS_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def encode_frame(opcode, payload, mask_key=None):
    """One final frame; masked when mask_key (4 bytes) is given."""
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if mask_key is not None else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask_key is None:
        return head + payload
    masked = bytes(b ^ mask_key[i % 4] for i, b in enumerate(payload))
    return head + mask_key + masked


class FrameReader:
    """Reads whole frames from a socket; `read()` gives (fin, opcode, masked, payload)."""

    def __init__(self, sock, buf=b""):
        self.sock = sock
        self.buf = buf

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed mid-frame")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read(self):
        b0, b1 = self._need(2)
        fin = bool(b0 & 0x80)
        opcode = b0 & 0x0F
        masked = bool(b1 & 0x80)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._need(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._need(8))
        key = self._need(4) if masked else None
        payload = self._need(n)
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return fin, opcode, masked, payload


class WsEchoServer:
    def __init__(self, host="127.0.0.1"):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.handshakes = []  # request heads seen, as {lower-case name: value}
        self.messages = []  # (opcode, payload) echoed
        self._stop = threading.Event()
        self._conns = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT)
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                if len(buf) > 65536:
                    return
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            with self._lock:
                self.handshakes.append({"request_line": lines[0], **headers})
            key = headers.get("sec-websocket-key")
            ok = (
                headers.get("upgrade", "").lower() == "websocket"
                and "upgrade" in headers.get("connection", "").lower()
                and headers.get("sec-websocket-version") == "13"
                and key
            )
            if not ok:
                body = b"not a websocket handshake\n"
                conn.sendall(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (len(body), body)
                )
                return
            conn.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept_value(key)}\r\n"
                    "\r\n"
                ).encode("latin-1")
            )
            reader = FrameReader(conn, rest)
            while True:
                _fin, opcode, masked, payload = reader.read()
                if not masked:
                    return  # RFC 6455 5.1: a server must close on an unmasked client frame
                if opcode in (0x1, 0x2):
                    with self._lock:
                        self.messages.append((opcode, payload))
                    conn.sendall(encode_frame(opcode, payload))
                elif opcode == 0x9:
                    conn.sendall(encode_frame(0xA, payload))
                elif opcode == 0x8:
                    conn.sendall(encode_frame(0x8, payload[:2]))
                    return
        except (OSError, EOFError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        self._thread.join(timeout=2)
