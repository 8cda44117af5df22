"""The agent page (ag3nt/web.c, fr0nt/) on the real stack: the daemon runs the real harness
(`hive-ag3nt serve`) on the process backend with the fake model CLI (tests/fakes/claude), and
the tests talk to the harness's page over HTTP (urllib, raw SSE) and through headless chromium.

The daemon, the harness and the fake are copied into one directory, so the harness is found
next to hive-c0re (as in test_harness.py)."""

import http.client
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import BIN, ROOT, wait_for

AG3NT_DIR = os.environ.get("HIVE_AG3NT_DIR", os.path.join(ROOT, "build", "ag3nt"))
FAKE = os.path.join(ROOT, "tests", "fakes", "claude")
AGENT = "a1"
REPLY = "PONG from the fake model"

RULES = [
    # A turn slow enough to be watched: "running" first, the text 2.5 s later.
    {"agent": AGENT, "match": "SLOW-PING", "actions": [{"sleep": 2.5}, {"text": REPLY}]},
    {"agent": AGENT, "match": "LONG-WAIT", "actions": [{"text": "thinking"}, {"sleep": 60}]},
]


class Page:
    """One agent's page: its base URL and HTTP helpers."""

    def __init__(self, d, base, port):
        self.d = d
        self.base = base
        self.port = port

    def request(self, method, path, data=None, headers=None, timeout=10):
        """(status, headers, body bytes); HTTP errors are answers, not exceptions."""
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def post(self, path, fields=None, headers=None):
        """POSTs a urlencoded form; (status, headers, parsed JSON answer)."""
        data = urllib.parse.urlencode(fields or {}).encode()
        st, h, body = self.request("POST", path, data=data, headers=headers)
        assert h["Content-Type"] == "application/json", (st, body)
        return st, h, json.loads(body)

    def get_json(self, path):
        st, h, body = self.request("GET", path)
        assert st == 200 and h["Content-Type"] == "application/json", (st, body)
        return json.loads(body)

    def state(self):
        return self.get_json("/api/state")

    def history(self, after=None):
        return self.get_json("/events/history" + (f"?after={after}" if after is not None
                                                  else ""))

    def events(self, kind):
        return [e for e in self.history()["events"] if e["kind"] == kind]

    def turn_ends(self):
        return [e["payload"] for e in self.events("turn_end")
                if e["payload"].get("kind", "turn") == "turn"]


def page_up(base):
    try:
        with urllib.request.urlopen(base + "/api/state", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def make_page(make_daemon, tmpbase):
    def make(env=()):
        bindir = os.path.join(tmpbase, "bin")
        os.makedirs(bindir)
        for src in (BIN, os.path.join(AG3NT_DIR, "hive-ag3nt"),
                    os.path.join(AG3NT_DIR, "hive-m1nd"), FAKE):
            shutil.copy2(src, bindir)
        script = os.path.join(bindir, "script.json")
        with open(script, "w") as f:
            json.dump({"rules": RULES}, f)
        args = ["--harness",
                "--payload-env", f"HIVE_MODEL_BIN={bindir}/claude",
                "--payload-env", f"FAKE_CLAUDE_SCRIPT={script}",
                "--payload-env", "HIVE_RECONNECT_BASE_MS=50"]
        for e in env:
            args += ["--payload-env", e]
        d = make_daemon(*args, start=False)
        d.bin = os.path.join(bindir, "hive-c0re")
        d.start()
        p = d.cli("spawn", AGENT)
        assert p.returncode == 0, (p.stdout, p.stderr, d.log_text()[-3000:])
        # The sticky port the daemon gave the agent (HIVE_PORT of its payload).
        with open(os.path.join(d.state, "agents", AGENT, "port")) as f:
            port = int(f.read().strip())
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: page_up(base), timeout=20, what="the agent page")
        except AssertionError as e:
            console = os.path.join(d.state, "agents", AGENT, "console.log")
            with open(console, errors="replace") as f:
                raise AssertionError(f"{e}; {AGENT}'s console.log ends:\n{f.read()[-3000:]}")
        pg = Page(d, base, port)
        wait_for(lambda: pg.state()["turn_state"] == "idle", timeout=20, what="an idle harness")
        return pg
    return make


@pytest.fixture
def page(make_page):
    return make_page()


# ---- the SSE stream, read raw ----

