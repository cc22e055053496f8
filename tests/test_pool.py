"""The app thread pool admits another request whenever the GIL is free, and
only then: requests that wait (or run C code without the GIL) use the threads,
requests that run Python take turns. Concurrency is counted by the app itself
(tests/apps/overlap.py), never inferred from timings."""

import http.client
import json
import os
import threading

from tests.support import split_url

APP = "tests.apps.overlap:app"


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def load(port, path, clients, each):
    """`clients` threads, each sending `each` requests one after another;
    returns the statuses seen."""
    statuses = []
    lock = threading.Lock()

    def client():
        for _ in range(each):
            status, _ = get(port, path)
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return statuses


def most(port):
    status, body = get(port, "/most")
    assert status == 200
    return json.loads(body)


def port_of(proc):
    return split_url(proc.url)[1]


def most_inside(server, path, threads, clients, each):
    """Runs the load on a fresh server; every request must succeed. Returns the app's
    counts of the most requests seen inside each kind of work at once."""
    port = port_of(server(APP, "--threads", str(threads)))
    assert load(port, path, clients, each) == [200] * (clients * each)
    return most(port)


def test_requests_that_wait_use_every_thread(server):
    seen = most_inside(server, "/sleep", threads=8, clients=16, each=10)
    # Sixteen clients, eight threads: all eight sleep at once, never more, though
    # each sleep lasts only 20 ms.
    assert seen["sleep"] == 8


def test_gil_free_c_code_runs_on_two_threads_at_once(server):
    if (os.cpu_count() or 1) < 2:
        import pytest

        pytest.skip("one core: C code off the GIL has no second core to use")
    seen = most_inside(server, "/hash", threads=8, clients=4, each=4)
    assert seen["hash"] >= 2


def test_requests_that_run_python_take_turns(server):
    seen = most_inside(server, "/python", threads=8, clients=8, each=5)
    # Eight clients and eight threads allowed, but only one request at a time
    # inside the Python loop: starting another would only interleave them.
    assert seen["python"] == 1


def test_waiting_requests_do_not_hold_up_python_ones(server):
    """While every thread but one sleeps, Python requests still go through."""
    proc = server(APP, "--threads", "4")
    port = port_of(proc)
    sleepers = threading.Thread(target=load, args=(port, "/sleep", 3, 40))
    sleepers.start()
    statuses = load(port, "/python", clients=4, each=10)
    sleepers.join(120)
    assert statuses == [200] * 40
    seen = most(port)
    assert seen["sleep"] == 3
    assert seen["python"] == 1
