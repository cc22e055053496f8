"""A real Evennia game on free loopback ports, made with `evennia --init` and driven with the
`evennia` launcher as a game owner would: start, reload, stop. With `bartizan=True` its
settings carry the two lines that put its website on Bartizan; without, it runs Evennia's own
Twisted web stack (the benchmark's peer).

Every wait here is bounded: a game that does not come up fails the caller, never hangs it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from tests.support.cdp import WebSocket

BIN = Path(sys.executable).parent
EVENNIA = BIN / "evennia"
SUPERUSER = ("admin", "bartizan-Evennia-1")

TWO_LINES = """
EVENNIA_SERVER_SERVICE_CLASS = "bartizan.evennia.ServerService"
EVENNIA_PORTAL_SERVICE_CLASS = "bartizan.evennia.PortalService"
"""

# A view that shows what Django was told about the client, for the forwarding tests.
CLIENT_VIEW = """

from django.http import JsonResponse as _JsonResponse
from django.urls import path as _path
from evennia.utils.utils import ip_from_request as _ip_from_request


def _client(request):
    return _JsonResponse(
        {"remote_addr": request.META.get("REMOTE_ADDR"), "evennia_ip": _ip_from_request(request)}
    )


urlpatterns.append(_path("_client/", _client))
"""


# The webclient loads jQuery from a CDN, which a test machine may not reach: this game serves
# the copy Django's admin ships, as a game for offline play would.
OFFLINE_TEMPLATES = {
    "webclient/base.html": """{% extends "webclient/base.html" %}{% load static %}
{% block jquery_import %}
<script src="{% static 'admin/js/vendor/jquery/jquery.min.js' %}"></script>
{% endblock %}
"""
}


SUBPROTOCOL = "v1.evennia.com"


def evennia_6() -> bool:
    import evennia

    return int(evennia.__version__.split(".")[0]) >= 6


def websocket(port, path="/ws", source=None, tls=None):
    """A websocket to a game's webclient, offering the subprotocol its page offers."""
    scheme = "wss" if tls else "ws"
    return WebSocket(
        f"{scheme}://127.0.0.1:{port}{path}",
        timeout=30,
        protocols=[SUBPROTOCOL],
        source=source,
        context=tls,
    )


def say(ws, command):
    ws.send_text(json.dumps(["text", [command], {}]))


def until(ws, text, timeout=30):
    """What the game sent until a message holding `text`."""
    deadline = time.monotonic() + timeout
    seen = []
    while not seen or text not in seen[-1]:
        seen.append(ws.recv_text(deadline))
    return "\n".join(seen)


def logged_in(ws):
    until(ws, "connect")
    say(ws, f"connect {SUPERUSER[0]} {SUPERUSER[1]}")
    until(ws, "Limbo")


def play_in_browser(page) -> None:
    """Logs in and looks through the webclient's own client in a loaded page, and waits for
    the room's text. (The page's layout libraries come from CDNs a test machine may not
    reach, so the text is read from the client's event stream rather than the layout.)"""
    page.evaluate(
        "window.seen = []; if (!Evennia.initialized) { Evennia.init(); }"
        "Evennia.emitter.on('text', function (args) { window.seen.push(String(args[0])); });"
    )
    deadline = time.monotonic() + 30

    def wait_for(expression):
        while not page.evaluate(expression):
            assert time.monotonic() < deadline, (expression, page.evaluate("window.seen"))
            time.sleep(0.2)

    wait_for("Evennia.isConnected()")
    login = json.dumps(f"connect {SUPERUSER[0]} {SUPERUSER[1]}")
    page.evaluate(f"Evennia.msg('text', [{login}], {{}}); Evennia.msg('text', ['look'], {{}})")
    wait_for("window.seen.some(function (t) { return t.indexOf('Limbo') >= 0; })")


# Every game made in this run, so a run that is aborted can still kill their processes.
GAMES: list[Game] = []


