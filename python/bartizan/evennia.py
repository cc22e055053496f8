"""Evennia's website served by Bartizan: two lines in a game's ``server/conf/settings.py``::

    EVENNIA_SERVER_SERVICE_CLASS = "bartizan.evennia.ServerService"
    EVENNIA_PORTAL_SERVICE_CLASS = "bartizan.evennia.PortalService"

- **Server process:** Django runs in an embedded ``bartizan.Server`` on each internal port of
  ``WEBSERVER_PORTS`` (127.0.0.1), inside the game's process, so views see live objects. The
  static and media roots are served from Rust. On reload and stop, the ports close at once,
  in-flight requests finish (up to ``web_drain_timeout`` seconds), and each kept-alive
  connection from the Portal is answered once more with ``Connection: close``; new
  connections wait at the Portal for the next Server.
- **Portal process:** each public port of ``WEBSERVER_PORTS``, on every interface of
  ``WEBSERVER_INTERFACES`` (``LOCKDOWN_MODE`` honoured), is a ``bartizan.Proxy``. While the
  Server reloads, requests wait up to ``web_upstream_wait`` seconds for it; a Server that
  stays away gives 503 with ``Retry-After``. What the Portal answers itself (the AJAX
  webclient at ``/webclientdata`` and whatever ``at_webproxy_root_creation`` adds) stays a
  Twisted resource, on a loopback site the proxy routes those paths to.
- ``BARTIZAN_SERVER`` and ``BARTIZAN_PORTAL`` (dicts, optional) add or override keyword
  arguments of the Server's ``bartizan.Server`` and the Portal's ``bartizan.Proxy``, e.g.
  ``BARTIZAN_PORTAL = {"upstream_wait": 60}``.
- ``UPSTREAM_IPS`` are the peers whose ``X-Forwarded-For`` is believed; ``DEBUG`` turns on the
  access log of both processes, to ``HTTP_LOG_FILE``, as Evennia's own sites log;
  ``WEBSERVER_THREADPOOL_LIMITS`` sizes the app threads.
  Twisted children that ``at_webserver_root_creation`` adds to the Server's root are served
  the same way as the Portal's; a plugin that returns a different root is told at start that
  only the children of the root it was given are served.
- **One public port:** the webclient's websocket is also served at ``/ws`` of every public
  port (the upgrade forwarded to the Portal's websocket listener, its subprotocol passed both
  ways, the client's address in ``X-Forwarded-For``), and the webclient page connects there,
  ``ws`` or ``wss`` as the page was loaded, unless the game set ``WEBSOCKET_CLIENT_URL``. The
  websocket port keeps working for clients that use it.
- **While the Server restarts** the Portal's reactor keeps running (Evennia's launch of the
  new Server would hold it until that Server has started): websocket, AJAX and telnet
  sessions are answered throughout.
- **HTTPS:** ``BARTIZAN_PORTAL`` takes the HTTPS options (``https``, ``acme_email``,
  ``state_dir``, ``http_redirect``, ...), and the whole game, pages, static files, AJAX and
  websocket, is served over HTTPS on its public port.

A game whose own service classes replace Evennia's mixes ``ServerWebMixin`` /
``PortalWebMixin`` in front of them instead.
"""

from __future__ import annotations

import os
import subprocess
import threading
from urllib.parse import quote

from django.conf import settings
from evennia.server.portal.service import EvenniaPortalService
from evennia.server.service import EvenniaServerService
from evennia.utils import logger
from evennia.utils.utils import mod_import
from twisted.application.service import Service
from twisted.internet import reactor, threads
from twisted.web import resource

import bartizan
from bartizan.app import django_mounts

__all__ = ["PortalService", "PortalWebMixin", "ServerService", "ServerWebMixin"]

_PLUGIN_ERROR = (
    "WARNING: settings.WEB_PLUGINS_MODULE not found - "
    "copy 'evennia/game_template/server/conf/web_plugins.py to mygame/server/conf."
)


def _web_plugins():
    """The game's WEB_PLUGINS_MODULE, or None when it has none."""
    try:
        return mod_import(settings.WEB_PLUGINS_MODULE)
    except ImportError:
        return None


def _children(root: resource.Resource, served_elsewhere: set[bytes]) -> list[bytes]:
    return sorted(name for name in root.children if name not in served_elsewhere)


