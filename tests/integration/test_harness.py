"""The turn loop end to end: the real daemon runs the real harness (`hive-ag3nt serve`) as
each agent's payload, on the process backend and (as root) on nspawn, and the harness runs the
fake model CLI (tests/fakes/claude), which makes real MCP tool calls through `hive-ag3nt mcp`.

The daemon, the harness and the fake are copied into one directory, so the harness is found
next to hive-c0re and, under nspawn, everything is in the container at /opt/hive/bin."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import BIN, ROOT, AgentClient, wait_for

AG3NT_DIR = os.environ.get("HIVE_AG3NT_DIR", os.path.join(ROOT, "build", "ag3nt"))
FAKE = os.path.join(ROOT, "tests", "fakes", "claude")


def nspawn_usable():
    return os.geteuid() == 0 and shutil.which("systemd-nspawn") is not None


BACKENDS = ["process",
            pytest.param("nspawn", marks=pytest.mark.skipif(
                not nspawn_usable(), reason="needs root and systemd-nspawn"))]


class Hive:
    """A daemon running harnesses with the fake CLI, and helpers to look at them."""

    def __init__(self, make_daemon, tmpbase, backend, rules, env=()):
        self.bindir = os.path.join(tmpbase, "bin")
        os.makedirs(self.bindir)
        for src in (BIN, os.path.join(AG3NT_DIR, "hive-ag3nt"),
                    os.path.join(AG3NT_DIR, "hive-m1nd"), FAKE):
            shutil.copy2(src, self.bindir)
        with open(os.path.join(self.bindir, "script.json"), "w") as f:
            json.dump({"rules": rules}, f)
        inside = "/opt/hive/bin" if backend == "nspawn" else self.bindir
        args = ["--backend", backend, "--harness",
                "--payload-env", f"HIVE_MODEL_BIN={inside}/claude",
                "--payload-env", f"FAKE_CLAUDE_SCRIPT={inside}/script.json",
                "--payload-env", "FAKE_CLAUDE_LOG=fake-claude.log",
                "--payload-env", "HIVE_RECONNECT_BASE_MS=50"]
        for e in env:
            args += ["--payload-env", e]
        self.d = make_daemon(*args, start=False)
        self.d.bin = os.path.join(self.bindir, "hive-c0re")
        self.d.start()
        self.backend = backend

    def spawn(self, name):
        p = self.d.cli("spawn", name)
        assert p.returncode == 0, (p.stdout, p.stderr, self.d.log_text()[-3000:])
        wait_for(lambda: self.port(name) and self._up(name), timeout=20,
                 what=f"{name}'s agent page")

    def state_dir(self, name):
        return os.path.join(self.d.state, "agents", name, "state")

    def row(self, name):
        for r in self.d.request({"cmd": "agent_status"})["agent_statuses"]:
            if r["name"] == name:
                return r
        return None

    def port(self, name):
        with open(os.path.join(self.d.state, "agents", name, "port")) as f:
            return int(f.read().strip())

    def _up(self, name):
        try:
            self.get(name, "/api/state")
            return True
        except OSError:
            return False

    def get(self, name, path):
        url = f"http://127.0.0.1:{self.port(name)}{path}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def post(self, name, path, fields=None):
        data = urllib.parse.urlencode(fields or {}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port(name)}{path}", data=data,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def history(self, name):
        return self.get(name, "/events/history")["events"]

    def events(self, name, kind):
        return [e for e in self.history(name) if e["kind"] == kind]

    def turn_ends(self, name):
        return [e["payload"] for e in self.events(name, "turn_end")
                if e["payload"].get("kind") == "turn"]

    def wait_turns(self, name, n, timeout=30):
        return wait_for(lambda: len(self.turn_ends(name)) >= n and self.turn_ends(name),
                        timeout=timeout, what=f"{n} finished turn(s) of {name}")

    def stats(self, name):
        c = sqlite3.connect(os.path.join(self.state_dir(name), "hyperhive-turn-stats.sqlite"))
        c.row_factory = sqlite3.Row
        rows = [dict(r) for r in c.execute("SELECT * FROM turns ORDER BY id")]
        c.close()
        return rows

    def invocations(self, name):
        path = os.path.join(self.state_dir(name), "fake-claude.log")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def operator_send(self, to, body):
        r = self.d.request({"cmd": "send", "to": to, "body": body})
        assert r["ok"], r
        return r["id"]

    def inbox_pending(self, name):
        c = AgentClient(os.path.join(self.d.run, "agents", name, "mcp.sock"))
        try:
            return c.req({"cmd": "status"})["pending"]
        finally:
            c.close()

    def harness_pids(self, name):
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                with open(f"/proc/{p}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if len(cmd) < 2 or not cmd[0].endswith(b"hive-ag3nt") or cmd[1] != b"serve":
                continue
            if f"HIVE_LABEL={name}".encode() not in env:
                continue
            st = [e for e in env if e.startswith(b"HIVE_STATE_DIR=")]
            if st and (self.d.state.encode() in st[0] or st[0] == b"HIVE_STATE_DIR=/state"):
                out.append(int(p))
        return out


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def make_hive(make_daemon, tmpbase, backend):
    def make(rules, env=(), agents=("alpha",)):
        h = Hive(make_daemon, tmpbase, backend, rules, env)
        for a in agents:
            h.spawn(a)
        return h
    return make


def test_operator_to_a_to_b_and_back(make_hive):
    h = make_hive([
        {"agent": "alpha", "match": "from operator", "actions": [
            {"text": "asking beta"},
            {"tool": "send", "input": {"to": "beta", "body": "ping from alpha"}}]},
        {"agent": "beta", "match": "from alpha", "actions": [
            {"tool": "set_status", "input": {"text": "answering alpha"}},
            {"tool": "send", "input": {"to": "alpha", "body": "pong"}}]},
        {"agent": "alpha", "match": "from beta", "actions": [
            {"tool": "send", "input": {"to": "operator", "body": "beta said pong"}}]},
    ], agents=("alpha", "beta"))
    h.operator_send("alpha", "please ask beta")

    def answered():
        r = h.d.request({"cmd": "operator_inbox"})
        return [m for m in r["messages"] if m["body"] == "beta said pong"]
    wait_for(answered, timeout=60, what="alpha's message to the operator")

    a_ends = h.wait_turns("alpha", 2)
    b_ends = h.wait_turns("beta", 1)
    assert all(e["ok"] and e["result"] == "ok" for e in a_ends + b_ends), (a_ends, b_ends)
    starts = [e["payload"] for e in h.events("alpha", "turn_start")]
    assert [s["from"] for s in starts] == ["operator", "beta"]
    assert starts[0]["body"] == "please ask beta" and starts[1]["body"] == "pong"
    assert [e["payload"]["from"] for e in h.events("beta", "turn_start")] == ["alpha"]
    # The stream carries the CLI's own lines: init, the tool call and its result.
    kinds = [e["payload"].get("type") for e in h.events("alpha", "stream")]
    assert {"system", "assistant", "user", "result"} <= set(kinds)
    seqs = [e["seq"] for e in h.history("alpha")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    # One stats row per turn, with the tool counts.
    rows = h.stats("alpha")
    assert [r["wake_from"] for r in rows] == ["operator", "beta"]
    for r in rows:
        assert r["result"] == "ok" and r["tool_calls"] == 1
        assert json.loads(r["tool_counts_json"]) == {"mcp__hyperhive__send": 1}
        assert r["output_tokens"] > 0 and r["duration_ms"] >= 0
        assert r["open_threads"] == 0 and r["pending_reminders"] == 0
    brow = h.stats("beta")
    assert json.loads(brow[0]["tool_counts_json"]) == {
        "mcp__hyperhive__send": 1, "mcp__hyperhive__set_status": 1}
    # set_status reached the daemon and the page.
    assert h.row("beta")["status_text"] == "answering alpha"
    assert h.get("beta", "/api/state")["status_text"] == "answering alpha"

    # Everything was acknowledged after its turn.
    assert h.inbox_pending("alpha") == 0 and h.inbox_pending("beta") == 0

    # The argv: the real CLI's flags; the second turn continues the session.
    inv = h.invocations("alpha")
    assert len(inv) == 2
    for i in inv:
        a = i["argv"]
        for flag in ("--print", "--verbose", "--strict-mcp-config"):
            assert flag in a
        assert a[a.index("--output-format") + 1] == "stream-json"
        assert "mcp__hyperhive__send" in a[a.index("--allowedTools") + 1].split(",")
        assert os.path.basename(a[a.index("--mcp-config") + 1]) == "mcp-config.json"
    assert "--continue" not in inv[0]["argv"] and "--continue" in inv[1]["argv"]
    assert "Message #" in inv[0]["stdin"] and "please ask beta" in inv[0]["stdin"]
    assert h.row("alpha")["active_model"] == "opus"


def test_cancel_mid_turn(make_hive):
    h = make_hive([{"agent": "alpha", "actions": [{"text": "thinking"}, {"sleep": 60}]}])
    h.operator_send("alpha", "take your time")
    wait_for(lambda: h.get("alpha", "/api/state")["turn_state"] == "running", timeout=20,
             what="a running turn")
    wait_for(lambda: h.events("alpha", "stream"), what="the turn's first output")
    status, body = h.post("alpha", "/api/cancel")
    assert status == 200 and body["ok"], body
    ends = h.wait_turns("alpha", 1, timeout=20)
    assert ends[0]["result"] == "cancelled" and not ends[0]["ok"]
    wait_for(lambda: h.get("alpha", "/api/state")["turn_state"] == "idle", what="idle")
    # A cancelled turn is done with: the message is not offered again.
    assert h.inbox_pending("alpha") == 0
    assert h.stats("alpha")[0]["result"] == "cancelled"
    status, body = h.post("alpha", "/api/cancel")
    assert status == 409 and not body["ok"]


def test_killed_harness_redelivers_the_unacked_message(make_hive):
    h = make_hive([
        {"agent": "alpha", "once": True, "actions": [{"text": "working"}, {"sleep": 60}]},
        {"agent": "alpha", "actions": [{"text": "done at last"}]},
    ])
    h.operator_send("alpha", "survive this")
    wait_for(lambda: "working" in json.dumps(h.events("alpha", "stream")), timeout=20,
             what="the turn's first words")
    pids = h.harness_pids("alpha")
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    # The crash watcher restarts the container; the new harness offers its lease again.
    def redelivered():
        try:
            return [e for e in h.turn_ends("alpha") if e["result"] == "ok"]
        except OSError:
            return None  # the page is down until the harness is back
    ends = wait_for(redelivered, timeout=60, what="the redelivered turn")
    starts = [e["payload"]["body"] for e in h.events("alpha", "turn_start")]
    assert starts.count("survive this") == 2, starts
    assert ends[0]["ok"]
    wait_for(lambda: h.inbox_pending("alpha") == 0, what="the ack")


def test_pause_marker_stops_new_turns(make_hive):
    h = make_hive([{"agent": "alpha", "actions": [{"text": "hello"}]}])
    assert h.d.cli("pause", "alpha").returncode == 0
    wait_for(lambda: h.get("alpha", "/api/state")["turn_state"] == "paused", what="paused")
    h.operator_send("alpha", "are you there?")
    time.sleep(3)
    assert not h.events("alpha", "turn_start"), "a paused agent took a turn"
    assert h.inbox_pending("alpha") == 1
    assert h.d.cli("unpause", "alpha").returncode == 0
    ends = h.wait_turns("alpha", 1)
    assert ends[0]["ok"]


def test_request_next_turn_runs_another_turn_from_self(make_hive):
    h = make_hive([
        {"agent": "alpha", "match": "from operator",
         "actions": [{"tool": "request_next_turn", "input": {}}]},
        {"agent": "alpha", "match": "from self", "actions": [{"text": "continuing"}]},
    ])
    h.operator_send("alpha", "work on")
    ends = h.wait_turns("alpha", 2)
    starts = [e["payload"] for e in h.events("alpha", "turn_start")]
    assert [s["from"] for s in starts] == ["operator", "self"]
    assert starts[1]["body"] == "continue" and all(e["ok"] for e in ends)
    assert not os.path.exists(os.path.join(h.state_dir("alpha"), "hyperhive-next-turn"))


def test_rate_limit_sleeps_then_retries(make_hive):
    h = make_hive([
        {"agent": "alpha", "once": True, "actions": [{"rate_limit": True}]},
        {"agent": "alpha", "actions": [{"text": "back"}]},
    ], env=("HIVE_RATE_LIMIT_SLEEP_SECS=2",))
    h.operator_send("alpha", "go")
    ends = wait_for(lambda: [e for e in h.turn_ends("alpha") if e["ok"]], timeout=30,
                    what="the turn after the rate limit")
    states = [e["payload"]["state"] for e in h.events("alpha", "turn_state_changed")]
    assert "rate_limited" in states
    results = [e["result"] for e in h.turn_ends("alpha")]
    assert results == ["rate_limited", "ok"], results
    assert ends[0]["ok"]
    assert [r["result"] for r in h.stats("alpha")] == ["rate_limited", "ok"]


def test_prompt_too_long_compacts_and_retries_once(make_hive):
    h = make_hive([
        {"agent": "alpha", "match": "first", "actions": [{"text": "noted"}]},
        {"agent": "alpha", "match": "second", "once": True,
         "actions": [{"error": "Prompt is too long"}]},
        {"agent": "alpha", "match": "second", "actions": [{"text": "fits now"}]},
    ])
    h.operator_send("alpha", "first")
    h.wait_turns("alpha", 1)
    h.operator_send("alpha", "second")
    ends = h.wait_turns("alpha", 2)
    assert [e["ok"] for e in ends] == [True, True]
    compacts = [e["payload"] for e in h.events("alpha", "turn_end")
                if e["payload"].get("kind") == "compact"]
    assert len(compacts) == 1 and compacts[0]["ok"]
    prompts = [i["stdin"] for i in h.invocations("alpha")]
    assert prompts.count("/compact") == 1
    assert [r["kind"] for r in h.stats("alpha")] == ["turn", "compact", "turn"]


def test_model_change_is_persisted_and_used(make_hive):
    h = make_hive([{"agent": "alpha", "actions": [{"text": "ok"}]}])
    status, body = h.post("alpha", "/api/model", {"model": "sonnet"})
    assert status == 200 and body["ok"], body
    with open(os.path.join(h.state_dir("alpha"), "hyperhive-model")) as f:
        assert f.read().strip() == "sonnet"
    wait_for(lambda: h.row("alpha")["active_model"] == "sonnet", what="active_model")
    assert [e["payload"]["model"] for e in h.events("alpha", "model_changed")] == ["sonnet"]
    status, body = h.post("alpha", "/api/model", {"model": "bad model; rm -rf"})
    assert status == 400 and not body["ok"] and "model" in body["error"]
    h.operator_send("alpha", "hi")
    h.wait_turns("alpha", 1)
    a = h.invocations("alpha")[0]["argv"]
    assert a[a.index("--model") + 1] == "sonnet"


def test_needs_login_then_login_on_the_page(make_hive):
    h = make_hive([{"agent": "alpha", "actions": [{"text": "logged in and working"}]}],
                  env=("FAKE_CLAUDE_REQUIRE_LOGIN=1",))
    h.operator_send("alpha", "hello")
    wait_for(lambda: h.row("alpha")["needs_login"], timeout=30, what="needs_login in status")
    assert h.get("alpha", "/api/state")["turn_state"] == "needs_login"
    assert h.inbox_pending("alpha") == 1, "the message waits for the login"
    status, body = h.post("alpha", "/api/login/start")
    assert status == 200 and body["ok"], body
    url = wait_for(lambda: h.get("alpha", "/api/state")["login"].get("url"),
                   what="the sign-in URL")
    assert url.startswith("https://")
    status, body = h.post("alpha", "/api/login/code", {"code": "hive-test-code"})
    assert status == 200 and body["ok"], body
    ends = wait_for(lambda: [e for e in h.turn_ends("alpha") if e["ok"]], timeout=30,
                    what="a turn after the login")
    assert ends[0]["ok"]
    wait_for(lambda: not h.row("alpha")["needs_login"], what="needs_login cleared")
    tok = os.path.join(h.state_dir("alpha"), "hyperhive-oauth-token")
    assert os.stat(tok).st_mode & 0o777 == 0o600
    assert h.invocations("alpha")[-1]["env_token_set"]


def test_missing_model_cli_is_reported_and_the_message_kept(make_hive, backend):
    h = make_hive([], env=("HIVE_MODEL_BIN=/nonexistent/claude",))
    h.operator_send("alpha", "anyone?")
    notes = wait_for(lambda: [e["payload"]["text"] for e in h.events("alpha", "note")
                              if "cannot run the model CLI" in e["payload"]["text"]],
                     timeout=20, what="the note")
    assert "/nonexistent/claude" in notes[0]
    assert h.turn_ends("alpha")[0]["result"] == "failed"
    assert h.inbox_pending("alpha") == 1, "a turn that never ran does not eat the message"


def test_graceful_stop_lets_the_turn_finish(make_hive):
    h = make_hive([
        {"agent": "alpha", "match": "finish", "actions": [{"text": "on it"}, {"sleep": 3},
                                                           {"text": "finished"}]},
        {"agent": "alpha", "match": "later", "actions": [{"text": "later"}]},
    ])
    h.operator_send("alpha", "finish this")
    wait_for(lambda: "on it" in json.dumps(h.events("alpha", "stream")), timeout=20,
             what="the turn's first words")
    p = h.d.cli("stop", "--graceful", "alpha")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert not h.harness_pids("alpha")
    # The turn ended by itself and its message was acknowledged; nothing was left behind.
    assert [r["result"] for r in h.stats("alpha")] == ["ok"]
    assert h.inbox_pending("alpha") == 0
    for m in ("hyperhive-stop-requested", "hyperhive-quiesced"):
        assert not os.path.exists(os.path.join(h.state_dir("alpha"), m))
    # A message sent while it was stopped waits; after a start the agent takes turns again.
    h.operator_send("alpha", "later")
    assert h.d.cli("start", "alpha").returncode == 0
    wait_for(lambda: h._up("alpha"), timeout=20, what="the page after the start")
    ends = h.wait_turns("alpha", 1)
    assert ends[-1]["ok"]


def test_plain_stop_mid_turn_keeps_the_message(make_hive):
    h = make_hive([
        {"agent": "alpha", "once": True, "actions": [{"text": "on it"}, {"sleep": 60}]},
        {"agent": "alpha", "actions": [{"text": "done"}]},
    ])
    h.operator_send("alpha", "interrupted work")
    wait_for(lambda: "on it" in json.dumps(h.events("alpha", "stream")), timeout=20,
             what="the turn's first words")
    assert h.d.cli("stop", "alpha").returncode == 0
    assert not h.harness_pids("alpha")
    assert h.inbox_pending("alpha") == 1, "a turn cut short by a stop does not eat its message"
    assert h.d.cli("start", "alpha").returncode == 0
    wait_for(lambda: h._up("alpha"), timeout=20, what="the page after the start")
    ends = wait_for(lambda: [e for e in h.turn_ends("alpha") if e["ok"]], timeout=30,
                    what="the turn again")
    assert ends[0]["ok"]
    wait_for(lambda: h.inbox_pending("alpha") == 0, what="the ack")
