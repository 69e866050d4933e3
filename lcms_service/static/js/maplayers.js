// MapLibre helpers shared by the Viewer and the Validation Tool: maps with no external resources, the
// service's raster layers (maps, imagery), the change polygons (vector tiles), outlines and synchronisation.
//
// Layers are kept in one stacking order whatever order they are added in: imagery at the bottom, then the
// map, the change polygons and the selected outline.

const maplibregl = window.maplibregl;

export const STATUS_COLOURS = {
  detected: "#f28e2b",
  confirmed: "#1a9850",
  rejected: "#8c8c8c",
  corrected: "#2b6cd4",
};
export const STATUS_LABELS = {
  detected: "detected (to decide)",
  confirmed: "confirmed",
  rejected: "rejected (false positive)",
  corrected: "corrected",
};

const ORDER = ["imagery", "map", "changes-fill", "changes-line", "outline-original", "outline-casing", "outline"];
const RASTER_MAXZOOM = 16; // beyond it MapLibre enlarges the z16 tiles instead of asking for more
const VECTOR_MAXZOOM = 16;

/** A colour from the API's legend (`#rrggbb`, a CSS colour, or [r, g, b]) as CSS. */
export function cssColour(color) {
  if (Array.isArray(color)) return `rgb(${color.slice(0, 3).join(",")})`;
  return color || "transparent";
}

function baseStyle() {
  // No glyphs, sprites or basemap: everything comes from the service, so the page works offline.
  return {
    version: 8,
    sources: {},
    layers: [{ id: "background", type: "background", paint: { "background-color": "#dde3e7" } }],
  };
}

/** A map in `container` showing `bounds` ([w, s, e, n]); resolves once its style is loaded. */
export function createMap(container, { bounds, label } = {}) {
  const map = new maplibregl.Map({
    container,
    style: baseStyle(),
    bounds: bounds || undefined,
    fitBoundsOptions: { padding: 24 },
    maxZoom: 20,
    dragRotate: false,
    pitchWithRotate: false,
    touchPitch: false,
    attributionControl: { compact: true, customAttribution: "LCMS" },
  });
  map.touchZoomRotate.disableRotation();
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-left");
  if (label) map.getCanvas().setAttribute("aria-label", label);
  map.tileErrors = [];
  map.on("error", (event) => {
    // Tile failures are kept for the status line; anything else is a bug worth seeing in the console.
    if (event.sourceId) map.tileErrors.push({ source: event.sourceId, message: event.error?.message });
    else console.error(event.error || event);
  });
  return new Promise((resolve) => map.once("load", () => resolve(map)));
}

function beforeId(map, layerId) {
  const rank = ORDER.indexOf(layerId);
  return ORDER.slice(rank + 1).find((id) => map.getLayer(id));
}

/** Show raster tiles `url` in `slot` ("imagery" or "map"); `null` removes the slot's layer. */
export function setRaster(map, slot, url, { opacity = 1, bounds } = {}) {
  const sourceId = `${slot}-src`;
  const source = map.getSource(sourceId);
  if (!url) {
    if (map.getLayer(slot)) map.removeLayer(slot);
    if (source) map.removeSource(sourceId);
    return;
  }
  if (source && source.tiles && source.tiles[0] === url) {
    map.setPaintProperty(slot, "raster-opacity", opacity);
    return;
  }
  if (source) {
    map.removeLayer(slot);
    map.removeSource(sourceId);
  }
  map.addSource(sourceId, {
    type: "raster",
    tiles: [url],
    tileSize: 256,
    maxzoom: RASTER_MAXZOOM,
    bounds: bounds || undefined,
  });
  map.addLayer(
    {
      id: slot,
      type: "raster",
      source: sourceId,
      paint: { "raster-opacity": opacity, "raster-fade-duration": 100, "raster-resampling": "nearest" },
    },
    beforeId(map, slot),
  );
}

export function setOpacity(map, slot, opacity) {
  if (map.getLayer(slot)) map.setPaintProperty(slot, "raster-opacity", opacity);
}

const statusColour = ["match", ["get", "status"], ...Object.entries(STATUS_COLOURS).flat(), "#f28e2b"];

