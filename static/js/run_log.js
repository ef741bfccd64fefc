// The live log of a run: a websocket per page; lines so far, new lines, then the final
// status. Every line carries its sequence number: a reconnect asks for what came after the
// last one shown, so nothing is lost or shown twice. A module: it imports ansi_up (vendored).
import { AnsiUp } from "../vendor/ansi_up/ansi_up.js";

(function () {
  "use strict";
  const root = document.getElementById("live-log");
  if (!root) return;
  const linesBox = root.querySelector(".log-lines");
  const notice = root.querySelector(".log-notice");
  const state = root.querySelector(".log-state");
  const filterBox = root.querySelector(".log-filter");
  const timestampsBox = root.querySelector(".log-timestamps");
  const findBox = root.querySelector(".log-find");
  const findCount = root.querySelector(".log-search-count");
  const downloadUrl = document.getElementById("download-log")?.getAttribute("href");
  let lastSeq = 0;
  let finished = false;
  let socket = null;
  let attempts = 0;
  let skippedTotal = 0;
  let follow = true; // auto-scroll until the person scrolls up

  linesBox.addEventListener("scroll", function () {
    follow = linesBox.scrollTop + linesBox.clientHeight >= linesBox.scrollHeight - 4;
  });
  filterBox.addEventListener("input", applyFilter);
  timestampsBox.addEventListener("change", function () {
    root.classList.toggle("show-timestamps", timestampsBox.checked);
  });

  // A link to a line (#L120): the line is marked and shown when it arrives; following the
  // end stops, so the person reads what they were sent to.
  let linked = Number((location.hash.match(/^#L(\d+)$/) || [])[1]) || 0;
  if (linked) follow = false;
  function showLinked(row) {
    row.classList.add("linked");
    row.scrollIntoView({ block: "center" });
  }
  window.addEventListener("hashchange", function () {
    linesBox.querySelector(".linked")?.classList.remove("linked");
    linked = Number((location.hash.match(/^#L(\d+)$/) || [])[1]) || 0;
    const row = linked && document.getElementById("L" + linked);
    if (row) { follow = false; showLinked(row); }
  });

  // Find: every line with the text is marked; ↓/↑ (or Enter/Shift+Enter) go to the next or
  // previous one. Lines that arrive later join the matches.
  let found = [];
  let current = -1;
  function findNeedle() { return findBox.value.trim().toLowerCase(); }
  function isMatch(row) {
    const needle = findNeedle();
    return Boolean(needle) && holds(row, needle);
  }
  function countFound() {
    findCount.textContent = !findNeedle() ? "" :
      found.length ? (current + 1) + " of " + found.length : "no match";
  }
  function runFind() {
    for (const row of found) row.classList.remove("match", "current-match");
    found = Array.from(linesBox.children).filter(isMatch);
    for (const row of found) row.classList.add("match");
    current = -1;
    if (found.length) step(1); else countFound();
  }
  function step(by) {
    if (!found.length) return;
    found[current]?.classList.remove("current-match");
    current = (current + by + found.length) % found.length;
    const row = found[current];
    row.classList.add("current-match");
    if (row.hidden) { filterBox.value = ""; applyFilter(); }
    follow = false;
    row.scrollIntoView({ block: "center" });
    countFound();
  }
  findBox.addEventListener("input", runFind);
  findBox.addEventListener("keydown", function (event) {
    if (event.key === "Enter") { event.preventDefault(); step(event.shiftKey ? -1 : 1); }
  });
  root.querySelector(".log-find-next").addEventListener("click", function () { step(1); });
  root.querySelector(".log-find-previous").addEventListener("click", function () { step(-1); });

  // Terminal colours and styles (16 colours as classes that follow the theme, 256 and
  // true colours, bold, italic, underline; http(s) links) by ansi_up, which escapes the text
  // itself. It keeps the colour state from line to line, as a terminal does.
  const ansi = new AnsiUp();
  ansi.use_classes = true;
  function renderText(container, text) {
    container.innerHTML = ansi.ansi_to_html(text);
  }

  function addLine(line) {
    const [seq, timestamp, stream, text] = line;
    if (seq <= lastSeq) return; // already shown
    lastSeq = seq;
    const row = document.createElement("div");
    row.className = "log-line stream-" + stream;
    row.dataset.seq = seq;
    row.id = "L" + seq;
    const number = document.createElement("a");
    number.className = "log-number";
    number.href = "#L" + seq;
    number.textContent = seq;
    number.setAttribute("aria-label", "link to line " + seq);
    number.tabIndex = -1; // a mouse target; the keyboard has Find
    row.appendChild(number);
    const time = document.createElement("time");
    time.className = "log-time";
    time.dateTime = timestamp;
    time.textContent = new Date(timestamp.slice(0, 23) + "Z").toLocaleTimeString();
    row.appendChild(time);
    const body = document.createElement("span");
    body.className = "log-text";
    if (stream === "S") body.textContent = "▸ " + text;
    else renderText(body, text);
    row.appendChild(body);
    if (!matches(row)) row.hidden = true;
    linesBox.appendChild(row);
    if (seq === linked) showLinked(row);
    if (isMatch(row)) {
      row.classList.add("match");
      found.push(row);
      countFound();
    }
  }

  // Whether a line's text (not its number or time) holds a lower-case needle.
  function holds(row, needle) {
    return row.querySelector(".log-text").textContent.toLowerCase().includes(needle);
  }
  function matches(row) {
    const needle = filterBox.value.trim().toLowerCase();
    return !needle || holds(row, needle);
  }
  function applyFilter() {
    for (const row of linesBox.children) row.hidden = !matches(row);
  }

  function showSkipped(count) {
    skippedTotal += count;
    notice.hidden = false;
    notice.textContent = "";
    notice.append(skippedTotal + " lines were skipped to keep up (the log file has them all). ");
    if (downloadUrl) {
      const link = document.createElement("a");
      link.href = downloadUrl;
      link.textContent = "Download the full log";
      notice.append(link);
    }
  }

  function handle(message) {
    if (message.type === "lines") {
      message.lines.forEach(addLine);
      if (follow) linesBox.scrollTop = linesBox.scrollHeight;
    } else if (message.type === "skipped") {
      showSkipped(message.count);
      lastSeq = Math.max(lastSeq, message.through);
    } else if (message.type === "limits") {
      limits = message;
    } else if (message.type === "metrics") {
      samples.push(...message.samples);
      drawMetrics();
    } else if (message.type === "status") {
      const changed = root.dataset.status !== message.status;
      root.dataset.status = message.status;
      if (message.finished) {
        finished = true;
        state.textContent = "finished: " + message.label;
        refreshSummary();
      } else if (changed) {
        refreshSummary(); // e.g. waiting for a worker → running
      }
    }
  }

  // Live CPU and memory over the whole run, with the soft and hard limits, drawn by uPlot
  // (vendored): a time axis, the values under the pointer, drag to zoom. Canvas colours come
  // from the theme's tokens, so a theme change draws them again.
  const metricsBox = document.getElementById("live-metrics");
  const samples = [];
  let limits = {};
  const charts = {};
  const MIB = 1024 * 1024;
  const CHARTS = {
    cpu: { value: (s) => (s.cpu == null ? null : s.cpu / 100), unit: (v) => +v.toFixed(2) + (+v.toFixed(2) === 1 ? " core" : " cores"),
      soft: () => limits.cpu_soft, hard: () => limits.cpu_hard },
    mem: { value: (s) => (s.mem == null ? null : s.mem / MIB),
      unit: (v) => (v >= 1024 ? +(v / 1024).toFixed(1) + " GiB" : v.toFixed(0) + " MiB"),
      soft: () => limits.mem_soft && limits.mem_soft / MIB, hard: () => limits.mem_hard && limits.mem_hard / MIB },
  };
  // A token's colour as the canvas needs it (the stylesheet's light-dark() resolved).
  const probe = document.createElement("span");
  probe.hidden = true;
  metricsBox.appendChild(probe);
  function token(name) {
    probe.style.color = "var(" + name + ")";
    return getComputedStyle(probe).color;
  }
  function chartData(name) {
    const spec = CHARTS[name];
    const times = samples.map((s) => Date.parse(s.t.slice(0, 23) + "Z") / 1000);
    const soft = spec.soft() || null, hard = spec.hard() || null;
    return [times, samples.map(spec.value), times.map(() => soft), times.map(() => hard)];
  }
  // With its first sample alone a run's time axis spanned years (uPlot widens a single time
  // to "a day" counted in its ms units: 86,400,000 s): ten seconds from it instead.
  function oneSampleWide(u, min, max) {
    const times = u.data[0];
    return times.length && times[0] === times[times.length - 1] ? [times[0], times[0] + 10] : [min, max];
  }
  function makeChart(name) {
    const box = metricsBox.querySelector('[data-chart="' + name + '"]');
    const spec = CHARTS[name];
    const value = (u, v) => (v == null ? "—" : spec.unit(v));
    const axis = { stroke: token("--muted"), grid: { stroke: token("--line"), width: 1 }, ticks: { stroke: token("--line") } };
    box.replaceChildren();
    return new uPlot({
      width: Math.max(200, box.clientWidth), height: 150,
      scales: { x: { time: true, range: oneSampleWide }, y: { range: (u, min, max) => [0, Math.max(max || 0, 0.01) * 1.1] } },
      axes: [axis, { ...axis, size: 72, values: (u, ticks) => ticks.map(spec.unit) }],
      series: [
        {},
        { label: name === "cpu" ? "CPU" : "memory", stroke: token("--accent"), fill: token("--accent-soft"), width: 1.5, value: value },
        { label: "soft limit", stroke: token("--warn"), dash: [4, 4], width: 1, points: { show: false }, value: value },
        { label: "hard limit", stroke: token("--bad"), dash: [2, 3], width: 1, points: { show: false }, value: value },
      ],
    }, chartData(name), box);
  }
  function drawMetrics() {
    metricsBox.hidden = false; // uPlot is loaded: its deferred script runs before this module
    for (const name of Object.keys(CHARTS)) {
      if (!charts[name]) charts[name] = makeChart(name);
      else charts[name].setData(chartData(name));
      const last = samples.length ? CHARTS[name].value(samples[samples.length - 1]) : null;
      metricsBox.querySelector('[data-chart-value="' + name + '"]').textContent =
        last == null ? "" : CHARTS[name].unit(last);
    }
  }
  function redrawCharts() { // a new theme or width: made again with its colours and size
    for (const name of Object.keys(charts)) { charts[name].destroy(); delete charts[name]; }
    if (samples.length) drawMetrics();
  }
  new MutationObserver(redrawCharts).observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redrawCharts);
  let resizing = null;
  window.addEventListener("resize", function () { clearTimeout(resizing); resizing = setTimeout(redrawCharts, 150); });

  function refreshSummary() {
    const url = root.dataset.summaryUrl;
    if (window.htmx) {
      window.htmx.ajax("GET", url, { target: "#run-summary", swap: "outerHTML" });
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + root.dataset.wsUrl + "?after=" + lastSeq);
    window.fastflowLog.socket = socket;
    socket.onopen = function () {
      attempts = 0;
      state.textContent = finished ? state.textContent : "live";
    };
    socket.onmessage = function (event) { handle(JSON.parse(event.data)); };
    socket.onclose = function () {
      if (finished) return;
      attempts += 1;
      state.textContent = "reconnecting…";
      setTimeout(connect, Math.min(5000, 250 * attempts));
    };
  }

  window.fastflowLog = { socket: null, lastSeq: function () { return lastSeq; } };
  connect();
})();
