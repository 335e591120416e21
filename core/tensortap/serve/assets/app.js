/* tensortap serve: the page. Runs list, one run's panels, comparison of runs; live through
   server-sent events. Every value from a run is put into the page as text, never as markup. */
"use strict";

const {el, svg, fmt, bytes, colour} = TTPlot;
const STATE_CLASS = {"live": "live", "complete": "complete", "interrupted": "interrupted", "writer gone": "gone",
                     "unreadable": "bad", "opening": "muted"};
const MODE_COLOUR = {train: "#1f77b4", eval: "#ff7f0e", predict: "#2ca02c", global: "#7f7f7f"};

/* ---- talking to the server ------------------------------------------------------------------- */
const enc = v => encodeURIComponent(JSON.stringify(v));

async function api(path, params) {
  const qs = Object.entries(params || {}).filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => `${k}=${v}`).join("&");
  let r;
  try {
    r = await fetch(path + (qs ? "?" + qs : ""), {credentials: "same-origin", cache: "no-store"});
  } catch (e) {
    return {error: "the server did not answer: is tensortap serve still running?"};
  }
  try {
    const body = await r.json();
    if (!r.ok && !body.error) body.error = `the server answered HTTP ${r.status}`;
    return body;
  } catch (e) {
    return {error: `unexpected answer from the server (HTTP ${r.status})`};
  }
}

/* run `fn` now, or once more right after the run in progress (never two at once) */
function coalesce(fn) {
  let running = false, again = false;
  const go = async () => {
    if (running) { again = true; return; }
    running = true;
    try { await fn(); } catch (e) { showError(e); } finally {
      running = false;
      if (again) { again = false; go(); }
    }
  };
  return go;
}

/* at most one call every `ms` (the last one always happens): for panels that need not follow every step */
function throttle(go, ms) {
  let last = 0, timer = null;
  return () => {
    const wait = last + ms - Date.now();
    if (wait <= 0) { last = Date.now(); go(); return; }
    if (!timer) timer = setTimeout(() => { timer = null; last = Date.now(); go(); }, wait);
  };
}

function showError(e) {
  console.error("tensortap serve page error:", e);
  const m = document.getElementById("main");
  if (m) m.prepend(el("div", {cls: "err", text: "page error: " + (e && e.message ? e.message : String(e))}));
}

/* replace a node's children, leaving out null / undefined / false (conditional parts) */
function put(node, ...kids) {
  node.replaceChildren(...kids.flat(Infinity).filter(k => k !== null && k !== undefined && k !== false));
}

function errorBox(msg) { return el("div", {cls: "err", text: msg}); }
function muted(text) { return el("p", {cls: "muted", text}); }
function ago(t) {
  if (!t) return "–";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}
function badge(state, detail) { return el("span", {cls: "badge " + (STATE_CLASS[state] || "muted"), text: state, title: detail || ""}); }
function section(id, title, ...kids) { return el("section", {id, cls: "panel"}, el("h2", {text: title}), ...kids); }
function select(options, value, onchange, attrs) {
  const s = el("select", Object.assign({onchange: () => onchange(s.value)}, attrs || {}));
  for (const o of options) {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    const opt = el("option", {value: v, text: label});
    if (v === value) opt.selected = true;
    s.appendChild(opt);
  }
  return s;
}
function check(label, value, onchange) {
  const c = el("input", {type: "checkbox", onchange: () => onchange(c.checked)});
  c.checked = !!value;
  return el("label", {cls: "check"}, c, " " + label);
}
function ruleSummary(r) {
  if (!r || !r.rules) return el("span", {cls: "muted", text: "no rules"});
  return el("span", {},
    el("span", {text: `${r.rules} rule${r.rules === 1 ? "" : "s"}: `}),
    el("span", {cls: r.fired ? "fired" : "muted", text: `${r.fired} fired`}), " · ",
    el("span", {cls: r.skipped ? "skipped" : "muted", text: `${r.skipped} skipped`}), " · ",
    el("span", {cls: "muted", text: `${r.quiet} quiet`}));
}

/* ---- live updates ---------------------------------------------------------------------------- */
const live = {versions: {}, version: -1, view: null};

function setLive(on, why) {
  const d = document.getElementById("live");
  if (!d) return;
  d.className = "live " + (on ? "on" : "off");
  d.title = on ? "live: the page updates as runs are written" : ("live updates paused: " + (why || "reconnecting…"));
}

function connect() {
  const es = new EventSource("/api/stream");
  es.onopen = () => setLive(true);
  es.onerror = () => setLive(false, "the server is not reachable; retrying");
  es.onmessage = evt => {
    let d;
    try { d = JSON.parse(evt.data); } catch (e) { return; }
    const old = live.versions;
    live.versions = d.runs || {};
    live.version = d.version;
    setLive(true);
    if (live.view && live.view.changed) live.view.changed(old, live.versions);
  };
}

