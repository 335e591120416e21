"""Headless Chromium driven over the DevTools protocol on a pipe (stdlib only: no websocket
client), shared by the tests of every page tensortap makes (report, attention view, serve).
Reports every network request a page makes, every console message, uncaught exception and log
entry, and takes screenshots; test_report_browser.py proves it catches what it must.

Launch flags as the project prescribes: --headless --no-sandbox --disable-gpu
--disable-background-networking --disable-component-update --disable-sync --no-first-run
and a fresh --user-data-dir.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Dict, List, Optional

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium; "
                             "tools/system-deps.sh installs it in CI)")
ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "..", "artifacts")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-features=IsolateOrigins,site-per-process", "--hide-scrollbars", "--mute-audio",
         "--remote-debugging-pipe", "--window-size=1280,900"]


class Browser:
    """One headless Chromium; `open(url)` loads a page and returns what happened."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="tt-chromium-")
        cmd = " ".join([CHROMIUM] + FLAGS + [f"--user-data-dir={self.profile}", "about:blank"])
        # DevTools pipe: Chromium reads commands on fd 3 and writes replies/events on fd 4
        self.proc = subprocess.Popen(["bash", "-c", f"exec {cmd} 3<&0 4>&1 0</dev/null 1>/dev/null"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._id = 0
        self._replies: Dict[int, dict] = {}
        self.events: List[dict] = []
        self._cv = threading.Condition()
        self._wlock = threading.Lock()
        self.targets: Dict[str, str] = {}  # tab session -> its target id
        self.children: Dict[str, str] = {}  # child session (an iframe in its own process) -> parent session
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(65536) if hasattr(self.proc.stdout, "read1") else self.proc.stdout.read(1)
            if not chunk:
                with self._cv:
                    self._cv.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                m = json.loads(msg.decode("utf-8"))
                with self._cv:
                    if "id" in m:
                        self._replies[m["id"]] = m
                    else:
                        self.events.append(m)
                        if m.get("method") == "Target.attachedToTarget" and m.get("sessionId"):
                            self._watch_child(m["params"]["sessionId"], m.get("sessionId"))
                    self._cv.notify_all()

    def _post(self, method: str, params: Optional[dict] = None, session: Optional[str] = None) -> int:
        with self._wlock:
            self._id += 1
            i = self._id
            msg = {"id": i, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            self.proc.stdin.write(json.dumps(msg).encode() + b"\0")
            self.proc.stdin.flush()
        return i

    def _watch_child(self, child: str, parent: Optional[str]) -> None:
        """A frame in another process (a sandboxed srcdoc iframe): watch it like its page, then let it run."""
        self.children[child] = parent
        for dom in ("Network", "Runtime", "Log"):
            self._post(f"{dom}.enable", session=child)
        self._post("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
                   session=child)
        self._post("Runtime.runIfWaitingForDebugger", session=child)

    def _root(self, session: Optional[str]) -> Optional[str]:
        while session in self.children:
            session = self.children[session]
        return session

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None,
             timeout: float = 30.0) -> dict:
        i = self._post(method, params, session)
        deadline = time.monotonic() + timeout
        with self._cv:
            while i not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"Chromium did not answer {method}")
                self._cv.wait(left)
            r = self._replies.pop(i)
        if "error" in r:
            raise RuntimeError(f"{method}: {r['error']}")
        return r.get("result", {})

    def open(self, url: str, settle: float = 1.0, screenshot: Optional[str] = None) -> dict:
        """Load `url` in a fresh tab; returns requests (non file:/data:/about: URLs), console
        messages, exceptions, log entries, and the session id for evaluate()."""
        tid = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = self.send("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
        self.targets[sid] = tid
        for dom in ("Page", "Network", "Runtime", "Log"):
            self.send(f"{dom}.enable", session=sid)
        self.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
                  session=sid)
        start = len(self.events)
        self.send("Page.navigate", {"url": url}, session=sid)
        deadline = time.monotonic() + 30
        with self._cv:
            while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == sid
                          for e in self.events[start:]):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not finish loading")
                self._cv.wait(0.2)
        time.sleep(settle)  # let scripts run and late requests show
        out = self.collect(sid, start)
        if screenshot:  # the whole page: grow the viewport to it (out-of-process iframes paint only inside it)
            self.screenshot(sid, screenshot)
        return out

    def collect(self, sid: str, start: int = 0) -> dict:
        """What tab `sid` did since event number `start`: requests, console, exceptions, log."""
        with self._cv:
            ev = [e for e in self.events[start:] if self._root(e.get("sessionId")) == sid]
        p = lambda e: e.get("params", {})  # noqa: E731
        return {
            "session": sid, "start": start,
            "frames": [c for c in self.children if self._root(c) == sid],  # sessions of out-of-process iframes
            "requests": [p(e)["request"]["url"] for e in ev if e["method"] == "Network.requestWillBeSent"
                         and not p(e)["request"]["url"].startswith(("file:", "data:", "about:"))],
            "responses": [(p(e)["response"]["url"], p(e)["response"]["status"]) for e in ev
                          if e["method"] == "Network.responseReceived"],
            "console": [(p(e)["type"], " ".join(str(a.get("value", a.get("description", ""))) for a in p(e)["args"]))
                        for e in ev if e["method"] == "Runtime.consoleAPICalled"],
            "exceptions": [_exception_text(p(e)["exceptionDetails"]) for e in ev
                           if e["method"] == "Runtime.exceptionThrown"],
            "log": [f"{p(e)['entry']['level']}: {p(e)['entry']['text']}" for e in ev
                    if e["method"] == "Log.entryAdded"],
        }

    def wait_for(self, sid: str, expression: str, timeout: float = 10.0, poll: float = 0.05):
        """Poll `expression` in tab `sid` until it is truthy; returns (its value, seconds waited),
        or raises TimeoutError."""
        t0 = time.monotonic()
        while True:
            v = self.evaluate(sid, expression)
            if v:
                return v, time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{expression!r} still false after {timeout} s")
            time.sleep(poll)

    def screenshot(self, sid: str, path: str, full: bool = True) -> str:
        """A PNG of tab `sid` as it is now (the whole page when `full`); brings the tab to the front
        (a background tab does not paint)."""
        if sid in self.targets:
            self.send("Target.activateTarget", {"targetId": self.targets[sid]})
        if full:
            size = self.send("Page.getLayoutMetrics", session=sid)["cssContentSize"]
            height = int(min(max(size["height"], 900), 12000))
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=sid)
            time.sleep(0.3)
        shot = self.send("Page.captureScreenshot", {"format": "png"}, session=sid)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        return path

    def heap(self, sid: str) -> float:
        """The tab's used JavaScript heap in MB, after a garbage collection."""
        self.send("HeapProfiler.collectGarbage", session=sid)
        self.send("Performance.enable", session=sid)
        got = {m["name"]: m["value"] for m in self.send("Performance.getMetrics", session=sid)["metrics"]}
        return got.get("JSHeapUsedSize", 0.0) / 2 ** 20

    def close_tab(self, sid: str) -> None:
        """Close tab `sid` (its memory goes with it)."""
        tid = self.targets.pop(sid, None)
        if tid is not None:
            self.send("Target.closeTarget", {"targetId": tid})

    def evaluate(self, session: str, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it is going away anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def _exception_text(d: dict) -> str:
    return str(d.get("exception", {}).get("description") or d.get("text", "")) + f" (line {d.get('lineNumber')})"


def problems(result: dict) -> List[str]:
    """Everything that makes a page fail the check: requests, console output, exceptions, log errors."""
    return ([f"network request: {u}" for u in result["requests"]]
            + [f"console.{t}: {m}" for t, m in result["console"]]
            + [f"exception: {x}" for x in result["exceptions"]]
            + [f"log {x}" for x in result["log"] if not x.startswith(("verbose", "info"))])


@pytest.fixture(scope="session")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")
    b = Browser()
    try:
        b.send("Browser.getVersion", timeout=60)
    except Exception as e:  # noqa: BLE001
        b.close()
        pytest.skip(f"Chromium did not start headless here: {e}")
    yield b
    b.close()


