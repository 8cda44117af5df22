"""Containers through host.sock and the CLI, on the real backends: process everywhere, nspawn
as root with systemd-nspawn.  The payload (--agent-command) is a small Python program that
reports what it sees into its /state and sleeps; SIGTERM makes it leave a mark and exit."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BIN, AgentClient, wait_for

PAYLOAD = r"""exec /usr/bin/python3 -c '
import json, os, signal, socket, sys, time
st = os.environ["HIVE_STATE_DIR"]
def term(*a):
    open(os.path.join(st, "terminated"), "a").write("%d\n" % os.getpid())
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
probe = {p: os.path.exists(p) for p in ("/work", "/var/lib/dpkg", "/etc/shadow")}
try:
    open("/usr/hive-write-test", "w")
    probe["usr_writable"] = True
except OSError:
    probe["usr_writable"] = False
try:
    open(os.path.join(st, "write-test"), "w").write("x")
    probe["state_writable"] = True
except OSError:
    probe["state_writable"] = False
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["HIVE_SOCKET"])
s.sendall(b"{\"cmd\":\"whoami\"}\n")
whoami = json.loads(s.makefile().readline())
info = {"pid": os.getpid(), "ppid": os.getppid(), "whoami": whoami, "probe": probe,
        "env": {k: v for k, v in os.environ.items() if k.startswith("HIVE_")}}
open(os.path.join(st, "payload.tmp"), "w").write(json.dumps(info))
os.rename(os.path.join(st, "payload.tmp"), os.path.join(st, "payload.json"))
while True:
    time.sleep(1)
' hive-test-payload"""


def nspawn_usable():
    return os.geteuid() == 0 and shutil.which("systemd-nspawn") is not None


BACKENDS = ["process",
            pytest.param("nspawn", marks=pytest.mark.skipif(
                not nspawn_usable(), reason="needs root and systemd-nspawn"))]


@pytest.fixture(params=BACKENDS)
def hv(request, make_daemon):
    d = make_daemon("--backend", request.param, "--agent-command", PAYLOAD,
                    "--crash-interval", "1", "--stop-grace", "3")
    d.backend = request.param
    yield d
    d.stop()
    assert not payload_pids(d), "a payload outlived the daemon's clean shutdown"


def payload_pids(d, name=None):
    """Host pids of this daemon's payloads (optionally of one agent)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{p}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if b"hive-test-payload" not in cmd or not cmd.startswith(b"/usr/bin/python3"):
            continue
        envd = dict(e.split(b"=", 1) for e in env if b"=" in e)
        if d.state.encode() not in envd.get(b"HIVE_STATE_DIR", b"") and \
                envd.get(b"HIVE_STATE_DIR") != b"/state":
            continue
        if d.backend == "nspawn" and not _under(int(p), d):
            continue
        if name and envd.get(b"HIVE_LABEL") != name.encode():
            continue
        out.append(int(p))
    return out


def _under(pid, d):
    """Whether pid runs in one of d's nspawn containers (an ancestor is the systemd-nspawn
    that binds d's state; it outlives a killed daemon)."""
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
        if b"systemd-nspawn" in cmd and d.state.encode() in cmd:
            return True
    return False


def state_dir(d, name):
    return os.path.join(d.state, "agents", name, "state")


def report(d, name, old=None, timeout=15):
    """The payload's report, waiting for one newer than the report old (each payload writes
    its own file by rename, so a new payload means a new inode)."""
    path = os.path.join(state_dir(d, name), "payload.json")

    def fresh():
        try:
            with open(path) as f:
                ino = os.fstat(f.fileno()).st_ino
                r = json.load(f)
        except (OSError, ValueError):
            return None
        r["_ino"] = ino
        return r if old is None or ino != old["_ino"] else None
    return wait_for(fresh, timeout=timeout, what=f"{name}'s payload report")


def row(d, name):
    for r in d.request({"cmd": "agent_status"})["agent_statuses"]:
        if r["name"] == name:
            return r
    return None


