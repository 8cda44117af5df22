"""Approvals end to end, through the manager socket and host.sock, with real git repos and a
real nix build of the meta flake (the nixpkgs input is the stand-in in tests/fixtures)."""

import json
import os
import shutil
import signal
import subprocess

import pytest

from conftest import ROOT, AgentClient, wait_for

pytestmark = pytest.mark.skipif(shutil.which("nix") is None or shutil.which("git") is None,
                                reason="needs nix (nix-bin) and git")

STANDIN = os.path.join(ROOT, "tests", "fixtures", "nixpkgs-standin")


def git(*args, check=True):
    p = subprocess.run(["git", *args], capture_output=True, text=True)
    if check:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout.strip()


@pytest.fixture
def hv(make_daemon):
    def make(*args):
        d = make_daemon("--nixpkgs", STANDIN, *args)
        d.cli("spawn", "a1", check=0)
        d.proposed = os.path.join(d.state, "agents", "a1", "config")
        d.applied = os.path.join(d.state, "applied", "a1")
        d.meta = os.path.join(d.state, "meta")
        d.manager = lambda: AgentClient(os.path.join(d.run, "manager", "mcp.sock"))
        return d
    return make


def propose_change(d, text, path="agent.nix", agent="a1"):
    """Commits a change in the proposed repo, as the manager would; returns the sha."""
    repo = os.path.join(d.state, "agents", agent, "config")
    with open(os.path.join(repo, path), "w") as f:
        f.write(text)
    git("-C", repo, "add", "-A")
    git("-C", repo, "-c", "user.name=manager", "-c", "user.email=m@hive", "commit", "-qm",
        "change " + path)
    return git("-C", repo, "rev-parse", "HEAD")


GOOD = '{ config, lib, pkgs, ... }: { environment.etc."motd".text = "hello from a1"; }\n'
BROKEN = '{ config, lib, pkgs, ... }: { environment.etc."motd".text = ; }\n'


def request(d, sha, description="try it"):
    m = d.manager()
    r = m.req({"cmd": "request_apply_commit", "agent": "a1", "commit_ref": sha,
               "description": description})
    m.close()
    return r


def status(d, aid):
    return d.request({"cmd": "approval_status", "id": aid})


def tag_message(repo, tag):
    return git("-C", repo, "for-each-ref", f"refs/tags/{tag}", "--format=%(contents)")


def manager_events(d):
    m = d.manager()
    msgs = m.req({"cmd": "recv", "max": 32})["messages"]
    m.close()
    return [json.loads(x["body"]) for x in msgs if x["from"] == "hive"]


def test_spawn_creates_the_repos(hv):
    d = hv()
    assert os.path.exists(os.path.join(d.proposed, "agent.nix"))
    assert "a1" in open(os.path.join(d.proposed, "agent.nix")).read()
    assert git("-C", d.proposed, "remote") == "applied"
    seed = git("-C", d.proposed, "rev-parse", "HEAD")
    assert git("-C", d.applied, "rev-parse", "main") == seed
    # The spawn put a1 into the meta flake, pinned to its seed, and recorded it as deployed.
    assert git("-C", d.meta, "log", "-1", "--format=%s") == f"spawn a1 {seed[:12]}"
    lock = json.loads(git("-C", d.meta, "show", "HEAD:flake.lock"))
    assert lock["nodes"]["agent-a1"]["locked"]["rev"] == seed
    row = [r for r in d.request({"cmd": "agent_status"})["agent_statuses"] if r["name"] == "a1"][0]
    assert row["deployed_sha"] == seed[:12]


def test_spawn_with_the_manager_goes_into_meta(hv):
    # The manager is an agent of the meta flake too: its config repos exist from the start,
    # so locking the flake for a spawn (or an approval) does not fail on its input.
    d = hv("--manager")
    assert os.path.isdir(os.path.join(d.state, "applied", "hm1nd", ".git"))
    seed = git("-C", d.proposed, "rev-parse", "HEAD")
    assert git("-C", d.meta, "log", "-1", "--format=%s") == f"spawn a1 {seed[:12]}"
    lock = json.loads(git("-C", d.meta, "show", "HEAD:flake.lock"))
    assert lock["nodes"]["agent-a1"]["locked"]["rev"] == seed
    assert "agent-hm1nd" in lock["nodes"]
    assert "not in the meta flake" not in d.log_text()


