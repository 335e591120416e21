"""The HTTP side of `tensortap serve`: the standard library's threading HTTP server, one watcher
thread polling the runs, server-sent events telling open pages what changed.

Read-only (GET and HEAD only), every asset shipped in the package, a strict Content-Security-Policy,
a token for any host but loopback, JSON errors instead of error pages.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from http import cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple, overload
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, TensorTapError
from . import views
from .catalog import Catalog

log = logging.getLogger("tensortap.serve")

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
STATIC = {"app.js": "text/javascript", "plot.js": "text/javascript", "app.css": "text/css",
          "icon.svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
COOKIE = "tt_token"
#: server-sent event streams open at once (each holds a thread)
MAX_STREAMS = 64
#: seconds between keep-alive comments on an idle event stream
PING_EVERY = 15.0


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _clean(obj):
    """A copy of `obj` JSON can encode: non-finite floats as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(obj) -> bytes:
    """ASCII JSON (every non-ASCII character and lone surrogate escaped), no NaN."""
    try:
        text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError):
        text = json.dumps(_clean(obj), ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=str)
    return text.encode("ascii")


def _asset(name: str) -> bytes:
    with open(os.path.join(ASSETS, name), "rb") as f:
        return f.read()


class Params:
    """Query parameters of an API request, checked: names arrive JSON-encoded (any string survives
    the URL), numbers are bounded."""

    def __init__(self, query: str) -> None:
        self.q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}

    def _json(self, key: str, ok, what: str):
        """The JSON value of parameter `key` if `ok(value)`, None when absent; ConfigError naming it otherwise."""
        raw = self.q.get(key)
        if raw is None or raw == "":
            return None
        try:
            v = json.loads(raw)
        except ValueError:
            v = ok  # never accepted below
        if not ok(v):
            raise ConfigError(f"parameter {key!r} must be {what}")
        return v

    def text(self, key: str) -> Optional[str]:
        return self._json(key, lambda v: isinstance(v, str), "a JSON string")

    def texts(self, key: str) -> Optional[list]:
        v = self._json(key, lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                       "a JSON list of strings")
        return None if v is None else v[:200]

    @overload
    def int(self, key: str, default: int, lo: int = ..., hi: int = ...) -> int: ...
    @overload
    def int(self, key: str, default: None = None, lo: int = ..., hi: int = ...) -> Optional[int]: ...

    def int(self, key: str, default: Optional[int] = None, lo: int = -(1 << 62), hi: int = 1 << 62) -> Optional[int]:
        v = views.check_int(self.q.get(key), key, lo, hi)
        return default if v is None else v


