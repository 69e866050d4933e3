// The Validation Tool: the queue of detected changes (filters, order, done / left), one change at a time
// on four synchronised maps (before / after imagery, before / after class maps, the polygon outlined), and
// the decision: confirm, reject, or correct (true classes and/or moved vertices), with an optional comment.
// Each decision carries the version it was made on; a stale one is answered 409 with the current state,
// which is shown with a button to reload the change: nothing is overwritten.
// The same tool checks parcels (the "Queue" filter): a declared parcel whose predicted crop differs from
// the declared one; confirm = the prediction is right, reject = the declaration is right, correct = the
// parcel's true crop (the declared crop and the parcel's outline are the declaration's: not editable).

import { api, tiles } from "./api.js";
import { $, announce, fillSelect, formatArea, formatConfidence, formatDateTime, h } from "./dom.js";
import { createMap, cssColour, geometryBounds, setOutline, setRaster, syncMaps } from "./maplayers.js";
import { hasRole, noteDecision, seasonsOf, session } from "./session.js";
import { EditableGeometry, VertexHandles } from "./vertex-editor.js";
import { fillDates } from "./viewer.js";

const PAGE = 50;
const ACTION_VERBS = { confirm: "Confirmed", reject: "Rejected", correct: "Corrected" };
const MAP_CELLS = {
  imgBefore: { id: "vmap-img-before", label: "before imagery" },
  imgAfter: { id: "vmap-img-after", label: "after imagery" },
  mapBefore: { id: "vmap-map-before", label: "before map" },
  mapAfter: { id: "vmap-map-after", label: "after map" },
};
const RENDER_LABELS = { true_color: "true colour", false_color: "false colour" };

const isParcelCheck = (c) => c?.kind === "parcel_check";

function transitionLabel(c) {
  if (isParcelCheck(c)) return `Declared ${c.from_name ?? c.from_class} · predicted ${c.to_name ?? c.to_class}`;
  return `${c.from_name ?? c.from_class} → ${c.to_name ?? c.to_class}`;
}

function isTyping(target) {
  return Boolean(target && target.closest && target.closest("input, textarea, select, [contenteditable='true']"));
}

export class ValidationTool {
  constructor() {
    this.started = null;
    this.items = [];
    this.index = -1;
    this.offset = 0;
    this.total = 0;
    this.change = null;
    this.maps = {};
    this.editing = false;
    this.model = null;
    this.handles = [];
    this.busy = false;
    this.conflict = false;
    this.seasons = { before: null, after: null };
  }

  show(changeId) {
    if (!this.started) this.started = this.start(changeId);
    else {
      this.started = this.started.then(async () => {
        for (const map of Object.values(this.maps)) map.resize();
        if (changeId && changeId !== this.change?.id) await this.open(changeId);
      });
    }
    return this.started;
  }

  get project() {
    return session.projects.find((p) => p.project === $("#q-project").value) || session.projects[0];
  }

