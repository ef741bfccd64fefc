// Messages as toasts: Django's messages (rendered by base.html) and what HTMX requests
// answer when they fail — a person always hears that a click did not work, and why.
(function () {
  "use strict";
  function closable(toast) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "toast-close";
    button.setAttribute("aria-label", "Dismiss");
    button.textContent = "×";
    button.addEventListener("click", function () { toast.remove(); });
    toast.appendChild(button);
  }
  function box() {
    let list = document.getElementById("toasts");
    if (!list) {
      list = document.createElement("ul");
      list.id = "toasts";
      list.className = "toasts";
      list.setAttribute("role", "status");
      document.body.appendChild(list);
    }
    return list;
  }
  window.fastflowToast = function (text, kind) {
    const toast = document.createElement("li");
    toast.className = "toast " + (kind || "");
    const words = document.createElement("span");
    words.textContent = text;
    toast.appendChild(words);
    closable(toast);
    box().appendChild(toast);
  };
  document.addEventListener("DOMContentLoaded", function () {
    for (const toast of document.querySelectorAll("#toasts > li")) closable(toast);
  });
  document.addEventListener("htmx:responseError", function (event) {
    const status = event.detail.xhr.status;
    const said = status === 403 ? "You may not do that." :
      status === 503 ? "The server is back in a moment; try again." :
      "That did not work (the server answered " + status + ").";
    window.fastflowToast(said, "error");
  });
  document.addEventListener("htmx:sendError", function () {
    window.fastflowToast("The server cannot be reached; try again in a moment.", "error");
  });
})();