def test_propose_approve_deploy(hv):
    d = hv()
    base = git("-C", d.applied, "rev-parse", "main")
    meta_head = git("-C", d.meta, "rev-parse", "HEAD")
    sha = propose_change(d, GOOD)
    r = request(d, sha[:12])
    assert r["ok"] is True, r
    aid = r["id"]
    [ap] = [a for a in d.request({"cmd": "pending"})["approvals"] if a["id"] == aid]
    assert ap["status"] == "pending" and ap["kind"] == "apply_commit" and ap["agent"] == "a1"
    assert ap["fetched_sha"] == sha[:12] and ap["commit_ref"] == sha[:12]
    assert ap["description"] == "try it"
    st = status(d, aid)
    assert '+{ config, lib, pkgs, ... }: { environment.etc."motd".text = "hello from a1"; }' \
        in st["diff"] and "agent.nix" in st["diff"]
    assert git("-C", d.applied, "rev-parse", f"proposal/{aid}^{{commit}}") == sha
    assert git("-C", d.applied, "rev-parse", "main") == base, "nothing moves before approval"

    pidfile = os.path.join(d.run, "supervise", "a1.pid")
    with open(pidfile) as f:
        pid_before = f.read().split()[0]
    p = d.cli("approve", str(aid), check=0)
    assert "approved" in p.stdout
    wait_for(lambda: "phase" not in status(d, aid), timeout=60, what="the deploy")

    def restarted():
        try:
            with open(pidfile) as f:
                return f.read().split()[0] != pid_before
        except OSError:
            return False
    wait_for(restarted, what="the container restarted on its new config")
    assert status(d, aid)["approval"]["status"] == "approved"
    for t in ("approved", "building", "deployed"):
        assert git("-C", d.applied, "rev-parse", f"{t}/{aid}^{{commit}}") == sha
        assert git("-C", d.applied, "cat-file", "-t", f"{t}/{aid}") == "tag"  # annotated
    assert git("-C", d.applied, "rev-parse", "main") == sha
    assert git("-C", d.meta, "log", "-1", "--format=%s") == f"deploy a1 deployed/{aid} {sha[:12]}"
    assert git("-C", d.meta, "rev-parse", "HEAD~1") == meta_head
    lock = json.loads(git("-C", d.meta, "show", "HEAD:flake.lock"))
    assert lock["nodes"]["agent-a1"]["locked"]["rev"] == sha
    assert git("-C", d.meta, "status", "--porcelain") == ""
    row = [r for r in d.request({"cmd": "agent_status"})["agent_statuses"] if r["name"] == "a1"][0]
    assert row["deployed_sha"] == sha[:12]
    ev = [e for e in manager_events(d) if e.get("event") == "approval_resolved"]
    assert ev == [{"event": "approval_resolved", "id": aid, "agent": "a1", "kind": "apply_commit",
                   "status": "approved", "sha": sha, "tag": f"deployed/{aid}"}]
    r = d.request({"cmd": "approve", "id": aid})
    assert r["ok"] is False and r["error_code"] == "EALREADY"


def test_broken_config_fails_and_changes_nothing(hv):
    d = hv()
    base = git("-C", d.applied, "rev-parse", "main")
    meta_head = git("-C", d.meta, "rev-parse", "HEAD")
    meta_lock = git("-C", d.meta, "show", "HEAD:flake.lock", check=False)
    sha = propose_change(d, BROKEN)
    aid = request(d, sha)["id"]
    assert d.request({"cmd": "approve", "id": aid})["ok"] is True
    wait_for(lambda: status(d, aid)["approval"]["status"] == "failed", timeout=60,
             what="the failed build")
    st = status(d, aid)
    assert "phase" not in st and st["build_log"]
    msg = tag_message(d.applied, f"failed/{aid}")
    assert f"approval {aid} failed" in msg and "error" in msg.lower()
    assert git("-C", d.applied, "rev-parse", "main") == base
    assert git("-C", d.meta, "rev-parse", "HEAD") == meta_head
    assert git("-C", d.meta, "show", "HEAD:flake.lock", check=False) == meta_lock
    assert git("-C", d.meta, "status", "--porcelain") == ""
    ev = [e for e in manager_events(d) if e.get("event") == "approval_resolved"]
    assert ev[-1]["status"] == "failed" and ev[-1]["tag"] == f"failed/{aid}"


