"""The MDA graph's ONNX inputs built with NumPy alone.

:class:`autopid.data.MDADataset` builds the same arrays for training, but it lives
with PyTorch and PyTorch Geometric, whose import alone (about 4 s) costs more than
scoring a whole file. This is its vectorised graph building, step for step, from raw
columns and a published normalisation; ``tests/test_predict_throughput.py`` checks the
arrays equal ``MDADataset.batch`` element for element, and every export checks the
scores against PyTorch (parity). The tracker charge gain maps the model was trained with
(``mda.calibration`` of ``preprocessing.json``) are applied by the same NumPy function
as in training (:mod:`autopid.calibration.gains`), to Data by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from autopid.calibration.gains import ChargeCalibration
from autopid.features import Normaliser


def _array(cols: Mapping[str, np.ndarray], norm: Normaliser, layout: Any, branch: str, layers: list[int],
           layer_axis: int) -> np.ndarray:
    """Normalised values of an array branch in its ROOT shape, layers selected (NaN kept)."""
    n = len(next(iter(cols.values())))
    x = norm.transform(cols, layout.feature_columns(branch)).reshape(n, *layout.feature_shape(branch))
    return np.take(x, [layer - 1 for layer in layers], axis=layer_axis + 1)


def _vector(cols: Mapping[str, np.ndarray], norm: Normaliser, layout: Any, branches: list[str]) -> np.ndarray:
    """Normalised columns with NaN set to 0 and one presence flag per column appended."""
    names = [c for b in branches for c in layout.feature_columns(b)]
    x = norm.transform(cols, names)
    present = np.isfinite(x)
    return np.concatenate([np.where(present, x, 0.0), present.astype(np.float32)], axis=1).astype(np.float32)


def _edges(hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge index (numbered over the whole batch) and type, in MDADataset's order: per
    event the layer-to-layer, X-to-Y and main-to-second-track edges, then the same reversed."""
    tracks, sides = hit.shape[1], hit.shape[3]
    node = np.full(hit.shape, -1, dtype=np.int64)
    node[hit] = np.arange(int(hit.sum()), dtype=np.int64)
    along = hit.transpose(0, 1, 3, 2)  # [N, T, S, L]: consecutive present layers of a track side
    chain = node.transpose(0, 1, 3, 2)[along]
    e0, t0, s0, _ = np.nonzero(along)
    group = (e0 * tracks + t0) * sides + s0
    same = group[1:] == group[:-1]
    src, dst, owner = [chain[:-1][same]], [chain[1:][same]], [e0[:-1][same]]
    kind = [np.zeros(int(same.sum()), np.int64)]
    xy = hit[..., 0] & hit[..., 1]  # X-to-Y within a layer
    src.append(node[..., 0][xy])
    dst.append(node[..., 1][xy])
    kind.append(np.ones(int(xy.sum()), np.int64))
    owner.append(np.nonzero(xy)[0])
    if tracks > 1:  # main-to-second track within a layer and side
        tt = hit[:, 0] & hit[:, 1]
        src.append(node[:, 0][tt])
        dst.append(node[:, 1][tt])
        kind.append(np.full(int(tt.sum()), 2, np.int64))
        owner.append(np.nonzero(tt)[0])
    s_all, d_all, k_all, o_all = (np.concatenate(a) for a in (src, dst, kind, owner))
    order = np.argsort(np.concatenate([2 * o_all, 2 * o_all + 1]), kind="stable")
    edge_index = np.stack([np.concatenate([s_all, d_all])[order], np.concatenate([d_all, s_all])[order]])
    return edge_index, np.concatenate([k_all, k_all])[order]


