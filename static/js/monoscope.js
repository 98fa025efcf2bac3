// Small behaviours the server cannot do: copy a link, jump to a feature. Pages work without it.
document.addEventListener("click", (event) => {
  const button = event.target.closest(".copy-link");
  if (!button) return;
  const url = new URL(button.dataset.url, location.href).href;
  const done = () => { button.textContent = "Link copied"; setTimeout(() => (button.textContent = "Copy link"), 1500); };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(url).then(done, () => prompt("Copy this link", url));
  else prompt("Copy this link", url);
});

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form.jump");
  if (!form) return;
  event.preventDefault();
  location.href = form.action.replace(/\/$/, "") + "/" + encodeURIComponent(form.elements.index.value);
});