/* ---- the runs list --------------------------------------------------------------------------- */
function RunsView() {
  const root = el("div", {cls: "view"});
  const selected = new Set();
  const head = el("div", {cls: "bar"});
  const body = el("div");
  root.append(el("h1", {text: "Runs"}), head, body);
  const compareBtn = el("button", {text: "Compare selected", disabled: true,
    onclick: () => { location.hash = "#/compare?runs=" + [...selected].join(","); }});

  async function load() {
    const d = await api("/api/runs");
    if (d.error) { put(body, errorBox(d.error)); return; }
    put(head, el("span", {cls: "muted", text: `serving ${d.path}`}), " ", compareBtn,
                         d.note ? el("span", {cls: "muted", text: " · " + d.note}) : null);
    if (!d.runs.length) {
      put(body, muted(`No tensortap run under ${d.path} yet: this list updates when one appears.`));
      return;
    }
    const rows = d.runs.map(r => {
      const box = el("input", {type: "checkbox", "aria-label": "select " + r.name, onchange: () => {
        if (box.checked) selected.add(r.id); else selected.delete(r.id);
        compareBtn.disabled = selected.size < 1;
        compareBtn.textContent = `Compare selected (${selected.size})`;
      }});
      box.checked = selected.has(r.id);
      if (r.error && !r.steps) {
        return el("tr", {cls: "run", "data-id": r.id}, el("td", {}, box),
          el("td", {}, el("a", {href: "#/run/" + r.id, text: r.name})), el("td", {}, badge(r.state, r.detail)),
          el("td", {colspan: 6}, el("span", {cls: "errtext", text: r.error})));
      }
      return el("tr", {cls: "run", "data-id": r.id},
        el("td", {}, box),
        el("td", {}, el("a", {href: "#/run/" + r.id, text: r.name}), el("div", {cls: "small muted", text: r.path})),
        el("td", {}, badge(r.state, r.detail), el("div", {cls: "small muted", text: r.detail || ""})),
        el("td", {cls: "num steps", text: r.steps ? `${r.steps} (${r.first_step}–${r.last_step})` : "0"}),
        el("td", {cls: "num", text: String((r.workers || []).length)}),
        el("td", {cls: "num", text: bytes(r.bytes || 0)}),
        el("td", {cls: "num", text: String(r.tensors || 0)}),
        el("td", {cls: "rules"}, ruleSummary(r.rules)),
        el("td", {cls: "small", text: ago(r.last_write)}));
    });
    compareBtn.disabled = selected.size < 1;
    put(body, el("table", {cls: "list"},
      el("thead", {}, el("tr", {}, ...["", "run", "state", "steps", "workers", "size", "tensors", "rules", "last write"]
        .map(h => el("th", {text: h})))), el("tbody", {}, rows)));
  }
  const refresh = coalesce(load);
  return {root, load: refresh, changed: () => refresh(), crumbs: []};
}

