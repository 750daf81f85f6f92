// Comparison page (templates/compare/compare.html). The figures are built on the server and arrive as
// JSON; this script draws them with Plotly.react, polls the JSON endpoint every few seconds while runs
// train, switches the x axis (step, tokens seen, wall time) and the EMA smoothing (both applied by the
// server), and re-renders the samples grid for the evaluation step chosen with the slider.
// Model output (prompts, completions) and every other string go into the page with textContent, never
// innerHTML.
(function () {
  "use strict";
  var root = document.getElementById("compare");
  var charts = document.getElementById("charts");
  if (!root || !charts || !window.Plotly) return;

  var POLL_MS = Number(root.dataset.pollMs) || 3000;
  var PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  var status = document.getElementById("chart-status");
  var live = document.getElementById("live");
  var smoothing = document.getElementById("smoothing");
  var smoothingValue = document.getElementById("smoothing-value");
  var sampleSlider = document.getElementById("sample-step");
  var sampleValue = document.getElementById("sample-step-value");
  var sampleSteps = JSON.parse(document.getElementById("sample-steps").textContent || "[]");
  var seq = 0, sampleSeq = 0, timer = null, debounce = null;
  var logCharts = {}; // chart id -> log y axis (kept across polls and redraws)

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function withParams(url, params) {
    var u = new URL(url, window.location.href);
    Object.keys(params).forEach(function (k) { u.searchParams.set(k, params[k]); });
    return u.toString();
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }

  var chain = document.getElementById("chain");

  function currentParams() {
    var params = { x: currentX(), smoothing: smoothing.value };
    params.chain = chain && chain.checked && currentX() === "step" ? "1" : "0";
    return params;
  }

  function currentX() {
    var checked = root.querySelector('input[name="x"]:checked');
    return checked ? checked.value : "step";
  }

  // --- charts ------------------------------------------------------------------------------------------
  function chartCard(item, index) {
    var card = null;
    Array.prototype.forEach.call(charts.children, function (c) { if (c.dataset.chart === item.id) card = c; });
    if (!card) {
      card = el("article", "card chart");
      card.dataset.chart = item.id;
      var head = el("header", "chart-head");
      head.appendChild(el("h3", null, item.title));
      var log = el("button", "button small ghost log-toggle", "log y");
      log.type = "button";
      log.title = "Logarithmic y axis (values ≤ 0 are left out)";
      log.setAttribute("aria-pressed", logCharts[item.id] ? "true" : "false");
      log.addEventListener("click", function () {
        logCharts[item.id] = !logCharts[item.id];
        log.setAttribute("aria-pressed", logCharts[item.id] ? "true" : "false");
        card.dataset.log = logCharts[item.id] ? "true" : "false";
        Plotly.relayout(card.querySelector(".plot"), { "yaxis.type": logCharts[item.id] ? "log" : "linear" });
      });
      head.appendChild(log);
      card.appendChild(head);
      card.appendChild(el("p", "chart-note"));
      var plot = el("div", "plot");
      plot.id = "plot-" + item.id;
      card.appendChild(plot);
    }
    card.classList.toggle("wide", !!item.wide);
    if (charts.children[index] !== card) charts.insertBefore(card, charts.children[index] || null);
    var note = card.querySelector(".chart-note");
    var text = item.note;
    if (item.missing_x) text += " · not on this axis: " + item.missing_x.join(", ") + " (no count logged)";
    note.textContent = text;
    note.classList.toggle("missing", !!item.missing_x);
    return card;
  }

  // A long legend (many runs, or long names across experiments) goes below the plot, wrapped over as
  // many rows as it needs, and the figure grows by their height: the plot keeps its full width.
  function legendBelowIfLong(card, data, layout) {
    var names = data.filter(function (t) { return t.showlegend !== false && t.name; })
      .map(function (t) { return String(t.name).replace(/<[^>]*>/g, ""); });
    var chars = names.reduce(function (n, name) { return n + name.length; }, 0);
    var long = names.length > 6 || chars > 90;
    card.dataset.legend = long ? "below" : "right";
    if (!long || layout.showlegend === false) return;
    var width = Math.max(300, card.querySelector(".plot").clientWidth || card.clientWidth || 600);
    var rows = 1, used = 0;
    names.forEach(function (name) {
      var w = 48 + 6.6 * Math.min(name.length, 60);
      if (used + w > width - 20 && used > 0) { rows += 1; used = 0; }
      used += w;
    });
    var extra = rows * 21 + 16;
    layout.legend = Object.assign({}, layout.legend, {
      orientation: "h", xref: "container", x: 0.01, xanchor: "left", yref: "container", y: 0.01, yanchor: "bottom"
    });
    layout.margin = Object.assign({}, layout.margin, { b: (layout.margin && layout.margin.b || 8) + extra + 36 });
    layout.height = (layout.height || 360) + extra;
  }

  function draw(payload) {
    var ids = {};
    payload.figures.forEach(function (item, i) {
      ids[item.id] = true;
      var card = chartCard(item, i);
      var layout = item.figure.layout;
      // Zoom and legend toggles survive polls and smoothing changes; a new x axis starts afresh.
      layout.uirevision = payload.x + (payload.chain ? ":chain" : "");
      if (logCharts[item.id]) layout.yaxis.type = "log";
      legendBelowIfLong(card, item.figure.data, layout);
      Plotly.react(card.querySelector(".plot"), item.figure.data, layout, PLOT_CONFIG);
    });
    Array.prototype.slice.call(charts.children).forEach(function (card) {
      if (!ids[card.dataset.chart]) {
        Plotly.purge(card.querySelector(".plot"));
        card.remove();
      }
    });
    updateSummary(payload.summary);
    followSamples(payload.sample_steps || []);
    root.dataset.active = payload.active ? "true" : "false";
    root.dataset.drawn = String(Number(root.dataset.drawn || 0) + 1);
    if (live) live.hidden = !payload.active;
    status.textContent = payload.active
      ? "Updated " + new Date().toLocaleTimeString()
      : "All runs have finished";
  }

  function load() {
    var mine = ++seq;
    clearTimeout(timer);
    getJSON(withParams(root.dataset.dataUrl, currentParams()))
      .then(function (payload) {
        if (mine !== seq) return; // a newer request (another axis, smoothing) is on its way
        draw(payload);
        if (payload.active) timer = setTimeout(load, POLL_MS);
      })
      .catch(function (err) {
        if (mine !== seq) return;
        status.textContent = "Could not load the charts (" + err.message + "); retrying";
        timer = setTimeout(load, POLL_MS * 2);
      });
  }

  function remember() {
    var url = withParams(window.location.href, currentParams());
    window.history.replaceState(null, "", url);
  }

  // --- summary table -----------------------------------------------------------------------------------
  function setCells(row, cells) {
    cells.forEach(function (text, i) {
      var td = row.querySelector('[data-col="' + i + '"]');
      if (td && td.textContent !== text) td.textContent = text;
    });
  }

  function updateSummary(summary) {
    var groups = {}, runs = {};
    document.querySelectorAll("#summary tbody tr").forEach(function (row) { groups[row.dataset.group] = row; });
    document.querySelectorAll("#summary-runs tbody tr").forEach(function (row) { runs[row.dataset.run] = row; });
    summary.groups.forEach(function (g) {
      var row = groups[g.group];
      if (!row) return;
      setCells(row, g.cells);
      row.querySelector('[data-col="states"]').textContent = g.states;
    });
    summary.runs.forEach(function (r) {
      var row = runs[String(r.run)];
      if (!row) return;
      setCells(row, r.cells);
      var badge = row.querySelector('[data-col="state"]');
      badge.textContent = r.state;
      badge.className = "badge " + r.state;
      row.querySelector('[data-col="step"]').textContent = r.step === null ? "–" : String(r.step);
    });
  }

  // --- samples -----------------------------------------------------------------------------------------
  function renderSamples(grid) {
    var box = document.getElementById("samples-grid");
    if (!grid.prompts.length) {
      box.replaceChildren(el("p", "muted", "No samples yet: they appear with each run's first evaluation."));
      return;
    }
    var table = el("table", "samples-grid");
    var headRow = el("tr");
    headRow.appendChild(el("th", "prompt-col", "Eval prompt"));
    grid.columns.forEach(function (col) {
      var th = el("th");
      th.style.borderTopColor = col.color;
      if (col.url) {
        var a = el("a", null, col.label);
        a.href = col.url;
        th.appendChild(a);
      } else {
        th.appendChild(document.createTextNode(col.label));
      }
      th.appendChild(el("div", "muted small", col.note));
      headRow.appendChild(th);
    });
    table.appendChild(el("thead")).appendChild(headRow);
    var body = el("tbody");
    grid.prompts.forEach(function (p) {
      var tr = el("tr");
      var th = el("th", "prompt", p.prompt);
      th.scope = "row";
      tr.appendChild(th);
      p.cells.forEach(function (cell) {
        var td = el("td");
        if (!cell.length) td.appendChild(el("span", "muted", "–"));
        cell.forEach(function (c) {
          var div = el("div", "completion");
          var reward = el("span", "reward", c.reward === null ? "–" : Number(c.reward).toFixed(3));
          reward.title = "gold reward";
          div.appendChild(reward);
          div.appendChild(el("div", "text", c.completion));
          td.appendChild(div);
        });
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.appendChild(body);
    box.replaceChildren(table);
  }

  function loadSamples(step) {
    var mine = ++sampleSeq;
    getJSON(withParams(root.dataset.samplesUrl, { step: step })).then(function (grid) {
      if (mine !== sampleSeq) return;
      renderSamples(grid);
      root.dataset.sampleStep = String(grid.step);
    }).catch(function () { /* the next poll or slider move tries again */ });
  }

  function showStep() {
    if (sampleSlider) sampleValue.textContent = "step " + sampleSteps[Number(sampleSlider.value)];
  }

  // While runs train, new evaluations extend the slider; if it was at the latest step it follows.
  function followSamples(steps) {
    if (!sampleSlider || steps.length === sampleSteps.length) return;
    var atEnd = Number(sampleSlider.value) === sampleSteps.length - 1;
    sampleSteps = steps;
    sampleSlider.max = String(steps.length - 1);
    if (atEnd) {
      sampleSlider.value = String(steps.length - 1);
      showStep();
      loadSamples(steps[steps.length - 1]);
    }
  }

  if (sampleSlider) {
    sampleSlider.addEventListener("input", showStep);
    sampleSlider.addEventListener("change", function () { loadSamples(sampleSteps[Number(sampleSlider.value)]); });
  }

  // --- controls ----------------------------------------------------------------------------------------
  root.querySelectorAll('input[name="x"]').forEach(function (radio) {
    radio.addEventListener("change", function () { remember(); load(); });
  });
  if (chain) chain.addEventListener("change", function () { remember(); load(); });
  smoothing.addEventListener("input", function () {
    smoothingValue.textContent = Number(smoothing.value).toFixed(2);
    clearTimeout(debounce);
    debounce = setTimeout(function () { remember(); load(); }, 200);
  });

  load();
})();
