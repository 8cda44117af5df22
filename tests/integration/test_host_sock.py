"""host.sock v1 through raw JSON lines: every verb, envelope rules, generic checks."""

import json
import os
import select
import socket
import time

from conftest import fixture_bytes, raw, wait_for


def test_list_empty_exact_bytes(daemon):
    assert raw(daemon.sock, b'{"cmd":"list"}\n') == b'{"version":1,"ok":true,"agents":[]}\n'


def test_list_sorted_live_agents_only(daemon):
    daemon.add_agent("zeta")
    daemon.add_agent("alpha")
    daemon.add_agent("gone", destroyed_at=int(time.time()))
    assert daemon.request({"cmd": "list"}) == {"version": 1, "ok": True,
                                               "agents": ["alpha", "zeta"]}


def test_agent_status_keys_order_and_omission(make_daemon):
    d = make_daemon("--domain", "hive.local")
    d.add_agent("busy", status="running", status_text="running the P1 gate",
                status_set_at=1788784800, active_model="claude-opus-4-6",
                deployed_sha="1bfaf24abcdef0123456789abcdef0123456789a")
    d.add_agent("off", status="stopped", status_text="stale text", status_set_at=1788784800,
                paused=1, parent="busy")
    d.add_agent("wedged", status="failed")
    r = d.request({"cmd": "agent_status"})
    line = d.last_raw.decode()
    assert line.startswith('{"version":1,"ok":true,"agent_statuses":[')
    rows = r["agent_statuses"]
    assert [row["name"] for row in rows] == ["busy", "off", "wedged"]
    busy, off, wedged = rows
    assert list(busy) == ["name", "running", "failed", "needs_update", "needs_login",
                          "deployed_sha", "pending_reminders", "paused", "active_model",
                          "status_text", "status_set_at", "url"]
    assert busy["deployed_sha"] == "1bfaf24abcde"
    assert busy["status_set_at"] == "2026-09-07T12:40:00Z"
    assert busy["url"] == "https://hive.local/agent/busy/"
    # A stopped container's status text is stale and hidden.
    assert list(off) == ["name", "running", "failed", "needs_update", "needs_login",
                         "pending_reminders", "paused", "parent", "url"]
    assert off["paused"] is True and off["running"] is False and off["parent"] == "busy"
    assert wedged["failed"] is True and wedged["running"] is False


def test_agent_status_without_domain_has_no_url(daemon):
    daemon.add_agent("a1")
    row = daemon.request({"cmd": "agent_status"})["agent_statuses"][0]
    assert "url" not in row
    assert daemon.last_raw == (b'{"version":1,"ok":true,"agent_statuses":[{"name":"a1",'
                               b'"running":false,"failed":false,"needs_update":false,'
                               b'"needs_login":false,"pending_reminders":0,"paused":false}]}\n')


def test_urls_unset_is_empty_object(daemon):
    assert raw(daemon.sock, b'{"cmd":"urls"}\n') == b'{"version":1,"ok":true,"urls":{}}\n'


def test_urls_match_fixture_bytes(make_daemon):
    d = make_daemon("--domain", "hive.local", "--forge-url", "https://forge.hive.local/",
                    "--matrix-url", "https://matrix.hive.local/")
    assert raw(d.sock, b'{"cmd":"urls"}\n') == fixture_bytes("urls.json")


def test_version(daemon):
    r = daemon.request({"cmd": "version"})
    assert r["ok"] is True and r["protocol_version"] == 1
    assert r["daemon_version"]
    assert r["backend"] in r["backends"]
    assert "process" in r["backends"]
    assert list(r)[:2] == ["version", "ok"]


def test_unknown_verb_names_it(daemon):
    r = daemon.request({"cmd": "teleport"})
    assert r["ok"] is False and r["error_code"] == "EOPNOTSUPP"
    assert '"teleport"' in r["error"] and "list" in r["error"]
    assert list(r) == ["version", "ok", "error", "error_code"]


def test_missing_cmd(daemon):
    r = daemon.request({"name": "x"})
    assert r["ok"] is False and r["error_code"] == "EINVAL" and '"cmd"' in r["error"]


def test_cmd_not_a_string(daemon):
    r = daemon.request({"cmd": 5})
    assert r["ok"] is False and r["error_code"] == "EINVAL"


def test_invalid_json(daemon):
    r = daemon.request(b'{"cmd": "list"')
    assert r["ok"] is False and r["error_code"] == "EBADMSG" and "JSON" in r["error"]


def test_non_object_json(daemon):
    for line in (b"[1,2]", b'"list"', b"42", b"null"):
        r = daemon.request(line)
        assert r["ok"] is False and r["error_code"] == "EBADMSG", line


def test_newer_request_version_refused(daemon):
    r = daemon.request({"cmd": "list", "version": 2})
    assert r["ok"] is False and r["error_code"] == "EPROTONOSUPPORT"
    assert daemon.request({"cmd": "list", "version": 1})["ok"] is True


def test_unknown_fields_are_ignored(daemon):
    assert daemon.request({"cmd": "list", "future": {"x": 1}})["ok"] is True


