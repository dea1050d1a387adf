"""AMS-like events as multimodal inputs for the MDA model.

Per event: a hit graph (one node per hit of a track, layer and side; edges
layer-to-layer along a track and side, X-to-Y within a layer, and main-to-second track
within a layer and side), the cluster-count image, and the rigidity and TOF vectors
(with presence flags), plus the labels.

The graphs of all events are built once, with NumPy, when the dataset is made: node
features and edges are stored flat, with per-event offsets. :func:`mda_dataloader`
collates batches by index arrays straight into a PyTorch Geometric ``Batch``; no
per-event Python object is made while training.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Subset
from torch_geometric.data import Batch, Data

from autopid.calibration.gains import ChargeCalibration
from autopid.data._batches import IndexLoader
from autopid.data._transfer import int64_to
from autopid.data.dataset import PreprocessedDataset
from autopid.errors import ConfigError

NODE_FEATURES = ("position", "charge", "has_charge", "layer_z", "side", "track")
# the class Batch.from_data_list gives for Data objects; made here directly (type.__call__
# is what Batch's metaclass ends with, after working out this class on every call)
_DATA_BATCH = type(Batch())


def _vector(frame: Any, ds: PreprocessedDataset, branches: list[str]) -> np.ndarray:
    """Normalised columns with NaN set to 0 and one presence flag per column appended."""
    cols = [c for b in branches for c in ds.feature_columns(b)]
    x = ds.normaliser.transform(frame, cols)
    present = np.isfinite(x)
    return np.concatenate([np.where(present, x, 0.0), present.astype(np.float32)], axis=1).astype(np.float32)


def _array(frame: Any, ds: PreprocessedDataset, branch: str, layers: list[int], layer_axis: int) -> np.ndarray:
    """Normalised values of an array branch reshaped to its ROOT shape, layers selected (NaN kept)."""
    shape = ds.feature_shape(branch)
    n = len(frame[ds.feature_columns(branch)[0]])
    x = ds.normaliser.transform(frame, ds.feature_columns(branch)).reshape(n, *shape)
    return np.take(x, [layer - 1 for layer in layers], axis=layer_axis + 1)


def calibrated_columns(frame: pd.DataFrame, ds: Any, calibration: ChargeCalibration,
                       domain: str | None = None) -> dict[str, np.ndarray]:
    """Calibrated charge columns of ``frame`` (tracker charges divided by the gain maps of
    ``calibration``, TOF charges scaled, Data noise overlaid on MC cluster counts, MC hits
    removed down to Data's hit efficiency; see
    :meth:`ChargeCalibration.calibrate`): each
    row's own domain (its ``domain`` column, 0 MC / 1 Data) unless ``domain`` names one
    for every row; without either, the calibration's default domain (Data)."""
    scaled = sorted({c for v in calibration.scales.values() for c in v})
    names = [*ds.feature_columns(calibration.charge_branch), *ds.feature_columns(calibration.position_branch), *scaled,
             *(c for c in [*calibration.count_columns, *calibration.blanked_columns] if c in frame)]
    cols = {c: frame[c].to_numpy(np.float64) for c in names}
    which: Any = domain
    if which is None and "domain" in frame:
        which = frame["domain"].to_numpy(np.float64)
    return calibration.calibrate(cols, ds, which)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])`` without a loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.cumsum(counts) - counts  # where each range begins in the output
    return np.repeat(starts - first, counts) + np.arange(total, dtype=np.int64)


def _offsets(counts: np.ndarray) -> np.ndarray:
    ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr


