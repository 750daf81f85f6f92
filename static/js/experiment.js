// Experiment page: poll the runs' status every 2 s and update their cards in place.
// Everything shown comes from the server as data and goes into the page with textContent (never HTML):
// logs and errors may contain model output.
(function () {
  "use strict";
  var container = document.getElementById("runs");
  if (!container) return;
  var url = container.dataset.statusUrl;
  var INTERVAL_MS = 2000;

  // Cancelling asks first (the forms carry their question).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });

  function fmt(x) { return x === null || x === undefined ? "–" : Number(x).toFixed(4); }

  function duration(s) {
    if (s === null || s === undefined) return "";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function set(card, field, text) {
    var el = card.querySelector('[data-field="' + field + '"]');
    if (el && el.textContent !== text) el.textContent = text;
    return el;
  }

  function show(card, field, visible) {
    var el = card.querySelector('[data-field="' + field + '"]');
    if (el) el.hidden = !visible;
  }

  function update(run) {
    var card = container.querySelector('[data-run="' + run.id + '"]');
    if (!card) return;
    card.className = card.className.replace(/\bstate-\w+/, "state-" + run.state);
    var badge = set(card, "state", run.state);
    if (badge) badge.className = "badge state " + run.state;
    var bar = card.querySelector(".progress");
    bar.setAttribute("aria-valuenow", run.percent);
    bar.firstElementChild.style.width = run.percent + "%";
    set(card, "steps", "step " + run.step + " of " + (run.total || "?"));
    set(card, "eta", run.state === "running" && run.eta_s ? "· ETA " + duration(run.eta_s) : "");
    set(card, "phase", run.phase ? "· " + run.phase + (run.stop_requested && run.active ? " (stopping)" : "") : "");
    set(card, "queue", run.queue_position ? "· place " + run.queue_position + " in the queue" : "");
    set(card, "reward", fmt(run.reward));
    set(card, "kl", fmt(run.kl));
    set(card, "eval_step", run.eval_step === null || run.eval_step === undefined ? "–" : String(run.eval_step));
    set(card, "attempts", String(run.attempts));
    var log = set(card, "log", run.log.join("\n"));
    if (log) log.scrollTop = log.scrollHeight;
    set(card, "error", run.error);
    set(card, "traceback", run.traceback);
    show(card, "error-box", !!run.error);
    show(card, "traceback-box", !!run.traceback);
    show(card, "cancel", run.active && !run.stop_requested);
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        data.runs.forEach(update);
        var all = document.getElementById("cancel-all");
        if (all) all.hidden = !data.active;
        container.dataset.active = data.active ? "true" : "false";
        if (data.active) setTimeout(poll, INTERVAL_MS); // finished: nothing will change any more
      })
      .catch(function () { setTimeout(poll, INTERVAL_MS * 2); }); // a restart of the server: keep trying
  }

  poll();
})();
