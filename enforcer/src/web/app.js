// enforcer web view: draws the agent's service graph (GET /api/graph) as SVG and
// redraws it every 2 s. Plain DOM code, no libraries, no other server: the page
// must work on a host with no outside network and under `default-src 'self'`.
// Every text from the graph goes in through textContent or setAttribute, never as
// markup.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const REFRESH_MS = 2000;
  // The drawing's coordinate system (the SVG viewBox).
  const CX = 500;
  const CY = 360;
  // Workloads on an inner ellipse, everything else (host, CIDRs, the world) outside.
  const INNER = { rx: 250, ry: 185 };
  const INNER_ALONE = { rx: 330, ry: 250 };
  const OUTER = { rx: 420, ry: 290 };
  const RADIUS = { workload: 26, host: 22, cidr: 20, world: 20 };
  const KIND_ORDER = { workload: 0, host: 1, cidr: 2, world: 3 };
  // Below this rate (bytes per second, both directions) an edge counts as idle.
  const IDLE_BPS = 1;

  const state = {
    view: null,
    kinds: new Map(),
    layoutKey: "",
    positions: new Map(),
    // What the details panel shows: {type: "edge"|"node", key}; pinned by a click.
    selected: null,
    pinned: false,
    inFlight: false,
    refreshes: 0,
  };

  const $ = (id) => document.getElementById(id);

  function svg(name, attrs, parent) {
    const e = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (parent) parent.appendChild(e);
    return e;
  }

  function html(tag, attrs, text, parent) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (parent) parent.appendChild(e);
    return e;
  }

  // ---- formatting -------------------------------------------------------------

  function fmtBytes(n) {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let v = Number(n) || 0;
    let i = 0;
    while (v >= 1000 && i < units.length - 1) {
      v /= 1000;
      i += 1;
    }
    return (i === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 1 : 0)) + " " + units[i];
  }

  function fmtRate(n) {
    return fmtBytes(n) + "/s";
  }

  function fmtCount(n) {
    return (Number(n) || 0).toLocaleString("en-US");
  }

  // "2026-12-03T18:10:00.123Z" -> "2026-12-03 18:10:00 UTC"; anything else as it is.
  function fmtTime(s) {
    if (!s) return "-";
    const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?Z$/.exec(s);
    return m ? `${m[1]} ${m[2]} UTC` : s;
  }

  function fmtPerSec(n) {
    const v = Number(n) || 0;
    return (v >= 10 ? v.toFixed(0) : v.toFixed(2)) + "/s";
  }

  // ---- the model ----------------------------------------------------------------

  function edgeKey(e) {
    return [e.src, e.dst, e.protocol, e.port].join("\u0000");
  }

  function portLabel(e) {
    return e.port ? `${e.protocol}/${e.port}` : e.protocol;
  }

  // allowed (green) | idle (grey) | denied (red, dashed) | mixed (orange)
  function edgeClass(e) {
    if (e.verdict === "denied") return "denied";
    if (e.verdict === "mixed") return "mixed";
    return (Number(e.rate_bps) || 0) >= IDLE_BPS ? "allowed" : "idle";
  }

  // Width by log(rate): a thin line for idle edges, about 14 units at 10 MB/s.
  function edgeWidth(e) {
    const r = Math.max(0, Number(e.rate_bps) || 0);
    if (r < IDLE_BPS) return 1.5;
    return Math.min(14, 1.5 + 1.8 * Math.log10(1 + r));
  }

  // ---- layout -------------------------------------------------------------------

  // A pure function of the set of node ids, so every refresh (and every reload of
  // the page) with the same nodes draws the same picture.
  function layout(nodes) {
    const byKind = (a, b) =>
      (KIND_ORDER[a.kind] ?? 9) - (KIND_ORDER[b.kind] ?? 9) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    const inner = nodes.filter((n) => n.kind === "workload").sort(byKind);
    const outer = nodes.filter((n) => n.kind !== "workload").sort(byKind);
    const pos = new Map();
    const ring = (list, r, offset) => {
      list.forEach((n, i) => {
        if (list.length === 1 && r === INNER_ALONE && outer.length === 0) {
          pos.set(n.id, { x: CX, y: CY });
          return;
        }
        const a = -Math.PI / 2 + offset + (2 * Math.PI * i) / list.length;
        pos.set(n.id, { x: CX + r.rx * Math.cos(a), y: CY + r.ry * Math.sin(a) });
      });
    };
    ring(inner, outer.length ? INNER : INNER_ALONE, 0);
    // Half a step round, so outer nodes sit between the workloads, not behind them.
    ring(outer, OUTER, outer.length ? Math.PI / Math.max(outer.length, 2) : 0);
    return pos;
  }

  // Parallel edges (same pair, several ports, or both directions) bend apart.
  function bends(edges) {
    const groups = new Map();
    for (const e of edges) {
      const k = e.src + "\u0000" + e.dst;
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(e);
    }
    const out = new Map();
    for (const [k, list] of groups) {
      const [src, dst] = k.split("\u0000");
      const reverse = groups.has(dst + "\u0000" + src);
      list.forEach((e, i) => {
        // With traffic both ways every edge bends to its own side (the normal of a
        //→ b is the opposite of b → a's); otherwise they fan out around the line.
        const bend = reverse ? (i + 1) * 26 : (i - (list.length - 1) / 2) * 30;
        out.set(edgeKey(e), bend);
      });
    }
    return out;
  }

  // Geometry of one edge: a quadratic curve from the rim of the source to the base
  // of an arrowhead whose tip touches the rim of the destination.
  function geometry(e, bend, width) {
    const s = state.positions.get(e.src);
    const t = state.positions.get(e.dst);
    if (!s || !t) return null;
    const rs = RADIUS[nodeKind(e.src)] || 22;
    const rt = RADIUS[nodeKind(e.dst)] || 22;
    if (e.src === e.dst) {
      const y = s.y - rs;
      return {
        d: `M ${s.x - 10} ${y} C ${s.x - 40} ${y - 60}, ${s.x + 40} ${y - 60}, ${s.x + 10} ${y}`,
        arrow: null,
        label: { x: s.x, y: y - 52 },
      };
    }
    const dx = t.x - s.x;
    const dy = t.y - s.y;
    const len = Math.hypot(dx, dy) || 1;
    const nx = -dy / len;
    const ny = dx / len;
    const mx = (s.x + t.x) / 2;
    const my = (s.y + t.y) / 2;
    const c = { x: mx + nx * bend * 2, y: my + ny * bend * 2 };
    const unit = (from, to) => {
      const l = Math.hypot(to.x - from.x, to.y - from.y) || 1;
      return { x: (to.x - from.x) / l, y: (to.y - from.y) / l };
    };
    const u0 = unit(s, c);
    const u1 = unit(c, t);
    const start = { x: s.x + u0.x * rs, y: s.y + u0.y * rs };
    const tip = { x: t.x - u1.x * (rt + 2), y: t.y - u1.y * (rt + 2) };
    const alen = Math.max(11, width * 1.6);
    const awid = Math.max(9, width * 1.9) / 2;
    const base = { x: tip.x - u1.x * alen, y: tip.y - u1.y * alen };
    const arrow = [
      [tip.x, tip.y],
      [base.x + -u1.y * awid, base.y + u1.x * awid],
      [base.x - -u1.y * awid, base.y - u1.x * awid],
    ]
      .map((p) => p.map((v) => v.toFixed(1)).join(","))
      .join(" ");
    // The stroke ends inside the arrowhead so wide lines do not poke out of it.
    const end = { x: base.x + u1.x * 2, y: base.y + u1.y * 2 };
    const f = (v) => v.toFixed(1);
    return {
      d: `M ${f(start.x)} ${f(start.y)} Q ${f(c.x)} ${f(c.y)} ${f(end.x)} ${f(end.y)}`,
      arrow,
      label: { x: mx + nx * bend, y: my + ny * bend },
    };
  }

  function nodeKind(id) {
    return state.kinds.get(id) || "world";
  }

  // ---- drawing ------------------------------------------------------------------

  function nodeShape(kind, g) {
    const r = RADIUS[kind] || 22;
    switch (kind) {
      case "host":
        return svg("rect", { x: -r, y: -r, width: 2 * r, height: 2 * r, rx: 5, class: "shape" }, g);
      case "cidr": {
        const pts = [];
        for (let i = 0; i < 6; i += 1) {
          const a = (Math.PI / 3) * i;
          pts.push(`${(r * Math.cos(a)).toFixed(1)},${(r * Math.sin(a)).toFixed(1)}`);
        }
        return svg("polygon", { points: pts.join(" "), class: "shape" }, g);
      }
      default:
        return svg("circle", { r, class: "shape" }, g);
    }
  }

  function edgeTitle(e) {
    return [
      `${e.src} → ${e.dst}  ${portLabel(e)}`,
      `verdict: ${e.verdict}${e.anomalous ? " (anomalous)" : ""}`,
      `rate: ${fmtRate(e.rate_bps)}, ${fmtPerSec(e.rate_pps)} packets, ${fmtPerSec(e.connection_rate)} connections`,
      `sent: ${fmtBytes(e.bytes)} in ${fmtCount(e.packets)} packets; replies: ${fmtBytes(e.reply_bytes)} in ${fmtCount(e.reply_packets)} packets`,
      `dropped: ${fmtCount(e.dropped_packets)} packets (${fmtBytes(e.dropped_bytes)})`,
      `connections: ${fmtCount(e.connections)} (${fmtCount(e.denied_connections)} denied)`,
      `last reason: ${e.last_reason || "-"}`,
      `decided by: ${e.decided_by || "-"}`,
      `first seen: ${fmtTime(e.first_seen)}`,
      `last seen: ${fmtTime(e.last_seen)}`,
    ].join("\n");
  }

  function draw(view) {
    const key = view.nodes
      .map((n) => n.kind + ":" + n.id)
      .sort()
      .join("\n");
    state.kinds = new Map(view.nodes.map((n) => [n.id, n.kind]));
    if (key !== state.layoutKey) {
      state.positions = layout(view.nodes);
      state.layoutKey = key;
    }
    const halos = $("halos");
    const edges = $("edges");
    const labels = $("edge-labels");
    const nodes = $("nodes");
    for (const g of [halos, edges, labels, nodes]) g.replaceChildren();

    const bend = bends(view.edges);
    for (const e of view.edges) {
      const k = edgeKey(e);
      const width = edgeWidth(e);
      const geo = geometry(e, bend.get(k) || 0, width);
      if (!geo) continue;
      const cls = edgeClass(e);
      if (e.anomalous) {
        svg("path", { d: geo.d, class: "halo", "stroke-width": (width + 12).toFixed(1) }, halos);
      }
      const g = svg(
        "g",
        {
          class: `edge ${cls}${e.anomalous ? " anomalous" : ""}`,
          "data-edge": k,
          "data-src": e.src,
          "data-dst": e.dst,
          "data-protocol": e.protocol,
          "data-port": e.port,
          "data-verdict": e.verdict,
          "data-anomalous": e.anomalous ? "true" : "false",
        },
        edges,
      );
      svg("path", { d: geo.d, class: "line", "stroke-width": width.toFixed(1) }, g);
      if (geo.arrow) svg("polygon", { points: geo.arrow, class: "arrow" }, g);
      svg("path", { d: geo.d, class: "hit", "stroke-width": Math.max(14, width + 8).toFixed(1) }, g);
      svg("title", {}, g).textContent = edgeTitle(e);
      hook(g, { type: "edge", key: k });
      const t = svg(
        "text",
        { x: geo.label.x.toFixed(1), y: (geo.label.y + 4).toFixed(1), class: `edge-label ${cls}` },
        labels,
      );
      t.textContent = portLabel(e);
    }

    for (const n of view.nodes) {
      const p = state.positions.get(n.id);
      if (!p) continue;
      const g = svg(
        "g",
        {
          class: `node kind-${n.kind}`,
          "data-node": n.id,
          "data-kind": n.kind,
          transform: `translate(${p.x.toFixed(1)} ${p.y.toFixed(1)})`,
        },
        nodes,
      );
      nodeShape(n.kind, g);
      const r = RADIUS[n.kind] || 22;
      svg("text", { y: r + 16, class: "label" }, g).textContent = n.id;
      const labelsText = Object.entries(n.labels || {})
        .map(([k, v]) => `${k}=${v}`)
        .join(", ");
      svg("title", {}, g).textContent = `${n.id} (${n.kind})${labelsText ? "\n" + labelsText : ""}`;
      hook(g, { type: "node", key: n.id });
    }
    $("empty").hidden = view.nodes.length > 0;
    drawTable(view);
    highlight();
    showDetails();
  }

  function drawTable(view) {
    const body = $("edge-rows");
    body.replaceChildren();
    for (const e of view.edges) {
      const k = edgeKey(e);
      const cls = edgeClass(e);
      const tr = html(
        "tr",
        {
          class: `${cls}${e.anomalous ? " anomalous" : ""}`,
          "data-edge": k,
          "data-src": e.src,
          "data-dst": e.dst,
          "data-protocol": e.protocol,
          "data-port": e.port,
          "data-verdict": e.verdict,
          "data-anomalous": e.anomalous ? "true" : "false",
        },
        null,
        body,
      );
      const cells = [
        e.src,
        e.dst,
        portLabel(e),
        e.verdict + (e.anomalous ? ", anomalous" : ""),
        fmtRate(e.rate_bps),
        fmtBytes(e.bytes + e.reply_bytes),
        fmtCount(e.packets + e.reply_packets),
        fmtCount(e.dropped_packets),
        fmtCount(e.connections),
        e.last_reason || "-",
        e.decided_by || "-",
        fmtTime(e.last_seen),
      ];
      // Columns: 3 the verdict (coloured), 9 and 10 free text that may wrap.
      const cellClass = (i) => (i === 3 ? "verdict" : i === 9 || i === 10 ? "text" : "");
      cells.forEach((c, i) => html("td", cellClass(i) ? { class: cellClass(i) } : {}, c, tr));
      hook(tr, { type: "edge", key: k });
    }
  }

  // ---- interaction ----------------------------------------------------------------

  function hook(elem, target) {
    elem.addEventListener("mouseenter", () => {
      if (state.pinned) return;
      state.selected = target;
      highlight();
      showDetails();
    });
    elem.addEventListener("mouseleave", () => {
      if (state.pinned) return;
      state.selected = null;
      highlight();
      showDetails();
    });
    elem.addEventListener("click", (ev) => {
      ev.stopPropagation();
      const same = state.selected && state.selected.type === target.type && state.selected.key === target.key;
      state.pinned = !(state.pinned && same);
      state.selected = target;
      highlight();
      showDetails();
    });
  }

  function highlight() {
    const sel = state.selected;
    for (const e of document.querySelectorAll("[data-edge]")) {
      const key = e.getAttribute("data-edge");
      const on =
        sel &&
        ((sel.type === "edge" && sel.key === key) ||
          (sel.type === "node" && (e.getAttribute("data-src") === sel.key || e.getAttribute("data-dst") === sel.key)));
      e.classList.toggle("selected", Boolean(on));
    }
    for (const n of document.querySelectorAll("g.node")) {
      n.classList.toggle("selected", Boolean(sel && sel.type === "node" && sel.key === n.getAttribute("data-node")));
    }
    $("graph").classList.toggle("has-selection", Boolean(sel));
  }

  function showDetails() {
    const box = $("details");
    box.replaceChildren();
    const sel = state.selected;
    const view = state.view;
    if (!sel || !view) {
      html("p", { class: "note" }, "Nothing selected.", box);
      return;
    }
    const rows = [];
    if (sel.type === "edge") {
      const e = view.edges.find((x) => edgeKey(x) === sel.key);
      if (!e) {
        html("p", { class: "note" }, "This edge has expired.", box);
        return;
      }
      html("h3", { class: edgeClass(e) }, `${e.src} → ${e.dst}`, box);
      rows.push(
        ["protocol/port", portLabel(e)],
        ["verdict", e.verdict + (e.anomalous ? " (anomalous)" : "")],
        ["rate", `${fmtRate(e.rate_bps)}, ${fmtPerSec(e.rate_pps)} packets`],
        ["new connections", fmtPerSec(e.connection_rate)],
        ["sent", `${fmtBytes(e.bytes)}, ${fmtCount(e.packets)} packets`],
        ["replies", `${fmtBytes(e.reply_bytes)}, ${fmtCount(e.reply_packets)} packets`],
        ["dropped", `${fmtCount(e.dropped_packets)} packets, ${fmtBytes(e.dropped_bytes)}`],
        ["connections", `${fmtCount(e.connections)} (${fmtCount(e.denied_connections)} denied)`],
        ["last reason", e.last_reason || "-"],
        ["decided by", e.decided_by || "-"],
        ["first seen", fmtTime(e.first_seen)],
        ["last seen", fmtTime(e.last_seen)],
      );
    } else {
      const n = view.nodes.find((x) => x.id === sel.key);
      if (!n) {
        html("p", { class: "note" }, "This node has expired.", box);
        return;
      }
      html("h3", {}, n.id, box);
      const out = view.edges.filter((e) => e.src === n.id);
      const inc = view.edges.filter((e) => e.dst === n.id);
      const sum = (list) => list.reduce((a, e) => a + (Number(e.rate_bps) || 0), 0);
      rows.push(["kind", n.kind]);
      for (const [k, v] of Object.entries(n.labels || {})) rows.push([k, v]);
      rows.push(
        ["outgoing edges", `${out.length}, ${fmtRate(sum(out))}`],
        ["incoming edges", `${inc.length}, ${fmtRate(sum(inc))}`],
        ["denied or mixed edges", String([...out, ...inc].filter((e) => e.verdict !== "allowed").length)],
      );
    }
    const dl = html("dl", {}, null, box);
    for (const [k, v] of rows) {
      html("dt", {}, k, dl);
      html("dd", {}, v, dl);
    }
    html("p", { class: "note" }, state.pinned ? "Pinned: click it again to release." : "Click to pin.", box);
  }

  function legend() {
    const ul = $("legend");
    const line = (cls, text, extra) => {
      const li = html("li", {}, null, ul);
      const s = svg("svg", { width: 46, height: 16, viewBox: "0 0 46 16", "aria-hidden": "true" }, li);
      if (extra === "halo") svg("path", { d: "M 4 8 L 42 8", class: "halo", "stroke-width": 13 }, s);
      const g = svg("g", { class: `edge ${cls}` }, s);
      svg("path", { d: "M 4 8 L 34 8", class: "line", "stroke-width": extra === "wide" ? 7 : 2.5 }, g);
      svg("polygon", { points: "44,8 33,2.5 33,13.5", class: "arrow" }, g);
      html("span", {}, text, li);
    };
    const node = (kind, text) => {
      const li = html("li", {}, null, ul);
      const s = svg("svg", { width: 46, height: 24, viewBox: "-23 -12 46 24", "aria-hidden": "true" }, li);
      const g = svg("g", { class: `node kind-${kind}`, transform: "scale(0.42)" }, s);
      nodeShape(kind, g);
      html("span", {}, text, li);
    };
    line("allowed", "allowed, active", "wide");
    line("idle", "allowed, idle");
    line("denied", "denied");
    line("mixed", "partly denied (mixed)");
    line("allowed", "anomalous", "halo");
    node("workload", "workload");
    node("host", "host");
    node("cidr", "policy CIDR");
    node("world", "outside world");
  }

  // ---- refresh --------------------------------------------------------------------

  function setStatus(text, error) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("error", Boolean(error));
  }

  async function refresh() {
    if (state.inFlight) return;
    state.inFlight = true;
    try {
      const resp = await fetch("/api/graph", { cache: "no-store", headers: { Accept: "application/json" } });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const view = await resp.json();
      if (!view || !Array.isArray(view.nodes) || !Array.isArray(view.edges)) {
        throw new Error("unexpected answer");
      }
      state.view = view;
      draw(view);
      state.refreshes += 1;
      document.body.setAttribute("data-refreshes", String(state.refreshes));
      let text = `${view.nodes.length} nodes, ${view.edges.length} edges; updated ${fmtTime(view.generated_at)}`;
      if (view.edges_dropped) text += `; ${fmtCount(view.edges_dropped)} new edges not stored (edge limit reached)`;
      setStatus(text, false);
    } catch (err) {
      setStatus(`cannot read the graph from the agent (${err.message}); showing the last one`, true);
    } finally {
      state.inFlight = false;
    }
  }

  function start() {
    legend();
    $("graph").addEventListener("click", () => {
      state.pinned = false;
      state.selected = null;
      highlight();
      showDetails();
    });
    refresh();
    setInterval(refresh, REFRESH_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
