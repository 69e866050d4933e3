// The Viewer: a season's map (class, confidence or change map) over the satellite imagery, the change
// polygons coloured by status, a legend, comparison with another season's map or with imagery (side by
// side, synchronised, or with a swipe: maplibre-gl-compare), and a pixel's classes, confidences and NDVI.

import { api, tiles } from "./api.js";
import { $, announce, fillSelect, formatConfidence, h, swatch } from "./dom.js";
import {
  STATUS_COLOURS,
  STATUS_LABELS,
  createMap,
  cssColour,
  pinMarker,
  setChanges,
  setOpacity,
  setRaster,
  syncMaps,
} from "./maplayers.js";
import { renderNdviChart } from "./ndvi-chart.js";
import { seasonsOf, session } from "./session.js";

const maplibregl = window.maplibregl;
const BAND_LABELS = { CLASS: "class map", CONFIDENCE: "confidence", CHANGE: "change map" };
const RENDER_LABELS = { true_color: "true colour", false_color: "false colour" };

/** The acquisition dates of a season (cached; none when the service has no imagery for it). */
const datesCache = new Map();
export function imageryDates(season) {
  if (!datesCache.has(season)) {
    datesCache.set(
      season,
      api.imageryDates(season).catch((err) => {
        datesCache.delete(season);
        if (err.status !== 404) announce(`No acquisition dates for ${season}: ${err.message}`, "error");
        return [];
      }),
    );
  }
  return datesCache.get(season);
}

/** The options of an acquisition select: the season composite, then each date. */
export async function fillDates(select, season) {
  const dates = await imageryDates(season);
  return fillSelect(select, [
    { value: "composite", label: "Season composite" },
    ...dates.map((d) => ({ value: d, label: d })),
  ]);
}

export class Viewer {
  constructor() {
    this.started = null;
    this.mapA = null;
    this.mapB = null;
    this.compare = null;
    this.unsync = null;
    this.pins = [];
    this.mode = "off";
  }

  show() {
    if (!this.started) this.started = this.start();
    else this.started.then(() => this.resize());
    return this.started;
  }

  get project() {
    return session.projects.find((p) => p.project === $("#v-project").value) || session.projects[0];
  }

  get product() {
    const products = this.project.products || [];
    return products.find((p) => p.id === $("#v-product").value) || products[0] || { id: "", legend: [] };
  }

  async start() {
    fillSelect(
      $("#v-project"),
      session.projects.map((p) => ({ value: p.project, label: p.project })),
    );
    this.fillProjectFields();
    this.mapA = await createMap("map-a", { bounds: this.project.bounds, label: "Map" });
    this.mapA.on("click", (e) => this.pixel(e.lngLat));

    $("#v-project").addEventListener("change", () => {
      this.fillProjectFields();
      this.mapA.fitBounds(this.project.bounds, { padding: 24, animate: false });
      this.refresh();
    });
    $("#v-product").addEventListener("change", () => {
      this.fillBands();
      this.refresh();
      if (this.lastPixel) this.pixel(this.lastPixel); // the pixel's classes of the product now shown
    });
    for (const id of ["#v-band", "#v-changes", "#v-render", "#v-date", "#v-compare-season"]) {
      $(id).addEventListener("change", () => this.refresh());
    }
    $("#v-season").addEventListener("change", () => this.refresh({ datesChanged: true }));
    for (const id of ["#v-compare-mode", "#v-compare-with", "#v-compare-render", "#v-compare-date"]) {
      $(id).addEventListener("change", () => this.refresh());
    }
    $("#v-opacity").addEventListener("input", () => this.applyOpacity());
    $("#v-swipe").addEventListener("input", () => this.applySwipe());
    $("#viewer-form").addEventListener("submit", (e) => e.preventDefault());
    session.bus.addEventListener("decided", () => this.refreshChanges());
    window.addEventListener("resize", () => this.applySwipe());
    await this.refresh({ datesChanged: true });
  }

  fillProjectFields() {
    const p = this.project;
    fillSelect(
      $("#v-product"),
      (p.products || []).map((x) => ({ value: x.id, label: x.id.replace(/_/g, " ") })),
    );
    this.fillBands();
    const seasons = seasonsOf(p, { all: true });
    const options = seasons.map((s) => ({
      value: s.id,
      label: s.published === false ? `${s.id} (not published)` : s.id,
      disabled: s.published === false,
    }));
    const published = seasons.filter((s) => s.published !== false);
    const latest = published.length ? published[published.length - 1].id : undefined;
    fillSelect($("#v-season"), options, latest);
    const previous = published.length > 1 ? published[published.length - 2].id : latest;
    fillSelect($("#v-compare-season"), options, previous);
  }

  /** Only the layers the product has (another product than the primary one has no change map). */
  fillBands() {
    const bands = this.product.bands || ["CLASS", "CONFIDENCE", "CHANGE"];
    const select = $("#v-band");
    for (const option of select.options) option.disabled = !bands.includes(option.value);
    if (!bands.includes(select.value)) select.value = bands[0];
  }

