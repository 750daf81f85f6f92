// Leaderboard: draw the Plotly figures the server built (JSON in <script type="application/json">),
// and re-show the page when a control changes.
(function () {
  "use strict";
  function draw() {
    if (!window.Plotly) return;
    document.querySelectorAll("[data-plotly-json]").forEach(function (div) {
      var source = document.getElementById(div.dataset.plotlyJson);
      if (!source) return;
      var fig = JSON.parse(source.textContent);
      window.Plotly.newPlot(div, fig.data, fig.layout, { displaylogo: false, responsive: true });
    });
  }
  var controls = document.getElementById("board-controls");
  if (controls) {
    controls.querySelectorAll("select").forEach(function (s) {
      s.addEventListener("change", function () { controls.submit(); });
    });
  }
  draw();
})();
