// Refresh the Now picture about once a second while the page is visible (a new request each time; no caching),
// until session.js says the session has ended (the picture would only be the login page's redirect).
(function () {
  var img = document.getElementById("now");
  if (!img) { return; }
  var ended = document.getElementById("timeout-ended");
  setInterval(function () {
    if (!document.hidden && !(ended && !ended.hidden)) { img.src = "/now.jpg?t=" + Date.now(); }
  }, 1000);
})();