/* ---- one run --------------------------------------------------------------------------------- */
function RunView(id) {
  const st = {lo: null, hi: null, logy: false, dist: null, distLog: true, coll: null, filter: "", tensor: null,
              tstep: null, follow: true, gcLayer: null, gcStep: null, gcNorm: "shared", attStep: null, attEx: 0,
              markers: [], lastDist: 0, ov: null};
  const root = el("div", {cls: "view"});
  const header = el("div", {cls: "runhead"});
  const nav = el("nav", {cls: "toc"});
  const panels = el("div");
  root.append(header, nav, panels);
  const P = {};  // panel id -> {box, refresh}
  let built = false;
  let version = null;

  function facts(s) {
    const f = [["steps", s.steps ? `${s.steps} (${s.first_step}–${s.last_step})` : "0"],
               ["workers", (s.workers || []).join(", ") || "–"], ["size", bytes(s.bytes || 0)],
               ["tensors", String(s.tensors || 0)], ["framework", s.framework || "–"], ["last write", ago(s.last_write)]];
    return el("dl", {cls: "facts"}, f.map(([k, v]) => [el("dt", {text: k}), el("dd", {text: v})]));
  }

  function drawHeader(ov) {
    const s = ov.summary;
    put(header, el("h1", {}, el("span", {text: s.name}), " ", badge(s.state, s.detail)),
      el("div", {cls: "muted small", text: `${s.path} · ${s.detail || ""}`}), facts(s),
      el("div", {cls: "rulesum"}, ruleSummary(s.rules)),
      (ov.problems && ov.problems.length) ? errorBox(`the reader skipped damaged data: ${ov.problems[0]}` +
        (ov.problems.length > 1 ? ` (and ${ov.problems.length - 1} more, see Events)` : "")) : null);
  }

  // live: how a panel follows a growing run (scalars and rules at every change, the rest at most every 2 s)
  function addPanel(pid, title, make, every) {
    if (P[pid]) return;
    const box = el("div");
    const sec = section(pid, title, box);
    panels.appendChild(sec);
    nav.appendChild(el("a", {href: "#", text: title, onclick: evt => { evt.preventDefault(); sec.scrollIntoView(); }}));
    const refresh = coalesce(() => make(box));
    P[pid] = {box, refresh, live: every ? throttle(refresh, every) : refresh};
  }

  async function load() {
    const ov = await api("/api/run", {run: id});
    if (ov.error && !ov.summary) { put(header, errorBox(ov.error)); return; }
    if (ov.error || !ov.collections) {
      drawHeader({summary: ov.summary || {name: id}});
      put(panels, errorBox(ov.error || "this run cannot be read"));
      put(nav);
      for (const k of Object.keys(P)) delete P[k];
      built = false;
      return;
    }
    st.ov = ov;
    version = ov.summary.version;
    drawHeader(ov);
    if (!built) { put(panels); put(nav); built = true; }
    const first = !Object.keys(P).length;
    addPanel("scalars", "Scalars", scalarsPanel, 0);
    addPanel("rules", "Rules", rulesPanel, 0);
    if (ov.distributions.length) addPanel("dist", "Distributions", distPanel, 2000);
    addPanel("tensors", "Tensors", tensorsPanel, 2000);
    if (ov.gradcam.length) addPanel("gradcam", "Grad-CAM", gradcamPanel, 2000);
    if (ov.attention.length) addPanel("attention", "Attention", attentionPanel, 2000);
    addPanel("events", "Events", eventsPanel, 2000);
    if (!first) {  // following a run: each panel on its own, the header is not held up by them
      Object.values(P).forEach(p => p.live());
      return;
    }
    await Promise.all(Object.values(P).map(p => p.refresh()));
    // when the page first had every panel drawn, in ms since navigation (benchmarks/serve_page.py reads it)
    if (!document.documentElement.dataset.ttDrawn) document.documentElement.dataset.ttDrawn = String(Math.round(performance.now()));
  }

  /* scalars, rule firings marked, drag to zoom (fetches that range) */
  async function scalarsPanel(box) {
    const d = await api("/api/scalars", {run: id, lo: st.lo, hi: st.hi, points: 600});
    if (d.error) { put(box, errorBox(d.error)); return; }
    st.markers = d.markers || [];
    const names = Object.keys(d.series);
    if (!names.length) { put(box, muted("No scalars in this run (losses, metrics, hook.save_scalar values).")); return; }
    const zoom = (lo, hi) => { st.lo = lo; st.hi = hi; P.scalars.refresh(); if (P.rules) P.rules.refresh(); if (P.dist) P.dist.refresh(); };
    const vlines = st.markers.map(m => ({x: m.step, label: `${m.rule} fired at step ${m.step}: ${m.message}`}));
    const grid = el("div", {cls: "grid"});
    const shown = names.slice(0, 24);
    for (const n of shown) {
      const series = Object.entries(d.series[n]).map(([mode, s]) => ({label: mode, color: MODE_COLOUR[mode] || "#333",
        x: s.x, y: s.y}));
      const total = Object.values(d.series[n]).reduce((a, s) => a + s.points, 0);
      const drawn = Object.values(d.series[n]).reduce((a, s) => a + s.x.length, 0);
      const card = el("div", {cls: "card", "data-name": n},
        TTPlot.line({title: n, series, xlabel: "step", logy: st.logy, vlines, onzoom: zoom, xrange: [st.lo, st.hi],
                     width: 520, height: 230}),
        TTPlot.legend(series.map(s => ({label: s.label, color: s.color}))),
        el("div", {cls: "small muted", text: drawn < total ? `${drawn} of ${total} points drawn (min/max of each bucket kept)` :
                                                             `${total} points`}));
      grid.appendChild(card);
    }
    put(box, 
      el("div", {cls: "bar"},
        el("span", {cls: "muted", text: st.lo === null && st.hi === null ? "all steps · drag across a plot to zoom" :
                                        `steps ${st.lo ?? "start"}–${st.hi ?? "end"} · double-click a plot to show all`}),
        " ", check("log y", st.logy, v => { st.logy = v; P.scalars.refresh(); }),
        (st.lo !== null || st.hi !== null) ? el("button", {text: "show all steps", onclick: () => zoom(null, null)}) : null,
        st.markers.length ? el("span", {cls: "fired", text: ` · red lines: ${st.markers.length} rule firing${st.markers.length === 1 ? "" : "s"}`}) : null),
      grid, names.length > shown.length ? muted(`${names.length - shown.length} more scalars not drawn`) : null);
  }

  /* the rule timeline: fired / quiet / skipped per step (bucketed), messages on click */
  async function rulesPanel(box) {
    const d = await api("/api/rules", {run: id, lo: st.lo, hi: st.hi, buckets: 300, limit: 100});
    if (d.error) { put(box, errorBox(d.error)); return; }
    if (!d.rules.length) {
      put(box, muted("No rule results recorded in this run (add rules with hook.add_rule, or run " +
                                "`tensortap rules run RUN --rule NAME`)."));
      return;
    }
    const [lo, hi] = d.range;
    const W = 760, H = 18, span = Math.max(1, hi - lo + 1);
    const detail = el("div", {cls: "ruledetail"});
    const rows = d.rules.map(r => {
      const s = svg("svg", {width: W, height: H, class: "strip", "data-rule": r.name});
      s.appendChild(svg("rect", {x: 0, y: 0, width: W, height: H, class: "stripbg"}));
      for (const b of r.buckets) {
        const [b0, b1, q, f, k] = b;
        const x = (b0 - lo) / span * W, w = Math.max(2, (b1 + 1 - b0) / span * W);
        const cls = f ? "o-fired" : (k && !q ? "o-skipped" : (k ? "o-mixed" : "o-quiet"));
        const rect = svg("rect", {x, y: 1, width: w, height: H - 2, class: cls, "data-lo": b0, "data-hi": b1});
        rect.appendChild(svg("title", {}, `steps ${b0}${b1 !== b0 ? "–" + b1 : ""}: ${f} fired, ${q} quiet, ${k} skipped`));
        rect.addEventListener("click", async () => {
          const m = await api("/api/rule", {run: id, rule: enc(r.name), lo: b0, hi: b1, limit: 100});
          put(detail, m.error ? errorBox(m.error) : resultsTable(m.results,
            `${r.name}, steps ${b0}${b1 !== b0 ? "–" + b1 : ""}`));
        });
        s.appendChild(rect);
      }
      const c = r.counts;
      return el("div", {cls: "rulerow"}, el("div", {cls: "rulename", title: r.name}, el("b", {text: r.name}),
        el("div", {cls: "small"}, el("span", {cls: c.fired ? "fired" : "muted", text: `${c.fired} fired`}), " · ",
          el("span", {cls: c.skipped ? "skipped" : "muted", text: `${c.skipped} skipped`}), " · ",
          el("span", {cls: "muted", text: `${c.quiet} quiet`}))), s);
    });
    const axis = svg("svg", {width: W, height: 16, class: "axis"});
    for (const v of TTPlot.ticks(lo, hi, 8)) if (v >= lo && v <= hi)
      axis.appendChild(svg("text", {x: (v - lo + 0.5) / span * W, y: 12, "text-anchor": "middle", class: "tick"}, fmt(v)));
    const legend = el("div", {cls: "small"}, el("span", {cls: "sw o-fired"}), " fired ", el("span", {cls: "sw o-quiet"}),
      " quiet (checked, nothing found) ", el("span", {cls: "sw o-skipped"}), " skipped (nothing to check: no data it needs) ",
      el("span", {cls: "sw o-mixed"}), " quiet and skipped");
    put(box, legend, el("div", {cls: "timeline"}, rows, el("div", {cls: "rulerow"}, el("div", {cls: "rulename muted small", text: "step"}), axis)),
      detail, resultsTable(d.results, "fired and skipped first, then the latest"));
  }

  function resultsTable(results, caption) {
    if (!results.length) return muted("no results here");
    const table = rows => el("table", {cls: "list results"},
      el("thead", {}, el("tr", {}, ...["step", "rule", "outcome", "message"].map(h => el("th", {text: h})))),
      el("tbody", {}, rows.map(r => el("tr", {cls: "o-row-" + r.outcome},
        el("td", {cls: "num", text: String(r.step)}), el("td", {text: r.rule}),
        el("td", {cls: r.outcome, text: r.outcome + (r.checked !== null && r.checked !== undefined ? ` (${r.checked} checked)` : "")}),
        el("td", {text: r.message})))));
    const first = results.slice(0, 12), rest = results.slice(12);
    return el("div", {}, el("div", {cls: "small muted", text: caption}), table(first),
      rest.length ? el("details", {}, el("summary", {text: `${rest.length} more`}), table(rest)) : null);
  }

  /* distributions over steps: one tensor at a time, says how many there are */
  async function distPanel(box) {
    const names = st.ov.distributions;
    if (!st.dist || !names.includes(st.dist)) st.dist = names[0];
    st.lastDist = Date.now();
    const d = await api("/api/dist", {run: id, name: enc(st.dist), lo: st.lo, hi: st.hi, cols: 120, bins: 48});
    const pick = select(names, st.dist, v => { st.dist = v; P.dist.refresh(); }, {"aria-label": "tensor"});
    const note = el("span", {cls: "muted", text: ` one of ${names.length} tensor${names.length === 1 ? "" : "s"} with a distribution; choose another here`});
    const ctl = el("div", {cls: "bar"}, pick, note, " ", check("log colour", st.distLog, v => { st.distLog = v; P.dist.refresh(); }));
    if (d.error) { put(box, ctl, errorBox(d.error)); return; }
    if (!d.steps.length) { put(box, ctl, muted(d.note || "nothing to draw")); return; }
    const vlines = st.markers.map(m => ({x: m.step, label: `${m.rule} fired at step ${m.step}`}));
    put(box, ctl, TTPlot.heatmap({columns: d.counts, steps: d.steps, edges: d.edges, log: st.distLog, vlines,
                                             width: 760, height: 240}),
      el("div", {cls: "small muted", text: `${d.shown} of ${d.in_range} saved steps in range drawn (evenly spaced)`}));
  }

  /* tensor browser: by collection; a chosen step's summary and histogram */
  async function tensorsPanel(box) {
    const colls = st.ov.collections;
    const cnames = Object.keys(colls);
    if (!cnames.length) { put(box, muted("No tensors saved in this run yet.")); return; }
    if (!st.coll || !cnames.includes(st.coll)) st.coll = cnames[0];
    const all = colls[st.coll];
    const names = st.filter ? all.filter(n => n.toLowerCase().includes(st.filter.toLowerCase())) : all;
    if (!st.tensor || !all.includes(st.tensor)) st.tensor = names[0] || null;
    const list = el("select", {size: 12, cls: "names", "aria-label": "tensor names", onchange: () => { st.tensor = list.value; st.tstep = null; P.tensors.refresh(); }});
    for (const n of names.slice(0, 1000)) {
      const o = el("option", {value: n, text: n});
      if (n === st.tensor) o.selected = true;
      list.appendChild(o);
    }
    const filter = el("input", {type: "search", placeholder: "filter names", value: st.filter, "aria-label": "filter names"});
    filter.addEventListener("change", () => { st.filter = filter.value; P.tensors.refresh(); });
    const left = el("div", {cls: "tlist"},
      select(cnames.map(c => [c, `${c} (${st.ov.collection_sizes[c]})`]), st.coll, v => { st.coll = v; st.tensor = null; P.tensors.refresh(); },
             {"aria-label": "collection"}),
      filter, list, names.length > 1000 ? muted(`first 1000 of ${names.length} shown: filter to find others`) : null);
    const right = el("div", {cls: "tdetail"});
    put(box, el("div", {cls: "split"}, left, right));
    if (!st.tensor) { put(right, muted("no tensor matches")); return; }
    const t = await api("/api/tensor", {run: id, name: enc(st.tensor)});
    if (t.error) { put(right, errorBox(t.error)); return; }
    if (!t.steps.length) { put(right, muted("not saved at any step yet")); return; }
    if (st.tstep === null || !t.steps.includes(st.tstep) || st.follow) st.tstep = t.steps[t.steps.length - 1];
    const idx = t.steps.indexOf(st.tstep);
    const slider = el("input", {type: "range", min: 0, max: t.steps.length - 1, value: idx, "aria-label": "step"});
    slider.addEventListener("change", () => { st.tstep = t.steps[+slider.value]; st.follow = +slider.value === t.steps.length - 1; P.tensors.refresh(); });
    const s = await api("/api/tensor_step", {run: id, name: enc(st.tensor), step: st.tstep});
    const rows = [];
    const v = s.value || {};
    for (const k of ["shape", "dtype", "size", "min", "max", "mean", "std", "l2", "nan", "inf", "zeros"])
      if (v[k] !== undefined) rows.push([k, Array.isArray(v[k]) ? `(${v[k].join(", ")})` : (typeof v[k] === "number" ? fmt(v[k], 6) : String(v[k]))]);
    for (const [k, r] of Object.entries(s.reductions || {})) if (k !== "histogram")
      rows.push([`reduction ${k}`, Array.isArray(r) ? r.map(x => fmt(x)).join(", ") : fmt(r, 6)]);
    const hist = v.histogram || s.histogram || (s.reductions || {}).histogram;
    put(right, 
      el("h3", {text: st.tensor}), el("div", {cls: "small muted", text: `collections: ${t.collections.join(", ")} · saved at ${t.steps.length} steps`}),
      el("div", {cls: "bar"}, el("span", {text: `step ${st.tstep}` + (s.mode ? ` (${s.mode})` : "")}), slider,
         check("follow the latest step", st.follow, f => { st.follow = f; P.tensors.refresh(); })),
      s.error ? errorBox(s.error) : null, s.value_note ? muted(s.value_note) : null,
      el("table", {cls: "kv"}, rows.map(([k, val]) => el("tr", {}, el("th", {text: k}), el("td", {text: val})))),
      hist ? TTPlot.bars(hist.counts, hist.edges, {xlabel: "value"}) : null,
      v.preview ? el("details", {}, el("summary", {text: `first ${v.preview.length} values`}),
                     el("div", {cls: "mono small", text: v.preview.map(x => typeof x === "number" || x === null ? fmt(x, 6) : x).join("  ")})) : null);
  }

  /* Grad-CAM over steps: shared scale or per image, captions with true and predicted label */
  async function gradcamPanel(box) {
    const d = await api("/api/gradcam", {run: id, layer: st.gcLayer ? enc(st.gcLayer) : null, step: st.gcStep, max_images: 8});
    if (d.error) { put(box, errorBox(d.error)); return; }
    st.gcLayer = d.layer;
    const atEnd = d.step === d.steps[d.steps.length - 1];  // showing the newest: keep following it
    const idx = d.steps.indexOf(d.step);
    const slider = el("input", {type: "range", min: 0, max: d.steps.length - 1, value: idx, "aria-label": "Grad-CAM step"});
    slider.addEventListener("input", () => { st.gcStep = d.steps[+slider.value]; P.gradcam.refresh(); });
    const norm = select([["shared", "one scale for all steps and images"], ["image", "each image scaled to its own maximum"]],
                        st.gcNorm, v => { st.gcNorm = v; P.gradcam.refresh(); }, {"aria-label": "normalisation"});
    const names = d.class_names;
    const label = c => c === null || c === undefined ? null : (names && names[c] !== undefined ? names[c] : `class ${c}`);
    const cards = d.images.map(im => {
      const cv = camCanvas(im, st.gcNorm === "shared" ? d.shared_max : null, 160);
      const t = label(im.true), p = label(im.pred);
      const wrong = im.true !== null && im.pred !== null && im.true !== im.pred;
      return el("figure", {cls: "camcard"}, cv, el("figcaption", {},
        t !== null ? el("div", {text: `true: ${t}`}) : null,
        p !== null ? el("div", {cls: wrong ? "fired" : "", text: `pred: ${p}` + (im.score !== null ? ` ${(100 * im.score).toFixed(0)}%` : "")}) : null));
    });
    put(box, 
      el("div", {cls: "bar"}, select(d.layers, d.layer, v => { st.gcLayer = v; P.gradcam.refresh(); }, {"aria-label": "layer"}),
         el("span", {text: ` step ${d.step} `}), slider, " ", norm),
      el("div", {cls: "cams"}, cards, TTPlot.colorbar(TTPlot.jet, 0, st.gcNorm === "shared" ? d.shared_max : 1,
                                                     st.gcNorm === "shared" ? "Grad-CAM (shared scale)" : "per image (0–max)", 180)),
      muted(`${d.steps.length} steps with maps; the predicted label is the class each map explains`));
    if (atEnd) st.gcStep = null;  // follow the newest step while it is shown
  }

  /* attention: layers x heads for a step and example, token labels on hover */
  async function attentionPanel(box) {
    const d = await api("/api/attention", {run: id, step: st.attStep, example: st.attEx, max_tokens: 24});
    if (d.error) { put(box, errorBox(d.error)); return; }
    const atEnd = st.attStep === null;
    const slider = el("input", {type: "range", min: 0, max: d.steps.length - 1, value: d.steps.indexOf(d.step), "aria-label": "attention step"});
    slider.addEventListener("input", () => { st.attStep = d.steps[+slider.value]; P.attention.refresh(); });
    const ex = select(Array.from({length: Math.max(1, d.batch)}, (_, i) => [String(i), `example ${i}`]), String(d.example),
                      v => { st.attEx = +v; P.attention.refresh(); }, {"aria-label": "example"});
    const grid = el("table", {cls: "attgrid"});
    const heads = Math.max(0, ...d.maps.map(m => (m ? m.length : 0)));
    grid.appendChild(el("tr", {}, el("th"), Array.from({length: heads}, (_, h) => el("th", {text: `head ${h}`}))));
    d.maps.forEach((m, li) => {
      const tr = el("tr", {}, el("th", {cls: "layer", text: d.layers[li]}));
      for (let h = 0; h < heads; h++) tr.appendChild(el("td", {}, m && m[h] ? attCanvas(m[h], d.tokens, `${d.layers[li]} head ${h}`) : ""));
      grid.appendChild(tr);
    });
    put(box, el("div", {cls: "bar"}, el("span", {text: `step ${d.step} `}), slider, " ", ex),
      el("div", {cls: "cams"}, el("div", {cls: "scroll"}, grid), TTPlot.colorbar(TTPlot.viridis, 0, 1, "attention weight", 180)),
      el("div", {cls: "small"}, el("b", {text: "tokens: "}), el("span", {cls: "mono", text: d.tokens.join(" · ")})),
      muted("rows: query tokens, columns: key tokens; hover a map for the tokens and the weight"));
    if (atEnd) st.attStep = null;
  }

  async function eventsPanel(box) {
    const d = await api("/api/events", {run: id});
    if (d.error) { put(box, errorBox(d.error)); return; }
    const parts = [];
    if (d.rules_skipped.length) parts.push(el("h3", {text: "Rules that skipped steps"}), el("table", {cls: "list"},
      el("thead", {}, el("tr", {}, ...["rule", "skipped", "last at step", "why"].map(h => el("th", {text: h})))),
      el("tbody", {}, d.rules_skipped.map(r => el("tr", {}, el("td", {text: r.rule}), el("td", {cls: "num", text: `${r.skipped} of ${r.of}`}),
        el("td", {cls: "num", text: String(r.step)}), el("td", {text: r.message}))))));
    if (d.events.length) parts.push(el("h3", {text: `Events (${d.total})`}), el("table", {cls: "list"},
      el("thead", {}, el("tr", {}, ...["event", "step", "detail", "worker", "time"].map(h => el("th", {text: h})))),
      el("tbody", {}, d.events.slice().reverse().map(e => el("tr", {}, el("td", {text: String(e.event ?? "")}),
        el("td", {cls: "num", text: e.step === undefined ? "" : String(e.step)}),
        el("td", {text: [e.what, e.detail, e.why, e.error, e.count !== undefined ? `count ${e.count}` : null].filter(x => x !== undefined && x !== null && x !== "").join(" · ")}),
        el("td", {text: String(e.worker ?? "")}), el("td", {text: typeof e.time === "number" ? new Date(e.time * 1000).toLocaleString() : ""}))))));
    if (d.problems.length) parts.push(el("h3", {text: "Damage the reader skipped"}), el("ul", {}, d.problems.map(p => el("li", {text: p}))));
    put(box, ...(parts.length ? parts : [muted("No events: no dropped steps, write errors, stop requests or skipped rule checks.")]));
  }

  const refresh = coalesce(load);
  return {root, load: refresh, crumbs: [["run", null]],
          changed: (old, now) => { if (now[id] !== version) { version = now[id]; refresh(); } }};
}

