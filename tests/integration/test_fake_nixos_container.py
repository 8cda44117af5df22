"""Tests of the fake nixos-container (tests/fakes/nixos-container) against the behaviour of the
real tool recorded in /work/shared/research/nixos-container.md (§1, §2, §3.4, §6, §7).

Every test runs the fake as a separate process on its own temporary root, as the daemon will.
Messages are compared exactly; the "<argv0>: " prefix is the path the fake was run by."""

import json
import os
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE = os.path.join(ROOT, "tests", "fakes", "nixos-container")
USAGE_FIRST = "Usage: nixos-container list\n"


def _wait_for(pred, timeout=5.0, what="condition"):
    """Bounded poll: returns pred()'s first truthy value, fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Result:
    def __init__(self, p):
        self.rc = p.returncode
        self.out = p.stdout.decode("utf-8")
        self.err = p.stderr.decode("utf-8")

    def __repr__(self):
        return f"rc={self.rc} out={self.out!r} err={self.err!r}"


class NC:
    """Runs the fake with its state under base/root and its working directory base/cwd."""

    def __init__(self, base):
        self.base = str(base)
        self.root = os.path.join(self.base, "root")
        self.cwd = os.path.join(self.base, "cwd")
        self.flake = os.path.join(self.base, "flake")
        os.makedirs(self.cwd)
        os.makedirs(self.flake)
        with open(os.path.join(self.flake, "flake.nix"), "w") as f:
            f.write("{ outputs = _: { }; }\n")
        self.confdir = os.path.join(self.root, "etc", "nixos-containers")
        self.statedir = os.path.join(self.root, "var", "lib", "nixos-containers")
        self.profiles = os.path.join(self.root, "nix", "var", "nix", "profiles", "per-container")
        self.gcroots = os.path.join(self.root, "nix", "var", "nix", "gcroots", "per-container")
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                    "FAKE_NIXOS_CONTAINER_ROOT": self.root}

    def _env(self, env):
        e = dict(self.env)
        e.update(env or {})
        return e

    def __call__(self, *args, env=None, input=None, timeout=10, cwd=None):
        p = subprocess.run([FAKE, *args], cwd=cwd or self.cwd, env=self._env(env),
                           input=input, capture_output=True, timeout=timeout)
        return Result(p)

    def popen(self, *args, env=None):
        return subprocess.Popen([FAKE, *args], cwd=self.cwd, env=self._env(env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def create(self, name, attr=None, env=None):
        r = self("create", name, "--flake", f"{self.flake}#{attr or name}", env=env)
        assert r.rc == 0, r
        return r

    def conf_path(self, name):
        return os.path.join(self.confdir, f"{name}.conf")

    def conf(self, name):
        try:
            with open(self.conf_path(name)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_conf(self, name, text):
        os.makedirs(self.confdir, exist_ok=True)
        with open(self.conf_path(name), "w") as f:
            f.write(text)

    def unit(self, name):
        st = {"ActiveState": "inactive"}
        try:
            with open(os.path.join(self.root, "run", "units", f"container@{name}.service")) as f:
                for line in f:
                    k, _, v = line.rstrip("\n").partition("=")
                    st[k] = v
        except FileNotFoundError:
            pass
        return st

    def set_state(self, name, state):
        d = os.path.join(self.root, "run", "units")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"container@{name}.service"), "w") as f:
            f.write(f"ActiveState={state}\n")

    def profile_system(self, name):
        p = os.path.join(self.profiles, name, "system")
        return os.path.realpath(p) if os.path.lexists(p) else None

    def _log(self, fname):
        try:
            with open(os.path.join(self.root, fname)) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def invocations(self):
        return self._log("invocations.log")

    def commands(self):
        return [c["argv"] for c in self._log("commands.log")]

    def installable(self, attr, flake=None):
        return f'{flake or self.flake}#nixosConfigurations."{attr}".config.system.build.toplevel'


def E(msg):
    """A die() line of the real tool: "<argv0>: <msg>\\n"."""
    return f"{FAKE}: {msg}\n"


def job_failed(name, why="the control process exited with error code"):
    unit = f"container@{name}.service"
    return (f"Job for {unit} failed because {why}.\n"
            f"See \"systemctl status {unit}\" and \"journalctl -xeu {unit}\" for details.\n")


NO_LEADER = ("Could not get path to machine: No machine '{0}' known\n"
             "unable to get container's main PID\n")


@pytest.fixture
def nc(tmp_path):
    return NC(tmp_path)


# ---- command line (§1.1, §1.2) -------------------------------------------------------------

def test_help_goes_to_stdout_even_after_an_option_error(nc):
    r = nc("--help")
    assert (r.rc, r.err) == (0, "")
    assert r.out.startswith(USAGE_FIRST)
    for flag in ("[--flake <flakeref>]", "[--host-address <string>]", "[--local-address <string>]",
                 "nixos-container run <container-name> -- args...",
                 "nixos-container show-host-key <container-name>"):
        assert flag in r.out
    # Getopt::Long warns and goes on; --help exits 0 when it is reached.
    r = nc("create", "x", "--bogus", "--help")
    assert (r.rc, r.err) == (0, "Unknown option: bogus\n")
    assert r.out.startswith(USAGE_FIRST)


@pytest.mark.parametrize("args,err", [
    (["--Bogus", "list"], "Unknown option: bogus\n"),
    (["status", "x", "-l"], "Option l is ambiguous (local-address, log-format)\n"),
    (["create", "x", "--flake"], "Option flake requires an argument\n"),
    (["list", "--impure=1"], "Option impure does not take an argument\n"),
    (["create", "x", "--option", "a"], "Insufficient arguments for option option\n"),
])
def test_option_errors_exit_1(nc, args, err):
    r = nc(*args)
    assert (r.rc, r.out, r.err) == (1, "", err)


@pytest.mark.parametrize("args,err", [
    ([], E("no action specified")),
    (["0"], E("no action specified")),  # Perl: "0" is false
    (["start", "0"], E("no container name specified")),
    (["create", "a/b", "--flake", "/f"], E("invalid container name")),
    (["create", "a", "--host-address", "10.0.0.1"],
     f"With --host-address set, --local-address is required as well! at {FAKE} line 122.\n"),
    (["create", "a", "--config", "x", "--config-file", "y"],
     "--config and --config-file are mutually incompatible. Please define one or the other, "
     f"but not both at {FAKE} line 128.\n"),
])
def test_argument_checks_exit_255(nc, args, err):
    r = nc(*args)
    assert (r.rc, r.out, r.err) == (255, "", err)
    assert not os.path.exists(nc.conf_path("a"))


def test_list_creates_dirs_and_sorts_like_perl_glob(nc):
    r = nc("list")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert os.path.isdir(nc.confdir)
    assert os.stat(nc.statedir).st_mode & 0o777 == 0o700
    for n in ("agent1", "agent1-0", "b", "B", "_x", "Zed"):
        nc.write_conf(n, "PRIVATE_NETWORK=1\n")
    nc.write_conf(".hidden", "x\n")
    with open(os.path.join(nc.confdir, "notes.txt"), "w") as f:
        f.write("x\n")
    r = nc("list")
    assert (r.rc, r.err) == (0, "")
    assert r.out == "_x\nagent1-0\nagent1\nB\nb\nZed\n"


# ---- create (§1.3, §2, §3.1) ---------------------------------------------------------------

def test_create_with_flake(nc):
    r = nc("create", "a1", "--flake", f"{nc.flake}#agent1", "--port", "tcp:80:80")
    assert (r.rc, r.out) == (0, "")
    assert r.err == "host IP is 10.233.1.1, container IP is 10.233.1.2\n"
    # the #attr is not stored
    assert nc.conf("a1") == ("PRIVATE_NETWORK=1\nHOST_ADDRESS=10.233.1.1\n"
                             "LOCAL_ADDRESS=10.233.1.2\nHOST_BRIDGE=\nHOST_PORT=tcp:80:80\n"
                             f"AUTO_START=0\nFLAKE={nc.flake}\n")
    assert nc.commands()[0] == ["nix", "build", "-o", ".tmp", "--", nc.installable("agent1")]
    # the flake out-link is left in the caller's working directory
    out_link = os.path.join(nc.cwd, ".tmp")
    assert os.path.islink(out_link)
    system = nc.profile_system("a1")
    assert system == os.readlink(out_link)
    with open(os.path.join(system, "fake-build.json")) as f:
        assert json.load(f)["attr"] == "agent1"
    assert nc.commands()[1] == ["nix-env", "-p", os.path.join(nc.profiles, "a1", "system"),
                                "--set", system]
    # create never starts the container
    r = nc("status", "a1")
    assert (r.rc, r.out, r.err) == (0, "down\n", "")


def test_create_name_rules(nc):
    nc.create("abcdefghij")
    nc.create("abcdefghijk")  # 11 characters is the limit
    r = nc("create", "abcdefghijkl", "--flake", nc.flake)
    assert (r.rc, r.out, r.err) == (2, "", E("container name ‘abcdefghijkl’ is too long"))
    r = nc("create", "abcdefghij", "--flake", nc.flake)
    assert (r.rc, r.out, r.err) == (25, "", E("container ‘abcdefghij’ already exists"))
    # the length check runs after the suffix is added
    r = nc("create", "abcdefghij", "--ens", "--flake", nc.flake)
    assert (r.rc, r.err) == (2, E("container name ‘abcdefghij-0’ is too long"))
    # --ensure-unique-name prints the final name, the only stdout of create
    assert nc("create", "web", "--ensure-unique-name", "--flake", nc.flake).out == "web\n"
    r = nc("create", "web", "--ensure-unique-name", "--flake", nc.flake)
    assert (r.rc, r.out) == (0, "web-0\n")
    assert r.err == "host IP is 10.233.4.1, container IP is 10.233.4.2\n"
    assert nc.conf("web-0") is not None


def test_create_ip_allocation(nc):
    nc.write_conf("c1", "HOST_ADDRESS=10.233.1.1\nLOCAL_ADDRESS=10.233.9.9\n")
    nc.write_conf("c2", "LOCAL_ADDRESS=10.233.2.2\n")
    nc.write_conf("c3", "HOST_ADDRESS=10.233.3.1/24\n")  # a /prefix is not seen as taken
    r = nc("create", "n1", "--flake", nc.flake)
    assert (r.rc, r.err) == (0, "host IP is 10.233.3.1, container IP is 10.233.3.2\n")
    r = nc("create", "n2", "--flake", nc.flake, "--host-address", "10.1.0.1/24",
           "--local-address", "10.1.0.2/24", "--bridge", "br0", "--auto-start")
    assert (r.rc, r.err) == (0, "host IP is 10.1.0.1/24, container IP is 10.1.0.2/24\n")
    assert nc.conf("n2").startswith("PRIVATE_NETWORK=1\nHOST_ADDRESS=10.1.0.1/24\n"
                                    "LOCAL_ADDRESS=10.1.0.2/24\nHOST_BRIDGE=br0\nHOST_PORT=\n"
                                    "AUTO_START=1\n")
    # a zero-length .conf anywhere makes every create die (§6.4)
    nc.write_conf("broken", "")
    r = nc("create", "n3", "--flake", nc.flake)
    assert (r.rc, r.out, r.err) == (255, "", f"Died at {FAKE} line 237.\n")
    assert nc.conf("n3") is None


def test_concurrent_creates_get_distinct_addresses(nc):
    procs = [nc.popen("create", f"p{i}", "--flake", nc.flake) for i in range(4)]
    errs = sorted(p.communicate(timeout=10)[1].decode() for p in procs)
    assert [p.returncode for p in procs] == [0] * 4
    assert errs == [f"host IP is 10.233.{i}.1, container IP is 10.233.{i}.2\n" for i in range(1, 5)]


def test_failed_flake_create_leaves_conf_behind(nc):
    fail = {"FAKE_NIXOS_CONTAINER_FAIL_BUILD": "1"}
    r = nc("create", "a1", "--flake", f"{nc.flake}#a1", env=fail)
    assert (r.rc, r.out) == (2, "")
    lines = r.err.splitlines(keepends=True)
    assert lines[0] == "host IP is 10.233.1.1, container IP is 10.233.1.2\n"
    assert lines[1].startswith("error: builder for '/nix/store/")
    assert lines[-1] == E(f"failed to build container from flake '{nc.flake}'")
    # no cleanup: the .conf and the profile dir stay, so the next create fails
    assert f"FLAKE={nc.flake}\n" in nc.conf("a1")
    assert os.path.isdir(os.path.join(nc.profiles, "a1"))
    r = nc("create", "a1", "--flake", f"{nc.flake}#a1")
    assert (r.rc, r.err) == (25, E("container ‘a1’ already exists"))
    # the recovery the research recommends: destroy (idempotent), then create again
    r = nc("destroy", "a1")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert nc.conf("a1") is None and not os.path.exists(os.path.join(nc.profiles, "a1"))
    # a fault scoped to other names does not hit a1
    nc.create("a1", env={"FAKE_NIXOS_CONTAINER_FAIL_BUILD": "b1, c1"})


def test_flake_ref_must_be_a_local_flake(nc):
    missing = os.path.join(nc.base, "nope")
    r = nc("create", "m1", "--flake", f"{missing}#m1")
    assert (r.rc, r.err.splitlines(keepends=True)[1:]) == (2, [
        f"error: getting status of '{missing}': No such file or directory\n",
        E(f"failed to build container from flake '{missing}'")])
    # a relative ref is resolved against the caller's cwd (§3.3)
    r = nc("create", "m2", "--flake", ".#m2")
    assert r.rc == 2
    assert r.err.splitlines(keepends=True)[1:] == [
        f"error: path '{nc.cwd}' is not part of a flake (neither it nor its parent directories "
        "contain a 'flake.nix' file)\n", E("failed to build container from flake '.'")]
    r = nc("create", "m3", "--flake", ".#m3", cwd=nc.flake)
    assert r.rc == 0
    r = nc("create", "m4", "--flake", f"path:{missing}",
           env={"FAKE_NIXOS_CONTAINER_SKIP_FLAKE_CHECK": "1"})
    assert r.rc == 0


def test_failed_nix_env_set_cleans_up(nc):
    r = nc("create", "a1", "--flake", nc.flake, env={"FAKE_NIXOS_CONTAINER_FAIL_NIX_ENV": "a1"})
    assert r.rc == 2
    lines = r.err.splitlines(keepends=True)
    assert lines[1].startswith("error: path '") and lines[2:] == [
        E("failed to set initial container configuration")]
    assert nc.conf("a1") is None
    assert not os.path.exists(os.path.join(nc.profiles, "a1"))


def test_non_flake_create_needs_nixpkgs_on_nix_path(nc):
    r = nc("create", "a1")
    assert r.rc == 2
    assert r.err.splitlines(keepends=True)[1:] == [
        "error: file 'nixpkgs/nixos' was not found in the Nix search path (add it using "
        "$NIX_PATH or -I)\n", E("failed to build initial container configuration")]
    assert nc.conf("a1") is None and not os.path.exists(os.path.join(nc.statedir, "a1"))

    env = {"NIX_PATH": "nixpkgs=/srv/nixpkgs"}
    r = nc("create", "a1", "--config", "services.foo.enable = true;", env=env)
    assert (r.rc, r.out) == (0, "")
    assert "FLAKE=" not in nc.conf("a1")
    cfg = os.path.join(nc.statedir, "a1", "etc", "nixos", "configuration.nix")
    with open(cfg) as f:
        assert f.read() == ("{ config, lib, pkgs, ... }:\n\n{ boot.isContainer = true;\n"
                            "  networking.hostName = lib.mkDefault \"a1\";\n"
                            "  networking.useDHCP = false;\n  services.foo.enable = true;\n}\n")
    assert nc.commands()[-1] == [
        "nix-env", "-p", os.path.join(nc.profiles, "a1", "system"), "-I",
        f"nixos-config={cfg}", "-f", "<nixpkgs/nixos>", "--set", "-A", "system"]
    # update without a stored FLAKE rebuilds the configuration.nix the same way
    r = nc("update", "a1", "--impure", env=env)
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert nc.commands()[-2][-1] == "--impure"


# ---- start / stop / status / terminate (§1.3, §6) ------------------------------------------

def test_lifecycle(nc):
    nc.create("a1")
    r = nc("start", "a1")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert nc("status", "a1").out == "up\n"
    assert nc.unit("a1") == {"ActiveState": "active", "SystemPath": nc.profile_system("a1")}
    root = os.path.join(nc.statedir, "a1")
    assert os.path.isfile(os.path.join(root, "etc", "machine-id"))
    assert os.path.isdir(os.path.join(nc.gcroots, "a1"))
    # starting a running container is a no-op
    assert nc("start", "a1").rc == 0
    r = nc("stop", "a1")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert nc.unit("a1")["ActiveState"] == "inactive"
    # stopping a stopped container is not an error
    r = nc("stop", "a1")
    assert (r.rc, r.out, r.err) == (0, "", "")
    # restart is stop + start
    r = nc("restart", "a1")
    assert (r.rc, r.err) == (0, "")
    assert nc.unit("a1")["ActiveState"] == "active"
    assert nc.commands()[-2:] == [["systemctl", "stop", "container@a1"],
                                  ["systemctl", "start", "container@a1"]]


@pytest.mark.parametrize("var,why", [
    ("FAKE_NIXOS_CONTAINER_FAIL_START", "the control process exited with error code"),
    ("FAKE_NIXOS_CONTAINER_TIMEOUT_START", "a timeout was exceeded"),
])
def test_start_failure(nc, var, why):
    nc.create("a1")
    r = nc("start", "a1", env={var: "a1"})
    assert (r.rc, r.out, r.err) == (1, "", job_failed("a1", why) + E("failed to start container"))
    assert nc.unit("a1")["ActiveState"] == "failed"  # which status reports as down


def test_start_hang_until_killed(nc):
    nc.create("a1")
    p = nc.popen("start", "a1", env={"FAKE_NIXOS_CONTAINER_HANG_START": "1"})
    try:
        _wait_for(lambda: nc.unit("a1")["ActiveState"] == "activating", what="activating")
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=0.1)
        # activating counts as down, and update does not reload it (§6.6)
        assert nc("status", "a1").out == "down\n"
        r = nc("update", "a1", "--flake", f"{nc.flake}#a1")
        assert (r.rc, r.err) == (0, "")
    finally:
        p.kill()
        p.communicate()
    assert p.returncode == -9
    assert nc.unit("a1")["ActiveState"] == "activating"
    assert nc("stop", "a1").rc == 0
    assert nc.unit("a1")["ActiveState"] == "inactive"


def test_start_delay_passes_through_activating(nc):
    nc.create("a1")
    p = nc.popen("start", "a1", env={"FAKE_NIXOS_CONTAINER_START_DELAY": "0.2"})
    _wait_for(lambda: nc.unit("a1")["ActiveState"] == "activating", what="activating")
    p.communicate(timeout=5)
    assert p.returncode == 0
    assert nc.unit("a1")["ActiveState"] == "active"


def test_name_that_is_no_hostname_fails_at_start(nc):
    nc.create("a_b")  # the tool accepts "_", nspawn does not (§2)
    r = nc("start", "a_b")
    assert (r.rc, r.err) == (1, job_failed("a_b") + E("failed to start container"))


def test_start_builds_a_missing_profile_from_stored_flake(nc):
    fail = {"FAKE_NIXOS_CONTAINER_FAIL_BUILD": "1"}
    assert nc("create", "a1", "--flake", f"{nc.flake}#agent", env=fail).rc == 2
    r = nc("start", "a1", env=fail)
    assert (r.rc, r.err) == (1, job_failed("a1") + E("failed to start container"))
    assert nc("start", "a1").rc == 0
    # the start script runs `nixos-container update NAME`: attribute "container" (§6.14)
    assert ["nix", "build", "-o", ".tmp", "--", nc.installable("container")] in nc.commands()
    assert nc.unit("a1")["ActiveState"] == "active"


def test_stop_faults(nc):
    nc.create("a1")
    assert nc("stop", "a1", env={"FAKE_NIXOS_CONTAINER_FAIL_STOP": "1"}).rc == 0  # nothing to stop
    nc("start", "a1")
    r = nc("stop", "a1", env={"FAKE_NIXOS_CONTAINER_FAIL_STOP": "1"})
    assert (r.rc, r.out, r.err) == (1, "", E("failed to stop container"))
    assert nc("status", "a1").out == "up\n"
    p = nc.popen("stop", "a1", env={"FAKE_NIXOS_CONTAINER_HANG_STOP": "a1"})
    try:
        _wait_for(lambda: nc.unit("a1")["ActiveState"] == "deactivating", what="deactivating")
    finally:
        p.kill()
        p.communicate()
    assert nc("stop", "a1").rc == 0
    assert nc.unit("a1")["ActiveState"] == "inactive"


def test_terminate(nc):
    nc.create("a1")
    nc("start", "a1")
    r = nc("terminate", "a1")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert nc("status", "a1").out == "down\n"
    r = nc("terminate", "a1")
    assert (r.rc, r.out, r.err) == (1, "", NO_LEADER.format("a1"))


# ---- update (§1.3, §3.4, §6.5) -------------------------------------------------------------

def test_update_reloads_only_an_active_container(nc):
    nc.create("a1", attr="agent")
    conf = nc.conf("a1")
    # stopped: build and set the profile, no reload; the stored FLAKE has no #attr (§6.5)
    r = nc("update", "a1")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert nc.commands()[-3] == ["nix", "build", "-o", ".tmp", "--", nc.installable("container")]
    assert ["systemctl", "reload", "container@a1"] not in nc.commands()

    nc("start", "a1")
    old = nc.unit("a1")["SystemPath"]
    with open(os.path.join(nc.flake, "flake.nix"), "a") as f:
        f.write("# changed\n")
    r = nc("update", "a1", "--flake", f"{nc.flake}#agent")
    assert (r.rc, r.out, r.err) == (0, "", "reloading container...\n")
    assert nc.commands()[-1] == ["systemctl", "reload", "container@a1"]
    new = nc.unit("a1")["SystemPath"]
    assert new != old and new == nc.profile_system("a1")
    assert nc.unit("a1")["ActiveState"] == "active"
    assert nc.conf("a1") == conf  # update never changes the .conf

    r = nc("update", "a1", "--flake", f"{nc.flake}#agent",
           env={"FAKE_NIXOS_CONTAINER_FAIL_RELOAD": "1"})
    assert (r.rc, r.out) == (1, "")
    assert r.err == "reloading container...\n" + job_failed("a1") + E("failed to reload container")
    assert nc("status", "a1").out == "up\n"  # the unit keeps running

    for state in ("failed", "reloading"):
        nc.set_state("a1", state)
        r = nc("update", "a1", "--flake", f"{nc.flake}#agent")
        assert (r.rc, r.err) == (0, "")


def test_update_failures(nc):
    nc.create("a1")
    nc("start", "a1")
    for var, last in (("FAKE_NIXOS_CONTAINER_FAIL_BUILD",
                       f"failed to build container from flake '{nc.flake}'"),
                      ("FAKE_NIXOS_CONTAINER_FAIL_NIX_ENV",
                       "failed to set container configuration")):
        r = nc("update", "a1", "--flake", f"{nc.flake}#a1", env={var: "a1"})
        assert (r.rc, r.out) == (1, "")
        assert r.err.startswith("error: ") and r.err.endswith(E(last))
        assert "reloading" not in r.err


def test_update_nspawn_check_of_newer_tools(nc):
    nc.create("a1")
    r = nc("update", "a1", env={"FAKE_NIXOS_CONTAINER_FAIL_NSPAWN_CHECK": "1"})
    assert r.rc == 255
    assert r.err.startswith(
        f"{FAKE}: on 25.11 and newer, containers require boot.isNspawnContainer=true. "
        f"Please set this in {nc.flake} at {FAKE} line ")


def test_build_hang_leaves_conf(nc):
    p = nc.popen("create", "a1", "--flake", nc.flake, env={"FAKE_NIXOS_CONTAINER_HANG_BUILD": "1"})
    try:
        _wait_for(lambda: any(c[:2] == ["nix", "build"] for c in nc.commands()), what="nix build")
        with pytest.raises(subprocess.TimeoutExpired):
            p.communicate(timeout=0.1)
    finally:
        p.kill()
        p.communicate()
    assert nc.conf("a1") is not None  # written before the build


# ---- destroy and missing containers (§1.1 step 8, §1.3) -----------------------------------

def test_destroy(nc):
    nc.create("a1")
    nc("start", "a1")
    r = nc("destroy", "a1")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert ["machinectl", "terminate", "a1"] in nc.commands()
    assert nc.unit("a1")["ActiveState"] == "inactive"
    for p in (nc.conf_path("a1"), os.path.join(nc.statedir, "a1"),
              os.path.join(nc.profiles, "a1"), os.path.join(nc.gcroots, "a1")):
        assert not os.path.lexists(p), p
    r = nc("destroy", "a1")
    assert (r.rc, r.out, r.err) == (0, "", "")

    nc.create("b1")
    r = nc("destroy", "b1", env={"FAKE_NIXOS_CONTAINER_DECLARATIVE": "b1"})
    assert r.rc != 0
    assert (r.out, r.err) == ("", E("cannot destroy declarative container (remove it from your "
                                    "configuration.nix instead)"))
    nc("start", "b1")
    r = nc("destroy", "b1", env={"FAKE_NIXOS_CONTAINER_FAIL_TERMINATE": "1"})
    assert (r.rc, r.err) == (1, E("failed to terminate container"))
    assert nc.conf("b1") is not None


@pytest.mark.parametrize("args", [["start"], ["update"], ["run", "--", "true"], ["frobnicate"]])
def test_missing_container(nc, args):
    r = nc(args[0], "nope", *args[1:])
    assert (r.rc, r.out, r.err) == (2, "", E("container ‘nope’ does not exist"))


def test_status_of_missing_container_prints_gone_and_fails(nc):
    r = nc("status", "nope")
    assert (r.rc, r.out, r.err) == (2, "gone\n", E("container ‘nope’ does not exist"))


def test_unknown_action_on_existing_container(nc):
    nc.write_conf("a1", "PRIVATE_NETWORK=1\n")
    r = nc("frobnicate", "a1")
    assert (r.rc, r.out, r.err) == (255, "", E("unknown action ‘frobnicate’"))


# ---- run, login, show-ip, show-host-key ------------------------------------------------------

def test_run(nc):
    nc.create("a1")
    # without --, the command's own flags are parsed as nixos-container options
    r = nc("run", "a1", "ls", "-l")
    assert (r.rc, r.out, r.err) == (1, "", "Option l is ambiguous (local-address, log-format)\n")
    r = nc("run", "a1", "--", "true")
    assert (r.rc, r.out, r.err) == (1, "", NO_LEADER.format("a1"))

    nc("start", "a1")
    assert nc("run", "a1", "--", "sh", "-c", "exit 7").rc == 7
    r = nc("run", "a1", "--", "printf", "%s|", "it's", "a b", "$HOME", "")
    assert (r.rc, r.out) == (0, "it's|a b|$HOME||")
    assert nc.commands()[-1][-1] == "exec 'printf' '%s|' 'it'\\''s' 'a b' '$HOME' ''"
    home = os.path.join(nc.statedir, "a1", "root")
    script = 'echo "$FOO:$FAKE_NIXOS_CONTAINER_NAME:$HOME:$(pwd)"; cat'
    r = nc("run", "a1", "--", "sh", "-c", script, env={"FOO": "leaks"}, input=b"stdin\n")
    assert (r.rc, r.out) == (0, f":a1:{home}:{home}\nstdin\n")
    r = nc("run", "a1", "--", "no-such-command-xyz")
    assert r.rc == 127 and "no-such-command-xyz: not found" in r.err
    r = nc("run", "a1", "echo", "hi")  # no flags: works without --
    assert (r.rc, r.out) == (0, "hi\n")


def test_login_and_root_login(nc):
    nc.create("a1")
    r = nc("root-login", "a1")
    assert (r.rc, r.err) == (1, NO_LEADER.format("a1"))
    nc("start", "a1")
    r = nc("root-login", "a1", input=b"echo $USER; exit 3\n")
    assert (r.rc, r.out) == (3, "root\n")
    r = nc("login", "a1")
    assert r.rc == 1 and "not reproduced" in r.err


def test_show_ip(nc):
    nc.create("a1")
    assert nc("show-ip", "a1").out == "10.233.1.2\n"
    nc.write_conf("p", "LOCAL_ADDRESS=10.1.2.3/24\n")
    nc.write_conf("v6", "LOCAL_ADDRESS6=fd00::2/64\n")
    nc.write_conf("none", "PRIVATE_NETWORK=0\n")
    nc.write_conf("empty", "")
    assert nc("show-ip", "p").out == "10.1.2.3\n"
    assert nc("show-ip", "v6").out == "fd00::2\n"
    r = nc("show-ip", "none")
    assert (r.rc, r.out, r.err) == (255, "", E("cannot get IP address"))
    r = nc("show-ip", "empty")
    assert (r.rc, r.out, r.err) == (255, "", f"Died at {FAKE} line 473.\n")


def test_show_host_key(nc):
    nc.write_conf("a1", "PRIVATE_NETWORK=1\n")
    r = nc("show-host-key", "a1")
    assert (r.rc, r.out, r.err) == (1, "", "")
    ssh = os.path.join(nc.statedir, "a1", "etc", "ssh")
    os.makedirs(ssh)
    with open(os.path.join(ssh, "ssh_host_ecdsa_key.pub"), "w") as f:
        f.write("ecdsa-sha2-nistp256 AAAA root@a1\n")
    assert nc("show-host-key", "a1").out == "ecdsa-sha2-nistp256 AAAA root@a1\n"
    with open(os.path.join(ssh, "ssh_host_ed25519_key.pub"), "w") as f:
        f.write("ssh-ed25519 BBBB root@a1\n")
    assert nc("show-host-key", "a1").out == "ssh-ed25519 BBBB root@a1\n"


# ---- bookkeeping for daemon tests -----------------------------------------------------------

def test_invocation_log(nc):
    r = nc("status", "a;b $(x)", "--flake", "/f#x", env={"NIX_CONFIG": "x = y", "SECRET": "s"})
    assert r.rc == 255
    inv = nc.invocations()[-1]
    assert inv["argv"] == [FAKE, "status", "a;b $(x)", "--flake", "/f#x"]
    assert inv["cwd"] == nc.cwd
    assert inv["parent"] not in ("sh", "bash", "dash")
    assert inv["env"]["NIX_CONFIG"] == "x = y"
    assert "SECRET" in inv["env_keys"] and "SECRET" not in inv["env"]
    # through a shell (that does not exec its last command) the parent is the shell
    subprocess.run(["/bin/sh", "-c", f"'{FAKE}' list; true"], env=nc.env, cwd=nc.cwd, check=True,
                   capture_output=True)
    assert nc.invocations()[-1]["parent"] == "sh"
