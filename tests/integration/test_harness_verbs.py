"""The daemon side of the harness's turn loop: `release` and `set_harness_state` on the agent
sockets, and `serve --payload-env`."""

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, ROOT, open_stream, read_row, wait_for

AG3NT = os.path.join(os.environ.get("HIVE_AG3NT_DIR", os.path.join(ROOT, "build", "ag3nt")),
                     "hive-ag3nt")


def send(d, frm, to, body):
    c = d.connect(frm)
    r = c.req({"cmd": "send", "to": to, "body": body})
    c.close()
    assert r["ok"] is True, r
    return r["id"]


def row(d, name):
    for r in d.request({"cmd": "agent_status"})["agent_statuses"]:
        if r["name"] == name:
            return r
    raise AssertionError(f"no row for {name}")


# ---- release ----

def test_release_all_offers_the_messages_again(hive):
    d = hive()
    ids = [send(d, "a1", "b2", f"m{i}") for i in range(3)]
    b = d.connect("b2")
    got = b.req({"cmd": "recv", "max": 8})["messages"]
    assert [m["id"] for m in got] == ids
    assert b.req({"cmd": "status"})["leased"] == 3
    assert b.req({"cmd": "recv"})["messages"] == []  # leased: not offered

    assert b.req({"cmd": "release"}) == {"version": 1, "ok": True, "released": 3}
    assert b.req({"cmd": "status"}) == {"version": 1, "ok": True, "pending": 3, "leased": 0}
    # A new connection (a restarted harness) gets them at once, not after the lease time.
    b2 = d.connect("b2")
    assert [m["id"] for m in b2.req({"cmd": "recv", "max": 8})["messages"]] == ids
    assert b2.req({"cmd": "release"})["released"] == 3
    assert b2.req({"cmd": "release"})["released"] == 0  # idempotent
    # Acked messages are not released.
    assert b2.req({"cmd": "recv", "max": 8})["ok"]
    assert b2.req({"cmd": "ack", "ids": ids[:2]})["acked"] == 2
    assert b2.req({"cmd": "release"})["released"] == 1


def test_release_by_ids_only_those(hive):
    d = hive()
    ids = [send(d, "a1", "b2", f"m{i}") for i in range(3)]
    b = d.connect("b2")
    assert len(b.req({"cmd": "recv", "max": 8})["messages"]) == 3
    assert b.req({"cmd": "release", "ids": [ids[1]]})["released"] == 1
    assert b.req({"cmd": "status"})["leased"] == 2
    [m] = b.req({"cmd": "recv", "max": 8})["messages"]
    assert m["id"] == ids[1]
    # unknown ids are skipped, as ack skips them
    assert b.req({"cmd": "release", "ids": [ids[2], 999999]})["released"] == 1


def test_release_skips_foreign_ids(hive):
    d = hive()
    mine = send(d, "a1", "b2", "to b2")
    theirs = send(d, "a1", "c3", "to c3")
    b, c = d.connect("b2"), d.connect("c3")
    assert [m["id"] for m in b.req({"cmd": "recv"})["messages"]] == [mine]
    assert [m["id"] for m in c.req({"cmd": "recv"})["messages"]] == [theirs]
    # c3's lease is not b2's to end: skipped like an unknown id (ack does the same).
    assert b.req({"cmd": "release", "ids": [theirs]}) == {"version": 1, "ok": True,
                                                           "released": 0}
    assert c.req({"cmd": "status"})["leased"] == 1
    assert b.req({"cmd": "release", "ids": [theirs, mine]})["released"] == 1
    assert c.req({"cmd": "status"})["leased"] == 1
    assert b.req({"cmd": "release"})["released"] == 0
    assert c.req({"cmd": "status"})["leased"] == 1


def test_release_refuses_bad_ids(hive):
    d = hive()
    b = d.connect("b2")
    for ids in ([], ["x"], [0], list(range(1, 258))):
        r = b.req({"cmd": "release", "ids": ids})
        assert r["ok"] is False and r["error_code"] == "EINVAL", r
        assert "ids" in r["error"]
    r = b.req({"cmd": "release", "ids": 5})
    assert r["ok"] is False and r["error_code"] == "EINVAL"


