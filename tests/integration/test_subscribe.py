"""subscribe_agent_status: a push stream of changed rows."""

import socket
import time

from conftest import open_stream, read_row


def test_stream_pushes_changed_rows(hive):
    d = hive()
    s, f = open_stream(d)
    assert d.request({"cmd": "set_paused", "name": "b2", "paused": True})["ok"]
    row = read_row(f)
    assert row["name"] == "b2" and row["paused"] is True
    a = d.connect("a1")
    assert a.req({"cmd": "remind", "message": "x", "delay_seconds": 3600})["ok"]
    row = read_row(f)
    assert row["name"] == "a1" and row["pending_reminders"] == 1
    assert a.req({"cmd": "set_status", "text": "busy"})["ok"]
    assert read_row(f)["name"] == "a1"
    s.close()
    # The daemon carries on without the subscriber.
    assert d.request({"cmd": "set_paused", "name": "b2", "paused": False})["ok"]
    assert d.request({"cmd": "list"})["ok"]


def test_sweeps_that_change_nothing_push_nothing(hive):
    # Crash-watch sweeps check every container each second; none changes, so the first row
    # the stream carries is the one change made after them.
    d = hive("--crash-interval", "1")
    s, f = open_stream(d)
    time.sleep(3.5)
    assert d.request({"cmd": "set_paused", "name": "c3", "paused": True})["ok"]
    row = read_row(f)
    assert row["name"] == "c3" and row["paused"] is True
    s.close()


def test_stream_is_not_closed_when_idle(make_daemon, hive):
    d = hive("--idle-timeout", "1")
    s, f = open_stream(d)
    time.sleep(2.5)  # past the idle timeout: a stream is exempt
    assert d.request({"cmd": "set_paused", "name": "a1", "paused": True})["ok"]
    assert read_row(f)["name"] == "a1"
    s.close()


def test_slow_reader_never_blocks_the_daemon(hive):
    d = hive()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(d.sock)
    s.sendall(b'{"cmd":"subscribe_agent_status"}\n')  # and never read
    # Each change pushes a ~200-byte row nobody reads; the kernel buffers and our backlog
    # fill, then updates are dropped while every request is still answered.
    for i in range(20000):
        assert d.request({"cmd": "set_paused", "name": "a1", "paused": i % 2 == 0})["ok"]
        if i % 500 == 499 and "too slow" in d.log_text():
            break
    assert "too slow" in d.log_text()
    t1 = time.monotonic()
    assert d.request({"cmd": "list"})["ok"]
    assert time.monotonic() - t1 < 1.0
    s.close()
