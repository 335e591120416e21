// tensortap attention head view: tokens left (query) and right (key), a line per pair weighted by
// attention. Self-contained, no library, no network. Token text is set with textContent (never HTML).
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("tt-data").textContent);
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
  var SVGNS = "http://www.w3.org/2000/svg";
  var state = {step: D.steps.length - 1, layer: 0, example: 0, heads: {}, hover: null, playing: null};
  var cache = {};
  for (var h = 0; h < D.heads; h++) state.heads[h] = true;

  function el(tag, attrs, parent) {
    var e = document.createElement(tag);
    for (var k in attrs) { if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]); }
    if (parent) parent.appendChild(e);
    return e;
  }
  function sel(label, options, onchange, parent) {
    var wrap = el("label", {"class": "tt-ctl"}, parent);
    el("span", {text: label + " "}, wrap);
    var s = el("select", {}, wrap);
    options.forEach(function (o, i) { el("option", {value: String(i), text: o}, s); });
    s.addEventListener("change", function () { onchange(parseInt(s.value, 10)); });
    return s;
  }
  function block(si, li) {  // Uint8Array of (E, H, Q, K) for step index si, layer index li
    var key = si + ":" + li;
    if (!cache[key]) {
      var rec = D.data[si][li];
      var bin = atob(rec.b64), a = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i);
      cache[key] = {a: a, shape: rec.shape};
    }
    return cache[key];
  }
  var root = document.getElementById("tt-headview");
  var ctl = el("div", {"class": "tt-controls"}, root);
  var layerSel = sel("Layer", D.layers, function (v) { state.layer = v; draw(); }, ctl);
  layerSel.value = "0";
  if (D.examples.length > 1) sel("Example", D.examples.map(function (e) { return "#" + e; }),
                                 function (v) { state.example = v; draw(); }, ctl);
  var headBox = el("div", {"class": "tt-heads"}, root);
  el("span", {text: "Heads: "}, headBox);
  var boxes = [];
  for (var hh = 0; hh < D.heads; hh++) (function (h) {
    var lab = el("label", {"class": "tt-head", style: "background:" + COLORS[h % COLORS.length]}, headBox);
    var cb = el("input", {type: "checkbox"}, lab); cb.checked = true;
    el("span", {text: String(h)}, lab);
    cb.addEventListener("change", function () { state.heads[h] = cb.checked; draw(); });
    lab.addEventListener("dblclick", function () {  // double-click: this head only
      for (var k = 0; k < D.heads; k++) { state.heads[k] = (k === h); boxes[k].checked = (k === h); }
      draw();
    });
    boxes.push(cb);
  })(hh);
  var allBtn = el("button", {type: "button", text: "all"}, headBox);
  allBtn.addEventListener("click", function () { for (var k = 0; k < D.heads; k++) { state.heads[k] = true; boxes[k].checked = true; } draw(); });
  var stepBox = el("div", {"class": "tt-steps"}, root);
  var play = el("button", {type: "button", text: "\u25B6"}, stepBox);
  var slider = el("input", {type: "range", min: "0", max: String(D.steps.length - 1), value: String(state.step)}, stepBox);
  var stepLab = el("span", {"class": "tt-steplabel"}, stepBox);
  if (D.steps.length < 2) { slider.disabled = true; play.disabled = true; }
  slider.addEventListener("input", function () { state.step = parseInt(slider.value, 10); draw(); });
  play.addEventListener("click", function () {
    if (state.playing) { clearInterval(state.playing); state.playing = null; play.textContent = "\u25B6"; return; }
    play.textContent = "\u23F8";
    state.playing = setInterval(function () {
      state.step = (state.step + 1) % D.steps.length; slider.value = String(state.step); draw();
    }, D.interval_ms);
  });
  var svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("class", "tt-svg");
  root.appendChild(svg);

  function svgEl(tag, attrs, parent) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) { if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]); }
    parent.appendChild(e);
    return e;
  }
  function draw() {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var b = block(state.step, state.layer), s = b.shape, E = s[0], H = s[1], Q = s[2], K = s[3];
    var ex = Math.min(state.example, E - 1);
    var toks = D.tokens[state.step][ex] || [];
    stepLab.textContent = "step " + D.steps[state.step] + " (" + (state.step + 1) + "/" + D.steps.length + ")";
    var rowH = 18, top = 10, leftX = 150, rightX = 450, n = Math.max(Q, K);
    svg.setAttribute("width", "600"); svg.setAttribute("height", String(top * 2 + n * rowH));
    var lines = svgEl("g", {"class": "tt-lines"}, svg);
    for (var h = 0; h < H; h++) {
      if (!state.heads[h]) continue;
      var base = ((ex * H) + h) * Q * K;
      for (var q = 0; q < Q; q++) {
        if (state.hover && state.hover.side === "L" && state.hover.i !== q) continue;
        for (var k = 0; k < K; k++) {
          if (state.hover && state.hover.side === "R" && state.hover.i !== k) continue;
          var w = b.a[base + q * K + k] / 255;
          if (w < D.min_weight) continue;
          svgEl("line", {x1: leftX + 6, y1: top + q * rowH + rowH / 2, x2: rightX - 6, y2: top + k * rowH + rowH / 2,
                         stroke: COLORS[h % COLORS.length], "stroke-width": 2, "stroke-opacity": w.toFixed(3)}, lines);
        }
      }
    }
    function tokenText(i, side) {
      var t = i < toks.length ? toks[i] : String(i);
      var x = side === "L" ? leftX : rightX;
      var txt = svgEl("text", {x: x, y: top + i * rowH + rowH * 0.7, "text-anchor": side === "L" ? "end" : "start",
                               "class": "tt-token"}, svg);
      txt.textContent = t;
      txt.addEventListener("mouseenter", function () { state.hover = {side: side, i: i}; draw(); });
      txt.addEventListener("mouseleave", function () { state.hover = null; draw(); });
    }
    for (var i = 0; i < Q; i++) tokenText(i, "L");
    for (var j = 0; j < K; j++) tokenText(j, "R");
  }
  draw();
})();
