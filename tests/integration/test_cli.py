"""The CLI: every verb against the real daemon, --json, and its distinct failures."""

import json
import os
import socket
import subprocess

import pytest

from conftest import BIN, fixture_bytes


def test_list_human_and_json(daemon):
    p = daemon.cli("list", check=0)
    assert p.stdout == "" and "no agents" in p.stderr
    daemon.add_agent("b2")
    daemon.add_agent("a1")
    assert daemon.cli("list", check=0).stdout == "a1\nb2\n"
    p = daemon.cli("--json", "list", check=0)
    assert p.stdout == '{"version":1,"ok":true,"agents":["a1","b2"]}\n'
    assert daemon.cli("list", "--json", check=0).stdout == p.stdout


def test_status_human(daemon):
    daemon.add_agent("busy", status="running", status_text="reviewing", status_set_at=1,
                     active_model="claude-opus-4-6", deployed_sha="cafebabe0001ffff")
    daemon.add_agent("off", paused=1)
    out = daemon.cli("status", check=0).stdout.splitlines()
    assert out[0].split() == ["NAME", "STATE", "DEPLOYED", "MODEL", "STATUS"]
    assert out[1].split() == ["busy", "running", "cafebabe0001", "claude-opus-4-6", "reviewing"]
    assert out[2].split()[:2] == ["off", "paused"]


def test_status_json_is_raw_response(daemon):
    daemon.add_agent("a1")
    p = daemon.cli("--json", "status", check=0)
    assert json.loads(p.stdout)["agent_statuses"][0]["name"] == "a1"


def test_urls(make_daemon):
    d = make_daemon("--domain", "hive.local", "--forge-url", "https://forge.hive.local/",
                    "--matrix-url", "https://matrix.hive.local/")
    assert d.cli("--json", "urls", check=0).stdout.encode() == fixture_bytes("urls.json")
    out = d.cli("urls", check=0).stdout
    assert "home    https://hive.local/" in out and "domain  hive.local" in out


def test_urls_unset(daemon):
    p = daemon.cli("urls", check=0)
    assert "no URLs configured" in p.stderr


def test_version(daemon):
    out = daemon.cli("version", check=0).stdout
    assert "client: hive-c0re" in out and "daemon: hive-c0re" in out and "protocol 1" in out


def test_pause_unpause(daemon):
    daemon.add_agent("a1")
    assert daemon.cli("pause", "a1", check=0).stdout == "a1 paused\n"
    assert os.path.exists(os.path.join(daemon.state, "agents/a1/state/hyperhive-paused"))
    assert daemon.cli("unpause", "a1", check=0).stdout == "a1 unpaused\n"
    assert not os.path.exists(os.path.join(daemon.state, "agents/a1/state/hyperhive-paused"))


def test_refusal_exit_code_and_message(daemon):
    p = daemon.cli("pause", "ghost", check=1)
    assert p.stderr == 'hive-c0re: agent "ghost" is not managed by this hive (ENOENT)\n'
    p = daemon.cli("--json", "pause", "ghost", check=1)
    assert json.loads(p.stdout)["error_code"] == "ENOENT"


def test_usage_errors(daemon):
    assert "usage: hive-c0re pause NAME" in daemon.cli("pause", check=2).stderr
    assert "usage" in daemon.cli("list", "extra", check=2).stderr
    assert 'unknown verb "teleport"' in daemon.cli("teleport", check=2).stderr
    assert "unknown option" in daemon.cli("list", "--frobnicate", check=2).stderr
    p = subprocess.run([BIN], capture_output=True, text=True)
    assert p.returncode == 2 and "Usage:" in p.stderr


def test_help_lists_verbs():
    p = subprocess.run([BIN, "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    for verb in ("serve", "list", "status", "urls", "version", "pause", "unpause"):
        assert f"  {verb} " in p.stdout
    p = subprocess.run([BIN, "help", "pause"], capture_output=True, text=True)
    assert p.returncode == 0 and "hive-c0re pause NAME" in p.stdout


def test_missing_socket(tmpbase):
    sock = os.path.join(tmpbase, "none.sock")
    p = subprocess.run([BIN, "--socket", sock, "list"], capture_output=True, text=True)
    assert p.returncode == 3
    assert "not running" in p.stderr and sock in p.stderr


def test_socket_from_environment(daemon):
    env = dict(os.environ, HIVE_SOCKET=daemon.sock)
    p = subprocess.run([BIN, "list"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr


def test_stale_socket(tmpbase):
    sock = os.path.join(tmpbase, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock)
    s.close()
    p = subprocess.run([BIN, "--socket", sock, "list"], capture_output=True, text=True)
    assert p.returncode == 3 and "nothing is listening" in p.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_permission_denied(daemon):
    # As an unprivileged user the 0660 root-owned socket in a 0751 dir cannot be opened.
    os.chmod(daemon.base, 0o755)
    os.chmod(os.path.dirname(daemon.base), 0o755)
    p = daemon.cli("list", user="nobody")
    assert p.returncode == 4, (p.stdout, p.stderr)
    assert "hive-admin" in p.stderr


def test_hung_daemon_times_out(tmpbase):
    sock = os.path.join(tmpbase, "hung.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock)
    s.listen(1)  # accepts (in the backlog) but never answers
    try:
        p = subprocess.run([BIN, "--socket", sock, "--timeout", "1", "list"],
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 3 and "did not answer within 1 s" in p.stderr
    finally:
        s.close()