def test_release_wakes_a_parked_recv(hive):
    d = hive()
    mid = send(d, "a1", "b2", "hold me")
    taker, waiter = d.connect("b2"), d.connect("b2")
    assert [m["id"] for m in taker.req({"cmd": "recv"})["messages"]] == [mid]
    result = {}

    def park():
        result["r"] = waiter.req({"cmd": "recv", "wait_seconds": 10})
        result["t"] = time.monotonic()

    t = threading.Thread(target=park)
    t.start()
    time.sleep(0.3)  # let the recv park
    assert "r" not in result
    t0 = time.monotonic()
    assert taker.req({"cmd": "release"})["released"] == 1
    t.join(5)
    assert [m["id"] for m in result["r"]["messages"]] == [mid]
    assert result["t"] - t0 < 0.5, f"woke after {result['t'] - t0:.3f}s"


def test_release_on_the_manager_socket(hive):
    d = hive()
    mid = send(d, "a1", "manager", "for the manager")
    m = d.connect("manager")
    assert [x["id"] for x in m.req({"cmd": "recv"})["messages"]] == [mid]
    assert m.req({"cmd": "release"})["released"] == 1
    assert [x["id"] for x in m.req({"cmd": "recv"})["messages"]] == [mid]


# ---- set_harness_state ----

def test_set_harness_state_shows_in_agent_status(hive):
    d = hive()
    r = row(d, "a1")
    assert r["needs_login"] is False and "active_model" not in r
    a = d.connect("a1")
    assert a.req({"cmd": "set_harness_state", "needs_login": True}) == {"version": 1,
                                                                       "ok": True}
    r = row(d, "a1")
    assert r["needs_login"] is True and "active_model" not in r
    assert row(d, "b2")["needs_login"] is False
    p = d.cli("status", check=0)
    [line] = [ln for ln in p.stdout.splitlines() if ln.startswith("a1 ")]
    assert line.split()[1] == "needs-login"

    assert a.req({"cmd": "set_harness_state", "model": "claude-opus-4-6"})["ok"] is True
    r = row(d, "a1")
    assert r["needs_login"] is True and r["active_model"] == "claude-opus-4-6"
    assert a.req({"cmd": "set_harness_state", "needs_login": False,
                  "model": "claude-sonnet-4-5[1m]"})["ok"] is True
    r = row(d, "a1")
    assert r["needs_login"] is False and r["active_model"] == "claude-sonnet-4-5[1m]"
    p = d.cli("status", check=0)
    [line] = [ln for ln in p.stdout.splitlines() if ln.startswith("a1 ")]
    assert line.split()[1:4] == ["stopped", "-", "claude-sonnet-4-5[1m]"]
    # idempotent
    assert a.req({"cmd": "set_harness_state", "needs_login": False})["ok"] is True
    # kept across a daemon restart
    d.stop()
    d.start()
    r = row(d, "a1")
    assert r["needs_login"] is False and r["active_model"] == "claude-sonnet-4-5[1m]"


def test_set_harness_state_is_pushed_to_subscribers(hive):
    d = hive()
    s, f = open_stream(d)
    a = d.connect("a1")
    assert a.req({"cmd": "set_harness_state", "needs_login": True})["ok"]
    r = read_row(f)
    assert (r["name"], r["needs_login"]) == ("a1", True)
    assert a.req({"cmd": "set_harness_state", "model": "m-1"})["ok"]
    r = read_row(f)
    assert (r["name"], r["needs_login"], r["active_model"]) == ("a1", True, "m-1")
    # An unchanged report pushes nothing: the next line is the next real change.
    assert a.req({"cmd": "set_harness_state", "needs_login": True, "model": "m-1"})["ok"]
    assert d.connect("b2").req({"cmd": "set_harness_state", "model": "m-2"})["ok"]
    r = read_row(f)
    assert (r["name"], r["active_model"]) == ("b2", "m-2")
    s.close()


@pytest.mark.parametrize("model", ["", "a b", "x" * 101, "caf\u00e9", "m;rm", "m\n"])
def test_set_harness_state_refuses_a_bad_model(hive, model):
    d = hive(agents=("a1",))
    r = d.connect("a1").req({"cmd": "set_harness_state", "model": model, "needs_login": True})
    assert r["ok"] is False and r["error_code"] == "EINVAL", r
    assert "\"model\" must be 1 to 100 characters" in r["error"]
    assert row(d, "a1")["needs_login"] is False  # nothing was recorded