class Sse:
    """A GET of /events/stream read frame by frame: (id, event, data, comments)."""

    def __init__(self, page, query="", headers=None, timeout=10):
        self.conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=timeout)
        self.conn.request("GET", "/events/stream" + query, headers=headers or {})
        self.resp = self.conn.getresponse()

    def frame(self):
        """The next frame as a dict of its fields ('comment' for comment lines); None at the
        end of the stream."""
        f = {}
        while True:
            line = self.resp.readline()
            if not line:
                return None
            assert line.endswith(b"\n"), line
            line = line[:-1].decode()
            if line == "":
                if f:
                    return f
                continue
            if line.startswith(":"):
                f.setdefault("comment", []).append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            assert name in ("id", "event", "data", "retry"), line
            assert name not in f, f"field {name} twice in one frame: {f}"
            f[name] = value[1:] if value.startswith(" ") else value

    def event(self):
        """The next frame that is an event (comments skipped)."""
        while True:
            f = self.frame()
            if f is None or "data" in f:
                return f

    def close(self):
        self.conn.close()


# ---- page and assets ----

def test_page_and_assets(page):
    st, h, body = page.request("GET", "/")
    assert st == 200 and h["Content-Type"] == "text/html; charset=utf-8"
    assert h["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in h["Content-Security-Policy"]
    html = body.decode()
    for part in ('id="header"', 'id="live"', 'id="composer"', 'id="badge-turn"',
                 'id="badge-model"', 'id="badge-context"', 'id="badge-status"', 'id="login"',
                 'id="model-form"', 'id="btn-cancel"', 'id="btn-compact"',
                 'id="btn-new-session"'):
        assert part in html, part
    assert re.search(r'<body class="">', html), "no ?hide=, no hidden parts"
    assert "@BODY_CLASS@" not in html
    # No fetches from elsewhere: every src/href is relative or a data: URL.
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not re.match(r"^[a-z]+://", url) and not url.startswith("//"), url

    for name, ctype in (("hive.css", "text/css; charset=utf-8"),
                        ("hive.js", "text/javascript; charset=utf-8"),
                        ("agent.js", "text/javascript; charset=utf-8")):
        st, h, body = page.request("GET", "/static/" + name)
        assert st == 200 and h["Content-Type"] == ctype and h["Cache-Control"] == "no-cache"
        assert len(body) > 100 and b"http://" not in body and b"https://" not in body
    for path in ("/static/nope.js", "/static/", "/static/agent.html", "/agent.html",
                 "/static/../agent.html", "/static/hive.css/x"):
        st, h, body = page.request("GET", path)
        assert st == 404 and json.loads(body)["ok"] is False, path


def test_hide_puts_known_parts_on_the_body(page):
    cases = {"header,input": "hide-header hide-input", "input": "hide-input",
             " header , nonsense,": "hide-header", "nonsense": "", "": "",
             "header,header": "hide-header", "HEADER": ""}
    for hide, cls in cases.items():
        st, _, body = page.request("GET", "/?hide=" + urllib.parse.quote(hide))
        assert st == 200
        assert f'<body class="{cls}">' in body.decode(), (hide, cls)


# ---- state and history ----

def test_state_snapshot(page):
    s = page.state()
    assert s["ok"] is True and s["label"] == AGENT and s["flavor"] == "agent"
    assert isinstance(s["seq"], int) and s["seq"] >= 1
    assert s["turn_state"] == "idle" and s["needs_login"] is False
    for k in ("model", "context_tokens", "context_window_tokens", "status_text", "login",
              "turn", "version"):
        assert k in s, k
    assert s["seq"] <= page.history()["seq"]


def test_history_shape_and_after(page):
    st, _, a = page.post("/api/model", {"model": "sonnet"})
    assert st == 200 and a == {"ok": True, "model": "sonnet"}
    h = page.history()
    assert h["ok"] is True and isinstance(h["events"], list) and h["events"]
    seqs = [e["seq"] for e in h["events"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert h["seq"] >= seqs[-1]
    for e in h["events"]:
        assert set(e) == {"seq", "ts", "kind", "payload"}, e
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"]), e["ts"]
    last = h["events"][-1]
    assert last["kind"] == "model_changed" and last["payload"]["model"] == "sonnet"
    assert page.state()["model"] == "sonnet"

    after = page.history(after=seqs[-2])
    assert [e["seq"] for e in after["events"]] == [seqs[-1]]
    assert page.history(after=seqs[-1])["events"] == []
    assert page.history(after=10**15)["events"] == []
    for bad in ("x", "-1", "1.5", "", "99999999999999999999"):
        st, _, body = page.request("GET", "/events/history?after=" + bad)
        assert st == 400 and "after" in json.loads(body)["error"], bad


# ---- refusals ----

def test_unknown_paths_are_404(page):
    for method, path in (("GET", "/nope"), ("GET", "/api"), ("GET", "/api/state/"),
                         ("POST", "/nope"), ("POST", "/api/unknown"), ("DELETE", "/x")):
        st, h, body = page.request(method, path, data=b"" if method == "POST" else None)
        j = json.loads(body)
        assert st == 404 and j["ok"] is False and j["error"], (method, path)


def test_wrong_method_is_405_with_allow(page):
    for path in ("/send", "/api/cancel", "/api/compact", "/api/new-session", "/api/model",
                 "/api/login/start", "/api/login/code", "/api/login/cancel"):
        st, h, body = page.request("GET", path)
        assert st == 405 and h["Allow"] == "POST", path
        assert json.loads(body)["ok"] is False
    for path in ("/", "/api/state", "/events/history", "/events/stream", "/static/hive.css"):
        for method in ("POST", "PUT", "DELETE"):
            st, h, body = page.request(method, path, data=b"x=1")
            assert st == 405 and h["Allow"] == "GET, HEAD", (method, path)
            assert json.loads(body)["ok"] is False


def test_cross_origin_posts_are_403(page):
    own = f"http://127.0.0.1:{page.port}"
    refused = [{"Origin": "http://evil.example"},
               {"Origin": f"http://127.0.0.1:{page.port + 1}"},
               {"Origin": f"http://localhost:{page.port}"},
               {"Origin": f"https://127.0.0.1:{page.port}x"},
               {"Origin": "null"},
               {"Sec-Fetch-Site": "cross-site"},
               {"Sec-Fetch-Site": "same-site"}]
    for hdrs in refused:
        for path in ("/send", "/api/cancel", "/api/model"):
            st, _, j = page.post(path, {"body": "x", "model": "opus"}, headers=hdrs)
            assert st == 403 and j == {"ok": False, "error": "cross-origin request refused"}, \
                (hdrs, path)
    # Nothing was sent: no turn started.
    assert not page.events("turn_start")
    # Same origin (also spelled in another case) and no origin at all pass the check.
    for hdrs in ({"Origin": own}, {"Origin": own.replace("http", "HTTP")},
                 {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        st, _, j = page.post("/api/cancel", headers=hdrs)
        assert st == 409, (hdrs, j)


def test_only_urlencoded_forms(page):
    st, _, body = page.request(
        "POST", "/send", data=b'--b\r\nContent-Disposition: form-data; name="body"\r\n\r\nhi'
        b"\r\n--b--\r\n", headers={"Content-Type": "multipart/form-data; boundary=b"})
    j = json.loads(body)
    assert st == 415 and j["ok"] is False and "x-www-form-urlencoded" in j["error"]
    for ctype in ("application/json", "text/plain", "application/x-www-form-urlencodedx"):
        st, _, body = page.request("POST", "/send", data=b'{"body":"hi"}',
                                   headers={"Content-Type": ctype})
        assert st == 415, ctype
    st, _, j = page.post("/api/cancel",
                         headers={"Content-Type":
                                  "application/x-www-form-urlencoded; charset=UTF-8"})
    assert st == 409


def test_empty_and_malformed_forms_are_400(page):
    for fields in ({}, {"body": ""}, {"body": "  \n\t "}, {"other": "x"}):
        st, _, j = page.post("/send", fields)
        assert st == 400 and j["ok"] is False and "empty" in j["error"], fields
    for raw in (b"body=%ZZ", b"body=%4", b"body=a%00b", b"body=%ff%fe", b"=x",
                b"body=a&body=b", b"&".join(b"f%d=1" % i for i in range(40))):
        st, _, body = page.request("POST", "/send", data=raw)
        j = json.loads(body)
        assert st == 400 and j["ok"] is False and j["error"], raw
    st, _, j = page.post("/api/model", {})
    assert st == 400 and "model" in j["error"]
    st, _, j = page.post("/api/model", {"model": "bad model!"})
    assert st == 400 and j["ok"] is False and j["error"]
    st, _, j = page.post("/api/login/code", {})
    assert st == 400 and "code" in j["error"]
    assert not page.events("turn_start")


def test_body_over_1_mib_is_413(page):
    c = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    c.putrequest("POST", "/send")
    c.putheader("Content-Type", "application/x-www-form-urlencoded")
    c.putheader("Content-Length", str(2 * 1024 * 1024))
    c.endheaders()  # the body is never sent: the answer comes from the headers
    r = c.getresponse()
    j = json.loads(r.read())
    assert r.status == 413 and j["ok"] is False and "1048576" in j["error"]
    c.close()
    # Streamed (chunked) past the limit: read to the end, then refused.
    c = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    chunk = b"body=" + b"a" * (64 * 1024)
    c.request("POST", "/send", body=iter([chunk] * 20), encode_chunked=True,
              headers={"Content-Type": "application/x-www-form-urlencoded",
                       "Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert r.status == 413 and json.loads(r.read())["ok"] is False
    c.close()
    assert not page.events("turn_start")


def test_send_refused_by_the_daemon(page):
    # Under the page's 1 MiB but over the daemon's message limit: the daemon's sentence.
    st, _, j = page.post("/send", {"body": "x" * 300_000})
    assert st in (400, 413) and j["ok"] is False and "262144" in j["error"], (st, j)
    assert not page.events("turn_start")


def test_controls_without_a_turn(page):
    st, _, j = page.post("/api/cancel")
    assert st == 409 and j["ok"] is False and "no turn" in j["error"]
    st, _, j = page.post("/api/compact")
    assert st == 200 and j == {"ok": True}
    st, _, j = page.post("/api/new-session")
    assert st == 200 and j == {"ok": True}
    st, _, j = page.post("/api/login/cancel")
    assert st == 409 and j["ok"] is False and "no login" in j["error"]
    st, _, j = page.post("/api/login/code", {"code": "hive-test-code"})
    assert st == 409 and j["ok"] is False and "no login" in j["error"]


def test_login_start_and_cancel(page):
    st, _, j = page.post("/api/login/start")
    assert st == 200 and j["ok"] is True and j["login"]["active"] is True, j
    st, _, j = page.post("/api/login/start")
    assert st == 409 and "already" in j["error"]
    st, _, j = page.post("/api/login/cancel")
    assert st == 200 and j["ok"] is True and "login" in j
    # The flow's process is killed and reaped by its reader: the state follows shortly.
    login = wait_for(lambda: (lambda l: not l["active"] and l)(page.state()["login"]),
                     what="the login to end")
    assert login["result"] == "cancelled", login
    st, _, j = page.post("/api/login/cancel")
    assert st == 409 and "no login" in j["error"]


# ---- sending and the stream ----

def test_send_runs_a_turn(page):
    st, _, j = page.post("/send", {"body": "hello SLOW-PING"})
    assert st == 200 and j["ok"] is True and isinstance(j["id"], int) and j["id"] > 0
    ends = wait_for(lambda: page.turn_ends(), timeout=30, what="the turn's end")
    assert ends[0]["ok"] is True, ends
    [start] = [e["payload"] for e in page.events("turn_start")]
    assert start["from"] == "operator" and start["body"] == "hello SLOW-PING"
    texts = [c.get("text") for e in page.events("stream") if e["payload"].get("type") == "assistant"
             for c in e["payload"]["message"]["content"]]
    assert REPLY in texts
    assert page.state()["turn_state"] == "idle"


def test_sse_framing_live_and_replay(page):
    s = Sse(page)
    try:
        assert s.resp.status == 200
        assert s.resp.headers["Content-Type"] == "text/event-stream"
        assert s.resp.headers["Cache-Control"] == "no-cache"
        # Without after or Last-Event-ID: the stream replays the kept events first, in order
        # (the history is read after the stream opened, so it holds what the stream has).
        h = page.history()
        kept, newest = h["events"], h["seq"]
        replay = [s.event() for _ in kept]
        assert [int(f["id"]) for f in replay] == [e["seq"] for e in kept]
        for f, e in zip(replay, kept):
            assert f["event"] == e["kind"] and json.loads(f["data"]) == e
        # Then live: a model change arrives as one frame.
        page.post("/api/model", {"model": "haiku"})
        f = s.event()
        ev = json.loads(f["data"])
        assert f["event"] == "model_changed" and int(f["id"]) == ev["seq"] > newest
        assert set(ev) == {"seq", "ts", "kind", "payload"} and ev["payload"]["model"] == "haiku"
    finally:
        s.close()

    kept = page.history()["events"]
    assert len(kept) >= 2
    pivot = kept[-2]["seq"]
    # Last-Event-ID (what EventSource sends on reconnect) and ?after= replay what follows.
    for kw in ({"headers": {"Last-Event-ID": str(pivot)}}, {"query": f"?after={pivot}"},
               {"query": f"?after={pivot - 1}", "headers": {"Last-Event-ID": str(pivot)}}):
        s = Sse(page, **kw)
        try:
            f = s.event()
            assert int(f["id"]) == kept[-1]["seq"] and json.loads(f["data"]) == kept[-1], kw
        finally:
            s.close()
    for kw in ({"query": "?after=abc"}, {"headers": {"Last-Event-ID": "x1"}}):
        s = Sse(page, **kw)
        try:
            assert s.resp.status == 400, kw
            assert json.loads(s.resp.read())["ok"] is False
        finally:
            s.close()


def test_streams_are_bounded_and_freed_on_hangup(page):
    newest = page.history()["seq"]
    streams = [Sse(page, query=f"?after={newest}") for _ in range(32)]
    try:
        assert all(s.resp.status == 200 for s in streams)
        extra = Sse(page)
        assert extra.resp.status == 503
        assert "too many live streams" in json.loads(extra.resp.read())["error"]
        extra.close()
        # Other requests still get through.
        assert page.state()["ok"] is True
        # A page that goes away gives its slot back within a second, not at the next keepalive.
        streams.pop().close()
        t0 = time.monotonic()

        def reopened():
            s = Sse(page, query=f"?after={newest}")
            if s.resp.status == 200:
                return s
            s.resp.read()
            s.close()
            return None
        streams.append(wait_for(reopened, timeout=5, what="a freed stream slot"))
        assert time.monotonic() - t0 < 3
    finally:
        for s in streams:
            s.close()


def test_sse_keepalive(page):
    newest = page.history()["seq"]
    s = Sse(page, query=f"?after={newest}", timeout=25)
    try:
        t0 = time.monotonic()
        f = s.frame()
        while "keepalive" not in f.get("comment", []):
            assert "data" not in f, f
            f = s.frame()
        assert 14 <= time.monotonic() - t0 < 20
    finally:
        s.close()


def test_sse_ends_when_the_harness_stops(page):
    newest = page.history()["seq"]
    s = Sse(page, query=f"?after={newest}", timeout=20)
    try:
        assert s.frame() is not None
        p = page.d.cli("stop", AGENT)
        assert p.returncode == 0, p.stderr
        while True:
            f = s.frame()
            if f is None:
                break
            if "data" in f:
                assert json.loads(f["data"])["kind"] in ("turn_state_changed", "note")
    finally:
        s.close()


# ---- in the browser ----

def _wait(browser, timeout=20):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(browser, timeout, poll_frequency=0.05)


def _text(browser, id_):
    from selenium.webdriver.common.by import By
    return browser.find_element(By.ID, id_).text


def _severe_logs(browser):
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_page_shows_a_turn_live(page, browser):
    from selenium.webdriver.common.by import By
    browser.get(page.base + "/")
    w = _wait(browser)
    w.until(lambda b: b.find_element(By.ID, "badge-conn").get_attribute("data-conn") == "live")
    assert _text(browser, "label") == AGENT and browser.title.startswith(AGENT)
    assert _text(browser, "badge-turn") == "idle"
    assert _text(browser, "badge-model") == page.state()["model"]
    assert _text(browser, "badge-context").startswith("ctx ")
    assert not browser.find_element(By.ID, "btn-cancel").is_enabled()
    assert not browser.find_element(By.ID, "login").is_displayed()

    browser.find_element(By.ID, "send-body").send_keys("hello from the page SLOW-PING <b>x</b>")
    browser.find_element(By.ID, "send-button").click()
    w.until(lambda b: _text(b, "badge-turn") == "running")
    assert REPLY not in _text(browser, "live"), "the text came before the turn showed running"
    assert browser.find_element(By.ID, "btn-cancel").is_enabled()
    w.until(lambda b: REPLY in _text(b, "live"))
    w.until(lambda b: _text(b, "badge-turn") == "idle")
    live = _text(browser, "live")
    assert "woken by operator" in live
    # The message shows as text, markup and all, never as HTML.
    assert "hello from the page SLOW-PING <b>x</b>" in live
    assert not browser.find_elements(By.CSS_SELECTOR, "#live b")
    assert "turn done" in live
    assert re.fullmatch(r"sent as #\d+", _text(browser, "send-result"))
    assert browser.find_element(By.ID, "send-body").get_attribute("value") == ""
    assert not _severe_logs(browser), _severe_logs(browser)

    # A reload shows the same turn from the history, once.
    browser.refresh()
    w.until(lambda b: b.find_element(By.ID, "badge-conn").get_attribute("data-conn") == "live")
    w.until(lambda b: REPLY in _text(b, "live"))
    assert _text(browser, "live").count(REPLY) == 1


def test_page_reconnects_after_a_restart(page, browser):
    from selenium.webdriver.common.by import By
    browser.get(page.base + "/")
    w = _wait(browser, 30)
    conn = lambda b: b.find_element(By.ID, "badge-conn").get_attribute("data-conn")
    w.until(lambda b: conn(b) == "live")
    st, _, j = page.post("/send", {"body": "first SLOW-PING"})
    assert st == 200, j
    w.until(lambda b: REPLY in _text(b, "live") and _text(b, "badge-turn") == "idle")
    p = page.d.cli("restart", AGENT)
    assert p.returncode == 0, p.stderr
    w.until(lambda b: conn(b) != "live")
    wait_for(lambda: page_up(page.base), timeout=20, what="the page after the restart")
    w.until(lambda b: conn(b) == "live" and _text(b, "badge-turn") == "idle")
    st, _, j = page.post("/send", {"body": "second SLOW-PING"})
    assert st == 200, j
    w.until(lambda b: _text(b, "live").count(REPLY) == 2)
    w.until(lambda b: _text(b, "badge-turn") == "idle")
    live = _text(browser, "live")
    # Each event once: the reopen resumed after the newest seq the page had.
    assert live.count("first SLOW-PING") == 1 and live.count("second SLOW-PING") == 1
    seqs = [int(e.get_attribute("data-seq"))
            for e in browser.find_elements(By.CSS_SELECTOR, "#live [data-seq]")]
    assert seqs == sorted(seqs), seqs


def test_page_model_and_refusals(page, browser):
    from selenium.webdriver.common.by import By
    browser.get(page.base + "/")
    w = _wait(browser)
    w.until(lambda b: b.find_element(By.ID, "badge-conn").get_attribute("data-conn") == "live")
    field = browser.find_element(By.ID, "model-input")
    field.clear()
    field.send_keys("haiku")
    browser.find_element(By.ID, "model-set").click()
    w.until(lambda b: _text(b, "badge-model") == "haiku")
    assert page.state()["model"] == "haiku"
    field.clear()
    field.send_keys("no such model!")
    browser.find_element(By.ID, "model-set").click()
    w.until(lambda b: "error" in b.find_element(By.ID, "toast").get_attribute("class"))
    assert _text(browser, "badge-model") == "haiku"
    browser.find_element(By.ID, "btn-new-session").click()
    w.until(lambda b: "new session" in _text(b, "toast"))


def test_hide_header_and_input(page, browser):
    from selenium.webdriver.common.by import By
    w = _wait(browser)
    for hide, header, composer in (("header,input,nonsense", False, False),
                                   ("input", True, False), ("header", False, True),
                                   ("nonsense", True, True)):
        browser.get(page.base + "/?hide=" + hide)
        w.until(lambda b: b.find_element(By.ID, "badge-conn").get_attribute("data-conn")
                == "live")
        assert browser.find_element(By.ID, "header").is_displayed() is header, hide
        assert browser.find_element(By.ID, "composer").is_displayed() is composer, hide
        assert browser.find_element(By.ID, "live").is_displayed(), hide


def test_login_panel(make_page, browser):
    from selenium.webdriver.common.by import By
    pg = make_page(env=["FAKE_CLAUDE_REQUIRE_LOGIN=1"])
    st, _, j = pg.post("/send", {"body": "anyone there?"})
    assert st == 200, j
    wait_for(lambda: pg.state()["needs_login"], timeout=30, what="needs_login")
    browser.get(pg.base + "/")
    w = _wait(browser, 30)
    w.until(lambda b: b.find_element(By.ID, "login").is_displayed())
    browser.find_element(By.ID, "login-start").click()
    w.until(lambda b: b.find_element(By.ID, "login-url").is_displayed())
    href = browser.find_element(By.ID, "login-url").get_attribute("href")
    assert href.startswith("https://"), href
    browser.find_element(By.ID, "login-code").send_keys("hive-test-code")
    browser.find_element(By.ID, "login-code-send").click()
    w.until(lambda b: not b.find_element(By.ID, "login").is_displayed())
    assert pg.state()["needs_login"] is False