  get opacity() {
    return Number($("#v-opacity").value) / 100;
  }

  /** Re-read every control and bring the maps, the legend and the labels in line with them (one at a time). */
  refresh(options = {}) {
    this.pending = (this.pending || Promise.resolve()).then(() => this.apply(options));
    return this.pending.catch((err) => announce(`The viewer could not update: ${err.message}`, "error"));
  }

  async apply({ datesChanged = false } = {}) {
    const season = $("#v-season").value;
    const band = $("#v-band").value;
    const render = $("#v-render").value;
    const mode = $("#v-compare-mode").value;
    const compareWith = $("#v-compare-with").value;
    $("#v-compare-map-fields").hidden = compareWith !== "map";
    $("#v-compare-imagery-fields").hidden = compareWith !== "imagery";
    $("#v-swipe-fields").hidden = mode !== "swipe";
    $("#v-date").disabled = !render;
    if (datesChanged) {
      await Promise.all([fillDates($("#v-date"), season), fillDates($("#v-compare-date"), season)]);
    }
    this.renderLegend(band);

    const bounds = this.project.bounds;
    const showChanges = $("#v-changes").checked;
    const date = $("#v-date").value;
    setRaster(this.mapA, "imagery", render ? tiles.imagery(season, render, date) : null, { bounds });
    setRaster(this.mapA, "map", tiles.map(season, band, this.product.id), { bounds, opacity: this.opacity });
    setChanges(this.mapA, showChanges ? this.changesUrl(season) : null);
    const productName = this.product.id.replace(/_/g, " ");
    const imageryLabel = render ? ` over ${RENDER_LABELS[render]} ${date === "composite" ? "composite" : date}` : "";
    $("#label-a").textContent = `${season} · ${productName} ${BAND_LABELS[band]}${imageryLabel}`;

    await this.setMode(mode);
    if (mode !== "off") {
      if (compareWith === "map") {
        const other = $("#v-compare-season").value;
        setRaster(this.mapB, "imagery", render ? tiles.imagery(other, render, "composite") : null, { bounds });
        setRaster(this.mapB, "map", tiles.map(other, band, this.product.id), { bounds, opacity: this.opacity });
        setChanges(this.mapB, showChanges ? this.changesUrl(other) : null);
        const img = render ? ` over ${RENDER_LABELS[render]} composite` : "";
        $("#label-b").textContent = `${other} · ${productName} ${BAND_LABELS[band]}${img}`;
      } else {
        const cRender = $("#v-compare-render").value;
        const cDate = $("#v-compare-date").value;
        setRaster(this.mapB, "imagery", tiles.imagery(season, cRender, cDate), { bounds });
        setRaster(this.mapB, "map", null);
        setChanges(this.mapB, null);
        $("#label-b").textContent =
          `${season} · ${RENDER_LABELS[cRender]} imagery, ${cDate === "composite" ? "season composite" : cDate}`;
      }
    }
    document.body.dataset.viewerSeason = season;
  }

  changesUrl(season) {
    return tiles.changes({ project: this.project.project, season_after: season }, session.changesRevision);
  }

  refreshChanges() {
    if (!this.mapA || !$("#v-changes").checked) return;
    setChanges(this.mapA, this.changesUrl($("#v-season").value));
    if (this.mapB && this.mode !== "off" && $("#v-compare-with").value === "map") {
      setChanges(this.mapB, this.changesUrl($("#v-compare-season").value));
    }
  }

  applyOpacity() {
    $("#v-opacity-value").textContent = `${$("#v-opacity").value} %`;
    setOpacity(this.mapA, "map", this.opacity);
    if (this.mapB) setOpacity(this.mapB, "map", this.opacity);
  }

  applySwipe() {
    const pct = Number($("#v-swipe").value);
    $("#v-swipe-value").textContent = `${pct} %`;
    if (this.compare) this.compare.setSlider(($("#viewer-maps").clientWidth * pct) / 100);
  }

  /** Lay the maps out for `mode` (off, side, swipe) and connect them the way the mode needs. */
  async setMode(mode) {
    if (mode === this.mode && (mode === "off" || this.mapB)) return;
    if (this.compare) {
      this.compare.remove();
      this.compare = null;
    }
    if (this.unsync) {
      this.unsync();
      this.unsync = null;
    }
    const box = $("#viewer-maps");
    box.classList.remove(`mode-${this.mode}`);
    box.classList.add(`mode-${mode}`);
    this.mode = mode;
    if (mode !== "off" && !this.mapB) {
      // Made when first needed, once its container is laid out (a hidden map has no size).
      const map = await createMap("map-b", { bounds: this.project.bounds, label: "Comparison map" });
      map.on("click", (e) => this.pixel(e.lngLat));
      this.mapB = map;
    }
    this.resize();
    if (mode === "off") return;
    this.mapB.jumpTo({ center: this.mapA.getCenter(), zoom: this.mapA.getZoom() });
    if (mode === "side") this.unsync = syncMaps([this.mapA, this.mapB]);
    else {
      this.compare = new maplibregl.Compare(this.mapA, this.mapB, box, { orientation: "vertical" });
      this.compare.on("slideend", ({ currentPosition }) => {
        const pct = Math.round((100 * currentPosition) / Math.max(1, box.clientWidth));
        $("#v-swipe").value = String(pct);
        $("#v-swipe-value").textContent = `${pct} %`;
      });
      this.applySwipe();
    }
  }

