"""The broker through the real daemon: agent sockets, long-poll, leases, durability."""

import json
import os
import signal
import threading
import time

import pytest

from conftest import AgentClient, wait_for


def test_agent_sockets_exist_with_modes(hive):
    d = hive()
    for name in ("a1", "b2", "c3", "manager"):
        path = d.agent_sock(name)
        assert os.path.exists(path)
        assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"


def test_two_agents_exchange_messages(hive):
    d = hive()
    a, b = d.connect("a1"), d.connect("b2")
    r = a.req({"cmd": "send", "to": "b2", "body": "hello b2"})
    assert r["ok"] is True and r["id"] > 0
    got = b.req({"cmd": "recv"})
    assert got["ok"] is True
    [m] = got["messages"]
    assert (m["from"], m["to"], m["body"], m["id"]) == ("a1", "b2", "hello b2", r["id"])
    assert m["sent_at"].endswith("Z") and "T" in m["sent_at"]
    reply = b.req({"cmd": "send", "to": "a1", "body": "hi a1", "in_reply_to": m["id"]})
    [back] = a.req({"cmd": "recv"})["messages"]
    assert back["in_reply_to"] == m["id"] and back["from"] == "b2" and back["id"] == reply["id"]
    assert b.req({"cmd": "ack", "ids": [m["id"]]})["acked"] == 1
    assert b.req({"cmd": "ack", "ids": [m["id"]]})["acked"] == 0  # idempotent
    assert b.req({"cmd": "status"}) == {"version": 1, "ok": True, "pending": 0, "leased": 0}


def test_identity_cannot_be_spoofed(hive):
    d = hive()
    a, b = d.connect("a1"), d.connect("b2")
    assert a.req({"cmd": "send", "to": "b2", "body": "x", "from": "c3"})["ok"] is True
    [m] = b.req({"cmd": "recv"})["messages"]
    assert m["from"] == "a1"
    assert a.req({"cmd": "whoami"})["name"] == "a1"
    assert d.connect("manager").req({"cmd": "whoami"})["role"] == "manager"


def test_parked_recv_wakes_within_50ms(hive):
    d = hive()
    a, b = d.connect("a1"), d.connect("b2")
    result = {}

    def park():
        result["r"] = b.req({"cmd": "recv", "wait_seconds": 10})
        result["t"] = time.monotonic()

    t = threading.Thread(target=park)
    t.start()
    time.sleep(0.3)  # let the recv park (nothing to poll for: it is a long-poll by design)
    assert "r" not in result
    t0 = time.monotonic()
    assert a.req({"cmd": "send", "to": "b2", "body": "wake up"})["ok"]
    t.join(5)
    assert result["r"]["messages"][0]["body"] == "wake up"
    assert result["t"] - t0 < 0.05, f"woke after {result['t'] - t0:.3f}s"


def test_recv_wait_expires_empty(hive):
    d = hive()
    b = d.connect("b2")
    t0 = time.monotonic()
    assert b.req({"cmd": "recv", "wait_seconds": 1}) == {"version": 1, "ok": True,
                                                          "messages": []}
    assert 0.9 < time.monotonic() - t0 < 2.0
    assert b.req({"cmd": "recv"})["messages"] == []  # no wait: at once


def test_requests_on_one_connection_answer_in_order(hive):
    d = hive()
    a = d.connect("a1")
    a.send_line({"cmd": "whoami"})
    a.send_line({"cmd": "send", "to": "b2", "body": "1"})
    a.send_line({"cmd": "status"})
    assert a.read()["name"] == "a1"
    assert "id" in a.read()
    assert "pending" in a.read()


def test_recv_acks_the_last_messages(hive):
    d = hive()
    a, b = d.connect("a1"), d.connect("b2")
    m1 = a.req({"cmd": "send", "to": "b2", "body": "1"})["id"]
    assert [m["id"] for m in b.req({"cmd": "recv"})["messages"]] == [m1]
    m2 = a.req({"cmd": "send", "to": "b2", "body": "2"})["id"]
    r = b.req({"cmd": "recv", "ack": [m1], "wait_seconds": 5})
    assert r["acked"] == 1 and [m["id"] for m in r["messages"]] == [m2]
    assert b.req({"cmd": "status"})["pending"] == 1  # m1 done, m2 leased

    # Parked: the ack happens at once, the answer (with "acked") when a message comes.
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=b.req({"cmd": "recv", "ack": [m2], "wait_seconds": 10})))
    t.start()
    wait_for(lambda: _pending(d, "b2") == 0, timeout=5)  # parked, m2 acked
    m3 = a.req({"cmd": "send", "to": "b2", "body": "3"})["id"]
    t.join(10)
    assert result["r"]["acked"] == 1 and [m["id"] for m in result["r"]["messages"]] == [m3]

    # Time up: "acked" and no messages; acking again counts nothing.
    r = b.req({"cmd": "recv", "ack": [m3, m2], "wait_seconds": 1})
    assert r["acked"] == 1 and r["messages"] == []
    assert b.req({"cmd": "status"}) == {"version": 1, "ok": True, "pending": 0, "leased": 0}


