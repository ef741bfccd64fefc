// The light or dark theme: the system's preference until the person picks one with the
// toggle, then theirs, remembered in this browser. Loaded in <head> without defer so the
// first paint already has the right colours (no flash, no layout shift).
(function () {
  "use strict";
  const KEY = "fastflow-theme";
  const root = document.documentElement;
  function stored() {
    try { return localStorage.getItem(KEY); } catch (e) { return null; }
  }
  function current() {
    return root.dataset.theme ||
      (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  }
  function label(button) {
    const next = current() === "dark" ? "light" : "dark";
    button.setAttribute("aria-label", "Switch to the " + next + " theme");
    button.title = "Switch to the " + next + " theme";
    button.textContent = current() === "dark" ? "☀" : "☾";
  }
  const chosen = stored();
  if (chosen === "light" || chosen === "dark") root.dataset.theme = chosen;
  document.addEventListener("DOMContentLoaded", function () {
    const button = document.getElementById("theme-toggle");
    if (!button) return;
    label(button);
    button.addEventListener("click", function () {
      root.dataset.theme = current() === "dark" ? "light" : "dark";
      try { localStorage.setItem(KEY, root.dataset.theme); } catch (e) { /* private mode */ }
      label(button);
    });
  });
})();
