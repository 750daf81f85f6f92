// A trial's page (templates/experiments/trial_detail.html): poll its status every second until every
// model has answered, and show each answer as text (textContent, never HTML: it is model output).
(function () {
  "use strict";
  var root = document.getElementById("trial");
  if (!root) return;
  var INTERVAL_MS = 1000;

  function set(card, field, text) {
    var node = card.querySelector('[data-field="' + field + '"]');
    if (node && node.textContent !== text) node.textContent = text;
    return node;
  }

  function update(a) {
    var card = root.querySelector('[data-answer="' + a.id + '"]');
    if (!card) return;
    card.dataset.state = a.state;
    var badge = set(card, "state", a.state);
    badge.className = "badge state " + a.state;
    set(card, "text", a.text);
    set(card, "error", a.error).hidden = !a.error;
    set(card, "seconds", a.seconds === null ? "" : Number(a.seconds).toFixed(1) + " s");
  }

  function poll() {
    fetch(root.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        data.answers.forEach(update);
        root.dataset.active = data.active ? "true" : "false";
        document.getElementById("live").hidden = !data.active;
        if (data.active) setTimeout(poll, INTERVAL_MS);
      })
      .catch(function () { setTimeout(poll, INTERVAL_MS * 3); });
  }

  if (root.dataset.active === "true") poll();
})();
