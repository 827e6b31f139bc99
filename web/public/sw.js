// The app's service worker: it caches the app shell only (the page, its hashed scripts and styles,
// its icon and manifest) so the app opens offline and installs as a PWA. It never touches the
// node's API (/v1/...): patient data, encrypted or not, is never cached here, and every answer the
// app verifies comes from the network.
"use strict";

const CACHE = "medledger-app-shell-v1";
const SHELL = ["/app/", "/app/manifest.webmanifest", "/app/favicon.svg"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((name) => name !== CACHE).map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
});

function isShell(url) {
  return url.origin === self.location.origin && url.pathname.startsWith("/app/");
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || !isShell(url)) return; // the API and everything else: the network, untouched
  if (url.pathname.startsWith("/app/assets/")) {
    // Named by content hash: a cached copy is the file itself.
    event.respondWith(
      caches.match(request).then(
        (hit) =>
          hit ||
          fetch(request).then((response) => {
            if (response.ok) {
              const copy = response.clone();
              void caches.open(CACHE).then((cache) => cache.put(request, copy));
            }
            return response;
          }),
      ),
    );
    return;
  }
  // The page and its small files: the network first (a new build is seen at once), the cache offline.
  event.respondWith(
    fetch(request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          void caches.open(CACHE).then((cache) => cache.put(request, copy));
        }
        return response;
      })
      .catch(() => caches.match(request).then((hit) => hit || caches.match("/app/"))),
  );
});