def test_missing_and_mistyped_fields(daemon):
    daemon.add_agent("a1")
    cases = [
        ({"cmd": "set_paused", "paused": True}, '"name"'),
        ({"cmd": "set_paused", "name": "a1"}, '"paused"'),
        ({"cmd": "set_paused", "name": 3, "paused": True}, "must be a string"),
        ({"cmd": "set_paused", "name": "a1", "paused": "yes"}, "must be a boolean"),
        ({"cmd": "set_paused", "name": "a1", "paused": None}, "must be a boolean"),
    ]
    for req, needle in cases:
        r = daemon.request(req)
        assert r["ok"] is False and r["error_code"] == "EINVAL", req
        assert needle in r["error"], (req, r)
    assert daemon.request({"cmd": "agent_status"})["agent_statuses"][0]["paused"] is False


def test_set_paused(daemon):
    daemon.add_agent("a1")
    marker = os.path.join(daemon.state, "agents", "a1", "state", "hyperhive-paused")
    for _ in range(2):  # idempotent
        assert raw(daemon.sock, b'{"cmd":"set_paused","name":"a1","paused":true}\n') == \
            b'{"version":1,"ok":true}\n'
        assert os.path.exists(marker)
        assert daemon.request({"cmd": "agent_status"})["agent_statuses"][0]["paused"] is True
    for _ in range(2):
        assert daemon.request({"cmd": "set_paused", "name": "a1", "paused": False})["ok"]
        assert not os.path.exists(marker)
        assert daemon.request({"cmd": "agent_status"})["agent_statuses"][0]["paused"] is False


def test_set_paused_unknown_agent_matches_fixture(daemon):
    r = daemon.request({"cmd": "set_paused", "name": "ghost", "paused": True})
    expected = json.loads(fixture_bytes("error.json"))
    assert r["error"] == expected["error"] and r["error_code"] == "ENOENT"
    assert not os.path.exists(os.path.join(daemon.state, "agents", "ghost"))


def test_set_paused_invalid_name_has_no_side_effect(daemon):
    for name in ("../etc", "Upper", "-lead", "trail-", "waytoolongname", ""):
        r = daemon.request({"cmd": "set_paused", "name": name, "paused": True})
        assert r["ok"] is False and r["error_code"] == "EINVAL", name
        assert "not a valid agent name" in r["error"]
    assert not os.path.exists(os.path.join(daemon.state, "agents"))


def test_one_request_per_connection(daemon):
    out = raw(daemon.sock, b'{"cmd":"list"}\n{"cmd":"urls"}\n')
    assert out == b'{"version":1,"ok":true,"agents":[]}\n'


def test_oversize_line_closes_connection_daemon_keeps_serving(daemon):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(daemon.sock)
    big = b'{"cmd":"list","pad":"' + b"x" * (2 * 1024 * 1024)
    try:
        s.sendall(big)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon may close before we finish writing
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except ConnectionResetError:
        pass
    s.close()
    if data:  # the refusal is written before the close, unless the reset beat it
        r = json.loads(data)
        assert r["ok"] is False and r["error_code"] == "EMSGSIZE"
    assert "over 1048576 bytes" in daemon.log_text()
    assert daemon.request({"cmd": "list"})["ok"] is True


def test_line_at_limit_is_accepted(daemon):
    prefix = b'{"cmd":"list","pad":"'
    pad = 1024 * 1024 - len(prefix) - 2
    line = prefix + b"x" * pad + b'"}'
    assert len(line) == 1024 * 1024
    assert daemon.request(line)["ok"] is True


def test_eof_mid_line(daemon):
    r = json.loads(raw(daemon.sock, b'{"cmd":"list"}'))
    assert r["ok"] is False and r["error_code"] == "EBADMSG" and "newline" in r["error"]


def test_200_concurrent_connections(daemon):
    daemon.add_agent("a1")
    socks = []
    for _ in range(200):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(daemon.sock)
        socks.append(s)
    for i, s in enumerate(socks):
        s.sendall(b'{"cmd":"list"}\n' if i % 2 else b'{"cmd":"agent_status"}\n')
    for i, s in enumerate(socks):
        data = b""
        while not data.endswith(b"\n"):
            b = s.recv(65536)
            assert b, f"connection {i} closed without an answer"
            data += b
        r = json.loads(data)
        assert r["ok"] is True
        assert ("agents" if i % 2 else "agent_statuses") in r
        assert s.recv(1) == b""  # closed after the answer
        s.close()


def test_max_clients_refuses_extra_connection(make_daemon):
    d = make_daemon("--max-clients", "3")

    def silent(s):
        # Open, accepted and not refused: nothing to read within a moment.
        r, _, _ = select.select([s], [], [], 0.3)
        return not r

    held = []
    deadline = time.monotonic() + 10
    while len(held) < 3:  # the start-up probe may still hold a slot for a moment
        assert time.monotonic() < deadline, "could not hold three connections"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.sock)
        held.append(s)
        held = [h for h in held if silent(h) or h.close()]
    r = json.loads(raw(d.sock, b'{"cmd":"list"}\n'))
    assert r["ok"] is False and r["error_code"] == "EUSERS", d.log_text()
    for s in held:
        s.close()
    wait_for(lambda: d.request({"cmd": "list"})["ok"], what="a free slot")


def test_idle_connection_is_closed(make_daemon):
    d = make_daemon("--idle-timeout", "1")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(d.sock)
    t0 = time.monotonic()
    assert s.recv(1) == b""
    assert time.monotonic() - t0 < 5
    s.close()
