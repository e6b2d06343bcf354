// The calculator, pooling and compose pages: the form is the state (kept in the address with
// history.replaceState), each edit asks the JSON API again (debounced), and the answer and the
// diagram are laid out as the server laid out the first one.
"use strict";

(() => {
  const C = convscope;
  const form = document.getElementById("state");
  const page = document.body.dataset.page;
  const command = { calculator: form.elements.namedItem("layer")?.value, pool: "pool",
    compose: "compose" }[page];
  const diagramKeys = JSON.parse(form.dataset.diagramKeys || "[]");
  const drawKeys = JSON.parse(form.dataset.drawKeys || "[]");
  const fixed = JSON.parse(form.dataset.fixed || "[]");
  const diagramRoot = document.getElementById("diagram");
  const diagram = diagramRoot && form.dataset.drawApi ? new Diagram(diagramRoot) : null;
  let controller = null;

  function render(data) {
    if (page === "calculator") {
      document.getElementById("output-shape").textContent = C.shape(data.output_shape);
      document.getElementById("params").textContent = C.thousands(data.params);
      const buffers = data.buffers ? ` (+ buffers ${C.thousands(data.buffers)})` : "";
      document.getElementById("params-split").textContent =
        `weights ${C.thousands(data.weights)} + biases ${C.thousands(data.biases)}${buffers}`;
      document.getElementById("macs").textContent = C.thousands(data.macs);
      document.getElementById("layer-text").textContent = data.layer;
      document.getElementById("input-shape").textContent = C.shape(data.input_shape);
      document.getElementById("batch").textContent = data.batch;
      document.getElementById("count-mode").textContent = data.count;
      C.countsTable(document.getElementById("counts"), data);
    } else if (page === "pool") {
      document.getElementById("result").replaceChildren(C.tree(data));
    } else if (page === "compose") {
      document.getElementById("composed").textContent =
        `= one ${data.layer}: kernel ${C.shape(data.kernel)}, stride ${C.shape(data.stride)}, ` +
        `dilation ${C.shape(data.dilation)}${data.exact ? " (exact)" : " (not exact)"}`;
      document.getElementById("result-tree").replaceChildren(C.tree(data));
    }
  }

  function drawingUrl(state) {
    const items = state.filter(([key]) => drawKeys.includes(key));
    return `${form.dataset.drawApi}?${C.query([...items, ["format", "svg"]])}`;
  }

  // answer: ask for the numbers again; draw: ask for the diagram again
  async function update({ answer = true, draw = true } = {}) {
    const state = C.readState(form);
    history.replaceState(null, "", `${location.pathname}?${C.query(state)}`);
    const apiItems = state.filter(([key]) => key !== "layer" && !diagramKeys.includes(key));
    document.getElementById("command-line").textContent =
      C.commandLine(command, [...apiItems, ...fixed], form);
    if (diagram && draw) diagram.load(drawingUrl(state));
    if (!answer) return;
    if (controller) controller.abort();
    controller = new AbortController();
    const query = C.query([...apiItems, ...fixed]);
    const signal = controller.signal;
    const explainApi = form.dataset.explainApi;
    const [reply, working] = await Promise.all([
      C.fetchAnswer(`${form.dataset.api}?${query}`, { signal }),
      explainApi ? C.fetchAnswer(`${explainApi}?${query}`, { signal }) : null,
    ]);
    if (reply.aborted) return;
    if (!reply.ok) {
      C.showError(reply.error);
      return;
    }
    C.showError(null);
    render(reply.data);
    if (working && working.ok) {
      C.explanation(document.getElementById("explanation"), working.data.sections);
    }
  }

  const later = C.debounce(() => update(), 250);
  C.onEdit(form, (event) => {
    // the diagram's own options redraw the diagram only
    if (diagramKeys.includes(event.target.name)) update({ answer: false });
    else later();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    update();
  });
  // the server rendered the first answer and diagram: keep them, fill in the address
  update({ answer: false, draw: false });
})();