def test_deny_with_note(hv):
    d = hv()
    sha = propose_change(d, GOOD)
    aid = request(d, sha)["id"]
    p = d.cli("deny", str(aid), "--note", "not today, too risky", check=0)
    assert p.stdout == f"denied {aid}\n"
    assert "not today, too risky" in tag_message(d.applied, f"denied/{aid}")
    assert git("-C", d.applied, "rev-parse", f"denied/{aid}^{{commit}}") == sha
    ap = status(d, aid)["approval"]
    assert ap["status"] == "denied" and ap["note"] == "not today, too risky"
    for cmd in ("approve", "deny"):
        r = d.request({"cmd": cmd, "id": aid})
        assert r["ok"] is False and r["error_code"] == "EALREADY" and "denied" in r["error"]
    ev = [e for e in manager_events(d) if e.get("event") == "approval_resolved"]
    assert ev[-1]["status"] == "denied"


def test_bad_refs_are_refused(hv):
    d = hv()
    d.cli("spawn", "b2", check=0)
    other = propose_change(d, GOOD, agent="b2")
    sha = propose_change(d, GOOD)
    for ref, code in [("main", "EINVAL"), ("HEAD~1", "EINVAL"), (sha[:6], "EINVAL"),
                      ("0" * 40, "ENOENT"), (other, "ENOENT"), ("zzzzzzzz", "EINVAL")]:
        r = request(d, ref)
        assert r["ok"] is False and r["error_code"] == code, (ref, r)
    m = d.manager()
    r = m.req({"cmd": "request_apply_commit", "agent": "ghost", "commit_ref": sha})
    assert r["error_code"] == "ENOENT"
    m.close()
    assert d.request({"cmd": "pending"})["approvals"] == []
    # Only the manager may propose.
    a = AgentClient(os.path.join(d.run, "agents", "a1", "mcp.sock"))
    r = a.req({"cmd": "request_apply_commit", "agent": "a1", "commit_ref": sha})
    assert r["ok"] is False and r["error_code"] == "EACCES"
    a.close()
    assert d.request({"cmd": "approve", "id": 999})["error_code"] == "ENOENT"
    assert d.cli("approve", "x", check=2)


def test_daemon_killed_during_build_aborts_at_restart(hv):
    d = hv("--builder", "sleep 30")
    base = git("-C", d.applied, "rev-parse", "main")
    meta_head = git("-C", d.meta, "rev-parse", "HEAD")
    sha = propose_change(d, GOOD)
    aid = request(d, sha)["id"]
    d.request({"cmd": "approve", "id": aid})
    wait_for(lambda: status(d, aid).get("phase") == "build", timeout=30, what="the build")
    d.stop(signal.SIGKILL)
    subprocess.run(["pkill", "-f", "sleep 30"])
    d.start()
    st = status(d, aid)
    assert st["approval"]["status"] == "failed" and "phase" not in st
    assert "build" in st["approval"]["note"]
    assert git("-C", d.meta, "rev-parse", "HEAD") == meta_head
    assert git("-C", d.meta, "status", "--porcelain") == ""
    assert git("-C", d.applied, "rev-parse", "main") == base
    assert "daemon stopped" in tag_message(d.applied, f"failed/{aid}")
    ev = [e for e in manager_events(d) if e.get("event") == "approval_resolved"]
    assert ev[-1]["status"] == "failed" and ev[-1]["id"] == aid