class MDADataset(Dataset[Data]):
    """Graphs of all events, built once from a frame of the cache (MC and/or Data rows).

    ``calibration``: the model's tracker charge gain maps, applied to the raw charges
    before normalisation (per row by its ``domain`` column, or ``domain`` for all rows;
    see :mod:`autopid.calibration.gains`). ``weights``: per-row loss weights (``weight``
    of the batches; 1 by default).

    ``node_x [nodes, 6]`` and ``node_ptr [N + 1]`` hold the nodes of all events,
    ``edge_index [2, edges]`` (numbered within each event), ``edge_type [edges]`` and
    ``edge_ptr [N + 1]`` their edges; event ``i`` owns ``node_ptr[i]:node_ptr[i + 1]``.
    """

    def __init__(self, frame: pd.DataFrame, ds: PreprocessedDataset, *, calibration: ChargeCalibration | None = None,
                 domain: str | None = None, weights: np.ndarray | None = None) -> None:
        layout: dict[str, Any] | None = ds.manifest.get("mda")
        if layout is None:
            raise ConfigError(f"{ds.path}: this cache has no 'mda' layout (dataset family is not mda)")
        layers = sorted(set(layout["position"]["layers"]) | set(layout["charge"]["layers"]))
        self.layers = layers
        src: Any = frame  # where the charges are read: the calibrated columns first
        if calibration is not None:
            if calibration.charge_branch != layout["charge"]["branch"]:
                raise ConfigError(f"{ds.path}: the model's charge calibration is for branch "
                                  f"{calibration.charge_branch!r}, the MDA layout reads {layout['charge']['branch']!r}")
            src = ChainMap(calibrated_columns(frame, ds, calibration, domain), frame)
        pos = _array(src, ds, layout["position"]["branch"], layers, 1)  # [N, T, L, S]; removed hits missing
        charge = _array(src, ds, layout["charge"]["branch"], layers, 1)
        use_charge = np.isin(layers, layout["charge"]["layers"])
        use_pos = np.isin(layers, layout["position"]["layers"])
        charge[:, :, ~use_charge, :] = np.nan
        self.hit = np.isfinite(pos) & use_pos[None, None, :, None]
        self.pos = np.nan_to_num(pos)
        self.has_charge = np.isfinite(charge) & self.hit
        self.charge = np.where(self.has_charge, charge, 0.0)
        z = layout.get("layer_z")
        z_all = np.asarray(z, dtype=np.float32) / 100.0 if z else np.arange(1, 100, dtype=np.float32) / 10.0
        self.layer_z = z_all[np.asarray(layers) - 1]
        img = _array(src, ds, layout["clusters"]["branch"], layout["clusters"]["layers"], 0)  # [N, L, S]
        self.image = np.nan_to_num(img).astype(np.float32)[:, None]  # [N, 1, L, S]
        self.rigidity = _vector(src, ds, layout["rigidity"])
        self.tof = _vector(src, ds, layout["tof"])
        n = len(frame)
        y = frame["y"].to_numpy(np.float32) if "y" in frame else np.full(n, np.nan, np.float32)
        self.has_label = np.isfinite(y)
        self.y = np.nan_to_num(y, nan=0.0)
        self.domain = frame["domain"].to_numpy(np.float32, copy=True) if "domain" in frame else np.zeros(n, np.float32)
        # per-row weight of the losses (rigidity reweighting of MC rows; 1 by default)
        self.weight = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32).reshape(n).copy()
        self._on_device: dict[str, torch.Tensor] | None = None  # see to()
        self._build_graphs()

    def _build_graphs(self) -> None:
        """Nodes and edges of every event at once.

        Nodes of an event are its hits in (track, layer, side) order. Edges come per event
        as layer-to-layer (by track, side, layer), X-to-Y (by track, layer), main-to-second
        track (by layer, side), then the same edges reversed: the order
        :meth:`graph` has always used.
        """
        hit = self.hit  # [N, T, L, S]
        n, tracks = hit.shape[0], hit.shape[1]
        ev, t_idx, l_idx, s_idx = np.nonzero(hit)
        n_nodes = len(ev)
        self.node_count = np.bincount(ev, minlength=n).astype(np.int64)
        self.node_ptr = _offsets(self.node_count)
        self.node_x = np.stack([
            self.pos[hit], self.charge[hit], self.has_charge[hit].astype(np.float32),
            self.layer_z[l_idx], s_idx.astype(np.float32), t_idx.astype(np.float32),
        ], axis=1).astype(np.float32)
        node = np.full(hit.shape, -1, dtype=np.int64)
        node[hit] = np.arange(n_nodes, dtype=np.int64)
        # layer-to-layer: consecutive present layers of one (event, track, side); a missing
        # hit does not cut the track
        along = hit.transpose(0, 1, 3, 2)  # [N, T, S, L]
        chain = node.transpose(0, 1, 3, 2)[along]
        e0, t0, s0, _ = np.nonzero(along)
        group = (e0 * tracks + t0) * hit.shape[3] + s0
        same = group[1:] == group[:-1]
        src, dst, owner = [chain[:-1][same]], [chain[1:][same]], [e0[:-1][same]]
        kind = [np.zeros(int(same.sum()), np.int64)]
        # X-to-Y within a layer
        xy = hit[..., 0] & hit[..., 1]  # [N, T, L]
        src.append(node[..., 0][xy])
        dst.append(node[..., 1][xy])
        kind.append(np.ones(int(xy.sum()), np.int64))
        owner.append(np.nonzero(xy)[0])
        if tracks > 1:  # main-to-second track within a layer and side
            tt = hit[:, 0] & hit[:, 1]  # [N, L, S]
            src.append(node[:, 0][tt])
            dst.append(node[:, 1][tt])
            kind.append(np.full(int(tt.sum()), 2, np.int64))
            owner.append(np.nonzero(tt)[0])
        s_all, d_all, k_all, o_all = (np.concatenate(a) for a in (src, dst, kind, owner))
        # per event: the forward edges (kinds in order), then the same edges reversed
        key = np.concatenate([2 * o_all, 2 * o_all + 1])
        order = np.argsort(key, kind="stable")
        owner_e = np.concatenate([o_all, o_all])[order]
        self.edge_index = np.stack([np.concatenate([s_all, d_all])[order], np.concatenate([d_all, s_all])[order]])
        self.edge_index -= self.node_ptr[owner_e]  # numbered within the event
        self.edge_type = np.concatenate([k_all, k_all])[order]
        self.edge_count = np.bincount(owner_e, minlength=n).astype(np.int64)
        self.edge_ptr = _offsets(self.edge_count)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_node_features(self) -> int:
        return len(NODE_FEATURES)

    def graph(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Node features ``[nodes, 6]``, edge index ``[2, edges]`` and edge type ``[edges]``
        (0 layer-to-layer, 1 X-to-Y, 2 main-to-second track) of event ``i``."""
        i = range(len(self))[i]  # negative indices, bounds
        n0, n1 = self.node_ptr[i], self.node_ptr[i + 1]
        e0, e1 = self.edge_ptr[i], self.edge_ptr[i + 1]
        return self.node_x[n0:n1].copy(), self.edge_index[:, e0:e1].copy(), self.edge_type[e0:e1].copy()

    def __getitem__(self, i: int) -> Data:  # type: ignore[override]
        """One event as a PyG ``Data`` (the batches of :func:`mda_dataloader` do not use it)."""
        x, edges, edge_type = self.graph(i)
        i = range(len(self))[i]
        return Data(
            x=torch.from_numpy(x),
            edge_index=torch.from_numpy(edges),
            edge_type=torch.from_numpy(edge_type),
            image=torch.from_numpy(self.image[i : i + 1]),
            rigidity=torch.from_numpy(self.rigidity[i : i + 1]),
            tof=torch.from_numpy(self.tof[i : i + 1]),
            y=torch.tensor([self.y[i]]),
            domain=torch.tensor([self.domain[i]]),
            has_label=torch.tensor([bool(self.has_label[i])]),
            weight=torch.tensor([self._weight()[i]]),
        )

    def _weight(self) -> np.ndarray:
        weight = getattr(self, "weight", None)  # datasets made field by field may lack it
        return np.ones(len(self), np.float32) if weight is None else weight

    _PER_EVENT = ("image", "rigidity", "tof", "y", "domain", "has_label")

    def to(self, device: torch.device | str) -> MDADataset:
        """Keep the graphs and per-event arrays of every event on ``device`` (a GPU): each
        batch is then collated there, and only its index arrays cross the bus."""
        names = ("node_x", "edge_index", "edge_type", *self._PER_EVENT)
        self._on_device = {name: torch.from_numpy(getattr(self, name)).to(device) for name in names}
        self._on_device["weight"] = torch.from_numpy(self._weight()).to(device)
        return self

    def batch(self, index: Sequence[int] | np.ndarray) -> Batch:
        """The events ``index`` collated into one PyG ``Batch``, as
        ``Batch.from_data_list([self[i] for i in index])`` would, without the ``Data`` objects:
        with NumPy on the host, or with torch on the device of :meth:`to`, where the sizes
        are worked out on the host from the per-event counts, so that collating never
        waits for the device."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        n_nodes, n_edges = self.node_count[idx], self.edge_count[idx]
        ptr, eptr = _offsets(n_nodes), _offsets(n_edges)
        if getattr(self, "_on_device", None) is None:
            out = self._batch_host(idx, n_nodes, n_edges, ptr, eptr)
        else:
            out = self._batch_device(idx, n_nodes, n_edges, ptr, eptr)
        return _with_slices(out, ptr, eptr)

    def _batch_host(self, idx: np.ndarray, n_nodes: np.ndarray, n_edges: np.ndarray, ptr: np.ndarray,
                    eptr: np.ndarray) -> Batch:
        b = len(idx)
        node_sel = _ranges(self.node_ptr[idx], n_nodes)
        edge_sel = _ranges(self.edge_ptr[idx], n_edges)
        # np.take keeps [2, E] row-major (fancy indexing on axis 1 would not: slow message passing)
        edge_index = np.take(self.edge_index, edge_sel, axis=1)
        edge_index += np.repeat(ptr[:-1], n_edges)
        out = type.__call__(
            _DATA_BATCH,
            x=torch.from_numpy(self.node_x[node_sel]),
            edge_index=torch.from_numpy(edge_index),
            edge_type=torch.from_numpy(self.edge_type[edge_sel]),
            **{name: torch.from_numpy(getattr(self, name)[idx]) for name in self._PER_EVENT},
            weight=torch.from_numpy(self._weight()[idx]),
            batch=torch.from_numpy(np.repeat(np.arange(b, dtype=np.int64), n_nodes)),
            ptr=torch.from_numpy(ptr),
        )
        return out

    def _batch_device(self, idx: np.ndarray, n_nodes: np.ndarray, n_edges: np.ndarray, ptr: np.ndarray,
                      eptr: np.ndarray) -> Batch:
        b = len(idx)
        t = self._on_device
        assert t is not None
        dev = t["node_x"].device

        idx_t, n_nodes_t, n_edges_t, ptr_t, node_shift, edge_shift = int64_to(
            dev, idx, n_nodes, n_edges, ptr, self.node_ptr[idx] - ptr[:-1], self.edge_ptr[idx] - eptr[:-1])
        node_sel = _ranges_t(node_shift, n_nodes_t, int(ptr[-1]))
        edge_sel = _ranges_t(edge_shift, n_edges_t, int(eptr[-1]))
        # index_select keeps [2, E] row-major (fancy indexing on dim 1 would not: slow message passing)
        edge_index = t["edge_index"].index_select(1, edge_sel)
        edge_index += torch.repeat_interleave(ptr_t[:-1], n_edges_t, output_size=int(eptr[-1]))
        out = type.__call__(
            _DATA_BATCH,
            x=t["node_x"].index_select(0, node_sel),
            edge_index=edge_index,
            edge_type=t["edge_type"].index_select(0, edge_sel),
            **{name: t[name][idx_t] for name in (*self._PER_EVENT, "weight")},
            batch=torch.repeat_interleave(torch.arange(b, device=dev), n_nodes_t, output_size=int(ptr[-1])),
            ptr=ptr_t,
        )
        return out


def _with_slices(out: Batch, ptr: np.ndarray, eptr: np.ndarray) -> Batch:
    """Record what ``Batch.from_data_list`` records, so that ``get_example`` and
    ``to_data_list`` keep working."""
    b = len(ptr) - 1
    graphs = torch.arange(b + 1)
    h_ptr, h_eptr = torch.from_numpy(ptr), torch.from_numpy(eptr)
    out._num_graphs = b
    out._slice_dict = {"x": h_ptr, "edge_index": h_eptr, "edge_type": h_eptr, "image": graphs, "rigidity": graphs,
                       "tof": graphs, "y": graphs, "domain": graphs, "has_label": graphs, "weight": graphs}
    out._inc_dict = {k: torch.zeros(b, dtype=torch.long) for k in out._slice_dict}
    out._inc_dict["edge_index"] = h_ptr[:-1]
    return out


def _ranges_t(shift: torch.Tensor, counts: torch.Tensor, total: int) -> torch.Tensor:
    """:func:`_ranges` on tensors, ``shift = starts - (cumsum(counts) - counts)``; ``total``
    is ``counts.sum()``, known on the host."""
    return torch.repeat_interleave(shift, counts, output_size=total) + torch.arange(
        total, dtype=torch.long, device=counts.device)


def _resolve(dataset: Any) -> tuple[MDADataset, np.ndarray] | None:
    """The :class:`MDADataset` under ``dataset`` (itself or nested ``Subset``s) and the indices."""
    if isinstance(dataset, MDADataset):
        return dataset, np.arange(len(dataset), dtype=np.int64)
    if isinstance(dataset, Subset):
        inner = _resolve(dataset.dataset)
        if inner is not None:
            return inner[0], inner[1][np.asarray(dataset.indices, dtype=np.int64)]
    return None


def mda_dataloader(dataset: MDADataset, *, batch_size: int = 128, shuffle: bool = True, seed: int = 0) -> Any:
    """PyG batches: ``x``, ``edge_index``, ``edge_type``, ``batch``, ``ptr`` plus
    ``image [B,1,L,S]``, ``rigidity [B,R]``, ``tof [B,K]``, ``y``, ``domain``, ``has_label``,
    ``weight [B]``.

    Same seed, same batches. ``dataset`` may also be a ``Subset`` of an :class:`MDADataset`;
    any other dataset of ``Data`` objects goes through PyG's ``DataLoader``.
    """
    gen = torch.Generator().manual_seed(seed)
    found = _resolve(dataset)
    if found is None:
        from torch_geometric.loader import DataLoader

        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen)
    return IndexLoader(found[0].batch, found[1], batch_size=batch_size, shuffle=shuffle, generator=gen)