@dataclass
class Events:
    """Normalised per-event arrays of a batch of events; :meth:`feeds` builds the graphs
    of a slice of them (normalising once per read batch, graphs per ONNX Runtime call)."""

    pos: np.ndarray  # [N, T, L, S] normalised positions, 0 where no hit
    charge: np.ndarray  # [N, T, L, S] normalised charges, 0 where none
    hit: np.ndarray  # [N, T, L, S] a node
    has_charge: np.ndarray  # [N, T, L, S]
    layer_z: np.ndarray  # [L] node feature
    image: np.ndarray  # [N, 1, L, S]
    rigidity: np.ndarray  # [N, R]
    tof: np.ndarray  # [N, K]

    def __len__(self) -> int:
        return len(self.hit)

    def feeds(self, a: int = 0, b: int | None = None) -> dict[str, np.ndarray]:
        """ONNX inputs of events [a, b): ``x``, ``edge_index``, ``edge_type``, ``batch``,
        ``image``, ``rigidity``, ``tof``."""
        sl = slice(a, len(self) if b is None else b)
        hit = self.hit[sl]
        n = len(hit)
        _, t_idx, l_idx, s_idx = np.nonzero(hit)
        x = np.stack([self.pos[sl][hit], self.charge[sl][hit], self.has_charge[sl][hit].astype(np.float32),
                      self.layer_z[l_idx], s_idx.astype(np.float32), t_idx.astype(np.float32)],
                     axis=1).astype(np.float32)
        edge_index, edge_type = _edges(hit)
        return {"x": x, "edge_index": edge_index, "edge_type": edge_type,
                "batch": np.repeat(np.arange(n, dtype=np.int64), hit.reshape(n, -1).sum(axis=1)),
                "image": self.image[sl], "rigidity": self.rigidity[sl], "tof": self.tof[sl]}


def calibration_of(layout: Any) -> ChargeCalibration | None:
    """The tracker charge calibration an export recorded (``mda.calibration`` of
    ``preprocessing.json``), if any."""
    d = (layout.manifest.get("mda") or {}).get("calibration")
    return ChargeCalibration.from_dict(d) if d else None


def events(cols: Mapping[str, np.ndarray], layout: Any, *, domain: str | None = None,
           calibration: ChargeCalibration | None = None) -> Events:
    """:class:`Events` of raw columns (missing rules applied). ``layout`` is a
    :class:`~autopid.publish.inputs.StoredLayout` (or a
    :class:`~autopid.data.PreprocessedDataset`): the ``mda`` layout, feature shapes and
    the normaliser. The charges are calibrated (tracker gain map, TOF charge scales) for ``domain``
    (default: the calibration's default, Data) of ``calibration`` (default: the one the
    layout records; none: raw charges), as :class:`autopid.data.MDADataset` does."""
    m = layout.manifest["mda"]
    norm: Normaliser = layout.normaliser
    layers = sorted(set(m["position"]["layers"]) | set(m["charge"]["layers"]))
    cal = calibration if calibration is not None else calibration_of(layout)
    if cal is not None:  # calibrated charges (tracker gains, TOF charge scales; MC: overlay, hit removal) replace the raw ones
        cols = {**cols, **cal.calibrate(cols, layout, domain)}
    pos = _array(cols, norm, layout, m["position"]["branch"], layers, 1)  # [N, T, L, S]
    charge = _array(cols, norm, layout, m["charge"]["branch"], layers, 1)
    charge[:, :, ~np.isin(layers, m["charge"]["layers"]), :] = np.nan
    hit = np.isfinite(pos) & np.isin(layers, m["position"]["layers"])[None, None, :, None]
    has_charge = np.isfinite(charge) & hit
    z = m.get("layer_z")
    z_all = np.asarray(z, dtype=np.float32) / 100.0 if z else np.arange(1, 100, dtype=np.float32) / 10.0
    img = _array(cols, norm, layout, m["clusters"]["branch"], m["clusters"]["layers"], 0)  # [N, L, S]
    return Events(pos=np.nan_to_num(pos), charge=np.where(has_charge, charge, 0.0), hit=hit, has_charge=has_charge,
                  layer_z=z_all[np.asarray(layers) - 1], image=np.nan_to_num(img).astype(np.float32)[:, None],
                  rigidity=_vector(cols, norm, layout, m["rigidity"]), tof=_vector(cols, norm, layout, m["tof"]))


def mda_feeds(cols: Mapping[str, np.ndarray], layout: Any, *, domain: str | None = None) -> dict[str, np.ndarray]:
    """ONNX inputs of every event in ``cols`` (see :func:`events`)."""
    return events(cols, layout, domain=domain).feeds()
