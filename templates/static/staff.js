// Moments staff dashboard: draws the view model sent on /staff/stream (Server-Sent Events).
// Plain DOM, no framework; every element is built with textContent, never innerHTML.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const link = document.getElementById("link");
  const GOOD = new Set(["ok", "online"]);
  const UNSURE = new Set(["unknown", "starting"]);

  function el(tag, attrs, text) {
    const node = tag.startsWith("svg:")
      ? document.createElementNS(SVG, tag.slice(4))
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  const statusClass = (s) => (GOOD.has(s) ? "ok" : UNSURE.has(s) ? "unknown" : "bad");
  const minutes = (s) => (s < 60 ? `${s} s` : `${Math.floor(s / 60)} min`);
  // Light paper to deep green: the lightness falls from 95% to 30% as the zone fills.
  const shadeFill = (shade) => `hsl(150, 45%, ${Math.round(95 - shade * 65)}%)`;

  // A figure's counts per hour today as a small line under it (no axes; the label says it).
  function sparkline(series, label) {
    if (!Array.isArray(series) || series.length < 2) return null;
    const w = 120, h = 24, top = Math.max(1, ...series);
    const step = w / (series.length - 1);
    const points = series.map((v, i) => `${(i * step).toFixed(1)},${(h - (v / top) * h).toFixed(1)}`);
    const svg = el("svg:svg", {
      class: "sparkline", viewBox: `0 -1 ${w} ${h + 2}`, width: w, height: h + 2,
      role: "img", "aria-label": `${label} per hour today: ${series.join(", ")}`,
    });
    svg.append(el("svg:polyline", {
      points: points.join(" "), fill: "none", stroke: "currentColor", "stroke-width": 1.5,
    }));
    return svg;
  }

  const percent = (rate) => (rate === null ? "n/a" : `${(rate * 100).toFixed(1)} %`);

  // Today's conversion against the holdout: shown vs held out, the lift, a word on the counts.
  function holdout(h) {
    if (!h) return ["n/a", null];
    if (!h.shown && !h.held_out) return ["nothing shown yet", null];
    const lift = h.lift === null ? "" : ` (lift ${h.lift >= 0 ? "+" : ""}${Math.round(h.lift * 100)} %)`;
    const text = `${percent(h.treated_rate)} vs ${percent(h.holdout_rate)}${lift}`;
    const detail = `${h.redeemed_shown} of ${h.shown} shown, ${h.redeemed_held_out} of ${h.held_out} held out`;
    return [text, h.warning ? `${detail}; too few yet to tell` : detail];
  }

  function figures(f) {
    const box = document.getElementById("figures");
    const hourly = f.hourly || {};
    const [conversion, note] = holdout(f.holdout);
    const rows = [
      [`Visitors (${f.visitors_source})`, f.visitors, hourly.visitors],
      ["Opted-in shoppers recognised", f.recognised ?? "n/a", hourly.recognised],
      ["Opted-in shoppers here now", f.shoppers_present],
      ["Offers shown", f.offers_shown ?? "n/a", hourly.offers_shown],
      ["Redemptions", f.redemptions ?? "n/a", hourly.redemptions],
      ["Conversion: shown vs holdout", conversion, null, note],
    ];
    box.replaceChildren(...rows.map(([k, v, series, detail]) => {
      const d = el("div");
      d.append(el("dt", {}, k), el("dd", {}, String(v)));
      const line = sparkline(series, k);
      if (line) d.append(line);
      if (detail) d.append(el("p", { class: "note" }, detail));
      return d;
    }));
  }

  function marker(svg, at, cls, label, shape) {
    if (!at) return;
    const [x, y] = at;
    const g = el("svg:g", { class: `marker ${cls}`, role: "img", "aria-label": label });
    g.append(el("svg:title", {}, label));
    if (shape === "square") {
      g.append(el("svg:rect", { x: x - 0.45, y: y - 0.45, width: 0.9, height: 0.9 }));
    } else if (shape === "diamond") {
      g.append(el("svg:polygon", { points: `${x},${y - 0.6} ${x + 0.6},${y} ${x},${y + 0.6} ${x - 0.6},${y}` }));
    } else {
      g.append(el("svg:circle", { cx: x, cy: y, r: shape === "help" ? 0.7 : 0.4 }));
    }
    svg.append(g);
  }

  function centre(points) {
    const n = points.length;
    return [points.reduce((a, p) => a + p[0], 0) / n, points.reduce((a, p) => a + p[1], 0) / n];
  }

  function map(d) {
    const svg = document.getElementById("map");
    const list = document.getElementById("zone-list");
    svg.hidden = !d.map;
    list.hidden = d.map;
    if (!d.map) {
      list.replaceChildren(...d.zones.map((z) =>
        el("li", { "data-zone": z.id }, `${z.name}: ${z.anonymous} devices heard now, ${z.present} shoppers now`)));
      return;
    }
    const [x0, y0, x1, y1] = d.bounds;
    svg.setAttribute("viewBox", `${x0 - 1} ${y0 - 1} ${x1 - x0 + 2} ${y1 - y0 + 2}`);
    const parts = [];
    const zoneAt = {};
    svg.replaceChildren();
    for (const z of d.zones) {
      zoneAt[z.id] = centre(z.polygon);
      const label = `${z.name}: ${z.anonymous} devices heard now, ${z.present} shoppers now`;
      const p = el("svg:polygon", {
        class: "zone", "data-zone": z.id, "data-shade": z.shade, fill: shadeFill(z.shade),
        points: z.polygon.map((q) => q.join(",")).join(" "), "aria-label": label,
      });
      p.append(el("svg:title", {}, label));
      svg.append(p);
      const [cx, cy] = zoneAt[z.id];
      parts.push(el("svg:text", { class: "label", x: cx, y: cy - 1.2, "text-anchor": "middle" },
        `${z.name} · ${z.anonymous + z.present}`));
    }
    svg.append(...parts);
    for (const k of d.kiosks) marker(svg, k.at, "ok", `Kiosk ${k.name}: ${k.showing}`, "square");
    for (const n of d.nodes) marker(svg, n.at, statusClass(n.status), `Node ${n.id}: ${n.status}`, "circle");
    for (const b of d.beacons) marker(svg, b.at, statusClass(b.status), `Beacon ${b.id}: ${b.status}`, "diamond");
    for (const h of d.help) {
      if (h.zone && zoneAt[h.zone]) {
        const [cx, cy] = zoneAt[h.zone];
        marker(svg, [cx, cy + 1.2], "bad", `${h.name} waiting ${minutes(h.waiting_s)}`, "help");
      }
    }
  }

  function lists(d) {
    const help = document.getElementById("help");
    help.replaceChildren(...(d.help.length ? d.help.map((h) => el("li", { class: `level-${h.level}` },
      `${h.name}, ${h.zone_name ?? "zone unknown"}, waiting ${minutes(h.waiting_s)}` +
      (h.acknowledged_by ? ` (taken by ${h.acknowledged_by})` : " (not taken yet)")))
      : [el("li", { class: "none" }, "Nobody is waiting.")]));
    document.getElementById("kiosks").replaceChildren(...d.kiosks.map((k) =>
      el("li", {}, `${k.name}: ${k.showing}`)));
    document.getElementById("devices").replaceChildren(
      ...d.nodes.map((n) => el("li", { class: statusClass(n.status) }, `Node ${n.id}: ${n.status}` +
        (n.wifi_rssi === null || n.wifi_rssi === undefined ? "" : `, Wi-Fi ${n.wifi_rssi} dBm`))),
      ...d.beacons.map((b) => el("li", { class: statusClass(b.status) }, `Beacon ${b.id}: ${b.status.replace("_", " ")}`)));
  }

  const source = new EventSource("/staff/stream");
  source.addEventListener("dashboard", (event) => {
    const d = JSON.parse(event.data);
    figures(d.figures);
    map(d);
    lists(d);
    document.body.dataset.updated = String(Date.now());
  });
  source.onopen = () => { link.className = "link-up"; link.textContent = "live"; };
  source.onerror = () => { link.className = "link-down"; link.textContent = "reconnecting"; };
})();