class App:
    """What the handler serves: the catalog, the token, the page and its assets."""

    def __init__(self, catalog: Catalog, token: Optional[str], check_host: bool) -> None:
        self.catalog = catalog
        self.token = token
        self.check_host = check_host
        self.port = 0
        self.streams = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.page = _asset("index.html")
        self.static = {n: (_asset(n), t) for n, t in STATIC.items()}
        self.routes: Dict[str, Callable[[Params], dict]] = {
            "/api/runs": lambda p: views.runs_view(self.catalog),
            "/api/run": self._with_run(lambda run, p: views.run_view(run)),
            "/api/scalars": self._with_run(lambda run, p: views.scalars_view(
                run, p.texts("names"), p.int("lo"), p.int("hi"), p.int("points", 600, 20, 5000))),
            "/api/rules": self._with_run(lambda run, p: views.rules_view(
                run, p.int("lo"), p.int("hi"), p.int("buckets", 400, 1, 2000), p.int("limit", 200, 1, 1000))),
            "/api/rule": self._with_run(lambda run, p: views.rule_results_view(
                run, p.text("rule") or "", p.int("lo"), p.int("hi"), p.int("limit", 100, 1, 1000))),
            "/api/dist": self._with_run(lambda run, p: views.dist_view(
                run, p.text("name") or "", p.int("lo"), p.int("hi"), p.int("cols", 120, 2, 400),
                p.int("bins", 48, 4, 200))),
            "/api/tensor": self._with_run(lambda run, p: views.tensor_view(run, p.text("name") or "")),
            "/api/tensor_step": self._with_run(lambda run, p: views.tensor_step_view(
                run, p.text("name") or "", p.int("step", 0))),
            "/api/gradcam": self._with_run(lambda run, p: views.gradcam_view(
                run, p.text("layer"), p.int("step"), p.int("max_images", 8, 1, 16))),
            "/api/attention": self._with_run(lambda run, p: views.attention_view(
                run, p.int("step"), p.int("example", 0, 0, 1 << 20), p.int("max_tokens", 24, 2, 64))),
            "/api/events": self._with_run(lambda run, p: views.events_view(run)),
            "/api/compare": lambda p: views.compare_view(
                self.catalog, p.texts("runs") or [], p.texts("names"), p.int("lo"), p.int("hi"),
                p.int("points", 600, 20, 5000)),
            "/api/xy": lambda p: views.xy_view(self.catalog, p.texts("runs") or [], p.text("x") or "",
                                               p.text("y") or ""),
        }

    def _with_run(self, fn):
        def route(p: Params) -> dict:
            rid = p.q.get("run", "")
            run = self.catalog.get(rid)
            if run is None:
                raise LookupError("no such run here (it may have been deleted); go back to the runs list")
            with run.lock:
                if run.trial is None:
                    return {"error": run.error or "this run is still being opened", "summary": run.summary()}
                return fn(run, p)
        return route

    # ---- access ---------------------------------------------------------------------------------
    def token_ok(self, query: Dict[str, str], headers) -> Tuple[bool, bool]:
        """(allowed, came in the query) for a request's token (query, cookie or bearer header)."""
        if self.token is None:
            return True, False
        want = self.token.encode()
        q = query.get("token")
        if q is not None and hmac.compare_digest(q.encode("utf-8", "replace"), want):
            return True, True
        c = cookies.SimpleCookie()
        try:
            c.load(headers.get("Cookie", ""))
        except cookies.CookieError:
            pass
        if COOKIE in c and hmac.compare_digest(c[COOKIE].value.encode("utf-8", "replace"), want):
            return True, False
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip().encode("utf-8", "replace"), want):
            return True, False
        return False, False

    def host_ok(self, host_header: Optional[str]) -> bool:
        """Without a token, only requests addressed to the loopback name are answered (no DNS rebinding)."""
        if not self.check_host:
            return True
        if not host_header:
            return False
        host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        return is_loopback(host.strip())


