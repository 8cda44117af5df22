#!/usr/bin/python3
"""Broker benchmark: the same workloads against hive-c0re, mosquitto and nats-server (JetStream).

Run it through tests/bench/run-broker-bench, which installs missing Debian packages first.
Workloads (identical for every system; docs/performance.md has the details):
  1. one pair, sequential: one message in flight, the receiver parked waiting
  2. 8 and 64 pairs at once, each a closed loop with one message in flight
  3. RSS with 100 agents and 100 000 stored, unread messages (fill, then read /proc)
Every server is started here, on loopback or unix sockets, with its state on the disk that holds
the work tree, a fresh instance per workload, and stopped at the end, also on failure or Ctrl-C.
The load generator is tests/bench/broker-bench (C, built here with cc)."""

import argparse
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, "build")
CLIENT_SOURCES = ["bench.c", "bench-hive.c", "bench-mosquitto.c", "bench-nats.c", "bench.h"]
SYSTEMS = ["hive", "mosquitto", "nats"]

# (timed messages per pair, warm-up messages per pair); fill = agents x messages per agent
PROFILES = {
    "quick": {"reps": 1, "seq": (300, 30), "p8": (40, 5), "p64": (8, 2),
              "fill_agents": 100, "fill_count": 10},
    "default": {"reps": 3, "seq": (10000, 500), "p8": (2000, 100), "p64": (250, 20),
                "fill_agents": 100, "fill_count": 1000},
}
WORKLOADS = [("seq", 1), ("p8", 8), ("p64", 64)]

LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
RUNNING = []  # every child we started and have not reaped yet


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def _child_setup():
    # If this driver dies without cleaning up (SIGKILL), the kernel kills the child too.
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(argv, cwd, stdout, stderr=subprocess.STDOUT):
    p = subprocess.Popen([str(a) for a in argv], cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                         stderr=stderr, start_new_session=True, preexec_fn=_child_setup)
    RUNNING.append(p)
    return p


def stop(p, grace=15.0):
    """Stops a child we started: SIGTERM, then SIGKILL after `grace` seconds."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass
    if p in RUNNING:
        RUNNING.remove(p)


def stop_all():
    for p in list(RUNNING):
        stop(p, grace=5.0)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, pred, proc, timeout, logfile=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = ""
            if logfile and os.path.exists(logfile):
                with open(logfile, errors="replace") as f:
                    tail = f.read()[-1500:]
            raise BenchError(f"the server exited (status {proc.returncode}) before {what}\n{tail}")
        if pred():
            return
        time.sleep(0.02)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


def tcp_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_accepts(path):
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def user_cpu_s():
    """User-mode CPU seconds of the whole machine so far (all CPUs), from /proc/stat, or None.
    User time only: the kernel's own work for our servers (journal commits, block I/O) is
    system time and must not count as disturbance."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (v[0] + v[1]) / os.sysconf("SC_CLK_TCK")


