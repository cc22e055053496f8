"""Twisted's stock reverse proxy, as a peer for the `proxy` benchmark section.

    python bench/twisted_proxy.py --port P --upstream HOST:PORT

Everything under / is forwarded to the upstream by
twisted.web.proxy.ReverseProxyResource, served by twisted.web.server.Site on
127.0.0.1, on the default reactor. Twisted's proxy client speaks HTTP/1.0
with "Connection: close", so it opens one upstream connection per request.
"""

import argparse
import sys

from twisted.internet import reactor
from twisted.python import log
from twisted.web import proxy, server


class QuietSite(server.Site):
    # No access log, as nginx runs with `access_log off`.
    def log(self, request):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")

    # Each request makes a client factory, which by default logs its start
    # and stop; that is two log lines per request on top of the work.
    proxy.ProxyClientFactory.noisy = False
    # Errors go to stderr (the harness's server log); unstarted, Twisted
    # would keep the events in memory.
    log.startLogging(sys.stderr, setStdout=False)

    site = QuietSite(proxy.ReverseProxyResource(host, int(port), b""))
    reactor.listenTCP(args.port, site, interface="127.0.0.1")
    print(
        f"twisted proxy listening on http://127.0.0.1:{args.port} -> {args.upstream}",
        file=sys.stderr,
        flush=True,
    )
    reactor.run()


if __name__ == "__main__":
    main()