  async start(changeId) {
    this.fillFilters();
    const bounds = this.project.bounds;
    const made = await Promise.all(
      Object.entries(MAP_CELLS).map(([key, cell]) => createMap(cell.id, { bounds, label: cell.label })),
    );
    Object.keys(MAP_CELLS).forEach((key, i) => {
      this.maps[key] = made[i];
    });
    syncMaps(made);

    $("#q-project").addEventListener("change", () => {
      this.fillFilters();
      this.reload();
    });
    $("#q-kind").addEventListener("change", () => {
      this.fillFilters();
      this.reload();
    });
    $("#queue-filters").addEventListener("submit", (e) => {
      e.preventDefault();
      this.reload();
    });
    for (const id of ["#q-season-before", "#q-season-after", "#q-transition", "#q-status", "#q-order"]) {
      $(id).addEventListener("change", () => this.reload());
    }
    $("#queue-prev-page").addEventListener("click", () => this.page(-1));
    $("#queue-next-page").addEventListener("click", () => this.page(1));
    $("#queue-list").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-index]");
      if (button) this.select(Number(button.dataset.index));
    });
    $("#d-confirm").addEventListener("click", () => this.decide("confirm"));
    $("#d-reject").addEventListener("click", () => this.decide("reject"));
    $("#d-correct").addEventListener("click", () => (this.editing ? this.stopEditing() : this.startEditing()));
    $("#decision-form").addEventListener("submit", (e) => {
      e.preventDefault();
      if (this.editing) this.decide("correct");
    });
    $("#d-cancel-correction").addEventListener("click", () => this.stopEditing());
    $("#d-reset-geometry").addEventListener("click", () => this.model?.reset(this.currentGeometry()));
    $("#conflict-reload").addEventListener("click", () => this.reloadChange());
    for (const id of ["#d-render", "#d-date-before", "#d-date-after"]) {
      $(id).addEventListener("change", () => this.showLayers());
    }
    $("#stats").addEventListener("toggle", () => {
      if ($("#stats").open) this.loadStats();
    });
    document.addEventListener("keydown", (e) => this.onKey(e));
    const canDecide = hasRole("validator");
    $("#role-note").hidden = canDecide;
    this.setButtons();

    await this.loadQueue(0);
    if (changeId) await this.open(changeId);
    else if (this.items.length) await this.select(0);
    else this.showNothing();
  }

  // ---- the queue -------------------------------------------------------------------------------------------

  fillFilters() {
    const p = this.project;
    const all = session.projects.map((x) => ({ value: x.project, label: x.project }));
    fillSelect($("#q-project"), all, p.project);
    const seasons = seasonsOf(p, { all: true });
    const options = [{ value: "", label: "any" }, ...seasons.map((s) => ({ value: s.id, label: s.id }))];
    const published = seasonsOf(p);
    const after = published.length ? published[published.length - 1].id : "";
    const parcels = $("#q-kind").value === "parcel_check";
    // A parcel check is of one season (before = after): filter on the season, not on a pair.
    const before = parcels ? "" : published.length > 1 ? published[published.length - 2].id : "";
    fillSelect($("#q-season-before"), options, before);
    fillSelect($("#q-season-after"), options, after);
    $("#q-season-before").disabled = parcels;
    fillSelect($("#q-transition"), [
      { value: "", label: "any" },
      ...(parcels ? [] : p.transitions || []).map((t) => ({
        value: `${t.from}-${t.to}`,
        label: `${t.from_name} → ${t.to_name}`,
      })),
    ]);
  }

  params() {
    const form = new FormData($("#queue-filters"));
    const params = {};
    for (const [key, value] of form.entries()) {
      if (key === "transition") continue;
      if (String(value).trim() !== "") params[key] = String(value).trim();
    }
    const transition = $("#q-transition").value;
    if (transition) [params.from_class, params.to_class] = transition.split("-");
    return params;
  }

  async loadQueue(offset = this.offset) {
    let answer;
    try {
      answer = await api.changes({ ...this.params(), limit: PAGE, offset });
    } catch (err) {
      announce(`Could not read the queue: ${err.message}`, "error");
      return false;
    }
    this.items = answer.items || [];
    this.total = answer.total ?? this.items.length;
    this.offset = offset;
    const counts = answer.counts || {};
    $("#queue-counts").replaceChildren(
      h("strong", { class: "count-done" }, `${counts.done ?? "?"} done`),
      " · ",
      h("strong", { class: "count-left" }, `${counts.left ?? "?"} left`),
      ` · ${this.total} match the filters`,
    );
    $("#queue-counts").dataset.done = String(counts.done ?? "");
    $("#queue-counts").dataset.left = String(counts.left ?? "");
    this.renderQueue();
    return true;
  }

  renderQueue() {
    const list = $("#queue-list");
    list.replaceChildren(
      ...this.items.map((c, i) =>
        h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: "queue-item",
              dataset: { index: i, id: c.id, status: c.status },
              "aria-current": this.change && c.id === this.change.id ? "true" : undefined,
            },
            h("span", { class: "q-transition" }, transitionLabel(c)),
            h(
              "span",
              { class: "q-meta" },
              `${formatArea(c.area_m2)} · ${formatConfidence(c.confidence)} · priority ${formatArea(c.priority)}`,
            ),
            h("span", { class: `q-status status-${c.status}` }, c.status),
          ),
        ),
      ),
    );
    if (!this.items.length) list.replaceChildren(h("li", { class: "hint" }, "Nothing in the queue matches the filters."));
    const last = this.offset + this.items.length;
    $("#queue-page").textContent = this.total ? `${this.offset + 1}–${last} of ${this.total}` : "";
    $("#queue-prev-page").disabled = this.offset === 0;
    $("#queue-next-page").disabled = last >= this.total;
  }

  markCurrent() {
    for (const b of $("#queue-list").querySelectorAll("button.queue-item")) {
      if (this.change && b.dataset.id === this.change.id) {
        b.setAttribute("aria-current", "true");
        b.scrollIntoView({ block: "nearest" });
      } else b.removeAttribute("aria-current");
    }
  }

  async reload() {
    if (await this.loadQueue(0)) {
      if (this.items.length) await this.select(0);
      else this.showNothing();
    }
  }

  async page(step) {
    const offset = Math.max(0, this.offset + step * PAGE);
    if (offset >= this.total && step > 0) return;
    if (await this.loadQueue(offset)) {
      if (this.items.length) await this.select(step > 0 ? 0 : this.items.length - 1);
    }
  }

  async select(index) {
    if (index < 0 || index >= this.items.length) return;
    this.index = index;
    await this.open(this.items[index].id);
  }

  async next() {
    if (this.index < this.items.length - 1) await this.select(this.index + 1);
    else if (this.offset + this.items.length < this.total) await this.page(1);
    else announce("That was the last change in the queue.");
  }

  async previous() {
    if (this.index > 0) await this.select(this.index - 1);
    else if (this.offset > 0) await this.page(-1);
    else announce("That was the first change in the queue.");
  }

  /** After a decision on `decidedId`: the queue again, and the change after it selected. */
  async advance(decidedId) {
    const was = this.index;
    if (!(await this.loadQueue(this.offset))) return;
    if (!this.items.length && this.offset > 0) {
      await this.loadQueue(Math.max(0, this.offset - PAGE));
      if (this.items.length) await this.select(this.items.length - 1);
      return;
    }
    if (!this.items.length) {
      this.showNothing("The queue is empty: every change matching the filters is decided.");
      return;
    }
    const stillThere = this.items.findIndex((c) => c.id === decidedId);
    if (stillThere >= 0) {
      // Still listed (e.g. the status filter is "any"): move past it.
      if (stillThere + 1 < this.items.length) await this.select(stillThere + 1);
      else if (this.offset + this.items.length < this.total) await this.page(1);
      else await this.select(stillThere);
    } else await this.select(Math.min(Math.max(was, 0), this.items.length - 1));
  }

  showNothing(message = "No change matches the filters.") {
    this.stopEditing();
    this.change = null;
    this.index = -1;
    $("#change-title").textContent = message;
    $("#change-details").replaceChildren();
    $("#decision-history").replaceChildren();
    for (const map of Object.values(this.maps)) setOutline(map, null);
    this.setButtons();
  }

  // ---- one change --------------------------------------------------------------------------------------------

  currentGeometry() {
    return this.change ? this.change.corrected_geometry || this.change.geometry : null;
  }

  async open(id) {
    const seq = (this.openSeq = (this.openSeq || 0) + 1);
    let change;
    try {
      change = await api.change(id);
    } catch (err) {
      announce(`Could not open change ${id}: ${err.message}`, "error");
      return;
    }
    if (seq !== this.openSeq) return; // another change was asked for meanwhile (j pressed again)
    this.stopEditing();
    this.hideConflict();
    this.change = change;
    const listed = this.items.findIndex((c) => c.id === id);
    if (listed >= 0) this.index = listed;
    $("#d-comment").value = "";
    $("#decision-error").textContent = "";
    history.replaceState(null, "", `#validate/${encodeURIComponent(id)}`);
    this.renderChange();
    this.markCurrent();
    await this.showLayers();
    const geometry = this.currentGeometry();
    const box = change.bbox || (geometry ? geometryBounds(geometry) : null);
    if (box) this.maps.imgAfter.fitBounds(box, { padding: 48, maxZoom: 17, animate: false });
    for (const map of Object.values(this.maps)) setOutline(map, geometry);
    this.setButtons();
    document.body.dataset.changeId = change.id;
  }

  /** After a 409: the change as it is now, and the queue again (it may have left it). */
  async reloadChange() {
    if (!this.change) return;
    const id = this.change.id;
    const was = this.index;
    await this.loadQueue(this.offset);
    await this.open(id);
    // Gone from the queue (decided by someone else): "next" goes to the change now at its place.
    if (!this.items.some((c) => c.id === id)) this.index = was - 1;
    $("#d-confirm").focus();
  }

  renderChange() {
    const c = this.change;
    $("#change-title").textContent = transitionLabel(c);
    const legend = this.legend();
    const name = (id) => legend.find((x) => x.id === id)?.name ?? `class ${id}`;
    const status = ["Status", h("span", { class: `q-status status-${c.status}`, id: "change-status" }, c.status)];
    const version = ["Version", h("span", { id: "change-version" }, String(c.version))];
    const rows = isParcelCheck(c)
      ? [
          status,
          ["Parcel", h("code", { id: "parcel-id" }, c.parcel_id ?? "?")],
          ["Season", c.season_after],
          ["Declared", c.from_name ?? name(c.from_class)],
          ["Predicted", `${c.to_name ?? name(c.to_class)} (probability ${formatConfidence(c.confidence)})`],
          ["Area", formatArea(c.area_m2)],
          ["Product", c.product ?? "–"],
          version,
        ]
      : [
          status,
          ["Seasons", `${c.season_before} → ${c.season_after}`],
          ["Area", formatArea(c.area_m2)],
          ["Confidence", formatConfidence(c.confidence)],
          ["Priority", formatArea(c.priority)],
          version,
        ];
    if (isParcelCheck(c) && c.corrected_to_class != null) rows.push(["True crop", name(c.corrected_to_class)]);
    else if (c.corrected_from_class != null || c.corrected_to_class != null) {
      const from = c.corrected_from_class ?? c.from_class;
      const to = c.corrected_to_class ?? c.to_class;
      rows.push(["Corrected to", `${name(from)} → ${name(to)}`]);
    }
    if (c.corrected_geometry) rows.push(["Outline", "corrected"]);
    rows.push(["Id", h("code", { class: "change-id" }, c.id)]);
    $("#change-details").replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const decisions = c.decisions || [];
    $("#decision-history").replaceChildren(
      ...(decisions.length
        ? decisions.map((d) =>
            h(
              "li",
              {},
              `${formatDateTime(d.decided_at)} · ${d.decided_by ?? "?"}: ${d.action}`,
              d.comment ? h("q", {}, d.comment) : "",
            ),
          )
        : [h("li", { class: "hint" }, "none yet")]),
    );
  }

  /** The legend of the product the change's classes belong to. */
  legend() {
    const products = this.project.products || [];
    const c = this.change;
    const own = c?.product && products.find((p) => p.id === c.product);
    if (own) return (own.legend || []).filter((x) => x.id !== 0);
    const fits = (p) =>
      c && ["from", "to"].every((k) => (p.legend || []).some((x) => x.id === c[`${k}_class`] && x.name === c[`${k}_name`]));
    return ((c && products.find(fits)) || products[0] || { legend: [] }).legend.filter((x) => x.id !== 0);
  }

  async showLayers() {
    const c = this.change;
    if (!c) return;
    const bounds = this.project.bounds;
    if (this.seasons.before !== c.season_before) {
      this.seasons.before = c.season_before;
      await fillDates($("#d-date-before"), c.season_before);
    }
    if (this.seasons.after !== c.season_after) {
      this.seasons.after = c.season_after;
      await fillDates($("#d-date-after"), c.season_after);
    }
    const render = $("#d-render").value;
    const dates = { before: $("#d-date-before").value, after: $("#d-date-after").value };
    const when = (d) => (d === "composite" ? "season composite" : d);
    setRaster(this.maps.imgBefore, "imagery", tiles.imagery(c.season_before, render, dates.before), { bounds });
    setRaster(this.maps.imgAfter, "imagery", tiles.imagery(c.season_after, render, dates.after), { bounds });
    if (isParcelCheck(c)) {
      // One season: two of its dates side by side (a crop shows itself in its calendar), the land cover map
      // and the crop product's map of the season.
      setRaster(this.maps.imgBefore, "imagery", tiles.imagery(c.season_after, render, dates.before), { bounds });
      setRaster(this.maps.imgAfter, "imagery", tiles.imagery(c.season_after, render, dates.after), { bounds });
      setRaster(this.maps.mapBefore, "map", tiles.map(c.season_after, "CLASS"), { bounds });
      setRaster(this.maps.mapAfter, "map", tiles.map(c.season_after, "CLASS", c.product), { bounds });
      $("#vcap-img-before").textContent = `${c.season_after}: ${RENDER_LABELS[render]}, ${when(dates.before)}`;
      $("#vcap-img-after").textContent = `${c.season_after}: ${RENDER_LABELS[render]}, ${when(dates.after)}`;
      $("#vcap-map-before").textContent = `${c.season_after}: land cover map; declared ${c.from_name ?? c.from_class}`;
      const productLabel = String(c.product ?? "").replace(/_/g, " ");
      $("#vcap-map-after").textContent = `${c.season_after}: ${productLabel} map; predicted ${c.to_name ?? c.to_class}`;
      return;
    }
    setRaster(this.maps.mapBefore, "map", tiles.map(c.season_before, "CLASS"), { bounds });
    setRaster(this.maps.mapAfter, "map", tiles.map(c.season_after, "CLASS"), { bounds });
    $("#vcap-img-before").textContent = `Before (${c.season_before}): ${RENDER_LABELS[render]}, ${when(dates.before)}`;
    $("#vcap-img-after").textContent = `After (${c.season_after}): ${RENDER_LABELS[render]}, ${when(dates.after)}`;
    $("#vcap-map-before").textContent = `Before (${c.season_before}): map, ${c.from_name ?? c.from_class} here`;
    $("#vcap-map-after").textContent = `After (${c.season_after}): map, ${c.to_name ?? c.to_class} here`;
  }

  setButtons() {
    const can = hasRole("validator") && Boolean(this.change) && !this.busy && !this.conflict;
    for (const id of ["#d-confirm", "#d-reject", "#d-correct", "#d-save-correction"]) $(id).disabled = !can;
  }

  // ---- correcting ----------------------------------------------------------------------------------------------

  startEditing() {
    if (!this.change || !hasRole("validator") || this.conflict) return;
    const legend = this.legend();
    const options = legend.map((x) => ({ value: x.id, label: x.name }));
    fillSelect($("#d-from"), options, this.change.corrected_from_class ?? this.change.from_class);
    fillSelect($("#d-to"), options, this.change.corrected_to_class ?? this.change.to_class);
    for (const id of ["#d-from", "#d-to"]) {
      for (const o of $(id).options) {
        const cls = legend.find((x) => String(x.id) === o.value);
        o.style.setProperty("--swatch", cssColour(cls?.color));
      }
    }
    const parcel = isParcelCheck(this.change);
    // A parcel check corrects the crop only: the declared crop and the outline are the declaration's.
    $("#d-from").disabled = parcel;
    $("#d-from-label").textContent = parcel ? "Declared crop" : "True class before";
    $("#d-to-label").textContent = parcel ? "True crop" : "True class after";
    $("#d-vertex-hint").hidden = parcel;
    $("#d-reset-geometry").hidden = parcel;
    $("#geometry-state").hidden = parcel;
    if (!parcel) {
      this.model = new EditableGeometry(this.currentGeometry());
      this.model.addEventListener("change", () => this.drawEdited());
      this.handles = Object.entries(this.maps).map(
        ([key, map]) => new VertexHandles(map, this.model, { label: MAP_CELLS[key].label }),
      );
      for (const handles of this.handles) handles.enable();
    }
    this.editing = true;
    $("#correct-fields").hidden = false;
    $("#d-correct").setAttribute("aria-expanded", "true");
    document.body.classList.add("editing");
    this.drawEdited();
    $("#d-to").focus();
  }

  stopEditing() {
    for (const handles of this.handles) handles.disable();
    this.handles = [];
    this.model = null;
    this.editing = false;
    $("#correct-fields").hidden = true;
    $("#d-correct").setAttribute("aria-expanded", "false");
    document.body.classList.remove("editing");
    if (this.change) for (const map of Object.values(this.maps)) setOutline(map, this.currentGeometry());
  }

  drawEdited() {
    if (!this.model) return;
    const original = this.model.changed ? this.currentGeometry() : null;
    for (const map of Object.values(this.maps)) setOutline(map, this.model.geometry, { original });
    const n = this.model.moved.size;
    $("#geometry-state").textContent = n ? `${n} vertex${n === 1 ? "" : "es"} moved.` : "Outline unchanged.";
  }

  // ---- deciding ----------------------------------------------------------------------------------------------------

  async decide(action) {
    const c = this.change;
    if (!c || this.busy || this.conflict) return;
    if (!hasRole("validator")) {
      $("#decision-error").textContent = `Your role (${session.user?.role}) cannot decide: ask an admin for validator.`;
      return;
    }
    const decision = { action, version: c.version };
    const comment = $("#d-comment").value.trim();
    if (comment) decision.comment = comment;
    if (action === "correct") {
      if (!this.editing) {
        this.startEditing();
        return;
      }
      const from = Number($("#d-from").value);
      const to = Number($("#d-to").value);
      if (isParcelCheck(c)) {
        if (to === c.from_class) {
          $("#decision-error").textContent = "That is the declared crop: the declaration holds (reject the check).";
          return;
        }
        if (to === c.to_class) {
          $("#decision-error").textContent = "That is the predicted crop: the prediction is right (confirm it).";
          return;
        }
        decision.to_class = to;
      } else {
        if (from !== c.from_class) decision.from_class = from;
        if (to !== c.to_class) decision.to_class = to;
        if (this.model?.changed) decision.geometry = this.model.toGeoJSON();
        if (decision.from_class === undefined && decision.to_class === undefined && !decision.geometry) {
          $("#decision-error").textContent = "Nothing is corrected yet: choose another class or move a vertex.";
          return;
        }
        if (from === to) {
          $("#decision-error").textContent = "The classes before and after are the same: that is no change (reject it).";
          return;
        }
      }
    }
    this.busy = true;
    this.setButtons();
    $("#decision-error").textContent = "";
    try {
      const updated = await api.decide(c.id, decision);
      noteDecision(updated);
      announce(`${ACTION_VERBS[action]}: ${transitionLabel(c)} (version ${updated?.version ?? "?"}).`);
      this.busy = false;
      this.stopEditing();
      if ($("#stats").open) this.loadStats();
      await this.advance(c.id);
    } catch (err) {
      if (err.status === 409) this.showConflict(err.body?.current, decision.version);
      else if (err.status === 401) $("#decision-error").textContent = "Your session has ended: log in again.";
      else $("#decision-error").textContent = `Not saved: ${err.message}`;
    } finally {
      this.busy = false;
      this.setButtons();
    }
  }

  showConflict(current, yourVersion) {
    this.conflict = true;
    this.stopEditing();
    const box = $("#conflict");
    $("#conflict-yours").textContent = String(yourVersion);
    const rows = [];
    if (current) {
      rows.push(["Status now", current.status], ["Version now", String(current.version)]);
      const last = (current.decisions || []).at(-1);
      if (last) {
        rows.push(["Last decision", `${last.action} by ${last.decided_by ?? "?"}, ${formatDateTime(last.decided_at)}`]);
        if (last.comment) rows.push(["Comment", last.comment]);
      }
      if (current.corrected_from_class != null || current.corrected_to_class != null) {
        rows.push(["Corrected classes", `${current.corrected_from_class ?? "–"} → ${current.corrected_to_class ?? "–"}`]);
      }
    } else rows.push(["Current state", "unknown: reload the change"]);
    $("#conflict-current").replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    box.hidden = false;
    this.setButtons();
    $("#conflict-reload").focus();
  }

  hideConflict() {
    this.conflict = false;
    $("#conflict").hidden = true;
  }

  // ---- keyboard ------------------------------------------------------------------------------------------------------

  onKey(event) {
    if ($("#view-validate").hidden || event.defaultPrevented || event.isComposing) return;
    const target = event.target;
    const typing = isTyping(target);
    if (event.key === "Escape") {
      if (typing) target.blur();
      else if (this.editing) this.stopEditing();
      else return;
      event.preventDefault();
      return;
    }
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      if (this.editing) {
        event.preventDefault();
        this.decide("correct");
      }
      return;
    }
    if (typing || event.altKey || event.ctrlKey || event.metaKey) return;
    if (target.classList?.contains("vertex-handle")) return; // arrow keys move the vertex
    const onMap = Boolean(target.closest?.(".maplibregl-map")); // arrow keys pan a focused map
    const actions = {
      c: () => this.decide("confirm"),
      r: () => this.decide("reject"),
      e: () => (this.editing ? this.stopEditing() : this.startEditing()),
      j: () => this.next(),
      k: () => this.previous(),
      ArrowDown: onMap ? null : () => this.next(),
      ArrowUp: onMap ? null : () => this.previous(),
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  }

  // ---- statistics ----------------------------------------------------------------------------------------------------

  async loadStats() {
    const body = $("#stats-body");
    body.replaceChildren(h("p", { class: "hint" }, "Loading…"));
    const p = this.params();
    try {
      const stats = await api.stats({
        project: p.project,
        kind: p.kind,
        season_before: p.season_before,
        season_after: p.season_after,
      });
      body.replaceChildren(...renderStats(stats));
    } catch (err) {
      body.replaceChildren(h("p", { class: "error" }, `Could not read the statistics: ${err.message}`));
    }
  }
}