def test_set_harness_state_accepts_model_punctuation(hive):
    d = hive(agents=("a1",))
    a = d.connect("a1")
    for m in ("x" * 100, "us.anthropic/claude@v1:0", "A-Z_a.z[0]"):
        assert a.req({"cmd": "set_harness_state", "model": m})["ok"] is True
        assert row(d, "a1")["active_model"] == m


def test_set_harness_state_needs_a_field(hive):
    d = hive(agents=("a1",))
    a = d.connect("a1")
    r = a.req({"cmd": "set_harness_state"})
    assert r == {"version": 1, "ok": False, "error_code": "EINVAL",
                 "error": "set_harness_state needs \"needs_login\" (a boolean), \"model\" "
                          "(a string), or both"}
    r = a.req({"cmd": "set_harness_state", "needs_login": "yes"})
    assert r["ok"] is False and r["error_code"] == "EINVAL" and "needs_login" in r["error"]
    r = a.req({"cmd": "set_harness_state", "model": 4})
    assert r["ok"] is False and r["error_code"] == "EINVAL" and "model" in r["error"]


def test_set_harness_state_of_the_manager(hive):
    d = hive("--manager", agents=())
    m = d.connect("manager")
    assert m.req({"cmd": "set_harness_state", "needs_login": True, "model": "m"})["ok"]
    r = row(d, "hm1nd")
    assert r["needs_login"] is True and r["active_model"] == "m"


def test_set_harness_state_without_a_manager_row(hive):
    d = hive(agents=())
    r = d.connect("manager").req({"cmd": "set_harness_state", "needs_login": True})
    assert r["ok"] is False and r["error_code"] == "ENOENT"


# ---- request ids ----

RID = "0123456789abcdef0123456789abcdef"


def count(d, sql, *args):
    c = d.db()
    try:
        return c.execute(sql, args).fetchone()[0]
    finally:
        c.close()


def inbox(d, name):
    """Everything name receives now, acknowledged."""
    b = d.connect(name)
    got = b.req({"cmd": "recv", "max": 32})["messages"]
    if got:
        assert b.req({"cmd": "ack", "ids": [m["id"] for m in got]})["ok"]
    b.close()
    return got


def test_request_id_send_is_carried_out_once(hive):
    d = hive()
    req = {"cmd": "send", "to": "b2", "body": "once", "request_id": RID}
    a = d.connect("a1")
    first = a.req(req)
    assert first["ok"] is True and isinstance(first["id"], int), first
    assert a.req(req) == first  # the same connection
    a2 = d.connect("a1")
    assert a2.req(req) == first  # another connection
    d.stop()  # and across a restart
    d.start()
    assert d.connect("a1").req(req) == first
    assert count(d, "SELECT COUNT(*) FROM messages WHERE body = 'once'") == 1
    assert [m["id"] for m in inbox(d, "b2")] == [first["id"]]
    assert inbox(d, "b2") == []
    row = d.db().execute("SELECT agent, cmd, answer FROM request_ids").fetchall()
    assert row == [("a1", "send", json.dumps(first, separators=(",", ":")))]
    # The id is a1's: b2 may use the same one for its own request.
    r = d.connect("b2").req({"cmd": "send", "to": "a1", "body": "mine", "request_id": RID})
    assert r["ok"] and r["id"] != first["id"]
    # Broadcasts answer the same ids again.
    star = {"cmd": "send", "to": "*", "body": "all", "request_id": "star-0001"}
    r1 = d.connect("c3").req(star)
    assert len(r1["ids"]) == 3 and d.connect("c3").req(star) == r1
    assert count(d, "SELECT COUNT(*) FROM messages WHERE body = 'all'") == 3


def test_request_id_used_for_another_verb(hive):
    d = hive()
    a = d.connect("a1")
    assert a.req({"cmd": "send", "to": "b2", "body": "x", "request_id": RID})["ok"]
    r = a.req({"cmd": "wake", "from": "cron", "body": "x", "request_id": RID})
    assert r == {"version": 1, "ok": False, "error_code": "EINVAL",
                 "error": f"request_id {RID} was already used for send"}
    assert count(d, "SELECT COUNT(*) FROM messages") == 1


@pytest.mark.parametrize("rid", ["short", "", "x" * 65, "has space", "a.b.c.d.e", "caf\u00e9-123",
                                 12345678, None, ["abcdefgh"]])
