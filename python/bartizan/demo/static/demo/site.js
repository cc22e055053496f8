// Leaves a mark a test can read to tell the script was served and ran.
document.addEventListener("DOMContentLoaded", function () {
  document.body.dataset.js = "loaded";
});