def _pending(d, name):
    """Unacknowledged messages of an agent, read on a fresh connection of its own."""
    return d.connect(name).req({"cmd": "status"})["pending"]


def test_recv_with_a_bad_ack_acks_nothing(hive):
    d = hive()
    a, b = d.connect("a1"), d.connect("b2")
    m = a.req({"cmd": "send", "to": "b2", "body": "1"})["id"]
    assert len(b.req({"cmd": "recv"})["messages"]) == 1
    r = b.req({"cmd": "recv", "ack": [m, "x"]})
    assert r["ok"] is False and r["error_code"] == "EINVAL" and '"ack"' in r["error"], r
    assert b.req({"cmd": "status"})["leased"] == 1  # still leased, not acked


def test_broadcast(hive):
    d = hive()
    a = d.connect("a1")
    r = a.req({"cmd": "send", "to": "*", "body": "all hands"})
    assert len(r["ids"]) == 3  # b2, c3, manager
    for name in ("b2", "c3", "manager"):
        [m] = d.connect(name).req({"cmd": "recv"})["messages"]
        assert m["body"] == "all hands" and m["from"] == "a1" and m["to"] == name
    assert a.req({"cmd": "recv"})["messages"] == []


def test_operator_inbox_and_send(hive):
    d = hive()
    a = d.connect("a1")
    assert a.req({"cmd": "send", "to": "operator", "body": "need a decision"})["ok"]
    r = d.request({"cmd": "operator_inbox"})
    [m] = r["messages"]
    assert m["from"] == "a1" and m["body"] == "need a decision"
    p = d.cli("inbox", check=0)
    assert "a1: need a decision" in p.stdout
    d.cli("ack", str(m["id"]), check=0)
    assert d.request({"cmd": "operator_inbox"})["messages"] == []

    # The operator writes to an agent, by raw JSON and through the CLI.
    assert d.request({"cmd": "send", "to": "a1", "body": "go ahead"})["ok"]
    assert d.cli("send", "a1", "and hurry", check=0).stdout.startswith("sent as message")
    msgs = a.req({"cmd": "recv", "max": 5})["messages"]
    assert [(m["from"], m["body"]) for m in msgs] == [("operator", "go ahead"),
                                                      ("operator", "and hurry")]


