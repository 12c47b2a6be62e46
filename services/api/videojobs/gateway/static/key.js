"use strict";
// Keeps the pasted API key in a cookie the gateway reads for the viewer's read-only routes
// (page, frame images, contact sheet, status, results), then reloads the page.
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = document.getElementById("key").value.trim();
    if (!/^[A-Za-z0-9_-]+$/.test(key)) {
      return;
    }
    document.cookie = `videojobs_key=${key}; path=/video; SameSite=Strict`;
    window.location.reload();
  });
});
