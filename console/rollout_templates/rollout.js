// Draws every chart of a Rollout page: each <script type="application/json" class="mes-chart">
// holds a plotly figure for the element named by its data-target (plotly.js is served beside).
(function () {
  "use strict";
  document.querySelectorAll("script.mes-chart").forEach(function (node) {
    var figure = JSON.parse(node.textContent);
    var target = document.getElementById(node.getAttribute("data-target"));
    if (target && window.Plotly) {
      window.Plotly.newPlot(target, figure.data, figure.layout, { displaylogo: false, responsive: true });
    }
  });
})();
