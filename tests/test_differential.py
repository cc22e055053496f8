"""The same bytes through Bartizan and through two strict parsers, llhttp (httptools) and h11:
whatever Bartizan accepts, both accept, with the same method, target, header fields and body,
and the request after it begins where they say it does. The inputs are the fuzz corpus of the
request stream and requests generated from the HTTP/1.1 grammar with mutations (line ends,
whitespace, chunk lines, duplicated and folded fields, obs-text, request lines).

Bartizan answers each input on a connection of its own, with a sentinel request after it;
the app (tests/apps/parsed.py) says what it was given. Where Bartizan is right and a parser
is not, the shape is listed in KNOWN with the RFC clause that says so."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import h11
import httptools
import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus" / "request_stream"
SENTINEL = b"GET /__next HTTP/1.1\r\nHost: h\r\n\r\n"


def llhttp_knows(method):
    """llhttp refuses any method outside its own list (lowercase `get` among them)."""
    return bool(by_httptools(method.encode("latin-1") + b" / HTTP/1.1\r\nHost: h\r\n\r\n"))


# Shapes Bartizan accepts and a parser refuses, where Bartizan is right: (the RFC clause,
# the parser, whether a case is of that shape, given what Bartizan's app was handed).
KNOWN = [
    (
        "RFC 9110 9.1: a method is a case-sensitive token and methods are extensible; one "
        "the server does not know is the app's to answer (405, 501), not a parse error",
        "llhttp",
        lambda first: not llhttp_knows(first["method"]),
    ),
]


# --- the inputs -------------------------------------------------------------------------

CHUNKED = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
BASES = {
    "get": ([b"GET /a/b?x=1 HTTP/1.1", b"Host: h", b"User-Agent: t", b"Accept: */*"], b""),
    "post-length": (
        [b"POST /form HTTP/1.1", b"Host: h", b"Content-Type: text/plain", b"Content-Length: 5"],
        b"hello",
    ),
    "post-chunked": ([b"POST /up HTTP/1.1", b"Host: h", b"Transfer-Encoding: chunked"], CHUNKED),
}
REQUEST_LINES = [
    b"GET / HTTP/1.1",
    b"GET  / HTTP/1.1",
    b"GET /a b HTTP/1.1",
    b"GET / HTTP/1.0",
    b"GET / HTTP/2.0",
    b"GET / http/1.1",
    b"get / HTTP/1.1",
    b"GET /\x80 HTTP/1.1",
    b"GET http://h/p?q HTTP/1.1",
    b"GET /p#f HTTP/1.1",
    b"G\tET / HTTP/1.1",
    b"GET / HTTP/1.1 ",
    b" GET / HTTP/1.1",
    b"GET /%zz HTTP/1.1",
    b"GET /? HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
    b"GET\t/\tHTTP/1.1",
    b"GET / HTTP/1.12",
    b"PRI * HTTP/2.0",
]
FIELDS = [
    b"Content-Length: 5",
    b"Content-Length: 0",
    b"Content-Length: +5",
    b"Content-Length: 05",
    b"Content-Length: 5, 5",
    b"Content-Length: 0x5",
    b"Content-Length: -1",
    b"Content-Length: 5 ",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: Chunked",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked, identity",
    b"Transfer-Encoding: chunked, chunked",
    b"Transfer-Encoding:\tchunked",
    b"Transfer-Encoding : chunked",
    b"Host: other",
    b"X: \x80\xff",
    b"X: a\x00b",
    b"X: a\x7fb",
    b"X: a\x01b",
    b"X :v",
    b" X: v",
    b"X\t: v",
    b"X-\xe9: v",
    b": novalue",
    b"X:",
    b"X_Y: v",
    b'X: "quoted" value',
    b"Connection: close",
    b"Cookie: a=1",
    b"Cookie: b=2",
    b"X-Multi: one",
    b"X-Multi: two",
]
CHUNK_LINES = [
    b"3",
    b"03",
    b"3;a",
    b"3;a=b",
    b"3 ;a=b",
    b"3; a = b",
    b"3;",
    b"3 ",
    b"3\t",
    b'3;a="b c"',
    b'3;a="b',
    b"3;=b",
    b"+3",
    b"0x3",
    b"3;a=b;c",
    b"3;a b",
    b"A",
    b"3\x00",
    b"3;a=\x80",
]
LINE_ENDS = [b"\n", b"\r", b"\n\r", b"\r\r\n"]
SPACES = [b" ", b"\t", b"  "]


def build(lines, body):
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def systematic():
    """Each mutation alone, on each base it applies to."""
    for i, line in enumerate(REQUEST_LINES):
        yield f"request-line-{i}", build([line, b"Host: h"], b"")
    for name, (lines, body) in BASES.items():
        yield name, build(lines, body)
        for i, field in enumerate(FIELDS):
            yield f"{name}-field-{i}", build([*lines, field], body)
        for i, end in enumerate(LINE_ENDS):
            for at in range(1, len(lines)):
                raw = b"\r\n".join(lines[:at]) + end + b"\r\n".join(lines[at:])
                yield f"{name}-line-end-{i}-at-{at}", raw + b"\r\n\r\n" + body
        for at in range(1, len(lines)):
            folded = [*lines[:at], lines[at] + b"\r\n folded", *lines[at + 1 :]]
            yield f"{name}-folded-{at}", build(folded, body)
    lines, _ = BASES["post-chunked"]
    for i, chunk_line in enumerate(CHUNK_LINES):
        yield f"chunk-line-{i}", build(lines, CHUNKED.replace(b"3;ext=1", chunk_line))
    for i, end in enumerate(LINE_ENDS):
        for at in range(CHUNKED.count(b"\r\n")):
            parts = CHUNKED.split(b"\r\n")
            body = b"\r\n".join(parts[: at + 1]) + end + b"\r\n".join(parts[at + 1 :])
            yield f"chunk-line-end-{i}-at-{at}", build(lines, body)


def mutated(count, seed=9112):
    """One to three mutations at once, chosen by a seeded generator: the same every run."""
    rng = random.Random(seed)
    for n in range(count):
        name = rng.choice(list(BASES))
        lines, body = BASES[name]
        lines = list(lines)
        for _ in range(rng.randint(1, 3)):
            kind = rng.randrange(6)
            if kind == 0:
                lines[0] = rng.choice(REQUEST_LINES[:9])
            elif kind == 1:
                lines.insert(rng.randint(1, len(lines)), rng.choice(FIELDS))
            elif kind == 2:
                at = rng.randrange(1, len(lines))
                line = lines[at]
                cut = rng.randint(0, len(line))
                lines[at] = line[:cut] + rng.choice(SPACES) + line[cut:]
            elif kind == 3:
                at = rng.randrange(1, len(lines))
                lines.insert(at, lines[at])
            elif kind == 4 and body == CHUNKED:
                body = CHUNKED.replace(b"3;ext=1", rng.choice(CHUNK_LINES))
            else:
                at = rng.randrange(1, len(lines))
                lines[at] = lines[at] + rng.choice(LINE_ENDS) + b"X-After: v"
        yield f"mutated-{n}", build(lines, body)


TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PATH_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@%"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "X-CUSTOM"]


def token(rng, chars=TCHARS, most=12):
    return "".join(rng.choice(chars) for _ in range(rng.randint(1, most)))


def field_value(rng):
    """Visible characters, inner spaces and tabs, and now and then obs-text."""
    visible = [chr(c) for c in range(0x21, 0x7F)] + [" ", "\t"] * 4
    value = "".join(rng.choice(visible) for _ in range(rng.randint(0, 24)))
    if rng.random() < 0.2:
        value += "".join(chr(rng.randint(0x80, 0xFF)) for _ in range(rng.randint(1, 4)))
    return value.strip(" \t").encode("latin-1")


def chunked_body(rng, data):
    out, at = b"", 0
    while at < len(data):
        size = rng.randint(1, max(1, len(data) - at))
        digits = f"{size:x}" if rng.random() < 0.5 else f"{size:X}"
        if rng.random() < 0.2:
            digits = "0" * rng.randint(1, 3) + digits
        ext = ""
        for _ in range(rng.choice([0, 0, 1, 2])):
            ext += ";" + token(rng)
            if rng.random() < 0.5:
                ext += "=" + (token(rng) if rng.random() < 0.5 else '"a \\" b"')
        out += (digits + ext).encode() + b"\r\n" + data[at : at + size] + b"\r\n"
        at += size
    out += b"0\r\n"
    for _ in range(rng.choice([0, 0, 1])):
        out += b"X-" + token(rng).encode() + b": " + field_value(rng) + b"\r\n"
    return out + b"\r\n"


def generated(count, seed=9110):
    """Requests from the HTTP/1.1 grammar, valid, in all its variety: methods, targets with
    every character a path allows, fields of any token with optional whitespace, obs-text,
    bodies by length or chunked with extensions and trailers."""
    rng = random.Random(seed)
    for n in range(count):
        method = rng.choice(METHODS)
        target = "/" + "/".join(token(rng, PATH_CHARS) for _ in range(rng.randint(0, 3)))
        if rng.random() < 0.4:
            target += "?" + token(rng, PATH_CHARS + "/?")
        lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: h"]
        for _ in range(rng.randint(0, 6)):
            ows = rng.choice(["", " ", "  ", "\t"]).encode()
            lines.append(token(rng).encode() + b":" + ows + field_value(rng) + ows)
        data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, 5, 40])))
        body = b""
        if data and rng.random() < 0.5:
            lines.append(b"Transfer-Encoding: chunked")
            body = chunked_body(rng, data)
        elif data:
            lines.append(b"Content-Length: %d" % len(data))
            body = data
        yield f"generated-{n}", build(lines, body)


def corpus():
    """The request_stream target's inputs: a byte choosing the piece size, then the stream."""
    for path in sorted(CORPUS.iterdir()) if CORPUS.is_dir() else []:
        yield f"corpus-{path.name[:16]}", path.read_bytes()[1:]


