// A job's page (a report import, a dataset upload): poll the job's state every second until it has ended,
// then link what it made or show why it failed. Text goes in with textContent (never HTML): messages quote
// the uploaded file.
(function () {
  "use strict";
  var card = document.getElementById("job");
  if (!card || card.dataset.finished === "1") return;
  var url = card.dataset.statusUrl;
  var INTERVAL_MS = 1000;

  function field(name) { return card.querySelector('[data-field="' + name + '"]'); }

  function update(job) {
    var state = field("state");
    state.textContent = job.state;
    state.className = "badge state " + job.state;
    field("phase").textContent = job.phase === job.state ? "" : job.phase;  // "done · done" says it once
    var bar = card.querySelector(".progress");
    bar.setAttribute("aria-valuenow", job.progress);
    bar.firstElementChild.style.width = job.progress + "%";
    var message = field("message");
    message.textContent = job.message;
    if (job.state === "failed") { message.className = "errors"; message.setAttribute("role", "alert"); }
    if (job.url) { field("link").setAttribute("href", job.url); field("result").hidden = false; }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (job) {
        update(job);
        if (!job.finished) setTimeout(poll, INTERVAL_MS);
      })
      .catch(function () { setTimeout(poll, INTERVAL_MS * 2); });
  }
  poll();
})();
