// Search by dropping a photo anywhere on the page: the dropped file goes into the search
// form's file input and the form is submitted, as if it had been chosen by hand.
(function () {
  "use strict";
  var form = document.getElementById("drop");
  var input = document.getElementById("drop-file");
  if (!form || !input) { return; }
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
})();
