"""MDA: a multimodal, domain-adversarial network for AMS-like nuclei.

Four branches (tracker GNN, cluster CNN, rigidity MLP, TOF MLP) each give one token;
a branch (positional) embedding marks which token is which; multi-head self-attention
fuses them; the mean token feeds a signal/background head trained on MC, and a
Data-vs-MC head behind gradient reversal (DANN, arXiv:1505.07818) pushes the fused
features to be the same for MC and Data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch_geometric.data import Batch

from autopid.models._util import MLP
from autopid.models.fse import ModelOutput
from autopid.models.grl import DomainHead
from autopid.models.mda_branches import ClusterCNN, TrackerGNN, VectorMLP

BRANCHES = ("gnn", "cnn", "rigidity", "tof")


class MDA(nn.Module):
    """The MDA model.

    Args:
        rigidity_channels: width of the rigidity vector (from the loader).
        tof_channels: width of the TOF vector.
        image_shape: ``(layers, sides)`` of the cluster image (default: ``(8, 2)``).
        node_channels: node features of the hit graph (default: ``6``).
        branches: enabled branches, a subset of ``gnn, cnn, rigidity, tof`` (ablation).
        token_channels: token width shared by the branches (default: ``32``).
        gnn_hidden, gnn_layers: tracker GNN size (default: ``32``, ``3``).
        cnn_channels, cnn_layers: cluster CNN size (default: ``16``, ``2``).
        mlp_hidden, mlp_layers: rigidity and TOF MLP size (default: ``32``, ``2``).
        fusion_heads: attention heads of the fusion (default: ``4``).
        classifier_channels: head hidden width (default: ``64``).
        dropout: (default: ``0.1``).
        act: (default: ``"relu"``).
        domain_head: add the Data-vs-MC head (default: ``True``).

    Shapes:
        a PyG ``Batch`` from :func:`autopid.data.mda_dataloader` -> logits ``[B]``;
        ``attention`` ``[B, branches]``: how much the fused vector draws on each branch.
    """

    def __init__(
        self,
        rigidity_channels: int,
        tof_channels: int,
        image_shape: tuple[int, int] = (8, 2),
        node_channels: int = 6,
        branches: Sequence[str] = BRANCHES,
        token_channels: int = 32,
        gnn_hidden: int = 32,
        gnn_layers: int = 3,
        cnn_channels: int = 16,
        cnn_layers: int = 2,
        mlp_hidden: int = 32,
        mlp_layers: int = 2,
        fusion_heads: int = 4,
        classifier_channels: int = 64,
        dropout: float = 0.1,
        act: str = "relu",
        domain_head: bool = True,
    ) -> None:
        super().__init__()
        unknown = set(branches) - set(BRANCHES)
        if unknown or not branches:
            raise ValueError(f"branches must be a non-empty subset of {BRANCHES}, got {list(branches)}")
        self.branch_names = [b for b in BRANCHES if b in branches]
        d = token_channels
        make = {
            "gnn": lambda: TrackerGNN(node_channels, gnn_hidden, gnn_layers, d, dropout, act),
            "cnn": lambda: ClusterCNN(image_shape[0], image_shape[1], cnn_channels, cnn_layers, d, dropout, act),
            "rigidity": lambda: VectorMLP(rigidity_channels, mlp_hidden, mlp_layers, d, dropout, act),
            "tof": lambda: VectorMLP(tof_channels, mlp_hidden, mlp_layers, d, dropout, act),
        }
        self.branches = nn.ModuleDict({name: make[name]() for name in self.branch_names})
        self.position = nn.Parameter(torch.randn(len(self.branch_names), d) * 0.02)
        # no dropout on the weights: they are reported as how much each branch is used
        self.fusion = nn.MultiheadAttention(d, fusion_heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = MLP([d, classifier_channels, 1], act=act, dropout=dropout)
        self.domain = DomainHead(d, classifier_channels, dropout) if domain_head else None
        self.out_channels = d

    def tokens(self, batch: Batch) -> torch.Tensor:
        out = []
        for name in self.branch_names:
            if name == "gnn":
                out.append(self.branches[name](batch.x, batch.edge_index, batch.edge_type, batch.batch, batch.num_graphs))
            elif name == "cnn":
                out.append(self.branches[name](batch.image))
            else:
                out.append(self.branches[name](getattr(batch, name)))
        return torch.stack(out, dim=1) + self.position  # [B, T, d]

    def forward(self, batch: Batch, grl_lambda: float = 0.0) -> ModelOutput:
        t = self.tokens(batch)
        fused, weights = self.fusion(t, t, t, need_weights=True, average_attn_weights=True)
        h = self.norm(t + fused)
        z = h.mean(dim=1)
        logits = self.head(z).squeeze(-1)
        dom = self.domain(z, grl_lambda) if self.domain is not None else None
        # weights [B, query, key]: the attention each branch (key) receives, averaged over queries
        return ModelOutput(logits=logits, features=z, domain_logits=dom, attention=weights.mean(dim=1))
