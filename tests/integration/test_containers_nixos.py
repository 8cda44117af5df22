"""The nixos-container backend against the faithful fake (tests/fakes/nixos-container):
what the daemon runs, how it cleans up after the tool fails, and its timeouts."""

import json
import os
import shutil
import time

import pytest

from conftest import ROOT, wait_for

FAKE = os.path.join(ROOT, "tests", "fakes", "nixos-container")

# The backend creates containers from the meta flake, which spawn writes with nix.
pytestmark = pytest.mark.skipif(shutil.which("nix") is None, reason="needs nix (nix-bin)")


@pytest.fixture
def nc(make_daemon, tmpbase):
    """make(**faults) → a daemon on the fake; spawn puts each agent into the meta flake
    (real nix, the stand-in nixpkgs), which the fake then checks exists."""

    def make(*args, **faults):
        fake_root = os.path.join(tmpbase, "fake")
        env = dict(os.environ, FAKE_NIXOS_CONTAINER_ROOT=fake_root)
        for k, v in faults.items():
            env["FAKE_NIXOS_CONTAINER_" + k.upper()] = v
        d = make_daemon("--backend", "nixos-container", "--nixos-container", FAKE,
                        "--crash-interval", "1", *args, start=False, env=env)
        d.fake_root = fake_root
        d.backend = "nixos-container"
        return d.start()

    return make


def calls(d, action=None):
    """argv[1:] of every fake invocation (optionally only of one action), with cwds."""
    path = os.path.join(d.fake_root, "invocations.log")
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if action is None or rec["argv"][1:2] == [action]:
                out.append(rec)
    return out


def conf(d, machine):
    return os.path.join(d.fake_root, "etc", "nixos-containers", machine + ".conf")


def row(d, name):
    rows = d.request({"cmd": "agent_status"})["agent_statuses"]
    return next((r for r in rows if r["name"] == name), None)


def test_lifecycle_through_cli_and_raw_json(nc):
    d = nc()
    p = d.cli("spawn", "a1", check=0)
    assert p.stdout == "spawned a1\n" and "spawning a1" in p.stderr
    flake = os.path.join(d.state, "meta") + "#a1"
    with open(os.path.join(d.state, "meta", "flake.nix")) as f:
        assert "agent-a1.url" in f.read(), "spawn added a1 to the meta flake"
    [create] = calls(d, "create")
    assert create["argv"][1:] == ["create", "h-a1", "--flake", flake]
    assert create["env"]["NIX_CONFIG"] and "flakes" in create["env"]["NIX_CONFIG"]
    assert calls(d, "start")[-1]["argv"][1:] == ["start", "h-a1"]
    assert os.path.exists(conf(d, "h-a1"))
    assert row(d, "a1")["running"] is True

    assert d.request({"cmd": "stop", "scope": {"agent_names": ["a1"]}}) == \
        {"version": 1, "ok": True}
    assert calls(d, "stop")[-1]["argv"][1:] == ["stop", "h-a1"]
    assert row(d, "a1")["running"] is False
    assert d.request({"cmd": "start", "scope": {"agent_names": ["a1"]}})["ok"] is True
    assert row(d, "a1")["running"] is True
    n_stop, n_start = len(calls(d, "stop")), len(calls(d, "start"))
    d.cli("restart", "a1", check=0)
    assert len(calls(d, "stop")) == n_stop + 1 and len(calls(d, "start")) == n_start + 1
    assert row(d, "a1")["running"] is True

    d.cli("destroy", "a1", check=0)
    assert calls(d, "destroy")[-1]["argv"][1:] == ["destroy", "h-a1"]
    assert not os.path.exists(conf(d, "h-a1"))
    assert d.request({"cmd": "list"})["agents"] == []
    assert os.path.isdir(os.path.join(d.state, "agents", "a1")), "state kept as a tombstone"
    assert d.request({"cmd": "purge_tombstone", "name": "a1"}) == {"version": 1, "ok": True}
    assert not os.path.exists(os.path.join(d.state, "agents", "a1"))

    # Every call ran in its own private directory, removed afterwards.
    cwds = [c["cwd"] for c in calls(d)]
    assert len(set(cwds)) == len(cwds)
    assert not any(c and os.path.exists(c) for c in cwds)


def test_failed_create_is_cleaned_up_and_reported(nc):
    d = nc(fail_build="h-a1")
    r = d.request({"cmd": "spawn", "name": "a1"})
    assert r["ok"] is False and r["error_code"] == "EIO"
    assert "failed to build container from flake" in r["error"] and "h-a1" in r["error"]
    # The tool leaves the .conf of a failed flake create; the daemon destroyed it.
    assert calls(d, "destroy")[-1]["argv"][1:] == ["destroy", "h-a1"]
    assert not os.path.exists(conf(d, "h-a1"))
    assert d.request({"cmd": "list"})["agents"] == []
    assert not os.path.exists(os.path.join(d.state, "agents", "a1"))
    assert not os.path.exists(os.path.join(d.run, "agents", "a1", "mcp.sock"))
    p = d.cli("spawn", "b2", check=0)  # another name is unaffected
    assert p.returncode == 0


def test_hung_start_times_out_with_a_clear_error(nc):
    d = nc("--op-timeout", "2", hang_start="h-a1")
    t0 = time.monotonic()
    p = d.cli("spawn", "a1", check=1)
    assert time.monotonic() - t0 < 15
    assert "timed out" in p.stderr and "h-a1" in p.stderr and "ETIMEDOUT" in p.stderr
    assert d.request({"cmd": "list"})["agents"] == []
    assert calls(d, "destroy"), "the half-started container was destroyed"
    assert not os.path.exists(conf(d, "h-a1"))


def test_failed_start_quotes_the_tool(nc):
    d = nc(fail_start="h-a1")
    r = d.request({"cmd": "spawn", "name": "a1"})
    assert r["ok"] is False and "failed to start container" in r["error"]


def test_scoped_stop_touches_only_named(nc):
    d = nc()
    d.cli("spawn", "a1", check=0)
    d.cli("spawn", "b2", check=0)
    d.cli("stop", "a1", check=0)
    stopped = [c["argv"][2] for c in calls(d, "stop")]
    assert stopped == ["h-a1"]
    assert row(d, "a1")["running"] is False and row(d, "b2")["running"] is True


def test_container_that_stops_unasked_is_restarted(nc):
    d = nc()
    d.cli("spawn", "a1", check=0)
    n_start = len(calls(d, "start"))
    unit = os.path.join(d.fake_root, "run", "units", "container@h-a1.service")
    with open(unit) as f:
        text = f.read()
    with open(unit, "w") as f:
        f.write(text.replace("ActiveState=active", "ActiveState=failed"))
    wait_for(lambda: len(calls(d, "start")) > n_start, timeout=10, what="the restart")
    wait_for(lambda: row(d, "a1")["running"], what="a1 running again")
    c = d.db()
    assert c.execute("SELECT outcome FROM crashes WHERE agent = 'a1'").fetchall() == \
        [("restarted",)]
    c.close()