def proc_user_cpu_s(pid):
    """User-mode CPU seconds of process pid (all threads), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) / os.sysconf("SC_CLK_TCK")


def children_user_cpu_s():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime


def disk_bytes(path):
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if not (st.st_mode & 0o170000 == 0o140000):  # not a socket
                total += st.st_blocks * 512
    return total


# ---- servers: start(dir, agent names) -> (Popen, client args) ----

class Hive:
    name = "hive"

    def __init__(self, binary):
        self.binary = binary

    def _argv(self, state):
        return [self.binary, "serve", "--state-dir", state, "--run-dir", os.path.join(state, "run"),
                # debug: the daemon's lines on how long each WAL tail copy held its loop
                "--log-level", "debug", "--dashboard", f"127.0.0.1:{free_port()}", "--no-manager"]

    def start(self, base, agents):
        state = os.path.join(base, "hive")
        run = os.path.join(state, "run")
        os.makedirs(state)
        logfile = os.path.join(base, "hive.log")
        with open(logfile, "ab") as lf:
            # first start creates hive.sqlite; agents must be registered while it is stopped
            p = spawn(self._argv(state), base, lf)
            wait_until("host.sock", lambda: unix_accepts(os.path.join(run, "host.sock")), p, 15,
                       logfile)
            stop(p)
            if p.returncode != 0:
                raise BenchError(f"hive-c0re exited with status {p.returncode} on SIGTERM")
            db = sqlite3.connect(os.path.join(state, "hive.sqlite"))
            db.executemany("INSERT INTO agents(name, role, created_at) "
                           "VALUES (?, 'agent', strftime('%s'))", [(a,) for a in agents])
            db.commit()
            db.close()
            p = spawn(self._argv(state), base, lf)
        socks = [os.path.join(run, "agents", a, "mcp.sock") for a in agents]
        try:
            wait_until(f"{len(socks)} agent sockets (run/agents/<name>/mcp.sock)",
                       lambda: all(unix_accepts(s) for s in socks), p, 15, logfile)
        except BenchError:
            stop(p)
            raise
        return p, ["--hive-run-dir", run]


class Mosquitto:
    name = "mosquitto"

    def start(self, base, agents):
        port = free_port()
        data = os.path.join(base, "mosquitto")
        os.makedirs(data)
        conf = os.path.join(base, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\n"
                    "allow_anonymous true\n"
                    "persistence true\n"
                    f"persistence_location {data}/\n"
                    # default autosave_interval 1800: the DB is written every 30 min and at exit
                    "max_queued_messages 1000000\n"
                    "max_inflight_messages 100\n"
                    "set_tcp_nodelay true\n"
                    # stay root (as the driver): no privilege drop, so the parent-death signal holds
                    "user root\n"
                    "log_dest stderr\n"
                    "log_type error\n"
                    "log_type warning\n")
        logfile = os.path.join(base, "mosquitto.log")
        with open(logfile, "ab") as lf:
            p = spawn(["mosquitto", "-c", conf], base, lf)
        wait_until(f"mosquitto on port {port}", lambda: tcp_accepts(port), p, 10, logfile)
        return p, ["--port", port]


class Nats:
    name = "nats"

    def start(self, base, agents):
        port = free_port()
        store = os.path.join(base, "nats")
        os.makedirs(store)
        logfile = os.path.join(base, "nats.log")
        with open(logfile, "ab") as lf:
            p = spawn(["nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", store], base, lf)
        wait_until(f"nats-server on port {port}", lambda: tcp_accepts(port), p, 10, logfile)
        return p, ["--port", port]


# ---- building ----

def build_daemon(no_build):
    """Builds ./build; returns the daemon path, or raises BenchError with the reason."""
    exe = os.path.join(BUILD, "c0re", "hive-c0re")
    if not no_build:
        if not os.path.exists(os.path.join(BUILD, "build.ninja")):
            r = subprocess.run(["meson", "setup", BUILD], cwd=ROOT, capture_output=True, text=True)
            if r.returncode != 0:
                raise BenchError("meson setup build failed:\n" + (r.stdout + r.stderr)[-2000:])
        r = subprocess.run(["ninja", "-C", BUILD], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError("ninja -C build failed:\n" + (r.stdout + r.stderr)[-2000:])
    if not os.access(exe, os.X_OK):
        raise BenchError(f"{exe} does not exist")
    return exe


def build_client():
    out_dir = os.path.join(BUILD, "bench-broker")
    exe = os.path.join(out_dir, "broker-bench")
    srcs = [os.path.join(HERE, s) for s in CLIENT_SOURCES]
    if os.path.exists(exe) and os.path.getmtime(exe) >= max(os.path.getmtime(s) for s in srcs):
        return exe
    os.makedirs(out_dir, exist_ok=True)
    pc = subprocess.run(["pkg-config", "--cflags", "--libs", "libmosquitto", "libnats"],
                        capture_output=True, text=True)
    if pc.returncode != 0:
        raise BenchError("pkg-config cannot find libmosquitto/libnats: " + pc.stderr.strip())
    cc = os.environ.get("CC", "cc")
    argv = [cc, "-O2", "-g", "-std=gnu11", "-D_GNU_SOURCE", "-Wall", "-Wextra",
            "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-o", exe + ".tmp",
            *[s for s in srcs if s.endswith(".c")], *pc.stdout.split(), "-lpthread"]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError("building broker-bench failed:\n" + " ".join(argv) + "\n" + r.stderr)
    os.replace(exe + ".tmp", exe)
    return exe


# ---- running ----

class Runner:
    def __init__(self, args, client, servers, workdir):
        self.args = args
        self.client = client
        self.servers = servers  # name -> server object
        self.workdir = workdir
        self.unavailable = {}  # name -> reason (hive when its broker does not answer)
        self.seq = 0
        self.deadline = time.monotonic() + args.budget

    def instance_dir(self, system, label):
        self.seq += 1
        d = os.path.join(self.workdir, f"{self.seq:02d}-{system}-{label}")
        os.makedirs(d)
        return d

    def client_run(self, system, target_args, pid, extra):
        timeout = int(min(self.args.run_timeout, self.deadline - time.monotonic()))
        if timeout < 1:
            raise BenchError("over the time budget (--budget)")
        argv = [self.client, "--system", system, *target_args, "--server-pid", pid,
                "--timeout", timeout, "--body-bytes", self.args.body_bytes, *extra]
        busy0, srv0, kids0, t0 = (user_cpu_s(), proc_user_cpu_s(pid), children_user_cpu_s(),
                                  time.monotonic())
        p = spawn(argv, self.workdir, subprocess.PIPE, subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            stop(p, grace=1)
            raise BenchError(f"the load generator did not finish in {timeout} s")
        RUNNING.remove(p)
        busy1, srv1, kids1, t1 = (user_cpu_s(), proc_user_cpu_s(pid), children_user_cpu_s(),
                                  time.monotonic())
        if p.returncode == -signal.SIGALRM:
            raise BenchError(f"the load generator gave up after {timeout} s (--run-timeout, "
                             "--budget)")
        if p.returncode != 0:
            msg = err.decode(errors="replace").strip()[-1500:]
            raise BenchError(f"load generator failed (status {p.returncode}): {msg}")
        try:
            r = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"the load generator printed no report: {out[-300:]!r}")
        # User-mode CPU time that neither the server nor the load generator used while the run
        # lasted: other processes.  A large share means the figures of this run were disturbed.
        if None not in (busy0, busy1, srv0, srv1):
            other = (busy1 - busy0) - (srv1 - srv0) - (kids1 - kids0)
            r["other_cpu_share"] = max(0.0, other / ((t1 - t0) * (os.cpu_count() or 1)))
        return r

    def with_server(self, system, label, agents, fn, after=None):
        """Starts a fresh server, runs fn(proc, target_args, dir), stops it, then runs
        after(dir, result) if given.  Returns fn's result or a string saying why there is none."""
        if system in self.unavailable:
            return self.unavailable[system]
        if time.monotonic() > self.deadline - 2:
            return "skipped: over the time budget (--budget)"
        d = self.instance_dir(system, label)
        try:
            p, target = self.servers[system].start(d, agents)
        except BenchError as e:
            if system == "hive":
                reason = f"pending: hive-c0re did not come up with agent sockets " \
                         f"({str(e).splitlines()[0]})"
                self.unavailable[system] = reason
                log(f"  hive: {e}")
                return reason
            raise
        try:
            r = fn(p, target, d)
            stop(p)
            if after:
                after(d, r)
            return r
        except BenchError as e:
            log(f"  {system} {label}: {e}")
            return f"failed: {str(e).splitlines()[0][:120]}"
        finally:
            stop(p)
            if not self.args.keep:
                shutil.rmtree(d, ignore_errors=True)

    def pairs(self, system, label, npairs, count, warmup):
        agents = [f"s{i:03d}" for i in range(1, npairs + 1)] + \
                 [f"r{i:03d}" for i in range(1, npairs + 1)]

        def fn(p, target, d):
            return self.client_run(system, target, p.pid,
                                   ["--mode", "pairs", "--pairs", npairs, "--count", count,
                                    "--warmup", warmup])
        return self.with_server(system, label, agents, fn,
                                checkpoint_holds if system == "hive" else None)

    def fill(self, system, nagents, count):
        agents = [f"a{i:03d}" for i in range(1, nagents + 1)]

        def fn(p, target, d):
            idle = proc_status(p.pid)
            r = self.client_run(system, target, p.pid,
                                ["--mode", "fill", "--agents", nagents, "--count", count])
            time.sleep(0.5)
            full = proc_status(p.pid)
            r.update(rss_idle_kb=idle.get("VmRSS"), rss_kb=full.get("VmRSS"),
                     hwm_kb=full.get("VmHWM"), threads=full.get("Threads"),
                     disk_bytes=disk_bytes(d))
            wal = os.path.join(d, "hive", "hive.sqlite-wal")
            if system == "hive" and os.path.exists(wal):
                r["wal_bytes"] = os.path.getsize(wal)
            return r

        def count_rows(d, r):
            # hive only: check that every message really is in the store
            try:
                db = sqlite3.connect(os.path.join(d, "hive", "hive.sqlite"))
                r["stored_verified"] = db.execute("SELECT count(*) FROM messages").fetchone()[0]
                db.close()
            except sqlite3.Error as e:
                log(f"  hive: cannot count the stored messages: {e}")
        return self.with_server(system, "rss", agents, fn, count_rows if system == "hive" else None)


