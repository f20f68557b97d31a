// Warn before the session times out and let the person stay logged in (WCAG 2.2.1); say so when it has ended.
// The server's numbers come from the page (data-*) and from GET /session, which does not count as activity.
// "Stay logged in" posts the form's CSRF token to /session/extend (204). Nothing here is needed without JavaScript:
// the footer says the limits in words, and a decision sent after the timeout keeps its ticked clips.
(function () {
  "use strict";
  var box = document.getElementById("timeout");
  if (!box || !window.fetch) { return; }
  var warn = Number(box.dataset.warn) * 1000;
  var text = document.getElementById("timeout-text");
  var form = document.getElementById("timeout-extend");
  var ok = document.getElementById("timeout-ok");
  var ended = document.getElementById("timeout-ended");
  var idleEnd = 0, absEnd = 0, timer = null, ticker = null, before = null, over = false;

  function words(ms) {
    var s = Math.max(0, Math.round(ms / 1000)), m = Math.floor(s / 60);
    s = s % 60;
    var out = [];
    if (m) { out.push(m + (m === 1 ? " minute" : " minutes")); }
    if (s || !m) { out.push(s + (s === 1 ? " second" : " seconds")); }
    return out.join(" ");
  }

  // Until the warning is due, wait; once it is, show it (the ticker counts down and asks again at the end).
  function schedule(idleLeft, absLeft) {
    var now = Date.now();
    idleEnd = now + idleLeft * 1000;
    absEnd = now + absLeft * 1000;
    clearTimeout(timer);
    var wait = Math.min(idleEnd, absEnd) - warn - now;
    if (wait > 1000) { hide(); timer = setTimeout(check, wait); } else { show(); }
  }

  // Ask the server before warning: another tab may have kept the session alive meanwhile.
  function check() {
    if (over) { return; }
    fetch("/session", {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      return r.status === 200 ? r.json() : {live: false};
    }).then(function (s) {
      if (s.live) { schedule(s.idle_left, s.absolute_left); } else { showEnded(); }
    }, function () { show(); });  // no answer: warn on our own estimate
  }

  function update() {
    var now = Date.now(), end = Math.min(idleEnd, absEnd);
    if (now >= end) { clearInterval(ticker); check(); return; }
    if (absEnd <= idleEnd) {
      text.textContent = "You will be logged out in " + words(end - now) +
        ": a session lasts at most its time limit. Log in again afterwards to carry on.";
    } else {
      text.textContent = "You will be logged out in " + words(end - now) +
        " because nothing was done on this page. Choose \u201cStay logged in\u201d to carry on.";
    }
  }

  function show() {
    var extendable = idleEnd < absEnd;
    form.hidden = !extendable;
    ok.hidden = extendable;
    ended.hidden = true;
    update();
    clearInterval(ticker);
    ticker = setInterval(update, 1000);
    if (box.hidden) {
      before = document.activeElement;
      box.hidden = false;
      (extendable ? form.querySelector("button") : ok).focus();
    }
  }

  function hide() {
    clearInterval(ticker);
    if (box.hidden) { return; }
    box.hidden = true;
    if (before && before.focus) { before.focus(); }
  }

  function showEnded() {
    over = true;
    clearInterval(ticker);
    clearTimeout(timer);
    form.hidden = true;
    ok.hidden = true;
    text.textContent = "You have been logged out. What you typed on this page is still here; a decision you send " +
      "now keeps the clips you ticked, and you log in again.";
    var link = ended.querySelector("a");
    link.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    ended.hidden = false;
    if (box.hidden) { before = document.activeElement; box.hidden = false; }
    link.focus();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    fetch(form.action, {method: "POST", credentials: "same-origin",
                        body: new URLSearchParams(new FormData(form))}).then(function (r) {
      if (r.status === 204) { hide(); check(); } else { showEnded(); }
    }, function () { update(); });
  });
  ok.addEventListener("click", hide);
  document.addEventListener("visibilitychange", function () {
    // timers sleep in a hidden tab: look again when it comes back
    if (!document.hidden && Date.now() >= Math.min(idleEnd, absEnd) - warn) { check(); }
  });
  var idle0 = Number(box.dataset.idleLeft), abs0 = Number(box.dataset.absoluteLeft);
  idleEnd = Date.now() + idle0 * 1000;
  absEnd = Date.now() + abs0 * 1000;
  timer = setTimeout(check, Math.max(0, Math.min(idleEnd, absEnd) - warn - Date.now()));
})();
