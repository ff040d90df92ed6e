// Charts from the JSON beside each chart element (no inline script: the CSP allows none).
(function () {
  "use strict";
  var palette = ["#1f5fa8", "#b3261e", "#1d7a46", "#9a6a00", "#6a3fa0", "#00838f", "#c2185b", "#546e7a"];
  var fixed = { allow: "#1d7a46", deny: "#b3261e" };

  function draw(element) {
    var source = document.getElementById(element.dataset.chart + "-data");
    if (!source || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(source.textContent);
    var names = Object.keys(data.series);
    var series = [{}];
    var columns = [data.x];
    names.forEach(function (name, i) {
      var colour = fixed[name] || palette[i % palette.length];
      series.push({ label: name.replace(/_/g, " "), stroke: colour, fill: colour + "22", width: 2 });
      columns.push(data.series[name]);
    });
    if (!names.length) {
      element.textContent = "Nothing in this range.";
      return;
    }
    var width = Math.max(element.clientWidth - 16, 320);
    var plot = new uPlot({
      title: element.dataset.title,
      width: width,
      height: 240,
      series: series,
      axes: [{}, { label: "count" }],
      scales: { x: { time: true } },
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }
    }, columns, element);
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(element.clientWidth - 16, 320), height: 240 });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chart]").forEach(draw);
  });
})();