def spawn(d, name):
    p = d.cli("spawn", name, check=0)
    assert p.stdout == f"spawned {name}\n"
    return report(d, name)


def crashes(d, name):
    c = d.db()
    rows = c.execute("SELECT outcome FROM crashes WHERE agent = ? ORDER BY id", (name,)).fetchall()
    c.close()
    return [r[0] for r in rows]


def manager_events(d, kind):
    m = AgentClient(os.path.join(d.run, "manager", "mcp.sock"))
    msgs = m.req({"cmd": "recv", "max": 32})["messages"]
    m.close()
    out = []
    for msg in msgs:
        if msg["from"] == "hive":
            body = json.loads(msg["body"])
            if body.get("event") == kind:
                out.append(body)
    return out


def test_spawn_runs_the_payload_with_its_env_and_socket(hv):
    rep = spawn(hv, "a1")
    with open(os.path.join(hv.state, "agents", "a1", "port")) as f:
        port = int(f.read())
    assert 8100 <= port < 9000
    env = rep["env"]
    assert env["HIVE_LABEL"] == "a1" and env["HIVE_PORT"] == str(port)
    assert rep["whoami"]["ok"] is True and rep["whoami"]["name"] == "a1"
    assert rep["probe"]["state_writable"] is True
    assert os.path.exists(os.path.join(state_dir(hv, "a1"), "write-test"))
    r = row(hv, "a1")
    assert r["running"] is True and r["failed"] is False
    assert hv.request({"cmd": "list"})["agents"] == ["a1"]
    if hv.backend == "nspawn":
        assert rep["pid"] == 1, "the payload runs in its own PID namespace"
        assert env["HIVE_STATE_DIR"] == "/state"
        assert env["HIVE_SOCKET"] == "/run/hive/mcp.sock"
        assert rep["probe"]["usr_writable"] is False
        assert rep["probe"]["/work"] is False and rep["probe"]["/var/lib/dpkg"] is False
        assert rep["probe"]["/etc/shadow"] is False
    else:
        assert env["HIVE_STATE_DIR"] == state_dir(hv, "a1")
        assert env["HIVE_SOCKET"] == os.path.join(hv.run, "agents", "a1", "mcp.sock")
        assert "no isolation" in hv.cli("version", check=0).stdout
        assert "without isolation" in hv.cli("status", check=0).stderr


def test_stop_start_restart_are_not_crashes(hv):
    first = spawn(hv, "a1")
    hv.cli("stop", "a1", check=0)
    assert row(hv, "a1")["running"] is False
    assert not payload_pids(hv, "a1")
    with open(os.path.join(state_dir(hv, "a1"), "terminated")) as f:
        assert f.read().strip(), "the payload got SIGTERM before it went"
    hv.cli("start", "a1", check=0)
    second = report(hv, "a1", old=first)
    assert row(hv, "a1")["running"] is True
    hv.cli("restart", "a1", check=0)
    report(hv, "a1", old=second)
    assert row(hv, "a1")["running"] is True
    hv.cli("kill", "a1", check=0)
    assert row(hv, "a1")["running"] is False
    time.sleep(2.5)  # two crash-watch sweeps (--crash-interval 1)
    assert crashes(hv, "a1") == []
    assert manager_events(hv, "container_crash") == []
    assert row(hv, "a1")["running"] is False, "a stopped container stays stopped"
    assert hv.request({"cmd": "operations"})["operations"] == []


def kill_payload(d, name):
    pids = wait_for(lambda: payload_pids(d, name), what=f"{name}'s payload process")
    for p in pids:
        os.kill(p, signal.SIGKILL)
    return time.monotonic()


def test_kill_9_is_a_crash_reported_and_restarted(hv):
    rep = spawn(hv, "a1")
    old = payload_pids(hv, "a1")
    t0 = kill_payload(hv, "a1")
    wait_for(lambda: crashes(hv, "a1") == ["restarted"], timeout=2, what="the crash record")
    assert time.monotonic() - t0 < 2.0
    report(hv, "a1", old=rep)
    wait_for(lambda: payload_pids(hv, "a1") and payload_pids(hv, "a1") != old,
             what="the restarted payload")
    wait_for(lambda: row(hv, "a1")["running"], what="a1 running again")
    [ev] = manager_events(hv, "container_crash")
    assert ev["name"] == "a1" and ev["outcome"] == "restarted"


