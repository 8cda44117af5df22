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

from conftest import BIN, wait_for


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


def open_stream(d):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(d.sock)
    s.sendall(b'{"cmd":"subscribe_agent_status"}\n')
    f = s.makefile("rb")
    assert f.readline() == b'{"version":1,"ok":true}\n'
    return s, f


def read_row(f):
    r = json.loads(f.readline())
    assert len(r["agent_statuses"]) == 1
    return r["agent_statuses"][0]


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