def cases():
    return [*systematic(), *generated(800), *mutated(600), *corpus()]


# --- the parsers ------------------------------------------------------------------------


def by_httptools(data):
    """The messages llhttp reads, in order, up to its first error."""
    messages = []

    class Sink:
        def __init__(self):
            self.current = None

        def on_message_begin(self):
            self.current = {"target": b"", "fields": [], "body": b""}
            self.in_trailers = False

        def on_url(self, url):
            self.current["target"] += url

        def on_header(self, name, value):
            # After the head, fields are trailers, which a WSGI app is never shown.
            if not self.in_trailers:
                self.current["fields"].append((name, value))

        def on_headers_complete(self):
            self.current["method"] = parser.get_method()
            self.in_trailers = True

        def on_body(self, body):
            self.current["body"] += body

        def on_message_complete(self):
            messages.append(self.current)

    parser = httptools.HttpRequestParser(Sink())
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        pass
    except httptools.HttpParserUpgrade:
        # What follows an upgrade request is another protocol's to llhttp, whatever the
        # answer: the request after it is not placed.
        if messages:
            messages[-1]["upgrade"] = True
    return messages


def by_h11(data):
    """The messages h11 reads, in order, up to its first error."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    messages, current = [], None
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                current = {
                    "method": event.method,
                    "target": event.target,
                    "fields": list(event.headers),
                    "body": b"",
                }
            elif isinstance(event, h11.Data):
                current["body"] += event.data
            elif isinstance(event, h11.EndOfMessage):
                messages.append(current)
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            else:
                break
    except (h11.RemoteProtocolError, h11.LocalProtocolError):
        pass
    return messages


def as_environ(message):
    """A parser's message as the WSGI app sees one: HTTP_* names (underscored names left
    out, as Bartizan drops them), repeated fields joined, values without surrounding
    whitespace, Latin-1."""
    fields = {}
    for name, value in message["fields"]:
        name = name.decode("latin-1").lower()
        if "_" in name:
            continue
        value = value.decode("latin-1").strip(" \t")
        if name in ("content-type", "content-length"):
            key = name.upper().replace("-", "_")
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        if key in fields:
            if key == "CONTENT_LENGTH":
                continue
            fields[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            fields[key] = value
    target = message["target"].decode("latin-1").split("#", 1)[0]
    if target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return {
        "method": message["method"].decode("latin-1"),
        "target": target,
        "fields": fields,
        "body": message["body"].decode("latin-1"),
    }


# --- Bartizan ---------------------------------------------------------------------------


def responses(raw):
    """(status, body) of each whole response in `raw`."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        out.append((status, rest[:length]))
        raw = rest[length:]
    return out