def test_fourth_crash_in_ten_minutes_marks_failed(hv):
    rep = spawn(hv, "a1")
    for i in range(3):
        kill_payload(hv, "a1")
        wait_for(lambda: len(crashes(hv, "a1")) == i + 1, what=f"crash {i + 1}")
        rep = report(hv, "a1", old=rep)
    kill_payload(hv, "a1")
    wait_for(lambda: row(hv, "a1")["failed"], what="a1 failed")
    r = row(hv, "a1")
    assert r["running"] is False
    assert crashes(hv, "a1") == ["restarted"] * 3 + ["failed"]
    time.sleep(2)
    assert not payload_pids(hv, "a1"), "a failed container is not restarted"
    c = hv.db()
    [(kept,)] = c.execute("SELECT failed_log FROM agents WHERE name = 'a1'").fetchall()
    c.close()
    assert kept is not None
    events = manager_events(hv, "container_crash")
    assert [e["outcome"] for e in events] == ["restarted"] * 3 + ["failed"]
    # The operator starts it again: failed is cleared.
    hv.cli("start", "a1", check=0)
    r = row(hv, "a1")
    assert r["running"] is True and r["failed"] is False


def test_scoped_stop_touches_only_the_named_agents(hv):
    spawn(hv, "a1")
    spawn(hv, "b2")
    b2 = payload_pids(hv, "b2")
    r = hv.request({"cmd": "stop", "scope": {"agent_names": ["a1"]}, "graceful": False})
    assert r == {"version": 1, "ok": True}
    assert row(hv, "a1")["running"] is False and row(hv, "b2")["running"] is True
    assert payload_pids(hv, "b2") == b2 and not payload_pids(hv, "a1")


def test_stop_needs_names_or_all(hv):
    spawn(hv, "a1")
    spawn(hv, "b2")
    p = hv.cli("stop", check=2)
    assert "--all" in p.stderr
    p = hv.cli("stop", "a1", "--all", check=2)
    assert row(hv, "a1")["running"] is True and row(hv, "b2")["running"] is True
    p = hv.cli("stop", "--all", check=0)
    assert p.stdout == "stopped the whole hive\n"
    assert not row(hv, "a1")["running"] and not row(hv, "b2")["running"]
    hv.cli("start", "--all", check=0)
    assert row(hv, "a1")["running"] and row(hv, "b2")["running"]


def test_destroy_keeps_a_tombstone_purge_removes_it(hv):
    spawn(hv, "a1")
    with open(os.path.join(hv.state, "agents", "a1", "port")) as f:
        port = f.read()
    hv.cli("destroy", "a1", check=0)
    assert hv.request({"cmd": "list"})["agents"] == []
    assert not payload_pids(hv, "a1")
    assert os.path.exists(os.path.join(state_dir(hv, "a1"), "payload.json")), "state kept"
    assert not os.path.exists(os.path.join(hv.run, "agents", "a1", "mcp.sock"))
    # Spawning the name again revives the kept state and the sticky port.
    os.unlink(os.path.join(state_dir(hv, "a1"), "payload.json"))
    spawn(hv, "a1")
    assert os.path.exists(os.path.join(state_dir(hv, "a1"), "write-test"))
    with open(os.path.join(hv.state, "agents", "a1", "port")) as f:
        assert f.read() == port
    hv.cli("destroy", "a1", "--purge", check=0)
    assert not os.path.exists(os.path.join(hv.state, "agents", "a1"))
    # purge_tombstone on a kept destroy
    spawn(hv, "b2")
    hv.cli("destroy", "b2", check=0)
    assert os.path.exists(os.path.join(hv.state, "agents", "b2"))
    p = hv.cli("purge-tombstone", "b2", check=0)
    assert not os.path.exists(os.path.join(hv.state, "agents", "b2"))
    p = hv.cli("purge-tombstone", "b2", check=1)
    assert "no kept state" in p.stderr and "ENOENT" in p.stderr