def _call_hook(plugins, hook: str, root: resource.Resource, info_dict: dict) -> None:
    """Calls a WEB_PLUGINS_MODULE hook on `root` as Evennia does (a module without the hook is
    a warning, not a failed start), and says by name what a hook's returned root loses."""
    function = getattr(plugins, hook, None)
    if function is None:
        info_dict["errors"] = (
            f"WARNING: WEB_PLUGINS_MODULE is enabled but {hook}() not found - copy "
            "'evennia/game_template/server/conf/web_plugins.py to mygame/server/conf."
        )
        return
    returned = function(root)
    if returned is not root and returned is not None:
        logger.log_warn(
            f"{settings.WEB_PLUGINS_MODULE}.{hook} returned a new root "
            f"({type(returned).__name__}); Bartizan serves the children added to the root "
            "it was given, not the returned root itself."
        )


def _website(root: resource.Resource, portal: bool):
    """Evennia's own Site class: it logs requests only when DEBUG is on."""
    from evennia.server.webserver import Website

    site = Website(root, logPath=settings.HTTP_LOG_FILE)
    site.is_portal = portal
    return site


class _TwistedRoutes:
    """The Twisted resources a root carries, on a loopback site in this process's reactor, and
    the routes that send their paths there."""

    def __init__(self, root: resource.Resource, names: list[bytes], portal: bool):
        self.port = None
        self.routes: dict[str, str] = {}
        prefixes = []
        for name in names:
            # The proxy matches the raw request path: a name is routed as a browser sends it.
            prefix = "/" + quote(name, safe="!$&'()*+,;=:@-._~")
            if not name or "/" in name.decode("latin-1"):
                logger.log_warn(f"web plugin child {name!r} cannot be served: not a path segment")
                continue
            prefixes.append(prefix)
        if not prefixes:
            return
        self.port = reactor.listenTCP(0, _website(root, portal), interface="127.0.0.1")
        address = f"127.0.0.1:{self.port.getHost().port}"
        self.routes = {prefix: address for prefix in prefixes}

    def close(self):
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class _BartizanService(Service):
    """Starts a bartizan server with its parent service and stops it, off the reactor thread
    (a view or a proxied request may be waiting on the reactor), when the parent stops."""

    def __init__(self, name: str, server: bartizan.Server, stop_timeout: float, retire: bool):
        self.setName(name)
        self.server = server
        self.stop_timeout = stop_timeout
        self.retire = retire
        self.twisted_routes: _TwistedRoutes | None = None
        self._stopped = None  # the one stop's result, once asked

    def privilegedStartService(self):
        # Bound here, as Twisted's own TCP services bind: before the reactor runs, and never
        # in a process that only builds the service (the launcher does, on every command).
        self.server.start()
        super().privilegedStartService()

    def stop_serving(self):
        """A Deferred that fires when the server has stopped (its ports closed, its
        in-flight requests finished or cut at the deadline). Evennia asks more than once (its
        SIGINT handler, then shutdown, then the service's own stop): every caller waits for
        the same, single stop."""
        from twisted.internet import defer

        if self._stopped is None:
            self._stopped = defer.Deferred()
            running = threads.deferToThread(self.server.stop, self.stop_timeout, self.retire)
            running.addBoth(self._stopped.callback)
        waiter = defer.Deferred()
        self._stopped.addBoth(lambda result: (waiter.callback(result), result)[1])
        return waiter

    def stopService(self):
        super().stopService()
        if self.twisted_routes is not None:
            self.twisted_routes.close()
        return self.stop_serving()


class _WebRoot:
    """What Evennia's shutdown asks of ``service.web_root``: ``empty_threadpool()`` returning a
    Deferred that fires once no request is running. Here that is the server's stop: its ports
    close at once (the Portal's proxy holds new requests until the next Server listens) and the
    requests in flight finish."""

    def __init__(self, web: _BartizanService):
        self.web = web

    def empty_threadpool(self):
        server = self.web.server
        pending = server.pending if server.running else 0
        if pending:
            logger.log_info(f"Webserver waiting for {pending} requests ... ")
        return self.web.stop_serving()


