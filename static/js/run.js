// A run's own page (templates/experiments/run_detail.html): while the run is queued or training, poll
// live.json every 2 s and update its state, progress, ETA, queue place, log, the four charts (drawn with
// Plotly from figures built on the server) and the latest samples, without reloading. Every string goes
// in with textContent, never as HTML: logs, errors and samples may contain model output.
(function () {
  "use strict";
  var root = document.getElementById("run-page");
  if (!root) return;
  var charts = document.getElementById("run-charts");
  var status = document.getElementById("chart-status");
  var INTERVAL_MS = Number(root.dataset.pollMs) || 2000;
  var PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

  // Forms that ask first (cancelling a run).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function field(name) { return root.querySelector('[data-field="' + name + '"]'); }

  function set(name, text) {
    var node = field(name);
    if (node && node.textContent !== text) node.textContent = text;
    return node;
  }

  function duration(s) {
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function updateRun(run) {
    var badge = set("state", run.state);
    if (badge) badge.className = "badge state " + run.state;
    set("steps", "step " + run.step + " of " + (run.total || "?"));
    set("eta", run.state === "running" && run.eta_s ? "ETA " + duration(run.eta_s) : "");
    set("queue", run.queue_position ? "place " + run.queue_position + " in the queue" : "");
    set("phase", run.phase ? run.phase + (run.stop_requested && run.active ? " (stopping)" : "") : "");
    set("attempts", String(run.attempts));
    var bar = root.querySelector(".run-progress");
    bar.setAttribute("aria-valuenow", run.percent);
    bar.firstElementChild.style.width = run.percent + "%";
    var log = set("log", run.log.join("\n"));
    if (log) log.scrollTop = log.scrollHeight;
    set("error", run.error);
    set("traceback", run.traceback);
    field("error-box").hidden = !run.error;
    var cancel = field("cancel");
    if (cancel) cancel.hidden = !(run.active && !run.stop_requested);
    document.getElementById("live").hidden = !run.active;
    root.dataset.active = run.active ? "true" : "false";
    root.dataset.state = run.state;
  }

  function drawCharts(figures) {
    figures.forEach(function (item) {
      var card = charts.querySelector('[data-chart="' + item.id + '"]');
      if (!card) {
        card = el("article", "card chart");
        card.dataset.chart = item.id;
        var head = el("header", "chart-head");
        head.appendChild(el("h3", null, item.title));
        card.appendChild(head);
        card.appendChild(el("p", "chart-note", item.note));
        var plot = el("div", "plot");
        card.appendChild(plot);
        charts.appendChild(card);
      }
      var layout = item.figure.layout;
      layout.uirevision = "run"; // zoom survives polls
      if (window.Plotly) Plotly.react(card.querySelector(".plot"), item.figure.data, layout, PLOT_CONFIG);
      card.dataset.points = String(item.figure.data.reduce(function (n, t) { return n + (t.x ? t.x.length : 0); }, 0));
    });
    root.dataset.drawn = String(Number(root.dataset.drawn || 0) + 1);
  }

  function drawSamples(step, samples) {
    var table = root.querySelector("#samples table");
    var body = table.querySelector("tbody");
    body.textContent = "";
    samples.forEach(function (s) {
      var tr = el("tr");
      tr.appendChild(el("td", "muted", s.prompt_id + "." + s.index));
      tr.appendChild(el("td", null, s.prompt));
      tr.appendChild(el("td", "completion", s.completion));
      tr.appendChild(el("td", "num", Number(s.reward).toFixed(3)));
      body.appendChild(tr);
    });
    table.hidden = samples.length === 0;
    field("no-samples").hidden = samples.length > 0;
    set("sample-step", "at step " + step);
    root.dataset.samplesStep = String(step);
  }

  function drawLatest(latest) {
    if (!latest || !latest.length) return;
    var table = document.getElementById("final");
    var body = table.querySelector("tbody");
    body.textContent = "";
    latest.forEach(function (pair) {
      var tr = el("tr");
      tr.appendChild(el("th", "mono", pair[0]));
      tr.appendChild(el("td", "num", pair[1] === null ? "–" : Number(pair[1]).toFixed(4)));
      body.appendChild(tr);
    });
    table.hidden = false;
    field("no-final").hidden = true;
  }

  function drawDownloads(downloads) {
    var list = document.getElementById("downloads");
    if (!downloads.length) return;
    list.textContent = "";
    downloads.forEach(function (d) {
      var li = el("li");
      var a = el("a", null, d.label);
      a.href = d.url;
      a.setAttribute("download", "");
      li.appendChild(a);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "muted small", "(zip)"));
      list.appendChild(li);
    });
  }

  function poll() {
    var url = new URL(root.dataset.liveUrl, window.location.href);
    if (root.dataset.samplesStep) url.searchParams.set("samples_step", root.dataset.samplesStep);
    fetch(url.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        updateRun(data.run);
        drawCharts(data.figures);
        if (data.samples) drawSamples(data.samples_step, data.samples);
        drawLatest(data.latest);
        if (data.downloads) drawDownloads(data.downloads);
        status.textContent = data.run.active ? "Updated " + new Date().toLocaleTimeString() : "";
        if (data.run.active) setTimeout(poll, INTERVAL_MS); // finished: nothing changes any more
      })
      .catch(function (err) {
        status.textContent = "Could not reach the server (" + err.message + "); retrying";
        setTimeout(poll, INTERVAL_MS * 2); // a server restart: keep trying
      });
  }

  window.addEventListener("load", poll); // after plotly.min.js (deferred) has run
})();
