/* The paper (print_page/, written by hooks/paper.py): draws every Mermaid
   diagram, then lets Paged.js lay the document out as US Letter pages
   (paper.css), with page numbers and the contents' page numbers.
   window.paperStatus says how far it got: hooks/pdf.py waits for
   state "ready" before it prints, and reports the errors of a "failed" run.
   Loaded after Mermaid and before Paged.js. */

window.PagedConfig = { auto: false };
window.paperStatus = { state: "working", errors: [], pages: 0, diagrams: 0 };

if (typeof window.mermaid !== "undefined") {
  // Neutral greys print well; the diagrams are drawn below, in page order.
  window.mermaid.initialize({ startOnLoad: false, theme: "neutral" });
}

async function drawDiagrams(status) {
  const sources = [...document.querySelectorAll("pre.mermaid")];
  if (sources.length === 0) return;
  if (typeof window.mermaid === "undefined") {
    throw new Error("Mermaid did not load, so the diagrams cannot be drawn");
  }
  let number = 0;
  for (const source of sources) {
    number += 1;
    const text = source.textContent;
    try {
      const { svg } = await window.mermaid.render(`paper-diagram-${number}`, text);
      const drawn = document.createElement("div");
      drawn.className = "mermaid";
      drawn.innerHTML = svg;
      source.replaceWith(drawn);
      status.diagrams += 1;
    } catch (error) {
      const first = text.trim().split("\n").slice(0, 2).join(" ");
      status.errors.push(`diagram ${number} (${first}): ${error.message || error}`);
    }
  }
}

window.addEventListener("load", async () => {
  const status = window.paperStatus;
  try {
    await drawDiagrams(status);
    await document.fonts.ready;
    if (typeof window.PagedPolyfill === "undefined") {
      throw new Error("Paged.js did not load, so the pages cannot be laid out");
    }
    await window.PagedPolyfill.preview();
    status.pages = document.querySelectorAll(".pagedjs_page").length;
  } catch (error) {
    status.errors.push(String(error.message || error));
  }
  status.state = status.errors.length ? "failed" : "ready";
});