def test_request_id_malformed(hive, rid):
    d = hive(agents=("a1", "b2"))
    r = d.connect("a1").req({"cmd": "send", "to": "b2", "body": "x", "request_id": rid})
    assert r["ok"] is False and r["error_code"] == "EINVAL", r
    assert "\"request_id\" must be a string of 8 to 64 characters" in r["error"]
    assert count(d, "SELECT COUNT(*) FROM messages") == 0


def test_without_request_id_nothing_changes(hive):
    d = hive(agents=("a1", "b2"))
    a = d.connect("a1")
    ids = [a.req({"cmd": "send", "to": "b2", "body": "twice"})["id"] for _ in range(2)]
    assert ids[0] != ids[1]
    assert count(d, "SELECT COUNT(*) FROM request_ids") == 0
    # A refusal is not recorded: the same id is refused again, and runs once it can succeed.
    req = {"cmd": "send", "to": "c3", "body": "later", "request_id": RID}
    assert a.req(req)["error_code"] == "ENOENT"
    assert a.req(req)["error_code"] == "ENOENT"
    assert count(d, "SELECT COUNT(*) FROM request_ids") == 0


def test_request_id_other_verbs(hive):
    d = hive()
    a = d.connect("a1")
    for req in ({"cmd": "wake", "from": "cron", "body": "tick"},
                {"cmd": "ask", "question": "ok?", "to": "b2"},
                {"cmd": "remind", "message": "later", "delay_seconds": 3600}):
        rid = req["cmd"] + "-0001"
        first = a.req(dict(req, request_id=rid))
        assert first["ok"] is True, first
        assert a.req(dict(req, request_id=rid)) == first
    assert count(d, "SELECT COUNT(*) FROM messages WHERE body = 'tick'") == 1
    assert count(d, "SELECT COUNT(*) FROM questions") == 1
    assert count(d, "SELECT COUNT(*) FROM reminders") == 1
    m = d.connect("manager")
    req = {"cmd": "request_spawn", "name": "d4", "request_id": "spawn-0001"}
    first = m.req(req)
    assert first["ok"] is True, first
    assert m.req(req) == first
    assert count(d, "SELECT COUNT(*) FROM approvals") == 1
    assert count(d, "SELECT COUNT(*) FROM request_ids WHERE agent = 'manager'") == 1


