// Kiosk screen: follows /kiosk/{id}/events (Server-Sent Events) and swaps the content in place.
// EventSource reconnects by itself; the server sends the current content on every connect.
(function () {
  "use strict";
  var screen = document.getElementById("screen");
  var link = document.getElementById("link");
  var kiosk = screen.getAttribute("data-kiosk");
  var source = new EventSource("/kiosk/" + encodeURIComponent(kiosk) + "/events");
  source.addEventListener("open", function () {
    link.textContent = "live";
    link.className = "link-up";
  });
  source.addEventListener("error", function () {
    link.textContent = "reconnecting";
    link.className = "link-down";
  });
  source.addEventListener("content", function (event) {
    var view = JSON.parse(event.data);
    if (Number(view.version) < Number(screen.getAttribute("data-version"))) {
      return;
    }
    screen.innerHTML = view.html;
    screen.setAttribute("data-version", String(view.version));
    screen.setAttribute("data-personal", view.personal ? "true" : "false");
  });
})();