class Handler(BaseHTTPRequestHandler):
    server_version = "tensortap-serve"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    app: App  # set on the subclass made per server

    def log_message(self, fmt: str, *args) -> None:  # quiet: the terminal shows the URL, not each request
        log.debug("%s " + fmt, self.address_string(), *args)

    # ---- responses ------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str, extra: Optional[Dict[str, str]] = None,
              head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, code: int, obj, head: bool = False) -> None:
        self._send(code, to_json(obj), "application/json; charset=utf-8", head=head)

    def _refuse(self, code: int, message: str) -> None:
        if self.path.startswith("/api/"):
            self._json(code, {"error": message})
            return
        from html import escape

        body = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tensortap serve</title>"
                f"</head><body><h1>tensortap serve</h1><p>{escape(message)}</p></body></html>").encode()
        self._send(code, body, "text/html; charset=utf-8")

    # ---- methods --------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self._handle(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(head=True)

    def _read_only(self) -> None:
        self.close_connection = True
        self._send(405, to_json({"error": "tensortap serve is read-only: only GET requests"}),
                   "application/json; charset=utf-8", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _read_only  # noqa: N815

    def _handle(self, head: bool) -> None:
        app = self.app
        try:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            if not app.host_ok(self.headers.get("Host")):
                self._refuse(403, "refused: this server answers only requests addressed to 127.0.0.1 or localhost "
                                  "(start it with --host and a --token to serve other names)")
                return
            ok, in_query = app.token_ok(query, self.headers)
            if not ok:
                self._refuse(401, "this tensortap serve needs its access token: open the URL it printed when it "
                                  "started (it ends in ?token=...)")
                return
            path = parts.path
            if path in ("/", "/index.html"):
                extra = {}
                if in_query:
                    extra["Set-Cookie"] = f"{COOKIE}={app.token}; HttpOnly; SameSite=Strict; Path=/"
                self._send(200, app.page, "text/html; charset=utf-8", extra, head)
            elif path.startswith("/static/") and path[len("/static/"):] in app.static:
                body, ctype = app.static[path[len("/static/"):]]
                self._send(200, body, ctype + ("; charset=utf-8" if ctype.startswith("text/") else ""), head=head)
            elif path == "/favicon.ico":
                body, ctype = app.static["icon.svg"]
                self._send(200, body, ctype, head=head)
            elif path == "/api/stream":
                if head:
                    self._send(200, b"", "text/event-stream", head=True)
                else:
                    self._stream()
            elif path in app.routes:
                self._api(app.routes[path], parts.query, head)
            else:
                self._refuse(404, f"nothing at {path!r} here")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _api(self, route, query: str, head: bool) -> None:
        try:
            body = route(Params(query))
        except LookupError as e:
            self._json(404, {"error": str(e.args[0]) if e.args else "not found"}, head)
            return
        except (views.ViewError, TensorTapError) as e:
            code = 400 if isinstance(e, ConfigError) else 200
            self._json(code, {"error": str(e)}, head)
            return
        except Exception as e:  # noqa: BLE001 - shown as a message in the page, never a 500 page
            log.warning("tensortap serve: %s failed", self.path, exc_info=True)
            self._json(200, {"error": f"could not read this from the run ({type(e).__name__}: {e})"}, head)
            return
        self._json(200, body, head)

    def _stream(self) -> None:
        """Server-sent events: the catalog's version and each run's, whenever something changed."""
        app = self.app
        with app._lock:
            if app.streams >= MAX_STREAMS:
                self._json(503, {"error": "too many open pages; close some tabs"})
                return
            app.streams += 1
        try:
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")
            last = -1
            quiet_since = time.monotonic()
            while not app.stopping.is_set():
                v = app.catalog.wait(last, 1.0)
                if v != last:
                    last = v
                    msg = to_json({"version": v, "runs": app.catalog.versions()})
                    self.wfile.write(b"data: " + msg + b"\n\n")
                    self.wfile.flush()
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > PING_EVERY:
                    self.wfile.write(b": ping\n\n")
                    self.wfile.flush()
                    quiet_since = time.monotonic()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            with app._lock:
                app.streams -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # a dropped connection is not news
        log.debug("tensortap serve: connection from %s ended with an error", client_address, exc_info=True)


class Server:
    """`tensortap serve` as an object: `Server(path).start()` serves in background threads,
    `url` is where, `close()` stops it."""

    def __init__(self, path: str, host: str = "127.0.0.1", port: int = 0, token: Optional[str] = None,
                 interval: Optional[float] = None, scan_every: float = 2.0) -> None:
        self.catalog = Catalog(path, interval=0.5, scan_every=scan_every)
        if interval is None:
            interval = 0.5 if self.catalog.local else 2.0
        self.catalog.interval = float(interval)
        if not self.catalog.local:  # listing a bucket's folders is a request per folder: less often
            self.catalog.scan_every = max(scan_every, 5 * self.catalog.interval)
        loopback = is_loopback(host)
        if token is None and not loopback:
            token = secrets.token_urlsafe(18)
        if token is not None and (not token or any(c.isspace() or c in ";,\"\\" for c in token)):
            raise ConfigError("--token must be a non-empty string without spaces, quotes, commas or semicolons")
        self.host = host
        self.token = token
        self.app = App(self.catalog, token, check_host=token is None)
        handler = type("BoundHandler", (Handler,), {"app": self.app})
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        server_cls = type("Server", (_Server,), {"address_family": family})
        try:
            self.httpd = server_cls((host.strip("[]"), int(port)), handler)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port "
                              "(--port 0 picks a free one)") from None
        self.port = self.httpd.server_address[1]
        self.app.port = self.port
        self._threads: List[threading.Thread] = []

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else socket.gethostname()
        host = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def _watch(self) -> None:
        while not self.app.stopping.is_set():
            t0 = time.monotonic()
            try:
                self.catalog.poll()
            except Exception:  # noqa: BLE001 - keep watching; the page shows each run's own error
                log.warning("tensortap serve: polling the runs failed", exc_info=True)
            self.app.stopping.wait(max(0.05, self.catalog.interval - (time.monotonic() - t0)))

    def start(self) -> "Server":
        for target in (self._watch, self.httpd.serve_forever):
            th = threading.Thread(target=target, daemon=True, name=f"tensortap-serve-{target.__name__}")
            th.start()
            self._threads.append(th)
        return self

    def serve_forever(self) -> None:
        """Serve until interrupted (Ctrl-C)."""
        watcher = threading.Thread(target=self._watch, daemon=True, name="tensortap-serve-watch")
        watcher.start()
        self._threads.append(watcher)
        try:
            self.httpd.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        self.app.stopping.set()
        with self.catalog.changed:
            self.catalog.changed.notify_all()
        if any(t.name.endswith("serve_forever") for t in self._threads):
            self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self.catalog.close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
