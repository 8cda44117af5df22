"""Tests of the fake Claude Code CLI (tests/fakes/claude): that it keeps the real CLI's interface
(commander's option errors, the --print/stream-json rules, the configuration files it insists on,
sessions under ~/.claude/projects, the stream-json lines, the login failure and the setup-token
flow), and that its tool calls go through a real `hive-ag3nt mcp` to a real daemon.

Every test runs the fake as a separate process with its own HOME and cwd, as the harness will."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import ROOT

FAKE = os.path.join(ROOT, "tests", "fakes", "claude")
AG3NT_DIR = os.environ.get("HIVE_AG3NT_DIR", os.path.join(ROOT, "build", "ag3nt"))
AG3NT = os.path.join(AG3NT_DIR, "hive-ag3nt")
STREAM = ["--print", "--verbose", "--output-format", "stream-json"]
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class Result:
    def __init__(self, p):
        self.rc = p.returncode
        self.out = p.stdout
        self.err = p.stderr

    @property
    def lines(self):
        return [json.loads(x) for x in self.out.splitlines()]

    def __repr__(self):
        return f"rc={self.rc} out={self.out!r} err={self.err!r}"


class Claude:
    """Runs the fake with HOME and cwd in one temp dir (the agent's state dir)."""

    def __init__(self, base):
        self.home = str(base)
        self.log = os.path.join(self.home, "fake-claude.log")
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                    "HOME": self.home, "FAKE_CLAUDE_LOG": self.log}

    def envf(self, extra):
        e = dict(self.env)
        e.update({k: v for k, v in extra.items() if v is not None})
        for k, v in extra.items():
            if v is None:
                e.pop(k, None)
        return e

    def run(self, *args, input="hello", timeout=30, **env):
        p = subprocess.run([FAKE, *args], input=input, capture_output=True, text=True,
                           timeout=timeout, cwd=self.home, env=self.envf(env))
        return Result(p)

    def popen(self, *args, **env):
        return subprocess.Popen([FAKE, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.home,
                                env=self.envf(env))

    def write(self, name, content):
        path = os.path.join(self.home, name)
        with open(path, "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path

    def script(self, *rules):
        return self.write("script.json", {"rules": list(rules)})

    def project_dir(self):
        return os.path.join(self.home, ".claude", "projects",
                            re.sub(r"[^a-zA-Z0-9]", "-", os.path.realpath(self.home)))

    def log_lines(self):
        with open(self.log) as f:
            return [json.loads(x) for x in f]


@pytest.fixture
def claude(tmp_path):
    return Claude(tmp_path)


def context(usage):
    return (usage["input_tokens"] + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"])


# ---- command line ----

def test_version_and_help(claude):
    r = claude.run("--version")
    assert (r.rc, r.out, r.err) == (0, "2.1.83 (Claude Code)\n", "")
    assert claude.run("-v").out == "2.1.83 (Claude Code)\n"
    r = claude.run("--help")
    assert r.rc == 0 and r.out.startswith("Usage: claude [options] [command] [prompt]\n")
    for flag in ("--print", "--output-format <format>", "--mcp-config <configs...>",
                 "--allowedTools, --allowed-tools <tools...>", "--continue", "setup-token"):
        assert flag in r.out


def test_unknown_option(claude):
    r = claude.run("-p", "--foo")
    assert (r.rc, r.out, r.err) == (1, "", "error: unknown option '--foo'\n")
    r = claude.run("-p", "--modle", "x")
    assert (r.rc, r.err) == (1, "error: unknown option '--modle'\n(Did you mean --model?)\n")
    r = claude.run("-p", "--verbose=1")
    assert (r.rc, r.err) == (1, "error: unknown option '--verbose=1'\n")


def test_option_values(claude):
    r = claude.run("-p", "--model")
    assert (r.rc, r.err) == (1, "error: option '--model <model>' argument missing\n")
    r = claude.run("-p", "--output-format", "xml")
    assert (r.rc, r.err) == (1, "error: option '--output-format <format>' argument 'xml' is "
                                "invalid. Allowed choices are text, json, stream-json.\n")
    r = claude.run("-p", "--permission-mode", "yolo")
    assert r.rc == 1 and "Allowed choices are acceptEdits, bypassPermissions" in r.err
    # --name=value, and a variadic option eating the following words
    r = claude.run("-p", "--output-format=json", "--allowedTools", "a", "b", "--model=opus")
    assert r.rc == 0, r
    assert json.loads(r.out)["result"] == "ok"
    assert claude.log_lines()[-1]["argv"][1:] == ["-p", "--output-format=json", "--allowedTools",
                                                  "a", "b", "--model=opus"]


def test_stream_json_needs_verbose(claude):
    r = claude.run("--print", "--output-format", "stream-json")
    assert (r.rc, r.out) == (1, "")
    assert r.err == "Error: When using --print, --output-format=stream-json requires --verbose\n"


def test_print_needs_input(claude):
    r = claude.run(*STREAM, input="")
    assert r.rc == 1 and r.out == ""
    assert r.err == ("Error: Input must be provided either through stdin or as a prompt argument "
                     "when using --print\n")
    r = claude.run("-p", "the prompt as an argument", input="")
    assert (r.rc, r.out) == (0, "ok\n")


def test_config_files_must_exist_and_parse(claude):
    missing = os.path.join(claude.home, "missing.json")
    r = claude.run(*STREAM, "--mcp-config", missing)
    assert (r.rc, r.out) == (1, "")
    assert r.err == f"Error: Invalid MCP configuration:\nMCP config file not found: {missing}\n"
    bad = claude.write("bad.json", "{not json")
    r = claude.run(*STREAM, "--mcp-config", bad)
    assert r.rc == 1 and r.err.startswith("Error: Invalid MCP configuration:\n")
    schema = claude.write("schema.json", {"mcpServers": {"hyperhive": {"args": ["mcp"]}}})
    r = claude.run(*STREAM, "--mcp-config", schema)
    assert r.rc == 1 and r.err == ("Error: Invalid MCP configuration:\nmcpServers.hyperhive: "
                                   "Does not adhere to MCP server configuration schema\n")
    r = claude.run(*STREAM, "--settings", missing)
    assert (r.rc, r.err) == (1, f"Error: Settings file not found: {missing}\n")
    r = claude.run(*STREAM, "--settings", bad)
    assert r.rc == 1 and r.err.startswith("Error: Invalid JSON in settings file")
    r = claude.run(*STREAM, "--system-prompt-file", missing)
    assert (r.rc, r.err) == (1, f"Error: System prompt file not found: {missing}\n")
    # Nothing was read from stdin or written for these.
    assert all(rec["stdin"] is None for rec in claude.log_lines())
    assert not os.path.exists(claude.project_dir())


# ---- sessions and the stream ----

def test_continue_without_a_session(claude):
    r = claude.run(*STREAM, "--continue")
    assert (r.rc, r.out, r.err) == (1, "", "No conversation found to continue\n")


def test_stream_shapes_and_sessions(claude):
    prompt_file = claude.write("system.md", "You are a1.\n")
    settings = claude.write("settings.json", {"permissions": {"allow": []}})
    r = claude.run(*STREAM, "--model", "opus", "--settings", settings, "--system-prompt-file",
                   prompt_file, input="first prompt")
    assert r.rc == 0 and r.err == "", r
    init, asst, res = r.lines
    sid = init["session_id"]
    assert re.fullmatch(UUID_RE, sid)
    assert {k: init[k] for k in ("type", "subtype", "cwd", "model", "permissionMode",
                                 "apiKeySource", "claude_code_version", "mcp_servers")} == {
        "type": "system", "subtype": "init", "cwd": os.path.realpath(claude.home),
        "model": "claude-opus-4-6", "permissionMode": "default", "apiKeySource": "none",
        "claude_code_version": "2.1.83", "mcp_servers": []}
    assert "Bash" in init["tools"]
    assert asst["type"] == "assistant" and asst["session_id"] == sid
    assert asst["parent_tool_use_id"] is None
    m = asst["message"]
    assert re.fullmatch(r"msg_01\w{22}", m["id"])
    assert (m["type"], m["role"], m["model"], m["content"], m["stop_reason"]) == (
        "message", "assistant", "claude-opus-4-6", [{"type": "text", "text": "ok"}], None)
    assert set(m["usage"]) >= {"input_tokens", "cache_creation_input_tokens",
                               "cache_read_input_tokens", "output_tokens"}
    assert {k: res[k] for k in ("type", "subtype", "is_error", "num_turns", "result",
                                "session_id")} == {
        "type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
        "result": "ok", "session_id": sid}
    assert res["usage"] == m["usage"] and res["total_cost_usd"] > 0
    assert isinstance(res["duration_ms"], int) and isinstance(res["duration_api_ms"], int)

    # The session file, where the real CLI keeps it.
    path = os.path.join(claude.project_dir(), sid + ".jsonl")
    recs = [json.loads(x) for x in open(path)]
    assert [(x["type"], x["sessionId"]) for x in recs] == [("user", sid), ("assistant", sid)]
    assert recs[0]["message"] == {"role": "user", "content": "first prompt"}

    # --continue: the same session, and the context grows turn by turn.
    ctx = [context(m["usage"])]
    for i in range(2):
        r = claude.run(*STREAM, "--continue", input="another prompt " * 40)
        assert r.rc == 0, r
        assert r.lines[0]["session_id"] == sid
        ctx.append(context(r.lines[1]["message"]["usage"]))
    assert ctx[0] < ctx[1] < ctx[2]
    assert len([json.loads(x) for x in open(path)]) == 6

    # Without --continue: a new session.
    r = claude.run(*STREAM)
    assert r.lines[0]["session_id"] != sid
    assert len(os.listdir(claude.project_dir())) == 2


def test_resume_and_session_id(claude):
    sid = "0b6c2f52-2a3c-4c55-9c1e-8f0a4a2f1d11"
    r = claude.run(*STREAM, "--session-id", sid)
    assert r.rc == 0 and r.lines[0]["session_id"] == sid
    r = claude.run(*STREAM, "--session-id", sid)
    assert (r.rc, r.err) == (1, f"Error: Session ID {sid} is already in use.\n")
    r = claude.run(*STREAM, "--session-id", "nope")
    assert (r.rc, r.err) == (1, "Error: Invalid session ID. Must be a valid UUID.\n")
    r = claude.run(*STREAM, "--resume", sid)
    assert r.rc == 0 and r.lines[0]["session_id"] == sid
    other = "9d7c2f52-2a3c-4c55-9c1e-8f0a4a2f1d11"
    r = claude.run(*STREAM, "--resume", other)
    assert (r.rc, r.err) == (1, f"No conversation found with session ID: {other}\n")


def test_output_formats(claude):
    r = claude.run("-p")
    assert (r.rc, r.out) == (0, "ok\n")
    r = claude.run("-p", "--output-format", "json")
    assert r.rc == 0 and json.loads(r.out)["type"] == "result"
    r = claude.run("-p", "--output-format", "json", "--verbose")
    assert [x["type"] for x in json.loads(r.out)] == ["system", "assistant", "result"]


def test_unknown_model_fails_the_turn(claude):
    r = claude.run(*STREAM, "--model", "gpt-9")
    assert r.rc == 1
    init, asst, res = r.lines
    assert asst["message"]["model"] == "<synthetic>"
    assert res["is_error"] is True and "issue with the selected model (gpt-9)" in res["result"]


# ---- login ----

def test_login_required(claude):
    r = claude.run(*STREAM, FAKE_CLAUDE_REQUIRE_LOGIN="1")
    assert r.rc == 1 and r.err == ""
    init, asst, res = r.lines
    assert init["subtype"] == "init"
    assert asst["message"]["content"] == [{"type": "text",
                                           "text": "Invalid API key · Please run /login"}]
    assert {k: res[k] for k in ("type", "subtype", "is_error", "result")} == {
        "type": "result", "subtype": "success", "is_error": True,
        "result": "Invalid API key · Please run /login"}
    # A token nobody issued does not help; a credentials file does.
    r = claude.run(*STREAM, FAKE_CLAUDE_REQUIRE_LOGIN="1",
                   CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-made-up")
    assert r.rc == 1 and r.lines[-1]["is_error"]
    assert claude.log_lines()[-1]["env_token_set"] is True
    claude.write(".claude/.credentials.json", "{}")
    r = claude.run(*STREAM, FAKE_CLAUDE_REQUIRE_LOGIN="1")
    assert r.rc == 0 and r.lines[-1]["result"] == "ok"


def setup_token_output_ok(out):
    m = re.search(r"(?m)^(https://claude\.ai/oauth/authorize\?code=true&client_id=[^ \n]*"
                  r"&state=[\w-]+)$", out)
    assert m, out
    tok = re.search(r"(?m)^(sk-ant-oat01-[A-Za-z0-9_-]+)$", out)
    return m.group(1), tok.group(1) if tok else None


def test_setup_token_flow(claude):
    p = claude.popen("setup-token")
    # The prompt comes without a newline, flushed, before anything is typed.
    buf = ""
    while not buf.endswith("Paste code here if prompted > "):
        ch = p.stdout.read(1)
        assert ch, buf
        buf += ch
    url, tok = setup_token_output_ok(buf)
    assert tok is None
    out, err = p.communicate("hive-test-code\n", timeout=10)
    assert p.returncode == 0 and err == "", err
    _, tok = setup_token_output_ok(buf + out)
    assert tok and len(tok) == 108
    assert "✓ Long-lived authentication token created successfully!\n" in out
    assert out.endswith("Store this token securely. You won't be able to see it again.\n\n"
                        "Use this token by setting: export CLAUDE_CODE_OAUTH_TOKEN=<token>\n")
    # The issued token logs the CLI in.
    r = claude.run(*STREAM, FAKE_CLAUDE_REQUIRE_LOGIN="1", CLAUDE_CODE_OAUTH_TOKEN=tok)
    assert r.rc == 0 and r.lines[-1]["result"] == "ok"


def test_setup_token_wrong_code_and_eof(claude):
    r = claude.run("setup-token", input="wrong\n")
    assert r.rc == 1 and "sk-ant-oat01-" not in r.out
    assert r.err == "OAuth error: Invalid code. Please make sure the full code was copied\n"
    r = claude.run("setup-token", input="custom\n", FAKE_CLAUDE_LOGIN_CODE="custom")
    assert r.rc == 0 and "sk-ant-oat01-" in r.out
    r = claude.run("setup-token", input="")
    assert r.rc == 1 and r.err.startswith("Error: No authorization code")
    assert not os.path.exists(os.path.join(claude.home, ".claude", ".credentials.json"))
    with open(os.path.join(claude.home, ".claude", "fake-issued-tokens")) as f:
        assert len(f.read().split()) == 1


# ---- the script ----

def test_script_rules(claude):
    script = claude.script(
        {"agent": "b2", "match": "x", "actions": [{"text": "b2 only"}]},
        {"match": r"say (\w+) and (\w+)", "actions": [
            {"text": "first $1"}, {"stderr": "a note"}, {"text": "then $2 ($$1)"}]},
        {"match": "once", "once": True, "actions": [{"text": "only the first time"}]})
    r = claude.run(*STREAM, input="please say hi and bye", FAKE_CLAUDE_SCRIPT=script,
                   HIVE_LABEL="a1")
    assert r.rc == 0 and r.err == "a note\n"
    texts = [x["message"]["content"][0]["text"] for x in r.lines if x["type"] == "assistant"]
    assert texts == ["first hi", "then bye ($1)"]
    assert r.lines[-1]["result"] == "then bye ($1)"
    r = claude.run(*STREAM, input="x", FAKE_CLAUDE_SCRIPT=script, HIVE_LABEL="b2")
    assert r.lines[-1]["result"] == "b2 only"
    r = claude.run(*STREAM, input="x", FAKE_CLAUDE_SCRIPT=script, HIVE_LABEL="a1")
    assert r.lines[-1]["result"] == "ok"
    for want in ("only the first time", "ok"):
        r = claude.run(*STREAM, input="once", FAKE_CLAUDE_SCRIPT=script)
        assert r.lines[-1]["result"] == want


def test_script_failures(claude):
    script = claude.script(
        {"match": "too long", "actions": [{"text": "hmm"}, {"error": "Prompt is too long"}]},
        {"match": "limit", "actions": [{"rate_limit": True}]},
        {"match": "crash", "actions": [{"text": "bye"}, {"exit": 7}]})
    r = claude.run(*STREAM, input="too long", FAKE_CLAUDE_SCRIPT=script)
    assert r.rc == 1
    res = r.lines[-1]
    assert (res["type"], res["is_error"], res["result"]) == ("result", True, "Prompt is too long")

    before = int(time.time())
    r = claude.run(*STREAM, input="limit", FAKE_CLAUDE_SCRIPT=script)
    assert r.rc == 1
    ev = [x for x in r.lines if x["type"] == "rate_limit_event"]
    assert len(ev) == 1
    info = ev[0]["rate_limit_info"]
    assert (info["status"], info["rateLimitType"]) == ("rejected", "five_hour")
    assert before + 3600 <= info["resetsAt"] <= int(time.time()) + 3600
    assert r.lines[-1]["is_error"] is True
    assert r.lines[-1]["result"] == f"Claude AI usage limit reached|{info['resetsAt']}"

    r = claude.run(*STREAM, input="crash", FAKE_CLAUDE_SCRIPT=script)
    assert r.rc == 7 and [x["type"] for x in r.lines] == ["system", "assistant"]


def test_sigint_stops_the_turn(claude):
    script = claude.script({"actions": [{"text": "working"}, {"sleep": 30}, {"text": "never"}]})
    p = claude.popen(*STREAM, FAKE_CLAUDE_SCRIPT=script)
    p.stdin.write("go")
    p.stdin.close()
    first = [p.stdout.readline(), p.stdout.readline()]
    assert json.loads(first[1])["type"] == "assistant"
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    p.stdin = None  # closed above
    rest, _ = p.communicate(timeout=10)
    assert p.returncode == 130 and rest == ""
    assert time.monotonic() - t0 < 5
    # The interrupted turn stays in the session; --continue picks it up.
    r = claude.run(*STREAM, "--continue")
    assert r.rc == 0 and r.lines[0]["session_id"] == json.loads(first[0])["session_id"]


def test_compaction(claude):
    script = claude.script({"actions": [{"text": "big answer"}, {"pad_context": 50000}]})
    r = claude.run(*STREAM, "--continue", input="/compact")
    assert (r.rc, r.err) == (1, "No conversation found to continue\n")
    r = claude.run(*STREAM, input="/compact")
    assert r.rc == 1 and r.lines[-1]["result"].startswith("Error during compaction")
    claude.run(*STREAM, input="work", FAKE_CLAUDE_SCRIPT=script)
    r = claude.run(*STREAM, "--continue", input="more", FAKE_CLAUDE_SCRIPT=script)
    big = context(r.lines[1]["message"]["usage"])
    assert big > 50000
    r = claude.run(*STREAM, "--continue", input="/compact", FAKE_CLAUDE_SCRIPT=script)
    assert r.rc == 0, r
    init, boundary, res = r.lines
    assert (boundary["type"], boundary["subtype"]) == ("system", "compact_boundary")
    assert boundary["compact_metadata"]["trigger"] == "manual"
    assert boundary["compact_metadata"]["pre_tokens"] > 100000
    assert (res["is_error"], res["result"]) == (False, "Compacted.")
    r = claude.run(*STREAM, "--continue", input="after")
    assert context(r.lines[1]["message"]["usage"]) < 10000

    # Over the context window (200k tokens): every turn is refused until a compaction.
    claude.run(*STREAM, "--continue", input="x", FAKE_CLAUDE_SCRIPT=claude.script(
        {"actions": [{"text": "huge"}, {"pad_context": 250000}]}))
    r = claude.run(*STREAM, "--continue", input="next")
    assert r.rc == 1 and r.lines[-1]["result"] == "Prompt is too long"
    r = claude.run(*STREAM, "--continue", input="/compact")
    assert r.rc == 0 and r.lines[-1]["result"] == "Compacted."
    r = claude.run(*STREAM, "--continue", input="next")
    assert r.rc == 0 and r.lines[-1]["result"] == "ok"

    failing = claude.script({"compact": True, "actions": []})
    r = claude.run(*STREAM, "--continue", input="/compact", FAKE_CLAUDE_SCRIPT=failing)
    assert r.rc == 1 and r.lines[-1]["is_error"] is True
    assert r.lines[-1]["result"].startswith("Error during compaction")


# ---- MCP: a real hive-ag3nt mcp against a real daemon ----

def mcp_config(claude, d, agent, pidfile=None):
    if not os.access(AG3NT, os.X_OK):
        pytest.skip(f"{AG3NT} is not built")
    server = {"command": AG3NT, "args": ["mcp"],
              "env": {"HIVE_SOCKET": d.agent_sock(agent), "HIVE_STATE_DIR": claude.home,
                      "HIVE_RECONNECT_BASE_MS": "50"}}
    if pidfile:
        server = dict(server, command="/bin/sh",
                      args=["-c", f'echo $$ > {pidfile}; exec "$0" mcp', AG3NT])
    return claude.write("mcp.json", {"mcpServers": {"hyperhive": server}})


def tool_results(lines):
    return [c for x in lines if x["type"] == "user" for c in x["message"]["content"]]


def test_tool_call_lands_in_the_inbox(claude, hive):
    d = hive()
    cfg = mcp_config(claude, d, "a1", pidfile=os.path.join(claude.home, "mcp.pid"))
    script = claude.script({"match": r"tell (\w+): (.*)", "actions": [
        {"text": "on it"}, {"tool": "send", "input": {"to": "$1", "body": "$2"}},
        {"text": "sent"}]})
    r = claude.run(*STREAM, "--model", "sonnet", "--mcp-config", cfg, "--strict-mcp-config",
                   "--allowedTools", "mcp__hyperhive__send,mcp__hyperhive__recv",
                   input="tell b2: the build is green", FAKE_CLAUDE_SCRIPT=script)
    assert r.rc == 0, r
    init = r.lines[0]
    assert init["mcp_servers"] == [{"name": "hyperhive", "status": "connected"}]
    assert "mcp__hyperhive__send" in init["tools"] and "mcp__hyperhive__whoami" in init["tools"]
    uses = [c for x in r.lines if x["type"] == "assistant" for c in x["message"]["content"]
            if c["type"] == "tool_use"]
    assert len(uses) == 1
    assert re.fullmatch(r"toolu_01\w{22}", uses[0]["id"])
    assert (uses[0]["name"], uses[0]["input"]) == ("mcp__hyperhive__send",
                                                   {"to": "b2", "body": "the build is green"})
    [res] = tool_results(r.lines)
    assert (res["tool_use_id"], res["type"], res["is_error"]) == (uses[0]["id"], "tool_result",
                                                                  False)
    mid = json.loads(res["content"][0]["text"])["id"]
    assert r.lines[-1]["result"] == "sent" and r.lines[-1]["num_turns"] == 2
    # The tool use and the text after it are two API calls: two message ids.
    ids = [x["message"]["id"] for x in r.lines if x["type"] == "assistant"]
    assert ids[0] == ids[1] != ids[2]

    [msg] = d.connect("b2").req({"cmd": "recv"})["messages"]
    assert (msg["id"], msg["from"], msg["body"]) == (mid, "a1", "the build is green")
    # The server was stopped and reaped when the CLI exited.
    with open(os.path.join(claude.home, "mcp.pid")) as f:
        pid = int(f.read())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_tool_refusals(claude, hive):
    d = hive()
    cfg = mcp_config(claude, d, "a1")
    script = claude.script(
        {"match": "ghost", "actions": [{"tool": "send", "input": {"to": "ghost", "body": "x"}}]},
        {"match": "schema", "actions": [{"tool": "send", "input": {"to": "b2"}}]},
        {"match": "nosuch", "actions": [{"tool": "frobnicate", "input": {}}]},
        {"actions": [{"tool": "send", "input": {"to": "b2", "body": "sneaky"}}]})
    base = [*STREAM, "--mcp-config", cfg, "--strict-mcp-config"]

    # Not in --allowedTools: the permission refusal, nothing delivered.
    r = claude.run(*base, "--allowedTools", "mcp__hyperhive__recv", input="go",
                   FAKE_CLAUDE_SCRIPT=script)
    assert r.rc == 0, r
    [res] = tool_results(r.lines)
    assert res["is_error"] is True
    assert res["content"] == ("Claude requested permissions to use mcp__hyperhive__send, but "
                              "you haven't granted it yet.")
    assert r.lines[-1]["permission_denials"][0]["tool_name"] == "mcp__hyperhive__send"
    assert d.connect("b2").req({"cmd": "status"})["pending"] == 0

    # The server prefix allows every tool of it; the daemon's refusal comes back as isError.
    r = claude.run(*base, "--allowedTools", "mcp__hyperhive", input="ghost",
                   FAKE_CLAUDE_SCRIPT=script)
    [res] = tool_results(r.lines)
    assert res["is_error"] is True and "ghost" in res["content"][0]["text"]
    # A JSON-RPC error (arguments that break the schema) and a tool no server offers.
    r = claude.run(*base, "--allowedTools", "mcp__hyperhive", input="schema",
                   FAKE_CLAUDE_SCRIPT=script)
    [res] = tool_results(r.lines)
    assert res["is_error"] is True and res["content"].startswith("MCP error -32602: ")
    r = claude.run(*base, "--allowedTools", "mcp__hyperhive", input="nosuch",
                   FAKE_CLAUDE_SCRIPT=script)
    [res] = tool_results(r.lines)
    assert res["content"] == ("<tool_use_error>Error: No such tool available: "
                              "mcp__hyperhive__frobnicate</tool_use_error>")
    # --disallowedTools wins over an allow; bypassPermissions allows what is not denied.
    r = claude.run(*base, "--allowedTools", "mcp__hyperhive", "--disallowedTools",
                   "mcp__hyperhive__send", input="go", FAKE_CLAUDE_SCRIPT=script)
    assert tool_results(r.lines)[0]["is_error"] is True
    assert d.connect("b2").req({"cmd": "status"})["pending"] == 0
    r = claude.run(*base, "--permission-mode", "bypassPermissions", input="go",
                   FAKE_CLAUDE_SCRIPT=script)
    assert tool_results(r.lines)[0]["is_error"] is False
    assert d.connect("b2").req({"cmd": "status"})["pending"] == 1


def test_mcp_server_that_fails_to_start(claude):
    cfg = claude.write("mcp.json", {"mcpServers": {"hyperhive": {
        "command": os.path.join(claude.home, "no-such-binary")}}})
    r = claude.run(*STREAM, "--mcp-config", cfg, "--strict-mcp-config")
    assert r.rc == 0
    assert r.lines[0]["mcp_servers"] == [{"name": "hyperhive", "status": "failed"}]
