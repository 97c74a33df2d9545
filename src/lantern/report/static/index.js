// The latent table of the report index: filter, sort and paginate the rows of data/latents.js in the browser.
// Only one page of rows is ever in the DOM, so 10,000+ latents stay responsive. The state lives in the URL
// hash, so coming back from a latent page restores it.
(function () {
  "use strict";
  var D = window.LANTERN_INDEX;
  var C = { coder: 0, latent: 1, explanation: 2, firing_rate: 3, max: 4, href: 5, scores: 6 };
  var $ = function (id) { return document.getElementById(id); };
  var status = $("status");
  if (!D) { status.textContent = "data/latents.js did not load: rebuild the report with `lantern report`."; return; }

  var rows = D.rows;
  var lower = rows.map(function (r) { return (r[C.explanation] || "").toLowerCase(); });
  var order = rows.map(function (_, i) { return i; });
  var state = { coder: "", scorer: "", smin: "", smax: "", rmin: "", rmax: "", q: "", sort: "", dir: -1, page: 0, size: 50 };
  var shown = order;

  function score(r, s) { var v = r[C.scores][s]; return v === null || v === undefined ? null : v[0]; }
  function num(text) { if (text === "" || text === null) return null; var v = Number(text); return isFinite(v) ? v : null; }

  function keyOf(name) {
    if (name.indexOf("score:") === 0) { var s = Number(name.slice(6)); return function (r) { return score(r, s); }; }
    if (name === "coder") return function (r) { return D.coders[r[C.coder]]; };
    var c = C[name];
    return function (r) { return r[c]; };
  }

  function filter() {
    var coder = state.coder === "" ? null : Number(state.coder);
    var scorer = state.scorer === "" ? null : Number(state.scorer);
    var smin = num(state.smin), smax = num(state.smax), rmin = num(state.rmin), rmax = num(state.rmax);
    var words = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    var nScorers = D.scorers.length;
    function inRange(v) { return v !== null && (smin === null || v >= smin) && (smax === null || v <= smax); }
    var out = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (coder !== null && r[C.coder] !== coder) continue;
      if (scorer !== null) {
        if (!inRange(score(r, scorer))) continue;
      } else if (smin !== null || smax !== null) {
        var any = false;
        for (var s = 0; s < nScorers && !any; s++) any = inRange(score(r, s));
        if (!any) continue;
      }
      var rate = r[C.firing_rate];
      if (rmin !== null && !(rate !== null && rate >= rmin)) continue;
      if (rmax !== null && !(rate !== null && rate <= rmax)) continue;
      var ok = true;
      for (var w = 0; w < words.length && ok; w++) ok = lower[i].indexOf(words[w]) !== -1;
      if (!ok) continue;
      out.push(i);
    }
    if (state.sort) {
      var key = keyOf(state.sort), dir = state.dir;
      var keys = new Array(rows.length);
      for (var k = 0; k < out.length; k++) keys[out[k]] = key(rows[out[k]]);
      out.sort(function (a, b) {
        var x = keys[a], y = keys[b];
        var xm = x === null || x === undefined || x !== x, ym = y === null || y === undefined || y !== y;
        if (xm || ym) return xm && ym ? a - b : (xm ? 1 : -1); // missing values last, either direction
        if (x < y) return -dir;
        if (x > y) return dir;
        return a - b;
      });
    }
    shown = out;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined) return "–";
    if (Math.abs(v) >= 1e4) return v.toPrecision(4);
    return v.toFixed(digits);
  }

  function cell(tr, text, cls, title) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (title) td.title = title;
    tr.appendChild(td);
    return td;
  }

  function render() {
    var body = document.querySelector("#latent-table tbody");
    var pages = Math.max(1, Math.ceil(shown.length / state.size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    var lo = state.page * state.size, hi = Math.min(shown.length, lo + state.size);
    var frag = document.createDocumentFragment();
    for (var i = lo; i < hi; i++) {
      var r = rows[shown[i]];
      var tr = document.createElement("tr");
      tr.dataset.index = shown[i];
      cell(tr, D.coders[r[C.coder]]);
      var td = cell(tr, "", "num");
      if (r[C.href]) {
        var a = document.createElement("a");
        a.href = r[C.href];
        a.textContent = r[C.latent];
        td.appendChild(a);
      } else {
        td.textContent = r[C.latent];
        td.title = "no records for this latent (too few activating windows)";
      }
      var e = r[C.explanation];
      cell(tr, e === null ? "(not explained)" : e, e === null ? "expl none" : "expl");
      cell(tr, fmt(r[C.firing_rate], 5), "num");
      cell(tr, fmt(r[C.max], 2), "num");
      for (var s = 0; s < D.scorers.length; s++) {
        var v = r[C.scores][s];
        var title = v && v[1] !== null && v[2] !== null ? "95% interval [" + fmt(v[1], 3) + ", " + fmt(v[2], 3) + "]" : "";
        cell(tr, v ? fmt(v[0], 3) : "–", "num score", title);
      }
      frag.appendChild(tr);
    }
    body.replaceChildren(frag);
    status.textContent = shown.length.toLocaleString() + " of " + rows.length.toLocaleString() + " latents";
    $("p-info").textContent = shown.length ? "rows " + (lo + 1) + "–" + hi + " · page " + (state.page + 1) + " of " + pages : "no rows";
    $("p-prev").disabled = state.page === 0;
    $("p-next").disabled = state.page >= pages - 1;
    var ths = document.querySelectorAll("#latent-table th[data-sort]");
    for (var t = 0; t < ths.length; t++) {
      ths[t].classList.remove("asc", "desc");
      if (ths[t].dataset.sort === state.sort) ths[t].classList.add(state.dir > 0 ? "asc" : "desc");
    }
    var params = [];
    for (var name in state) if (state[name] !== "" && String(state[name]) !== String(DEFAULTS[name])) params.push(name + "=" + encodeURIComponent(state[name]));
    history.replaceState(null, "", params.length ? "#" + params.join("&") : location.pathname + location.search);
  }

  var DEFAULTS = {};
  for (var d in state) DEFAULTS[d] = state[d];
  var inputs = { coder: "f-coder", scorer: "f-scorer", smin: "f-score-min", smax: "f-score-max", rmin: "f-rate-min",
                 rmax: "f-rate-max", q: "f-search", size: "p-size" };

  function readHash() {
    location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
      var at = pair.indexOf("=");
      if (at < 0) return;
      var name = pair.slice(0, at), value = decodeURIComponent(pair.slice(at + 1));
      if (!(name in state)) return;
      state[name] = typeof DEFAULTS[name] === "number" ? Number(value) || DEFAULTS[name] : value;
    });
    for (var name in inputs) $(inputs[name]).value = state[name];
  }

  function update(resetPage) { if (resetPage) state.page = 0; filter(); render(); }

  Object.keys(inputs).forEach(function (name) {
    var el = $(inputs[name]);
    el.addEventListener(el.tagName === "SELECT" ? "change" : "input", function () {
      state[name] = name === "size" ? Number(el.value) : el.value;
      update(true);
    });
  });
  document.querySelectorAll("#latent-table th[data-sort]").forEach(function (th) {
    th.addEventListener("click", function () {
      var name = th.dataset.sort;
      if (state.sort === name) state.dir = -state.dir;
      else { state.sort = name; state.dir = name === "coder" || name === "latent" || name === "explanation" ? 1 : -1; }
      update(true);
    });
  });
  $("p-prev").addEventListener("click", function () { state.page -= 1; render(); });
  $("p-next").addEventListener("click", function () { state.page += 1; render(); });
  $("f-reset").addEventListener("click", function () {
    for (var name in DEFAULTS) state[name] = DEFAULTS[name];
    for (var i in inputs) $(inputs[i]).value = state[i];
    update(true);
  });

  readHash();
  update(false);
})();
