// /docs: Swagger UI over the server's OpenAPI document. Started from here, not an inline script,
// so the page keeps the Content-Security-Policy every page has (script-src 'self').
window.addEventListener("load", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({ url: root.dataset.openapi, dom_id: "#swagger-ui" });
});
