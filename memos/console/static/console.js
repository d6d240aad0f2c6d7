// memos console: a small client for the server-rendered fragments under /v1/console.
// The API key lives in sessionStorage (or localStorage when "remember" is ticked) and is sent only as
// an Authorization header; it is never put in a URL. No external assets are loaded.
(function () {
  "use strict";

  var KEY = "memos.console.key";
  var FEED = "memos.console.feed";
  var WHO = "memos.console.who";     // the key's user, asked once per tab (every fragment checks the key)
  var FEED_KEEP = 200;
  var view, loginBox, nav, who;
  var pageAbort = null;   // aborts the current page's long-running work (feed stream, polling)

  // --- key ------------------------------------------------------------------------------------------
  function getKey() { return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || ""; }
  function setKey(key, remember) {
    sessionStorage.removeItem(WHO);
    sessionStorage.setItem(KEY, key);
    if (remember) localStorage.setItem(KEY, key); else localStorage.removeItem(KEY);
  }
  function dropKey() {
    sessionStorage.removeItem(KEY); localStorage.removeItem(KEY); sessionStorage.removeItem(FEED);
    sessionStorage.removeItem(WHO);
  }
  function authHeaders(extra) {
    var h = extra || {};
    h["Authorization"] = "Bearer " + getKey();
    return h;
  }

  function send(url, options) {
    options = options || {};
    options.headers = authHeaders(options.headers);
    options.credentials = "omit";
    return fetch(url, options);
  }

  // a refused key shows the login; another failure becomes an Error with the server's message
  function checked(resp) {
    if (resp.status === 401) { dropKey(); showLogin("The key was refused (401). Enter a valid key."); throw new Error("unauthorized"); }
    if (!resp.ok) {
      return resp.text().then(function (text) {
        var message = text;
        try { message = JSON.parse(text).message || text; } catch (e) { /* not JSON */ }
        var err = new Error(message); err.status = resp.status; throw err;
      });
    }
    return resp;
  }

  function api(url, options) { return send(url, options).then(checked); }

  // The first page's fragment is asked for as soon as this script runs (it is loaded in the page's
  // head, from the browser's cache after the first visit), so the server works on it while the browser
  // builds the page; render() takes the answer if the page still wants that URL.
  var early = getKey() ? { url: fragmentUrl(location), response: send(fragmentUrl(location)) } : null;

  function fetchFragment(url, signal) {
    var first = early;
    early = null;
    if (first && first.url === url) return first.response.then(checked);
    return api(url, { signal: signal });
  }

  // --- login ----------------------------------------------------------------------------------------
  function showLogin(message) {
    stopPage();
    nav.hidden = true; who.hidden = true; view.innerHTML = ""; loginBox.hidden = false;
    var err = document.getElementById("login-error");
    err.hidden = !message; err.textContent = message || "";
    document.title = "memos console · log in";
    document.getElementById("api-key").focus();
  }

  function login(event) {
    event.preventDefault();
    var input = document.getElementById("api-key");
    var key = input.value.trim();
    if (!key) return;
    setKey(key, document.getElementById("remember").checked);
    input.value = "";
    start();
  }

  function start() {
    if (!getKey()) { showLogin(""); return; }
    // the page's fragment and (once per tab) the key's user are fetched side by side: a refused key
    // shows the login
    loginBox.hidden = true; nav.hidden = false;
    render();
    var known = sessionStorage.getItem(WHO);
    if (known) { showWho(known); return; }
    api("/v1/console/whoami").then(function (resp) { return resp.json(); }).then(function (me) {
      sessionStorage.setItem(WHO, me.user_id);
      showWho(me.user_id);
    }).catch(function (e) { if (e.message !== "unauthorized") showLogin(e.message); });
  }

  function showWho(userId) {
    who.hidden = false;
    document.getElementById("who-name").textContent = userId;
  }

  // --- routing --------------------------------------------------------------------------------------
  function fragmentUrl(loc) {
    var path = loc.pathname.replace(/^\/console\/?/, "");
    if (!path) path = "cubes";
    return "/v1/console/" + path + loc.search;
  }

  function stopPage() {
    if (pageAbort) { pageAbort.abort(); pageAbort = null; }
  }

  function navigate(url, replace) {
    if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
    render();
  }

  function render(refresh) {
    stopPage();
    pageAbort = new AbortController();
    var signal = pageAbort.signal;
    var section = location.pathname.split("/")[2] || "cubes";
    Array.prototype.forEach.call(nav.querySelectorAll("a"), function (a) {
      if (a.dataset.section === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    });
    view.setAttribute("aria-busy", "true");
    fetchFragment(fragmentUrl(location), signal).then(function (resp) { return resp.text(); }).then(function (html) {
      if (signal.aborted) return;
      view.innerHTML = html;
      view.removeAttribute("aria-busy");
      var page = view.querySelector("[data-page]");
      document.title = (page && page.dataset.title ? page.dataset.title + " · " : "") + "memos console";
      var heading = view.querySelector("h1");
      if (heading && refresh !== true) heading.focus({ preventScroll: true });
      var init = page && PAGES[page.dataset.page];
      if (init) init(page, signal);
      if (page && page.dataset.refresh) {
        // the page said its figures are still being computed: fetch it again shortly (same URL)
        var url = location.href;
        setTimeout(function () { if (!signal.aborted && location.href === url) render(true); }, parseInt(page.dataset.refresh, 10));
      }
      if (performance.mark) performance.mark("memos:view");  // bench/console.py reads it
    }).catch(function (e) {
      if (signal.aborted || e.message === "unauthorized") return;
      view.removeAttribute("aria-busy");
      view.innerHTML = "";
      var box = document.createElement("div");
      box.className = "error-page";
      var h = document.createElement("h1"); h.tabIndex = -1;
      h.textContent = e.status === 404 ? "Not found" : "Could not load this page";
      var p = document.createElement("p"); p.className = "error"; p.textContent = e.message;
      var a = document.createElement("a"); a.href = "/console/cubes"; a.textContent = "Back to your cubes";
      box.appendChild(h); box.appendChild(p); box.appendChild(a); view.appendChild(box); h.focus();
    });
  }

  function onClick(event) {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    var a = event.target.closest ? event.target.closest("a[href]") : null;
    if (a && a.origin === location.origin && /^\/console(\/|$)/.test(a.pathname) && !a.target) {
      event.preventDefault();
      navigate(a.pathname + a.search);
      return;
    }
    var button = event.target.closest ? event.target.closest("button[data-action]") : null;
    if (button) { event.preventDefault(); runAction(button); }
  }

  function onSubmit(event) {
    var form = event.target;
    if (form.id === "login-form") { login(event); return; }
    if (!form.dataset.nav) return;
    event.preventDefault();
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, name) { if (value !== "") params.append(name, value); });
    var qs = params.toString();
    navigate(form.dataset.nav + (qs ? "?" + qs : ""));
  }

  // --- actions with confirmation ----------------------------------------------------------------------
  function confirmDialog(text) {
    var dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    return new Promise(function (resolve) {
      dialog.returnValue = "cancel";
      dialog.addEventListener("close", function done() {
        dialog.removeEventListener("close", done);
        resolve(dialog.returnValue === "ok");
      });
      dialog.showModal();
    });
  }

  function runAction(button) {
    confirmDialog(button.dataset.confirm || "Are you sure?").then(function (ok) {
      if (!ok) return;
      button.disabled = true;
      var status = document.getElementById("job");
      return api(button.dataset.action, { method: "POST" }).then(function (resp) { return resp.json(); }).then(function (body) {
        if (button.dataset.progress && body.job_id) { followJob(body.job_id, status, button); return; }
        if (button.dataset.after) navigate(button.dataset.after); else render();
      });
    }).catch(function (e) {
      button.disabled = false;
      if (e.message !== "unauthorized") flash(e.message);
    });
  }

  function followJob(jobId, status, button) {
    var signal = pageAbort ? pageAbort.signal : null;
    var bar = document.createElement("progress");
    bar.max = 1; bar.value = 0; bar.setAttribute("aria-label", "replay progress");
    var label = document.createElement("span");
    status.textContent = ""; status.appendChild(bar); status.appendChild(label);
    function poll() {
      if (signal && signal.aborted) return;
      api("/v1/console/jobs/" + encodeURIComponent(jobId)).then(function (resp) { return resp.json(); }).then(function (job) {
        bar.max = job.total || 1; bar.value = job.done;
        label.textContent = " " + job.status + " · " + job.done + " / " + job.total + " records read";
        if (job.status === "running") { setTimeout(poll, 250); return; }
        button.disabled = false;
        label.textContent = job.status === "completed"
          ? " replay completed · " + job.result.events_applied + " events applied"
          : " replay failed: " + job.error;
        status.dataset.state = job.status;
      }).catch(function (e) { label.textContent = " " + e.message; button.disabled = false; });
    }
    poll();
  }

  function flash(message) {
    var box = document.createElement("p");
    box.className = "error flash"; box.setAttribute("role", "alert"); box.textContent = message;
    view.insertBefore(box, view.firstChild);
  }

  // --- the live feed ----------------------------------------------------------------------------------
  function loadFeedState() {
    try { return JSON.parse(sessionStorage.getItem(FEED) || "null"); } catch (e) { return null; }
  }

  function feedPage(page, signal) {
    var rows = document.getElementById("feed-rows");
    var state = document.getElementById("feed-state");
    var cubes = page.dataset.cubes;
    var saved = loadFeedState();
    if (!saved || saved.cubes !== cubes) saved = { cubes: cubes, cursor: page.dataset.cursor, events: [] };
    saved.events.forEach(function (e) { rows.insertBefore(feedRow(e), rows.firstChild); });
    document.getElementById("feed-clear").addEventListener("click", function () {
      sessionStorage.removeItem(FEED); render();
    });
    if (!cubes) { state.textContent = "nothing to follow"; state.dataset.state = "idle"; return; }
    function save() { sessionStorage.setItem(FEED, JSON.stringify(saved)); }
    save();
    function connect(delay) {
      if (signal.aborted) return;
      var url = "/v1/feed?cursor=" + encodeURIComponent(saved.cursor || "");
      state.textContent = "connecting…"; state.dataset.state = "connecting";
      api(url, { signal: signal, headers: { Accept: "text/event-stream" } }).then(function (resp) {
        state.textContent = "live"; state.dataset.state = "live";
        var reader = resp.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) throw new Error("the feed ended");
            buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, "\n");
            var cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              var block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
              var message = parseSse(block);
              if (message && message.data) {
                var payload = JSON.parse(message.data);
                var entry = summarise(message.event, payload);
                rows.insertBefore(feedRow(entry), rows.firstChild);
                saved.cursor = message.id || saved.cursor;
                saved.events.push(entry);
                if (saved.events.length > FEED_KEEP) saved.events.splice(0, saved.events.length - FEED_KEEP);
                while (rows.children.length > FEED_KEEP) rows.removeChild(rows.lastChild);
                save();
              }
            }
            return pump();
          });
        }
        return pump();
      }).catch(function (e) {
        if (signal.aborted || e.message === "unauthorized") return;
        state.textContent = "disconnected (" + e.message + "); retrying"; state.dataset.state = "retrying";
        setTimeout(function () { connect(Math.min((delay || 500) * 2, 10000)); }, delay || 500);
      });
    }
    connect(0);
  }

  function parseSse(block) {
    var message = { event: "message", data: "", id: null };
    var data = [];
    block.split("\n").forEach(function (line) {
      if (!line || line.charAt(0) === ":") return;
      var i = line.indexOf(":");
      var field = i < 0 ? line : line.slice(0, i);
      var value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "data") data.push(value); else if (field === "event") message.event = value; else if (field === "id") message.id = value;
    });
    message.data = data.join("\n");
    return data.length ? message : null;
  }

  function summarise(type, payload) {
    var e = payload.event || {};
    var detail = e.memory || e.reason || e.relation || e.error || "";
    if (e.event_type === "MemoryRetired" && e.successor_ids && e.successor_ids.length) detail += " → " + e.successor_ids.length + " successor(s)";
    if (e.event_type === "RelationAdded") detail = e.relation + " " + (e.source_id || "").slice(0, 8) + " → " + (e.target_id || "").slice(0, 8);
    return { type: type, at: e.occurred_at || "", cube: e.cube_id || e.key || "", memory: e.memory_id || e.source_id || "", detail: detail,
             offset: payload.position ? payload.position.partition + ":" + payload.position.offset : "" };
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td;
  }

  function feedRow(e) {
    var tr = document.createElement("tr");
    tr.dataset.type = e.type;
    if (e.memory) tr.dataset.memory = e.memory;
    cell(tr, (e.at || "").replace("T", " ").replace(/\.\d+/, ""), "nowrap");
    cell(tr, e.type).className = "chipcell";
    cell(tr, e.cube);
    var td = cell(tr, "");
    if (e.memory && e.cube) {
      var a = document.createElement("a");
      a.href = "/console/cubes/" + encodeURIComponent(e.cube) + "/memories/" + encodeURIComponent(e.memory);
      a.textContent = e.memory.slice(0, 8); td.appendChild(a);
    }
    cell(tr, e.detail, "text");
    return tr;
  }

  // --- the graph --------------------------------------------------------------------------------------
  var SVG = "http://www.w3.org/2000/svg";
  var NEAR_FROM = 100;   // graphs with more nodes than this repel only near neighbours (see repelNear)
  var COLORS = { LongTermMemory: "#2563eb", UserMemory: "#7c3aed", WorkingMemory: "#0891b2", PreferenceMemory: "#db2777",
                 ToolSchemaMemory: "#ca8a04", ToolTrajectoryMemory: "#ea580c", SkillMemory: "#16a34a", OuterMemory: "#64748b" };

  function layout(nodes, edges, width, height) {
    var n = nodes.length, index = {}, xs = new Float64Array(n), ys = new Float64Array(n);
    nodes.forEach(function (node, i) {
      index[node.id] = i;
      var angle = i * 2.399963; var r = 10 * Math.sqrt(i + 1);   // a phyllotaxis start: deterministic
      xs[i] = width / 2 + r * Math.cos(angle); ys[i] = height / 2 + r * Math.sin(angle);
    });
    var links = edges.filter(function (e) { return e.source in index && e.target in index; });
    var from = Int32Array.from(links, function (l) { return index[l.source]; });
    var to = Int32Array.from(links, function (l) { return index[l.target]; });
    var k = Math.sqrt((width * height) / Math.max(n, 1)) * 0.45;
    var temperature = width / 8;
    // a large graph cools faster, and only near neighbours repel (see repelNear): it settles in a frame
    var near = n > NEAR_FROM, rounds = near ? 120 : 220, cooling = near ? 0.95 : 0.97;
    var dx = new Float64Array(n), dy = new Float64Array(n);
    for (var iter = 0; iter < rounds; iter++) {
      dx.fill(0); dy.fill(0);
      if (near) repelNear(xs, ys, dx, dy, k); else repelAll(xs, ys, dx, dy, k);
      for (var e = 0; e < from.length; e++) {
        var a = from[e], b = to[e];
        var ddx = xs[a] - xs[b], ddy = ys[a] - ys[b];
        var d = Math.sqrt(ddx * ddx + ddy * ddy) + 0.01, f = d / k;
        dx[a] -= ddx * f; dy[a] -= ddy * f; dx[b] += ddx * f; dy[b] += ddy * f;
      }
      for (var i = 0; i < n; i++) {
        // a little gravity towards the centre, and the frame (Fruchterman-Reingold) keeps the rest in view
        dx[i] += (width / 2 - xs[i]) * 0.1; dy[i] += (height / 2 - ys[i]) * 0.1;
        var len = Math.sqrt(dx[i] * dx[i] + dy[i] * dy[i]) + 0.01, step = Math.min(len, temperature);
        xs[i] = Math.max(20, Math.min(width - 180, xs[i] + (dx[i] / len) * step));
        ys[i] = Math.max(20, Math.min(height - 20, ys[i] + (dy[i] / len) * step));
      }
      temperature *= cooling;
    }
    nodes.forEach(function (node, i) { node.x = xs[i]; node.y = ys[i]; });
    fit(nodes, width, height, 40);
    return links.map(function (l) { return { a: nodes[index[l.source]], b: nodes[index[l.target]], relation: l.relation }; });
  }

  // every pair of nodes pushes apart: exact, and quick enough for small graphs
  function repelAll(xs, ys, dx, dy, k) {
    for (var i = 0; i < xs.length; i++) {
      for (var j = i + 1; j < xs.length; j++) {
        var ddx = xs[i] - xs[j], ddy = ys[i] - ys[j];
        var d2 = ddx * ddx + ddy * ddy + 0.01, f = (k * k) / d2;
        dx[i] += ddx * f; dy[i] += ddy * f; dx[j] -= ddx * f; dy[j] -= ddy * f;
      }
    }
  }

  // the grid variant of Fruchterman and Reingold: only nodes closer than 2k push apart, found through a
  // grid of 2k cells (a linked list per cell in typed arrays), so an iteration costs about n, not n^2
  function repelNear(xs, ys, dx, dy, k) {
    var cell = 2 * k, n = xs.length, minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (var i = 0; i < n; i++) {
      minX = Math.min(minX, xs[i]); maxX = Math.max(maxX, xs[i]); minY = Math.min(minY, ys[i]); maxY = Math.max(maxY, ys[i]);
    }
    var cols = Math.floor((maxX - minX) / cell) + 1, rows = Math.floor((maxY - minY) / cell) + 1;
    var head = new Int32Array(cols * rows).fill(-1), next = new Int32Array(n);
    var cx = new Int32Array(n), cy = new Int32Array(n);
    for (i = 0; i < n; i++) {
      cx[i] = Math.floor((xs[i] - minX) / cell); cy[i] = Math.floor((ys[i] - minY) / cell);
      var c = cx[i] + cy[i] * cols;
      next[i] = head[c]; head[c] = i;
    }
    for (i = 0; i < n; i++) {
      for (var gy = Math.max(0, cy[i] - 1); gy <= Math.min(rows - 1, cy[i] + 1); gy++) {
        for (var gx = Math.max(0, cx[i] - 1); gx <= Math.min(cols - 1, cx[i] + 1); gx++) {
          for (var j = head[gx + gy * cols]; j >= 0; j = next[j]) {
            if (j <= i) continue;
            var ddx = xs[i] - xs[j], ddy = ys[i] - ys[j], d2 = ddx * ddx + ddy * ddy + 0.01;
            if (d2 >= cell * cell) continue;
            var f = (k * k) / d2;
            dx[i] += ddx * f; dy[i] += ddy * f; dx[j] -= ddx * f; dy[j] -= ddy * f;
          }
        }
      }
    }
  }

  // scale and centre the layout into the canvas, whatever spread the forces settled at
  function fit(nodes, width, height, margin) {
    if (!nodes.length) return;
    var minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    nodes.forEach(function (n) {
      minX = Math.min(minX, n.x); maxX = Math.max(maxX, n.x); minY = Math.min(minY, n.y); maxY = Math.max(maxY, n.y);
    });
    var spanX = Math.max(maxX - minX, 1), spanY = Math.max(maxY - minY, 1);
    var scale = Math.min((width - 2 * margin - 160) / spanX, (height - 2 * margin) / spanY, 3);
    var offX = (width - 160 - spanX * scale) / 2, offY = (height - spanY * scale) / 2;
    nodes.forEach(function (n) { n.x = offX + (n.x - minX) * scale; n.y = offY + (n.y - minY) * scale; });
  }

  function graphPage(page) {
    var box = document.getElementById("graph");
    var data = JSON.parse(document.getElementById("graph-data").textContent);
    var cube = box.dataset.cube;
    var width = 1000, height = 640;
    var links = layout(data.nodes, data.edges, width, height);
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", data.nodes.length + " memories and " + links.length + " edges");
    var scene = document.createElementNS(SVG, "g");
    svg.appendChild(scene);
    links.forEach(function (l) {
      var line = document.createElementNS(SVG, "line");
      line.setAttribute("x1", l.a.x); line.setAttribute("y1", l.a.y); line.setAttribute("x2", l.b.x); line.setAttribute("y2", l.b.y);
      line.setAttribute("class", "edge");
      var t = document.createElementNS(SVG, "title"); t.textContent = l.relation; line.appendChild(t);
      scene.appendChild(line);
    });
    data.nodes.forEach(function (n) {
      var a = document.createElementNS(SVG, "a");
      a.setAttribute("href", "/console/cubes/" + encodeURIComponent(cube) + "/memories/" + encodeURIComponent(n.id));
      a.setAttribute("class", "node");
      a.setAttribute("aria-label", n.type + ": " + n.memory);
      var c = document.createElementNS(SVG, "circle");
      c.setAttribute("cx", n.x); c.setAttribute("cy", n.y); c.setAttribute("r", 7);
      c.setAttribute("fill", COLORS[n.type] || "#475569");
      var t = document.createElementNS(SVG, "title"); t.textContent = n.memory; c.appendChild(t);
      var label = document.createElementNS(SVG, "text");
      label.setAttribute("x", n.x + 10); label.setAttribute("y", n.y + 4); label.textContent = n.label.slice(0, 28);
      a.appendChild(c); a.appendChild(label); scene.appendChild(a);
    });
    box.appendChild(svg);
    var view = { x: 0, y: 0, s: 1 };
    function apply() { scene.setAttribute("transform", "translate(" + view.x + "," + view.y + ") scale(" + view.s + ")"); }
    function zoom(factor, cx, cy) {
      cx = cx === undefined ? width / 2 : cx; cy = cy === undefined ? height / 2 : cy;
      var s = Math.max(0.2, Math.min(8, view.s * factor)); factor = s / view.s;
      view.x = cx - (cx - view.x) * factor; view.y = cy - (cy - view.y) * factor; view.s = s; apply();
    }
    function toSvg(ev) {
      var r = svg.getBoundingClientRect();
      return { x: (ev.clientX - r.left) * width / r.width, y: (ev.clientY - r.top) * height / r.height };
    }
    svg.addEventListener("wheel", function (ev) { ev.preventDefault(); var p = toSvg(ev); zoom(ev.deltaY < 0 ? 1.15 : 1 / 1.15, p.x, p.y); }, { passive: false });
    var drag = null;
    svg.addEventListener("pointerdown", function (ev) {
      if (ev.target.closest("a")) return;
      drag = { p: toSvg(ev), x: view.x, y: view.y }; svg.setPointerCapture(ev.pointerId); svg.classList.add("dragging");
    });
    svg.addEventListener("pointermove", function (ev) {
      if (!drag) return; var p = toSvg(ev); view.x = drag.x + p.x - drag.p.x; view.y = drag.y + p.y - drag.p.y; apply();
    });
    svg.addEventListener("pointerup", function () { drag = null; svg.classList.remove("dragging"); });
    page.querySelectorAll("[data-zoom]").forEach(function (b) {
      b.addEventListener("click", function () {
        var f = parseFloat(b.dataset.zoom);
        if (f) zoom(f); else { view = { x: 0, y: 0, s: 1 }; apply(); }
      });
    });
    box.tabIndex = 0;
    box.setAttribute("aria-label", "Graph canvas: arrow keys pan, + and - zoom");
    box.addEventListener("keydown", function (ev) {
      var moves = { ArrowLeft: [40, 0], ArrowRight: [-40, 0], ArrowUp: [0, 40], ArrowDown: [0, -40] };
      if (moves[ev.key]) { view.x += moves[ev.key][0]; view.y += moves[ev.key][1]; apply(); ev.preventDefault(); }
      else if (ev.key === "+" || ev.key === "=") { zoom(1.25); ev.preventDefault(); }
      else if (ev.key === "-") { zoom(0.8); ev.preventDefault(); }
    });
  }

  var PAGES = { feed: feedPage, graph: graphPage };

  // --- start ----------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", function () {
    view = document.getElementById("view");
    loginBox = document.getElementById("login");
    nav = document.getElementById("nav");
    who = document.getElementById("who");
    document.addEventListener("click", onClick);
    document.addEventListener("submit", onSubmit);
    document.getElementById("logout").addEventListener("click", function () { dropKey(); showLogin(""); });
    window.addEventListener("popstate", function () { render(); });
    document.addEventListener("keydown", function (ev) {
      // "/" focuses the first search or filter box of the page, as in many consoles
      if (ev.key === "/" && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) {
        var box = view.querySelector("input[type=search]");
        if (box) { ev.preventDefault(); box.focus(); }
      }
    });
    start();
  });
})();