function cell(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(2);
  if (value && typeof value === "object") return JSON.stringify(value);
  return value ?? "–";
}

function table(rows, columns) {
  const keys = columns || [...new Set(rows.flatMap((r) => Object.keys(r)))].map((k) => [k, k.replace(/_/g, " ")]);
  return h(
    "table",
    { class: "stats-table" },
    h("thead", {}, h("tr", {}, keys.map(([, label]) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, keys.map(([k]) => h("td", {}, cell(r[k])))))),
  );
}

const share = (v) => (v === null || v === undefined ? "–" : `${Math.round(v * 100)} %`);
const seconds = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} s`);

/** The statistics answer (per operator, per transition; see /api/stats) as two compact tables. */
export function renderStats(stats) {
  if (!stats || !Array.isArray(stats.operators) || !Array.isArray(stats.transitions)) {
    // Not the shape this page knows: show whatever came, as tables.
    if (Array.isArray(stats)) return [table(stats)];
    return Object.entries(stats || {}).map(([k, v]) =>
      Array.isArray(v) ? table(v) : h("p", {}, `${k.replace(/_/g, " ")}: ${cell(v)}`),
    );
  }
  const columns = [
    ["label", ""],
    ["decided", "decided"],
    ["share", "confirmed"],
    ["time", "median"],
  ];
  const operators = stats.operators.map((o) => ({
    label: o.operator,
    decided: o.decided,
    share: share(o.confirmed_share),
    time: seconds(o.median_seconds_per_decision),
  }));
  const transitions = stats.transitions.map((t) => ({
    label: `${t.from_name} → ${t.to_name}`,
    decided: `${t.decided} / ${t.changes}`,
    share: share(t.confirmed_share),
    time: seconds(t.median_seconds_per_decision),
  }));
  return [
    h("p", {}, `${stats.decided} of ${stats.changes} changes decided.`),
    h("h5", {}, "Per operator"),
    operators.length ? table(operators, columns) : h("p", { class: "hint" }, "No decisions yet."),
    h("h5", {}, "Per transition (confirmed share: the change map's user's accuracy)"),
    transitions.length ? table(transitions, columns) : h("p", { class: "hint" }, "No changes."),
    h("p", { class: "hint" }, `Time per decision: ${stats.timing}`),
  ];
}
