"""Stage 5, merge_features: every tile's samples in one dataset with a spatial train/validation/test split.

Neighbouring pixels are nearly copies of each other, so a random pixel split would
report optimistic accuracies. Samples are therefore split by spatial group: blocks of
``block_tiles`` x ``block_tiles`` grid tiles when there are enough blocks, else single
reference polygons. Groups are linked through the polygons they share (a polygon
crossing a block edge joins both blocks into one group), so no polygon and no block
ever sits on two sides of the split.

Groups go to the splits greedily in a seeded order, each to the split whose per-class
shortfall against ``split_fractions`` it fills best. Before that, every class gets a
group in train; a class with 2 groups gets one in test as well, a class with 3+ groups
one in each split. So a class found in a single group is in train only (no validation
or test figures for it; the metadata lists it under ``classes_missing``).

Output folder ``dataset.npz`` (compressed): X, y, tile (str), row, col, polygon_id,
split (0 train, 1 validation, 2 test).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext
    from lcms_tasks.preflight import Need

NAME = "merge_features"
DATASET_FILE = "dataset.npz"
SPLIT_NAMES = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = 0, 1, 2
log = logging.getLogger(__name__)


class Options(StrictModel):
    """Options of the merge_features stage."""

    split_fractions: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15), description="Target shares of samples in train, validation, test (sum 1)."
    )
    block_tiles: int = Field(1, ge=1, description="Tile blocks of block_tiles x block_tiles grid tiles form groups.")
    min_blocks: int = Field(
        20, ge=2, description="group_by 'auto': use tile blocks when at least this many blocks hold samples."
    )
    group_by: Literal["tile_block", "polygon", "auto"] = Field(
        "auto", description="Spatial group of the split: tile blocks, reference polygons, or 'auto'."
    )
    link_max_blocks: int = Field(
        4,
        ge=1,
        description="group_by 'tile_block': a polygon spanning at most this many blocks joins them into one group "
        "(a field stays on one side); larger polygons (a forest across the whole area) are cut at block edges "
        "instead, or they would merge every block into one group.",
    )
    seed: int = Field(42, description="Seed of the group shuffling.")
    allow_missing_tiles: bool = Field(
        False, description="Skip tiles without a complete sampling output (listed in the metadata) instead of failing."
    )

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in v) or not math.isclose(sum(v), 1.0, abs_tol=1e-6) or v[0] <= 0:
            raise ValueError(f"split_fractions {v} must be >= 0, sum to 1, with a train share > 0")
        return v


# -- pure functions ---------------------------------------------------------------------------------


def tile_blocks(tile_ids: Sequence[str], block_tiles: int) -> np.ndarray:
    """Block number per tile id '{epsg}_{col}_{row}': tiles in the same block_tiles² cell share it."""
    keys: dict[tuple[int, int, int], int] = {}
    out = np.empty(len(tile_ids), np.int64)
    for i, tid in enumerate(tile_ids):
        epsg, col, row = (int(p) for p in tid.split("_"))
        key = (epsg, col // block_tiles, row // block_tiles)
        out[i] = keys.setdefault(key, len(keys))
    return out


def link_groups(base_group: np.ndarray, polygon_id: np.ndarray, max_span: int | None = None) -> np.ndarray:
    """Groups of samples: ``base_group`` ids merged wherever they share a polygon (0 = no polygon).

    Connected components of the graph joining each sample's base group with its polygon,
    returned as 0..n-1 per sample. Polygons found in more than ``max_span`` base groups do not
    link them (they are cut at group edges).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = base_group.size
    if n == 0:
        return np.zeros(0, np.int64)
    _, g = np.unique(base_group, return_inverse=True)
    has_poly = polygon_id != 0
    if max_span is not None and has_poly.any():
        pairs = np.unique(np.stack([polygon_id[has_poly], g[has_poly]]), axis=1)
        polys, span = np.unique(pairs[0], return_counts=True)
        too_wide = polys[span > max_span]
        has_poly &= ~np.isin(polygon_id, too_wide)
    _, p = np.unique(polygon_id[has_poly], return_inverse=True)
    n_g = int(g.max()) + 1
    n_nodes = n_g + (int(p.max()) + 1 if p.size else 0)
    graph = coo_matrix((np.ones(p.size), (g[has_poly], n_g + p)), shape=(n_nodes, n_nodes))
    _, comp = connected_components(graph, directed=False)
    _, labels = np.unique(comp[g], return_inverse=True)
    return labels.astype(np.int64)


