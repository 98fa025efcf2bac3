// The attribution graph page: Shift-click a node to pin or unpin it (the server keeps the pinned
// set in the URL, so every view is a link).
(() => {
  const svg = document.querySelector("svg.graph");
  if (!svg) return;
  svg.addEventListener("click", (event) => {
    const node = event.target.closest(".graph-node");
    if (!node || !event.shiftKey) return;
    event.preventDefault();
    window.location.assign(node.dataset.pinUrl);
  });
})();