def test_daemon_restart_starts_wanted_agents_again(hv):
    spawn(hv, "a1")
    spawn(hv, "b2")
    hv.cli("stop", "b2", check=0)
    hv.stop()
    assert not payload_pids(hv)
    hv.start()
    wait_for(lambda: row(hv, "a1")["running"], what="a1 started at start-up")
    report(hv, "a1")
    assert row(hv, "b2")["running"] is False, "a stopped agent stays stopped"
    assert crashes(hv, "a1") == [], "a start at start-up is not a crash"


def test_daemon_killed_keeps_agents_running_and_adopts_them(hv):
    rep = spawn(hv, "a1")
    pids = payload_pids(hv, "a1")
    hv.stop(signal.SIGKILL)
    assert payload_pids(hv, "a1") == pids or hv.backend == "nspawn"
    hv.start()
    wait_for(lambda: row(hv, "a1")["running"], what="a1 adopted")
    time.sleep(1.5)
    assert crashes(hv, "a1") == []
    with open(os.path.join(state_dir(hv, "a1"), "payload.json")) as f:
        assert json.load(f)["pid"] == rep["pid"], "the payload was not restarted"
    # The adopted container is still watched: kill -9 is a crash.
    kill_payload(hv, "a1")
    wait_for(lambda: crashes(hv, "a1") == ["restarted"], what="crash of an adopted agent")


def test_manager_is_created_and_runs(make_daemon):
    d = make_daemon("--manager", "--agent-command", PAYLOAD)
    d.backend = "process"
    try:
        rep = report(d, "hm1nd")
        assert rep["env"]["HIVE_PORT"] == "8000"
        assert rep["whoami"]["role"] == "manager"
        assert "hm1nd" in d.request({"cmd": "list"})["agents"]
        wait_for(lambda: row(d, "hm1nd")["running"], what="hm1nd running")
        r = d.request({"cmd": "destroy", "name": "hm1nd"})
        assert r["ok"] is False and r["error_code"] == "EPERM" and "manager" in r["error"]
        assert row(d, "hm1nd")["running"] is True
    finally:
        d.stop()
    assert not payload_pids(d)


@pytest.mark.parametrize("name", ["A1", "-a", "a-", "a_b", "toolong123", "", "a/b", "..",
                                  "manager", "hm1nd", "operator", "self"])
def test_spawn_bad_names_refused_without_side_effects(daemon, name):
    r = daemon.request({"cmd": "spawn", "name": name})
    assert r["ok"] is False and r["error_code"] == "EINVAL"
    assert "a-z" in r["error"] or "reserved" in r["error"]
    assert not os.path.exists(os.path.join(daemon.state, "agents", name or "x", "state"))
    c = daemon.db()
    assert c.execute("SELECT COUNT(*) FROM agents").fetchone()[0] == 0
    c.close()


def test_lifecycle_bad_input(daemon):
    daemon.cli("spawn", "a1", check=0)
    r = daemon.request({"cmd": "spawn", "name": "a1"})
    assert r["ok"] is False and r["error_code"] == "EEXIST"
    c = daemon.db()
    assert c.execute("SELECT COUNT(*) FROM agents WHERE name = 'a1'").fetchone()[0] == 1
    c.close()
    for req in [{"cmd": "start", "scope": {"agent_names": ["ghost"]}},
                {"cmd": "stop", "scope": {"agent_names": ["a1", "ghost"]}},
                {"cmd": "restart", "name": "ghost"},
                {"cmd": "kill", "name": "ghost"},
                {"cmd": "destroy", "name": "ghost"}]:
        r = daemon.request(req)
        assert r["ok"] is False and r["error_code"] == "ENOENT", req
        assert "ghost" in r["error"]
    # The half-valid scope above touched nothing.
    assert row(daemon, "a1")["running"] is True
    r = daemon.request({"cmd": "destroy", "name": "hm1nd"})
    assert r["error_code"] == "EPERM"
    r = daemon.request({"cmd": "stop", "scope": {"agent_names": "a1"}})
    assert r["error_code"] == "EINVAL"
    r = daemon.request({"cmd": "stop"})
    assert r["ok"] is False and "scope" in r["error"]
    r = daemon.request({"cmd": "purge_tombstone", "name": "a1"})
    assert r["error_code"] == "EBUSY"
    p = daemon.cli("spawn", "Bad", check=1)
    assert "not a valid agent name" in p.stderr
    p = daemon.cli("destroy", check=2)


