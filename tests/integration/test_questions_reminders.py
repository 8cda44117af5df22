"""Questions, reminders and open threads through the real daemon."""

import json
import time

import pytest

from conftest import wait_for


def event(msg):
    assert msg["from"] == "hive", msg
    return json.loads(msg["body"])


def test_operator_question_answered(hive):
    d = hive()
    a = d.connect("a1")
    r = a.req({"cmd": "ask", "question": "deploy now?", "options": ["yes", "no"]})
    qid = r["id"]
    [q] = d.request({"cmd": "questions"})["questions"]
    assert q["id"] == qid and q["asker"] == "a1" and q["target"] == "operator"
    assert q["options"] == ["yes", "no"]
    assert "deploy now?" in d.cli("questions", check=0).stdout
    d.cli("answer", str(qid), "yes", check=0)
    [m] = a.req({"cmd": "recv", "wait_seconds": 5})["messages"]
    assert event(m) == {"event": "question_answered", "id": qid, "question": "deploy now?",
                        "answer": "yes", "answerer": "operator"}
    r = d.request({"cmd": "answer", "id": qid, "answer": "no"})
    assert r["ok"] is False and r["error_code"] == "EALREADY"
    assert d.request({"cmd": "questions"})["questions"] == []


def test_peer_question(hive):
    d = hive()
    a, b, c = d.connect("a1"), d.connect("b2"), d.connect("c3")
    qid = a.req({"cmd": "ask", "question": "which branch?", "to": "b2"})["id"]
    [m] = b.req({"cmd": "recv", "wait_seconds": 5})["messages"]
    ev = event(m)
    assert ev["event"] == "question_asked" and ev["id"] == qid and ev["asker"] == "a1"
    # Only the target may answer.
    r = c.req({"cmd": "answer", "id": qid, "answer": "main"})
    assert r["ok"] is False and r["error_code"] == "EPERM"
    assert b.req({"cmd": "answer", "id": qid, "answer": "main"})["ok"]
    [m] = a.req({"cmd": "recv", "wait_seconds": 5})["messages"]
    assert event(m)["answer"] == "main" and event(m)["answerer"] == "b2"


def test_question_ttl_expiry(hive):
    d = hive()
    a = d.connect("a1")
    qid = a.req({"cmd": "ask", "question": "quick?", "ttl_seconds": 1})["id"]
    t0 = time.monotonic()
    [m] = a.req({"cmd": "recv", "wait_seconds": 10})["messages"]
    ev = event(m)
    assert ev["id"] == qid and ev["answer"] == "[expired]" and ev["answerer"] == "ttl-watchdog"
    assert time.monotonic() - t0 < 3


def test_cancel_question(hive):
    d = hive()
    a, b = d.connect("a1"), d.connect("b2")
    qid = a.req({"cmd": "ask", "question": "q"})["id"]
    r = b.req({"cmd": "cancel_loose_end", "kind": "question", "id": qid})
    assert r["ok"] is False and r["error_code"] == "EPERM"
    assert a.req({"cmd": "cancel_loose_end", "kind": "question", "id": qid})["ok"]
    [m] = a.req({"cmd": "recv"})["messages"]
    assert event(m)["answer"] == "[cancelled by a1]"