HOLD_RE = re.compile(r"copying the WAL's last frames held the main loop ([0-9.]+) ms")


def checkpoint_holds(d, r):
    """hive only: how long each of the daemon's WAL tail copies held its main loop (its own
    timing, from its debug log), so the checkpoint's stalls are told apart from the VM's."""
    try:
        with open(os.path.join(d, "hive.log"), errors="replace") as f:
            holds = [float(m) for m in HOLD_RE.findall(f.read())]
    except OSError as e:
        log(f"  hive: cannot read the daemon's log: {e}")
        return
    r["tail_copies"] = len(holds)
    r["tail_copy_max_ms"] = max(holds, default=0.0)


# ---- reporting ----

def fmt_us(x):
    if x is None:
        return "-"
    if x < 1000:
        return f"{x:.0f} µs"
    return f"{x / 1000:.2f} ms"


def fmt_rate(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt_mib(kb):
    return "-" if kb is None else f"{kb / 1024:.1f} MiB"


def med(runs, key):
    vals = [r[key] for r in runs if isinstance(r, dict) and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def ok_runs(runs):
    return [r for r in runs if isinstance(r, dict)]


def why_not(runs):
    for r in runs:
        if isinstance(r, str):
            return r
    return "not run"


def table(headers, rows):
    full = [r for r in rows if len(r) == len(headers)]
    widths = [max([len(str(h))] + [len(str(r[i])) for r in full]) for i, h in enumerate(headers)]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        if len(r) == 2 and len(headers) > 2:  # system, reason
            print(f"{r[0]:<{widths[0]}}  {r[1]}")
            continue
        print("  ".join(f"{str(c):>{w}}" if i else f"{str(c):<{w}}"
                        for i, (c, w) in enumerate(zip(r, widths))))


DISTURBED = 0.10  # share of all CPUs used by other processes' user code during a run


def disturbed(runs):
    return any(r.get("other_cpu_share", 0) > DISTURBED for r in ok_runs(runs))


def rate_cell(runs):
    rs = ok_runs(runs)
    m = med(rs, "msgs_per_s")
    mark = " *" if disturbed(runs) else ""
    if len(rs) > 1:
        lo = min(r["msgs_per_s"] for r in rs)
        hi = max(r["msgs_per_s"] for r in rs)
        return f"{fmt_rate(m)} ({lo / 1000:.1f}–{hi / 1000:.1f} k){mark}"
    return fmt_rate(m) + mark


def cpu_cell(runs, key):
    m = med(ok_runs(runs), key)
    return "-" if m is None else f"{m:.0f}"


def report(results, fill, prof, systems, args):
    reps = prof["reps"]
    n, w = prof["seq"]
    print()
    print(f"Workload 1: one pair, sequential — {n} timed messages (+{w} warm-up), "
          f"{args.body_bytes}-byte bodies, median of {reps} run(s)")
    rows = []
    for s in systems:
        runs = results["seq"][s]
        if not ok_runs(runs):
            rows.append((s, why_not(runs)))
            continue
        rs = ok_runs(runs)
        rows.append((s, rate_cell(runs), fmt_us(med(rs, "cycle_p50_us")),
                     fmt_us(med(rs, "cycle_p99_us")), fmt_us(med(rs, "wake_p50_us")),
                     fmt_us(med(rs, "wake_p99_us")), fmt_us(med(rs, "confirm_p99_us")),
                     fmt_us(max(r["confirm_max_us"] for r in rs)),
                     sum(r["confirm_over_5ms"] for r in rs),
                     cpu_cell(runs, "client_cpu_us_per_msg"), cpu_cell(runs, "server_cpu_us_per_msg")))
    table(["system", "msgs/s (min–max)", "cycle p50", "cycle p99", "send→wake p50",
           "send→wake p99", "confirm p99", "confirm max", "confirm > 5 ms", "client CPU µs/msg",
           "server CPU µs/msg"], rows)

    print()
    print(f"Workload 2: concurrent pairs, each a closed loop with one message in flight — "
          f"8 pairs × {prof['p8'][0]} and 64 pairs × {prof['p64'][0]} timed messages, "
          f"median of {reps} run(s)")
    rows = []
    for key, npairs in WORKLOADS[1:]:
        for s in systems:
            runs = results[key][s]
            if not ok_runs(runs):
                rows.append((f"{s} ×{npairs}", why_not(runs)))
                continue
            rs = ok_runs(runs)
            rows.append((f"{s} ×{npairs}", rate_cell(runs), fmt_us(med(rs, "wake_p50_us")),
                         fmt_us(med(rs, "wake_p99_us")), fmt_us(med(rs, "cycle_p99_us")),
                         fmt_us(med(rs, "confirm_p99_us")),
                         fmt_us(max(r["confirm_max_us"] for r in rs)),
                         cpu_cell(runs, "client_cpu_us_per_msg"),
                         cpu_cell(runs, "server_cpu_us_per_msg")))
    table(["system × pairs", "total msgs/s (min–max)", "send→wake p50", "send→wake p99",
           "cycle p99", "confirm p99", "confirm max", "client CPU µs/msg", "server CPU µs/msg"],
          rows)

    print()
    print(f"Workload 3: {prof['fill_agents']} agents, {prof['fill_agents'] * prof['fill_count']:,} "
          f"stored unread messages ({prof['fill_agents']} senders at once, one message in flight "
          f"each), then the server's memory")
    rows = []
    for s in systems:
        r = fill[s]
        if not isinstance(r, dict):
            rows.append((s, r))
            continue
        stored = f"{r['msgs']:,}"
        if r.get("stored_verified") is not None and r["stored_verified"] != r["msgs"]:
            stored += f" (table has {r['stored_verified']:,}!)"
        rows.append((s, stored, fmt_rate(r["msgs_per_s"]), fmt_us(r["confirm_p99_us"]),
                     fmt_us(r["confirm_max_us"]), r["confirm_over_5ms"], fmt_mib(r["rss_idle_kb"]),
                     fmt_mib(r["rss_kb"]), fmt_mib(r["hwm_kb"]),
                     f"{r['disk_bytes'] / 1048576:.1f} MiB" +
                     (f" (WAL {r['wal_bytes'] / 1048576:.1f})" if "wal_bytes" in r else "")))
    table(["system", "stored", "fill msgs/s", "confirm p99", "confirm max", "confirm > 5 ms",
           "RSS idle", "RSS full", "VmHWM", "on disk"], rows)

    print()
    print("Targets for hive-c0re (compared with the peers measured in this run):")
    rows = targets(results, fill, prof["fill_agents"] * prof["fill_count"])
    table(["target", "hive", "reference", "verdict"], rows)
    print()
    print("cycle = send call until the send is confirmed and the receiver's ack returned; "
          "send→wake = send call until the\nreceiver has the message; confirm = send call until "
          "the broker confirmed the send (hive: durable commit;\nmosquitto: PUBACK; nats: PubAck). "
          "CPU columns: user+system time of the load generator / the server\nprocess during the "
          "timed part, per message. Figures from different runs of this VM drift by ±5–30 %.")
    noisy = [f"{k}/{s}" for k in results for s in results[k] if disturbed(results[k][s])]
    noisy += [f"rss/{s}" for s, r in fill.items()
              if isinstance(r, dict) and r.get("other_cpu_share", 0) > DISTURBED]
    if noisy:
        print(f"* other processes used more than {DISTURBED:.0%} of the CPUs during a run of: "
              f"{', '.join(noisy)}; those figures are disturbed.")


def targets(results, fill, nstored):
    def m(key, system, field):
        return med(ok_runs(results[key].get(system, [])), field)

    rows = []

    def verdict(ok, have, ref):
        if have is None:
            return "pending"
        if ref is None:
            return "no reference"
        return "PASS" if ok else "FAIL"

    h, ref = m("seq", "hive", "msgs_per_s"), m("seq", "nats", "msgs_per_s")
    rows.append(("sequential msgs/s ≥ JetStream's", fmt_rate(h), f"nats {fmt_rate(ref)}",
                 verdict(h is not None and ref is not None and h >= ref, h, ref)))
    for key, npairs in WORKLOADS[1:]:
        h, ref = m(key, "hive", "msgs_per_s"), m(key, "mosquitto", "msgs_per_s")
        rows.append((f"{npairs} pairs msgs/s ≥ mosquitto QoS 1", fmt_rate(h),
                     f"mosquitto {fmt_rate(ref)}",
                     verdict(h is not None and ref is not None and h >= ref, h, ref)))
    h = m("p8", "hive", "wake_p99_us")
    rows.append(("8 pairs send→wake p99 < 1 ms", fmt_us(h), "1 ms",
                 verdict(h is not None and h < 1000, h, 1000)))
    r = fill.get("hive")
    h = r["rss_kb"] if isinstance(r, dict) else None
    rows.append((f"RSS < 32 MiB (100 agents, {nstored:,} stored)", fmt_mib(h), "32 MiB",
                 verdict(h is not None and h < 32 * 1024, h, 1)))
    seq = ok_runs(results["seq"].get("hive", []))
    h = max(r["confirm_max_us"] for r in seq) if seq else None
    over = sum(r["confirm_over_5ms"] for r in seq)
    total = sum(r["msgs"] for r in seq)
    shown = f"max {fmt_us(h)}, {over} of {total:,} > 5 ms" if seq else "-"
    rows.append(("no send stalls > 5 ms (confirm, sequential)", shown, "5 ms",
                 verdict(h is not None and h < 5000, h, 5000)))
    runs = [r for key, _ in WORKLOADS for r in ok_runs(results[key].get("hive", []))
            if "tail_copies" in r]
    copies = sum(r["tail_copies"] for r in runs)
    h = max(r["tail_copy_max_ms"] for r in runs) if copies else None
    shown = f"max {h:.2f} ms over {copies} tail copies" if copies else "no tail copy ran"
    rows.append(("a checkpoint holds the loop < 5 ms (daemon's timing, all pair runs)", shown,
                 "5 ms", verdict(h is not None and h < 5.0, h, 5.0)))
    return rows


def cpu_busy(seconds=1.0):
    """Fraction (0..1) of all CPUs busy during the next `seconds`, from /proc/stat, or None."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
        return sum(v[:8]), idle
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return None if t1 == t0 else 1.0 - (i1 - i0) / (t1 - t0)


def stall_probe(workdir, seconds):
    """How much this machine stops beside a write+fdatasync loop (tests/bench/stall-probe.c,
    built with ./build): "N gaps, P % of S s, slowest flush F ms", or None without the probe."""
    exe = os.path.join(BUILD, "tests", "bench", "stall-probe")
    if not os.access(exe, os.X_OK):
        return None
    try:
        r = subprocess.run([exe, str(seconds), workdir], capture_output=True, text=True,
                           timeout=4 * seconds + 10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.findall(r"(\d+) gaps over 1 ms, \d+ ms in all \(([\d.]+) % of the time\)"
                   r"; slowest fdatasync ([\d.]+) ms", r.stdout)
    if r.returncode != 0 or not m:
        return None
    n, pct, slowest = m[-1]
    return f"{n} gaps over 1 ms, {pct} % of {seconds} s, slowest flush {slowest} ms"


def first_line(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def tree_rev():
    rev = first_line(["git", "-C", ROOT, "describe", "--always", "--dirty"])
    return "(not a git checkout)" if rev.startswith("fatal") else rev


def header(prof, args, systems, hive_note, load, rev, stops):
    if args.hive_bin:
        hive_note = f" (binary {args.hive_bin}; tree at {rev} when the run started)" + hive_note
    else:
        hive_note = f" {rev}" + hive_note
    print(f"broker bench ({'quick' if args.quick else 'default'} mode), "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, kernel {os.uname().release}")
    print(f"hive-c0re{hive_note}; {first_line(['mosquitto', '-h']).replace(' is an', '')}"
          f"; {first_line(['nats-server', '--version']).replace(': v', ' ')}; "
          f"sqlite {sqlite3.sqlite_version}")
    print(f"systems: {', '.join(systems)}; {prof['reps']} repetition(s), run order rotated per "
          f"repetition; fresh server per run; CPUs busy before the run: "
          f"{'?' if load is None else f'{load:.0%}'}")
    print(f"this machine beside a write+fdatasync loop (stall-probe, before the run): "
          f"{stops or 'not measured (no build/tests/bench/stall-probe)'}; where it stops, every "
          f"max and count over 5 ms of a system that flushes includes those stops")
    if load is not None and load > 0.15:
        print("WARNING: something else was using the CPUs when the run started; the figures are "
              "low and noisy.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="See docs/performance.md.")
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma-separated subset of hive,mosquitto,nats (default: all)")
    ap.add_argument("--reps", type=int, help="repetitions of workloads 1 and 2")
    ap.add_argument("--body-bytes", type=int, default=200, help="message body size (default 200)")
    ap.add_argument("--hive-bin", help="use this hive-c0re instead of building ./build")
    ap.add_argument("--no-build", action="store_true", help="do not run ninja on ./build")
    ap.add_argument("--workdir", help="parent of the scratch directory (default: ./build; must be "
                    "on a real disk, not tmpfs, or the fsync figures mean nothing)")
    ap.add_argument("--keep", action="store_true", help="keep the servers' state and logs")
    ap.add_argument("--json", help="also write every raw figure to this file")
    ap.add_argument("--run-timeout", type=int, default=240,
                    help="give up on one run after this many seconds (default 240)")
    ap.add_argument("--budget", type=int,
                    help="stop starting runs after this many seconds in all; what is left is "
                         "reported as skipped (default 540, with --quick 120)")
    args = ap.parse_args()

    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
    prof = dict(PROFILES["quick" if args.quick else "default"])
    if args.reps:
        prof["reps"] = args.reps
    if args.budget is None:
        args.budget = 120 if args.quick else 540

    rev = tree_rev()
    client = build_client()
    servers = {"mosquitto": Mosquitto(), "nats": Nats()}
    hive_note = ""
    unavailable = {}
    if "hive" in systems:
        try:
            binary = args.hive_bin or build_daemon(args.no_build)
            servers["hive"] = Hive(binary)
        except BenchError as e:
            log(f"hive: {e}")
            unavailable["hive"] = f"pending: {str(e).splitlines()[0]}"
            hive_note = " (not built)"
    for s, exe in (("mosquitto", "mosquitto"), ("nats", "nats-server")):
        if s in systems and not shutil.which(exe):
            raise BenchError(f"{exe} is not installed (apt-get install {exe})")

    parent = args.workdir or BUILD
    os.makedirs(parent, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="broker-bench.", dir=parent)
    if len(os.path.join(workdir, "00-hive-xxx", "hive", "run", "agents", "r064", "mcp.sock")) > 107:
        shutil.rmtree(workdir)
        raise BenchError(f"{parent} is too deep for unix socket paths; pass --workdir")

    load = cpu_busy()
    if load is not None and load > 0.15:
        log(f"warning: {load:.0%} of the CPUs were busy before the run: something else is "
            "running, and the figures will suffer")
    stops = stall_probe(workdir, 1 if args.quick else 2)
    runner = Runner(args, client, servers, workdir)
    runner.unavailable.update(unavailable)
    results = {key: {s: [] for s in systems} for key, _ in WORKLOADS}
    fill = {}
    t_start = time.monotonic()
    try:
        # workload 3 first, so that a slow system running out of the time budget in workloads
        # 1 and 2 cannot cost the memory figures
        for s in systems:
            r = runner.fill(s, prof["fill_agents"], prof["fill_count"])
            fill[s] = r
            shown = f"{r['msgs']:,} stored at {r['msgs_per_s']:,.0f} msgs/s, RSS " \
                    f"{fmt_mib(r['rss_kb'])}" if isinstance(r, dict) else r
            log(f"[rss] {s:<10} {shown}")
        for rep in range(prof["reps"]):
            order = systems[rep % len(systems):] + systems[:rep % len(systems)]
            for key, npairs in WORKLOADS:
                count, warmup = prof[key]
                for s in order:
                    r = runner.pairs(s, key, npairs, count, warmup)
                    results[key][s].append(r)
                    shown = f"{r['msgs_per_s']:,.0f} msgs/s, send→wake p99 " \
                            f"{fmt_us(r['wake_p99_us'])}, other CPU use " \
                            f"{r.get('other_cpu_share', 0):.0%}" if isinstance(r, dict) else r
                    log(f"[{rep + 1}/{prof['reps']}] {key:<4} {s:<10} {shown}")
    finally:
        stop_all()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"profile": prof, "results": results, "fill": fill}, f, indent=1)
    header(prof, args, systems, hive_note, load, rev, stops)
    report(results, fill, prof, systems, args)
    print(f"\n(total wall time {time.monotonic() - t_start:.0f} s)")
    return 0


class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum, frame):
    raise Interrupted(signum)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"broker-bench: {e}")
        sys.exit(1)
    except Interrupted as e:
        stop_all()
        log(f"broker-bench: {e}: stopped every server it had started")
        sys.exit(128 + e.signum)
    finally:
        stop_all()
