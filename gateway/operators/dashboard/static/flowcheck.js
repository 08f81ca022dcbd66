/* Flow editor: checks and previews the draft as one types. 400 ms after the last keystroke
   the editor's form (CSRF token included) goes to its data-live-check URL, which runs the
   same check as the "Vérifier et prévisualiser" button and answers an HTML fragment; each
   [data-check] part of it replaces the page's part of the same name (the problems, the
   phone screens, the count read out by the aria-live region). Without this script the
   button does the same by a round trip. */
(function () {
  "use strict";
  var form = document.querySelector("form[data-live-check]");
  if (!form || !window.fetch || !window.URLSearchParams) return;
  var url = form.getAttribute("data-live-check");
  var timer = null, asked = 0, controller = null;

  function swap(html) {
    var holder = document.createElement("template");
    holder.innerHTML = html;
    holder.content.querySelectorAll("[data-check]").forEach(function (part) {
      var place = document.querySelector('[data-check="' + part.getAttribute("data-check") + '"]');
      if (place) place.replaceChildren.apply(place, Array.from(part.childNodes));
    });
  }

  function check() {
    var mine = ++asked;
    if (controller) controller.abort();
    controller = window.AbortController ? new AbortController() : null;
    fetch(url, {
      method: "POST", credentials: "same-origin", redirect: "manual",
      body: new URLSearchParams(new FormData(form)),
      signal: controller ? controller.signal : undefined
    }).then(function (response) {
      // A refusal or a redirect to sign in: leave the page as it is (the button still works).
      if (!response.ok || response.type === "opaqueredirect") return null;
      return response.text();
    }).then(function (html) {
      if (html !== null && mine === asked) swap(html);
    }).catch(function () { /* aborted or offline: the next keystroke tries again */ });
  }

  form.addEventListener("input", function () {
    if (timer) clearTimeout(timer);
    timer = setTimeout(check, 400);
  });
})();
