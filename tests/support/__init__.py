"""Shared helpers for the end-to-end tests, one concept per module:

- process: the server (or any command) as a real process, its start line
  and log, its workers and memory, and bounded waits;
- raw: HTTP/1.x over raw sockets, so tests see the exact bytes on the wire;
- apps: import specs of the test apps that several modules serve;
- load: client threads looping keep-alive requests, counting failures;
- proxy: the reverse proxy, app servers behind it, TLS, a WebSocket client;
- statics: the directory tree the static-file tests serve;
- cdp: a Chrome DevTools Protocol client for the browser test.

The names most tests use are importable from here directly.
"""

from tests.support.process import (
    LIVE,
    PROXY_LINE_RE,
    ROOT,
    START_LINE_RE,
    START_TIMEOUT,
    ChildProcess,
    RssSampler,
    ServerProcess,
    ServerStartError,
    alive,
    free_port,
    in_thread,
    kill_now,
    port_refuses,
    read_marker_file,
    rss_kb,
    split_url,
    tree_pids,
    wait_for,
    wait_line,
    worker_pids,
)
from tests.support.procfs import open_paths
from tests.support.raw import (
    IO_TIMEOUT,
    ConnectionClosed,
    RawConnection,
    RawResponse,
    build_request,
    can_bind_source,
    chunked,
    fetch_until_close,
    have_ipv6_loopback,
    header_tokens,
    raw_request,
    send_until_close,
)

__all__ = [
    "IO_TIMEOUT",
    "LIVE",
    "PROXY_LINE_RE",
    "ROOT",
    "START_LINE_RE",
    "START_TIMEOUT",
    "ChildProcess",
    "ConnectionClosed",
    "RawConnection",
    "RawResponse",
    "RssSampler",
    "ServerProcess",
    "ServerStartError",
    "alive",
    "build_request",
    "can_bind_source",
    "chunked",
    "fetch_until_close",
    "free_port",
    "have_ipv6_loopback",
    "header_tokens",
    "in_thread",
    "kill_now",
    "open_paths",
    "port_refuses",
    "raw_request",
    "read_marker_file",
    "rss_kb",
    "send_until_close",
    "split_url",
    "tree_pids",
    "wait_for",
    "wait_line",
    "worker_pids",
]
