"""Fixtures that start the real hive-c0re daemon on a temporary state dir and talk to it."""

import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("HIVE_C0RE_BIN", os.path.join(ROOT, "build", "c0re", "hive-c0re"))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "host-sock")


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred() until it is truthy; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def raw(sock_path, data, timeout=10.0):
    """Sends raw bytes on a fresh connection and returns everything the daemon writes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def can_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Daemon:
    def __init__(self, base, args=(), env=None):
        self.base = base
        self.state = os.path.join(base, "state")
        self.run = os.path.join(base, "run")
        self.sock = os.path.join(self.run, "host.sock")
        self.log = os.path.join(base, "daemon.log")
        self.args = list(args)
        self.env = env
        self.proc = None
        self.bin = BIN

    def argv(self):
        """serve's argv.  Unless a test says otherwise: the process backend running a
        sleeping payload (the harness is another issue's), and no manager (`--manager`
        asks for one)."""
        args = [a for a in self.args if a not in ("--manager", "--harness")]
        if "--manager" not in self.args:
            args.append("--no-manager")
        if not any(a.startswith("--backend") for a in args):
            args += ["--backend", "process"]
        if not any(a.startswith("--templates-dir") for a in args):
            args += ["--templates-dir", os.path.join(ROOT, "templates")]
        if not any(a.startswith("--nixpkgs") for a in args):
            args += ["--nixpkgs", os.path.join(ROOT, "tests", "fixtures", "nixpkgs-standin")]
        if "--harness" not in self.args and not any(a.startswith("--agent-command")
                                                    for a in args):
            args += ["--agent-command", "exec sleep 86400"]
        return [self.bin, "serve", "--state-dir", self.state, "--run-dir", self.run,
                "--log-level", "debug", *args]

    def start(self, wait=True):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.argv(),
            stdout=self.logf, stderr=subprocess.STDOUT, env=self.env)
        if wait:
            wait_for(lambda: can_connect(self.sock) or self.proc.poll() is not None,
                     what="host.sock")
            assert self.proc.poll() is None, self.log_text()
        return self

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("daemon did not stop within 10 s of " + str(sig))
        if getattr(self, "logf", None):
            self.logf.close()
        return self.proc.returncode if self.proc else None

    def request(self, obj):
        """One request (dict or str) → the parsed response; also returns the raw line."""
        line = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        if isinstance(line, str):
            line = line.encode()
        if not line.endswith(b"\n"):
            line += b"\n"
        out = raw(self.sock, line)
        assert out.endswith(b"\n") and out.count(b"\n") == 1, out
        self.last_raw = out
        return json.loads(out)

    def cli(self, *args, check=None, env=None, user=None):
        cmd = [BIN, "--socket", self.sock, *args]
        if user:
            pw = pwd.getpwnam(user)
            cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                   "--clear-groups"] + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
        if check is not None:
            assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
        return p

    def db(self):
        c = sqlite3.connect(os.path.join(self.state, "hive.sqlite"), timeout=10)
        c.isolation_level = None
        return c

    def add_agent(self, name, **cols):
        cols = dict({"role": "agent", "created_at": int(time.time())}, **cols)
        keys = ["name"] + list(cols)
        c = self.db()
        c.execute(f"INSERT INTO agents ({','.join(keys)}) VALUES ({','.join('?' * len(keys))})",
                  [name] + list(cols.values()))
        c.close()


def open_stream(d):
    """A subscribe_agent_status stream on d's host.sock, past its bare ack: (socket, file)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(d.sock)
    s.sendall(b'{"cmd":"subscribe_agent_status"}\n')
    f = s.makefile("rb")
    assert f.readline() == b'{"version":1,"ok":true}\n'
    return s, f


def read_row(f):
    """The next pushed line of a stream: exactly one status row, which it returns."""
    r = json.loads(f.readline())
    assert list(r) == ["version", "ok", "agent_statuses"] and len(r["agent_statuses"]) == 1
    return r["agent_statuses"][0]


@pytest.fixture
def tmpbase():
    # Short paths: a unix socket path must fit in 108 bytes.
    d = tempfile.mkdtemp(prefix="hv-", dir="/tmp")
    yield d
    subprocess.run(["rm", "-rf", d])


@pytest.fixture
def make_daemon(tmpbase):
    started = []

    def make(*args, start=True, sub="d", env=None):
        d = Daemon(os.path.join(tmpbase, sub), args, env=env)
        os.makedirs(d.base, exist_ok=True)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


class AgentClient:
    """A connection on an agent's (or the manager's) socket; many requests, in turn."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.f = self.sock.makefile("rwb", buffering=0)

    def send_line(self, obj):
        self.sock.sendall((json.dumps(obj) + "\n").encode())

    def read(self):
        line = self.f.readline()
        assert line.endswith(b"\n"), f"connection closed: {line!r}"
        return json.loads(line)

    def req(self, obj):
        self.send_line(obj)
        return self.read()

    def close(self):
        self.f.close()
        self.sock.close()


@pytest.fixture
def hive(make_daemon):
    """A daemon with agents a1, b2, c3 registered before it started."""

    def make(*args, agents=("a1", "b2", "c3")):
        d = make_daemon(*args)
        d.stop()
        for a in agents:
            d.add_agent(a)
        d.start()
        d.agent_sock = lambda name: os.path.join(d.run, "manager" if name == "manager"
                                                 else f"agents/{name}", "mcp.sock")
        d.connect = lambda name: AgentClient(d.agent_sock(name))
        return d

    return make


def fixture_bytes(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


CHROMIUM = os.environ.get("HIVE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HIVE_CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture
def browser():
    """Headless chromium driven through chromedriver (python3-selenium).  Never skips: the
    scripts install chromium, chromium-driver and python3-selenium, so a missing one fails."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.fail(f"python3-selenium is missing ({e}); install it (scripts/test does)")
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing; install the Debian package {pkg} (scripts/test "
                        "does), or point HIVE_CHROMIUM / HIVE_CHROMEDRIVER at them")
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1200,900", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # chromium leaves its singleton socket dir (org.chromium.Chromium.*) in $TMPDIR: give it
    # a private one, removed with the browser.
    tmp = tempfile.mkdtemp(prefix="hive-chromium-")
    try:
        service = Service(CHROMEDRIVER, env={**os.environ, "TMPDIR": tmp})
        driver = webdriver.Chrome(service=service, options=opts)
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
