/* The agent page: header badges from the snapshot (GET api/state) kept current by the live
 * stream, the live pane (HiveTerminal), the composer and the turn, model and login controls.
 * Every control POSTs a urlencoded form and shows the server's sentence when refused. */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const term = new HiveTerminal($("live"), { emptyText: "no events yet; send the agent a message" });
  let state = null;
  let modelDirty = false; /* the operator is editing the model field: do not overwrite it */

  /* Kinds after which the snapshot is fetched again (it is the authority on state). */
  const STATE_KINDS = new Set([
    "turn_state_changed", "status_changed", "model_changed", "token_usage_changed", "login",
    "turn_start", "turn_end",
  ]);

  function toast(node, text, kind) {
    node.textContent = text || "";
    node.className = "toast" + (kind ? " " + kind : "");
  }

  function setBadge(node, text, title) {
    node.textContent = text;
    if (title !== undefined) node.title = title;
  }

  function render() {
    const s = state;
    if (!s) return;
    const label = s.label || "agent";
    $("label").textContent = label;
    document.title = label + " · hyperhive";

    const ts = s.turn_state || "unknown";
    const turn = $("badge-turn");
    turn.dataset.state = ts;
    setBadge(turn, ts, "turn state" + (s.turn_detail ? ": " + s.turn_detail : ""));

    setBadge($("badge-model"), s.model || "default model", "model");
    if (!modelDirty && document.activeElement !== $("model-input")) $("model-input").value = s.model || "";

    const ctx = Number(s.context_tokens) || 0;
    const win = Number(s.context_window_tokens) || 0;
    let ctxText = "ctx " + Hive.formatTokens(ctx);
    if (win > 0) ctxText += " / " + Hive.formatTokens(win) + " (" + Math.round((100 * ctx) / win) + "%)";
    let ctxTitle = "context tokens " + ctx + (win ? " of " + win : "");
    if (typeof s.cost_usd === "number") ctxTitle += " · cost $" + s.cost_usd.toFixed(4);
    setBadge($("badge-context"), ctxText, ctxTitle);

    const st = $("badge-status");
    st.hidden = !s.status_text;
    setBadge(st, s.status_text || "", "status set by the agent" + (s.status_set_at ? " at " + s.status_set_at : ""));

    const dash = Hive.safeUrl(s.dashboard_url);
    $("dashboard-link").hidden = !dash;
    if (dash) $("dashboard-link").href = dash;

    const busy = ts === "running" || ts === "compacting";
    $("btn-cancel").disabled = !busy;

    renderLogin(s);
  }

  function renderLogin(s) {
    const l = s.login || {};
    const show = !!(s.needs_login || l.active || (l.result && l.result !== "ok"));
    $("login").hidden = !show;
    if (!show) return;
    $("login-why").hidden = !s.needs_login;
    $("login-start").hidden = !!l.active;
    $("login-cancel").hidden = !l.active;
    $("login-code-form").hidden = !l.active;
    const url = Hive.safeUrl(l.url);
    $("login-url-row").hidden = !(l.active && url);
    if (url) {
      $("login-url").href = url;
      $("login-url").textContent = url;
    }
    const lines = Array.isArray(l.lines) ? l.lines.map(String) : [];
    $("login-lines").hidden = lines.length === 0;
    $("login-lines").textContent = lines.join("\n");
    if (!l.active && l.result)
      toast($("login-result"), "last login: " + l.result + (l.error ? " (" + l.error + ")" : ""), l.result === "ok" ? "ok" : "error");
  }

  /* Applies what a live event says at once; the refetched snapshot confirms it. */
  function apply(ev) {
    const p = ev.payload && typeof ev.payload === "object" ? ev.payload : {};
    if (!state) return;
    if (ev.kind === "turn_state_changed" && typeof p.state === "string") {
      state.turn_state = p.state;
      state.turn_detail = p.detail || null;
    } else if (ev.kind === "model_changed" && typeof p.model === "string") {
      state.model = p.model;
    } else if (ev.kind === "token_usage_changed") {
      if (typeof p.ctx === "number") state.context_tokens = p.ctx;
      if (typeof p.context_window === "number") state.context_window_tokens = p.context_window;
      if (typeof p.total_cost === "number") state.cost_usd = p.total_cost;
    } else if (ev.kind === "status_changed" && typeof p.text === "string") {
      state.status_text = p.text;
    }
    render();
  }

  let refreshTimer = null;
  function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => stream.refresh(), 150);
  }

  const stream = new HiveStream({
    stateUrl: "api/state",
    historyUrl: "events/history",
    streamUrl: "events/stream",
    onSnapshot: (s) => {
      state = s;
      render();
    },
    onEvent: (ev, live) => {
      term.add(ev);
      if (!live) return;
      apply(ev);
      if (STATE_KINDS.has(ev.kind)) refreshSoon();
    },
    onStatus: (st) => {
      const b = $("badge-conn");
      b.dataset.conn = st;
      b.textContent = st === "live" ? "live" : st === "connecting" ? "connecting" : "reconnecting…";
    },
    onReset: () => term.clear(),
  });

  async function act(button, url, fields, okText, out) {
    out = out || $("toast");
    if (button) button.disabled = true;
    toast(out, "…");
    const r = await Hive.post(url, fields);
    if (button) button.disabled = false;
    if (r.ok) toast(out, typeof okText === "function" ? okText(r) : okText, "ok");
    else toast(out, r.error || "refused", "error");
    if (r.login && state) {
      state.login = r.login;
      render();
    }
    refreshSoon();
    return r;
  }

  $("composer").addEventListener("submit", async (e) => {
    e.preventDefault();
    const ta = $("send-body");
    const body = ta.value;
    if (!body.trim()) {
      toast($("send-result"), "write a message first", "error");
      return;
    }
    const r = await act($("send-button"), "send", { body }, (r) => "sent as #" + r.id, $("send-result"));
    if (r.ok && ta.value === body) ta.value = "";
  });
  $("send-body").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });

  $("btn-cancel").addEventListener("click", () => act($("btn-cancel"), "api/cancel", {}, "cancel sent"));
  $("btn-compact").addEventListener("click", () => act($("btn-compact"), "api/compact", {}, "compaction requested"));
  $("btn-new-session").addEventListener("click", () =>
    act($("btn-new-session"), "api/new-session", {}, "the next turn starts a new session"));

  $("model-input").addEventListener("input", () => (modelDirty = true));
  $("model-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const model = $("model-input").value.trim();
    const r = await act($("model-set"), "api/model", { model }, (r) => "model set to " + r.model);
    if (r.ok) modelDirty = false;
  });

  $("login-start").addEventListener("click", () => act($("login-start"), "api/login/start", {}, "login started", $("login-result")));
  $("login-cancel").addEventListener("click", () => act($("login-cancel"), "api/login/cancel", {}, "login cancelled", $("login-result")));
  $("login-code-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const code = $("login-code").value.trim();
    const r = await act($("login-code-send"), "api/login/code", { code }, "code sent", $("login-result"));
    if (r.ok) $("login-code").value = "";
  });

  stream.start();
})();
