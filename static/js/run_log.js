// The live log of a run: a websocket per page; lines so far, new lines, then the final
// status. Every line carries its sequence number: a reconnect asks for what came after the
// last one shown, so nothing is lost or shown twice.
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

  // ANSI SGR colours → classes; everything else is text (never HTML).
  const ANSI = /\x1b\[([0-9;]*)m/g;
  function renderText(container, text) {
    let classes = [];
    let index = 0;
    let match;
    ANSI.lastIndex = 0;
    while ((match = ANSI.exec(text)) !== null) {
      appendSpan(container, text.slice(index, match.index), classes);
      index = ANSI.lastIndex;
      const codes = match[1] === "" ? [0] : match[1].split(";").map(Number);
      for (const code of codes) {
        if (code === 0) classes = [];
        else if (code === 1) classes.push("ansi-bold");
        else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) {
          classes = classes.filter((c) => !c.startsWith("ansi-fg")).concat("ansi-fg-" + code);
        } else if (code === 39) classes = classes.filter((c) => !c.startsWith("ansi-fg"));
      }
    }
    appendSpan(container, text.slice(index), classes);
  }
  function appendSpan(container, text, classes) {
    if (!text) return;
    if (!classes.length) { container.appendChild(document.createTextNode(text)); return; }
    const span = document.createElement("span");
    span.className = classes.join(" ");
    span.textContent = text;
    container.appendChild(span);
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

  // Live CPU and memory: the last two minutes, with the soft and hard limits drawn.
  const metricsBox = document.getElementById("live-metrics");
  const samples = [];
  let limits = {};
  const SVG = "http://www.w3.org/2000/svg";
  function drawChart(name, values, soft, hard, format) {
    const svg = metricsBox.querySelector('[data-chart="' + name + '"]');
    const top = Math.max(1, hard || 0, soft || 0, ...values.filter((v) => v != null)) * 1.1;
    svg.replaceChildren();
    const y = (v) => 60 - (v / top) * 60;
    const points = values
      .map((v, i) => (v == null ? null : (i * 300) / Math.max(1, values.length - 1) + "," + y(v)))
      .filter(Boolean);
    if (points.length) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", points.join(" "));
      line.setAttribute("class", "chart-line");
      svg.appendChild(line);
    }
    for (const [limit, kind] of [[soft, "soft"], [hard, "hard"]]) {
      if (!limit) continue;
      const rule = document.createElementNS(SVG, "line");
      rule.setAttribute("x1", 0); rule.setAttribute("x2", 300);
      rule.setAttribute("y1", y(limit)); rule.setAttribute("y2", y(limit));
      rule.setAttribute("class", "chart-limit chart-" + kind);
      svg.appendChild(rule);
    }
    const last = values[values.length - 1];
    metricsBox.querySelector('[data-chart-value="' + name + '"]').textContent =
      last == null ? "" : format(last);
  }
  function drawMetrics() {
    metricsBox.hidden = false;
    const recent = samples.slice(-120);
    drawChart("cpu", recent.map((s) => (s.cpu == null ? null : s.cpu / 100)),
      limits.cpu_soft, limits.cpu_hard, (v) => v.toFixed(2) + " cores");
    const mib = 1024 * 1024;
    drawChart("mem", recent.map((s) => (s.mem == null ? null : s.mem / mib)),
      limits.mem_soft && limits.mem_soft / mib, limits.mem_hard && limits.mem_hard / mib,
      (v) => v.toFixed(0) + " MiB");
  }

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
