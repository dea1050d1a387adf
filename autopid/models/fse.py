"""FSE+attention: particle identification from the set of measured features.

ALICE, "Machine-learning-based particle identification with missing data",
EPJ C 84 (2024) 691. A track is the set of its present (feature id, value) pairs, so a
missing detector contributes nothing and nothing is imputed:

    e_i = Embed([onehot(id_i), value_i])                  # pair embedding ("shared")
    e_i = Embed([onehot(id_i), onehot(id_i) * value_i])   # ("per_feature": a slope per feature)
    h   = TransformerEncoder(e; padding mask)              # no positional encoding
    pooling "channel" (the paper's attention pooling, 32-64-32):
    a_ic = softmax_i(Pool(h_i)_c) over present pairs      # one weight per pair and channel
    z_c  = sum_i a_ic h_ic
    pooling "scalar" (one score per pair):
    a_i = softmax_i(w . h_i) over present pairs
    z   = Pool(sum_i a_i h_i)
    p_s = sigmoid(Classifier_s(z))                         # one head per species

Without positions and with padding masked everywhere, the output does not depend on
the order of the pairs nor on which other tracks share the batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from autopid.models._util import MLP
from autopid.models.grl import DomainHead


POOLINGS = ("channel", "scalar")
VALUE_INPUTS = ("shared", "per_feature")


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B] (one species) or [B, S]
    features: torch.Tensor  # [B, D]: the pooled vector the heads read
    domain_logits: torch.Tensor | None = None  # [B] when a domain head is used
    attention: torch.Tensor | None = None  # [B, tokens]: pooling or fusion weights


class FSEAttention(nn.Module):
    """FSE+attention classifier.

    Args:
        num_features: number of distinct features (default: ``19``).
        embed_channels: pair-embedding widths after the input (default: ``(128, 32)``,
            the paper's 19-128-32).
        num_heads: attention heads of the encoder (default: ``2``).
        ff_channels: encoder feed-forward width (default: ``128``).
        num_layers: encoder layers (default: ``2``).
        pool_channels: pooling MLP hidden width (default: ``64``; 32-64-32).
        pooling: ``"channel"``: the pooling MLP scores every pair per embedding channel and
            the softmax over the set runs per channel (the paper's attention pooling);
            ``"scalar"``: one score per pair (a linear layer), the pooling MLP transforms
            the pooled vector (default: ``"scalar"``, what models saved before the option
            were trained with).
        value_input: ``"shared"``: the embedding reads ``[onehot(id), value]``, so the
            value enters the first layer with one weight vector for every feature (the
            paper's 19-128-32); ``"per_feature"``: it reads ``[onehot(id), onehot(id) *
            value]``, a weight vector per feature, which learns much faster on small
            samples (default: ``"shared"``).
        norm_first: pre-LayerNorm encoder layers, with a final LayerNorm (default:
            ``False``: post-LayerNorm, as ``nn.TransformerEncoderLayer``).
        classifier_channels: classifier hidden width (default: ``64``; 32-64-1).
        num_outputs: one-vs-all heads, one per species (default: ``1``).
        dropout: dropout everywhere (default: ``0.1``).
        act: activation (default: ``"relu"``).
        domain_head: add a gradient-reversal Data-vs-MC head on the pooled vector
            (default: ``False``).

    Shapes:
        feature_ids ``[B, L]`` (long), values ``[B, L]``, padding_mask ``[B, L]``
        (True = padding) -> logits ``[B]`` or ``[B, num_outputs]``.
    """

    def __init__(
        self,
        num_features: int = 19,
        embed_channels: Sequence[int] = (128, 32),
        num_heads: int = 2,
        ff_channels: int = 128,
        num_layers: int = 2,
        pool_channels: int = 64,
        pooling: str = "scalar",
        value_input: str = "shared",
        norm_first: bool = False,
        classifier_channels: int = 64,
        num_outputs: int = 1,
        dropout: float = 0.1,
        act: str = "relu",
        domain_head: bool = False,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_outputs = num_outputs
        d = embed_channels[-1]
        if value_input not in VALUE_INPUTS:
            raise ValueError(f"unknown value_input {value_input!r}; expected one of {list(VALUE_INPUTS)}")
        self.value_input = value_input
        width = num_features + (1 if value_input == "shared" else num_features)
        self.embed = MLP([width, *embed_channels], act=act, dropout=dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=d, nhead=num_heads, dim_feedforward=ff_channels, dropout=dropout,
            activation=act if act in ("relu", "gelu") else "relu", batch_first=True, norm_first=norm_first,
        )
        # nested tensors change results with the batch's padding: keep the plain path
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False,
                                             norm=nn.LayerNorm(d) if norm_first else None)
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {list(POOLINGS)}")
        self.pooling = pooling
        if pooling == "scalar":
            self.score = nn.Linear(d, 1)
        # channel: pair scores [B, L, d]; scalar: transforms the pooled vector
        self.pool = MLP([d, pool_channels, d], act=act, dropout=dropout)
        self.heads = nn.ModuleList(
            [MLP([d, classifier_channels, 1], act=act, dropout=dropout) for _ in range(num_outputs)]
        )
        self.domain = DomainHead(d, classifier_channels, dropout) if domain_head else None
        self.out_channels = d

    def forward(
        self,
        feature_ids: torch.Tensor,
        values: torch.Tensor,
        padding_mask: torch.Tensor,
        grl_lambda: float = 0.0,
    ) -> ModelOutput:
        onehot = nn.functional.one_hot(feature_ids, self.num_features).to(values.dtype)
        v = values.unsqueeze(-1)
        e = self.embed(torch.cat([onehot, onehot * v if self.value_input == "per_feature" else v], dim=-1))
        with _attention_kernels(e):
            h = self.encoder(e, src_key_padding_mask=padding_mask)
        if self.pooling == "channel":
            s = self.pool(h).masked_fill(padding_mask.unsqueeze(-1), float("-inf"))
            a_c = torch.softmax(s, dim=1)  # over the set, per channel
            z = (a_c * h).sum(dim=1)
            a = a_c.mean(dim=-1)  # [B, L]: the mean weight of each pair over the channels
        else:
            s = self.score(h).squeeze(-1).masked_fill(padding_mask, float("-inf"))
            a = torch.softmax(s, dim=-1)
            z = self.pool(torch.einsum("bl,bld->bd", a, h))
        logits = torch.cat([head(z) for head in self.heads], dim=-1)
        if self.num_outputs == 1:
            logits = logits.squeeze(-1)
        dom = self.domain(z, grl_lambda) if self.domain is not None else None
        return ModelOutput(logits=logits, features=z, domain_logits=dom, attention=a)


LARGE_BATCH = 8192  # tracks; see _attention_kernels


def _attention_kernels(x: torch.Tensor) -> Any:
    """On a GPU and for large batches, attention as plain batched matrix products. A
    track is a set of at most a few tens of pairs with heads 8 wide: the fused kernels
    tile 64-128 queries and pad heads to 64, so most of their work is padding (H200, batch
    16k: 1.2 M tracks/s against 0.77 M with torch's default kernel). Below 8k tracks a step
    is bound by kernel launches and the plain path, with more kernels, gained nothing (batch
    4k, one run: 0.41 M against 0.59 M; runs vary by 10-20 %; benchmarks/gpu_training.py)."""
    if not x.is_cuda or x.shape[0] < LARGE_BATCH:
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])
