// Rating page: fetch an item (prompt, two completions, an opaque token), vote with buttons or keys 1-4,
// then show who wrote which side. Model text goes into the page with textContent only, never as HTML.
(function () {
  "use strict";
  var root = document.getElementById("arena");
  if (!root) return;
  var csrf = root.querySelector("[name=csrfmiddlewaretoken]").value;
  var el = function (id) { return document.getElementById(id); };
  var promptEl = el("prompt"), textA = el("text-a"), textB = el("text-b");
  var revealA = el("reveal-a"), revealB = el("reveal-b");
  var sideA = el("side-a"), sideB = el("side-b");
  var statusEl = el("status"), progressEl = el("progress");
  var skipBtn = el("skip"), nextBtn = el("next");
  var voteButtons = Array.prototype.slice.call(root.querySelectorAll("[data-outcome]"));
  var KEYS = { "1": "a", "2": "b", "3": "tie", "4": "both_bad" };
  var token = null;

  function setState(state) {
    root.dataset.state = state;  // loading | ready | sending | revealed | done
    var ready = state === "ready";
    voteButtons.forEach(function (b) { b.disabled = !ready; });
    skipBtn.disabled = !ready;
    nextBtn.hidden = state !== "revealed";
  }

  function setProgress(p) {
    if (!p) return;
    progressEl.textContent = "You have rated " + p.mine + " of " + p.items + " items · " + p.all + " votes by all raters";
  }

  function clearReveal() {
    // Emptied, not just hidden: before a vote the page holds nothing about who wrote what.
    [revealA, revealB].forEach(function (r) { r.textContent = ""; r.hidden = true; });
    [sideA, sideB].forEach(function (s) { s.classList.remove("winner", "loser", "both-bad"); });
    voteButtons.forEach(function (b) { b.classList.remove("chosen"); });
  }

  function load() {
    setState("loading");
    token = null;
    clearReveal();
    statusEl.textContent = "Loading…";
    fetch(root.dataset.nextUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (data) {
        setProgress(data.progress);
        if (data.done) {
          promptEl.textContent = "";
          textA.textContent = "";
          textB.textContent = "";
          statusEl.textContent = data.reason;
          if (data.reveals && data.reveals.length) showReveals(data.reveals);
          setState("done");
          return;
        }
        token = data.token;
        promptEl.textContent = data.prompt;
        textA.textContent = data.a;
        textB.textContent = data.b;
        statusEl.textContent = "";
        setState("ready");
      })
      .catch(function (err) { statusEl.textContent = "Could not load the next pair (" + err.message + "). Reload the page."; });
  }

  // Reveals held back by the owner until the rater is done: who wrote what, for each of their votes.
  function showReveals(reveals) {
    var list = document.createElement("ol");
    list.className = "held-reveals small";
    reveals.forEach(function (r) {
      var li = document.createElement("li");
      var verdict = {first: r.first + " preferred", second: r.second + " preferred", tie: "tie", both_bad: "both bad"}[r.result];
      li.textContent = "Prompt " + r.prompt_id + ": " + r.first + " vs " + r.second + " — your vote: " + verdict;
      list.appendChild(li);
    });
    statusEl.parentNode.insertBefore(list, statusEl.nextSibling);
  }

  function fmt(x) { return x === null || x === undefined ? "" : " · reward " + Number(x).toFixed(3); }

  function vote(outcome) {
    if (root.dataset.state !== "ready" || !token) return;
    setState("sending");
    statusEl.textContent = "Saving…";
    var chosen = voteButtons.filter(function (b) { return b.dataset.outcome === outcome; })[0];
    if (chosen) chosen.classList.add("chosen");
    fetch(root.dataset.voteUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: new URLSearchParams({ token: token, outcome: outcome }).toString()
    })
      .then(function (r) {
        return r.json().then(function (data) { return { status: r.status, data: data }; });
      })
      .then(function (res) {
        if (res.status === 409) { load(); return; }
        if (res.status !== 200) throw new Error(res.data.error || "HTTP " + res.status);
        var data = res.data;
        if (data.reveal) {  // null while the owner holds reveals back until the rater is done
          revealA.textContent = data.reveal.a.label + fmt(data.reveal.a.reward);
          revealB.textContent = data.reveal.b.label + fmt(data.reveal.b.reward);
          revealA.hidden = revealB.hidden = false;
        }
        if (outcome === "a") { sideA.classList.add("winner"); sideB.classList.add("loser"); }
        if (outcome === "b") { sideB.classList.add("winner"); sideA.classList.add("loser"); }
        if (outcome === "both_bad") { sideA.classList.add("both-bad"); sideB.classList.add("both-bad"); }
        setProgress(data.progress);
        statusEl.textContent = "Vote saved. Press Enter for the next pair.";
        setState("revealed");
        nextBtn.focus();
      })
      .catch(function (err) {
        statusEl.textContent = "Your vote was not saved (" + err.message + "). Try again.";
        if (chosen) chosen.classList.remove("chosen");
        setState("ready");
      });
  }

  voteButtons.forEach(function (b) { b.addEventListener("click", function () { vote(b.dataset.outcome); }); });
  skipBtn.addEventListener("click", function () { if (root.dataset.state === "ready") load(); });
  nextBtn.addEventListener("click", function () { if (root.dataset.state === "revealed") load(); });
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey || e.repeat) return;
    var tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
    var state = root.dataset.state;
    if (KEYS[e.key] && state === "ready") { e.preventDefault(); vote(KEYS[e.key]); }
    else if ((e.key === "s" || e.key === "S") && state === "ready") { e.preventDefault(); load(); }
    else if ((e.key === "Enter" || e.key === "n" || e.key === "N" || e.key === "ArrowRight") && state === "revealed") {
      e.preventDefault();
      load();
    }
  });
  load();
})();
