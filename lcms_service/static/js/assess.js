// Assessment: blind reference labelling of a season's accuracy sample design. One point at a time on
// the season's imagery (true / false colour, composite or any acquisition date), the point and its pixel
// outlined; the labeller picks the reference class from the legend (keys 1..9) or "cannot tell" (key 0,
// with a comment). The page never asks for the map, and the API it reads tells nothing of the map's class,
// the stratum or the confidence. Admins export the labels as the season's labels.csv for the report.

import { api, tiles } from "./api.js";
import { $, announce, fillSelect, formatDateTime, h } from "./dom.js";
import { createMap, setOutline, setRaster } from "./maplayers.js";
import { hasRole, session } from "./session.js";
import { fillDates } from "./viewer.js";

const RENDER_LABELS = { true_color: "true colour", false_color: "false colour" };
const POINT_ZOOM = 16;

function isTyping(target) {
  return Boolean(target && target.closest && target.closest("input, textarea, select, [contenteditable='true']"));
}

function colourOf(legend, id) {
  for (const product of session.projects[0]?.products || []) {
    const c = (product.legend || []).find((x) => x.id === id);
    if (c) return c.color;
  }
  return legend.find((x) => x.id === id)?.color || "#cccccc";
}

export class Assessment {
  constructor() {
    this.started = null;
    this.map = null;
    this.marker = null;
    this.design = null;
    this.index = -1;
    this.busy = false;
    this.dateSeason = null;
  }

  show() {
    if (!this.started) this.started = this.start();
    else this.started = this.started.then(() => this.map?.resize());
    return this.started;
  }

  get point() {
    return this.design && this.index >= 0 ? this.design.points[this.index] : null;
  }