def test_ag3nt_send_carries_a_request_id(hive):
    d = hive(agents=("a1", "b2"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env.update(HIVE_SOCKET=d.agent_sock("a1"), HIVE_RECONNECT_BASE_MS="50")
    p = subprocess.run([AG3NT, "send", "b2", "hello"], capture_output=True, text=True,
                       timeout=30, env=env)
    assert p.returncode == 0, p.stderr
    [(rid, cmd, answer)] = d.db().execute(
        "SELECT request_id, cmd, answer FROM request_ids WHERE agent = 'a1'").fetchall()
    assert cmd == "send" and len(rid) == 32 and int(rid, 16) >= 0
    assert p.stdout == f"sent as message {json.loads(answer)['id']}\n"
    # call passes a request_id the user gave, and adds one when there is none.
    p = subprocess.run([AG3NT, "call", "send", '{"to":"b2","body":"c","request_id":"user-id-1"}'],
                       capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 0, p.stderr
    assert count(d, "SELECT COUNT(*) FROM request_ids WHERE request_id = 'user-id-1'") == 1
    # recv is not given one.
    p = subprocess.run([AG3NT, "--json", "recv"], capture_output=True, text=True, timeout=30,
                       env=dict(env, HIVE_SOCKET=d.agent_sock("b2")))
    assert p.returncode == 0, p.stderr
    assert count(d, "SELECT COUNT(*) FROM request_ids") == 2


class LossyProxy:
    """A unix-socket proxy in front of an agent socket that forwards the first request, reads
    the daemon's answer (so it is committed) and drops it, closing the client's connection;
    later connections are passed through.  Records every request line it forwards."""

    def __init__(self, path, target):
        self.path, self.target = path, target
        self.lines = []
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        self.lsock.listen(8)
        self.lsock.settimeout(0.2)
        self.stop = False
        self.dropped = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.connect(self.target)
        cf, uf = c.makefile("rb"), up.makefile("rb")
        try:
            while True:
                line = cf.readline()
                if not line:
                    return
                self.lines.append(json.loads(line))
                up.sendall(line)
                answer = uf.readline()
                if self.dropped == 0:
                    self.dropped = 1
                    return  # the answer is lost, the client's connection breaks
                c.sendall(answer)
        finally:
            cf.close()
            uf.close()
            c.close()
            up.close()

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.lsock.close()


def test_ag3nt_send_resent_after_a_lost_answer_is_stored_once(hive, tmpbase):
    d = hive(agents=("a1", "b2"))
    proxy = LossyProxy(os.path.join(tmpbase, "proxy.sock"), d.agent_sock("a1"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
        env.update(HIVE_SOCKET=proxy.path, HIVE_RECONNECT_BASE_MS="50")
        p = subprocess.run([AG3NT, "send", "b2", "exactly once"], capture_output=True,
                           text=True, timeout=30, env=env)
    finally:
        proxy.close()
    assert p.returncode == 0, p.stderr
    assert "broke before the answer to \"send\" arrived" in p.stderr
    assert proxy.dropped == 1
    # The daemon saw the request twice, with one request id, and carried it out once.
    assert len(proxy.lines) == 2 and proxy.lines[0] == proxy.lines[1]
    rid = proxy.lines[0]["request_id"]
    [(mid,)] = d.db().execute("SELECT id FROM messages WHERE body = 'exactly once'").fetchall()
    assert p.stdout == f"sent as message {mid}\n"
    assert [m["id"] for m in inbox(d, "b2")] == [mid]
    wait_for(lambda: f"sent send request_id {rid} again" in d.log_text(),
             what="the daemon's debug line about the repeat")


# ---- serve --payload-env ----

@pytest.mark.parametrize("backend", [
    "process",
    pytest.param("nspawn", marks=pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("systemd-nspawn") is None,
        reason="needs root and systemd-nspawn"))])
def test_payload_env_reaches_the_payload(make_daemon, backend):
    d = make_daemon("--backend", backend, "--agent-command", 'env > "$HIVE_STATE_DIR/env.txt"; exec sleep 86400',
                    "--payload-env", "HIVE_MODEL_BIN=/path/to/fake-claude",
                    "--payload-env", "FAKE_CLAUDE_SCRIPT=/first.json",
                    "--payload-env", "HTTPS_PROXY=http://proxy:3128/?a=b",
                    "--payload-env", "FAKE_CLAUDE_SCRIPT=/later.json",
                    "--payload-env", "LANG=C.UTF-8")
    assert d.cli("spawn", "a1", check=0).stdout == "spawned a1\n"
    path = os.path.join(d.state, "agents", "a1", "state", "env.txt")

    def env():
        if not os.path.exists(path):
            return None
        with open(path) as f:
            text = f.read()
        return text if "HIVE_STATE_DIR=" in text else None

    lines = wait_for(env, what="env.txt").splitlines()
    assert "HIVE_MODEL_BIN=/path/to/fake-claude" in lines
    assert "HTTPS_PROXY=http://proxy:3128/?a=b" in lines
    assert [ln for ln in lines if ln.startswith("FAKE_CLAUDE_SCRIPT=")] == [
        "FAKE_CLAUDE_SCRIPT=/later.json"]
    assert [ln for ln in lines if ln.startswith("LANG=")] == ["LANG=C.UTF-8"]
    assert "HIVE_LABEL=a1" in lines
    p = subprocess.run([BIN, "serve", "--check-config", "--state-dir", d.state,
                        "--payload-env", "A=1"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "payload-env = A=1\n" in p.stdout


@pytest.mark.parametrize("value,needle", [
    ("9X=1", "is not NAME=VALUE"),
    ("NOEQUALS", "is not NAME=VALUE"),
    ("A-B=1", "is not NAME=VALUE"),
    ("=1", "is not NAME=VALUE"),
    ("PATH=/evil", "cannot set PATH"),
    ("HIVE_SOCKET=/x", "cannot set HIVE_SOCKET"),
])
def test_payload_env_bad_name_refused_at_start(value, needle, tmpbase):
    p = subprocess.run([BIN, "serve", "--state-dir", os.path.join(tmpbase, "s"),
                        "--run-dir", os.path.join(tmpbase, "r"), "--backend", "process",
                        "--payload-env", value], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in p.stderr and "--payload-env" in p.stderr
    assert not os.path.exists(os.path.join(tmpbase, "s"))


def test_payload_env_is_in_help():
    p = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "--payload-env NAME=VALUE" in p.stdout
