// A layer's diagram (the SVG of /api/draw/...), inlined, animated and linked.
//
// The drawing marks each animation step as <g class="frame" data-frame="i"> (frame 0 shown,
// the others display:none) and each cell as <rect class="cell" data-grid="input|weight|output|
// padding" data-index="c,y,x" data-frames="i j k">: the frames the cell takes part in. Play,
// pause and step show one frame group at a time; hovering a cell highlights every cell that
// shares a frame with it.
"use strict";

class Diagram {
  constructor(root) {
    this.root = root;
    this.holder = root.querySelector("#diagram-svg");
    this.message = root.querySelector("#diagram-message");
    this.label = root.querySelector("#frame-index");
    this.info = root.querySelector("#cell-info");
    this.playButton = root.querySelector("#frame-play");
    this.frames = [];
    this.index = 0;
    this.timer = null;
    this.controller = null;
    root.querySelector("#frame-prev").addEventListener("click", () => this.step(-1));
    root.querySelector("#frame-next").addEventListener("click", () => this.step(1));
    this.playButton.addEventListener("click", () => this.toggle());
    const inlined = this.holder.querySelector("svg");
    if (inlined) this.link(inlined); // the server drew the first one
    else this.show([]);
  }

  // Fetches the picture; a refused drawing (too big, bad layer) shows the server's message.
  async load(url) {
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    let response;
    try {
      response = await fetch(url, { signal: this.controller.signal });
    } catch (error) {
      if (error.name !== "AbortError") this.fail(`the server did not answer (${error.message})`);
      return;
    }
    const text = await response.text();
    if (!response.ok) {
      let line = `HTTP ${response.status}`;
      try { line = JSON.parse(text).error; } catch { /* not JSON: keep the status */ }
      this.fail(line);
      return;
    }
    const parsed = new DOMParser().parseFromString(text, "image/svg+xml");
    const svg = parsed.documentElement;
    if (svg.nodeName !== "svg" || parsed.querySelector("parsererror")) {
      this.fail("the drawing is not a valid SVG");
      return;
    }
    this.message.hidden = true;
    this.holder.replaceChildren(document.importNode(svg, true));
    this.link(this.holder.querySelector("svg"));
  }

  fail(line) {
    this.pause();
    this.holder.replaceChildren();
    this.message.textContent = line;
    this.message.hidden = false;
    this.show([]);
  }

  show(frames) {
    this.pause();
    this.frames = frames;
    this.index = 0;
    const none = frames.length === 0;
    for (const button of this.root.querySelectorAll(".controls button")) {
      button.disabled = frames.length < 2;
    }
    if (none) {
      this.label.textContent = "frame –";
      this.label.dataset.frame = "";
    }
    if (!none) this.go(0);
  }

  link(svg) {
    const frames = [...svg.querySelectorAll("g.frame")];
    frames.sort((a, b) => Number(a.dataset.frame) - Number(b.dataset.frame));
    this.show(frames);
    // cells by frame, so a hover finds its partners without scanning every cell
    this.cellsByFrame = new Map();
    for (const cell of svg.querySelectorAll("rect.cell[data-frames]")) {
      for (const frame of cell.dataset.frames.split(/\s+/).filter(Boolean)) {
        if (!this.cellsByFrame.has(frame)) this.cellsByFrame.set(frame, []);
        this.cellsByFrame.get(frame).push(cell);
      }
    }
    this.linked = [];
    svg.addEventListener("mouseover", (event) => {
      const cell = event.target.closest("rect.cell");
      if (cell) this.highlight(cell);
    });
    svg.addEventListener("mouseleave", () => this.highlight(null));
  }

  highlight(cell) {
    for (const other of this.linked) other.classList.remove("linked", "hovered");
    this.linked = [];
    if (!cell) {
      this.info.textContent = "";
      return;
    }
    const frames = (cell.dataset.frames || "").split(/\s+/).filter(Boolean);
    const partners = new Set(frames.flatMap((frame) => this.cellsByFrame.get(frame) || []));
    for (const other of partners) other.classList.add("linked");
    cell.classList.add("hovered");
    this.linked = [...partners, cell];
    const where = cell.dataset.index ? ` [${cell.dataset.index}]` : "";
    const used = frames.length
      ? `in frame${frames.length > 1 ? "s" : ""} ${frames.map((f) => Number(f) + 1).join(", ")}`
      : "in no frame";
    this.info.textContent = `${cell.dataset.grid || "cell"}${where}: ${used}; ` +
      `${partners.size} linked cell${partners.size === 1 ? "" : "s"}`;
  }

  go(index) {
    const count = this.frames.length;
    if (!count) return;
    this.index = ((index % count) + count) % count;
    this.frames.forEach((group, i) => {
      group.style.display = i === this.index ? "inline" : "none";  // beats a display attribute
    });
    this.label.textContent = `frame ${this.index + 1} / ${count}`;
    this.label.dataset.frame = String(this.index);
  }

  step(by) {
    this.pause();
    this.go(this.index + by);
  }

  toggle() {
    if (this.timer) this.pause();
    else this.play();
  }

  play() {
    if (this.frames.length < 2) return;
    this.timer = setInterval(() => this.go(this.index + 1), 600);
    this.playButton.textContent = "❚❚ pause";
  }

  pause() {
    clearInterval(this.timer);
    this.timer = null;
    this.playButton.textContent = "▶ play";
  }
}
