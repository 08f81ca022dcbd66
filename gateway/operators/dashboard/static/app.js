/* Dannaya dashboard: what every page shares. The pages work without it. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  document.querySelectorAll(".js-only[hidden]").forEach(function (el) { el.hidden = false; });
  document.querySelectorAll("[data-nojs]").forEach(function (el) { el.hidden = true; });
  var summary = document.querySelector("[data-focus]");
  if (summary) summary.focus();
  // A form marked data-once is sent once: a second click or Enter does nothing (the
  // server also deduplicates broadcasts by their idempotency key).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute("data-once")) return;
    if (form.getAttribute("data-sent")) { event.preventDefault(); return; }
    form.setAttribute("data-sent", "1");
    var button = form.querySelector("button[type=submit]");
    if (button) {
      button.setAttribute("aria-disabled", "true");
      if (button.getAttribute("data-busy")) button.textContent = button.getAttribute("data-busy");
    }
  });
})();
