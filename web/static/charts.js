// Metric charts of the run and compare pages. The data comes from the public GraphQL API
// (`metricHistory`, downsampled by the server so spikes survive), with the page's session and
// its CSRF value; uPlot draws one chart per metric key, every run overlaid. Drag across a chart
// to zoom in, double-click to zoom out. On a running run's page the charts grow live from the
// `runUpdates` subscription (graphql-transport-ws on /graphql, the same session).
(function () {
  "use strict";

  const POINTS = 500;
  // Distinguishable on light and dark backgrounds alike.
  const COLORS = ["#3b82f6", "#e4572e", "#17a589", "#a05cd5", "#d4a017", "#e05297", "#5d6d7e", "#2e86c1"];

  async function gql(csrf, query, variables) {
    const response = await fetch("/graphql", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify({ query: query, variables: variables }),
    });
    const body = await response.json();
    if (body.errors && body.errors.length) throw new Error(body.errors[0].message);
    return body.data;
  }

  // uPlot wants one x array shared by every series: the union of the runs' steps, each run
  // null where it has no point at that step.
  function aligned(runIds, byRun) {
    const steps = new Set();
    runIds.forEach(function (id) { (byRun[id] || []).forEach(function (p) { steps.add(p.step); }); });
    const xs = Array.from(steps).sort(function (a, b) { return a - b; });
    const index = new Map(xs.map(function (x, i) { return [x, i]; }));
    const data = [xs];
    runIds.forEach(function (id) {
      const ys = new Array(xs.length).fill(null);
      (byRun[id] || []).forEach(function (p) { ys[index.get(p.step)] = p.value; });
      data.push(ys);
    });
    return data;
  }

  function Chart(section, key, runIds, names) {
    const figure = document.createElement("figure");
    figure.className = "chart";
    const caption = document.createElement("figcaption");
    caption.textContent = key;
    const note = document.createElement("span");
    note.className = "muted chart-note";
    caption.appendChild(note);
    const plot = document.createElement("div");
    plot.setAttribute("role", "img");
    plot.setAttribute("aria-label", "Chart of " + key + " by step");
    figure.append(caption, plot);
    section.appendChild(figure);
    this.key = key;
    this.runIds = runIds;
    this.byRun = {};
    this.note = note;
    const series = [{ label: "step" }].concat(runIds.map(function (id, i) {
      return { label: names[i] || id, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true };
    }));
    this.plot = new uPlot({
      width: Math.max(260, plot.clientWidth || section.clientWidth),
      height: 220,
      scales: { x: { time: false } },
      series: series,
      axes: [{ stroke: "currentColor", grid: { stroke: "rgba(128,128,128,.2)" } },
             { stroke: "currentColor", grid: { stroke: "rgba(128,128,128,.2)" } }],
      cursor: { drag: { x: true, y: false } },
    }, aligned(runIds, {}), plot);
    this.container = plot;
    this.figure = figure;
  }

  // How many points the chart holds, on the figure for anyone inspecting the page.
  Chart.prototype.draw = function () {
    const byRun = this.byRun;
    this.figure.dataset.points = String(Object.keys(byRun).reduce(function (n, id) { return n + byRun[id].length; }, 0));
    this.plot.setData(aligned(this.runIds, byRun));
  };

  Chart.prototype.set = function (series) {
    const self = this;
    let downsampled = false;
    let total = 0;
    series.forEach(function (s) {
      self.byRun[s.runId] = s.points;
      downsampled = downsampled || s.downsampled;
      total += s.totalPoints;
    });
    this.note.textContent = downsampled ? " (" + total + " points, downsampled: spikes kept)" : "";
    this.draw();
  };

  Chart.prototype.append = function (runId, points) {
    const list = this.byRun[runId] || (this.byRun[runId] = []);
    points.forEach(function (p) { list.push(p); });
    list.sort(function (a, b) { return a.step - b.step; });
    this.draw();
  };

  Chart.prototype.resize = function () {
    this.plot.setSize({ width: Math.max(260, this.container.clientWidth), height: 220 });
  };

  async function load(section, charts, runIds, keys, csrf) {
    const data = await gql(csrf,
      "query($runs: [ID!]!, $keys: [String!]!, $points: Int) {" +
      " metricHistory(runIds: $runs, keys: $keys, maxPoints: $points) {" +
      "  runId key totalPoints downsampled points { step value } } }",
      { runs: runIds, keys: keys, points: Math.min(POINTS, Math.floor(50000 / (runIds.length * keys.length))) });
    const byKey = {};
    data.metricHistory.forEach(function (s) { (byKey[s.key] = byKey[s.key] || []).push(s); });
    keys.forEach(function (key) { charts[key].set(byKey[key] || []); });
  }

  // The running run's new points as they are logged, until it finishes.
  function follow(section, charts, runId, keys, csrf, names) {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql",
                             "graphql-transport-ws");
    ws.onopen = function () { ws.send(JSON.stringify({ type: "connection_init", payload: { csrf: csrf } })); };
    ws.onmessage = function (event) {
      const message = JSON.parse(event.data);
      if (message.type === "connection_ack") {
        ws.send(JSON.stringify({ id: "run", type: "subscribe", payload: {
          query: "subscription($id: ID!) { runUpdates(runId: $id) { truncated metrics { key value step } run { status } } }",
          variables: { id: runId } } }));
        section.dataset.following = "1";
      } else if (message.type === "ping") {
        ws.send(JSON.stringify({ type: "pong" }));
      } else if (message.type === "next" && message.payload.data) {
        const update = message.payload.data.runUpdates;
        if (update.truncated) {
          load(section, charts, [runId], keys, csrf).catch(function () {});
        }
        const byKey = {};
        update.metrics.forEach(function (m) { (byKey[m.key] = byKey[m.key] || []).push(m); });
        Object.keys(byKey).forEach(function (key) {
          if (!charts[key]) {
            charts[key] = new Chart(section, key, [runId], names);
            keys.push(key);
          }
          charts[key].append(runId, byKey[key]);
        });
        const status = document.getElementById("run-status");
        if (status && update.run.status !== status.textContent) status.textContent = update.run.status;
        if (update.run.status !== "RUNNING") ws.close();
      }
    };
  }

  function start() {
    const section = document.getElementById("charts");
    if (!section || typeof uPlot === "undefined") return;
    const runIds = JSON.parse(section.dataset.runs);
    const names = JSON.parse(section.dataset.names);
    const keys = JSON.parse(section.dataset.keys);
    const csrf = section.dataset.csrf;
    const charts = {};
    keys.forEach(function (key) { charts[key] = new Chart(section, key, runIds, names); });
    load(section, charts, runIds, keys, csrf).then(function () {
      section.dataset.loaded = "1";
    }, function (error) {
      const p = document.createElement("p");
      p.className = "deny";
      p.setAttribute("role", "alert");
      p.textContent = "The charts could not be loaded: " + error.message;
      section.prepend(p);
    });
    if (section.dataset.live) follow(section, charts, section.dataset.live, keys, csrf, names);
    let pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () { Object.values(charts).forEach(function (c) { c.resize(); }); }, 100);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
