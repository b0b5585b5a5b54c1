// FLChain explorer: one page, no build step, no dependencies. Views come from the JSON API
// under /api; /api/stream (server-sent events) says when a new block arrived, and the page
// then asks again for the view it shows. Chain data is only ever set as text (never HTML).
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f6fb0", "#2f7d4f", "#a86b00", "#7b4bb0", "#0f8a8a", "#b0479b",
                  "#5b6472", "#8a5a2b", "#3f51b5", "#b8433b"];
  const main = document.getElementById("main");
  const tabs = document.getElementById("tabs");
  const badge = document.getElementById("badge");
  let info = null;
  let loading = false;
  let again = false;
  let renders = 0;

  // ---------------------------------------------------------------- DOM helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.setAttribute("class", value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function card(title, ...children) {
    return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...children);
  }

  function table(id, headers, rows) {
    return h("table", { id },
      h("thead", {}, h("tr", {}, headers.map((text) => h("th", {}, text)))),
      h("tbody", {}, rows));
  }

  function statusBadge(status) {
    return h("span", { class: `badge ${status}` }, status);
  }

  // ---------------------------------------------------------------- formatting

  function eth(wei) {
    if (wei === null || wei === undefined) return "-";
    const value = Number(wei) / 1e18;
    return value === 0 ? "0" : value.toFixed(value < 0.001 ? 6 : 4).replace(/0+$/, "").replace(/\.$/, "");
  }

  function short(hex) {
    if (!hex) return "-";
    const text = String(hex);
    return text.length > 14 ? `${text.slice(0, 8)}…${text.slice(-4)}` : text;
  }

  function when(ts) {
    if (!ts) return "-";
    return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19);
  }

  function num(value, digits) {
    if (value === null || value === undefined) return "-";
    return typeof value === "number" && digits !== undefined ? value.toFixed(digits) : String(value);
  }

  function memberName(member) {
    // "#3 node-2 0x1234…abcd" with the Byzantine mark in red.
    return h("span", { class: member.byzantine ? "byz" : null, title: member.account || "" },
      member.label);
  }

  function briefs(indices, byIndex) {
    if (indices === null || indices === undefined) return "-";
    if (!indices.length) return "none";
    return indices.map((i) => (byIndex[i] ? byIndex[i].brief : `#${i}`)).join(", ");
  }

  // ---------------------------------------------------------------- data

  async function api(path) {
    const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    const data = await response.json();
    if (!response.ok) {
      const error = new Error(data.error || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function route() {
    const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
    const parts = path.split("/").filter(Boolean);
    const params = new URLSearchParams(query || "");
    if (parts[0] !== "tasks") return { page: "home", params };
    if (parts.length === 1) return { page: "tasks", params };
    const task = Number(parts[1]);
    if (parts[2] === "rounds" && parts[3]) return { page: "round", task, round: Number(parts[3]), params };
    return { page: parts[2] || "overview", task, params };
  }

  // ---------------------------------------------------------------- header and live state

  function showInfo(next) {
    info = next;
    const live = next.live;
    document.body.dataset.live = live ? "1" : "0";
    if (next.head_block !== null && next.head_block !== undefined) {
      document.body.dataset.block = String(next.head_block);
    }
    document.getElementById("contract").textContent =
      `FLChain ${short(next.contract)} on chain ${next.chain_id} · ${next.origin}`;
    const block = next.head_block === null ? "" : ` · block ${next.head_block}`;
    if (next.error) setBadge("error", `chain not answering${block}`);
    else if (live) setBadge("live", `live${block}`);
    else setBadge("journal", `stopped devnet (journal)${block}`);
  }

  function setBadge(kind, text) {
    badge.className = `badge ${kind}`;
    badge.textContent = text;
  }

  function connect() {
    const stream = new EventSource("/api/stream");
    stream.addEventListener("hello", (e) => showInfo(JSON.parse(e.data)));
    stream.addEventListener("status", (e) => showInfo(JSON.parse(e.data)));
    stream.addEventListener("head", (e) => {
      showInfo(JSON.parse(e.data));
      refresh();
    });
    stream.addEventListener("open", () => refresh());
    stream.addEventListener("error", () => {
      if (stream.readyState === EventSource.CLOSED) {
        setBadge("reconnecting", "no live updates (retrying)");
        setTimeout(connect, 10000);
      } else {
        setBadge("reconnecting", "reconnecting");
      }
    });
  }

  async function refresh() {
    if (loading) {
      again = true;
      return;
    }
    const active = document.activeElement;
    if (active && main.contains(active) && /^(INPUT|SELECT)$/.test(active.tagName)) {
      setTimeout(refresh, 1000); // do not redraw a form under the user's fingers
      return;
    }
    loading = true;
    const at = location.hash;
    try {
      const view = await render(route());
      if (location.hash !== at) return;
      main.replaceChildren(...view);
      renders += 1;
      document.body.dataset.renders = String(renders);
      document.body.dataset.route = at || "#/";
    } catch (err) {
      if (location.hash === at) main.replaceChildren(h("div", { class: "error-box" }, String(err.message || err)));
      // The chain (503) or the server (no answer) may be back before the next block.
      if (!err.status || err.status >= 500) setTimeout(refresh, 3000);
    } finally {
      loading = false;
      if (again) {
        again = false;
        setTimeout(refresh, 100);
      }
    }
  }

  function taskTabs(task, page) {
    const pages = [["overview", "Rounds"], ["charts", "Charts"], ["members", "Members"],
                   ["events", "Events"], ["verify", "Verify"]];
    tabs.replaceChildren(
      h("a", { href: "#/tasks" }, "All tasks"),
      h("span", { class: "task-title" }, `· Task ${task}`),
      ...pages.map(([key, label]) =>
        h("a", { href: `#/tasks/${task}${key === "overview" ? "" : `/${key}`}`,
                 class: page === key ? "active" : null }, label)));
  }

  // ---------------------------------------------------------------- pages

  async function render(where) {
    if (where.page === "home") {
      if (!info) showInfo(await api("/api/info"));
      const only = info.default_task ? null : await api("/api/tasks");
      const task = info.default_task || (only.tasks.length === 1 ? only.tasks[0].task_id : null);
      if (task) {
        location.replace(`#/tasks/${task}`);
        return render(route());
      }
      return renderTasks();
    }
    if (where.page === "tasks") return renderTasks();
    taskTabs(where.task, where.page === "round" ? "overview" : where.page);
    switch (where.page) {
      case "overview": return renderOverview(where.task);
      case "round": return renderRound(where.task, where.round);
      case "charts": return renderCharts(where.task);
      case "members": return renderMembers(where.task);
      case "events": return renderEvents(where.task, where.params);
      case "verify": return renderVerify(where.task);
      default: throw new Error(`no page ${where.page}`);
    }
  }

  async function renderTasks() {
    tabs.replaceChildren(h("a", { href: "#/tasks", class: "active" }, "All tasks"));
    const data = await api("/api/tasks");
    const rows = data.tasks.map((t) => h("tr", { "data-task": t.task_id },
      h("td", {}, h("a", { href: `#/tasks/${t.task_id}` }, `Task ${t.task_id}`)),
      h("td", {}, statusBadge(t.status)),
      h("td", {}, `${t.n_active}/${t.n_members}`),
      h("td", {}, `${t.current_round}/${t.max_rounds}`),
      h("td", {}, t.global_round),
      h("td", {}, eth(t.stake)),
      h("td", {}, eth(t.reward_pool)),
      h("td", {}, eth(t.rewards_paid)),
      h("td", {}, t.settled ? "yes" : "no"),
      h("td", { class: "mono" }, short(t.owner))));
    return [card("Tasks",
      data.tasks.length ? table("tasks", ["task", "status", "members (active/joined)",
        "round (current/max)", "global round", "stake ETH", "pool ETH", "paid ETH", "settled",
        "owner"], rows) : h("p", { class: "muted" }, "No tasks on this contract yet."))];
  }

  async function renderOverview(task) {
    const [summary, timeline] = await Promise.all([api(`/api/tasks/${task}`), api(`/api/tasks/${task}/rounds`)]);
    const t = summary.task;
    const byIndex = Object.fromEntries(timeline.members.map((m) => [m.index, m]));
    const privacy = summary.privacy;
    const facts = h("div", { class: "facts" },
      fact("status", statusBadge(t.status)),
      fact("round", `${t.current_round} of ${t.max_rounds}`),
      fact("members", `${t.n_active} active of ${t.n_members}`),
      fact("quorum", `${t.quorum_bps / 100}% of reputation`),
      fact("alarm threshold", `${t.alarm_bps / 100}%`),
      fact("windows", `submit ${t.submit_window}s · vote ${t.vote_window}s`),
      fact("stake", `${eth(t.stake)} ETH`),
      fact("reward pool", `${eth(t.reward_pool)} ETH`),
      fact("rewards paid", `${eth(t.rewards_paid)} ETH`),
      fact("slashed", `${eth(t.slashed)} ETH`),
      fact("global model", `round ${t.global_round} ${short(t.global_digest)}`),
      fact("privacy", privacyText(privacy)),
      fact("head block", summary.head_block));
    const secure = timeline.rounds.some((r) => r.decryptor !== null || r.sum_digest !== null) ||
      (privacy && privacy.secure);
    const headers = ["round", "status", "started (UTC)", "committed", "accepted", "rejected",
      "votes", "best tally / quorum", "alarms", ...(secure ? ["decryptor"] : []),
      "global digest", "reward share ETH", "note"];
    const rows = timeline.rounds.map((r) => h("tr", { "data-round": r.round, "data-status": r.status },
      h("td", {}, h("a", { href: `#/tasks/${task}/rounds/${r.round}` }, `#${r.round}`)),
      h("td", { class: "status" }, statusBadge(r.status)),
      h("td", {}, when(r.start)),
      h("td", {}, `${r.committed}/${r.eligible}`),
      h("td", {}, num(r.accepted)),
      h("td", { class: "wrap" }, r.rejected_members ? `${r.rejected}: ${briefs(r.rejected_members, byIndex)}` : "-"),
      h("td", {}, `${r.votes}/${r.eligible}`),
      h("td", {}, tallyBar(r)),
      h("td", {}, r.alarms ? `${r.alarms} (weight ${r.alarm_weight} / ${r.alarm_threshold})` : "0"),
      secure ? h("td", {}, r.decryptor_label || "-") : null,
      h("td", { class: "mono" }, short(r.global_digest)),
      h("td", {}, eth(r.reward_share_wei)),
      h("td", { class: "wrap" }, roundNote(r))));
    return [
      card(`Task ${task}`, facts),
      card("Rounds", timeline.rounds.length
        ? table("rounds", headers, rows)
        : h("p", { class: "muted" }, "No round has started yet.")),
      card("Members × rounds", matrix(timeline), matrixLegend()),
    ];
  }

  function fact(label, value) {
    return h("div", {}, h("span", { class: "k" }, label), value);
  }

  function privacyText(privacy) {
    if (!privacy) return "config unknown";
    if (privacy.error) return `config: ${privacy.error}`;
    const parts = [privacy.has_dp ? `DP noise ${privacy.dp_noise}, δ ${privacy.dp_delta}` : "no DP noise"];
    if (privacy.secure) parts.push("secure aggregation");
    return parts.join(" · ");
  }

  function roundNote(r) {
    const notes = [];
    if (r.fail_reason) notes.push(`failed: ${r.fail_reason}`);
    if (r.status === "reverted") notes.push(`reverted by alarms; ${eth(r.clawed_back_wei)} ETH clawed back`);
    if (r.remasked && r.remasked.length) notes.push(`re-masked ${r.remasked.length}`);
    if (r.status === "stalled") notes.push("windows over without quorum");
    return notes.join("; ");
  }

  function tallyBar(r) {
    // The best (digest, accepted) pair's reputation against the quorum it needs.
    const best = r.tally_list.length ? r.tally_list[0].weight : 0;
    const total = Math.max(r.total_reputation, 1);
    const width = 120;
    const x = (v) => Math.min(width, Math.round((v / total) * width));
    const svg = s("svg", { width: width + 2, height: 12, viewBox: `0 0 ${width + 2} 12`, role: "img" },
      s("title", {}, `best tally ${best} of ${r.total_reputation}; quorum ${r.quorum_weight}`),
      s("rect", { x: 1, y: 2, width, height: 8, fill: "#eceef1" }),
      s("rect", { x: 1, y: 2, width: x(best), height: 8, fill: best >= r.quorum_weight && best > 0 ? "#2f7d4f" : "#2f6fb0" }),
      s("line", { x1: 1 + x(r.quorum_weight), x2: 1 + x(r.quorum_weight), y1: 0, y2: 12, stroke: "#1d2330", "stroke-width": 1.5 }));
    const split = r.tally_list.length > 1 ? ` (${r.tally_list.length} results)` : "";
    return h("span", {}, svg, " ", h("span", { class: "bar-note" }, `${best}/${r.quorum_weight}${split}`));
  }

  const CELL_MARK = { accepted: "✓", rejected: "✗", committed: "•", missed: "–", "not-eligible": "" };

  function matrix(timeline) {
    if (!timeline.rounds.length) return h("p", { class: "muted" }, "No round yet.");
    const head = h("tr", {}, h("th", {}, "member"), timeline.rounds.map((r) => h("th", {}, `#${r.round}`)));
    const rows = timeline.matrix.map((m) => h("tr", { "data-member": m.index },
      h("td", {}, memberName(m)),
      m.cells.map((c) => {
        const marks = [];
        if (c.voted) marks.push(c.late_vote ? "v*" : "v");
        if (c.alarmed) marks.push("!");
        if (c.decryptor) marks.push("D");
        if (c.remasked) marks.push("R");
        const title = [`round ${c.round}: ${c.state}`,
          c.loss !== null ? `loss ${c.loss.toFixed(4)}` : null,
          c.voted ? (c.late_vote ? "voted late" : "voted") : "no vote",
          c.alarmed ? "raised an alarm" : null, c.decryptor ? "decryptor" : null,
          c.paid ? "paid" : null].filter(Boolean).join(", ");
        return h("td", { class: `cell ${c.state}`, "data-round": c.round, "data-state": c.state, title },
          CELL_MARK[c.state] || "", marks.length ? h("small", {}, marks.join(" ")) : null);
      })));
    return h("table", { id: "matrix", class: "matrix" }, h("thead", {}, head), h("tbody", {}, rows));
  }

  function matrixLegend() {
    const item = (cls, mark, text) => h("span", {}, h("span", { class: `cell ${cls}` }, ` ${mark} `), text);
    return h("div", { class: "legend" },
      item("accepted", "✓", "accepted"), item("rejected", "✗", "rejected"),
      item("committed", "•", "committed, not judged yet"), item("missed", "–", "no update"),
      h("span", {}, "v voted (v* late) · ! alarm · D decryptor · R re-masked"));
  }

  async function renderRound(task, number) {
    const r = await api(`/api/tasks/${task}/rounds/${number}`);
    const facts = h("div", { class: "facts" },
      fact("status", statusBadge(r.status)),
      fact("started (UTC)", when(r.start)),
      fact("submit deadline", when(r.submit_deadline)),
      fact("vote deadline", when(r.vote_deadline)),
      fact("finalized", when(r.finalized_at)),
      fact("base round", r.base_round),
      fact("global digest", h("span", { class: "mono" }, short(r.global_digest))),
      fact("quorum", `${r.quorum_weight} of ${r.total_reputation}`),
      fact("final tally", num(r.final_tally)),
      fact("alarms", `${r.alarms} (weight ${r.alarm_weight} / ${r.alarm_threshold})`),
      fact("decryptor", r.decryptor_label || "-"),
      fact("reward share", `${eth(r.reward_share_wei)} ETH`));
    const rows = r.members.map((m) => h("tr", { "data-member": m.member },
      h("td", {}, memberName(m)),
      h("td", {}, m.submitted ? statusBadge(m.verdict || "committed") : "no update"),
      h("td", { class: "mono" }, short(m.digest)),
      h("td", {}, num(m.samples)),
      h("td", {}, m.loss === null ? "-" : m.loss.toFixed(4)),
      h("td", {}, m.voted ? `${short(m.vote_digest)} [${(m.vote_accepted || []).join(",")}]` : "no vote"),
      h("td", {}, m.vote_late ? "late" : num(m.vote_weight)),
      h("td", {}, m.alarmed ? `alarm (${num(m.alarm_weight)})` : ""),
      h("td", {}, eth(m.reward_wei)),
      h("td", { class: "wrap" }, (m.reputation_moves || []).map((mv) =>
        `${mv.delta > 0 ? "+" : ""}${mv.delta} ${mv.reasons.join("+")}${mv.undone ? " (undone)" : ""}`).join("; "))));
    const tallies = r.tally_list.map((t) => h("tr", {},
      h("td", { class: "mono" }, short(t.digest)),
      h("td", {}, `[${t.accepted.join(",")}]`),
      h("td", {}, t.weight),
      h("td", {}, t.voters.map((v) => `#${v}`).join(", ")),
      h("td", {}, t.won ? "finalized" : t.quorum ? "quorum" : "")));
    return [
      card(`Round ${number}`, h("p", {}, h("a", { href: `#/tasks/${task}` }, "← all rounds")), facts),
      card("Members", table("round-members", ["member", "update", "digest", "samples", "loss", "vote (digest [accepted])",
        "vote weight", "alarm", "reward ETH", "reputation moves"], rows)),
      card("Tallies", tallies.length ? table("tallies", ["global digest", "accepted", "weight", "voters", ""], tallies)
        : h("p", { class: "muted" }, "No votes yet.")),
    ];
  }

  async function renderCharts(task) {
    const [curves, history] = await Promise.all([api(`/api/tasks/${task}/curves`), api(`/api/tasks/${task}/history`)]);
    const accuracy = curves.accuracy.filter((a) => a.points.length);
    const charts = [
      card("Test accuracy per node", accuracy.length
        ? lineChart("accuracy", accuracy, { y0: 0, y1: 1, label: "accuracy" })
        : h("p", { class: "muted" }, "The nodes report accuracy; serve with --devnet DIR (and wait for a round) to see it.")),
      card("Training loss on chain", curves.loss.some((l) => l.points.some((p) => p[1] !== null))
        ? lineChart("loss", curves.loss, { label: "loss" })
        : h("p", { class: "muted" }, "No loss on chain yet (withheld under DP).")),
      card("Reputation", lineChart("reputation", history.members.map((m) => ({
        ...m, points: m.reputation.map((v, i) => [i, v]).filter((p) => p[1] !== null) })), { label: "reputation factor" })),
      card("Rewards credited (cumulative)", lineChart("rewards", history.members.map((m) => ({
        ...m, points: m.rewards_wei.map((v, i) => [i, Number(v) / 1e18]) })), { y0: 0, label: "ETH" })),
    ];
    return [h("div", { class: "charts" }, charts)];
  }

  function lineChart(id, series, opts) {
    // An SVG line chart over rounds: one polyline per member or node.
    const W = 600, H = 260, L = 52, R = 12, T = 12, B = 34;
    const points = series.flatMap((srs) => srs.points.filter((p) => p[1] !== null));
    if (!points.length) return h("p", { class: "muted" }, "Nothing to plot yet.");
    let x0 = Math.min(...points.map((p) => p[0])), x1 = Math.max(...points.map((p) => p[0]));
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    let y0 = opts.y0 !== undefined ? opts.y0 : Math.min(...points.map((p) => p[1]));
    let y1 = opts.y1 !== undefined ? opts.y1 : Math.max(...points.map((p) => p[1]));
    if (opts.y0 === undefined || opts.y1 === undefined) {
      const pad = (y1 - y0) * 0.08 || Math.abs(y1) * 0.1 || 1;
      if (opts.y0 === undefined) y0 = y0 >= 0 && y0 - pad < 0 ? 0 : y0 - pad;
      if (opts.y1 === undefined) y1 += pad;
    }
    const X = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
    const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
    const svg = s("svg", { id: `chart-${id}`, viewBox: `0 0 ${W} ${H}`, role: "img" }, s("title", {}, opts.label));
    for (let i = 0; i <= 4; i += 1) {
      const v = y0 + ((y1 - y0) * i) / 4;
      svg.append(s("line", { class: "grid", x1: L, x2: W - R, y1: Y(v), y2: Y(v) }),
        s("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end" }, Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(Math.abs(y1 - y0) < 0.1 ? 4 : 2)));
    }
    const step = Math.max(1, Math.ceil((x1 - x0) / 12));
    for (let v = Math.ceil(x0); v <= x1; v += step) {
      svg.append(s("text", { x: X(v), y: H - B + 16, "text-anchor": "middle" }, v));
    }
    svg.append(s("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }),
      s("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
      s("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "round"),
      s("text", { x: 12, y: T + (H - T - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${T + (H - T - B) / 2})` }, opts.label));
    const colorOf = (srs, i) => COLORS[(srs.index ?? i) % COLORS.length]; // one per member
    series.forEach((srs, i) => {
      const color = colorOf(srs, i);
      const pts = srs.points.filter((p) => p[1] !== null);
      const dash = srs.byzantine ? "5 3" : null;
      const group = s("g", { "data-series": srs.label }, s("title", {}, srs.label));
      if (pts.length > 1) {
        group.append(s("polyline", { points: pts.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "),
          fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": dash }));
      }
      for (const p of pts) group.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.8, fill: color }));
      svg.append(group);
    });
    const legend = h("div", { class: "legend" }, series.map((srs, i) => h("span", {},
      s("svg", { width: 18, height: 8, viewBox: "0 0 18 8" },
        s("line", { x1: 0, x2: 18, y1: 4, y2: 4, stroke: colorOf(srs, i), "stroke-width": 2.5,
          "stroke-dasharray": srs.byzantine ? "5 3" : null })),
      h("span", { class: srs.byzantine ? "byz" : null }, srs.node && srs.index === null ? srs.node : srs.brief))));
    return h("div", { class: "chart" }, svg, legend);
  }

  async function renderMembers(task) {
    const data = await api(`/api/tasks/${task}/members`);
    const dp = data.privacy && !data.privacy.error;
    const who = (m) => h("td", { class: m.byzantine ? "byz" : null }, m.brief); // account is in its own column
    const headers = ["member", "account", "peer id", "status", "reputation", "stake ETH",
      "joined round", ...(dp ? ["DP rounds", "epsilon"] : [])];
    const rows = data.members.map((m) => h("tr", { "data-member": m.index },
      who(m),
      h("td", { class: "mono" }, m.account),
      h("td", { class: "mono", title: m.peer_id }, short(m.peer_id)),
      h("td", {}, statusBadge(m.status)),
      h("td", {}, m.reputation_factor.toFixed(3)),
      h("td", {}, eth(m.stake_wei)),
      h("td", {}, m.since_round),
      dp ? h("td", {}, num(m.dp_rounds)) : null,
      dp ? h("td", {}, m.epsilon === null ? "no DP" : num(m.epsilon, 3)) : null));
    const money = data.members.map((m) => h("tr", { "data-member": m.index },
      who(m),
      h("td", {}, eth(m.earned_wei)),
      h("td", {}, eth(m.payout_wei)),
      h("td", {}, eth(m.forfeited_wei)),
      h("td", {}, eth(m.withdrawn_wei)),
      h("td", {}, m.reputation_lost),
      h("td", { class: "wrap" }, (m.penalties || []).map((p) =>
        `r${p.round} ${p.reasons.join("+")} -${p.lost}${p.undone ? " (undone)" : ""}`).join("; ") || "none")));
    const note = data.privacy && data.privacy.error ? h("div", { class: "error-box" }, data.privacy.error) : null;
    return [
      card(`Task ${task} members`, note, table("members", headers, rows)),
      card("Money and penalties", table("money", ["member", "earned ETH", "payout ETH",
        "forfeited ETH", "withdrawn ETH", "reputation lost", "penalties"], money)),
    ];
  }

  async function renderEvents(task, params) {
    const query = new URLSearchParams();
    if (params.get("name")) query.set("name", params.get("name"));
    if (params.get("round")) query.set("round", params.get("round"));
    const data = await api(`/api/tasks/${task}/events${query.toString() ? `?${query}` : ""}`);
    const select = h("select", { id: "event-name" }, h("option", { value: "" }, "all events"),
      data.names.map((n) => h("option", { value: n, selected: n === params.get("name") }, n)));
    const round = h("input", { id: "event-round", type: "number", min: 0, placeholder: "round",
      value: params.get("round") || "" });
    const apply = () => {
      const next = new URLSearchParams();
      if (select.value) next.set("name", select.value);
      if (round.value) next.set("round", round.value);
      document.activeElement.blur();
      location.hash = `#/tasks/${task}/events${next.toString() ? `?${next}` : ""}`;
    };
    select.addEventListener("change", apply);
    round.addEventListener("change", apply);
    const rows = data.events.map((e) => h("tr", {},
      h("td", {}, e.block_number),
      h("td", { class: "mono", title: e.tx_hash }, short(e.tx_hash)),
      h("td", {}, e.event),
      h("td", {}, e.args.round === undefined ? "-" : e.args.round),
      h("td", {}, e.member_label || "-"),
      h("td", { class: "wrap mono" }, Object.entries(e.args).filter(([k]) => k !== "round" && k !== "task_id")
        .map(([k, v]) => `${k}=${typeof v === "string" && v.length > 20 ? short(v) : JSON.stringify(v)}`).join(" "))));
    const shown = data.events.length < data.total ? `showing ${data.events.length} of ${data.total}` : `${data.total} events`;
    return [card(`Task ${task} event log`,
      h("div", { class: "filters" }, select, round, h("span", { class: "muted" }, shown)),
      table("events", ["block", "tx", "event", "round", "member", "args"], rows))];
  }

  async function renderVerify(task) {
    const data = await api(`/api/tasks/${task}/verify`);
    if (!data.available) return [card("Blob verification", h("p", { class: "muted" }, data.reason))];
    const rows = data.checks.map((c) => h("tr", { "data-status": c.status },
      h("td", {}, c.kind),
      h("td", {}, c.round),
      h("td", {}, c.member_label || "-"),
      h("td", { class: "mono", title: c.digest }, short(c.digest)),
      h("td", {}, statusBadge(c.status)),
      h("td", {}, c.paths.length),
      h("td", { class: "wrap mono" }, c.bad_paths.join(" "))));
    return [card("Blob verification",
      h("p", {}, `${data.ok} ok, ${data.mismatch} mismatch, ${data.missing} missing — every on-chain digest re-hashed against the blob files in ${data.blob_dirs.length} directories (as flchain ledger verify).`),
      table("verify", ["kind", "round", "member", "digest", "status", "copies", "mismatching files"], rows))];
  }

  window.addEventListener("hashchange", () => refresh());
  connect();
  refresh();
})();
