"""The four MDA branches; each maps its modality to one token of width ``out_channels``."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GINEConv, global_max_pool, global_mean_pool

from autopid.models._util import MLP, activation

NUM_EDGE_TYPES = 3  # layer-to-layer, X-to-Y, main-to-second track


class TrackerGNN(nn.Module):
    """Message passing over the tracker hit graph, pooled per event.

    GINE convolutions (Hu et al., arXiv:1905.12265) with the edge type as edge feature:
    ``h_i' = MLP((1 + eps) h_i + sum_j ReLU(h_j + W e_ij))``; the event vector is the
    concatenated mean and max over nodes.

    Args:
        in_channels: node features (default: ``6``).
        hidden_channels: node width (default: ``32``).
        num_layers: message-passing steps (default: ``3``).
        out_channels: token width (default: ``32``).
        dropout: (default: ``0.1``).
        act: (default: ``"relu"``).

    Shapes:
        x ``[N, in]``, edge_index ``[2, E]``, edge_type ``[E]``, batch ``[N]`` -> ``[B, out]``.
    """

    def __init__(self, in_channels: int = 6, hidden_channels: int = 32, num_layers: int = 3,
                 out_channels: int = 32, dropout: float = 0.1, act: str = "relu") -> None:
        super().__init__()
        self.inp = nn.Linear(in_channels, hidden_channels)
        self.convs = nn.ModuleList(
            GINEConv(MLP([hidden_channels, hidden_channels, hidden_channels], act=act), edge_dim=NUM_EDGE_TYPES)
            for _ in range(num_layers)
        )
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden_channels, out_channels)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        edge_attr = nn.functional.one_hot(edge_type, NUM_EDGE_TYPES).to(x.dtype)
        h = self.act(self.inp(x))
        for conv in self.convs:
            h = h + self.dropout(self.act(conv(h, edge_index, edge_attr)))
        pooled = torch.cat([global_mean_pool(h, batch, num_graphs), global_max_pool(h, batch, num_graphs)], dim=-1)
        return self.out(pooled)


class ClusterCNN(nn.Module):
    """Convolutions over the (layer x side) cluster-count image.

    Kernels run along the layers (``(3, 1)``), so extra clusters in L2-L4 from a
    fragmentation are seen together; the sides are mixed by the final linear layer.

    Args:
        num_layers_image: image height, tracker layers (default: ``8``).
        num_sides: image width (default: ``2``).
        channels: convolution channels (default: ``16``).
        num_conv: convolution layers (default: ``2``).
        out_channels: token width (default: ``32``).
        dropout: (default: ``0.1``).
        act: (default: ``"relu"``).

    Shapes:
        image ``[B, 1, layers, sides]`` -> ``[B, out]``.
    """

    def __init__(self, num_layers_image: int = 8, num_sides: int = 2, channels: int = 16, num_conv: int = 2,
                 out_channels: int = 32, dropout: float = 0.1, act: str = "relu") -> None:
        super().__init__()
        convs: list[nn.Module] = []
        c_in = 1
        for _ in range(num_conv):
            convs += [nn.Conv2d(c_in, channels, kernel_size=(3, 1), padding=(1, 0)), activation(act)]
            c_in = channels
        self.convs = nn.Sequential(*convs)
        self.out = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                 nn.Linear(channels * num_layers_image * num_sides, out_channels))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.out(self.convs(image))


class VectorMLP(nn.Module):
    """An MLP branch for a feature vector (rigidity, TOF).

    Args:
        in_channels: input width.
        hidden_channels: (default: ``32``).
        num_layers: hidden layers (default: ``2``).
        out_channels: token width (default: ``32``).
        dropout: (default: ``0.1``).
        act: (default: ``"relu"``).
    """

    def __init__(self, in_channels: int, hidden_channels: int = 32, num_layers: int = 2,
                 out_channels: int = 32, dropout: float = 0.1, act: str = "relu") -> None:
        super().__init__()
        self.net = MLP([in_channels, *([hidden_channels] * num_layers), out_channels], act=act, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
