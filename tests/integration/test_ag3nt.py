"""The in-container harness's client side: hive-ag3nt / hive-m1nd CLI verbs and the stdio MCP
server, against the real daemon (process backend, sleeping payloads, agents a1 b2 c3)."""

import json
import os
import re
import select
import socket
import subprocess
import time

import pytest

from conftest import ROOT, wait_for

AG3NT_DIR = os.environ.get("HIVE_AG3NT_DIR", os.path.join(ROOT, "build", "ag3nt"))
AG3NT = os.path.join(AG3NT_DIR, "hive-ag3nt")
M1ND = os.path.join(AG3NT_DIR, "hive-m1nd")

AGENT_TOOLS = ["send", "recv", "ask", "answer", "remind", "get_open_threads", "cancel_loose_end",
               "set_status", "whoami", "request_next_turn"]
MANAGER_TOOLS = ["request_spawn", "request_apply_commit", "request_update_meta_inputs", "kill",
                 "start", "restart", "update", "get_logs"]


def harness_env(sock, state_dir=None, **extra):
    """A clean environment: no HIVE_* leaking in from the caller, fast reconnects."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env.update(HIVE_SOCKET=sock, HIVE_RECONNECT_BASE_MS="50")
    if state_dir:
        env["HIVE_STATE_DIR"] = state_dir
    env.update(extra)
    return env


def slurp(path):
    with open(path) as f:
        return f.read()


def run(binary, sock, *args, input=None, timeout=30, **env):
    return subprocess.run([binary, *args], capture_output=True, text=True, input=input,
                          timeout=timeout, env=harness_env(sock, **env))


def ag3nt(d, name, *args, **kw):
    return run(AG3NT if name != "manager" else M1ND, d.agent_sock(name), *args, **kw)


# ---- CLI ----

def test_send_then_recv(hive):
    d = hive()
    p = ag3nt(d, "a1", "send", "b2", "hello from the cli")
    assert p.returncode == 0, p.stderr
    m = re.fullmatch(r"sent as message (\d+)\n", p.stdout)
    assert m, p.stdout
    mid = int(m.group(1))
    # Checked on the daemon side: b2's inbox holds it, from a1 (the socket is the sender).
    b = d.connect("b2")
    [msg] = b.req({"cmd": "recv"})["messages"]
    assert (msg["id"], msg["from"], msg["body"]) == (mid, "a1", "hello from the cli")
    assert b.req({"cmd": "ack", "ids": [mid]})["acked"] == 1

    mid2 = d.connect("a1").req({"cmd": "send", "to": "b2", "body": "second"})["id"]
    p = ag3nt(d, "b2", "recv")
    assert p.returncode == 0, p.stderr
    assert re.fullmatch(rf"#{mid2} \S+Z a1: second\n", p.stdout), p.stdout
    # recv acknowledges what it printed.
    assert b.req({"cmd": "status"})["pending"] == 0

    p = ag3nt(d, "b2", "recv")
    assert p.returncode == 0 and p.stdout == "" and "no messages" in p.stderr


def test_recv_json_max_and_no_ack(hive):
    d = hive()
    a = d.connect("a1")
    ids = [a.req({"cmd": "send", "to": "c3", "body": f"m{i}"})["id"] for i in range(3)]
    p = ag3nt(d, "c3", "recv", "--max", "2", "--json", "--no-ack")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["ok"] is True and [m["id"] for m in r["messages"]] == ids[:2]
    assert d.connect("c3").req({"cmd": "status"}) == {"version": 1, "ok": True, "pending": 3,
                                                      "leased": 2}


def test_recv_waits_for_a_message(hive):
    d = hive()
    proc = subprocess.Popen([AG3NT, "recv", "--wait", "20"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=harness_env(d.agent_sock("a1")))
    try:
        wait_for(lambda: connected(proc.pid), what="the cli connected")
        mid = d.connect("b2").req({"cmd": "send", "to": "a1", "body": "wake up"})["id"]
        out, err = proc.communicate(timeout=15)
    finally:
        kill(proc)
    assert proc.returncode == 0, err
    assert out.startswith(f"#{mid} ") and out.endswith("b2: wake up\n")


def test_send_body_from_stdin(hive):
    d = hive()
    b = d.connect("b2")
    body = "line one\nline two\n"
    for args in (["send", "b2", "--body", "-"], ["send", "b2", "-"]):
        p = ag3nt(d, "a1", *args, input=body)
        assert p.returncode == 0, p.stderr
        [m] = b.req({"cmd": "recv"})["messages"]
        assert m["body"] == body and m["from"] == "a1"
        b.req({"cmd": "ack", "ids": [m["id"]]})
    p = ag3nt(d, "a1", "send", "b2", "--body", "-dashed text")
    assert p.returncode == 0, p.stderr
    assert b.req({"cmd": "recv"})["messages"][0]["body"] == "-dashed text"


def test_send_in_reply_to_and_broadcast(hive):
    d = hive()
    p = ag3nt(d, "a1", "send", "*", "to everyone")
    assert p.returncode == 0 and p.stdout == "sent to 3 recipients\n", (p.stdout, p.stderr)
    [m] = d.connect("b2").req({"cmd": "recv"})["messages"]
    p = ag3nt(d, "b2", "send", "a1", "--in-reply-to", str(m["id"]), "got it", "--json")
    assert p.returncode == 0, p.stderr
    rid = json.loads(p.stdout)["id"]
    [back] = d.connect("a1").req({"cmd": "recv"})["messages"]
    assert (back["id"], back["in_reply_to"], back["body"]) == (rid, m["id"], "got it")


def test_wake(hive):
    d = hive()
    p = ag3nt(d, "a1", "wake", "--from", "cron", "tick")
    assert p.returncode == 0 and re.fullmatch(r"woke as message \d+\n", p.stdout), p.stderr
    p = ag3nt(d, "a1", "wake", "--from", "watcher", "--body", "-", input="from stdin")
    assert p.returncode == 0, p.stderr
    msgs = d.connect("a1").req({"cmd": "recv", "max": 5})["messages"]
    assert [(m["from"], m["to"], m["body"]) for m in msgs] == [
        ("cron", "a1", "tick"), ("watcher", "a1", "from stdin")]
    p = ag3nt(d, "a1", "wake", "tick")
    assert p.returncode == 2 and "--from" in p.stderr


def test_call_prints_the_raw_answer(hive):
    d = hive()
    p = ag3nt(d, "a1", "call", "whoami")
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith("\n") and p.stdout.count("\n") == 1
    assert json.loads(p.stdout) == {"version": 1, "ok": True, "name": "a1", "role": "agent",
                                    "daemon_version": "0.1.0"}
    p = ag3nt(d, "a1", "call", "send", '{"to":"c3","body":"via call"}')
    assert p.returncode == 0 and json.loads(p.stdout)["id"] > 0
    [m] = d.connect("c3").req({"cmd": "recv"})["messages"]
    assert (m["from"], m["body"]) == ("a1", "via call")
    p = ag3nt(d, "c3", "call", "status", "-", input="{}")
    assert p.returncode == 0 and json.loads(p.stdout)["leased"] == 1
    # A refusal: the raw line on stdout, the sentence on stderr, exit 1.
    p = ag3nt(d, "a1", "call", "send", '{"to":"ghost","body":"x"}')
    assert p.returncode == 1
    r = json.loads(p.stdout)
    assert r["ok"] is False and r["error_code"] == "ENOENT"
    assert 'unknown recipient "ghost"' in p.stderr and "(ENOENT)" in p.stderr


def test_manager_socket(hive):
    d = hive()
    p = ag3nt(d, "manager", "call", "whoami")
    assert p.returncode == 0 and json.loads(p.stdout)["role"] == "manager"
    p = ag3nt(d, "manager", "send", "a1", "orders")
    assert p.returncode == 0, p.stderr
    [m] = d.connect("a1").req({"cmd": "recv"})["messages"]
    assert (m["from"], m["body"]) == ("manager", "orders")
    p = ag3nt(d, "manager", "call", "kill", '{"name":"manager"}')
    assert p.returncode == 1 and "(EPERM)" in p.stderr


def test_refusals_exit_1(hive):
    d = hive()
    p = ag3nt(d, "a1", "send", "ghost", "x")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == ('hive-ag3nt: unknown recipient "ghost": no such agent in this hive '
                        "(ENOENT)\n")
    p = ag3nt(d, "a1", "send", "a1", "me")
    assert p.returncode == 1 and "(EINVAL)" in p.stderr and "wake" in p.stderr
    p = ag3nt(d, "a1", "call", "request_spawn", '{"name":"zz"}')
    assert p.returncode == 1 and "manager only" in p.stderr and "(EACCES)" in p.stderr
    p = ag3nt(d, "a1", "call", "teleport")
    assert p.returncode == 1 and "(EOPNOTSUPP)" in p.stderr


@pytest.mark.parametrize("args,needle", [
    ([], "Usage"),
    (["send"], "usage: hive-ag3nt send"),
    (["send", "b2"], "body is missing"),
    (["send", "b2", "x", "--body", "y"], "once"),
    (["send", "b2", "x", "--wait", "3"], "unknown option --wait"),
    (["recv", "--wait", "soon"], '--wait "soon"'),
    (["recv", "--wait", "181"], "from 0 to 180"),
    (["recv", "--max", "0"], "from 1 to 32"),
    (["recv", "extra"], "usage"),
    (["teleport"], 'unknown verb "teleport"'),
    (["--bogus", "recv"], "unknown option --bogus"),
    (["call"], "usage"),
    (["call", "send", "[1]"], "JSON object"),
    (["call", "send", "{nope"], "JSON object"),
    (["call", "send", '{"cmd":"x"}'], '"cmd"'),
    (["--timeout", "0", "recv"], "--timeout"),
])
def test_usage_errors_exit_2(hive, args, needle):
    d = hive()
    p = ag3nt(d, "a1", *args)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert needle in p.stderr


def test_bad_environment_exits_2(hive):
    d = hive()
    p = ag3nt(d, "a1", "recv", HIVE_PORT="eighty")
    assert p.returncode == 2 and "$HIVE_PORT" in p.stderr and "1 to 65535" in p.stderr
    p = ag3nt(d, "a1", "recv", HIVE_RECONNECT_BASE_MS="0")
    assert p.returncode == 2 and "$HIVE_RECONNECT_BASE_MS" in p.stderr


def test_help_lists_verbs_and_environment():
    p = subprocess.run([AG3NT, "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    for word in ("send", "recv", "wake", "call", "mcp", "HIVE_SOCKET", "HIVE_STATE_DIR",
                 "HIVE_RECONNECT_BASE_MS", "--no-retry", "Exit codes"):
        assert word in p.stdout
    p = subprocess.run([M1ND, "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("hive-m1nd ")


# ---- unreachable daemon, reconnects ----

def test_no_socket_exits_3_at_once(tmpbase):
    sock = os.path.join(tmpbase, "none.sock")
    t = time.monotonic()
    p = run(AG3NT, sock, "send", "b2", "x", "--no-retry")
    assert time.monotonic() - t < 5
    assert p.returncode == 3
    assert f"there is no socket at {sock}" in p.stderr and "HIVE_SOCKET" in p.stderr
    assert "retrying" not in p.stderr


def test_stale_socket_exits_3(tmpbase):
    sock = os.path.join(tmpbase, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock)
    s.close()  # the file stays, nobody listens
    p = run(AG3NT, sock, "--no-retry", "recv")
    assert p.returncode == 3 and "nothing is listening" in p.stderr


def test_retry_for_gives_up_with_logged_retries(tmpbase):
    sock = os.path.join(tmpbase, "none.sock")
    t = time.monotonic()
    p = run(AG3NT, sock, "send", "b2", "x", "--retry-for", "1")
    elapsed = time.monotonic() - t
    assert p.returncode == 3
    assert 0.9 < elapsed < 10
    retries = [line for line in p.stderr.splitlines() if "retrying in" in line]
    # base 50 ms: 50, 100, 200, 400, then the rest of the second.
    assert len(retries) >= 4, p.stderr
    assert retries[0].startswith("WARNING ag3nt: cannot reach the daemon at " + sock)
    assert "retrying in 0.050 s (retry 1)" in retries[0]
    assert "retrying in 0.100 s (retry 2)" in retries[1]
    assert "gave up after retrying for 1 s" in p.stderr


def test_waits_for_a_daemon_that_is_not_up_yet(make_daemon):
    d = make_daemon(start=False)
    sock = os.path.join(d.run, "manager", "mcp.sock")
    errlog = os.path.join(d.base, "cli.err")
    with open(errlog, "w") as ef:
        proc = subprocess.Popen([M1ND, "call", "whoami"], stdout=subprocess.PIPE, stderr=ef,
                                text=True, env=harness_env(sock))
    try:
        wait_for(lambda: "retrying in" in slurp(errlog), what="a logged retry")
        assert proc.poll() is None
        d.start()
        out, _ = proc.communicate(timeout=20)
    finally:
        kill(proc)
    err = slurp(errlog)
    assert proc.returncode == 0, err
    assert json.loads(out)["name"] == "manager"
    assert "retrying in" in err


def connected(pid):
    """True once the process holds a socket (its connection to the daemon)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                return True
        except OSError:
            pass
    return False


