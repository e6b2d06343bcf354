// The network page: a zoo model by name (its state in the address) or an uploaded spec file
// (sent with each request, never kept on the server); the summary table, the totals and the
// picture of the receptive field, costs and memory per layer.
"use strict";

(() => {
  const C = convscope;
  const form = document.getElementById("state");
  const fileInput = document.getElementById("spec-file");
  const modelSelect = document.getElementById("model");
  const figure = document.getElementById("network-figure");
  const figureMessage = document.getElementById("figure-message");
  const limit = Number(form.dataset.uploadLimit || 0);
  let upload = null; // the chosen spec file, while it stands for the model
  let controller = null;
  let pictureUrl = null;

  function renderTotals(data, name) {
    const totals = document.getElementById("totals");
    const row = (term, value, id) =>
      C.el("div", {}, C.el("dt", {}, term), C.el("dd", id ? { id } : {}, value));
    totals.replaceChildren(
      row("model", name, "model-name"),
      row("input", C.shape(data.input_shape)),
      row("parameters", C.thousands(data.total_params), "total-params"),
      row("MACs", C.thousands(data.total_macs), "total-macs"),
      row("activations", `${C.thousands(data.activation_bytes)} B`),
      row("parameters' memory", `${C.thousands(data.param_bytes)} B`),
    );
  }

  function fieldSize(field) {
    if (!field || typeof field !== "object") return "—";
    if (field.global) return "global";
    return C.shape(field.size) + (field.unknown ? " (at least)" : "");
  }

  function renderTable(data) {
    const body = document.querySelector("#summary-table tbody");
    body.replaceChildren(...data.layers.map((layer) => {
      const name = C.el("td", {}, layer.name);
      name.style.paddingLeft = `${0.4 + layer.depth * 1.0}em`;
      return C.el("tr", { class: `depth-${layer.depth}${layer.container ? " container" : ""}` },
        name, C.el("td", {}, layer.type), C.el("td", {}, C.shape(layer.output_shape)),
        C.el("td", {}, C.thousands(layer.params)), C.el("td", {}, C.thousands(layer.macs)),
        C.el("td", {}, fieldSize(layer.receptive_field)),
        C.el("td", {}, C.thousands(layer.activation_bytes)));
    }));
  }

  async function showPicture(url, options) {
    if (pictureUrl) URL.revokeObjectURL(pictureUrl);
    pictureUrl = null;
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      if (error.name === "AbortError") return;
      response = null;
    }
    if (!response || !response.ok) {
      let line = response ? `HTTP ${response.status}` : "the server did not answer";
      try { line = (await response.json()).error; } catch { /* keep the status */ }
      figure.hidden = true;
      figureMessage.textContent = line;
      figureMessage.hidden = false;
      return;
    }
    pictureUrl = URL.createObjectURL(await response.blob());
    figure.src = pictureUrl;
    figure.hidden = false;
    figureMessage.hidden = true;
  }

  async function update() {
    const state = C.readState(form).filter(([key]) => !(upload && key === "model"));
    const options = state.filter(([key]) => key !== "model");
    if (!upload) history.replaceState(null, "", `${location.pathname}?${C.query(state)}`);
    document.getElementById("command-line").textContent = upload
      ? C.commandLine("summary", [["model", upload.name], ...options], form)
      : C.commandLine("summary", state, form);
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    const post = () => {
      const body = new FormData();
      body.append("spec", upload, upload.name);
      return { method: "POST", body, signal };
    };
    const reply = upload
      ? await C.fetchAnswer(`${form.dataset.api}?${C.query(options)}`, post())
      : await C.fetchAnswer(`${form.dataset.api}?${C.query(state)}`, { signal });
    if (reply.aborted) return;
    if (!reply.ok) {
      C.showError(reply.error);
      return;
    }
    C.showError(null);
    renderTotals(reply.data, upload ? upload.name : reply.data.model);
    renderTable(reply.data);
    // the picture takes the summary's model, input, layout and batch (not count or depth)
    const drawn = (upload ? options : state).filter(([key]) =>
      ["model", "input", "layout", "batch"].includes(key));
    const url = `${form.dataset.drawApi}?${C.query([...drawn, ["format", "svg"]])}`;
    showPicture(url, upload ? post() : { signal });
  }

  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    if (!file) return;
    if (limit && file.size > limit) {
      C.showError(`the file has ${C.thousands(file.size)} bytes; the limit is ` +
        `${C.thousands(limit)}`);
      fileInput.value = "";
      return;
    }
    upload = file;
    modelSelect.classList.add("unused");
    update();
  });
  modelSelect.addEventListener("change", () => {
    upload = null;
    fileInput.value = "";
    modelSelect.classList.remove("unused");
  });
  const later = C.debounce(update, 300);
  C.onEdit(form, later);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    update();
  });
  modelSelect.dataset.positional = "1";
  // the server rendered the first table; the picture and the address come now
  update();
})();
