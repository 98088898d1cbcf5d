// The review desk's one script. Every page works without it; with it:
// - search by dropping a photo anywhere on the page;
// - keyboard shortcuts (the `?` key lists them): j/k move between the rows of a queue or
//   the tiles of the grid, and a key clicks the current row's button that carries it as
//   `data-key` (a approve, r relabel, x tick, n/s/d a pair, m/w a review photo), or the
//   page's button that carries it as `data-global-key` (u undo, A approve ticked);
// - "Select all on this page" ticks every row for a bulk decision.
(function () {
  "use strict";

  // --- drop a photo to search
  var form = document.getElementById("drop");
  var input = document.getElementById("drop-file");
  if (form && input) {
    input.addEventListener("change", function () { if (input.files.length) { form.submit(); } });
    document.addEventListener("dragover", function (e) {
      e.preventDefault();
      document.body.classList.add("dropping");
    });
    document.addEventListener("dragleave", function () { document.body.classList.remove("dropping"); });
    document.addEventListener("drop", function (e) {
      e.preventDefault();
      document.body.classList.remove("dropping");
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        form.submit();
      }
    });
  }

  // --- ticking rows for a bulk decision
  var ticks = Array.prototype.slice.call(document.querySelectorAll("input.tick"));
  var all = document.getElementById("select-all");
  var counter = document.getElementById("ticked");
  function recount() {
    var n = ticks.filter(function (t) { return t.checked; }).length;
    if (counter) { counter.textContent = n + " ticked"; }
    if (all) { all.checked = n > 0 && n === ticks.length; }
  }
  ticks.forEach(function (t) { t.addEventListener("change", recount); });
  if (all) {
    all.addEventListener("change", function () {
      ticks.forEach(function (t) { t.checked = all.checked; });
      recount();
    });
  }

  // --- keys
  var rows = Array.prototype.slice.call(document.querySelectorAll(".rows > .row"));
  var current = rows.length ? 0 : -1;
  var fixed = document.querySelector(".row.current");  // the item page's one decision
  function show(i) {
    if (!rows.length) { return; }
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (r, n) { r.classList.toggle("current", n === current); });
    rows[current].scrollIntoView({block: "nearest"});
  }
  if (rows.length) { show(0); }
  function row() { return rows.length ? rows[current] : fixed; }
  var keys = document.getElementById("keys");

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    var target = e.target;
    var typing = target && (target.tagName === "INPUT" && target.type !== "checkbox" ||
      target.tagName === "TEXTAREA" || target.tagName === "SELECT");
    if (typing) {
      // Enter on a row's label list relabels (r, pick a label, Enter)
      if (e.key === "Enter" && target.tagName === "SELECT" && target.dataset.key === "r") {
        e.preventDefault();
        var button = target.form && target.form.querySelector("button.relabel");
        if (button) { button.click(); }
      }
      return;
    }
    if (keys && keys.open) { return; }  // the dialog handles Escape itself
    var key = e.key;
    if (key === "?") { if (keys) { keys.showModal(); } e.preventDefault(); return; }
    if (key === "/") {
      var find = document.getElementById("find");
      if (find) { find.focus(); e.preventDefault(); }
      return;
    }
    if (key === "j" || key === "ArrowDown") { if (rows.length) { show(current + 1); e.preventDefault(); } return; }
    if (key === "k" || key === "ArrowUp") { if (rows.length) { show(current - 1); e.preventDefault(); } return; }
    var global = document.querySelector('[data-global-key="' + key + '"]');
    if (global) { e.preventDefault(); global.click(); return; }
    var here = row();
    if (!here) { return; }
    if (key === "o" || key === "Enter") {
      var link = here.querySelector("a.open");
      if (link) { e.preventDefault(); link.click(); }
      return;
    }
    var control = here.querySelector('[data-key="' + key + '"]');
    if (!control) { return; }
    e.preventDefault();
    if (control.tagName === "SELECT") { control.focus(); } else { control.click(); }
  });
})();