  async start() {
    const project = session.projects[0];
    this.map = await createMap("amap", { bounds: project?.bounds, label: "imagery at the sample point" });
    // A hollow ring around the point: it marks the place without hiding the pixel (outlined in yellow).
    const ring = h("div", { class: "assess-target", "aria-hidden": "true" });
    this.marker = new window.maplibregl.Marker({ element: ring });
    $("#a-season").addEventListener("change", () => this.load($("#a-season").value));
    for (const id of ["#a-render", "#a-date"]) $(id).addEventListener("change", () => this.showImagery());
    $("#assess-list").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-index]");
      if (button) this.select(Number(button.dataset.index));
    });
    $("#assess-classes").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-class]");
      if (button) this.label({ reference_class: Number(button.dataset.class) });
    });
    $("#a-cannot").addEventListener("click", () => this.cannotTell());
    $("#a-export").addEventListener("click", () => this.exportLabels());
    $("#a-export-box").hidden = !hasRole("admin");
    document.addEventListener("keydown", (e) => this.onKey(e));

    let designs = [];
    try {
      designs = await api.assessmentDesigns();
    } catch (err) {
      announce(`Could not read the sample designs: ${err.message}`, "error");
      return;
    }
    if (!designs.length) {
      $("#assess-title").textContent = "No sample design to label";
      $("#assess-hint").textContent =
        "Draw one with `lcms accuracy design --config CONFIG --season SEASON --out <storage>/<project>/<season>/accuracy`.";
      return;
    }
    fillSelect(
      $("#a-season"),
      designs.map((d) => ({ value: d.season, label: `${d.season} (${d.points} points)` })),
      designs[designs.length - 1].season,
    );
    await this.load($("#a-season").value);
  }

  async load(season) {
    try {
      this.design = await api.assessment(season);
    } catch (err) {
      announce(`Could not read the design of ${season}: ${err.message}`, "error");
      return;
    }
    if (this.dateSeason !== season) {
      this.dateSeason = season;
      await fillDates($("#a-date"), season);
    }
    this.renderClasses();
    this.renderList();
    this.renderCounts();
    const first = this.design.points.findIndex((p) => !p.label);
    await this.select(first >= 0 ? first : 0);
  }

  renderClasses() {
    const legend = this.design.legend;
    $("#assess-classes").replaceChildren(
      ...legend.map((c) =>
        h(
          "button",
          { type: "button", class: "class-button", dataset: { class: c.id, key: c.key || "" } },
          h("span", { class: "swatch", style: { background: colourOf(legend, c.id) }, "aria-hidden": "true" }),
          h("span", { class: "class-name" }, c.name),
          c.key ? h("kbd", {}, c.key) : "",
        ),
      ),
    );
  }

  labelText(label) {
    if (!label) return "not labelled";
    return label.cannot_tell ? "cannot tell" : label.reference_name;
  }

  renderList() {
    $("#assess-list").replaceChildren(
      ...this.design.points.map((p, i) =>
        h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: "queue-item",
              dataset: { index: i, id: p.point_id, labelled: p.label ? "true" : "false" },
              "aria-current": i === this.index ? "true" : undefined,
            },
            h("span", { class: "q-transition" }, p.point_id),
            h("span", { class: `q-status ${p.label ? "status-confirmed" : ""}` }, this.labelText(p.label)),
          ),
        ),
      ),
    );
  }

  renderCounts() {
    const points = this.design.points;
    const done = points.filter((p) => p.label).length;
    const left = points.length - done;
    const el = $("#assess-counts");
    el.replaceChildren(
      h("strong", {}, `${done} done`),
      " · ",
      h("strong", {}, `${left} left`),
      ` · ${points.length} points`,
    );
    el.dataset.done = String(done);
    el.dataset.left = String(left);
  }

  async select(index) {
    if (!this.design || index < 0 || index >= this.design.points.length) return;
    this.index = index;
    const p = this.point;
    for (const b of $("#assess-list").querySelectorAll("button.queue-item")) {
      if (Number(b.dataset.index) === index) {
        b.setAttribute("aria-current", "true");
        b.scrollIntoView({ block: "nearest" });
      } else b.removeAttribute("aria-current");
    }
    $("#assess-title").textContent = `Point ${p.point_id}`;
    $("#assess-hint").textContent = `${index + 1} of ${this.design.points.length} · ${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}`;
    $("#a-comment").value = p.label?.comment || "";
    $("#assess-error").textContent = "";
    this.renderCurrent();
    this.showImagery();
    this.map.jumpTo({ center: [p.lon, p.lat], zoom: Math.max(POINT_ZOOM, Math.min(this.map.getZoom(), 19)) });
    setOutline(this.map, { type: "Polygon", coordinates: [p.pixel] });
    this.marker.setLngLat([p.lon, p.lat]).addTo(this.map);
    document.body.dataset.pointId = p.point_id;
  }

  renderCurrent() {
    const label = this.point?.label;
    $("#a-current").textContent = label
      ? `Your label: ${this.labelText(label)} (version ${label.version}, ${formatDateTime(label.labelled_at)})`
      : "Not labelled yet.";
    for (const b of $("#assess-classes").querySelectorAll("button[data-class]")) {
      const chosen = label && !label.cannot_tell && Number(b.dataset.class) === label.reference_class;
      b.setAttribute("aria-pressed", chosen ? "true" : "false");
    }
    $("#a-cannot").setAttribute("aria-pressed", label?.cannot_tell ? "true" : "false");
    const can = hasRole("validator") && !this.busy;
    for (const b of document.querySelectorAll("#assess-classes button, #a-cannot")) b.disabled = !can;
  }

  showImagery() {
    if (!this.design) return;
    const season = this.design.season;
    const render = $("#a-render").value;
    const date = $("#a-date").value;
    setRaster(this.map, "imagery", tiles.imagery(season, render, date), { bounds: session.projects[0]?.bounds });
    $("#acap").textContent = `${season}: ${RENDER_LABELS[render]}, ${date === "composite" ? "season composite" : date}`;
  }

  cannotTell() {
    const comment = $("#a-comment").value.trim();
    if (!comment) {
      $("#assess-error").textContent = "Cannot tell: say why in the comment (clouds, no clear date, mixed pixel…).";
      $("#a-comment").focus();
      return;
    }
    this.label({ cannot_tell: true });
  }

  async label(choice) {
    const p = this.point;
    if (!p || this.busy || !hasRole("validator")) return;
    const body = { design_id: this.design.design_id, ...choice };
    const comment = $("#a-comment").value.trim();
    if (comment) body.comment = comment;
    this.busy = true;
    this.renderCurrent();
    $("#assess-error").textContent = "";
    try {
      const answer = await api.labelPoint(this.design.season, p.point_id, body);
      p.label = answer.label;
      announce(`${p.point_id}: ${this.labelText(answer.label)}.`);
      this.busy = false;
      this.renderList();
      this.renderCounts();
      await this.advance();
    } catch (err) {
      if (err.status === 409) {
        $("#assess-error").textContent = `${err.message}`;
      } else $("#assess-error").textContent = `Not saved: ${err.message}`;
    } finally {
      this.busy = false;
      this.renderCurrent();
    }
  }

  /** The next unlabelled point after the current one (wrapping), else simply the next. */
  async advance() {
    const points = this.design.points;
    for (let step = 1; step <= points.length; step += 1) {
      const i = (this.index + step) % points.length;
      if (!points[i].label) {
        await this.select(i);
        return;
      }
    }
    announce("Every point of the design is labelled.");
    if (this.index < points.length - 1) await this.select(this.index + 1);
  }

  async exportLabels() {
    if (!this.design) return;
    const out = $("#a-export-result");
    out.textContent = "Exporting…";
    try {
      const r = await api.exportLabels(this.design.season);
      out.textContent =
        `Wrote ${r.uri}: ${r.labelled} labelled, ${r.cannot_tell} cannot tell, ${r.unlabelled} unlabelled ` +
        `of ${r.points} points (${r.labellers.length} labeller(s), ${r.disagreements} disagreement(s)).`;
    } catch (err) {
      out.textContent = `Export failed: ${err.message}`;
    }
  }

  onKey(event) {
    if ($("#view-assess").hidden || event.defaultPrevented || event.isComposing || !this.design) return;
    const target = event.target;
    if (event.key === "Escape" && isTyping(target)) {
      target.blur();
      event.preventDefault();
      return;
    }
    if (isTyping(target) || event.altKey || event.ctrlKey || event.metaKey) return;
    const onMap = Boolean(target.closest?.(".maplibregl-map"));
    if (/^[1-9]$/.test(event.key)) {
      const cls = this.design.legend.find((c) => c.key === event.key);
      if (!cls) return;
      event.preventDefault();
      this.label({ reference_class: cls.id });
      return;
    }
    const actions = {
      0: () => this.cannotTell(),
      j: () => this.select(this.index + 1),
      k: () => this.select(this.index - 1),
      ArrowDown: onMap ? null : () => this.select(this.index + 1),
      ArrowUp: onMap ? null : () => this.select(this.index - 1),
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  }
}