class ServerWebMixin:
    """Evennia's Server-side web layer on Bartizan; put it before the Server service class."""

    #: Seconds in-flight requests get to finish on a reload or stop.
    web_drain_timeout = 30.0

    def register_webserver(self):
        from django.core.wsgi import get_wsgi_application
        from evennia.server.webserver import PrivateStaticRoot

        low, high = settings.WEBSERVER_THREADPOOL_LIMITS
        high = max(1, high)
        found = django_mounts(required=True)

        # Plugins get a Twisted root to add children to, as with Evennia's own web root.
        root = resource.Resource()
        stock = {b"media": settings.MEDIA_ROOT, b"static": settings.STATIC_ROOT}
        for name, path in stock.items():
            if os.path.isdir(path):
                root.putChild(name, PrivateStaticRoot(path))
        plugins = _web_plugins()
        if plugins is None:
            self.info_dict["errors"] = _PLUGIN_ERROR
        else:
            _call_hook(plugins, "at_webserver_root_creation", root, self.info_dict)
        twisted_routes = _TwistedRoutes(root, _children(root, set(stock)), portal=False)
        extra = dict(getattr(settings, "BARTIZAN_SERVER", {}))
        routes = {**twisted_routes.routes, **dict(extra.pop("routes", {}))}

        if settings.WEBSOCKET_CLIENT_ENABLED and not settings.WEBSOCKET_CLIENT_URL:
            _websocket_on_the_page_origin()
        server = bartizan.Server(
            get_wsgi_application(),
            **{
                "bind": [f"127.0.0.1:{internal}" for _public, internal in settings.WEBSERVER_PORTS],
                "threads": high,
                "min_threads": min(max(0, low), high),
                "static": found["static"],
                "media": found["media"],
                "routes": routes,
                "trusted_proxies": list(settings.UPSTREAM_IPS),
                "access_log": settings.HTTP_LOG_FILE if settings.DEBUG else None,
                **extra,
            },
        )
        web = _BartizanService("EvenniaWebServer", server, self.web_drain_timeout, retire=True)
        web.twisted_routes = twisted_routes
        web.setServiceParent(self)
        self.web_root = _WebRoot(web)
        ports = ", ".join(str(internal) for _public, internal in settings.WEBSERVER_PORTS)
        self.info_dict["webserver"] = f"webserver (bartizan): {ports}"


#: Where every public port serves the webclient's websocket.
WEBSOCKET_PATH = "/ws"


def _websocket_on_the_page_origin() -> None:
    """The webclient page's websocket URL, made per request: the page's own host at
    ``WEBSOCKET_PATH``, ``wss`` when the page came over HTTPS. Evennia's context processor
    reads ``WEBSOCKET_CLIENT_URL`` once, at import; it is wrapped before Django builds its
    template engine, which looks it up by name."""
    from django.core.exceptions import DisallowedHost
    from evennia.web.utils import general_context as module

    if getattr(module.general_context, "same_origin_websocket", False):
        return
    original = module.general_context

    def general_context(request):
        context = original(request)
        if request is not None and context.get("websocket_enabled"):
            try:
                host = request.get_host()
            except DisallowedHost:  # the page itself is refused for it
                return context
            scheme = "wss" if request.is_secure() else "ws"
            context["websocket_url"] = f"{scheme}://{host}{WEBSOCKET_PATH}"
        return context

    general_context.same_origin_websocket = True
    module.general_context = general_context


class _ServerLaunch(subprocess.Popen):
    """The Portal's launch of a new Server: `wait()` without a timeout (the reaping Evennia
    does on the reactor thread, which lasts until the new Server has started, since twistd's
    parent waits for its daemon) happens on a pool thread instead, so the Portal's reactor
    keeps serving the websocket, AJAX and telnet sessions while the Server restarts."""

    def wait(self, timeout=None):
        if timeout is None and threading.current_thread() is threading.main_thread():
            threads.deferToThread(super().wait)
            return None
        return super().wait(timeout)


def _launch_servers_off_the_reactor() -> None:
    """Evennia names no hook for how the Portal launches the Server; its module's `Popen` is
    the one place to put `_ServerLaunch`."""
    from evennia.server.portal import amp_server

    if amp_server.Popen is subprocess.Popen:
        amp_server.Popen = _ServerLaunch


