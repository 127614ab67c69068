// Renders the book's ```mermaid blocks (mdBook leaves them as <code class="language-mermaid">).
(() => {
  for (const code of document.querySelectorAll("code.language-mermaid")) {
    const div = document.createElement("div");
    div.className = "mermaid";
    div.textContent = code.textContent;
    code.parentElement.replaceWith(div);
  }
  mermaid.initialize({ startOnLoad: true, theme: "neutral" });
})();
