/* tensortap serve: plots drawn from JSON with plain SVG and canvas (no library, nothing fetched).
   Every text goes in through textContent or an attribute: nothing read from a run becomes markup. */
"use strict";

const TTPlot = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                   "#7f7f7f", "#bcbd22", "#17becf"];
  const MODE_DASH = {train: "", eval: "6 3", predict: "2 3", global: "1 0"};

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = String(v);
      else if (k === "cls") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const k of kids.flat(Infinity)) if (k !== null && k !== undefined && k !== false)
      e.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function colour(i) { return PALETTE[((i % PALETTE.length) + PALETTE.length) % PALETTE.length]; }

  /* ---- numbers ------------------------------------------------------------------------------ */
  function fmt(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) {
      if (a >= 1e6 && a < 1e12) {
        const units = [[1e9, "G"], [1e6, "M"]];
        for (const [d, u] of units) if (a >= d) return (v / d).toFixed(a / d >= 100 ? 0 : 2).replace(/\.?0+$/, "") + u;
      }
      return v.toExponential(digits === undefined ? 2 : digits);
    }
    if (Number.isInteger(v)) return a >= 1e4 ? (v / 1e3).toFixed(a >= 1e5 ? 0 : 1).replace(/\.0$/, "") + "k" : String(v);
    return Number(v.toPrecision(digits === undefined ? 4 : digits)).toString();
  }

  function bytes(n) {
    const u = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + u[i];
  }

  function ticks(lo, hi, n) {
    if (!(hi > lo)) { const d = Math.abs(lo) || 1; lo -= d / 2; hi += d / 2; }
    const raw = (hi - lo) / Math.max(1, n);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(m => m * p).find(s => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }

  function logTicks(lo, hi) {
    const out = [];
    const a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
    const every = Math.max(1, Math.ceil((b - a) / 6));
    for (let e = a; e <= b; e += every) { const v = Math.pow(10, e); if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v); }
    if (out.length < 2) return ticks(lo, hi, 4).filter(v => v > 0);
    return out;
  }

  /* ---- tooltip ------------------------------------------------------------------------------ */
  function tip(evt, lines) {
    const t = document.getElementById("tip");
    if (!t) return;
    if (!lines) { t.hidden = true; return; }
    t.replaceChildren(...lines.map(l => el("div", {text: l})));
    t.hidden = false;
    const x = evt.clientX + 14, y = evt.clientY + 14;
    t.style.left = Math.min(x, window.innerWidth - t.offsetWidth - 8) + "px";
    t.style.top = Math.min(y, window.innerHeight - t.offsetHeight - 8) + "px";
  }

  /* ---- colour maps ---------------------------------------------------------------------------- */
  const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
                   [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
  function ramp(stops, t) {
    t = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
    return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
  }
  const viridis = t => ramp(VIRIDIS, t);
  function jet(t) {
    t = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0));
    const c = x => Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - x))));
    return [c(3), c(2), c(1)];
  }

  /* ---- a line / scatter plot ----------------------------------------------------------------- */
  // opts: {series: [{label, color, dash, x, y, points, labels}], width, height, title, xlabel, ylabel,
  //        logx, logy, vlines: [{x, label, color}], hlines: [{y, label, color}], onzoom(lo, hi), xrange}
  function line(opts) {
    const W = opts.width || 520, H = opts.height || 240;
    const M = {l: 62, r: 12, t: opts.title ? 22 : 8, b: 38};
    const wrap = el("div", {cls: "plot"});
    const root = svg("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img"});
    wrap.appendChild(root);
    if (opts.title) root.appendChild(svg("text", {x: M.l, y: 15, class: "ptitle"}, opts.title));
    const pts = [];
    for (const s of opts.series) for (let i = 0; i < s.x.length; i++) {
      const x = s.x[i], y = s.y[i];
      if (x === null || y === null || !Number.isFinite(x) || !Number.isFinite(y)) continue;
      if (opts.logx && x <= 0) continue;
      if (opts.logy && y <= 0) continue;
      pts.push([x, y]);
    }
    for (const h of opts.hlines || []) if (Number.isFinite(h.y)) pts.push([null, h.y]);
    if (!pts.filter(p => p[0] !== null).length) {
      root.appendChild(svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted"},
        opts.empty || "no points to draw in this range"));
      return wrap;
    }
    let xs = pts.filter(p => p[0] !== null).map(p => p[0]), ys = pts.map(p => p[1]);
    let x0 = opts.xrange && opts.xrange[0] !== null ? opts.xrange[0] : Math.min(...xs);
    let x1 = opts.xrange && opts.xrange[1] !== null ? opts.xrange[1] : Math.max(...xs);
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    const tx = opts.logx ? Math.log10 : (v => v), ty = opts.logy ? Math.log10 : (v => v);
    let a0 = tx(x0), a1 = tx(x1), b0 = ty(y0), b1 = ty(y1);
    if (a1 === a0) { a0 -= 0.5; a1 += 0.5; }
    if (b1 === b0) { const d = Math.abs(b0) * 0.05 || 0.5; b0 -= d; b1 += d; }
    const pad = (b1 - b0) * 0.05; b0 -= pad; b1 += pad;
    const X = v => M.l + (tx(v) - a0) / (a1 - a0) * (W - M.l - M.r);
    const Y = v => H - M.b - (ty(v) - b0) / (b1 - b0) * (H - M.t - M.b);
    const plotArea = svg("rect", {x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, class: "area"});
    root.appendChild(plotArea);
    // axes and ticks: readable numbers
    const xt = opts.logx ? logTicks(Math.pow(10, a0), Math.pow(10, a1)) : ticks(a0, a1, Math.max(2, Math.floor((W - M.l) / 90)));
    const yt = opts.logy ? logTicks(Math.pow(10, b0), Math.pow(10, b1)) : ticks(b0, b1, Math.max(2, Math.floor(H / 45)));
    for (const v of xt) {
      const px = X(v);
      if (px < M.l - 0.5 || px > W - M.r + 0.5) continue;
      root.appendChild(svg("line", {x1: px, x2: px, y1: M.t, y2: H - M.b, class: "grid"}));
      root.appendChild(svg("text", {x: px, y: H - M.b + 14, "text-anchor": "middle", class: "tick"}, fmt(v)));
    }
    for (const v of yt) {
      const py = Y(v);
      if (py < M.t - 0.5 || py > H - M.b + 0.5) continue;
      root.appendChild(svg("line", {x1: M.l, x2: W - M.r, y1: py, y2: py, class: "grid"}));
      root.appendChild(svg("text", {x: M.l - 5, y: py + 4, "text-anchor": "end", class: "tick"}, fmt(v)));
    }
    if (opts.xlabel) root.appendChild(svg("text", {x: (M.l + W - M.r) / 2, y: H - 6, "text-anchor": "middle", class: "label"}, opts.xlabel));
    if (opts.ylabel) root.appendChild(svg("text", {x: 12, y: (M.t + H - M.b) / 2, "text-anchor": "middle", class: "label",
                                                   transform: `rotate(-90 12 ${(M.t + H - M.b) / 2})`}, opts.ylabel));
    const clipId = "c" + Math.random().toString(36).slice(2);
    const clip = svg("clipPath", {id: clipId});
    clip.appendChild(svg("rect", {x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b}));
    root.appendChild(clip);
    const g = svg("g", {"clip-path": `url(#${clipId})`});
    root.appendChild(g);
    for (const v of opts.vlines || []) {
      if (!Number.isFinite(v.x) || (opts.logx && v.x <= 0)) continue;
      const l = svg("line", {x1: X(v.x), x2: X(v.x), y1: M.t, y2: H - M.b, class: "vline", stroke: v.color || "#d62728"});
      if (v.label) l.appendChild(svg("title", {}, v.label));
      g.appendChild(l);
    }
    for (const h of opts.hlines || []) {
      if (!Number.isFinite(h.y)) continue;
      g.appendChild(svg("line", {x1: M.l, x2: W - M.r, y1: Y(h.y), y2: Y(h.y), class: "hline", stroke: h.color || "#d62728"}));
      if (h.label) g.appendChild(svg("text", {x: W - M.r - 4, y: Y(h.y) - 4, "text-anchor": "end", class: "hlabel",
                                              fill: h.color || "#d62728"}, h.label));
    }
    for (const s of opts.series) {
      let d = "", pen = false;
      for (let i = 0; i < s.x.length; i++) {
        const x = s.x[i], y = s.y[i];
        const ok = x !== null && y !== null && Number.isFinite(x) && Number.isFinite(y) && !(opts.logx && x <= 0) && !(opts.logy && y <= 0);
        if (!ok) { pen = false; continue; }
        d += (pen ? "L" : "M") + X(x).toFixed(1) + " " + Y(y).toFixed(1);
        pen = true;
      }
      if (d) g.appendChild(svg("path", {d, class: "series", stroke: s.color, "stroke-dasharray": s.dash || null,
                                        "data-label": s.label}));
      if (s.points || s.x.length < 3) {
        for (let i = 0; i < s.x.length; i++) {
          const x = s.x[i], y = s.y[i];
          if (x === null || y === null || (opts.logx && x <= 0) || (opts.logy && y <= 0)) continue;
          const c = svg("circle", {cx: X(x), cy: Y(y), r: 3, fill: s.color});
          c.appendChild(svg("title", {}, `${s.label}: ${fmt(x)}, ${fmt(y)}` + (s.labels ? ` (${s.labels[i]})` : "")));
          g.appendChild(c);
          if (s.labels && s.x.length <= 40) g.appendChild(svg("text", {x: X(x) + 4, y: Y(y) - 4, class: "plabel"}, s.labels[i]));
        }
      }
    }
    // hover: the nearest point of each series; drag: zoom to the x range selected
    const guide = svg("line", {y1: M.t, y2: H - M.b, class: "guide", visibility: "hidden"});
    const band = svg("rect", {y: M.t, height: H - M.t - M.b, class: "band", visibility: "hidden"});
    root.appendChild(guide);
    root.appendChild(band);
    const invX = px => { const a = a0 + (px - M.l) / (W - M.l - M.r) * (a1 - a0); return opts.logx ? Math.pow(10, a) : a; };
    const local = evt => { const r = root.getBoundingClientRect(); return evt.clientX - r.left; };
    let dragFrom = null;
    root.addEventListener("mousemove", evt => {
      const px = local(evt);
      if (px < M.l || px > W - M.r) { guide.setAttribute("visibility", "hidden"); tip(evt, null); return; }
      guide.setAttribute("x1", px); guide.setAttribute("x2", px); guide.setAttribute("visibility", "visible");
      if (dragFrom !== null) {
        band.setAttribute("x", Math.min(dragFrom, px)); band.setAttribute("width", Math.abs(px - dragFrom));
        band.setAttribute("visibility", "visible");
      }
      const xv = invX(px), lines = [`${opts.xlabel || "x"} ${fmt(xv)}`];
      for (const s of opts.series) {
        let best = -1, bd = Infinity;
        for (let i = 0; i < s.x.length; i++) { const d = Math.abs(X(s.x[i]) - px); if (d < bd && s.y[i] !== null) { bd = d; best = i; } }
        if (best >= 0 && bd < 30) lines.push(`${s.label}: ${fmt(s.y[best])} at ${fmt(s.x[best])}` + (s.labels ? ` (${s.labels[best]})` : ""));
      }
      for (const v of opts.vlines || []) if (Math.abs(X(v.x) - px) < 3 && v.label) lines.push(v.label);
      tip(evt, lines);
    });
    root.addEventListener("mouseleave", evt => { guide.setAttribute("visibility", "hidden"); tip(evt, null); });
    if (opts.onzoom) {
      root.classList.add("zoomable");
      root.addEventListener("mousedown", evt => { dragFrom = local(evt); evt.preventDefault(); });
      root.addEventListener("mouseup", evt => {
        const px = local(evt);
        band.setAttribute("visibility", "hidden");
        if (dragFrom !== null && Math.abs(px - dragFrom) > 4) {
          const lo = invX(Math.max(M.l, Math.min(dragFrom, px))), hi = invX(Math.min(W - M.r, Math.max(dragFrom, px)));
          opts.onzoom(Math.floor(lo), Math.ceil(hi));
        }
        dragFrom = null;
      });
      root.addEventListener("dblclick", () => opts.onzoom(null, null));
    }
    return wrap;
  }

  function legend(items) {
    return el("div", {cls: "legend"}, items.map(it => el("span", {cls: "key"},
      (() => { const s = svg("svg", {width: 22, height: 10});
               s.appendChild(svg("line", {x1: 1, x2: 21, y1: 5, y2: 5, stroke: it.color, "stroke-width": 2.5,
                                           "stroke-dasharray": it.dash || null})); return s; })(),
      el("span", {text: it.label}))));
  }

  /* ---- a colour bar -------------------------------------------------------------------------- */
  function colorbar(map, lo, hi, label, height) {
    const H = height || 160, W = 64;
    const c = el("canvas", {width: 14, height: H - 20, cls: "cbar"});
    const ctx = c.getContext("2d");
    for (let i = 0; i < H - 20; i++) { const [r, g, b] = map(1 - i / (H - 21)); ctx.fillStyle = `rgb(${r},${g},${b})`; ctx.fillRect(0, i, 14, 1); }
    return el("div", {cls: "cbarbox"}, el("div", {cls: "muted small", text: fmt(hi)}), c,
              el("div", {cls: "muted small", text: fmt(lo)}), el("div", {cls: "small", text: label || ""}));
  }

  /* ---- a heat map (distributions over steps) -------------------------------------------------- */
  // opts: {columns: [counts per bin] per step, steps, edges, width, height, log, vlines}
  function heatmap(opts) {
    const W = opts.width || 640, H = opts.height || 220, M = {l: 62, r: 8, t: 8, b: 34};
    const wrap = el("div", {cls: "heat"});
    const box = el("div", {cls: "heatplot"});
    const cv = el("canvas", {width: W, height: H});
    box.appendChild(cv);
    wrap.appendChild(box);
    const ctx = cv.getContext("2d");
    const cols = opts.columns, steps = opts.steps, edges = opts.edges;
    const nb = edges.length - 1;
    let vmax = 0;
    const tr = v => opts.log ? Math.log1p(v || 0) : (v || 0);
    for (const c of cols) for (const v of c) vmax = Math.max(vmax, tr(v));
    vmax = vmax || 1;
    const pw = W - M.l - M.r, ph = H - M.t - M.b;
    const s0 = steps[0], s1 = steps[steps.length - 1];
    const span = Math.max(1, s1 - s0);
    const bounds = steps.map((s, j) => {
      const prev = j > 0 ? (steps[j - 1] + s) / 2 : s - (steps.length > 1 ? (steps[1] - s) / 2 : 0.5);
      const next = j < steps.length - 1 ? (s + steps[j + 1]) / 2 : s + (steps.length > 1 ? (s - steps[j - 1]) / 2 : 0.5);
      return [prev, next];
    });
    const lo = bounds[0][0], hi = bounds[bounds.length - 1][1];
    const X = v => M.l + (v - lo) / (hi - lo) * pw;
    for (let j = 0; j < cols.length; j++) {
      const xa = X(bounds[j][0]), xb = X(bounds[j][1]);
      for (let b = 0; b < nb; b++) {
        const [r, g, bl] = viridis(tr(cols[j][b]) / vmax);
        ctx.fillStyle = `rgb(${r},${g},${bl})`;
        ctx.fillRect(xa, M.t + ph - (b + 1) * ph / nb, Math.max(1, xb - xa + 0.5), ph / nb + 0.5);
      }
    }
    ctx.fillStyle = "#333"; ctx.font = "11px sans-serif"; ctx.textAlign = "center";
    for (const v of ticks(s0, s0 + span, Math.max(2, Math.floor(pw / 90)))) {
      if (v < lo || v > hi) continue;
      ctx.fillText(fmt(v), X(v), H - M.b + 14);
    }
    ctx.fillText(opts.xlabel || "step", M.l + pw / 2, H - 6);
    ctx.textAlign = "right";
    const e0 = edges[0], e1 = edges[nb];
    for (const v of ticks(e0, e1, 5)) {
      if (v < e0 || v > e1) continue;
      ctx.fillText(fmt(v), M.l - 5, M.t + ph - (v - e0) / (e1 - e0) * ph + 4);
    }
    for (const v of opts.vlines || []) {
      if (v.x < lo || v.x > hi) continue;
      ctx.strokeStyle = "#ff3030"; ctx.lineWidth = 1.2;
      ctx.beginPath(); ctx.moveTo(X(v.x), M.t); ctx.lineTo(X(v.x), M.t + ph); ctx.stroke();
    }
    cv.addEventListener("mousemove", evt => {
      const r = cv.getBoundingClientRect(), px = evt.clientX - r.left, py = evt.clientY - r.top;
      if (px < M.l || px > W - M.r || py < M.t || py > M.t + ph) { tip(evt, null); return; }
      const sv = lo + (px - M.l) / pw * (hi - lo);
      let j = 0; while (j < bounds.length - 1 && bounds[j][1] < sv) j++;
      const b = Math.min(nb - 1, Math.max(0, Math.floor((M.t + ph - py) / ph * nb)));
      const lines = [`step ${steps[j]}`, `values ${fmt(edges[b])} … ${fmt(edges[b + 1])}`, `count ${fmt(cols[j][b])}`];
      for (const v of opts.vlines || []) if (Math.abs(X(v.x) - px) < 3) lines.push(v.label);
      tip(evt, lines);
    });
    cv.addEventListener("mouseleave", evt => tip(evt, null));
    wrap.appendChild(colorbar(viridis, 0, opts.log ? Math.expm1(vmax) : vmax, opts.log ? "count (log)" : "count", H));
    return wrap;
  }

  /* ---- histogram bars ------------------------------------------------------------------------- */
  function bars(counts, edges, opts) {
    opts = opts || {};
    const W = opts.width || 420, H = opts.height || 160, M = {l: 46, r: 8, t: 8, b: 30};
    const root = svg("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img"});
    const n = counts.length, cmax = Math.max(1, ...counts.map(c => c || 0));
    const e0 = edges[0], e1 = edges[n];
    const X = v => M.l + (v - e0) / ((e1 - e0) || 1) * (W - M.l - M.r);
    for (let i = 0; i < n; i++) {
      const h = (counts[i] || 0) / cmax * (H - M.t - M.b);
      const r = svg("rect", {x: X(edges[i]), y: H - M.b - h, width: Math.max(1, X(edges[i + 1]) - X(edges[i]) - 1),
                             height: h, class: "bar"});
      r.appendChild(svg("title", {}, `${fmt(edges[i])} … ${fmt(edges[i + 1])}: ${fmt(counts[i])}`));
      root.appendChild(r);
    }
    for (const v of ticks(e0, e1, 4)) if (v >= e0 && v <= e1)
      root.appendChild(svg("text", {x: X(v), y: H - M.b + 14, "text-anchor": "middle", class: "tick"}, fmt(v)));
    root.appendChild(svg("text", {x: M.l - 4, y: M.t + 10, "text-anchor": "end", class: "tick"}, fmt(cmax)));
    root.appendChild(svg("text", {x: (M.l + W) / 2, y: H - 4, "text-anchor": "middle", class: "label"}, opts.xlabel || "value"));
    return el("div", {cls: "plot"}, root);
  }

  return {el, svg, colour, fmt, bytes, ticks, tip, line, legend, heatmap, bars, colorbar, viridis, jet, MODE_DASH, PALETTE};
})();
