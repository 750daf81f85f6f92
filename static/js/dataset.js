// Dataset page: draw the token-length histogram the server built (Plotly figure JSON).
(function () {
  "use strict";
  var node = document.getElementById("length-figure");
  var target = document.getElementById("length-histogram");
  if (!node || !target || !window.Plotly) return;
  var fig = JSON.parse(JSON.parse(node.textContent));
  Plotly.newPlot(target, fig.data, fig.layout, {displaylogo: false, responsive: true});
})();
