// Printing opens every collapsed section, so the paper copy holds every criterion.
"use strict";
window.addEventListener("beforeprint", function () {
  document.querySelectorAll("details").forEach(function (d) { d.setAttribute("open", ""); });
});
