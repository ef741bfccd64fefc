// Graphs (chains, models): the server writes the nodes and edges as SVG (runs_app/graph.py);
// this lays them out with dagre (static/vendor/dagre, loaded only on pages that have a
// graph) and lets people zoom and move: buttons, Ctrl + wheel (a trackpad's pinch), dragging,
// and the keyboard (+, −, 0 to fit, arrows) on the focused graph.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const MOST_HEIGHT = () => Math.max(240, Math.round(window.innerHeight * 0.7));
  const READABLE = 0.6; // a fit smaller than this starts at full size instead
  let dagreLoading = null;

  function loadDagre(src) {
    if (window.dagre) return Promise.resolve();
    if (!dagreLoading) {
      dagreLoading = new Promise(function (resolve, reject) {
        const script = document.createElement("script");
        script.src = src;
        script.onload = resolve;
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return dagreLoading;
  }

  function layOut(svg) {
    const graph = new dagre.graphlib.Graph({ multigraph: true });
    graph.setGraph({ rankdir: "TB", nodesep: 36, ranksep: 64, edgesep: 16, marginx: 16, marginy: 16 });
    const nodes = svg.querySelectorAll(".graph-node");
    nodes.forEach(function (node) {
      const box = node.querySelector("rect");
      graph.setNode(node.dataset.node, { width: +box.getAttribute("width"), height: +box.getAttribute("height") });
    });
    const edges = Array.from(svg.querySelectorAll(".graph-edge"));
    edges.forEach(function (edge, index) {
      const text = edge.querySelector("text");
      const width = text.textContent ? text.getComputedTextLength() + 8 : 0;
      graph.setEdge(edge.dataset.source, edge.dataset.target,
        { width: width, height: width ? 14 : 0, labelpos: "c" }, "e" + index);
    });
    dagre.layout(graph);
    nodes.forEach(function (node) {
      const place = graph.node(node.dataset.node);
      node.setAttribute("transform", "translate(" + (place.x - place.width / 2) + " " + (place.y - place.height / 2) + ")");
    });
    edges.forEach(function (edge, index) {
      const route = graph.edge(edge.dataset.source, edge.dataset.target, "e" + index);
      edge.querySelector("path").setAttribute("d", curve(route.points));
      const text = edge.querySelector("text");
      if (route.x !== undefined) {
        text.setAttribute("x", route.x);
        text.setAttribute("y", route.y + 4);
        text.setAttribute("text-anchor", "middle");
      }
    });
    const size = graph.graph();
    return { width: size.width, height: size.height };
  }

  // Through dagre's points, bending smoothly at each one.
  function curve(points) {
    let d = "M " + points[0].x + " " + points[0].y;
    for (let i = 1; i < points.length - 1; i++) {
      const next = points[i + 1];
      const middle = i === points.length - 2 ? next : { x: (points[i].x + next.x) / 2, y: (points[i].y + next.y) / 2 };
      d += " Q " + points[i].x + " " + points[i].y + " " + middle.x + " " + middle.y;
    }
    if (points.length === 2) d += " L " + points[1].x + " " + points[1].y;
    return d;
  }

  function attach(figure) {
    if (figure.dataset.laidOut) return;
    figure.dataset.laidOut = "yes";
    const svg = figure.querySelector("svg");
    const size = layOut(svg);
    const view = { x: 0, y: 0, scale: 1 };
    svg.setAttribute("height", Math.min(size.height, MOST_HEIGHT()));

    function show() {
      const width = svg.clientWidth || size.width;
      const height = svg.clientHeight || size.height;
      svg.setAttribute("viewBox", [view.x, view.y, width / view.scale, height / view.scale].join(" "));
      figure.dataset.scale = view.scale.toFixed(2);
    }
    function fit(always) {
      const width = svg.clientWidth || size.width;
      const height = svg.clientHeight || size.height;
      const scale = Math.min(1, width / size.width, height / size.height);
      if (always || scale >= READABLE) {
        view.scale = scale;
        view.x = (size.width - width / scale) / 2;
        view.y = (size.height - height / scale) / 2;
      } else { // too many nodes to read at once: full size, from the top, in the middle
        view.scale = 1;
        view.x = (size.width - width) / 2;
        view.y = 0;
      }
      show();
    }
    function zoom(factor, atX, atY) {
      const width = svg.clientWidth, height = svg.clientHeight;
      const scale = Math.min(4, Math.max(0.1, view.scale * factor));
      const px = atX === undefined ? width / 2 : atX, py = atY === undefined ? height / 2 : atY;
      view.x += px / view.scale - px / scale;
      view.y += py / view.scale - py / scale;
      view.scale = scale;
      show();
    }
    function move(dx, dy) { // in screen pixels
      view.x -= dx / view.scale;
      view.y -= dy / view.scale;
      show();
    }

    figure.querySelectorAll("[data-zoom]").forEach(function (button) {
      button.addEventListener("click", function () {
        const how = button.dataset.zoom;
        if (how === "fit") fit(true); else zoom(how === "in" ? 1.25 : 0.8);
      });
    });
    svg.addEventListener("wheel", function (event) {
      if (!event.ctrlKey && !event.metaKey) return; // the page scrolls as usual
      event.preventDefault();
      const box = svg.getBoundingClientRect();
      zoom(Math.exp(-event.deltaY * 0.002), event.clientX - box.left, event.clientY - box.top);
    }, { passive: false });
    let drag = null;
    svg.addEventListener("pointerdown", function (event) {
      if (event.button !== 0) return;
      drag = { x: event.clientX, y: event.clientY, moved: false, id: event.pointerId };
    });
    svg.addEventListener("pointermove", function (event) {
      if (!drag || event.pointerId !== drag.id) return;
      const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      if (!drag.moved) { drag.moved = true; svg.setPointerCapture(event.pointerId); svg.classList.add("panning"); }
      move(dx, dy);
      drag.x = event.clientX;
      drag.y = event.clientY;
    });
    function endDrag(event) {
      if (!drag || event.pointerId !== drag.id) return;
      if (drag.moved) {
        svg.classList.remove("panning");
        // A drag that ends on a node is not a click on its link.
        svg.addEventListener("click", function (click) { click.preventDefault(); click.stopPropagation(); }, { capture: true, once: true });
        setTimeout(function () { drag = null; }, 0);
      } else {
        drag = null;
      }
    }
    svg.addEventListener("pointerup", endDrag);
    svg.addEventListener("pointercancel", endDrag);
    svg.addEventListener("keydown", function (event) {
      if (event.target !== svg) return; // a focused node link keeps its keys
      const step = 60;
      const keys = {
        "+": function () { zoom(1.25); }, "=": function () { zoom(1.25); },
        "-": function () { zoom(0.8); }, "0": function () { fit(true); },
        ArrowLeft: function () { move(step, 0); }, ArrowRight: function () { move(-step, 0); },
        ArrowUp: function () { move(0, step); }, ArrowDown: function () { move(0, -step); },
      };
      if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
    });
    window.addEventListener("resize", show);
    fit(false);
  }

  function start(root) {
    const figures = root.querySelectorAll ? root.querySelectorAll("[data-graph]:not([data-laid-out])") : [];
    if (!figures.length) return;
    loadDagre(figures[0].dataset.layoutScript).then(function () { figures.forEach(attach); });
  }
  document.addEventListener("DOMContentLoaded", function () { start(document); });
  document.addEventListener("htmx:load", function (event) { start(event.detail.elt); });
})();