def kill_all() -> None:
    for game in GAMES:
        game.kill_leftovers()


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Game:
    def __init__(self, parent: Path, *, bartizan: bool, name: str = "bartizangame"):
        self.dir = parent / name
        self.name = name
        # Trust for a game whose public port speaks HTTPS (its pages are then asked over it).
        self.tls: ssl.SSLContext | None = None
        self.bartizan = bartizan
        GAMES.append(self)
        telnet, web, internal, websocket, amp = free_ports(5)
        self.port, self.internal_port, self.websocket_port = web, internal, websocket
        self.settings = {
            "TELNET_PORTS": [telnet],
            "WEBSERVER_PORTS": [(web, internal)],
            "WEBSOCKET_CLIENT_PORT": websocket,
            "AMP_PORT": amp,
            "TELNET_INTERFACES": ["127.0.0.1"],
            "WEBSERVER_INTERFACES": ["127.0.0.1"],
            "WEBSOCKET_CLIENT_INTERFACE": "127.0.0.1",
        }

    @property
    def ports(self) -> list[int]:
        s = self.settings
        return [
            *s["TELNET_PORTS"],
            self.port,
            self.internal_port,
            self.websocket_port,
            s["AMP_PORT"],
        ]

    def env(self) -> dict:
        env = dict(os.environ)
        # The launcher runs `twistd` from PATH.
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["EVENNIA_SUPERUSER_USERNAME"], env["EVENNIA_SUPERUSER_PASSWORD"] = SUPERUSER
        env.pop("DJANGO_SETTINGS_MODULE", None)
        return env

    def evennia(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        cwd = self.dir if self.dir.exists() else self.dir.parent
        return subprocess.run(
            [str(EVENNIA), *args],
            cwd=cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def create(
        self,
        extra_settings: str = "",
        web_plugins: str | None = None,
        templates: dict[str, str] | None = None,
    ) -> Game:
        self.evennia("--init", self.name)
        if web_plugins is not None:
            (self.dir / "server" / "conf" / "web_plugins.py").write_text(web_plugins)
        for name, text in (templates or {}).items():
            path = self.dir / "web" / "templates" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        lines = [f"{k} = {v!r}" for k, v in self.settings.items()]
        text = "\n".join(lines) + "\n" + (TWO_LINES if self.bartizan else "") + extra_settings
        with open(self.dir / "server" / "conf" / "settings.py", "a") as f:
            f.write("\n" + text)
        with open(self.dir / "web" / "urls.py", "a") as f:
            f.write(CLIENT_VIEW)
        self.evennia("migrate")
        return self

    def log(self, which: str = "server") -> str:
        path = self.dir / "server" / "logs" / f"{which}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Game:
        self.evennia("start")
        # A fresh game restarts its Server once, right after it first starts.
        self.wait_for_log("server", "restarted in 'reset' mode", 60)
        self.wait_until_serving()
        return self

    def wait_for_log(self, which: str, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(which):
            if time.monotonic() > deadline:
                raise AssertionError(f"{which}.log never said {text!r}")
            time.sleep(0.2)

    def server_pid(self) -> int | None:
        try:
            pid = int((self.dir / "server" / "server.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def wait_for_new_server(self, old_pid: int | None, timeout: float = 60) -> int:
        """The pid of the Server that replaced `old_pid` (a reload starts a new process)."""
        deadline = time.monotonic() + timeout
        while True:
            pid = self.server_pid()
            if pid is not None and pid != old_pid:
                return pid
            if time.monotonic() > deadline:
                raise AssertionError(f"the Server (pid {old_pid}) was never replaced")
            time.sleep(0.2)

    def wait_until_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, body, _ = self.get("/")
                if status == 200 and self.name.encode() in body:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the game's front page never answered 200")
            time.sleep(0.3)

    def get(self, path: str, headers: dict | None = None, *, port: int | None = None):
        if self.tls is not None and port is None:
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.tls)
        else:
            c = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=30)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read(), r
        finally:
            c.close()

    def reload(self) -> None:
        self.evennia("reload")

    def stop(self) -> None:
        if self.dir.exists():
            try:
                self.evennia("stop", timeout=60)
            except subprocess.SubprocessError:
                pass
        self.kill_leftovers()

    def pids(self) -> list[int]:
        pids = []
        for name in ("server.pid", "portal.pid"):
            path = self.dir / "server" / name
            try:
                pids.append(int(path.read_text().strip()))
            except (OSError, ValueError):
                pass
        return [p for p in pids if _alive(p)]

    def kill_leftovers(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, 9)
            except OSError:
                pass


class Ask(NamedTuple):
    """One request of a client's cycle, and the status it must get."""

    method: str
    path: str
    expected: int = 200
    body: str | None = None


PAGES = [
    Ask("GET", "/"),
    Ask("GET", "/static/website/css/website.css"),
    Ask("GET", "/auth/login/"),
    Ask("GET", "/webclient/"),
]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Clients:
    """Client threads on keep-alive connections, each asking for `asks` in turn while the
    block runs, and judging every answer: `ok` (the expected status, with a body), `empty` (no
    body) or `failed` (another status, or the connection dropped). Keeps the bad answers and
    the longest any request waited."""

    def __init__(self, port: int, asks: list[Ask], threads: int = 12):
        self.port, self.asks = port, asks
        self.stop = threading.Event()
        self.counts: Counter = Counter()
        self.bad: list = []
        self.longest = 0.0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(150)

    def note(self, what, verdict: str, waited: float) -> None:
        with self.lock:
            self.counts[verdict] += 1
            self.longest = max(self.longest, waited)
            if verdict != "ok":
                self.bad.append(what)

    def run(self, n: int) -> None:
        conn = None
        while not self.stop.is_set():
            ask = self.asks[n % len(self.asks)]
            n += 1
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                headers = FORM if ask.body is not None else {}
                conn.request(ask.method, ask.path, body=ask.body, headers=headers)
                r = conn.getresponse()
                body = r.read()
                verdict = "empty" if not body else "ok" if r.status == ask.expected else "failed"
                what = (ask.method, ask.path, r.status, len(body))
                if (r.getheader("Connection") or "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                verdict, what, conn = "failed", (ask.method, ask.path, type(e).__name__), None
            self.note(what, verdict, time.monotonic() - started)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not a process left running.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
