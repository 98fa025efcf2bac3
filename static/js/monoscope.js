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

// Hovering a token shows its activation at once (a title tooltip takes a second to appear).
const readout = document.createElement("div");
readout.id = "token-readout";
readout.hidden = true;
document.addEventListener("DOMContentLoaded", () => document.body.append(readout));
document.addEventListener("mouseover", (event) => {
  const token = event.target.closest(".tok[data-value]");
  if (!token) { readout.hidden = true; return; }
  readout.textContent = `${JSON.stringify(token.textContent)} ${token.dataset.value}`;
  const box = token.getBoundingClientRect();
  readout.style.left = `${box.left + window.scrollX}px`;
  readout.style.top = `${box.bottom + window.scrollY + 4}px`;
  readout.hidden = false;
});
