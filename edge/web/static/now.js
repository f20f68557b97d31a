// Refresh the Now picture about once a second while the page is visible (a new request each time; no caching).
(function () {
  var img = document.getElementById("now");
  if (!img) { return; }
  setInterval(function () {
    if (!document.hidden) { img.src = "/now.jpg?t=" + Date.now(); }
  }, 1000);
})();
