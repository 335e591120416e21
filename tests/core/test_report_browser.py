"""The browser check itself: a page that fetches, logs or throws is caught on each count
(the harness lives in tt_browser.py, shared by every browser test)."""
from __future__ import annotations

from tests.core.tt_browser import ARTIFACTS, CHROMIUM, Browser, browser, needs_chromium, problems  # noqa: F401


@needs_chromium
def test_the_browser_check_catches_requests_console_errors_and_exceptions(browser, tmp_path):
    """The negative control: a page that fetches, logs and throws must be caught on each count."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="http://tensortap-test.invalid/x.png">'
                   '<script>console.error("boom"); notDefined();</script></body></html>')
    r = browser.open(bad.as_uri(), settle=3.0)
    assert any("tensortap-test.invalid" in u for u in r["requests"]), r
    assert ("error", "boom") in r["console"], r
    assert any("notDefined" in x for x in r["exceptions"]), r
    framed = tmp_path / "framed.html"  # errors inside a sandboxed srcdoc iframe (how the report embeds pages)
    framed.write_text('<!DOCTYPE html><html><body><iframe sandbox="allow-scripts" srcdoc="&lt;script&gt;'
                      'console.error(&quot;inner&quot;); fetch(&quot;http://tensortap-inner.invalid/&quot;)'
                      '&lt;/script&gt;"></iframe></body></html>')
    # The iframe's fetch shows as a request, or (when Chromium refuses it before the request
    # event, as it sometimes does for an opaque-origin frame under load) as the failed fetch.
    for _ in range(3):
        r = browser.open(framed.as_uri(), settle=3.0)
        seen = any("tensortap-inner.invalid" in u for u in r["requests"]) or any(
            "fetch" in x.lower() or "ERR_" in x for x in r["exceptions"] + r["log"])
        if seen:
            break
    assert ("error", "inner") in r["console"], r
    assert seen, r
    good = tmp_path / "good.html"
    good.write_text("<!DOCTYPE html><html><body><p>fine</p></body></html>")
    assert problems(browser.open(good.as_uri(), settle=0.2)) == []