class PortalWebMixin:
    """Evennia's Portal-side web layer on Bartizan; put it before the Portal service class."""

    #: Seconds a request waits for the Server (reloading, say) before a 503; also
    #: ``BARTIZAN_PORTAL = {"upstream_wait": ...}``.
    web_upstream_wait = 30.0
    #: Seconds the proxy's in-flight requests get when the Portal stops.
    web_stop_timeout = 3.0

    def register_webserver(self):
        from evennia.server.webserver import EvenniaReverseProxyResource

        _launch_servers_off_the_reactor()
        interfaces = list(self.check_lockdown(settings.WEBSERVER_INTERFACES))
        # Twisted listens dual-stack on "::"; Bartizan opens one socket per family.
        if "::" in interfaces and "0.0.0.0" not in interfaces:
            interfaces.append("0.0.0.0")
        found = django_mounts(required=True)
        for public, internal in settings.WEBSERVER_PORTS:
            root = EvenniaReverseProxyResource("127.0.0.1", internal, "")
            self._add_webclient(root)
            plugins = _web_plugins()
            if plugins is None:
                self.info_dict["errors"] = _PLUGIN_ERROR
            else:
                _call_hook(plugins, "at_webproxy_root_creation", root, self.info_dict)
            twisted_routes = _TwistedRoutes(root, _children(root, set()), portal=True)
            extra = dict(getattr(settings, "BARTIZAN_PORTAL", {}))
            routes = {
                **twisted_routes.routes,
                **self._websocket_route(),
                **dict(extra.pop("routes", {})),
            }
            proxy = bartizan.Proxy(
                [f"127.0.0.1:{internal}"],
                **{
                    "bind": [bartizan.format_address(i, public) for i in interfaces],
                    "static": found["static"],
                    "media": found["media"],
                    "routes": routes,
                    "trusted_proxies": list(settings.UPSTREAM_IPS),
                    "upstream_wait": self.web_upstream_wait,
                    # The AJAX client's long-poll is held up to about a minute before the
                    # Portal's keepalive answers it.
                    "response_timeout": 120.0,
                    "access_log": settings.HTTP_LOG_FILE if settings.DEBUG else None,
                    **extra,
                },
            )
            web = _BartizanService(
                f"EvenniaWebProxy{public}", proxy, self.web_stop_timeout, retire=False
            )
            web.twisted_routes = twisted_routes
            web.setServiceParent(self)
            shown = ", ".join(bartizan.format_address(i, public) for i in interfaces)
            self.info_dict["webserver_proxy"].append(f"webserver-proxy (bartizan): {shown}")
            self.info_dict["webserver_internal"].append(f"webserver: {internal}")

    def _add_webclient(self, root):
        """The AJAX webclient at /webclientdata and the websocket port, as Evennia sets them
        up (the websocket once, on its own port)."""
        import evennia
        from evennia.utils.utils import class_from_module

        if not settings.WEBCLIENT_ENABLED:
            return
        ajax = class_from_module(settings.AJAX_CLIENT_CLASS)()
        ajax.sessionhandler = evennia.PORTAL_SESSION_HANDLER
        root.putChild(b"webclientdata", ajax)
        shown = "webclient (ajax only)"
        if (
            settings.WEBSOCKET_CLIENT_ENABLED
            and settings.WEBSOCKET_CLIENT_PORT
            and settings.WEBSOCKET_CLIENT_INTERFACE
            and not getattr(self, "_websocket_started", False)
        ):
            shown = self._start_websocket()
        self.info_dict["webclient"].append(shown)

    def _websocket_route(self) -> dict[str, str]:
        """``WEBSOCKET_PATH`` of the public port, forwarded to the websocket listener."""
        if not getattr(self, "_websocket_started", False):
            return {}
        interface = "127.0.0.1" if settings.LOCKDOWN_MODE else settings.WEBSOCKET_CLIENT_INTERFACE
        if interface in ("0.0.0.0", "::", ""):
            interface = "127.0.0.1"
        address = bartizan.format_address(interface, settings.WEBSOCKET_CLIENT_PORT)
        return {WEBSOCKET_PATH: address}

    def _start_websocket(self) -> str:
        import evennia
        from autobahn.twisted.websocket import WebSocketServerFactory
        from evennia.server.portal import webclient  # noqa: F401  (registers the protocol)
        from evennia.utils.utils import class_from_module
        from twisted.application import internet

        interface = "127.0.0.1" if settings.LOCKDOWN_MODE else settings.WEBSOCKET_CLIENT_INTERFACE
        port = settings.WEBSOCKET_CLIENT_PORT

        class Websocket(WebSocketServerFactory):
            "Named for the logs."

        factory = Websocket()
        factory.noisy = False
        factory.protocol = class_from_module(settings.WEBSOCKET_PROTOCOL_CLASS)
        factory.sessionhandler = evennia.PORTAL_SESSION_HANDLER
        service = internet.TCPServer(port, factory, interface=interface)
        service.setName(f"EvenniaWebSocket{interface}:{port}")
        service.setServiceParent(self)
        self._websocket_started = True
        return f"webclient-websocket {interface}: {port}"


class ServerService(ServerWebMixin, EvenniaServerService):
    """Evennia's Server service with its website on Bartizan."""


class PortalService(PortalWebMixin, EvenniaPortalService):
    """Evennia's Portal service with its web front on Bartizan."""
