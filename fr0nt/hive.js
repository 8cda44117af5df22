/* hyperhive's shared page code (plain JS, no build step, no external fetches).
 *
 *   Hive.el(tag, attrs, ...children)  builds an element; strings become text nodes, never HTML
 *   Hive.getJSON(url), Hive.post(url, fields)  fetch helpers; post sends a urlencoded form and
 *                                     resolves to the server's {ok, error, ...} answer
 *   HiveStream                        snapshot + history + live stream, deduplicated by seq
 *   HiveTerminal                      renders events into the terminal-like live pane
 *
 * Every string that comes from the server is put into the page with textContent or as an
 * attribute value checked where it matters (links must be http(s)); nothing untrusted goes
 * through innerHTML. */
(function (global) {
  "use strict";

  /* The event kinds the stream names in its `event:` field.  EventSource only hands out named
   * events a listener asked for, so a new kind must be added here. */
  const EVENT_KINDS = [
    "turn_start", "stream", "note", "turn_end", "status_changed", "model_changed",
    "token_usage_changed", "turn_state_changed", "login",
  ];

  function el(tag, attrs) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const k of Object.keys(attrs)) {
        const v = attrs[k];
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = String(v);
        else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  /* A URL fit for an href: http(s) only (no javascript:, data:, ...), else null. */
  function safeUrl(u) {
    if (typeof u !== "string") return null;
    try {
      const p = new URL(u, document.baseURI);
      return p.protocol === "http:" || p.protocol === "https:" ? p.href : null;
    } catch (e) {
      return null;
    }
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  /* POSTs fields as application/x-www-form-urlencoded; always resolves to an object with ok
   * and, when not ok, error (a sentence). */
  async function post(url, fields) {
    let r;
    try {
      r = await fetch(url, {
        method: "POST",
        body: new URLSearchParams(fields || {}),
        credentials: "same-origin",
      });
    } catch (e) {
      return { ok: false, error: "the agent cannot be reached (" + e.message + ")" };
    }
    try {
      const j = await r.json();
      if (typeof j === "object" && j) return j;
    } catch (e) { /* not JSON: below */ }
    return { ok: r.ok, error: r.ok ? undefined : "HTTP " + r.status };
  }

  function formatTokens(n) {
    n = Number(n) || 0;
    if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1) + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(n >= 1e4 ? 0 : 1) + "k";
    return String(n);
  }

  function timeOf(ts) {
    const d = new Date(ts);
    if (isNaN(d)) return "";
    const p = (x) => String(x).padStart(2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }

  function clip(s, n) {
    s = String(s);
    return s.length > n ? s.slice(0, n - 1) + "…" : s;
  }

  /* ---- HiveStream ----
   * new HiveStream({stateUrl, historyUrl, streamUrl, kinds, onSnapshot(state),
   *                 onEvent(event, live), onStatus("connecting"|"live"|"reconnecting"),
   *                 onReset()}).start()
   *
   * Each (re)open fetches the snapshot (stateUrl) first, then opens the stream after the newest
   * seq already handled.  With historyUrl, the first open (and one after a reset) also fetches
   * the kept history, and every event is handed to onEvent once, in seq order; `live` is
   * false for events the snapshot already reflects (seq <= snapshot.seq), so state shown from
   * the snapshot is not rolled back.  Without historyUrl, events with seq <= snapshot.seq are
   * dropped.  A snapshot whose seq is below what was seen means a new history (the agent's
   * events were lost): onReset() is called and everything starts over. */
  function HiveStream(o) {
    o = o || {};
    this.stateUrl = o.stateUrl || "api/state";
    this.historyUrl = o.historyUrl || null;
    this.streamUrl = o.streamUrl || "events/stream";
    this.kinds = o.kinds || EVENT_KINDS;
    this.onSnapshot = o.onSnapshot || function () {};
    this.onEvent = o.onEvent || function () {};
    this.onStatus = o.onStatus || function () {};
    this.onReset = o.onReset || function () {};
    this.lastSeq = 0;
    this.snapSeq = 0;
    this.es = null;
    this.backoff = 500;
    this.timer = null;
    this.gen = 0;
    this.stopped = false;
    this.historyLoaded = false;
  }

  HiveStream.prototype.start = function () {
    this.stopped = false;
    this._connect();
    return this;
  };

  HiveStream.prototype.stop = function () {
    this.stopped = true;
    this.gen++;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
  };

  /* Fetches a fresh snapshot outside a reopen (after an event that changes state). */
  HiveStream.prototype.refresh = async function () {
    try {
      const snap = await getJSON(this.stateUrl);
      const seq = Number(snap.seq) || 0;
      if (seq >= this.snapSeq) {
        this.snapSeq = seq;
        this.onSnapshot(snap);
      }
    } catch (e) { /* the stream's own reconnect will notice */ }
  };

  HiveStream.prototype._connect = async function () {
    const gen = ++this.gen;
    if (this.es) this.es.close();
    this.es = null;
    this.onStatus("connecting");
    try {
      const snap = await getJSON(this.stateUrl);
      if (gen !== this.gen) return;
      const seq = Number(snap.seq) || 0;
      if (seq < this.lastSeq) {
        this.lastSeq = 0;
        this.historyLoaded = false;
        this.onReset();
      }
      this.snapSeq = seq;
      this.onSnapshot(snap);
      if (this.historyUrl && !this.historyLoaded) {
        const h = await getJSON(this.historyUrl);
        if (gen !== this.gen) return;
        for (const ev of h.events || []) this._deliver(ev);
        this.historyLoaded = true;
      }
      const after = this.historyUrl ? this.lastSeq : Math.max(this.lastSeq, this.snapSeq);
      this._open(after, gen);
    } catch (e) {
      this._retry(gen);
    }
  };

  HiveStream.prototype._open = function (after, gen) {
    const sep = this.streamUrl.indexOf("?") >= 0 ? "&" : "?";
    const es = new EventSource(this.streamUrl + sep + "after=" + after);
    this.es = es;
    const handler = (m) => {
      if (gen !== this.gen) return;
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      if (ev && typeof ev === "object") this._deliver(ev);
    };
    for (const k of this.kinds) es.addEventListener(k, handler);
    es.onmessage = handler;
    es.onopen = () => {
      if (gen !== this.gen) return;
      this.backoff = 500;
      this.onStatus("live");
    };
    es.onerror = () => {
      if (gen !== this.gen) return;
      es.close();
      this._retry(gen);
    };
  };

  HiveStream.prototype._deliver = function (ev) {
    const seq = Number(ev.seq) || 0;
    if (seq && seq <= this.lastSeq) return; /* already handed out */
    if (seq) this.lastSeq = seq;
    if (!this.historyUrl && seq && seq <= this.snapSeq) return;
    try {
      this.onEvent(ev, seq > this.snapSeq);
    } catch (e) {
      console.error("hive: an event handler failed", e);
    }
  };

  HiveStream.prototype._retry = function (gen) {
    if (this.stopped || gen !== this.gen) return;
    this.onStatus("reconnecting");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 10000);
  };

  /* ---- HiveTerminal ----
   * new HiveTerminal(container, {maxLines}).add(event) renders one event: turn_start (who
   * woke the agent, and the message), stream (the model CLI's stream-json lines: assistant
   * text, tool calls with a summary of their input, tool results, the result with usage),
   * note, turn_end (ok or failed, and the note), status/model changes and login output.
   * Keeps the newest maxLines lines; follows the bottom unless the reader scrolled up. */
  function HiveTerminal(container, o) {
    o = o || {};
    this.root = container;
    this.maxLines = o.maxLines || 3000;
    this.follow = true;
    this.empty = el("div", { class: "empty", text: o.emptyText || "nothing has happened yet" });
    this.root.appendChild(this.empty);
    this.root.addEventListener("scroll", () => {
      const r = this.root;
      this.follow = r.scrollHeight - r.scrollTop - r.clientHeight < 40;
    });
  }

  HiveTerminal.prototype.clear = function () {
    this.root.textContent = "";
    this.root.appendChild(this.empty);
  };

  HiveTerminal.prototype._line = function (cls, text, ev) {
    if (this.empty.parentNode) this.empty.remove();
    const line = el("div", { class: "hive-line " + cls });
    if (ev && ev.seq) line.dataset.seq = String(ev.seq);
    if (ev && ev.ts) line.appendChild(el("span", { class: "ts", text: timeOf(ev.ts) }));
    line.appendChild(document.createTextNode(text));
    this.root.appendChild(line);
    while (this.root.childElementCount > this.maxLines) this.root.firstElementChild.remove();
    if (this.follow) this.root.scrollTop = this.root.scrollHeight;
    return line;
  };

  /* A one-line summary of a tool's input or result. */
  function summarize(v, n) {
    n = n || 160;
    if (v === null || v === undefined) return "";
    if (typeof v === "string") return clip(v.replace(/\s+/g, " ").trim(), n);
    if (Array.isArray(v)) {
      const texts = v.map((x) => (x && typeof x === "object" && "text" in x ? x.text : x));
      return summarize(texts.map((x) => (typeof x === "string" ? x : JSON.stringify(x))).join(" "), n);
    }
    if (typeof v === "object") {
      const parts = [];
      for (const k of Object.keys(v)) {
        const x = v[k];
        parts.push(k + "=" + (typeof x === "string" ? JSON.stringify(clip(x, 80)) : clip(JSON.stringify(x), 80)));
      }
      return clip(parts.join(" "), n);
    }
    return clip(String(v), n);
  }

  function textOf(p) {
    if (typeof p === "string") return p;
    if (p && typeof p === "object") {
      for (const k of ["text", "status", "note", "message", "line"]) if (typeof p[k] === "string") return p[k];
    }
    return p === null || p === undefined ? "" : JSON.stringify(p);
  }

  HiveTerminal.prototype.add = function (ev) {
    const p = ev.payload;
    switch (ev.kind) {
      case "turn_start": {
        if (p && p.kind === "compact") {
          this._line("turn-start", "▶ compacting the session", ev);
          break;
        }
        const from = (p && p.from) || "?";
        const unread = p && Number(p.unread) > 0 ? " (+" + p.unread + " more unread)" : "";
        this._line("turn-start", "▶ turn: woken by " + from + unread, ev);
        if (p && p.body) this._line("turn-body", String(p.body));
        break;
      }
      case "stream":
        this._stream(p, ev);
        break;
      case "note":
        this._line(p && p.source === "stderr" ? "note meta" : "note", "• " + textOf(p), ev);
        break;
      case "turn_end": {
        const ok = !!(p && p.ok);
        const what = p && p.kind === "compact" ? "compaction" : "turn";
        const bits = [];
        if (p && typeof p.duration_ms === "number") bits.push((p.duration_ms / 1000).toFixed(1) + " s");
        if (p && Number(p.tool_calls) > 0) bits.push(p.tool_calls + " tool call" + (p.tool_calls > 1 ? "s" : ""));
        const head = ok ? "■ " + what + " done" : "✖ " + what + " " + ((p && p.result) || "failed");
        const note = p && p.note ? ": " + textOf(p.note) : "";
        this._line("turn-end" + (ok ? "" : " failed"), head + (bits.length ? " (" + bits.join(", ") + ")" : "") + note, ev);
        break;
      }
      case "status_changed":
        this._line("meta", "status: " + (textOf(p && typeof p === "object" && "status_text" in p ? p.status_text : p) || "(cleared)"), ev);
        break;
      case "model_changed":
        this._line("meta", "model: " + textOf(p && p.model !== undefined ? p.model : p), ev);
        break;
      case "login":
        if (p && typeof p.line === "string") this._line("meta", "login: " + p.line, ev);
        else if (p && p.result) this._line("meta", "login " + p.result, ev);
        break;
      default:
        /* turn_state_changed and token_usage_changed show in the header's badges. */
        break;
    }
  };

  HiveTerminal.prototype._stream = function (p, ev) {
    if (!p || typeof p !== "object") {
      this._line("raw", textOf(p), ev);
      return;
    }
    if (typeof p.raw === "string" && !p.type) {
      this._line("raw", p.raw, ev); /* a line of the CLI that was not JSON */
      return;
    }
    const content = p.message && Array.isArray(p.message.content) ? p.message.content : [];
    switch (p.type) {
      case "system":
        if (p.subtype === "init")
          this._line("meta", "session " + (p.session_id || "?") + (p.model ? " · " + p.model : ""), ev);
        else this._line("meta", "system: " + (p.subtype || summarize(p)), ev);
        break;
      case "assistant":
        for (const c of content) {
          if (!c || typeof c !== "object") continue;
          if (c.type === "text") this._line("assistant", String(c.text || ""), ev);
          else if (c.type === "thinking") this._line("thinking", String(c.thinking || ""), ev);
          else if (c.type === "tool_use")
            this._line("tool-use", "→ " + (c.name || "tool") + " " + summarize(c.input), ev);
        }
        break;
      case "user":
        for (const c of content) {
          if (!c || c.type !== "tool_result") continue;
          this._line("tool-result" + (c.is_error ? " error" : ""), "← " + summarize(c.content), ev);
        }
        break;
      case "result": {
        const u = p.usage || {};
        const bits = [p.subtype || (p.is_error ? "error" : "done")];
        if (u.input_tokens !== undefined || u.output_tokens !== undefined)
          bits.push(formatTokens(u.input_tokens) + " in / " + formatTokens(u.output_tokens) + " out");
        if (u.cache_read_input_tokens) bits.push(formatTokens(u.cache_read_input_tokens) + " cached");
        if (typeof p.total_cost_usd === "number") bits.push("$" + p.total_cost_usd.toFixed(4));
        if (typeof p.duration_ms === "number") bits.push((p.duration_ms / 1000).toFixed(1) + " s");
        if (typeof p.num_turns === "number") bits.push(p.num_turns + " steps");
        this._line("result" + (p.is_error ? " error" : ""), "result: " + bits.join(" · "), ev);
        break;
      }
      default:
        this._line("raw", clip(JSON.stringify(p), 400), ev);
    }
  };

  global.Hive = { el, safeUrl, getJSON, post, formatTokens, timeOf, clip, EVENT_KINDS };
  global.HiveStream = HiveStream;
  global.HiveTerminal = HiveTerminal;
})(window);