@pytest.mark.parametrize("req,code", [
    ({"cmd": "ask", "question": "x", "to": "a1"}, "EINVAL"),
    ({"cmd": "ask", "question": "x", "to": "ghost"}, "ENOENT"),
    ({"cmd": "ask", "question": ""}, "EINVAL"),
    ({"cmd": "ask", "question": "x", "ttl_seconds": 0}, "EINVAL"),
    ({"cmd": "ask", "question": "x", "options": [1]}, "EINVAL"),
    ({"cmd": "answer", "id": 999, "answer": "x"}, "ENOENT"),
    ({"cmd": "remind", "message": "x"}, "EINVAL"),
    ({"cmd": "remind", "message": "x", "delay_seconds": 1, "at_unix_timestamp": 2}, "EINVAL"),
    ({"cmd": "remind", "message": "x", "delay_seconds": -1}, "EINVAL"),
    ({"cmd": "remind", "message": "", "delay_seconds": 1}, "EINVAL"),
    ({"cmd": "remind", "message": "x", "delay_seconds": 1, "file_path": "../etc/passwd"},
     "EINVAL"),
    ({"cmd": "remind", "message": "x", "delay_seconds": 1, "file_path": "/etc/passwd"}, "EINVAL"),
    ({"cmd": "remind", "message": "x", "delay_seconds": 1, "file_path": "/state/a/../../x"},
     "EINVAL"),
    ({"cmd": "cancel_loose_end", "kind": "thing", "id": 1}, "EINVAL"),
])
def test_bad_inputs(hive, req, code):
    d = hive()
    r = d.connect("a1").req(req)
    assert r["ok"] is False and r["error_code"] == code, r
    assert d.request({"cmd": "reminders"})["reminders"] == []
    assert d.request({"cmd": "questions"})["questions"] == []


def test_reminder_fires_on_time(hive):
    d = hive()
    a = d.connect("a1")
    r = a.req({"cmd": "remind", "message": "check the build", "delay_seconds": 2,
               "file_path": "notes/build.md"})
    assert r["ok"] and r["due_at"].endswith("Z")
    t0 = time.monotonic()
    assert d.request({"cmd": "agent_status"})["agent_statuses"][0]["pending_reminders"] == 1
    assert a.req({"cmd": "count_pending_reminders"})["count"] == 1
    [m] = a.req({"cmd": "recv", "wait_seconds": 10})["messages"]
    elapsed = time.monotonic() - t0
    assert m["from"] == "reminder" and m["body"].startswith("check the build")
    assert "/state/notes/build.md" in m["body"]
    assert 1.0 <= elapsed <= 3.0, elapsed
    assert a.req({"cmd": "count_pending_reminders"})["count"] == 0


def test_reminder_survives_restart(hive):
    d = hive()
    a = d.connect("a1")
    due = int(time.time()) + 3
    assert a.req({"cmd": "remind", "message": "after restart", "at_unix_timestamp": due})["ok"]
    a.close()
    assert d.stop() == 0
    d.start()
    assert len(d.request({"cmd": "reminders"})["reminders"]) == 1
    a = d.connect("a1")
    [m] = a.req({"cmd": "recv", "wait_seconds": 10})["messages"]
    assert m["body"] == "after restart"
    assert abs(time.time() - due) <= 1.5


def test_reminder_limit_and_cancel(hive):
    d = hive()
    a = d.connect("a1")
    ids = [a.req({"cmd": "remind", "message": f"r{i}", "delay_seconds": 3600})["id"]
           for i in range(50)]
    r = a.req({"cmd": "remind", "message": "one too many", "delay_seconds": 3600})
    assert r["ok"] is False and r["error_code"] == "EUSERS"
    r = d.connect("b2").req({"cmd": "cancel_loose_end", "kind": "reminder", "id": ids[0]})
    assert r["ok"] is False and r["error_code"] == "EPERM"
    assert a.req({"cmd": "cancel_loose_end", "kind": "reminder", "id": ids[0]})["ok"]
    assert a.req({"cmd": "count_pending_reminders"})["count"] == 49


def test_open_threads(hive):
    d = hive()
    a, b, m = d.connect("a1"), d.connect("b2"), d.connect("manager")
    q1 = a.req({"cmd": "ask", "question": "to operator"})["id"]
    q2 = b.req({"cmd": "ask", "question": "to a1", "to": "a1"})["id"]
    r1 = a.req({"cmd": "remind", "message": "later", "delay_seconds": 3600})["id"]
    b.req({"cmd": "remind", "message": "b later", "delay_seconds": 3600})
    mine = a.req({"cmd": "get_open_threads"})
    assert sorted(q["id"] for q in mine["questions"]) == [q1, q2]
    assert [r["id"] for r in mine["reminders"]] == [r1]
    hivewide = m.req({"cmd": "get_open_threads"})
    assert len(hivewide["questions"]) == 2 and len(hivewide["reminders"]) == 2
