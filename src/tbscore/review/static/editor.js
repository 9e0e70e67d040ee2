// tbscore review: a small hand-written canvas ROI editor (no build chain).
// Image pixel (row r, col c) has its centre at canvas ((c + 0.5) * zoom, (r + 0.5) * zoom);
// box edges [row0, col0, row1, col1] (half-open) are at canvas (col0 * zoom, row0 * zoom)..
(function () {
  "use strict";
  var root = document.getElementById("study");
  if (!root) return;
  var key = root.dataset.key;
  var api = root.dataset.api;
  var signed = root.dataset.signed === "true";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var canvas = document.getElementById("editor");
  var ctx = canvas.getContext("2d");
  var img = new Image();
  var gray = null; // Uint8ClampedArray of the 8-bit image
  var shape = [0, 0];
  var zoom = 3, win = 255, lev = 128;
  var view = null, rois = [];
  var drag = null; // {label, kind, index, start:[x,y], orig}
  var busy = false;
  var HANDLE = 7;

  function fmt(v, d) { return (v === null || v === undefined) ? "–" : Number(v).toFixed(d === undefined ? 3 : d); }

  function toCanvasBox(b) { return [b[1] * zoom, b[0] * zoom, b[3] * zoom, b[2] * zoom]; } // x0,y0,x1,y1
  function ptToCanvas(p) { return [(p[1] + 0.5) * zoom, (p[0] + 0.5) * zoom]; }

  function render() {
    if (!gray) return;
    var w = shape[1], h = shape[0];
    var small = document.createElement("canvas");
    small.width = w; small.height = h;
    var sctx = small.getContext("2d");
    var out = sctx.createImageData(w, h);
    var lo = lev - win / 2, scale = 255 / Math.max(win, 1);
    for (var i = 0; i < w * h; i++) {
      var v = (gray[i] - lo) * scale;
      v = v < 0 ? 0 : (v > 255 ? 255 : v);
      out.data[4 * i] = out.data[4 * i + 1] = out.data[4 * i + 2] = v;
      out.data[4 * i + 3] = 255;
    }
    sctx.putImageData(out, 0, 0);
    canvas.width = w * zoom; canvas.height = h * zoom;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(small, 0, 0, w * zoom, h * zoom);
    rois.forEach(drawRoi);
    if (view && view.orientation) {
      ctx.font = "bold 16px sans-serif";
      ctx.textBaseline = "middle";
      ctx.fillStyle = "#ffffff";
      ctx.fillText(view.orientation[0], 6, canvas.height / 2);
      ctx.fillText(view.orientation[1], canvas.width - 6 - ctx.measureText(view.orientation[1]).width, canvas.height / 2);
    }
    document.getElementById("zoom-text").textContent = zoom + "×";
  }

  function drawRoi(item) {
    var excluded = !!item.excluded;
    ctx.lineWidth = 2;
    ctx.strokeStyle = excluded ? "#e04040" : "#30d060";
    ctx.setLineDash(excluded ? [6, 4] : []);
    var lx, ly;
    if (item.box) {
      var b = toCanvasBox(item.box);
      ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
      [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]].forEach(handle);
      lx = b[2] + 6; ly = (b[1] + b[3]) / 2;
    } else if (item.polygon) {
      ctx.beginPath();
      item.polygon.forEach(function (p, i) { var q = ptToCanvas(p); if (i) ctx.lineTo(q[0], q[1]); else ctx.moveTo(q[0], q[1]); });
      ctx.closePath(); ctx.stroke();
      item.polygon.forEach(function (p) { handle(ptToCanvas(p)); });
      var xs = item.polygon.map(function (p) { return ptToCanvas(p)[0]; });
      var ys = item.polygon.map(function (p) { return ptToCanvas(p)[1]; });
      lx = Math.max.apply(null, xs) + 6; ly = (Math.min.apply(null, ys) + Math.max.apply(null, ys)) / 2;
    }
    ctx.setLineDash([]);
    ctx.font = "bold 13px sans-serif";
    ctx.textBaseline = "middle";
    var v = vertebra(item.label);
    var text = item.label + (excluded ? " excluded" : (v && v.value !== null ? " " + fmt(v.value) : ""));
    var tw = ctx.measureText(text).width;
    lx += 6;
    if (lx + tw > canvas.width - 2) lx = canvas.width - tw - 2;
    ctx.fillStyle = "rgba(0, 0, 0, 0.65)";
    ctx.fillRect(lx - 3, ly - 9, tw + 6, 18);
    ctx.fillStyle = excluded ? "#ff7070" : "#70ff9a";
    ctx.fillText(text, lx, ly);
  }

  function handle(p) {
    if (signed) return;
    ctx.fillStyle = "#ffd040";
    ctx.fillRect(p[0] - 3, p[1] - 3, 6, 6);
  }

  function vertebra(label) {
    if (!view) return null;
    for (var i = 0; i < view.vertebrae.length; i++) if (view.vertebrae[i].label === label) return view.vertebrae[i];
    return null;
  }

  function pointInPoly(x, y, pts) {
    var inside = false;
    for (var i = 0, j = pts.length - 1; i < pts.length; j = i++) {
      var xi = pts[i][0], yi = pts[i][1], xj = pts[j][0], yj = pts[j][1];
      if (((yi > y) !== (yj > y)) && (x < (xj - xi) * (y - yi) / (yj - yi) + xi)) inside = !inside;
    }
    return inside;
  }

  // What is under (x, y): {label, kind: corner|edge|vertex|move, index}
  function hit(x, y) {
    for (var k = 0; k < rois.length; k++) {
      var item = rois[k];
      if (item.box) {
        var b = toCanvasBox(item.box);
        var corners = [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]];
        for (var i = 0; i < 4; i++) if (Math.abs(x - corners[i][0]) <= HANDLE && Math.abs(y - corners[i][1]) <= HANDLE) return {label: item.label, kind: "corner", index: i};
        var inY = y > b[1] && y < b[3], inX = x > b[0] && x < b[2];
        if (inY && Math.abs(x - b[0]) <= HANDLE) return {label: item.label, kind: "edge", index: "left"};
        if (inY && Math.abs(x - b[2]) <= HANDLE) return {label: item.label, kind: "edge", index: "right"};
        if (inX && Math.abs(y - b[1]) <= HANDLE) return {label: item.label, kind: "edge", index: "top"};
        if (inX && Math.abs(y - b[3]) <= HANDLE) return {label: item.label, kind: "edge", index: "bottom"};
        if (inX && inY) return {label: item.label, kind: "move"};
      } else if (item.polygon) {
        var pts = item.polygon.map(ptToCanvas);
        for (var j = 0; j < pts.length; j++) if (Math.abs(x - pts[j][0]) <= HANDLE && Math.abs(y - pts[j][1]) <= HANDLE) return {label: item.label, kind: "vertex", index: j};
        if (pointInPoly(x, y, pts)) return {label: item.label, kind: "move"};
      }
    }
    return null;
  }

  function find(label) { for (var i = 0; i < rois.length; i++) if (rois[i].label === label) return rois[i]; return null; }

  function pos(ev) { var r = canvas.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; }

  canvas.addEventListener("mousedown", function (ev) {
    if (signed || busy) return;
    var p = pos(ev), h = hit(p[0], p[1]);
    if (!h) return;
    var item = find(h.label);
    drag = {label: h.label, kind: h.kind, index: h.index, start: p, orig: JSON.parse(JSON.stringify(item)), moved: false};
    ev.preventDefault();
  });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) { var p0 = pos(ev), h0 = hit(p0[0], p0[1]); canvas.style.cursor = h0 ? (h0.kind === "move" ? "move" : "crosshair") : "default"; return; }
    var p = pos(ev);
    var dr = (p[1] - drag.start[1]) / zoom, dc = (p[0] - drag.start[0]) / zoom;
    var item = find(drag.label), o = drag.orig;
    drag.moved = drag.moved || Math.abs(dr) + Math.abs(dc) > 0.2;
    if (o.box) {
      var b = o.box.slice();
      if (drag.kind === "move") { b = [b[0] + dr, b[1] + dc, b[2] + dr, b[3] + dc]; }
      else if (drag.kind === "corner") {
        if (drag.index === 0 || drag.index === 1) b[0] += dr; else b[2] += dr;
        if (drag.index === 0 || drag.index === 3) b[1] += dc; else b[3] += dc;
      } else if (drag.kind === "edge") {
        if (drag.index === "left") b[1] += dc; if (drag.index === "right") b[3] += dc;
        if (drag.index === "top") b[0] += dr; if (drag.index === "bottom") b[2] += dr;
      }
      item.box = b;
    } else if (o.polygon) {
      item.polygon = o.polygon.map(function (q, i) {
        if (drag.kind === "move" || i === drag.index) return [q[0] + dr, q[1] + dc];
        return q.slice();
      });
    }
    render();
  });
  window.addEventListener("mouseup", function () {
    if (!drag) return;
    var d = drag; drag = null;
    if (!d.moved) return;
    var item = find(d.label), body = {label: d.label};
    if (item.box) body.box = item.box.map(Math.round); else body.polygon = item.polygon;
    post("/roi", body);
  });

  function post(what, body) {
    busy = true;
    document.body.classList.add("busy");
    return fetch("/api/study/" + key + what, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body)
    }).then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
      .then(function (res) {
        var err = document.getElementById("edit-error");
        if (!res[0]) { err.textContent = res[1].error || "refused"; err.hidden = false; return load(); }
        err.hidden = true;
        show(res[1]);
      }).finally(function () { busy = false; document.body.classList.remove("busy"); });
  }

  function show(v) {
    view = v;
    rois = v.roi.vertebrae;
    document.getElementById("l1l4").textContent = fmt(v.l1_l4);
    document.getElementById("l1l4-ci").textContent = v.l1_l4_ci95 ?
      "95 % CI " + fmt(v.l1_l4_ci95[0]) + "–" + fmt(v.l1_l4_ci95[1]) + ", se " + fmt(v.l1_l4_se) + " (" + v.l1_l4_labels.join(", ") + ")" :
      (v.l1_l4_reason || "");
    var badge = document.getElementById("status");
    badge.textContent = v.status;
    badge.className = "badge " + v.status.replace(" ", "-");
    if (v.priors_html !== undefined) document.getElementById("priors-wrap").innerHTML = v.priors_html;
    if (v.audit_html !== undefined) document.getElementById("audit-wrap").innerHTML = v.audit_html;
    var tb = document.querySelector("#values tbody");
    tb.innerHTML = "";
    v.vertebrae.forEach(function (x) {
      var tr = document.createElement("tr");
      tr.id = "row-" + x.label;
      var cells = [x.label, fmt(x.value), fmt(x.se), x.ci95 ? fmt(x.ci95[0]) + "–" + fmt(x.ci95[1]) : "–",
        fmt(x.r2), x.n_lags, x.n_pixels, (x.snr_text || "–"), x.status + (x.reason ? ": " + x.reason : "")];
      cells.forEach(function (c, i) { var td = document.createElement("td"); td.textContent = c; if (i === 1) td.className = "value"; if (i === 3 || i === 7) td.className = "nowrap"; tr.appendChild(td); });
      if (!signed) {
        var td = document.createElement("td");
        var item = find(x.label);
        if (item && item.excluded) {
          td.appendChild(button("Restore automatic", "restore-" + x.label, function () { post("/restore", {label: x.label}); }));
        } else {
          var inp = document.createElement("input");
          inp.placeholder = "reason"; inp.id = "reason-" + x.label; inp.size = 10;
          td.appendChild(inp);
          td.appendChild(button("Exclude", "exclude-" + x.label, function () { post("/exclude", {label: x.label, reason: inp.value}); }));
          td.appendChild(button("Restore automatic", "restore-" + x.label, function () { post("/restore", {label: x.label}); }));
        }
        tr.appendChild(td);
      }
      tb.appendChild(tr);
    });
    var ul = document.getElementById("warnings");
    ul.innerHTML = "";
    v.warnings.forEach(function (w) { var li = document.createElement("li"); li.textContent = w; ul.appendChild(li); });
    document.getElementById("method").textContent = "Fit: " + v.method + "; lags " + fmt(v.lag_range_mm[0], 2) + "–" + fmt(v.lag_range_mm[1], 2) +
      " mm; pixel " + fmt(v.pixel_spacing_mm[0], 3) + " × " + fmt(v.pixel_spacing_mm[1], 3) + " mm.";
    var vg = document.getElementById("variogram");
    vg.src = vg.dataset.src + "?t=" + Date.now();
    root.dataset.value = v.l1_l4 === null ? "" : String(v.l1_l4);
    render();
  }

  function button(text, id, fn) {
    var b = document.createElement("button");
    b.type = "button"; b.textContent = text; b.id = id; b.addEventListener("click", fn);
    return b;
  }

  function load() { return fetch(api, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(show); }

  img.onload = function () {
    shape = [img.naturalHeight, img.naturalWidth];
    zoom = Math.max(1, Math.min(6, Math.floor(600 / Math.max(shape[0], shape[1]))));
    var c = document.createElement("canvas");
    c.width = shape[1]; c.height = shape[0];
    var cx = c.getContext("2d");
    cx.drawImage(img, 0, 0);
    var d = cx.getImageData(0, 0, shape[1], shape[0]).data;
    gray = new Uint8ClampedArray(shape[0] * shape[1]);
    for (var i = 0; i < gray.length; i++) gray[i] = d[4 * i];
    load();
  };
  img.src = canvas.dataset.src;

  document.getElementById("window").addEventListener("input", function (e) { win = +e.target.value; render(); });
  document.getElementById("level").addEventListener("input", function (e) { lev = +e.target.value; render(); });
  document.getElementById("zoom-in").addEventListener("click", function () { zoom = Math.min(12, zoom + 1); render(); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoom = Math.max(1, zoom - 1); render(); });
  document.getElementById("wl-reset").addEventListener("click", function () {
    win = 255; lev = 128; document.getElementById("window").value = 255; document.getElementById("level").value = 128; render();
  });

  // For tests and keyboard-free checks: canvas position (CSS px) of a handle.
  window.tbsEditor = {
    ready: function () { return view !== null && !busy; },
    handle: function (label, kind, index) {
      var item = find(label);
      if (!item) return null;
      if (item.box) {
        var b = toCanvasBox(item.box);
        var corners = [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]];
        if (kind === "corner") return corners[index];
        return [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2];
      }
      var pts = item.polygon.map(ptToCanvas);
      return kind === "vertex" ? pts[index] : pts[0];
    },
    value: function () { return view ? view.l1_l4 : null; }
  };
})();