def kill(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_recv_is_sent_again_after_a_daemon_restart(hive):
    d = hive()
    errlog = os.path.join(d.base, "cli.err")
    with open(errlog, "w") as ef:
        proc = subprocess.Popen([AG3NT, "recv", "--wait", "30"], stdout=subprocess.PIPE,
                                stderr=ef, text=True, env=harness_env(d.agent_sock("a1")))
    try:
        wait_for(lambda: connected(proc.pid), what="the cli connected")
        d.stop()
        d.start()
        mid = d.connect("b2").req({"cmd": "send", "to": "a1", "body": "after restart"})["id"]
        out, _ = proc.communicate(timeout=20)
    finally:
        kill(proc)
    err = slurp(errlog)
    assert proc.returncode == 0, err
    assert out.startswith(f"#{mid} ") and out.endswith("b2: after restart\n")
    assert 'broke before the answer to "recv" arrived' in err
    assert d.connect("a1").req({"cmd": "status"})["pending"] == 0  # acknowledged


# ---- MCP ----

class Mcp:
    """hive-ag3nt mcp (or hive-m1nd mcp) driven over its stdin/stdout."""

    def __init__(self, binary, sock, state_dir, errlog, **env):
        self.errlog = errlog
        with open(self.errlog, "w") as ef:
            self.p = subprocess.Popen([binary, "mcp"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=ef,
                                      env=harness_env(sock, state_dir, **env))
        self.buf = b""
        self.ids = 0

    def write(self, data):
        if isinstance(data, (dict, list)):
            data = json.dumps(data)
        if isinstance(data, str):
            data = data.encode()
        self.p.stdin.write(data if data.endswith(b"\n") else data + b"\n")
        self.p.stdin.flush()

    def read(self, timeout=20):
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no reply within {timeout}s; stderr: {self.stderr()}"
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                assert chunk, f"the server closed stdout; stderr: {self.stderr()}"
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def nothing_to_read(self, wait=0.3):
        r, _, _ = select.select([self.p.stdout.fileno()], [], [], wait)
        return not r and b"\n" not in self.buf

    def rpc(self, method, params=None, timeout=20):
        self.ids += 1
        msg = {"jsonrpc": "2.0", "id": self.ids, "method": method}
        if params is not None:
            msg["params"] = params
        self.write(msg)
        reply = self.read(timeout)
        assert reply["jsonrpc"] == "2.0" and reply["id"] == self.ids, reply
        return reply

    def initialize(self):
        r = self.rpc("initialize", {"protocolVersion": "2024-11-05", "capabilities": {},
                                    "clientInfo": {"name": "pytest", "version": "1"}})
        self.write({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return r

    def call(self, tool, args=None, timeout=20):
        params = {"name": tool}
        if args is not None:
            params["arguments"] = args
        return self.rpc("tools/call", params, timeout)

    def stderr(self):
        with open(self.errlog) as f:
            return f.read()

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                raise AssertionError("the MCP server did not exit at the end of its input")
        return self.p.returncode


@pytest.fixture
def mcp(tmpbase):
    servers = []

    def make(d, name, binary=None, state_dir=None, **env):
        state = state_dir or os.path.join(tmpbase, f"state-{name}-{len(servers)}")
        os.makedirs(state, exist_ok=True)
        m = Mcp(binary or (M1ND if name == "manager" else AG3NT), d.agent_sock(name), state,
                os.path.join(tmpbase, f"mcp-{name}-{len(servers)}.err"), **env)
        m.state = state
        servers.append(m)
        return m

    yield make
    for m in servers:
        if m.p.poll() is None:
            m.p.kill()
            m.p.wait()


def text_of(reply):
    result = reply["result"]
    [c] = result["content"]
    assert c["type"] == "text"
    return c["text"]


def check_schema(tool):
    assert set(tool) >= {"name", "description", "inputSchema"}
    assert isinstance(tool["description"], str) and len(tool["description"]) > 10
    s = tool["inputSchema"]
    assert s["type"] == "object"
    assert isinstance(s["properties"], dict)
    assert isinstance(s["required"], list) and len(set(s["required"])) == len(s["required"])
    assert set(s["required"]) <= set(s["properties"])
    assert s["additionalProperties"] is False
    for name, prop in s["properties"].items():
        assert re.fullmatch(r"[a-z_]+", name)
        assert prop["type"] in ("string", "integer", "boolean", "array"), (tool["name"], name)
        assert isinstance(prop["description"], str) and prop["description"]
        if prop["type"] == "array":
            assert prop["items"] == {"type": "string"}
        if "enum" in prop:
            assert prop["type"] == "string" and all(isinstance(e, str) for e in prop["enum"])
        for bound in ("minimum", "maximum"):
            if bound in prop:
                assert prop["type"] == "integer" and isinstance(prop[bound], int)


def protocol_fields():
    """docs/protocol.md's agent-socket table: verb → (required fields, optional fields)."""
    with open(os.path.join(ROOT, "docs", "protocol.md")) as f:
        text = f.read()
    section = text.split("## Agent sockets", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        m = re.match(r"\| `([a-z_]+)`[^|]*\| ([^|]*) \|", line)
        if not m:
            continue
        verb, cell = m.groups()
        cell = re.sub(r"\([^)]*\)", "", cell)  # ranges and notes
        optional_group = ""
        if "exactly one of" in cell:
            cell, rest = cell.split("exactly one of", 1)
            optional_group, _, tail = rest.partition(",")
            cell += "," + tail
        req = set()
        opt = set(re.findall(r"`([a-z_]+)`", optional_group))
        for tok in re.findall(r"`([a-z_]+\??)`", cell):
            (opt if tok.endswith("?") else req).add(tok.rstrip("?"))
        out[verb] = (req, opt)
    return out


def test_mcp_initialize_and_tool_schemas(hive, mcp):
    d = hive()
    m = mcp(d, "a1")
    r = m.initialize()["result"]
    assert r["protocolVersion"] == "2024-11-05"
    assert r["capabilities"] == {"tools": {}}
    assert r["serverInfo"]["name"] == "hyperhive" and r["serverInfo"]["version"]
    tools = m.rpc("tools/list")["result"]["tools"]
    assert [t["name"] for t in tools] == AGENT_TOOLS
    for t in tools:
        check_schema(t)
    assert m.close() == 0


# Fields of the socket verbs that the MCP tools handle themselves: the recv tool acknowledges
# what it hands out (TOOL_ACK_AFTER), so the model never passes "ack".
WIRE_ONLY = {"recv": {"ack"}}


def test_mcp_schemas_match_the_protocol_doc(hive, mcp):
    d = hive()
    m = mcp(d, "manager")
    m.initialize()
    tools = {t["name"]: t for t in m.rpc("tools/list")["result"]["tools"]}
    doc = protocol_fields()
    assert {"send", "recv", "ask", "remind", "request_apply_commit"} <= set(doc)
    compared = 0
    for name, t in tools.items():
        if name not in doc:
            continue
        req, opt = doc[name]
        opt = opt - WIRE_ONLY.get(name, set())
        s = t["inputSchema"]
        assert set(s["required"]) == req, name
        assert set(s["properties"]) == req | opt, name
        compared += 1
    assert compared >= 12


def test_m1nd_adds_the_manager_tools(hive, mcp):
    d = hive()
    m = mcp(d, "manager")
    m.initialize()
    tools = m.rpc("tools/list")["result"]["tools"]
    assert [t["name"] for t in tools] == AGENT_TOOLS + MANAGER_TOOLS
    for t in tools:
        check_schema(t)
    by = {t["name"]: t["inputSchema"] for t in tools}
    assert by["start"]["required"] == ["name"] and list(by["start"]["properties"]) == ["name"]
    assert by["get_logs"]["required"] == ["agent"]
    assert set(by["get_logs"]["properties"]) == {"agent", "lines"}
    # hive-ag3nt does not have them, also not by calling them.
    a = mcp(d, "a1")
    a.initialize()
    assert not set(MANAGER_TOOLS) & {t["name"] for t in a.rpc("tools/list")["result"]["tools"]}
    r = a.call("kill", {"name": "b2"})
    assert r["error"]["code"] == -32602 and 'unknown tool "kill"' in r["error"]["message"]


def test_mcp_send_reaches_the_daemon(hive, mcp):
    d = hive()
    m = mcp(d, "a1")
    m.initialize()
    r = m.call("send", {"to": "b2", "body": "over mcp"})
    assert "isError" not in r["result"]
    sent = json.loads(text_of(r))
    assert set(sent) == {"id"}
    got = d.connect("b2").req({"cmd": "recv"})
    [msg] = got["messages"]
    assert (msg["id"], msg["from"], msg["to"], msg["body"]) == (sent["id"], "a1", "b2",
                                                                "over mcp")


def test_mcp_recv_hands_out_and_acks(hive, mcp):
    d = hive()
    mid = d.connect("a1").req({"cmd": "send", "to": "b2", "body": "for b2"})["id"]
    m = mcp(d, "b2")
    m.initialize()
    got = json.loads(text_of(m.call("recv", {"wait_seconds": 5, "max": 4})))
    assert [(x["id"], x["from"], x["body"]) for x in got["messages"]] == [(mid, "a1", "for b2")]
    b = d.connect("b2")
    wait_for(lambda: b.req({"cmd": "status"})["pending"] == 0, what="the ack")
    assert json.loads(text_of(m.call("recv"))) == {"messages": []}


def test_mcp_other_tools_reach_the_daemon(hive, mcp):
    d = hive()
    m = mcp(d, "a1")
    m.initialize()
    assert json.loads(text_of(m.call("whoami"))) == {"name": "a1", "role": "agent",
                                                     "daemon_version": "0.1.0"}
    assert text_of(m.call("set_status", {"text": "testing mcp"})) == "{}"
    assert d.db().execute("SELECT status_text FROM agents WHERE name='a1'").fetchone()[0] == \
        "testing mcp"
    q = json.loads(text_of(m.call("ask", {"question": "which?", "options": ["x", "y"],
                                          "to": "b2"})))
    rem = json.loads(text_of(m.call("remind", {"message": "later", "delay_seconds": 3600})))
    threads = json.loads(text_of(m.call("get_open_threads")))
    assert [x["id"] for x in threads["questions"]] == [q["id"]]
    assert [x["id"] for x in threads["reminders"]] == [rem["id"]]
    assert text_of(m.call("cancel_loose_end", {"kind": "reminder", "id": rem["id"]})) == "{}"
    # b2 answers over its own MCP server.
    b = mcp(d, "b2")
    b.initialize()
    assert text_of(b.call("answer", {"id": q["id"], "answer": "x"})) == "{}"
    assert d.request({"cmd": "questions"})["questions"] == []


def test_mcp_refusal_is_a_tool_error(hive, mcp):
    d = hive()
    m = mcp(d, "a1")
    m.initialize()
    r = m.call("send", {"to": "ghost", "body": "x"})
    assert r["result"]["isError"] is True
    assert text_of(r) == 'unknown recipient "ghost": no such agent in this hive (ENOENT)'
    r = m.call("answer", {"id": 999, "answer": "no"})
    assert r["result"]["isError"] is True and text_of(r).endswith("(ENOENT)")


def test_mcp_manager_tools_reach_the_daemon(hive, mcp):
    d = hive()
    m = mcp(d, "manager")
    m.initialize()
    r = m.call("request_spawn", {"name": "d4", "description": "from mcp"})
    assert "isError" not in r["result"], text_of(r)
    aid = json.loads(text_of(r))["id"]
    [ap] = [a for a in d.request({"cmd": "pending"})["approvals"] if a["id"] == aid]
    assert (ap["kind"], ap["agent"], ap["status"]) == ("spawn", "d4", "pending")
    r = m.call("kill", {"name": "manager"})
    assert r["result"]["isError"] is True and text_of(r) == \
        "the manager cannot kill itself (EPERM)"
    r = m.call("get_logs", {"agent": "a1", "lines": 900})
    assert r["error"]["code"] == -32602 and "from 1 to 500" in r["error"]["message"]


@pytest.mark.parametrize("args,needle", [
    ({"to": "b2"}, 'send needs "body"'),
    ({"to": "b2", "body": 5}, '"body" must be a string'),
    ({"to": "b2", "body": "x", "from": "c3"}, 'no argument "from"'),
    ({"to": "b2", "body": "x", "cmd": "recv"}, 'no argument "cmd"'),
    ({"to": "b2", "body": "x", "in_reply_to": "7"}, '"in_reply_to" must be a whole number'),
    ({"to": "b2", "body": "x", "in_reply_to": 0}, "at least 1"),
    ([1, 2], "must be a JSON object"),
])
def test_mcp_bad_arguments_are_invalid_params(hive, mcp, args, needle):
    d = hive()
    m = mcp(d, "a1")
    m.initialize()
    r = m.call("send", args)
    assert r["error"]["code"] == -32602 and needle in r["error"]["message"], r
    # Nothing reached the daemon.
    assert d.connect("b2").req({"cmd": "status"})["pending"] == 0


def test_mcp_json_rpc_errors(hive, mcp):
    d = hive()
    m = mcp(d, "a1")
    m.initialize()
    m.write("{not json")
    r = m.read()
    assert r["id"] is None and r["error"]["code"] == -32700
    m.write({"jsonrpc": "2.0", "id": "x1", "method": "resources/list"})
    r = m.read()
    assert r["id"] == "x1" and r["error"]["code"] == -32601
    m.write({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "nope"}})
    r = m.read()
    assert r["id"] == 7 and r["error"]["code"] == -32602 and 'unknown tool "nope"' in \
        r["error"]["message"]
    m.write({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {}})
    assert m.read()["error"]["code"] == -32602
    m.write({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": [1]})
    assert m.read()["error"]["code"] == -32602
    m.write({"jsonrpc": "2.0", "id": 10, "method": "initialize", "params": {}})
    assert m.read()["error"]["code"] == -32602
    m.write({"id": 11, "method": "ping"})
    assert m.read() == {"jsonrpc": "2.0", "id": 11,
                        "error": {"code": -32600,
                                  "message": 'Invalid Request: "jsonrpc" must be "2.0"'}}
    m.write("[]")
    assert m.read()["error"]["code"] == -32600
    m.write("42")
    assert m.read()["error"]["code"] == -32600
    # Notifications (also unknown ones) and blank lines get no answer.
    m.write({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}})
    m.write({"jsonrpc": "2.0", "method": "no/such/notification"})
    m.write("")
    assert m.nothing_to_read()
    assert m.rpc("ping")["result"] == {}
    # A batch: one array of replies, none for its notification.
    m.write([{"jsonrpc": "2.0", "id": "a", "method": "ping"},
             {"jsonrpc": "2.0", "method": "notifications/initialized"},
             {"jsonrpc": "2.0", "id": "b", "method": "bogus"}])
    r = m.read()
    assert [x["id"] for x in r] == ["a", "b"]
    assert r[0]["result"] == {} and r[1]["error"]["code"] == -32601
    assert m.close() == 0


def test_mcp_request_next_turn_creates_the_marker(hive, mcp):
    d = hive()
    m = mcp(d, "a1")
    m.initialize()
    marker = os.path.join(m.state, "hyperhive-next-turn")
    assert not os.path.exists(marker)
    r = m.call("request_next_turn", {})
    assert "isError" not in r["result"]
    assert os.path.isfile(marker)
    assert "isError" not in m.call("request_next_turn")["result"]  # again: still fine
    # A state dir that is not there: a tool error saying where.
    gone = mcp(d, "b2", state_dir=os.path.join(m.state, "sub"))
    os.rmdir(gone.state)
    gone.initialize()
    r = gone.call("request_next_turn")
    assert r["result"]["isError"] is True and gone.state in text_of(r)


def test_mcp_survives_a_daemon_restart(hive, mcp):
    d = hive()
    m = mcp(d, "a1")
    m.initialize()
    assert json.loads(text_of(m.call("whoami")))["name"] == "a1"
    d.stop()
    d.start()
    assert json.loads(text_of(m.call("whoami")))["name"] == "a1"
    # The daemon goes away again; a call waits for it instead of failing.
    d.stop()
    m.ids += 1
    m.write({"jsonrpc": "2.0", "id": m.ids, "method": "tools/call",
             "params": {"name": "send", "arguments": {"to": "b2", "body": "patience"}}})
    wait_for(lambda: "retrying in" in m.stderr(), what="a logged retry")
    assert m.nothing_to_read(0.1)
    d.start()
    r = m.read()
    assert r["id"] == m.ids and "isError" not in r["result"], r
    [msg] = d.connect("b2").req({"cmd": "recv"})["messages"]
    assert (msg["from"], msg["body"]) == ("a1", "patience")
    assert m.close() == 0
