"""``slicenav navigate``: a local web page to steer through a volume and watch, beside the true slice, the slice the
trained dynamics model expected. Python's own ``http.server`` serves it (no dependency to install; the page is
plain JavaScript served from the package, nothing from a CDN)."""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from .session import COMMANDS, MOVES, PLANNERS, NavigationSession

__all__ = ["MAX_REQUEST_BYTES", "NavigatorServer", "make_server"]

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024  # an action request is a name: anything larger is refused unread
_STATIC = {  # the only files served: fixed names, no path ever reaches the file system
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class NavigatorServer(ThreadingHTTPServer):
    """An HTTP server for one :class:`~monai_slicenav.viewer.NavigationSession` (one request at a time changes it)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], session: NavigationSession) -> None:
        super().__init__(address, NavigatorRequestHandler)
        self.session = session
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def allowed_hosts(self) -> set[str]:
        """``Host`` headers the server answers (another name pointing here is a DNS-rebinding attempt)."""
        host, port = self.server_address[:2]
        return {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"}


class NavigatorRequestHandler(BaseHTTPRequestHandler):
    """The page, its two static files, and a small JSON API: ``GET /api/state``, ``GET /api/trajectory``,
    ``GET /api/actions`` and ``POST /api/act`` with ``{"action": NAME}``. Anything else gets a 4xx and a message."""

    server: NavigatorServer
    server_version = "slicenav-navigate"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class names it so)
        logger.debug("%s - %s", self.address_string(), format % args)

    # ---- routing ----
    def do_GET(self) -> None:
        path = self._checked_path()
        if path is None:
            return
        if path in _STATIC:
            name, kind = _STATIC[path]
            self._send(HTTPStatus.OK, resources.files(__package__).joinpath("static", name).read_bytes(), kind)
        elif path == "/api/state":
            self._locked(self.server.session.view)
        elif path == "/api/actions":
            moves = {k: v[2] for k, v in MOVES.items()}
            named = {"planes": list(self.server.session.planes), "planners": list(PLANNERS)}
            self._json(HTTPStatus.OK, {"moves": moves, "commands": list(COMMANDS), **named})
        elif path == "/api/trajectory":
            self._locked(self.server.session.trajectory, download="trajectory.json")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def do_POST(self) -> None:
        path = self._checked_path()
        if path is None:
            return
        if path == "/api/act":
            name = self._action_name()
            if name is not None:
                self._locked(lambda: self.server.session.act(name))
        elif path == "/api/goto":
            goal = self._goto_request()
            if goal is not None:
                self._locked(lambda: self.server.session.goto(*goal))
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")

    def _refuse_method(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not supported: use GET or POST")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    # ---- checks ----
    def _checked_path(self) -> str | None:
        if self.headers.get("Host") not in self.server.allowed_hosts():
            self._error(HTTPStatus.FORBIDDEN, f"unexpected Host header {self.headers.get('Host')!r}")
            return None
        return urlsplit(self.path).path

    def _action_name(self) -> str | None:
        """The action of a ``POST /api/act`` body, or None after answering 4xx."""
        body = self._body()
        if body is None:
            return None
        name = body.get("action")
        if name not in MOVES and name not in COMMANDS:
            known = ", ".join([*MOVES, *COMMANDS])
            self._error(HTTPStatus.BAD_REQUEST, f'expected {{"action": NAME}} with NAME one of {known}; got {body!r}')
            return None
        return name

    def _goto_request(self) -> tuple[str, str] | None:
        """The plane and planner of a ``POST /api/goto`` body, or None after answering 4xx."""
        body = self._body()
        if body is None:
            return None
        plane, planner = body.get("plane"), body.get("planner", PLANNERS[0])
        planes = self.server.session.planes
        if plane not in planes or planner not in PLANNERS:
            expected = f"PLANE one of {', '.join(planes)}, PLANNER one of {', '.join(PLANNERS)}"
            self._error(HTTPStatus.BAD_REQUEST, f'expected {{"plane": PLANE, "planner": PLANNER}} with {expected}')
            return None
        return plane, planner

    def _body(self) -> dict | None:
        """The JSON object of a POST's body, or None after answering 4xx."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            return None
        if not 0 < length <= MAX_REQUEST_BYTES:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body must hold 1 to {MAX_REQUEST_BYTES} bytes")
            return None
        try:
            body = json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            self._error(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({err})")
            return None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, f"the body must be a JSON object, got {body!r}")
            return None
        return body

    # ---- answers ----
    def _locked(self, produce, download: str | None = None) -> None:
        with self.server.lock:
            payload = produce()
        self._json(HTTPStatus.OK, payload, download)

    def _json(self, status: HTTPStatus, payload: object, download: str | None = None) -> None:
        extra = {"Content-Disposition": f'attachment; filename="{download}"'} if download else {}
        self._send(status, json.dumps(payload).encode(), "application/json", extra)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message, "status": int(status)})

    def _send(self, status: HTTPStatus, body: bytes, kind: str, extra: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {**_HEADERS, **(extra or {}), "Content-Type": kind}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def make_server(session: NavigationSession, host: str = "127.0.0.1", port: int = 0) -> NavigatorServer:
    """A :class:`NavigatorServer` for ``session`` bound to ``host:port`` (port 0: a free one), not yet serving.

    Raises:
        ValueError: for a host that is not an IPv4 address (``127.0.0.1`` by default: only this machine connects).
    """
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError as err:
        raise ValueError(f"--host must be an IPv4 address such as 127.0.0.1, got {host!r}.") from err
    if not address.is_loopback:
        logger.warning("serving on %s: anyone who can reach this address can use the page.", host)
    return NavigatorServer((host, int(port)), session)