  resize() {
    this.mapA?.resize();
    this.mapB?.resize();
  }

  renderLegend(band) {
    const list = $("#legend-list");
    const classes = (this.product.legend || []).filter((c) => c.id !== 0);
    const byId = new Map(classes.map((c) => [c.id, c]));
    if (band === "CONFIDENCE") {
      list.replaceChildren(
        h("li", {}, h("span", { class: "swatch ramp", "aria-hidden": "true" }), "confidence, 0 % (dark) to 100 % (light)"),
      );
    } else if (band === "CHANGE") {
      const transitions = this.project.transitions || [];
      list.replaceChildren(
        ...transitions.map((t) =>
          h(
            "li",
            {},
            swatch(cssColour(byId.get(t.from)?.color), t.from_name),
            swatch(cssColour(t.color || byId.get(t.to)?.color), t.to_name),
            `${t.from_name} → ${t.to_name}`,
          ),
        ),
      );
      if (!transitions.length) list.replaceChildren(h("li", {}, "no transitions"));
    } else {
      list.replaceChildren(...classes.map((c) => h("li", {}, swatch(cssColour(c.color), c.name), c.name)));
    }
    $("#status-legend").replaceChildren(
      ...Object.entries(STATUS_COLOURS).map(([status, colour]) =>
        h("li", {}, swatch(colour, status), STATUS_LABELS[status]),
      ),
    );
  }

  /** The pixel at `lngLat`: class and confidence in each shown map, the change under it, its NDVI series. */
  async pixel(lngLat) {
    this.lastPixel = lngLat;
    for (const pin of this.pins) pin.remove();
    this.pins = [this.mapA, this.mapB]
      .filter((m) => m && (m === this.mapA || this.mode !== "off"))
      .map((m) => pinMarker().setLngLat(lngLat).addTo(m));
    const seasons = [$("#v-season").value];
    if (this.mode !== "off" && $("#v-compare-with").value === "map") seasons.push($("#v-compare-season").value);
    const unique = [...new Set(seasons)];
    const body = $("#pixel-body");
    $("#pixel-hint").hidden = true;
    body.replaceChildren(h("p", { class: "hint" }, "Reading the pixel…"));
    let answer;
    try {
      answer = await api.pixel(lngLat.lng, lngLat.lat, unique, this.product.id);
    } catch (err) {
      body.replaceChildren(h("p", { class: "error" }, `Could not read the pixel: ${err.message}`));
      return;
    }
    const classes = new Map((this.product.legend || []).map((c) => [c.id, c]));
    const rows = unique.map((season) => {
      const v = (answer.seasons || {})[season];
      if (!v || v.class === null || v.class === undefined || v.class === 0) {
        return h("tr", {}, h("th", { scope: "row" }, season), h("td", { colspan: 2 }, "no data"));
      }
      const name = v.class_name || classes.get(v.class)?.name || `class ${v.class}`;
      return h(
        "tr",
        { dataset: { season } },
        h("th", { scope: "row" }, season),
        h("td", { class: "pixel-class" }, swatch(cssColour(classes.get(v.class)?.color), name), name),
        h("td", { class: "pixel-confidence" }, formatConfidence(v.confidence)),
      );
    });
    const parts = [
      h("p", { class: "coords" }, `${lngLat.lng.toFixed(5)}° E, ${lngLat.lat.toFixed(5)}° N`),
      h(
        "table",
        { class: "pixel-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Map"), h("th", {}, "Class"), h("th", {}, "Confidence"))),
        h("tbody", {}, rows),
      ),
    ];
    const point = this.mapA.project(lngLat);
    const hits = this.mapA.getLayer("changes-fill")
      ? this.mapA.queryRenderedFeatures(point, { layers: ["changes-fill"] })
      : [];
    for (const f of hits.slice(0, 3)) {
      const id = f.properties.id;
      parts.push(
        h(
          "p",
          { class: "pixel-change" },
          swatch(STATUS_COLOURS[f.properties.status], f.properties.status),
          `Change polygon, ${STATUS_LABELS[f.properties.status] || f.properties.status}`,
          id ? " · " : "",
          id ? h("a", { href: `#validate/${encodeURIComponent(id)}` }, "open in the Validation Tool") : "",
        ),
      );
    }
    body.replaceChildren(...parts);
    renderNdviChart($("#ndvi-plot"), answer.ndvi || {});
  }
}
