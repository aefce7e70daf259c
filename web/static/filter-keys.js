// Completes keys in the runs table's filter box: typing `metrics.a` offers the project's keys
// that start so (the page's `run-keys` list, from the API's `Project.runKeys`). Arrow keys move
// through the offers, Enter or Tab takes one, Escape closes; a click takes one too.
(function () {
  "use strict";
  const MAX_OFFERS = 8;

  function start() {
    const input = document.getElementById("filter");
    const box = document.getElementById("filter-suggestions");
    const list = document.getElementById("run-keys");
    if (!input || !box || !list) return;
    const keys = Array.from(list.options).map(function (o) { return o.value; });
    let offers = [];
    let active = -1;

    // The word being typed: from the last space or bracket before the caret to the caret.
    function word() {
      const upto = input.value.slice(0, input.selectionStart);
      const start = Math.max(upto.lastIndexOf(" "), upto.lastIndexOf("("), upto.lastIndexOf(",")) + 1;
      return { start: start, text: upto.slice(start) };
    }

    function close() {
      box.hidden = true;
      box.textContent = "";
      offers = [];
      active = -1;
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
    }

    function highlight(i) {
      active = i;
      Array.from(box.children).forEach(function (li, j) { li.setAttribute("aria-selected", String(j === i)); });
      if (i >= 0) input.setAttribute("aria-activedescendant", "filter-offer-" + i);
    }

    function take(i) {
      const w = word();
      const before = input.value.slice(0, w.start);
      const after = input.value.slice(input.selectionStart);
      input.value = before + offers[i] + " " + after.replace(/^\S*/, "").replace(/^ /, "");
      const caret = before.length + offers[i].length + 1;
      input.setSelectionRange(caret, caret);
      close();
      input.focus();
    }

    input.addEventListener("input", function () {
      const text = word().text.toLowerCase();
      close();
      if (!text) return;
      offers = keys.filter(function (k) { return k.toLowerCase().startsWith(text) && k.toLowerCase() !== text; })
                   .slice(0, MAX_OFFERS);
      if (!offers.length) return;
      offers.forEach(function (key, i) {
        const li = document.createElement("li");
        li.id = "filter-offer-" + i;
        li.setAttribute("role", "option");
        li.textContent = key;
        li.addEventListener("mousedown", function (event) { event.preventDefault(); take(i); });
        box.appendChild(li);
      });
      box.hidden = false;
      input.setAttribute("aria-expanded", "true");
    });

    input.addEventListener("keydown", function (event) {
      if (box.hidden) return;
      if (event.key === "ArrowDown") {
        event.preventDefault();
        highlight((active + 1) % offers.length);
      } else if (event.key === "ArrowUp") {
        event.preventDefault();
        highlight((active - 1 + offers.length) % offers.length);
      } else if ((event.key === "Enter" || event.key === "Tab") && active >= 0) {
        event.preventDefault();
        take(active);
      } else if (event.key === "Escape") {
        close();
      }
    });
    input.addEventListener("blur", close);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
