// Kiosk screen: follows /kiosk/{id}/events (Server-Sent Events) and swaps the content in place.
//
// The server sends the current view on every connect, then each new one. EventSource reconnects
// by itself after a dropped connection (the server asks for 2 s); if the browser gives up (an
// HTTP error, a proxy's 502 while the gateway restarts) the page opens a new stream itself,
// with jittered backoff from 1 s to 30 s. A restarted gateway counts versions from 1 again,
// so the first view after each (re)connect is shown whatever its version; after that, a view
// older than the one shown is ignored.
(function () {
  "use strict";
  var screen = document.getElementById("screen");
  var link = document.getElementById("link");
  var kiosk = screen.getAttribute("data-kiosk");
  var url = "/kiosk/" + encodeURIComponent(kiosk) + "/events";
  var pageLang = document.documentElement.getAttribute("lang") || "en";
  var MIN_RETRY_MS = 1000;
  var MAX_RETRY_MS = 30000;
  var retryMs = MIN_RETRY_MS;
  var source = null;
  var timer = null;
  var fresh = true;

  function status(text, className) {
    link.textContent = text;
    link.className = className;
  }

  function show(view) {
    screen.innerHTML = view.html;
    screen.setAttribute("data-version", String(view.version));
    screen.setAttribute("data-personal", view.personal ? "true" : "false");
    // The page speaks the language of what it shows.
    var card = screen.querySelector("[lang]");
    document.documentElement.setAttribute("lang", (card && card.getAttribute("lang")) || pageLang);
  }

  function schedule() {
    if (timer !== null) {
      return;
    }
    var delay = retryMs / 2 + Math.random() * (retryMs / 2);
    retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
    timer = window.setTimeout(connect, delay);
  }

  function connect() {
    timer = null;
    fresh = true;
    source = new EventSource(url);
    source.addEventListener("open", function () {
      fresh = true;
      retryMs = MIN_RETRY_MS;
      status("live", "link-up");
    });
    source.addEventListener("error", function (event) {
      status("reconnecting", "link-down");
      if (event.target.readyState === EventSource.CLOSED) {
        event.target.close();
        schedule();
      }
    });
    source.addEventListener("content", function (event) {
      var view = JSON.parse(event.data);
      if (!fresh && Number(view.version) < Number(screen.getAttribute("data-version"))) {
        return;
      }
      fresh = false;
      show(view);
    });
  }

  connect();
})();