def test_cli_send_from_stdin(hive):
    import subprocess
    from conftest import BIN
    d = hive()
    p = subprocess.run([BIN, "--socket", d.sock, "send", "b2", "-"], input="multi\nline\n",
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    [m] = d.connect("b2").req({"cmd": "recv"})["messages"]
    assert m["body"] == "multi\nline\n"


def test_lease_expires_and_is_redelivered(hive):
    d = hive("--lease-seconds", "1")
    a, b = d.connect("a1"), d.connect("b2")
    sent = a.req({"cmd": "send", "to": "b2", "body": "process me"})["id"]
    [first] = b.req({"cmd": "recv"})["messages"]
    assert first["id"] == sent
    assert b.req({"cmd": "recv"})["messages"] == []  # leased: hidden
    assert b.req({"cmd": "status"})["leased"] == 1
    # A parked recv gets it again once the lease runs out.
    t0 = time.monotonic()
    [again] = b.req({"cmd": "recv", "wait_seconds": 10})["messages"]
    assert again["id"] == sent and 0.5 < time.monotonic() - t0 < 3.5
    assert b.req({"cmd": "ack", "ids": [sent]})["acked"] == 1


def test_dropped_long_poll_loses_nothing(hive):
    d = hive()
    a = d.connect("a1")
    b = d.connect("b2")
    b.send_line({"cmd": "recv", "wait_seconds": 30})
    time.sleep(0.2)  # parked
    b.close()  # the harness dies while waiting
    sent = a.req({"cmd": "send", "to": "b2", "body": "are you there"})["id"]
    b2 = d.connect("b2")
    [m] = b2.req({"cmd": "recv", "wait_seconds": 5})["messages"]
    assert m["id"] == sent


def test_restart_keeps_queued_and_reoffers_leased(hive):
    d = hive()
    a, b = d.connect("a1"), d.connect("b2")
    ids = [a.req({"cmd": "send", "to": "b2", "body": f"m{i}"})["id"] for i in range(3)]
    [leased] = b.req({"cmd": "recv"})["messages"]
    assert leased["id"] == ids[0]
    a.close()
    b.close()
    assert d.stop() == 0
    d.start()
    msgs = d.connect("b2").req({"cmd": "recv", "max": 10})["messages"]
    assert [m["id"] for m in msgs] == ids
    assert "offering" in d.log_text()


def test_kill_9_mid_traffic_loses_no_answered_message(hive):
    d = hive()
    answered = []
    stop = threading.Event()

    def sender():
        c = AgentClient(d.agent_sock("a1"))
        try:
            i = 0
            while not stop.is_set():
                r = c.req({"cmd": "send", "to": "b2", "body": f"n{i}"})
                if r.get("ok"):
                    answered.append(r["id"])
                i += 1
        except (OSError, AssertionError, ValueError):
            pass  # the daemon died under us

    t = threading.Thread(target=sender)
    t.start()
    wait_for(lambda: len(answered) >= 200, what="200 answered sends")
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    stop.set()
    t.join(10)
    d.start()
    b = d.connect("b2")
    got = set()
    while True:
        msgs = b.req({"cmd": "recv", "max": 32})["messages"]
        if not msgs:
            break
        got.update(m["id"] for m in msgs)
        b.req({"cmd": "ack", "ids": [m["id"] for m in msgs]})
    missing = set(answered) - got
    assert not missing, f"{len(missing)} answered messages lost"


def test_recent(hive):
    d = hive()
    a, b = d.connect("a1"), d.connect("b2")
    for i in range(3):
        a.req({"cmd": "send", "to": "b2", "body": f"to b{i}"})
    b.req({"cmd": "send", "to": "a1", "body": "to a"})
    d.connect("c3").req({"cmd": "send", "to": "b2", "body": "unrelated"})
    r = a.req({"cmd": "recent", "limit": 10})["messages"]
    assert [m["body"] for m in r] == ["to b0", "to b1", "to b2", "to a"]
    assert [m["body"] for m in a.req({"cmd": "recent", "limit": 2})["messages"]] == \
        ["to b2", "to a"]


def test_wake_puts_message_in_own_inbox(hive):
    d = hive()
    a = d.connect("a1")
    assert a.req({"cmd": "wake", "from": "cron", "body": "tick"})["ok"]
    [m] = a.req({"cmd": "recv"})["messages"]
    assert (m["from"], m["to"], m["body"]) == ("cron", "a1", "tick")


def test_set_status_shows_in_agent_status(hive):
    d = hive()
    c = d.db()
    c.execute("UPDATE agents SET status = 'running' WHERE name = 'a1'")
    c.close()
    a = d.connect("a1")
    assert a.req({"cmd": "set_status", "text": "reviewing"})["ok"]
    row = [r for r in d.request({"cmd": "agent_status"})["agent_statuses"]
           if r["name"] == "a1"][0]
    assert row["status_text"] == "reviewing" and row["status_set_at"].endswith("Z")
    r = a.req({"cmd": "set_status", "text": "x" * 501})
    assert r["ok"] is False and r["error_code"] == "EINVAL"


@pytest.mark.parametrize("req,code,needle", [
    ({"cmd": "send", "to": "ghost", "body": "x"}, "ENOENT", "unknown recipient"),
    ({"cmd": "send", "to": "../x", "body": "x"}, "EINVAL", "unknown recipient"),
    ({"cmd": "send", "to": "a1", "body": "x"}, "EINVAL", "yourself"),
    ({"cmd": "send", "to": "b2", "body": ""}, "EINVAL", "empty"),
    ({"cmd": "send", "to": "b2", "body": "x" * (256 * 1024 + 1)}, "EMSGSIZE", "over the limit"),
    ({"cmd": "send", "to": "b2"}, "EINVAL", '"body"'),
    ({"cmd": "send", "to": "b2", "body": "x", "in_reply_to": -1}, "EINVAL", "in_reply_to"),
    ({"cmd": "recv", "max": 0}, "EINVAL", '"max" must be from 1 to 32'),
    ({"cmd": "recv", "max": 33}, "EINVAL", '"max" must be from 1 to 32'),
    ({"cmd": "recv", "wait_seconds": -1}, "EINVAL", "wait_seconds"),
    ({"cmd": "recv", "wait_seconds": "5"}, "EINVAL", "must be an integer"),
    ({"cmd": "ack", "ids": []}, "EINVAL", "1 to 256"),
    ({"cmd": "ack", "ids": ["x"]}, "EINVAL", "message ids"),
    ({"cmd": "recv", "ack": []}, "EINVAL", '"ack" must list 1 to 256'),
    ({"cmd": "recv", "ack": [0]}, "EINVAL", "message ids"),
    ({"cmd": "recv", "ack": 5}, "EINVAL", '"ack"'),
    ({"cmd": "wake", "from": "", "body": "x"}, "EINVAL", '"from"'),
    ({"cmd": "teleport"}, "EOPNOTSUPP", "send, recv, ack"),
])
def test_bad_inputs(hive, req, code, needle):
    d = hive()
    a = d.connect("a1")
    r = a.req(req)
    assert r["ok"] is False and r["error_code"] == code, r
    assert needle in r["error"], r
    assert d.connect("b2").req({"cmd": "status"})["pending"] == 0  # nothing was stored


def test_reserved_names_get_no_socket(hive):
    d = hive(agents=("a1", "operator", "Bad_Name"))
    assert not os.path.exists(os.path.join(d.run, "agents", "operator"))
    assert not os.path.exists(os.path.join(d.run, "agents", "Bad_Name"))
    assert "gets no socket" in d.log_text()
    r = d.request({"cmd": "set_paused", "name": "operator", "paused": True})
    assert r["ok"] is False and r["error_code"] == "EINVAL" and "reserved" in r["error"]
    # The operator's inbox is still the operator's.
    assert d.connect("a1").req({"cmd": "send", "to": "operator", "body": "hi"})["ok"]
    assert d.request({"cmd": "operator_inbox"})["messages"][0]["from"] == "a1"