def by_bartizan(port, data):
    """What the app was given for each request Bartizan answered with 200, in order, up to
    the first it refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        raw = b""
        try:
            while chunk := s.recv(65536):
                raw += chunk
        except OSError:
            pass
    accepted = []
    for status, body in responses(raw):
        if status != 200:
            break
        accepted.append(json.loads(body))
    return accepted


@pytest.fixture(scope="module")
def port(module_server):
    return module_server("tests.apps.parsed:app").port


def differences(port, name, data):
    """Whether Bartizan accepted the input, and how the parsers differ from it if so."""
    data = data + SENTINEL
    mine = by_bartizan(port, data)
    if not mine:
        return False, []
    found = []
    for parser, read in (("llhttp", by_httptools), ("h11", by_h11)):
        if any(p == parser and applies(mine[0]) for _, p, applies in KNOWN):
            continue
        raw = read(data)
        upgraded = any(m.get("upgrade") for m in raw)
        theirs = [as_environ(m) for m in raw]
        if not theirs:
            found.append(f"{name}: {parser} refuses what Bartizan accepted as {mine[0]}")
            continue
        if theirs[0] != mine[0]:
            found.append(f"{name}: {parser} read {theirs[0]}, Bartizan {mine[0]}")
            continue
        # The request after it begins where both say: Bartizan answered the sentinel as
        # the next request exactly when the parser read it as one.
        mine_next = len(mine) > 1 and mine[1]["target"] == "/__next"
        theirs_next = len(theirs) > 1 and theirs[1]["target"] == "/__next"
        if mine_next and not theirs_next and not upgraded:
            found.append(f"{name}: {parser} placed the next request elsewhere")
    return True, found


def test_whatever_bartizan_accepts_both_strict_parsers_read_the_same(port):
    all_cases = cases()
    # The inputs are many and varied, not a handful.
    assert len(all_cases) > 1000
    found = []
    accepted = 0
    for name, data in all_cases:
        took, differ = differences(port, name, data)
        accepted += took
        found.extend(differ)
    print(f"differential: {len(all_cases)} inputs, {accepted} accepted by Bartizan")
    # Enough of them are valid requests that the comparison means something.
    assert accepted > 800, accepted
    assert not found, "\n".join(found[:40]) + f"\n({len(found)} differences in all)"