def test_spawn_with_parent_shows_in_status(daemon):
    daemon.cli("spawn", "a1", check=0)
    daemon.cli("spawn", "b2", "--parent", "a1", check=0)
    assert row(daemon, "b2")["parent"] == "a1" and "parent" not in row(daemon, "a1")
    r = daemon.request({"cmd": "spawn", "name": "c3", "parent": "ghost"})
    assert r["ok"] is False and r["error_code"] == "ENOENT"
    assert daemon.request({"cmd": "list"})["agents"] == ["a1", "b2"]


def test_missing_harness_is_a_clear_error(make_daemon, tmpbase):
    # A copy of hive-c0re alone in a directory, with a PATH that has no harness either.
    bindir = os.path.join(tmpbase, "bin")
    os.makedirs(bindir)
    shutil.copy(BIN, bindir)
    d = make_daemon("--harness", start=False, env=dict(os.environ, PATH="/usr/bin:/bin"))
    d.bin = os.path.join(bindir, "hive-c0re")
    d.start()
    r = d.request({"cmd": "spawn", "name": "a1"})
    assert r["ok"] is False and r["error_code"] == "ENOEXEC"
    assert "hive-ag3nt" in r["error"] and "--agent-command" in r["error"]
    assert d.request({"cmd": "list"})["agents"] == []
    assert not os.path.exists(os.path.join(d.state, "agents", "a1"))


def test_empty_agent_command_is_refused(tmpbase):
    p = subprocess.run([BIN, "serve", "--state-dir", tmpbase, "--agent-command", "",
                        "--check-config"], capture_output=True, text=True)
    assert p.returncode == 2 and "--agent-command" in p.stderr


def test_manager_container_verbs(make_daemon):
    d = make_daemon("--agent-command", "echo hello from $HIVE_LABEL; exec sleep 86400")
    d.backend = "process"
    d.cli("spawn", "a1", check=0)
    m = AgentClient(os.path.join(d.run, "manager", "mcp.sock"))
    assert m.req({"cmd": "kill", "name": "a1"}) == {"version": 1, "ok": True}
    assert row(d, "a1")["running"] is False
    assert m.req({"cmd": "start", "name": "a1"})["ok"] is True
    assert row(d, "a1")["running"] is True
    assert m.req({"cmd": "restart", "name": "a1"})["ok"] is True
    assert m.req({"cmd": "update", "name": "a1"})["ok"] is True
    assert row(d, "a1")["running"] is True
    r = m.req({"cmd": "get_logs", "agent": "a1", "lines": 5})
    assert r["ok"] is True and "hello from a1" in r["logs"]
    for req, code in [({"cmd": "kill", "name": "hm1nd"}, "EPERM"),
                      ({"cmd": "restart", "name": "manager"}, "EPERM"),
                      ({"cmd": "start", "name": "ghost"}, "ENOENT"),
                      ({"cmd": "get_logs", "agent": "a1", "lines": 0}, "EINVAL"),
                      ({"cmd": "get_logs", "agent": "a1", "lines": 501}, "EINVAL")]:
        r = m.req(req)
        assert r["ok"] is False and r["error_code"] == code, (req, r)
    m.close()
    a = AgentClient(os.path.join(d.run, "agents", "a1", "mcp.sock"))
    r = a.req({"cmd": "kill", "name": "a1"})
    assert r["ok"] is False and r["error_code"] == "EACCES"
    a.close()
    assert row(d, "a1")["running"] is True
