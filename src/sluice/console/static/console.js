// Sluice console: the only script (no inline scripts; the CSP forbids them).
// Part of Sluice (MIT licence, see pyproject.toml); no third-party code.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Forms that destroy or change something ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });
  // Copy buttons: the text of the element named by data-copy.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) { return; }
      var text = source.textContent.trim();
      var done = function () {
        var note = button.parentNode.querySelector(".copied");
        if (note) { note.hidden = false; }
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () {});
      } else {
        var range = document.createRange();
        range.selectNodeContents(source);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected */ }
      }
    });
  });
});
