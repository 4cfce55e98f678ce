r"""``BCQLinear``: an ``nn.Linear`` whose weight is a packed multi-precision BCQ, served at any stored precision.

    y = x Ŵ_pᵀ + bias,   Ŵ_p[n, k] = β_p[n, k//g] + Σ_{i<p} α_p[i, n, k//g] B_i[n, k],   B_i ∈ {−1, +1}

Buffers (they are the module's state_dict, saved bit for bit by ``llm.checkpoint``):

    planes   int32   [P, N, K/32]  the uint32 words of ``bcq_core.layout`` reinterpreted as int32
                                    (same bits: bit t of word w is input 32w + t, bit 1 -> +1);
                                    on CUDA (P <= 4) or after ``use_tile_layout()``, the same words in the
                                    tensor-core kernels' tile layout, int32 [P, ceil(N/16), ceil(K/256), 128]
                                    (the state_dict still holds them row-major, so checkpoints do not
                                    depend on it)
    alpha_p  float16 [p, N, G]     one scale set per stored precision p   (G = K / g)
    beta_p   float16 [N, G]        per-group offsets, asymmetric BCQ only
    bias     float32 [N] or None   kept from the nn.Linear it replaces (a frozen Parameter)

Forward at ``self.precision`` = p:

* CUDA input in float16 or bfloat16 (serving): the ``gpu`` kernels (imported lazily),
  ``bcq_matmul(x16, planes[:p], alpha_p, beta_p, g, tiles=...)`` on float16 activations, result cast back to
  x's dtype.  The tensor-core kernels (p <= 4, batch 1-16) and dequantize read the planes in the tile layout.
  A module of at most 4 planes keeps only the tiles once it is on CUDA (``.cuda()`` / ``.to("cuda")`` call
  ``use_tile_layout()``): one copy of the planes in GPU memory.  With ``tile_on_cuda = False`` set before
  the move it keeps the row-major planes and ``tiles()`` makes the tiles beside them, a second copy.
* Any other input (CPU, or float32 on CUDA): dequantize Ŵ_p once (in x's dtype, cached for the current
  precision), then ``F.linear``.  A float32 model asks for float32 math, which the float16 kernels do not
  give: calibration and evaluation of the float32 research model compute the same math on a GPU as on the CPU
  (up to the order of float sums).
* Scale training (``llm.calibrate``): ``train_scales(p)`` turns α_p (and β_p) into float32 Parameters
  and the forward rebuilds Ŵ_p from them differentiably each call; the binary codes never change.
  ``finish_scale_training()`` rounds the trained scales back into the float16 buffers.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bcq_core.bcq import BCQ
from bcq_core.checks import check_precision
from bcq_core.layout import (TILE_AXES, TILE_ROWS, TILE_SIZE, TILE_WORDS, UNTILE_AXES, PackedBCQ, pack, rows_view,
                             tile_shape, tiles_view)

WORD_BITS = 32
TILED_MAX_PLANES = 4  # the tensor-core kernels that read the tiles serve p <= 4 (gpu.kernels.IMMA_PLANES)


def unpack_planes(planes: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """int32 [p, N, K/32] -> ±1 [p, N, K] in `dtype` (bit t of word w -> input 32w + t)."""
    shifts = torch.arange(WORD_BITS, dtype=torch.int32, device=planes.device)
    bits = (planes.unsqueeze(-1) >> shifts) & 1                      # (p, N, K/32, 32)
    return (bits.reshape(*planes.shape[:-1], -1).to(dtype) * 2 - 1)  # (p, N, K)


def tile_planes_torch(planes: torch.Tensor) -> torch.Tensor:
    """int32 [P, N, K/32] -> int32 [P, ceil(N/16), ceil(K/256), 128], on the planes' device.

    ``bcq_core.layout.tile_planes`` for torch tensors (the same words, tested against it):
    tiles[i, nt, s, 64 e + 8 gid + 2 t + h] = planes[i, 16 nt + 8 h + gid, 8 s + 2 t + e].
    """
    P, N, KW = planes.shape
    _, NT, KS, _ = tile_shape(P, N, KW)
    padded = planes.new_zeros(P, NT * TILE_ROWS, KS * TILE_WORDS)
    padded[:, :N, :KW] = planes
    return padded.reshape(rows_view(P, NT, KS)).permute(TILE_AXES).contiguous().reshape(P, NT, KS, TILE_SIZE)


def untile_planes_torch(tiles: torch.Tensor, N: int, KW: int) -> torch.Tensor:
    """Inverse of tile_planes_torch: int32 [P, NT, KS, 128] -> [P, N, K/32] (the padding dropped)."""
    P, NT, KS, _ = tiles.shape
    t = tiles.reshape(tiles_view(P, NT, KS)).permute(UNTILE_AXES)
    return t.reshape(P, NT * TILE_ROWS, KS * TILE_WORDS)[:, :N, :KW].contiguous()


def dequantize_torch(signs: torch.Tensor, alpha: torch.Tensor, g: int, beta: torch.Tensor | None = None):
    """Σ_i α[i, n, k//g] signs[i, n, k] (+ β[n, k//g]): [N, K]; differentiable in α and β."""
    p, N, K = signs.shape
    W = (alpha.unsqueeze(-1) * signs.view(p, N, K // g, g)).sum(0)  # (N, G, g)
    if beta is not None:
        W = W + beta.unsqueeze(-1)
    return W.reshape(N, K)


class BCQLinear(nn.Module):
    """Drop-in replacement for ``nn.Linear`` holding one packed multi-precision BCQ weight."""

    def __init__(self, in_features: int, out_features: int, num_planes: int, precisions, group_size: int,
                 asymmetric: bool = False, bias: bool = False):
        super().__init__()
        K, N, P, g = in_features, out_features, num_planes, group_size
        if K % WORD_BITS or g % WORD_BITS or K % g:
            raise ValueError(f"group_size: must be a multiple of 32 dividing in_features={K}, got {g}")
        precisions = tuple(sorted(int(p) for p in precisions))
        if not precisions or precisions[0] < 1 or precisions[-1] > P:
            raise ValueError(f"precisions: must lie in 1..{P} (planes stored), got {precisions}")
        self.in_features, self.out_features, self.group_size = K, N, g
        self.precisions, self.asymmetric = precisions, asymmetric
        self.register_buffer("planes", torch.zeros(P, N, K // WORD_BITS, dtype=torch.int32))
        for p in precisions:
            self.register_buffer(f"alpha_{p}", torch.zeros(p, N, K // g, dtype=torch.float16))
            if asymmetric:
                self.register_buffer(f"beta_{p}", torch.zeros(N, K // g, dtype=torch.float16))
        self.bias = nn.Parameter(torch.zeros(N), requires_grad=False) if bias else None
        self.precision = precisions[-1]
        self._cache: tuple[int, torch.dtype, torch.Tensor] | None = None
        self._tile_cache: tuple[tuple, torch.Tensor] | None = None
        self._train: dict | None = None
        self.tiled = False  # planes in the tile layout (use_tile_layout)
        self.tile_on_cuda = True  # _apply: tile the planes when the module moves to CUDA (p <= 4)

    # ---- construction and export -------------------------------------------------------------
    @classmethod
    def from_bcq(cls, q: BCQ | PackedBCQ, bias: torch.Tensor | None = None) -> "BCQLinear":
        """A module serving every precision of q; bias (float [N]) is copied when given."""
        packed = pack(q) if isinstance(q, BCQ) else q
        N, K = packed.shape
        m = cls(K, N, packed.num_planes, packed.precisions, packed.group_size,
                asymmetric=packed.beta is not None, bias=bias is not None)
        m.planes.copy_(torch.from_numpy(np.ascontiguousarray(packed.planes).view(np.int32)))
        for p in packed.precisions:
            m.alpha(p).copy_(torch.from_numpy(packed.alpha[p]))
            if packed.beta is not None:
                m.beta(p).copy_(torch.from_numpy(packed.beta[p]))
        if bias is not None:
            m.bias.data.copy_(bias.detach().float())
        return m

    def to_packed(self) -> PackedBCQ:
        """The weight as a ``bcq_core.layout.PackedBCQ`` (uint32 planes, float16 scales), bit-exact."""
        beta = {p: self.beta(p).cpu().numpy().copy() for p in self.precisions} if self.asymmetric else None
        return PackedBCQ(planes=self.row_major_planes().cpu().numpy().view(np.uint32).copy(),
                         alpha={p: self.alpha(p).cpu().numpy().copy() for p in self.precisions},
                         group_size=self.group_size, beta=beta)

    def alpha(self, p: int) -> torch.Tensor:
        return getattr(self, f"alpha_{p}")

    def beta(self, p: int) -> torch.Tensor | None:
        return getattr(self, f"beta_{p}") if self.asymmetric else None

    @property
    def num_planes(self) -> int:
        return self.planes.shape[0]

    def nbytes(self, p: int | None = None) -> int:
        """Bytes this layer needs to serve precision p (planes[:p] + α_p + β_p), or all precisions (None)."""
        N, G = self.out_features, self.in_features // self.group_size
        plane = N * self.in_features // 8
        scales = lambda q: 2 * N * G * (q + (1 if self.asymmetric else 0))  # noqa: E731
        if p is None:
            return self.num_planes * plane + sum(scales(q) for q in self.precisions)
        return p * plane + scales(check_precision("p", p, self.precisions))

    # ---- precision ---------------------------------------------------------------------------
    def set_precision(self, p: int) -> None:
        self.precision = check_precision("p", p, self.precisions)

    def clear_cache(self) -> None:
        self._cache = None
        self._tile_cache = None

    def dequantize(self, p: int | None = None, dtype=torch.float32) -> torch.Tensor:
        """Ŵ_p as a dense [N, K] tensor (from the float16 buffers, widened exactly to float32)."""
        p = self.precision if p is None else check_precision("p", p, self.precisions)
        beta = self.beta(p)
        W = dequantize_torch(unpack_planes(self.row_major_planes()[:p]), self.alpha(p).float(), self.group_size,
                             None if beta is None else beta.float())
        return W.to(dtype)

    def _apply(self, fn, recurse=True):
        """``.to(device)`` moves the buffers; ``.float()``/``.half()`` must not change the packed dtypes.

        Arriving on CUDA, a module of at most 4 planes keeps them only in the tile layout
        (``use_tile_layout``), unless ``tile_on_cuda`` is False: every CUDA path that serves it reads the
        tiles, so the row-major copy would only take memory."""
        super()._apply(fn, recurse)
        for name, buf in self._buffers.items():
            if buf is not None and name.startswith(("alpha_", "beta_")) and buf.dtype != torch.float16:
                self._buffers[name] = buf.to(torch.float16)
        self.clear_cache()
        if self.tile_on_cuda and self.planes.is_cuda and self.num_planes <= TILED_MAX_PLANES:
            self.use_tile_layout()
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.clear_cache()
        key = prefix + "planes"
        if self.tiled and key in state_dict and state_dict[key].dim() == 3:  # row-major, as saved
            state_dict = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
            state_dict[key] = tile_planes_torch(state_dict[key])
        return super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- scale training (calibration) --------------------------------------------------------
    def train_scales(self, p: int) -> list[nn.Parameter]:
        """Make α_p (and β_p) float32 Parameters for precision p; returns them for the optimizer."""
        p = check_precision("p", p, self.precisions)
        self.set_precision(p)
        alpha = nn.Parameter(self.alpha(p).float().clone())
        beta = nn.Parameter(self.beta(p).float().clone()) if self.asymmetric else None
        self._train = {"p": p, "signs": unpack_planes(self.row_major_planes()[:p]), "alpha": alpha, "beta": beta}
        self.clear_cache()
        return [t for t in (alpha, beta) if t is not None]

    def finish_scale_training(self) -> None:
        """Round the trained scales into the float16 buffers and return to inference mode."""
        if self._train is None:
            return
        t, self._train = self._train, None
        with torch.no_grad():
            self.alpha(t["p"]).copy_(t["alpha"].to(torch.float16))
            if t["beta"] is not None:
                self.beta(t["p"]).copy_(t["beta"].to(torch.float16))
        self.clear_cache()

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._train is not None:
            t = self._train
            W = dequantize_torch(t["signs"], t["alpha"], self.group_size, t["beta"])
            return F.linear(x, W.to(x.dtype), self.bias)
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            return self._forward_cuda(x)
        c = self._cache
        if c is None or c[0] != self.precision or c[1] != x.dtype:
            c = self._cache = (self.precision, x.dtype, self.dequantize(self.precision, x.dtype))
        return F.linear(x, c[2], self.bias)

    # ---- the tile layout ---------------------------------------------------------------------
    def row_major_planes(self) -> torch.Tensor:
        """The planes as int32 [P, N, K/32], whatever the layout they are stored in."""
        if not self.tiled:
            return self.planes
        return untile_planes_torch(self.planes, self.out_features, self.in_features // WORD_BITS)

    def use_tile_layout(self) -> "BCQLinear":
        """Keep the planes only in the tensor-core kernels' tile layout, in place; returns self.

        Serving then reads one copy of the planes: the 1-bit and int8 tensor-core kernels (p <= 4, batch
        1-16; past 16 the int8 one in launches of 16 rows) and dequantize + cuBLAS (larger batches) all take
        the tiles.  Moving a module of at most 4 planes to CUDA calls it (unless ``tile_on_cuda`` is False);
        without it a CUDA module keeps the row-major planes and makes the tiles beside them (``tiles()``):
        twice the plane bytes.  What costs: p > 4 on CUDA goes to dequantize + cuBLAS (the LUT and fp16
        tensor-core kernels read row-major planes), and the CPU paths (dequantize, scale training,
        ``to_packed``) untile the planes when they need them.  The state_dict still holds the row-major planes.
        """
        if not self.tiled:
            self._buffers["planes"] = tile_planes_torch(self.planes)
            self.tiled = True
            self.clear_cache()
        return self

    def tiles(self) -> torch.Tensor:
        """The planes in the tensor-core kernels' tile layout (``gpu.tile_planes``), uint32.

        After ``use_tile_layout()`` the planes buffer itself; else made on first use beside the row-major
        planes, a second copy in GPU memory (``nbytes`` counts one copy), rebuilt after anything that calls
        ``clear_cache``.
        """
        if self.tiled:
            return self.planes.view(torch.uint32)
        key = (self.planes.data_ptr(), self.planes.device)
        if self._tile_cache is None or self._tile_cache[0] != key:
            from gpu import tile_planes
            self._tile_cache = (key, tile_planes(self.planes.view(torch.uint32)))
        return self._tile_cache[1]

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.tiled:  # checkpoints hold the row-major planes, whatever the layout in memory
            destination[prefix + "planes"] = self.row_major_planes()

    def _forward_cuda(self, x: torch.Tensor) -> torch.Tensor:
        import gpu  # CuPy and the kernels load only when a CUDA input arrives

        p, shape = self.precision, x.shape
        x16 = x.reshape(-1, self.in_features).to(torch.float16).contiguous()  # (M, K)
        planes = None if self.tiled else self.planes[:p].view(torch.uint32)
        # the tensor-core kernels take p <= 4; above, the row-major planes serve (no tiles made for them)
        tiles = self.tiles() if self.tiled or p <= TILED_MAX_PLANES else None
        y = gpu.bcq_matmul(x16, planes, self.alpha(p), self.beta(p), group_size=self.group_size, tiles=tiles)
        y = y.to(x.dtype).reshape(*shape[:-1], self.out_features)            # (..., N)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, planes={self.num_planes}, "
                f"precisions={self.precisions}, precision={self.precision}, group_size={self.group_size}, "
                f"asymmetric={self.asymmetric}, bias={self.bias is not None}")