/* Grad-CAM overlay: the map upsampled bilinearly to the image, jet colours blended at 0.5 */
function camCanvas(im, sharedMax, size) {
  const w = im.width, h = im.height, rgb = Uint8Array.from(atob(im.rgb), c => c.charCodeAt(0));
  const c = im.cam, vals = c.values.map(v => v || 0);
  let lo = 0, hi = sharedMax;
  if (hi === null || hi === undefined) { lo = Math.min(...vals); hi = Math.max(...vals); }
  const rng = hi > lo ? hi - lo : 1;
  const src = document.createElement("canvas"); src.width = w; src.height = h;
  const ctx = src.getContext("2d"), img = ctx.createImageData(w, h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const fy = Math.min(c.h - 1, Math.max(0, (y + 0.5) * c.h / h - 0.5)), fx = Math.min(c.w - 1, Math.max(0, (x + 0.5) * c.w / w - 0.5));
    const y0 = Math.floor(fy), x0 = Math.floor(fx), y1 = Math.min(c.h - 1, y0 + 1), x1 = Math.min(c.w - 1, x0 + 1);
    const ay = fy - y0, ax = fx - x0;
    const v = (vals[y0 * c.w + x0] * (1 - ax) + vals[y0 * c.w + x1] * ax) * (1 - ay) + (vals[y1 * c.w + x0] * (1 - ax) + vals[y1 * c.w + x1] * ax) * ay;
    const [r, g, b] = TTPlot.jet((v - lo) / rng);
    const i = (y * w + x), o = i * 4;
    img.data[o] = Math.round(0.5 * rgb[i * 3] + 0.5 * r);
    img.data[o + 1] = Math.round(0.5 * rgb[i * 3 + 1] + 0.5 * g);
    img.data[o + 2] = Math.round(0.5 * rgb[i * 3 + 2] + 0.5 * b);
    img.data[o + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  const scale = Math.max(1, Math.floor(size / Math.max(w, h)));
  const out = el("canvas", {width: w * scale, height: h * scale, cls: "cam"});
  const octx = out.getContext("2d");
  octx.imageSmoothingEnabled = false;
  octx.drawImage(src, 0, 0, w * scale, h * scale);
  return out;
}

function attCanvas(m, tokens, title) {
  const q = m.length, k = m[0] ? m[0].length : 0, cell = Math.max(3, Math.floor(96 / Math.max(q, k, 1)));
  const cv = el("canvas", {width: k * cell, height: q * cell, cls: "att"});
  const ctx = cv.getContext("2d");
  for (let i = 0; i < q; i++) for (let j = 0; j < k; j++) {
    const [r, g, b] = TTPlot.viridis(m[i][j] || 0);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(j * cell, i * cell, cell, cell);
  }
  cv.addEventListener("mousemove", evt => {
    const r = cv.getBoundingClientRect(), i = Math.floor((evt.clientY - r.top) / cell), j = Math.floor((evt.clientX - r.left) / cell);
    if (i < 0 || j < 0 || i >= q || j >= k) { TTPlot.tip(evt, null); return; }
    TTPlot.tip(evt, [title, `query ${i} ${tokens[i] ?? ""} → key ${j} ${tokens[j] ?? ""}`, `weight ${fmt(m[i][j], 3)}`]);
  });
  cv.addEventListener("mouseleave", evt => TTPlot.tip(evt, null));
  return cv;
}

/* ---- comparing runs -------------------------------------------------------------------------- */
function CompareView(ids) {
  const st = {ids: ids.slice(), names: null, x: null, y: null, logx: false, logy: false};
  const root = el("div", {cls: "view"});
  const pickRuns = el("div", {cls: "bar"});
  const pickNames = el("div", {cls: "bar names"});
  const overlays = el("div", {cls: "grid"});
  const xy = el("div");
  root.append(el("h1", {text: "Compare runs"}), pickRuns, el("h2", {text: "Scalars by step"}), pickNames, overlays,
              el("h2", {text: "One scalar against another"}), xy);
  let versions = {};

  async function load() {
    const runs = await api("/api/runs");
    if (runs.error) { put(pickRuns, errorBox(runs.error)); return; }
    const byId = Object.fromEntries(runs.runs.map(r => [r.id, r]));
    st.ids = st.ids.filter(i => byId[i]);
    put(pickRuns, el("span", {cls: "muted", text: "runs: "}), runs.runs.map((r, i) => check(r.name, st.ids.includes(r.id), on => {
      st.ids = on ? [...st.ids, r.id] : st.ids.filter(x => x !== r.id);
      location.hash = "#/compare?runs=" + st.ids.join(",");
    })));
    if (!st.ids.length) { put(overlays, muted("Choose runs above.")); put(xy); put(pickNames); return; }
    const colourOf = Object.fromEntries(st.ids.map((rid, i) => [rid, colour(i)]));
    const d = await api("/api/compare", {runs: enc(st.ids), names: st.names ? enc(st.names) : null, points: 500});
    if (d.error) { put(overlays, errorBox(d.error)); return; }
    if (st.names === null) st.names = d.names.slice(0, 6);
    put(pickNames, el("span", {cls: "muted", text: "scalars: "}), d.names.map(n => check(n, st.names.includes(n), on => {
      st.names = on ? [...st.names, n] : st.names.filter(x => x !== n);
      refresh();
    })), check("log y", st.logy, v => { st.logy = v; refresh(); }));
    const plots = [];
    for (const n of st.names) {
      const per = d.series[n] || {};
      const series = [];
      for (const rid of st.ids) for (const [mode, s] of Object.entries(per[rid] || {}))
        series.push({label: `${(byId[rid] || {}).name} · ${mode}`, color: colourOf[rid], dash: TTPlot.MODE_DASH[mode], x: s.x, y: s.y});
      plots.push(el("div", {cls: "card", "data-name": n}, TTPlot.line({title: n, series, xlabel: "step", logy: st.logy, width: 520, height: 230}),
                    TTPlot.legend(series.map(s => ({label: s.label, color: s.color, dash: s.dash})))));
    }
    put(overlays, ...(plots.length ? plots : [muted("Choose scalars above.")]),
      ...Object.entries(d.errors || {}).map(([rid, e]) => errorBox(`${(byId[rid] || {}).name || rid}: ${e}`)));
    // any scalar against any other, across runs (pruning: accuracy against parameters)
    const names = d.names;
    if (names.length < 2) { put(xy, muted("These runs have fewer than two scalars.")); return; }
    if (!st.x || !names.includes(st.x)) st.x = names.find(n => /params|parameters/.test(n)) || names[0];
    if (!st.y || !names.includes(st.y)) st.y = names.find(n => /accuracy|acc\b/.test(n) && n !== st.x) || names.find(n => n !== st.x);
    const p = await api("/api/xy", {runs: enc(st.ids), x: enc(st.x), y: enc(st.y)});
    const ctl = el("div", {cls: "bar"}, el("span", {text: "x "}), select(names, st.x, v => { st.x = v; refresh(); }, {"aria-label": "x scalar"}),
      el("span", {text: " y "}), select(names, st.y, v => { st.y = v; refresh(); }, {"aria-label": "y scalar"}),
      " ", check("log x", st.logx, v => { st.logx = v; refresh(); }));
    if (p.error) { put(xy, ctl, errorBox(p.error)); return; }
    const series = p.runs.map(r => ({label: r.name, color: colourOf[r.id], x: r.x, y: r.y, points: true,
                                     labels: r.steps.map(s => `step ${s}`)}));
    const hlines = p.thresholds.map(t => ({y: t.value, label: `${t.rule} threshold ${fmt(t.value)}`, color: "#d62728"}));
    put(xy, ctl, el("div", {cls: "card wide", "data-name": "xy"},
      TTPlot.line({title: `${st.y} against ${st.x}`, series, xlabel: st.x, ylabel: st.y, logx: st.logx, hlines, width: 760, height: 320,
                   empty: "no step where both were saved"}),
      TTPlot.legend(series.map(s => ({label: s.label, color: s.color})))),
      ...Object.entries(p.errors || {}).map(([rid, e]) => errorBox(`${(byId[rid] || {}).name || rid}: ${e}`)));
  }
  const refresh = coalesce(load);
  return {root, load: refresh, crumbs: [["compare", null]],
          changed: (old, now) => {
            const mine = st.ids.map(i => now[i]).join(",");
            if (mine !== versions.mine) { versions.mine = mine; refresh(); }
          }};
}

/* ---- routing --------------------------------------------------------------------------------- */
function parseRoute() {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, query] = h.split("?");
  const parts = path.split("/").filter(Boolean);
  const q = new URLSearchParams(query || "");
  if (parts[0] === "run" && /^[0-9a-f]{1,40}$/.test(parts[1] || "")) return {view: "run", id: parts[1]};
  if (parts[0] === "compare") return {view: "compare", ids: (q.get("runs") || "").split(",").filter(x => /^[0-9a-f]{1,40}$/.test(x))};
  return {view: "runs"};
}

function show() {
  const r = parseRoute();
  const v = r.view === "run" ? RunView(r.id) : r.view === "compare" ? CompareView(r.ids) : RunsView();
  live.view = v;
  const crumbs = document.getElementById("crumbs");
  put(crumbs, el("a", {href: "#/", text: "runs"}), r.view === "compare" ? el("span", {text: " / compare"}) : null,
                         r.view === "run" ? el("span", {text: " / run"}) : null,
                         r.view !== "compare" ? el("a", {href: "#/compare", cls: "right", text: "compare runs"}) : null);
  put(document.getElementById("main"), v.root);
  window.scrollTo(0, 0);
  v.load();
}

window.addEventListener("hashchange", show);
window.addEventListener("DOMContentLoaded", () => { connect(); show(); });
