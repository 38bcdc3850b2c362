/**
 * The dashboard page: one HTML file with its style and script inline, no
 * build step, nothing loaded from elsewhere (fleet networks are often
 * offline). It reads /api/fleet/events (server-sent events) and draws the
 * node table, the fleet totals and T*, the piece strip (a canvas) and the
 * progress chart (inline SVG). The query string (?torrent=, ?token=) is
 * passed on to the data URLs.
 */
export const FLEET_PAGE = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>blockswarm fleet</title>
<style>
  :root { --bg: #0f1419; --panel: #182029; --text: #d8dee6; --dim: #8393a5; --line: #2a3542;
          --downloading: #3b82f6; --finishing: #a855f7; --seeding: #22c55e; --done: #15803d; --error: #ef4444; --silent: #f59e0b; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--text); }
  header { display: flex; align-items: baseline; gap: 16px; padding: 12px 20px; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 18px; margin: 0; }
  header .dim { color: var(--dim); }
  #conn { margin-left: auto; font-size: 12px; }
  #conn.live::before { content: "\25CF "; color: var(--seeding); }
  #conn.lost::before { content: "\25CF "; color: var(--error); }
  main { padding: 16px 20px; display: grid; gap: 16px; }
  .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
  .card { background: var(--panel); border-radius: 6px; padding: 10px 12px; }
  .card .k { color: var(--dim); font-size: 12px; }
  .card .v { font-size: 22px; font-variant-numeric: tabular-nums; }
  .card .n { color: var(--dim); font-size: 11px; }
  .panel { background: var(--panel); border-radius: 6px; padding: 10px 12px; }
  .panel h2 { font-size: 13px; margin: 0 0 8px; color: var(--dim); font-weight: 600; }
  .row2 { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
  canvas#piecebar { width: 100%; height: 36px; display: block; image-rendering: pixelated; }
  .legend { display: flex; gap: 12px; font-size: 11px; color: var(--dim); margin-top: 6px; flex-wrap: wrap; }
  .legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
  svg#chart { width: 100%; height: 140px; display: block; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { color: var(--dim); font-weight: 600; font-size: 12px; }
  td.num, th.num { text-align: right; }
  .bar { width: 160px; height: 10px; background: var(--line); border-radius: 5px; overflow: hidden; display: inline-block; vertical-align: middle; }
  .bar > span { display: block; height: 100%; }
  .pct { display: inline-block; width: 48px; text-align: right; margin-left: 6px; }
  .state { padding: 1px 8px; border-radius: 9px; font-size: 12px; color: #fff; }
  .why { color: var(--dim); font-size: 12px; }
</style>
</head>
<body>
<header>
  <h1>blockswarm fleet</h1>
  <span class="dim" id="torrent">connecting…</span>
  <span id="conn">connecting</span>
</header>
<main>
  <section class="cards">
    <div class="card"><div class="k">nodes done</div><div class="v" id="fleet-done">–</div><div class="n" id="fleet-states"></div></div>
    <div class="card"><div class="k">fleet download</div><div class="v" id="fleet-rate">–</div><div class="n" id="fleet-up"></div></div>
    <div class="card"><div class="k">from other nodes</div><div class="v" id="fleet-peers">–</div><div class="n">of the bytes the nodes downloaded</div></div>
    <div class="card"><div class="k">fleet ETA</div><div class="v" id="fleet-eta">–</div><div class="n" id="fleet-elapsed"></div></div>
    <div class="card"><div class="k">bound T* (last finish)</div><div class="v" id="bound">–</div><div class="n" id="bound-rates"></div></div>
  </section>
  <section class="row2">
    <div class="panel"><h2>pieces: how many nodes hold each (a complete node all, a silent one none)</h2><canvas id="piecebar" height="36"></canvas><div class="legend" id="piecebar-legend"></div></div>
    <div class="panel"><h2>fleet progress over time</h2><svg id="chart" viewBox="0 0 600 140" preserveAspectRatio="none"></svg></div>
  </section>
  <section class="panel">
    <h2 id="nodes-title">nodes</h2>
    <table id="nodes">
      <thead><tr><th>address</th><th>progress</th><th>state</th><th class="num">down</th><th class="num">up</th><th class="num">served</th><th class="num">last seen</th><th>note</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
</main>
<script>
"use strict";
var STATE_COLOR = {};
["downloading", "finishing", "seeding", "done", "error", "silent"].forEach(function (s) {
  STATE_COLOR[s] = getComputedStyle(document.documentElement).getPropertyValue("--" + s).trim();
});
function $(id) { return document.getElementById(id); }
function bytes(n) {
  var u = ["B", "KB", "MB", "GB", "TB"], i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + u[i];
}
function rate(n) { return bytes(n) + "/s"; }
function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function el(tag, attrs, text) {
  var e = document.createElement(tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function heat(k, max) {
  if (k === 0) return "#7f1d1d";
  var f = max <= 1 ? 1 : (k - 1) / (max - 1);
  var r = Math.round(234 - f * 200), g = Math.round(179 + f * 18), b = Math.round(8 + f * 86);
  return "rgb(" + r + "," + g + "," + b + ")";
}
function drawStrip(f) {
  var c = $("piecebar"), w = c.clientWidth || 600;
  c.width = w;
  var ctx = c.getContext("2d"), n = f.pieces.length, max = Math.max(1, f.fleet.nodes);
  ctx.clearRect(0, 0, w, c.height);
  for (var x = 0; x < w; x++) {
    var a = Math.floor((x * n) / w), b = Math.max(a + 1, Math.floor(((x + 1) * n) / w)), least = Infinity;
    for (var i = a; i < b && i < n; i++) least = Math.min(least, f.pieces[i]);
    if (least === Infinity) continue;
    ctx.fillStyle = heat(least, max);
    ctx.fillRect(x, 0, 1, c.height);
  }
  var lg = $("piecebar-legend"), thin = 0, min = Infinity;
  f.pieces.forEach(function (k) { if (k <= 1) thin++; min = Math.min(min, k); });
  lg.textContent = "";
  [0, 1, max].forEach(function (k) {
    var s = el("span"); s.appendChild(el("i", { style: "background:" + heat(k, max) })); s.appendChild(document.createTextNode(k === max ? k + " (every node)" : String(k))); lg.appendChild(s);
  });
  lg.appendChild(el("span", { id: "piecebar-thin" }, n + " pieces, " + thin + " held by at most one node, fewest holders " + (min === Infinity ? 0 : min)));
}
function drawChart(f) {
  var svg = $("chart"), h = f.history, W = 600, H = 140, ns = "http://www.w3.org/2000/svg";
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  [0.25, 0.5, 0.75, 1].forEach(function (y) {
    var l = document.createElementNS(ns, "line");
    l.setAttribute("x1", 0); l.setAttribute("x2", W); l.setAttribute("y1", H - y * (H - 10)); l.setAttribute("y2", H - y * (H - 10));
    l.setAttribute("stroke", "#2a3542"); l.setAttribute("stroke-width", 1); svg.appendChild(l);
  });
  if (h.length < 2) return;
  var t0 = h[0].t, span = Math.max(1, h[h.length - 1].t - t0), maxN = Math.max(1, f.fleet.nodes);
  function line(value, color, id) {
    var d = h.map(function (p, i) { return (i ? "L" : "M") + ((p.t - t0) / span * W).toFixed(1) + " " + (H - value(p) * (H - 10)).toFixed(1); }).join(" ");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", d); path.setAttribute("fill", "none"); path.setAttribute("stroke", color); path.setAttribute("stroke-width", 2);
    path.setAttribute("vector-effect", "non-scaling-stroke"); path.setAttribute("id", id);
    svg.appendChild(path);
  }
  line(function (p) { return p.progress; }, STATE_COLOR.downloading, "chart-progress");
  line(function (p) { return p.done / maxN; }, STATE_COLOR.seeding, "chart-done");
}
function render(f) {
  $("torrent").textContent = f.torrent.name + " · " + bytes(f.torrent.size) + " · " + f.torrent.pieceCount + " pieces · " + f.torrent.infoHash.slice(0, 12);
  var fl = f.fleet;
  $("fleet-done").textContent = fl.done + " / " + fl.nodes;
  $("fleet-states").textContent = Object.keys(fl.byState).filter(function (s) { return fl.byState[s] > 0; }).map(function (s) { return fl.byState[s] + " " + s; }).join(" · ");
  $("fleet-rate").textContent = rate(fl.downloadRate);
  $("fleet-up").textContent = "nodes upload " + rate(fl.uploadRate) + " · seeder " + rate(fl.seederUploadRate);
  $("fleet-peers").textContent = fl.fromPeers === null ? "–" : Math.round(fl.fromPeers * 100) + "%";
  $("fleet-eta").textContent = fl.lastFinish !== null ? "all done" : duration(fl.eta);
  $("fleet-elapsed").textContent = fl.lastFinish !== null ? "last finished after " + duration(fl.lastFinish) : "running for " + duration(fl.elapsed);
  var b = f.bound;
  $("bound").textContent = b.seconds === null ? "–" : duration(b.seconds);
  $("bound-rates").textContent = "S " + bytes(b.size) + ", N " + b.nodes + ", C_seed " + (b.seederRate ? rate(b.seederRate) : "?") + " (" + b.seederRateFrom + "), C " + (b.nodeRate ? rate(b.nodeRate) : "?") + " (" + b.nodeRateFrom + ")";
  $("nodes-title").textContent = "nodes (" + fl.nodes + "; silent after " + f.silentAfter + " s unheard)";
  var tb = document.querySelector("#nodes tbody");
  tb.textContent = "";
  f.nodes.forEach(function (n) {
    var tr = el("tr", { "data-id": n.id, "data-state": n.state });
    tr.appendChild(el("td", { class: "address" }, n.address));
    var td = el("td"), bar = el("span", { class: "bar" }), fill = el("span", { style: "width:" + (n.progress * 100).toFixed(1) + "%;background:" + STATE_COLOR[n.state] });
    bar.appendChild(fill); td.appendChild(bar); td.appendChild(el("span", { class: "pct" }, (n.progress * 100).toFixed(1) + "%"));
    tr.appendChild(td);
    var st = el("td"); st.appendChild(el("span", { class: "state", style: "background:" + STATE_COLOR[n.state] }, n.state)); tr.appendChild(st);
    tr.appendChild(el("td", { class: "num" }, rate(n.downloadRate)));
    tr.appendChild(el("td", { class: "num" }, rate(n.uploadRate)));
    tr.appendChild(el("td", { class: "num" }, bytes(n.uploaded)));
    tr.appendChild(el("td", { class: "num" }, n.connected ? "connected" : duration(n.lastSeenAgo) + " ago"));
    tr.appendChild(el("td", { class: "why" }, n.reason || ""));
    tb.appendChild(tr);
  });
  drawStrip(f);
  drawChart(f);
  document.body.setAttribute("data-updated", String(f.at));
}
var conn = $("conn");
var source = new EventSource("api/fleet/events" + location.search);
source.addEventListener("fleet", function (e) { conn.className = "live"; conn.textContent = "live"; render(JSON.parse(e.data)); });
source.onerror = function () { conn.className = "lost"; conn.textContent = "reconnecting"; };
</script>
</body>
</html>
`
