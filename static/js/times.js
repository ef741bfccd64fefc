// Times are rendered relative ("3 minutes ago") by the server; the exact moment is shown in
// the person's own time zone on hover (and to screen readers through the title).
(function () {
  "use strict";
  function localise(root) {
    for (const element of root.querySelectorAll("time[datetime]")) {
      const moment = new Date(element.getAttribute("datetime"));
      if (!isNaN(moment)) element.title = moment.toLocaleString();
    }
  }
  document.addEventListener("DOMContentLoaded", function () { localise(document); });
  document.addEventListener("htmx:afterSwap", function (event) { localise(event.target); });
})();