/** The change polygons from the service's vector tiles (`url`), filled and outlined by status; `null` hides them. */
export function setChanges(map, url) {
  const source = map.getSource("changes-src");
  if (!url) {
    for (const id of ["changes-line", "changes-fill"]) if (map.getLayer(id)) map.removeLayer(id);
    if (source) map.removeSource("changes-src");
    return;
  }
  if (source && source.tiles && source.tiles[0] === url) return;
  if (source) {
    if (typeof source.setTiles === "function") {
      source.setTiles([url]);
      return;
    }
    setChanges(map, null);
  }
  map.addSource("changes-src", { type: "vector", tiles: [url], maxzoom: VECTOR_MAXZOOM });
  map.addLayer(
    {
      id: "changes-fill",
      type: "fill",
      source: "changes-src",
      "source-layer": "default", // tipg's MVT layer name
      paint: { "fill-color": statusColour, "fill-opacity": 0.25 },
    },
    beforeId(map, "changes-fill"),
  );
  map.addLayer(
    {
      id: "changes-line",
      type: "line",
      source: "changes-src",
      "source-layer": "default",
      paint: { "line-color": statusColour, "line-width": 2 },
    },
    beforeId(map, "changes-line"),
  );
}

function setGeoJson(map, sourceId, data) {
  const source = map.getSource(sourceId);
  if (source) source.setData(data);
  else map.addSource(sourceId, { type: "geojson", data });
}

const EMPTY = { type: "FeatureCollection", features: [] };

/**
 * Outline `geometry` (GeoJSON) on `map`, over every other layer; `original`, when given, is drawn dashed
 * underneath (the detected outline while a correction moves vertices).
 */
export function setOutline(map, geometry, { original = null, colour = "#ffdd00" } = {}) {
  setGeoJson(map, "outline-src", geometry ? { type: "Feature", geometry, properties: {} } : EMPTY);
  setGeoJson(map, "outline-original-src", original ? { type: "Feature", geometry: original, properties: {} } : EMPTY);
  if (!map.getLayer("outline-original")) {
    map.addLayer(
      {
        id: "outline-original",
        type: "line",
        source: "outline-original-src",
        paint: { "line-color": "#ffffff", "line-width": 1.5, "line-dasharray": [2, 2] },
      },
      beforeId(map, "outline-original"),
    );
  }
  if (!map.getLayer("outline-casing")) {
    map.addLayer(
      {
        id: "outline-casing",
        type: "line",
        source: "outline-src",
        paint: { "line-color": "#000000", "line-width": 4, "line-opacity": 0.6 },
      },
      beforeId(map, "outline-casing"),
    );
    map.addLayer({ id: "outline", type: "line", source: "outline-src", paint: { "line-color": colour, "line-width": 2 } });
  }
}

/** Keep `maps` on the same view (centre, zoom, bearing, pitch); returns the function that stops it. */
export function syncMaps(maps) {
  let syncing = false;
  const handlers = maps.map((source) => {
    const follow = () => {
      if (syncing) return;
      syncing = true;
      const view = {
        center: source.getCenter(),
        zoom: source.getZoom(),
        bearing: source.getBearing(),
        pitch: source.getPitch(),
      };
      for (const other of maps) if (other !== source) other.jumpTo(view);
      syncing = false;
    };
    source.on("move", follow);
    return follow;
  });
  return () => maps.forEach((map, i) => map.off("move", handlers[i]));
}

/** The bounding box [w, s, e, n] of a GeoJSON geometry. */
export function geometryBounds(geometry) {
  let w = Infinity;
  let s = Infinity;
  let e = -Infinity;
  let n = -Infinity;
  const visit = (coords) => {
    if (typeof coords[0] === "number") {
      w = Math.min(w, coords[0]);
      e = Math.max(e, coords[0]);
      s = Math.min(s, coords[1]);
      n = Math.max(n, coords[1]);
    } else coords.forEach(visit);
  };
  visit(geometry.coordinates);
  return [w, s, e, n];
}

/** A marker showing where the user clicked. */
export function pinMarker() {
  const el = document.createElement("div");
  el.className = "pin-marker";
  el.setAttribute("aria-hidden", "true");
  return new maplibregl.Marker({ element: el });
}
