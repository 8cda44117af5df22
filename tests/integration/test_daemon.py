"""Daemon lifecycle: single instance, stale sockets, signals, permissions, readiness, config."""

import os
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile

import pytest

from conftest import BIN, can_connect, raw, wait_for


def test_run_dir_and_socket_modes(daemon):
    assert stat.S_IMODE(os.stat(daemon.run).st_mode) == 0o751
    st = os.stat(daemon.sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660


def test_database_is_wal_and_versioned(daemon):
    c = sqlite3.connect(os.path.join(daemon.state, "hive.sqlite"))
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA user_version").fetchone()[0] >= 1
    cols = [r[1] for r in c.execute("PRAGMA table_info(agents)")]
    for col in ("name", "role", "created_at", "destroyed_at", "paused", "parent", "status_text",
                "status_set_at", "active_model", "port", "deployed_sha"):
        assert col in cols
    c.close()
    # The WAL is pre-written at start-up to the length a steady load gives it (16 384 frames
    # and a quarter of 1 024-byte pages): its flushes then never extend the file.
    assert os.path.getsize(os.path.join(daemon.state, "hive.sqlite-wal")) == 32 + 20480 * 1048


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(daemon, sig):
    assert daemon.stop(sig) == 0
    assert not os.path.exists(daemon.sock)
    assert "shutting down" in daemon.log_text()


def test_second_daemon_refused(make_daemon):
    first = make_daemon()
    second = make_daemon(start=False)
    second.state, second.run, second.sock = first.state, first.run, first.sock
    second.start(wait=False)
    assert second.proc.wait(timeout=10) != 0
    assert "already serving" in second.log_text()
    assert str(first.proc.pid) in second.log_text()
    assert first.request({"cmd": "list"})["ok"] is True


def test_foreign_listener_refused(make_daemon):
    d = make_daemon(start=False)
    os.makedirs(d.run)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(d.sock)
    s.listen(1)
    try:
        d.start(wait=False)
        assert d.proc.wait(timeout=10) != 0
        assert "already listening" in d.log_text()
        assert os.path.exists(d.sock)
    finally:
        s.close()


def test_stale_socket_removed(make_daemon):
    d = make_daemon(start=False)
    os.makedirs(d.run)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(d.sock)
    s.close()  # a socket file nobody listens on
    d.start()
    assert "stale socket" in d.log_text()
    assert d.request({"cmd": "list"})["ok"] is True


def test_restart_keeps_state(make_daemon):
    d = make_daemon()
    d.add_agent("keep")
    assert d.request({"cmd": "set_paused", "name": "keep", "paused": True})["ok"]
    assert d.stop() == 0
    d.start()
    row = d.request({"cmd": "agent_status"})["agent_statuses"][0]
    assert row["name"] == "keep" and row["paused"] is True


def test_newer_schema_refused(make_daemon):
    d = make_daemon(start=False)
    os.makedirs(d.state)
    c = sqlite3.connect(os.path.join(d.state, "hive.sqlite"))
    c.execute("PRAGMA user_version = 999")
    c.close()
    d.start(wait=False)
    assert d.proc.wait(timeout=10) != 0
    assert "newer than this hive-c0re understands" in d.log_text()
    assert not os.path.exists(d.sock)


def test_ready_notification(make_daemon, tmpbase):
    path = os.path.join(tmpbase, "notify")
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(path)
    n.settimeout(10)
    try:
        d = make_daemon(env=dict(os.environ, NOTIFY_SOCKET=path))
        msg = n.recv(4096).decode()
        assert "READY=1" in msg
        assert can_connect(d.sock)  # ready means serving
        d.stop()
        assert "STOPPING=1" in n.recv(4096).decode()
    finally:
        n.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_peer_credentials_refused(daemon):
    """A user outside root/hive-admin is refused even if the file mode would let it in."""
    os.chmod(daemon.sock, 0o666)
    os.chmod(daemon.run, 0o755)
    os.chmod(daemon.base, 0o755)
    os.chmod(os.path.dirname(daemon.base), 0o755)
    p = daemon.cli("list", user="nobody")
    assert p.returncode == 4, (p.stdout, p.stderr)
    assert "permission denied" in p.stderr
    assert "refused a connection from uid" in daemon.log_text()


def test_check_config(tmpbase):
    p = subprocess.run([BIN, "serve", "--dev", "--check-config"], capture_output=True, text=True,
                       cwd=tmpbase)
    assert p.returncode == 0, p.stderr
    assert f"state-dir = {os.path.realpath(tmpbase)}/.hive" in p.stdout
    assert f"run-dir = {os.path.realpath(tmpbase)}/.hive/run" in p.stdout
    assert "dashboard = 127.0.0.1:7000" in p.stdout
    assert not os.path.exists(os.path.join(tmpbase, ".hive"))


def test_serve_help_lists_every_option():
    p = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    for opt in ("--dev", "--state-dir", "--run-dir", "--backend", "--dashboard", "--log-level",
                "--check-config", "--domain"):
        assert opt in p.stdout


@pytest.mark.parametrize("args,needle", [
    (["--backend", "docker"], "is not one of"),
    (["--log-level", "loud"], "is not one of"),
    (["--dashboard", "nope"], "HOST:PORT"),
    (["--max-clients", "0"], "whole number"),
    (["--home-url", "ftp://x"], "http"),
    (["--bogus"], "unknown option"),
    (["--state-dir"], "needs a value"),
    (["--dev=yes"], "takes no value"),
])
def test_serve_bad_options(args, needle, tmpbase):
    p = subprocess.run([BIN, "serve", "--dev", *args], capture_output=True, text=True,
                       cwd=tmpbase, timeout=10)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in p.stderr
    assert not os.path.exists(os.path.join(tmpbase, ".hive"))


def test_dev_mode_uses_dot_hive(tmpbase):
    p = subprocess.Popen([BIN, "serve", "--dev"], cwd=tmpbase, stderr=subprocess.PIPE)
    sock = os.path.join(tmpbase, ".hive", "run", "host.sock")
    try:
        wait_for(lambda: can_connect(sock), what="dev socket")
        # The manager is ensured at start-up.
        assert raw(sock, b'{"cmd":"list"}\n') == b'{"version":1,"ok":true,"agents":["hm1nd"]}\n'
        assert os.path.exists(os.path.join(tmpbase, ".hive", "hive.sqlite"))
        c = subprocess.run([BIN, "--dev", "list"], cwd=tmpbase, capture_output=True, text=True)
        assert c.returncode == 0 and c.stdout == "hm1nd\n"
    finally:
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=10)[1].decode()
    assert p.returncode == 0
    assert "backend" in err  # the choice and why are logged
    assert not os.path.exists(sock)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a group needs root")
def test_socket_group_is_hive_admin(make_daemon):
    import grp
    created = False
    try:
        grp.getgrnam("hive-admin")
    except KeyError:
        subprocess.run(["groupadd", "--system", "hive-admin"], check=True)
        created = True
    try:
        gid = grp.getgrnam("hive-admin").gr_gid
        d = make_daemon()
        st = os.stat(d.sock)
        assert st.st_gid == gid and stat.S_IMODE(st.st_mode) == 0o660
        d.stop()
    finally:
        if created:
            subprocess.run(["groupdel", "hive-admin"], check=True)
