"""Networks over sets of objects: Deep Sets and a transformer (attention over the objects).

Both take one tensor per collection, ``[N, objects, fields + 1]`` with the mask last
(``set_inputs.py``), and the event-level scalars ``[N, n_scalars]`` (or None), all *raw*:
each network normalises inside (one offset/scale per field, shared by every slot), so the
exported graph takes raw physics values. Every operation either acts on each object alone
or is a masked sum/mean/max over objects, and attention never looks at padded objects, so
the output is invariant under any permutation of the objects (padded slots included).

* ``DeepSets``: per collection, a network ``phi`` on each object, pooled over the present
  objects; the pooled vectors, the object counts and the scalars go through ``rho``.
* ``SetTransformer``: per collection, a linear embedding of each object into one token
  sequence; ``layers`` pre-norm attention blocks (key padding mask; optionally an attention
  bias per head from the pairwise ΔR and invariant mass of objects with pt/eta/phi[/mass]);
  masked pooling over the tokens, then ``rho`` as above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mlaas4hep.train.set_inputs import Collection
from mlaas4hep.train.torch_mlp import ACTIVATIONS, build_mlp

# Added to the attention logits of padded keys: exp() of it is exactly 0 in float32, and
# unlike -inf it leaves a row of only padded keys finite (such rows are never pooled).
_MASKED = -1.0e9
# Width of the small network that turns pairwise features into one bias per head.
_PAIR_HIDDEN = 16


class FieldNorm(nn.Module):
    """Raw object fields -> normalised fields and the mask (one offset/scale per field)."""

    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self, offset: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fields = (x[..., :-1] - self.offset) / self.scale
        return fields, x[..., -1:]  # mask as (N, objects, 1): 1 present, 0 padded


def masked_pool(h: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool ``h`` (N, objects, width) over the objects where ``mask`` (N, objects, 1) is 1."""
    if how == "max":
        filled = torch.where(mask > 0.5, h, torch.full_like(h, _MASKED))
        pooled = filled.amax(dim=1)
        # an event without objects pools to 0, not to the fill value
        return torch.where(mask.sum(dim=1) > 0.5, pooled, torch.zeros_like(pooled))
    total = (h * mask).sum(dim=1)
    if how == "sum":
        return total
    return total / mask.sum(dim=1).clamp_min(1.0)


class SetHead(nn.Module):
    """``rho``: pooled vectors + object counts + normalised scalars -> outputs."""

    s_offset: torch.Tensor
    s_scale: torch.Tensor

    def __init__(
        self, width: int, scalars: tuple[np.ndarray, np.ndarray] | None, spec: HeadSpec
    ) -> None:
        super().__init__()
        n_scalars = 0 if scalars is None else len(scalars[0])
        offset, scale = scalars if scalars is not None else (np.zeros(0), np.ones(0))
        self.register_buffer("s_offset", torch.as_tensor(offset, dtype=torch.float32))
        self.register_buffer("s_scale", torch.as_tensor(scale, dtype=torch.float32))
        self.rho = build_mlp(
            width + n_scalars, spec.n_outputs, spec.rho, spec.activation, spec.dropout
        )

    def forward(self, pooled: list[torch.Tensor], scalars: torch.Tensor | None) -> torch.Tensor:
        if scalars is not None:
            pooled = [*pooled, (scalars - self.s_offset) / self.s_scale]
        out: torch.Tensor = self.rho(torch.cat(pooled, dim=1))
        return out


class HeadSpec:
    """Options shared by both networks (a plain holder, built from ``ModelSpec``)."""

    def __init__(
        self, n_outputs: int, rho: Sequence[int], activation: str, dropout: float, pooling: str
    ) -> None:
        self.n_outputs, self.rho = n_outputs, list(rho)
        self.activation, self.dropout, self.pooling = activation, dropout, pooling


Norms = list[tuple[np.ndarray, np.ndarray]]  # per collection: (offset, scale) of its fields


class DeepSets(nn.Module):
    """Deep Sets over one or more collections (see the module docstring)."""

    def __init__(
        self,
        colls: Sequence[Collection],
        norms: Norms,
        scalars: tuple[np.ndarray, np.ndarray] | None,
        phi: Sequence[int],
        head: HeadSpec,
    ) -> None:
        super().__init__()
        self.pooling = head.pooling
        self.norms = nn.ModuleList(FieldNorm(o, s) for o, s in norms)
        # phi ends in its activation: pooling sums features, not raw linear outputs
        self.phis = nn.ModuleList(
            nn.Sequential(
                build_mlp(len(c.fields), phi[-1], list(phi[:-1]), head.activation, head.dropout),
                ACTIVATIONS[head.activation](),
            )
            for c in colls
        )
        self.head = SetHead(len(colls) * (phi[-1] + 1), scalars, head)
        self.lengths = [c.length for c in colls]

    def forward(self, objects: list[torch.Tensor], scalars: torch.Tensor | None) -> torch.Tensor:
        pooled = []
        for x, norm, phi, length in zip(objects, self.norms, self.phis, self.lengths, strict=True):
            fields, mask = norm(x)
            pooled.append(masked_pool(phi(fields), mask, self.pooling))
            pooled.append(mask.sum(dim=1) / length)  # the object count, as a fraction
        out: torch.Tensor = self.head(pooled, scalars)
        return out


class AttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention and feed-forward, with an additive logit bias."""

    def __init__(self, dim: int, heads: int, ff_dim: int, activation: str, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ff = build_mlp(dim, dim, [ff_dim], activation, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, t, dim = x.shape
        d = dim // self.heads
        qkv = self.qkv(self.ln1(x)).reshape(n, t, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        logits = (qkv[0] @ qkv[1].transpose(-1, -2)) * (1.0 / math.sqrt(d))
        # softmax in float32 whatever the autocast dtype: the -1e9 fill must stay finite
        att = torch.softmax(logits.float() + bias, dim=-1).to(qkv.dtype)
        out = (att @ qkv[2]).transpose(1, 2).reshape(n, t, dim)
        x = x + self.drop(self.proj(out))
        result: torch.Tensor = x + self.drop(self.ff(self.ln2(x)))
        return result


class SetTransformer(nn.Module):
    """Attention over the objects of all collections (see the module docstring)."""

    def __init__(
        self,
        colls: Sequence[Collection],
        norms: Norms,
        scalars: tuple[np.ndarray, np.ndarray] | None,
        dims: tuple[int, int, int, int],  # embed_dim, heads, layers, ff_dim
        pairwise: bool,
        head: HeadSpec,
    ) -> None:
        super().__init__()
        dim, heads, layers, ff_dim = dims
        self.pooling, self.heads = head.pooling, heads
        self.norms = nn.ModuleList(FieldNorm(o, s) for o, s in norms)
        # the embedding's bias doubles as a learnt "which collection" vector
        self.embed = nn.ModuleList(nn.Linear(len(c.fields), dim) for c in colls)
        self.blocks = nn.ModuleList(
            AttentionBlock(dim, heads, ff_dim, head.activation, head.dropout) for _ in range(layers)
        )
        self.ln = nn.LayerNorm(dim)
        self.kinematics = [c.kinematics for c in colls]
        self.pair = (
            build_mlp(2, heads, [_PAIR_HIDDEN], head.activation)
            if pairwise and any(k is not None for k in self.kinematics)
            else None
        )
        self.lengths = [c.length for c in colls]
        self.head = SetHead(dim + len(colls), scalars, head)

    def forward(self, objects: list[torch.Tensor], scalars: torch.Tensor | None) -> torch.Tensor:
        tokens, masks = [], []
        for x, norm, embed in zip(objects, self.norms, self.embed, strict=True):
            fields, mask = norm(x)
            tokens.append(embed(fields))
            masks.append(mask)
        x, mask = torch.cat(tokens, dim=1), torch.cat(masks, dim=1)
        bias = torch.where(mask.transpose(1, 2) > 0.5, 0.0, _MASKED).unsqueeze(1)  # N,1,1,T
        if self.pair is not None:
            pair = self.pair(pair_features(objects, self.kinematics))  # N, T, T, heads
            bias = bias + pair.float().permute(0, 3, 1, 2)
        for block in self.blocks:
            x = block(x, bias)
        pooled = [masked_pool(self.ln(x), mask, self.pooling)]
        pooled += [m.sum(dim=1) / n for m, n in zip(masks, self.lengths, strict=True)]
        out: torch.Tensor = self.head(pooled, scalars)
        return out


def pair_features(
    objects: list[torch.Tensor], kinematics: Sequence[tuple[int, ...] | None]
) -> torch.Tensor:
    """``(N, T, T, 2)``: ΔR and ln(1 + m_ij / GeV) of every pair of objects (raw values).

    ``m_ij² = m_i² + m_j² + 4 pt_i pt_j (sinh²(Δη/2) + sin²(Δφ/2))``: the invariant mass
    with η for the rapidity (exact for massless objects), a sum of positive terms, so it
    has no cancellation in float32. Objects of a collection without pt/eta/phi get zeros.
    """
    pt: list[torch.Tensor] = []
    eta: list[torch.Tensor] = []
    phi: list[torch.Tensor] = []
    mass: list[torch.Tensor] = []
    for x, kin in zip(objects, kinematics, strict=True):
        zero = torch.zeros_like(x[..., 0])
        if kin is None:
            for part in (pt, eta, phi, mass):
                part.append(zero)
            continue
        pt.append(x[..., kin[0]])
        eta.append(x[..., kin[1]])
        phi.append(x[..., kin[2]])
        mass.append(x[..., kin[3]] if len(kin) > 3 else zero)
    a_pt, a_eta, a_phi, a_mass = (torch.cat(p, dim=1) for p in (pt, eta, phi, mass))
    deta = a_eta.unsqueeze(2) - a_eta.unsqueeze(1)
    dphi_raw = a_phi.unsqueeze(2) - a_phi.unsqueeze(1)
    dphi = torch.atan2(torch.sin(dphi_raw), torch.cos(dphi_raw))
    dr = torch.sqrt(deta * deta + dphi * dphi)
    half = torch.sinh(deta * 0.5) ** 2 + torch.sin(dphi_raw * 0.5) ** 2
    m2 = (a_mass * a_mass).unsqueeze(2) + (a_mass * a_mass).unsqueeze(1)
    m2 = m2 + 4.0 * a_pt.unsqueeze(2) * a_pt.unsqueeze(1) * half
    return torch.stack([dr, torch.log1p(torch.sqrt(m2.clamp_min(0.0)))], dim=-1)