def choose_grouping(
    tiles: np.ndarray, polygon_id: np.ndarray, options: Options
) -> tuple[np.ndarray, Literal["tile_block", "polygon"]]:
    """Group per sample and the grouping used (see :class:`Options`)."""
    unique_tiles, tile_idx = np.unique(tiles, return_inverse=True)
    blocks = tile_blocks([str(t) for t in unique_tiles], options.block_tiles)[tile_idx] if tiles.size else tile_idx
    mode = options.group_by
    if mode == "auto":
        mode = "tile_block" if np.unique(blocks).size >= options.min_blocks else "polygon"
    if mode == "tile_block":
        return link_groups(blocks, polygon_id, options.link_max_blocks), "tile_block"
    # Polygon groups; a sample without a polygon (should not happen) is grouped with its tile.
    base = np.where(polygon_id != 0, polygon_id, -(tile_idx.astype(np.int64) + 1))
    _, groups = np.unique(base, return_inverse=True)
    return groups.astype(np.int64), "polygon"


def assign_splits(
    groups: np.ndarray, y: np.ndarray, fractions: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """Split (0 train, 1 validation, 2 test) per sample; every sample of a group in the same split.

    Coverage first (rarest classes first): each class gets a group in train; with 2+
    groups, one goes to test; with 3+, another to validation (the group closest in size
    to the split's target for that class). Then
    the other groups, in seeded random order, go to the split with the largest share of
    unmet per-class target (``fractions`` of each class's samples).
    """
    n_samples = groups.size
    split = np.full(n_samples, -1, np.int64)
    if n_samples == 0:
        return split
    _, g = np.unique(groups, return_inverse=True)
    classes, c = np.unique(y, return_inverse=True)
    n_groups, n_classes = int(g.max()) + 1, classes.size
    counts = np.zeros((n_groups, n_classes), np.int64)  # samples per group and class
    np.add.at(counts, (g, c), 1)
    totals = counts.sum(axis=0)
    target = np.outer(np.asarray(fractions, float), totals)  # (3, classes)
    have = np.zeros_like(target)
    group_split = np.full(n_groups, -1, np.int64)
    order = rng.permutation(n_groups)
    rank = np.empty(n_groups, np.int64)
    rank[order] = np.arange(n_groups)
    groups_per_class = (counts > 0).sum(axis=0)

    def put(group: int, s: int) -> None:
        group_split[group] = s
        have[s] += counts[group]

    # Coverage: train for every class, then test, then validation, rarest classes first.
    rare_first = np.argsort(groups_per_class, kind="stable")
    for s, min_groups in ((TRAIN, 1), (TEST, 2), (VALIDATION, 3)):
        if s != TRAIN and fractions[s] <= 0:
            continue
        for k in rare_first:
            if groups_per_class[k] < min_groups or have[s, k] > 0:
                continue
            free = np.flatnonzero((counts[:, k] > 0) & (group_split < 0))
            if free.size == 0:
                continue
            if s == TRAIN:
                pick = free[np.argmin(rank[free])]  # the first in the seeded order
            else:  # the group whose size of this class is closest to the split's target for it
                gap = np.abs(counts[free, k] - target[s, k])
                pick = free[np.lexsort((rank[free], gap))[0]]
            put(int(pick), s)

    # The rest: each group to the split that most needs its classes (relative to each class's total).
    weight = 1.0 / np.maximum(totals, 1)
    for group in order:
        if group_split[group] >= 0:
            continue
        need = ((target - have) * weight) @ (counts[group] * weight)  # (3,)
        need = np.where(np.asarray(fractions) > 0, need, -np.inf)
        put(int(group), int(np.argmax(need)))
    split[:] = group_split[g]
    return split


def split_class_counts(y: np.ndarray, split: np.ndarray) -> dict[str, dict[str, int]]:
    """{split name: {class id: samples}}."""
    out: dict[str, dict[str, int]] = {}
    for s, name in enumerate(SPLIT_NAMES):
        ids, counts = np.unique(y[split == s], return_counts=True)
        out[name] = {str(int(i)): int(n) for i, n in zip(ids, counts, strict=True)}
    return out


# -- stage ------------------------------------------------------------------------------------------


def needs(ctx: RunContext) -> list[Need]:
    """The samples of every tile of the run (of at least one with ``allow_missing_tiles``)."""
    from lcms_tasks.preflight import Need

    options: Options = ctx.config.stages.merge_features
    return [Need("sampling", ctx.season, any_tile=options.allow_missing_tiles, what="the samples")]


def run(ctx: RunContext) -> list[str]:
    """Merge the samples of the run's tiles (every project tile, or the run's subset) into one split dataset."""
    from lcms_tasks.errors import ArtefactMissingError, StageError
    from lcms_tasks.stages.sampling import NAME as SAMPLING
    from lcms_tasks.stages.sampling import SAMPLES_FILE

    options: Options = ctx.config.stages.merge_features
    tiles = ctx.tiles()
    metas: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for tile in tiles:
        try:
            metas[tile.id] = ctx.storage.read_marker(ctx.tile_uri(SAMPLING, tile.id))
        except ArtefactMissingError:
            missing.append(tile.id)
    if missing and not options.allow_missing_tiles:
        raise StageError(
            f"merge_features (season {ctx.season}): no complete sampling output for {len(missing)} tile(s): "
            f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''} (run sampling for them, or set "
            "stages.merge_features.allow_missing_tiles)"
        )
    used = [t for t, m in metas.items() if int(m.get("n_samples", 0)) > 0]
    skipped = {t: m.get("skipped_reason") or "no samples" for t, m in metas.items() if t not in used}
    if not used:
        raise StageError(f"merge_features (season {ctx.season}): no tile has samples ({len(metas)} tiles read)")
    names = list(metas[used[0]]["feature_names"])
    for t in used:
        if list(metas[t]["feature_names"]) != names:
            raise StageError(f"tile {t}: its feature names differ from tile {used[0]}'s; were features rerun?")

    # Allocate once from the markers' counts: the dataset can be large, concatenating would double it.
    n_total = sum(int(metas[t]["n_samples"]) for t in used)
    X = np.empty((n_total, len(names)), np.float32)
    y = np.empty(n_total, np.uint8)
    rows = np.empty(n_total, np.int32)
    cols = np.empty(n_total, np.int32)
    polygon_id = np.empty(n_total, np.int64)
    tile_col = np.empty(n_total, dtype=f"<U{max(len(t) for t in used)}")
    at = 0
    for t in used:
        with ctx.storage.reading_dir(ctx.tile_uri(SAMPLING, t)) as folder, np.load(folder / SAMPLES_FILE) as data:
            n = data["y"].size
            if n != int(metas[t]["n_samples"]) or data["X"].shape[1:] != (len(names),):
                raise StageError(f"tile {t}: {SAMPLES_FILE} does not match its metadata (n_samples, features)")
            sl = slice(at, at + n)
            X[sl], y[sl], rows[sl], cols[sl] = data["X"], data["y"], data["row"], data["col"]
            polygon_id[sl] = data["polygon_id"]
            tile_col[sl] = t
            at += n

    groups, grouping = choose_grouping(tile_col, polygon_id, options)
    split = assign_splits(groups, y, options.split_fractions, np.random.default_rng(options.seed))
    per_split = split_class_counts(y, split)
    all_classes = sorted(per_split["train"], key=int)
    classes_missing = {name: [c for c in all_classes if c not in per_split[name]] for name in SPLIT_NAMES[1:]}
    class_names = {str(c.id): c.name for c in ctx.config.legend()}
    for name, lacking in classes_missing.items():
        if lacking:
            log.warning(
                "%s: class(es) %s have no %s samples (too few spatial groups)",
                NAME,
                ", ".join(f"{class_names.get(c, 'class ' + c)} ({c})" for c in lacking),
                name,
            )
    meta = {
        "feature_names": names,
        "n_samples": n_total,
        "n_per_split": {name: int((split == s).sum()) for s, name in enumerate(SPLIT_NAMES)},
        "class_counts": per_split,
        "classes_missing": classes_missing,
        "grouping": grouping,
        "n_groups": int(np.unique(groups).size),
        "split_fractions": list(options.split_fractions),
        "seed": options.seed,
        "tiles_used": used,
        "tiles_skipped": skipped,
        "tiles_missing": missing,
        **ctx.coverage(),
    }
    uri = ctx.run_uri(NAME, "dataset")
    with ctx.storage.writing_dir(uri, ctx.marker_meta(NAME, None, meta)) as staging:
        np.savez_compressed(
            staging / DATASET_FILE,
            X=X,
            y=y,
            tile=tile_col,
            row=rows,
            col=cols,
            polygon_id=polygon_id,
            split=split.astype(np.uint8),
        )
    return [uri]
