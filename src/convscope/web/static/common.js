// What every page shares: reading the form as the page's state (the query keys of the CLI),
// exact JSON, and laying out an answer the way the server's templates do (web/app.py's
// filters: keep the two in step).
"use strict";

const convscope = (() => {
  // Counts can pass 2**53, where a JS number stops being exact: such integers become BigInt.
  let reviverSeesSource = false;
  JSON.parse("1", (key, value, context) => {
    reviverSeesSource = Boolean(context && "source" in context);
    return value;
  });
  const MARK = "\u0000bigint:";

  function parseExact(text) {
    if (reviverSeesSource) {
      return JSON.parse(text, (key, value, context) =>
        typeof value === "number" && !Number.isSafeInteger(value) &&
        /^-?\d+$/.test(context.source) ? BigInt(context.source) : value);
    }
    // Older browsers: quote long integers where a value stands, then read them back.
    const marked = text.replace(/([:[,]\s*)(-?\d{16,})(?=\s*[,\]}])/g, `$1"${MARK}$2"`);
    return JSON.parse(marked, (key, value) =>
      typeof value === "string" && value.startsWith(MARK) ? BigInt(value.slice(MARK.length))
        : value);
  }

  function thousands(value) {
    if (typeof value === "bigint" || Number.isInteger(value)) return value.toLocaleString("en-US");
    return String(value);
  }

  function scalar(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "number" && !Number.isInteger(value)) {
      return String(Number(value.toPrecision(4)));
    }
    if (Array.isArray(value)) return value.map(scalar).join(", ");
    return thousands(value);
  }

  const shape = (value) => (Array.isArray(value) ? value.join("×") : "—");
  const label = (key) => key.replaceAll("_", " ");

  // el("td", {class: "x"}, "text", child): a DOM node; text is never parsed as HTML.
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  // The form's controls (also those outside it, tied by form="state") as query items.
  function readState(form) {
    const items = [];
    for (const control of form.elements) {
      if (!control.name || control.disabled || control.type === "file") continue;
      if (control.type === "checkbox") {
        if (control.checked) items.push([control.name, "1"]);
      } else if (control.dataset.many) {
        for (const line of control.value.split("\n")) {
          if (line.trim()) items.push([control.name, line.trim()]);
        }
      } else if (control.value.trim() !== "") {
        items.push([control.name, control.value.trim()]);
      }
    }
    return items;
  }

  const query = (items) => new URLSearchParams(items).toString();

  // The command line the page's state stands for, to copy into a terminal.
  function commandLine(command, items, form) {
    const words = ["convscope", command];
    const positionals = [];
    const quote = (text) => (/^[\w.,:x×=+-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`);
    for (const [key, value] of items) {
      const control = form.elements.namedItem(key);
      const kind = control instanceof RadioNodeList ? control[0] : control;
      if (kind && (kind.dataset.many || kind.dataset.positional)) positionals.push(quote(value));
      else if (kind && kind.type === "checkbox") words.push(`--${key.replaceAll("_", "-")}`);
      else words.push(`--${key.replaceAll("_", "-")}`, quote(value));
    }
    return [...words.slice(0, 2), ...positionals, ...words.slice(2)].join(" ");
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  // Calls fn when any control of the form changes, those outside it (form="state") included.
  function onEdit(form, fn) {
    const handler = (event) => {
      if (event.target.form === form && event.target.type !== "file") fn(event);
    };
    document.addEventListener("input", handler);
    document.addEventListener("change", handler);
  }

  function showError(message) {
    const box = document.getElementById("error");
    box.textContent = message || "";
    box.hidden = !message;
    const result = document.getElementById("result");
    if (result) result.classList.toggle("stale", Boolean(message));
  }

  // GET or POST, the answer as {ok, data} or {ok: false, error: "the CLI's line"}.
  async function fetchAnswer(url, options = {}) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      if (error.name === "AbortError") return { ok: false, aborted: true };
      return { ok: false, error: `the server did not answer (${error.message})` };
    }
    const text = await response.text();
    if (response.ok) return { ok: true, data: parseExact(text) };
    try {
      return { ok: false, error: JSON.parse(text).error, status: response.status };
    } catch {
      return { ok: false, error: `HTTP ${response.status}`, status: response.status };
    }
  }

  const ROWS = [
    ["forward", "forward"], ["backward_input", "backward input"],
    ["backward_weight", "backward weight"], ["backward_bias", "backward bias"],
  ];
  const OPS = ["mults", "adds", "compares", "divides"];

  // The exact counts: a row per pass, a column per operation any pass has (app.counts_table).
  function countsTable(table, result) {
    const passes = ROWS.filter(([key]) => key in result).map(([key, name]) => [name, result[key]]);
    const ops = OPS.filter((op) => passes.some(([, c]) => c && typeof c === "object" && op in c));
    const head = el("thead", {}, el("tr", {}, el("th"), ...ops.map((op) => el("th", {}, op))));
    const body = el("tbody");
    for (const [name, counts] of passes) {
      const worst = counts && counts.upper_bound ? " (worst case)" : "";
      body.append(el("tr", {}, el("th", {}, name + worst),
        ...ops.map((op) => el("td", {}, counts ? thousands(counts[op] ?? 0) : "—"))));
    }
    table.replaceChildren(head, body);
  }

  // The worked explanation (/api/explain/...): sections of formulas, already MathML from the
  // server's LaTeX (the browser renders MathML natively), and sentences.
  function explanation(holder, sections) {
    holder.replaceChildren();
    for (const { title, items } of sections || []) {
      const section = el("section", {}, el("h3", {}, title));
      for (const item of items) {
        if (item.math) {
          const formula = el("div", { class: "formula" });
          const parsed = document.createElement("template");
          parsed.innerHTML = item.math;  // MathML elements only: checked on the server
          formula.append(parsed.content);
          section.append(formula);
        } else {
          section.append(el("p", {}, item.text));
        }
      }
      holder.append(section);
    }
  }

  // Any answer as nested definition lists and tables (the templates' tree macro).
  function tree(value) {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      const list = el("dl", { class: "tree" });
      for (const [key, item] of Object.entries(value)) {
        list.append(el("dt", {}, label(key)), el("dd", {}, tree(item)));
      }
      return list;
    }
    if (Array.isArray(value) && value.length && value[0] && typeof value[0] === "object") {
      const columns = [];
      for (const row of value) for (const key of Object.keys(row)) {
        if (!columns.includes(key)) columns.push(key);
      }
      return el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", {}, label(c))))),
        el("tbody", {}, ...value.map((row) =>
          el("tr", {}, ...columns.map((c) => el("td", {}, tree(row[c])))))));
    }
    if (Array.isArray(value)) return document.createTextNode(value.length ? scalar(value) : "none");
    return document.createTextNode(scalar(value));
  }

  return {
    parseExact, thousands, scalar, shape, el, readState, query, commandLine, debounce, onEdit,
    showError, fetchAnswer, countsTable, explanation, tree,
  };
})();
