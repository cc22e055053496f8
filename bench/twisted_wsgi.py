"""Twisted's WSGI container, as Evennia serves Django: the peer the pool sections
compare against ("the original").

    python bench/twisted_wsgi.py --port P [--threads MIN,MAX] MODULE:APP

twisted.web.wsgi.WSGIResource runs the app in the reactor's thread pool, sized
as Evennia's WEBSERVER_THREADPOOL_LIMITS default (1, 20), served by
twisted.web.server.Site on 127.0.0.1 with no access log.
"""

import argparse
import importlib
import sys

from twisted.internet import reactor
from twisted.python import log
from twisted.web import wsgi
from twisted_proxy import QuietSite


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", default="1,20", metavar="MIN,MAX")
    parser.add_argument("target", metavar="MODULE:APP")
    args = parser.parse_args()
    module, _, name = args.target.partition(":")
    app = getattr(importlib.import_module(module), name)
    low, high = (int(n) for n in args.threads.split(","))

    log.startLogging(sys.stderr, setStdout=False)
    pool = reactor.getThreadPool()
    pool.adjustPoolsize(low, high)
    site = QuietSite(wsgi.WSGIResource(reactor, pool, app))
    reactor.listenTCP(args.port, site, interface="127.0.0.1")
    print(f"twisted wsgi listening on http://127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
