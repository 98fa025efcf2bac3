// "Zero the checked features together": the checkboxes become one ablate=i,j,k parameter.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form.ablate-form");
  if (!form) return;
  const checked = [...form.querySelectorAll("input[name=zero]:checked")].map((box) => box.value);
  form.querySelector(".ablate-value").value = [...new Set(checked)].join(",");
  for (const box of form.querySelectorAll("input[name=zero]")) box.disabled = true;  // not sent
});