def test_request_spawn_approved_spawns(hv):
    d = hv()
    m = d.manager()
    r = m.req({"cmd": "request_spawn", "name": "c3", "description": "a helper"})
    m.close()
    assert r["ok"] is True
    aid = r["id"]
    assert d.request({"cmd": "list"})["agents"] == ["a1"]
    p = d.cli("pending", check=0)
    assert "spawn" in p.stdout and "c3" in p.stdout
    d.cli("approve", str(aid), check=0)
    wait_for(lambda: "c3" in d.request({"cmd": "list"})["agents"], what="c3 spawned")
    wait_for(lambda: any(e.get("event") == "approval_resolved" and e["id"] == aid
                         for e in manager_events(d)), what="approval_resolved")
    r = d.cli("request-spawn", "c3", check=1)
    assert "already exists" in r.stderr


def test_update_meta_inputs_marks_agents(make_daemon, tmpbase):
    nixpkgs = os.path.join(tmpbase, "nixpkgs")
    shutil.copytree(STANDIN, nixpkgs)
    d = make_daemon("--nixpkgs", nixpkgs)
    d.cli("spawn", "a1", check=0)
    d.cli("spawn", "b2", check=0)
    meta = os.path.join(d.state, "meta")
    m = AgentClient(os.path.join(d.run, "manager", "mcp.sock"))
    for bad in (["agent-a1"], ["../x"], [3]):
        r = m.req({"cmd": "request_update_meta_inputs", "inputs": bad})
        assert r["ok"] is False and r["error_code"] == "EINVAL", (bad, r)
    # Nothing changed upstream: approved, nothing committed, nobody needs an update.
    head = git("-C", meta, "rev-parse", "HEAD")
    r = m.req({"cmd": "request_update_meta_inputs", "inputs": ["nixpkgs"],
               "description": "weekly bump"})
    assert r["ok"] is True
    [ap] = [a for a in d.request({"cmd": "pending"})["approvals"] if a["id"] == r["id"]]
    assert ap["kind"] == "update_meta_inputs" and ap["commit_ref"] == '["nixpkgs"]'
    d.request({"cmd": "approve", "id": r["id"]})
    wait_for(lambda: "phase" not in status(d, r["id"]), timeout=60, what="the update")
    assert status(d, r["id"])["approval"]["status"] == "approved"
    assert git("-C", meta, "rev-parse", "HEAD") == head
    rows = d.request({"cmd": "agent_status"})["agent_statuses"]
    assert not any(x["needs_update"] for x in rows)
    # nixpkgs moved: the lock is committed and every agent needs an update.
    with open(os.path.join(nixpkgs, "flake.nix"), "a") as f:
        f.write("# a newer nixpkgs\n")
    r = m.req({"cmd": "request_update_meta_inputs"})
    m.close()
    d.request({"cmd": "approve", "id": r["id"]})
    wait_for(lambda: "phase" not in status(d, r["id"]), timeout=60, what="the update")
    assert status(d, r["id"])["approval"]["status"] == "approved"
    assert git("-C", meta, "log", "-1", "--format=%s").startswith("update inputs all inputs")
    assert git("-C", meta, "status", "--porcelain") == ""
    rows = d.request({"cmd": "agent_status"})["agent_statuses"]
    assert [x["needs_update"] for x in rows] == [True, True]
    assert "+update" in d.cli("status", check=0).stdout
    # A deploy of a1 updates its container: a1 no longer needs one, b2 still does.
    sha = propose_change(d, GOOD)
    m = AgentClient(os.path.join(d.run, "manager", "mcp.sock"))
    aid = m.req({"cmd": "request_apply_commit", "agent": "a1", "commit_ref": sha})["id"]
    m.close()
    d.request({"cmd": "approve", "id": aid})
    wait_for(lambda: not [x for x in d.request({"cmd": "agent_status"})["agent_statuses"]
                          if x["name"] == "a1"][0]["needs_update"], timeout=60,
             what="a1 updated")
    assert [x for x in d.request({"cmd": "agent_status"})["agent_statuses"]
            if x["name"] == "b2"][0]["needs_update"] is True
