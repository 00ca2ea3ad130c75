// asyncflow's dashboard: plain JavaScript, no build step, no third-party code.
//
// Views (from the URL's hash): #/runs (filters, search, paging done by the server),
// #/run/<id> (timeline, steps, logs, result, error), #/events (history, graph, state),
// #/actions (start, emit, resume). Data comes from dashboard/api/* and the JSON routes
// (runs/<id>, runs, resume, runs/<id>/cancel, runs/<id>/retry), all relative to the page,
// so the dashboard works wherever the app is mounted. Live: the view reloads every 2 s.
"use strict";
(function () {
  const TEXT = {
    en: {
      "nav.runs": "Runs", "nav.events": "Events", "nav.actions": "Actions",
      "live": "Live", "logout": "Log out", "updated": "updated {t}",
      "runs.title": "Runs", "runs.all": "All", "runs.search": "Search by run id",
      "runs.workflow": "Workflow", "runs.anyWorkflow": "Any workflow",
      "runs.wait": "Waiting for", "runs.anyWait": "Anything", "runs.waitTime": "a time (sleep, timeout, retry)",
      "runs.waitInvocation": "the next invocation", "runs.waitEvent": "any event",
      "runs.waitEventNamed": "event {name}",
      "runs.none": "No runs match.", "runs.of": "{shown} of {total} runs",
      "runs.unread": "(counts so far: {n} runs still being read)",
      "runs.page": "Page {page} of {pages}", "runs.prev": "← Newer", "runs.next": "Older →",
      "col.run": "Run", "col.workflow": "Workflow", "col.status": "Status", "col.trigger": "Trigger",
      "col.created": "Created", "col.updated": "Updated", "col.waits": "Waits for", "col.error": "Error",
      "col.actions": "", "col.steps": "Steps",
      "status.pending": "pending", "status.paused": "paused", "status.succeeded": "succeeded",
      "status.failed": "failed", "status.cancelled": "cancelled", "status.damaged": "damaged",
      "wait.event": "event “{name}”", "wait.time": "until {t}", "wait.next": "next invocation",
      "cancel": "Cancel", "retry": "Retry",
      "confirm.cancel": "Cancel run {id}? It stops for good.",
      "done.cancel": "Run {id} cancelled.", "done.retry": "Run {id} retried: {status}.",
      "run.title": "Run {id}", "run.back": "← All runs", "run.args": "Args", "run.wakeAt": "Wakes at",
      "run.timeline": "Timeline", "run.steps": "Steps", "run.logs": "Logs", "run.result": "Result",
      "run.error": "Error", "run.traceback": "Traceback", "run.noSteps": "No steps recorded yet.",
      "run.noTimes": "These steps were recorded by an older asyncflow without times: no timeline.",
      "run.main": "workflow", "run.branch": "branch {path}", "run.attempt": "attempt {n} of step {step}",
      "step.kind": "Kind", "step.name": "Name", "step.lane": "Lane", "step.start": "Start",
      "step.end": "End", "step.duration": "Duration", "step.attempts": "Attempts",
      "step.deadline": "Deadline", "step.value": "Value / error", "step.open": "not ended",
      "events.title": "Events", "events.graph": "Who emits what, and what it starts or wakes",
      "events.history": "Event history", "events.none": "No events recorded yet.",
      "events.state": "Shared state", "events.noState": "No state set yet.",
      "col.time": "Time", "col.event": "Event", "col.args": "Args", "col.emittedBy": "Emitted by",
      "col.started": "Started", "col.woke": "Woke", "col.name": "Name", "col.value": "Value",
      "outside": "outside (flow.run, emit, HTTP)",
      "legend.starts": "starts", "legend.wakes": "wakes", "legend.emits": "emits / sets",
      "actions.title": "Actions", "actions.start": "Start a trigger", "actions.trigger": "Trigger",
      "actions.args": "Args (JSON)", "actions.runNow": "Start and run now",
      "actions.record": "Only record (runs at the next invocation)",
      "actions.emit": "Emit an event", "actions.event": "Event name",
      "actions.emitButton": "Emit", "actions.resume": "Resume due runs now",
      "actions.resumeButton": "Resume now", "actions.resumeHelp": "One invocation: every due run advances.",
      "actions.result": "Result", "actions.started": "Started: {ids}",
      "actions.badJson": "The args are not valid JSON: {error}",
      "actions.advanced": "{n} run(s) advanced.",
      "error.auth": "Not logged in any more: reload the page.",
    },
    ja: {
      "nav.runs": "実行", "nav.events": "イベント", "nav.actions": "操作",
      "live": "自動更新", "logout": "ログアウト", "updated": "{t} 更新",
      "runs.title": "実行一覧", "runs.all": "すべて", "runs.search": "実行 ID で検索",
      "runs.workflow": "ワークフロー", "runs.anyWorkflow": "すべてのワークフロー",
      "runs.wait": "待機対象", "runs.anyWait": "指定なし", "runs.waitTime": "時刻（スリープ・タイムアウト・再試行）",
      "runs.waitInvocation": "次回の呼び出し", "runs.waitEvent": "いずれかのイベント",
      "runs.waitEventNamed": "イベント {name}",
      "runs.none": "該当する実行はありません。", "runs.of": "{total} 件中 {shown} 件",
      "runs.unread": "（集計中: あと {n} 件を読み込み中）",
      "runs.page": "{page} / {pages} ページ", "runs.prev": "← 新しい", "runs.next": "古い →",
      "col.run": "実行", "col.workflow": "ワークフロー", "col.status": "状態", "col.trigger": "トリガー",
      "col.created": "作成", "col.updated": "更新", "col.waits": "待機中", "col.error": "エラー",
      "col.actions": "", "col.steps": "ステップ",
      "status.pending": "待ち行列", "status.paused": "一時停止", "status.succeeded": "成功",
      "status.failed": "失敗", "status.cancelled": "キャンセル済み", "status.damaged": "破損",
      "wait.event": "イベント「{name}」", "wait.time": "{t} まで", "wait.next": "次回の呼び出し",
      "cancel": "キャンセル", "retry": "再実行",
      "confirm.cancel": "実行 {id} をキャンセルしますか？元に戻せません。",
      "done.cancel": "実行 {id} をキャンセルしました。", "done.retry": "実行 {id} を再実行しました: {status}。",
      "run.title": "実行 {id}", "run.back": "← 実行一覧", "run.args": "引数", "run.wakeAt": "再開時刻",
      "run.timeline": "タイムライン", "run.steps": "ステップ", "run.logs": "ログ", "run.result": "結果",
      "run.error": "エラー", "run.traceback": "トレースバック", "run.noSteps": "まだステップがありません。",
      "run.noTimes": "古い asyncflow が時刻なしで記録したステップです。タイムラインはありません。",
      "run.main": "ワークフロー", "run.branch": "分岐 {path}", "run.attempt": "ステップ {step} の試行 {n}",
      "step.kind": "種類", "step.name": "名前", "step.lane": "レーン", "step.start": "開始",
      "step.end": "終了", "step.duration": "所要時間", "step.attempts": "試行回数",
      "step.deadline": "期限", "step.value": "値 / エラー", "step.open": "未完了",
      "events.title": "イベント", "events.graph": "どのワークフローが何を発行し、何を開始・再開するか",
      "events.history": "イベント履歴", "events.none": "まだイベントはありません。",
      "events.state": "共有状態", "events.noState": "まだ状態はありません。",
      "col.time": "時刻", "col.event": "イベント", "col.args": "引数", "col.emittedBy": "発行元",
      "col.started": "開始した実行", "col.woke": "再開した実行", "col.name": "名前", "col.value": "値",
      "outside": "外部（flow.run・emit・HTTP）",
      "legend.starts": "開始", "legend.wakes": "再開", "legend.emits": "発行・設定",
      "actions.title": "操作", "actions.start": "トリガーを開始", "actions.trigger": "トリガー",
      "actions.args": "引数（JSON）", "actions.runNow": "開始して今すぐ実行",
      "actions.record": "記録のみ（次回の呼び出しで実行）",
      "actions.emit": "イベントを発行", "actions.event": "イベント名",
      "actions.emitButton": "発行", "actions.resume": "期限の来た実行を今すぐ再開",
      "actions.resumeButton": "今すぐ再開", "actions.resumeHelp": "1 回の呼び出しで、期限の来た実行をすべて進めます。",
      "actions.result": "結果", "actions.started": "開始: {ids}",
      "actions.badJson": "引数が正しい JSON ではありません: {error}",
      "actions.advanced": "{n} 件の実行を進めました。",
      "error.auth": "ログインが切れました。ページを再読み込みしてください。",
    },
  };
  const STATUSES = ["pending", "paused", "succeeded", "failed", "cancelled"];
  let lang = pickLanguage();
  let timer = null;
  let rendering = 0;

  function pickLanguage() {
    const saved = localStorage.getItem("asyncflow.lang");
    if (saved && TEXT[saved]) return saved;
    for (const l of navigator.languages || [navigator.language || "en"]) {
      if (TEXT[l.slice(0, 2)]) return l.slice(0, 2);
    }
    return "en";
  }
  function t(key, vars) {
    let text = TEXT[lang][key] ?? TEXT.en[key] ?? key;
    for (const [k, v] of Object.entries(vars || {})) text = text.replaceAll(`{${k}}`, String(v));
    return text;
  }

  // -- DOM helpers: text only goes in as text, never as HTML -------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k === "style") Object.assign(el.style, v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }
  function time(epoch) {
    if (epoch === null || epoch === undefined) return "";
    return new Date(epoch * 1000).toLocaleString(lang === "ja" ? "ja-JP" : "en-GB", {
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 120) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
    if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }
  const json = (v) => JSON.stringify(v, null, 2);
  const badge = (status) => h("span", { class: `badge ${status}` }, t(`status.${status}`));
  function flash(text, error) {
    const box = document.getElementById("flash");
    const item = h("div", { class: error ? "error" : "" }, text);
    box.append(item);
    setTimeout(() => item.remove(), error ? 8000 : 4000);
  }

  // -- talking to the server -----------------------------------------------------------------
  class HttpError extends Error {}
  async function api(path, options) {
    const init = { credentials: "same-origin", headers: { accept: "application/json" }, ...options };
    if (init.method === "POST") {
      // Only a script of this page can add this header: with the session cookie, a POST
      // without it is refused (another site's form cannot add it).
      init.headers["x-asyncflow-csrf"] = "1";
      init.headers["content-type"] = "application/json";
    }
    const response = await fetch(path, init);
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) throw new HttpError(t("error.auth"));
    if (!response.ok) throw new HttpError(body.error || `HTTP ${response.status}`);
    return body;
  }
  const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body || {}) });

  // -- routing -------------------------------------------------------------------------------
  function route() {
    const hash = location.hash.replace(/^#/, "") || "/runs";
    const [path, query] = hash.split("?");
    return { path, params: new URLSearchParams(query || "") };
  }
  function go(path, params) {
    const query = params && params.toString();
    location.hash = `#${path}${query ? `?${query}` : ""}`;
  }
  async function render(quiet) {
    const ticket = ++rendering;
    const { path, params } = route();
    for (const a of document.querySelectorAll("header nav a")) {
      a.classList.toggle("active", path.startsWith(a.getAttribute("href").slice(1).replace(/s$/, "")));
    }
    let view;
    try {
      if (path.startsWith("/run/")) view = await runView(decodeURIComponent(path.slice(5)));
      else if (path === "/events") view = await eventsView();
      else if (path === "/actions") view = quiet ? null : await actionsView();
      else view = await runsView(params);
    } catch (err) {
      if (ticket !== rendering) return;
      if (!quiet || err instanceof HttpError) flash(err.message, true);
      return;
    }
    if (ticket !== rendering || view === null) return; // a newer render started meanwhile
    const main = document.getElementById("main");
    // A poll must not take the text being typed or the focus away.
    const active = document.activeElement;
    const focused = active && main.contains(active) && active.id;
    const caret = focused && active.selectionStart;
    const typed = focused && active.tagName !== "SELECT" ? active.value : undefined;
    main.replaceChildren(view);
    if (focused) {
      const again = document.getElementById(focused);
      if (again) {
        if (typed !== undefined) again.value = typed;
        again.focus();
        if (typeof caret === "number" && again.setSelectionRange) again.setSelectionRange(caret, caret);
      }
    }
    document.getElementById("updated").textContent = t("updated", { t: new Date().toLocaleTimeString() });
    document.body.dataset.view = path.split("/")[1] || "runs";
  }
  function live() {
    clearInterval(timer);
    if (document.getElementById("live").checked) timer = setInterval(() => render(true), 2000);
  }

  // -- runs ----------------------------------------------------------------------------------
  function waitText(run) {
    if (run.status !== "paused") return "";
    if (run.wait_event !== null) return t("wait.event", { name: run.wait_event });
    if (run.wake_at !== null) return t("wait.time", { t: time(run.wake_at) });
    return t("wait.next");
  }
  function runActions(run) {
    const buttons = [];
    if (run.status === "pending" || run.status === "paused") {
      buttons.push(h("button", { class: "danger", "data-action": "cancel", onclick: () => cancel(run.run_id) }, t("cancel")));
    }
    if (run.status === "failed") {
      buttons.push(h("button", { "data-action": "retry", onclick: () => retry(run.run_id) }, t("retry")));
    }
    return buttons;
  }
  async function cancel(id) {
    if (!confirm(t("confirm.cancel", { id }))) return;
    try {
      await post(`runs/${encodeURIComponent(id)}/cancel`);
      flash(t("done.cancel", { id }));
    } catch (err) {
      flash(err.message, true);
    }
    render(true);
  }
  async function retry(id) {
    try {
      const results = await post(`runs/${encodeURIComponent(id)}/retry`);
      const mine = results.find((r) => r.run_id === id);
      flash(t("done.retry", { id, status: mine ? t(`status.${mine.status}`) : "?" }));
    } catch (err) {
      flash(err.message, true);
    }
    render(true);
  }
  async function runsView(params) {
    const query = new URLSearchParams();
    for (const k of ["status", "workflow", "wait", "q", "page"]) if (params.get(k)) query.set(k, params.get(k));
    const data = await api(`dashboard/api/runs?${query}`);
    // Read the filters when the change happens, not when this view was drawn: a search typed
    // while another filter's page is still loading must keep that filter (a debounced timer of
    // the previous view can fire after the next view replaced it).
    const set = (key, value) => {
      const next = new URLSearchParams(route().params);
      if (value) next.set(key, value); else next.delete(key);
      if (key !== "page") next.delete("page");
      go("/runs", next);
    };
    const status = params.get("status") || "";
    const chips = h("div", { class: "chips", id: "status-filter" },
      h("button", { class: `chip${status ? "" : " on"}`, "data-status": "", onclick: () => set("status", "") },
        `${t("runs.all")} ${data.all}`),
      STATUSES.map((st) => h("button", {
        class: `chip${status === st ? " on" : ""}`, "data-status": st, onclick: () => set("status", st),
      }, `${t(`status.${st}`)} ${data.counts[st] || 0}`)));
    const workflow = h("select", { id: "workflow-filter", "aria-label": t("runs.workflow"), onchange: (e) => set("workflow", e.target.value) },
      h("option", { value: "" }, t("runs.anyWorkflow")),
      Object.keys(data.workflows).sort().map((w) => h("option", { value: w, selected: params.get("workflow") === w }, w)));
    const waitOptions = [["", t("runs.anyWait")], ["time", t("runs.waitTime")],
      ["invocation", t("runs.waitInvocation")], ["event", t("runs.waitEvent")],
      ...data.waits.map((w) => [`event:${w}`, t("runs.waitEventNamed", { name: w })])];
    const wait = h("select", { id: "wait-filter", "aria-label": t("runs.wait"), onchange: (e) => set("wait", e.target.value) },
      waitOptions.map(([v, label]) => h("option", { value: v, selected: (params.get("wait") || "") === v }, label)));
    let debounce = null;
    const search = h("input", {
      id: "search", type: "search", placeholder: t("runs.search"), value: params.get("q") || "",
      oninput: (e) => { clearTimeout(debounce); debounce = setTimeout(() => set("q", e.target.value.trim()), 300); },
    });
    const rows = data.runs.map((run) => h("tr", { "data-run": run.run_id, "data-status": run.status },
      h("td", { class: "mono" }, h("a", { href: `#/run/${encodeURIComponent(run.run_id)}` }, run.run_id)),
      h("td", {}, run.workflow),
      h("td", {}, badge(run.status)),
      h("td", { class: "mono" }, run.trigger),
      h("td", {}, time(run.created_at)),
      h("td", {}, time(run.updated_at)),
      h("td", {}, waitText(run)),
      h("td", { class: "wrap error" }, run.error || ""),
      h("td", {}, runActions(run))));
    const pages = Math.max(1, Math.ceil(data.total / data.per_page));
    const pager = h("div", { class: "pager" },
      h("button", { id: "prev", disabled: data.page <= 1, onclick: () => set("page", String(data.page - 1)) }, t("runs.prev")),
      h("span", { id: "page" }, t("runs.page", { page: data.page, pages })),
      h("button", { id: "next", disabled: data.page >= pages, onclick: () => set("page", String(data.page + 1)) }, t("runs.next")),
      h("span", { class: "muted", id: "total" }, t("runs.of", { shown: data.runs.length, total: data.total })),
      data.unread ? h("span", { class: "muted", id: "unread" }, t("runs.unread", { n: data.unread })) : null);
    return h("section", { id: "runs" },
      h("h2", {}, t("runs.title")),
      h("div", { class: "filters" }, chips, workflow, wait, search),
      data.runs.length
        ? h("table", { id: "runs-table" },
          h("thead", {}, h("tr", {}, ["col.run", "col.workflow", "col.status", "col.trigger", "col.created",
            "col.updated", "col.waits", "col.error", "col.actions"].map((k) => h("th", {}, t(k))))),
          h("tbody", {}, rows))
        : h("p", { class: "muted", id: "no-runs" }, t("runs.none")),
      pager);
  }

  // -- one run -------------------------------------------------------------------------------
  function laneName(path) {
    if (!path) return t("run.main");
    const last = path.split("/").pop();
    if (last.includes("#")) {
      const [step, n] = last.split("#");
      return t("run.attempt", { n, step: Number(step) + 1 });
    }
    return t("run.branch", { path });
  }
  function stepValue(step) {
    if (step.error) return step.error;
    if (step.value === null || step.value === undefined) return "";
    return typeof step.value === "string" ? step.value : JSON.stringify(step.value);
  }
  function timeline(run, now) {
    const steps = run.steps.map((st, i) => ({ ...st, index: i }));
    const timed = steps.filter((st) => st.started_at !== null && st.started_at !== undefined);
    if (!timed.length) return h("p", { class: "muted", id: "no-timeline" }, run.steps.length ? t("run.noTimes") : t("run.noSteps"));
    const active = run.status === "pending" || run.status === "paused";
    const start = Math.min(run.created_at, ...timed.map((st) => st.started_at));
    let end = Math.max(run.updated_at, ...timed.map((st) => st.ended_at ?? st.started_at));
    if (active) end = Math.max(end, now);
    // Deadlines do not stretch the scale (an hour's timeout would squash the steps): one
    // past the end is drawn at the right edge.
    const span = Math.max(end - start, 0.001);
    const pct = (x) => `${((x - start) / span) * 100}%`;
    const lanes = new Map();
    for (const st of timed) {
      const key = st.branch || "";
      if (!lanes.has(key)) lanes.set(key, []);
      lanes.get(key).push(st);
    }
    const laneEls = [...lanes.entries()].map(([path, list]) => h("div", { class: "tl-lane", "data-lane": path || "main" },
      h("div", { class: "tl-label", title: laneName(path) }, laneName(path)),
      h("div", { class: "tl-track" }, list.map((st) => {
        const lasting = ["sideeffect", "sleep", "wait_event", "gather"].includes(st.kind);
        const open = lasting && (st.ended_at === null || st.ended_at === undefined);
        const stop = open ? Math.max(active ? now : run.updated_at, st.started_at) : (st.ended_at ?? st.started_at);
        const label = `${st.kind}${st.name ? ` ${st.name}` : ""}`;
        const tip = [label, `${t("step.start")}: ${time(st.started_at)}`,
          open ? t("step.open") : `${t("step.duration")}: ${duration(stop - st.started_at)}`,
          st.attempts ? `${t("step.attempts")}: ${st.attempts}` : "",
          st.deadline ? `${t("step.deadline")}: ${time(st.deadline)}` : "",
          st.error ? st.error : ""].filter(Boolean).join("\n");
        // Labels of steps in the right third go to their left, inside the track.
        const late = (st.started_at - start) / span > 0.66;
        const classes = ["tl-bar", st.kind, lasting ? "" : "instant", open ? "open" : "", st.error ? "error" : "", late ? "late" : ""];
        const bar = h("div", {
          class: classes.filter(Boolean).join(" "), title: tip, "data-step": st.index,
          style: lasting ? { left: pct(st.started_at), width: `${((stop - st.started_at) / span) * 100}%` } : { left: pct(st.started_at) },
        }, h("span", {}, label));
        const row = h("div", { class: "tl-row" }, bar);
        if (st.deadline && (!st.done || st.deadline <= end)) {
          row.append(h("div", { class: "tl-deadline", title: `${t("step.deadline")}: ${time(st.deadline)}`, style: { left: pct(Math.min(st.deadline, end)) } }));
        }
        return row;
      }))));
    const axis = h("div", { class: "tl-axis" }, h("span", {}, time(start)), h("span", {}, duration(span)), h("span", {}, time(end)));
    return h("div", { class: "timeline", id: "timeline" }, axis, laneEls);
  }
  function gatherEnds(run) {
    // A gather ends when the last step of its branches does (the record keeps its start).
    run.steps.forEach((st, i) => {
      if (st.kind !== "gather" || (st.ended_at !== null && st.ended_at !== undefined) || !st.started_at) return;
      const prefix = `${st.branch ? `${st.branch}/` : ""}`;
      const mine = run.steps.filter((o, j) => j > i && o.branch && o.branch.startsWith(prefix) && o.started_at);
      if (mine.some((o) => ["sideeffect", "sleep", "wait_event"].includes(o.kind) && !o.ended_at)) return;
      const ends = mine.map((o) => o.ended_at ?? o.started_at);
      st.ended_at = ends.length ? Math.max(...ends) : st.started_at;
    });
  }
  async function runView(id) {
    const [run, page] = await Promise.all([
      api(`runs/${encodeURIComponent(id)}`),
      api(`dashboard/api/runs?q=${encodeURIComponent(id)}&per_page=1`),
    ]);
    gatherEnds(run);
    const now = page.now;
    const facts = [
      [t("col.workflow"), run.workflow], [t("col.status"), badge(run.status)],
      [t("col.trigger"), h("span", { class: "mono" }, run.trigger)],
      [t("run.args"), h("span", { class: "mono" }, JSON.stringify(run.args))],
      [t("col.created"), time(run.created_at)], [t("col.updated"), time(run.updated_at)],
    ];
    if (run.status === "paused") facts.push([t("col.waits"), waitText(run)]);
    if (run.wake_at) facts.push([t("run.wakeAt"), time(run.wake_at)]);
    const lanes = {};
    const stepRows = run.steps.map((st, i) => {
      const lasting = ["sideeffect", "sleep", "wait_event", "gather"].includes(st.kind);
      const ended = st.ended_at ?? (lasting ? null : st.started_at);
      lanes[st.branch || ""] = true;
      return h("tr", { "data-kind": st.kind },
        h("td", {}, i + 1), h("td", {}, laneName(st.branch)), h("td", {}, st.kind), h("td", {}, st.name || ""),
        h("td", {}, time(st.started_at)),
        h("td", {}, ended === null || ended === undefined ? (st.started_at ? t("step.open") : "") : time(ended)),
        h("td", {}, ended !== null && ended !== undefined && st.started_at ? duration(ended - st.started_at) : ""),
        h("td", {}, st.attempts ?? ""), h("td", {}, time(st.deadline)),
        h("td", { class: `wrap mono${st.error ? " error" : ""}` }, stepValue(st)));
    });
    const parts = [
      h("p", {}, h("a", { href: "#/runs" }, t("run.back"))),
      h("h2", {}, t("run.title", { id: run.run_id })),
      h("div", { class: "panel" }, h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
        h("div", { class: "actions-row" }, runActions(run))),
      h("h3", {}, t("run.timeline")), timeline(run, now),
      h("h3", {}, t("run.steps")),
      run.steps.length ? h("table", { id: "steps" }, h("thead", {}, h("tr", {}, ["#", "step.lane", "step.kind", "step.name", "step.start",
        "step.end", "step.duration", "step.attempts", "step.deadline", "step.value"].map((k) => h("th", {}, k === "#" ? k : t(k))))),
      h("tbody", {}, stepRows)) : h("p", { class: "muted" }, t("run.noSteps")),
      h("h3", {}, t("run.logs")), h("pre", { id: "logs" }, run.logs.join("\n")),
    ];
    if (run.status === "succeeded") parts.push(h("h3", {}, t("run.result")), h("pre", { id: "result" }, json(run.result)));
    if (run.error) parts.push(h("h3", {}, t("run.error")), h("pre", { id: "error" }, run.error));
    if (run.traceback) parts.push(h("h3", {}, t("run.traceback")), h("pre", { id: "traceback" }, run.traceback));
    return h("section", { id: "run", "data-status": run.status }, parts);
  }

  // -- events --------------------------------------------------------------------------------
  function graph(data) {
    const edges = data.edges;
    const has = (id, side) => edges.some((e) => e[side] === id);
    const left = data.nodes.filter((n) => n.kind === "workflow" && has(n.id, "from"));
    const middle = data.nodes.filter((n) => n.kind !== "workflow");
    const right = data.nodes.filter((n) => n.kind === "workflow" && (has(n.id, "to") || !has(n.id, "from")));
    const W = 960, BOX = 190, ROW = 34, X = [10, (W - BOX) / 2, W - BOX - 10];
    const height = Math.max(left.length, middle.length, right.length, 1) * ROW + 20;
    const place = (list, col) => new Map(list.map((n, i) => [n.id, { x: X[col], y: 10 + i * ROW }]));
    const L = place(left, 0), M = place(middle, 1), R = place(right, 2);
    const svg = s("svg", { class: "graph", id: "graph", viewBox: `0 0 ${W} ${height}`, width: "100%", role: "img" });
    const curve = (a, b, kind) => {
      const x1 = a.x + BOX, y1 = a.y + 12, x2 = b.x, y2 = b.y + 12, mid = (x1 + x2) / 2;
      svg.append(s("path", { class: kind, d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
    };
    for (const e of edges) {
      if (L.has(e.from) && M.has(e.to)) curve(L.get(e.from), M.get(e.to), e.kind);
      else if (M.has(e.from) && R.has(e.to)) curve(M.get(e.from), R.get(e.to), e.kind);
    }
    for (const [list, where] of [[left, L], [middle, M], [right, R]]) {
      for (const n of list) {
        const p = where.get(n.id);
        const g = s("g", { "data-node": n.id }, s("title", {}, n.id));
        g.append(s("rect", { class: n.kind, x: p.x, y: p.y, width: BOX, height: 24, rx: 4 }));
        const label = n.kind === "workflow" ? n.name : `${n.kind === "event" ? "⚡" : n.kind === "state" ? "▣" : "⏱"} ${n.name}`;
        g.append(s("text", { x: p.x + 8, y: p.y + 16 }, label.length > 26 ? `${label.slice(0, 25)}…` : label));
        svg.append(g);
      }
    }
    return svg;
  }
  const runLink = (id) => h("a", { class: "mono", href: `#/run/${encodeURIComponent(id)}` }, id);
  async function eventsView() {
    const data = await api("dashboard/api/events");
    const legend = h("div", { class: "legend" }, ["starts", "wakes", "emits"].map((k) => h("span", {}, h("i", { class: k }), t(`legend.${k}`))));
    const history = data.history.length ? h("table", { id: "history" },
      h("thead", {}, h("tr", {}, ["col.time", "col.event", "col.args", "col.emittedBy", "col.started", "col.woke"].map((k) => h("th", {}, t(k))))),
      h("tbody", {}, data.history.map((e) => h("tr", { "data-event": e.name },
        h("td", {}, time(e.at)),
        h("td", {}, e.kind === "state" ? `state:${e.name}` : e.name),
        h("td", { class: "mono wrap" }, e.args ?? ""),
        h("td", {}, e.emitted_by ? [runLink(e.emitted_by.run_id), ` (${e.emitted_by.workflow})`] : h("span", { class: "muted" }, t("outside"))),
        h("td", {}, e.started.map((r) => h("div", {}, runLink(r.run_id), ` (${r.workflow})`))),
        h("td", {}, e.woke.map((id) => h("div", {}, runLink(id))))))))
      : h("p", { class: "muted" }, t("events.none"));
    const state = data.state.length ? h("table", { id: "state" },
      h("thead", {}, h("tr", {}, h("th", {}, t("col.name")), h("th", {}, t("col.value")))),
      h("tbody", {}, data.state.map((st) => h("tr", { "data-state": st.name }, h("td", { class: "mono" }, st.name),
        h("td", { class: `mono wrap${st.error ? " error" : ""}` }, st.error || JSON.stringify(st.value))))))
      : h("p", { class: "muted" }, t("events.noState"));
    return h("section", { id: "events" },
      h("h2", {}, t("events.title")),
      h("h3", {}, t("events.graph")), legend, graph(data.graph),
      h("h3", {}, t("events.state")), state,
      h("h3", {}, t("events.history")), history);
  }

  // -- actions -------------------------------------------------------------------------------
  function parseArgs(text) {
    if (!text.trim()) return null;
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new HttpError(t("actions.badJson", { error: err.message }));
    }
  }
  function showResults(box, results) {
    box.replaceChildren(
      h("p", {}, t("actions.advanced", { n: results.length })),
      h("table", {}, h("tbody", {}, results.map((r) => h("tr", {}, h("td", {}, runLink(r.run_id)),
        h("td", {}, r.workflow), h("td", {}, badge(r.status)), h("td", { class: "mono wrap" }, r.error || JSON.stringify(r.result)))))));
  }
  async function actionsView() {
    const data = await api("dashboard/api/runs?per_page=1");
    const triggers = [...new Set(Object.values(data.workflows).filter((tr) => !tr.startsWith("state:") && tr !== "every" && !tr.startsWith("cron:")))].sort();
    const out = h("div", { id: "action-result" });
    const guard = (fn) => async (e) => {
      e.preventDefault();
      const button = e.target.querySelector("button[type=submit]") || e.submitter;
      if (button) button.disabled = true;
      try {
        await fn(e.target);
      } catch (err) {
        flash(err.message, true);
      } finally {
        if (button) button.disabled = false;
      }
    };
    const start = h("form", { class: "action panel", id: "start-form", onsubmit: guard(async (form) => {
      const body = { trigger: form.trigger.value, args: parseArgs(form.args.value) };
      if (form.mode.value === "record") {
        const answer = await post("start", body);
        out.replaceChildren(h("p", {}, t("actions.started", { ids: "" }), answer.run_ids.map((id) => [runLink(id), " "])));
      } else {
        showResults(out, await post("runs", body));
      }
    }) },
    h("h3", {}, t("actions.start")),
    h("label", {}, t("actions.trigger"), " ", h("select", { name: "trigger", id: "start-trigger" }, triggers.map((tr) => h("option", { value: tr }, tr)))),
    h("label", {}, t("actions.args"), h("textarea", { name: "args", id: "start-args", placeholder: '{"name": "value"}' })),
    h("label", {}, h("select", { name: "mode", id: "start-mode" }, h("option", { value: "run" }, t("actions.runNow")), h("option", { value: "record" }, t("actions.record")))),
    h("button", { type: "submit", class: "primary", id: "start-button" }, t("actions.start")));
    const emit = h("form", { class: "action panel", id: "emit-form", onsubmit: guard(async (form) => {
      showResults(out, await post("runs", { event: form.event.value.trim(), args: parseArgs(form.args.value) }));
    }) },
    h("h3", {}, t("actions.emit")),
    h("label", {}, t("actions.event"), " ", h("input", { name: "event", id: "emit-event", required: true, list: "known-events" })),
    h("datalist", { id: "known-events" }, data.waits.map((w) => h("option", { value: w }))),
    h("label", {}, t("actions.args"), h("textarea", { name: "args", id: "emit-args" })),
    h("button", { type: "submit", class: "primary", id: "emit-button" }, t("actions.emitButton")));
    const resume = h("form", { class: "action panel", id: "resume-form", onsubmit: guard(async () => {
      showResults(out, await post("resume", {}));
    }) },
    h("h3", {}, t("actions.resume")), h("p", { class: "muted" }, t("actions.resumeHelp")),
    h("button", { type: "submit", class: "primary", id: "resume-button" }, t("actions.resumeButton")));
    return h("section", { id: "actions" }, h("h2", {}, t("actions.title")),
      h("div", { class: "grid2" }, h("div", {}, start, resume), h("div", {}, emit)),
      h("h3", {}, t("actions.result")), out);
  }

  // -- start ---------------------------------------------------------------------------------
  function translateStatic() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  }
  document.addEventListener("DOMContentLoaded", () => {
    const select = document.getElementById("lang");
    select.value = lang;
    select.addEventListener("change", () => {
      lang = select.value;
      localStorage.setItem("asyncflow.lang", lang);
      translateStatic();
      render();
    });
    if (document.documentElement.dataset.auth === "open") document.getElementById("logout").hidden = true;
    document.getElementById("live").addEventListener("change", live);
    window.addEventListener("hashchange", () => render());
    translateStatic();
    render();
    live();
  });
})();
