// Moving the vertices of a change polygon: one editable GeoJSON geometry shared by several maps, each map
// showing a draggable handle per vertex (a MapLibre Marker, so dragging never pans the map). A handle also
// takes the keyboard: focus it (Tab) and move it with the arrow keys (Shift: farther).

const maplibregl = window.maplibregl;

/** A Polygon or MultiPolygon being edited; fires "change" ({detail: {source}}) when a vertex moves. */
export class EditableGeometry extends EventTarget {
  constructor(geometry) {
    super();
    this.reset(geometry);
  }

  reset(geometry) {
    if (!geometry || !["Polygon", "MultiPolygon"].includes(geometry.type)) {
      throw new Error(`only polygons can be edited, not ${geometry && geometry.type}`);
    }
    this.original = geometry;
    this.geometry = structuredClone(geometry);
    this.moved = new Set();
    this.dispatchEvent(new CustomEvent("change", { detail: { source: null, reset: true } }));
  }

  /** The rings (closed arrays of positions) of the geometry, in a fixed order. */
  rings() {
    return this.geometry.type === "Polygon" ? this.geometry.coordinates : this.geometry.coordinates.flat(1);
  }

  /** Every vertex once (a ring's closing position repeats its first): {ring, index, lngLat}. */
  vertices() {
    return this.rings().flatMap((ring, r) =>
      ring.slice(0, -1).map((position, i) => ({ ring: r, index: i, lngLat: [position[0], position[1]] })),
    );
  }

  move(ring, index, lngLat, source = null) {
    const positions = this.rings()[ring];
    const point = [Number(lngLat[0].toFixed(8)), Number(lngLat[1].toFixed(8))];
    positions[index] = point;
    if (index === 0) positions[positions.length - 1] = point.slice();
    this.moved.add(`${ring}:${index}`);
    this.dispatchEvent(new CustomEvent("change", { detail: { source, ring, index } }));
  }

  get changed() {
    return this.moved.size > 0;
  }

  toGeoJSON() {
    return structuredClone(this.geometry);
  }
}

const KEY_STEPS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

/** The vertex handles of `model` on one `map`. */
export class VertexHandles {
  constructor(map, model, { label = "map" } = {}) {
    this.map = map;
    this.model = model;
    this.label = label;
    this.markers = [];
    this.onChange = (event) => this.sync(event);
  }

  enable() {
    this.disable();
    const vertices = this.model.vertices();
    this.markers = vertices.map((v, n) => this.handle(v, n, vertices.length));
    this.model.addEventListener("change", this.onChange);
  }

  disable() {
    this.model.removeEventListener("change", this.onChange);
    for (const { marker } of this.markers) marker.remove();
    this.markers = [];
  }

  handle(vertex, n, total) {
    const el = document.createElement("div");
    el.className = "vertex-handle";
    el.tabIndex = 0;
    el.setAttribute("role", "button");
    el.setAttribute("aria-label", `Vertex ${n + 1} of ${total} on the ${this.label}: arrow keys move it`);
    el.dataset.ring = String(vertex.ring);
    el.dataset.index = String(vertex.index);
    const marker = new maplibregl.Marker({ element: el, draggable: true }).setLngLat(vertex.lngLat).addTo(this.map);
    const entry = { marker, ring: vertex.ring, index: vertex.index };
    marker.on("drag", () => {
      const p = marker.getLngLat();
      this.model.move(vertex.ring, vertex.index, [p.lng, p.lat], this);
    });
    el.addEventListener("keydown", (event) => {
      const step = KEY_STEPS[event.key];
      if (!step) return;
      event.preventDefault();
      event.stopPropagation(); // neither the queue's shortcuts nor the map's own arrow-key panning
      const px = event.shiftKey ? 10 : 2;
      const at = this.map.project(marker.getLngLat());
      const to = this.map.unproject([at.x + step[0] * px, at.y + step[1] * px]);
      marker.setLngLat(to);
      this.model.move(vertex.ring, vertex.index, [to.lng, to.lat], this);
    });
    return entry;
  }

  sync(event) {
    if (event.detail.reset) {
      this.enable();
      return;
    }
    if (event.detail.source === this) return;
    const rings = this.model.rings();
    for (const { marker, ring, index } of this.markers) {
      const p = rings[ring][index];
      marker.setLngLat(p);
    }
  }
}
