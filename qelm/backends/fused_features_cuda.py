"""One CUDA kernel for a no-grad call of a narrow circuit in the feature form: data angles in, ``<Z>`` out.

Why by hand: in the feature form (:mod:`.fused_features`) a call is ``<Z> = z^T (W phi(x))**2`` per sample,
with ``W`` fixed by the weights. Written in torch that is about fifteen kernels (the angles cast to float64,
the half-angle cosines and sines, the monomials and their Kronecker products, a GEMM, the square, the
readout GEMM, the cast back), each a launch over a few hundred numbers. In a decode step on a GPU (one token
per sequence, batch 1-8) those launches, not the arithmetic, are the cost: a QELM's step was ~150 kernels
against its twin's ~90. Here one kernel does it all: a thread block takes a tile of samples of one weight
set, computes their cosines, sines and monomials in shared memory, every row of ``psi = W phi`` (its
threads over rows and samples), squares them and sums the readout, and writes ``<Z>`` in the caller's dtype
and layout. Forward only: calls that need a gradient (training) take the torch code, which autograd
differentiates. No library computes a feature-form circuit; cuBLAS would do the GEMM alone.

Layout: angles ``x`` ``(S, M, n_data)`` (the circuit's data angles as it returns them, samples then
columns); ``W`` ``(S, R, F)`` with ``R = G * Dc`` (``G`` weight sets sharing the inputs, their real or
interleaved rows); ``z`` ``(Dc, n_obs)``; out ``(S, G, M, n_obs)``. Compiled at run time by NVRTC through
CuPy (the GPU extra), like :mod:`.fused_cuda`.
"""

from __future__ import annotations

import numpy as np
import torch

from .fused_cuda import _launch_grid, cuda_kernels_available

__all__ = ["kernel_applies", "features_expval"]

#: the kernel is used where this is True (the GPU tests compare it with the torch code)
ENABLED = True
_THREADS = 256
_SHARED_BYTES = 40 * 1024  # static shared memory of a block, under the 48 KiB a block may use without opting in
_TYPES = {torch.float32: "float", torch.float64: "double"}

_SOURCE = r"""
typedef REAL real;
#define A AVAL
#define F FVAL
#define R RVAL
#define DC DCVAL
#define G GVAL
#define NO NOVAL
#define ND NDVAL
#define TM TMVAL
#define NT NTVAL
__device__ const int COLS[A] = {COLLIST};
__device__ const int POW[A] = {POWLIST};
__device__ const int STRIDE[A] = {STRIDELIST};

extern "C" __global__ void features_expval(const XT* __restrict__ x, const real* __restrict__ W,
                                           const real* __restrict__ z, OT* __restrict__ out, int M) {
  __shared__ real cs[A][TM], sn[A][TM], phi[F][TM], sq[R][TM];
  const int s = blockIdx.y, m0 = blockIdx.x * TM;
  // the half-angle cosines and sines of each distinct data angle
  for (int i = threadIdx.x; i < A * TM; i += NT) {
    const int a = i / TM, t = i % TM, m = m0 + t;
    const real h = m < M ? (real)0.5 * (real)x[((size_t)s * M + m) * ND + COLS[a]] : (real)0;
    cs[a][t] = cos(h);
    sn[a][t] = sin(h);
  }
  __syncthreads();
  // monomial f: prod_a c_a^(r_a - e_a) s_a^e_a, e_a its mixed-radix digits (the first angle most significant)
  for (int i = threadIdx.x; i < F * TM; i += NT) {
    const int f = i / TM, t = i % TM;
    real p = 1;
    for (int a = 0; a < A; a++) {
      const int e = (f / STRIDE[a]) % (POW[a] + 1);
      for (int k = 0; k < POW[a] - e; k++) p *= cs[a][t];
      for (int k = 0; k < e; k++) p *= sn[a][t];
    }
    phi[f][t] = p;
  }
  __syncthreads();
  // psi = W phi, squared: the threads over rows and samples (a row of W read by the tile's samples at once)
  const real* Ws = W + (size_t)s * R * F;
  for (int i = threadIdx.x; i < R * TM; i += NT) {
    const int r = i / TM, t = i % TM;
    const real* w = Ws + (size_t)r * F;
    real acc = 0;
    for (int f = 0; f < F; f++) acc += w[f] * phi[f][t];
    sq[r][t] = acc * acc;
  }
  __syncthreads();
  // <Z_j> of set g: the signs of its rows times their squares
  for (int i = threadIdx.x; i < G * NO * TM; i += NT) {
    const int t = i % TM, o = i / TM, g = o / NO, j = o % NO, m = m0 + t;
    real v = 0;
    for (int r = 0; r < DC; r++) v += z[r * NO + j] * sq[g * DC + r][t];
    if (m < M) out[(((size_t)s * G + g) * M + m) * NO + j] = (OT)v;
  }
}
"""

_kernels: dict = {}


def _tile(M: int, n_angles: int, n_features: int, rows: int, item: int) -> int:
    """Samples per block: a power of two, at most 32 and not much more than ``M`` (a decode step has a few
    samples: idle columns would cost the block their rows), whose shared arrays fit :data:`_SHARED_BYTES`."""
    tile = 1
    while tile < min(M, 32):
        tile *= 2
    while tile >= 1 and (2 * n_angles + n_features + rows) * tile * item > _SHARED_BYTES:
        tile //= 2
    return tile


def kernel_applies(*tensors: torch.Tensor) -> bool:
    """Whether a call on ``tensors`` (its inputs and weights) may take the kernel: on CUDA, CuPy installed,
    no gradient wanted, not while torch.compile traces."""
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return (ENABLED and not wants_grad and all(t.is_cuda for t in tensors) and not torch.compiler.is_compiling()
            and cuda_kernels_available())


def _strides(powers: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for r in reversed(powers):
        strides.append(step)
        step *= r + 1
    return tuple(reversed(strides))


def _compiled(columns: tuple[int, ...], powers: tuple[int, ...], n_features: int, rows: int, dc: int, group: int,
              n_obs: int, n_data: int, tile: int, real: torch.dtype, xt: torch.dtype, ot: torch.dtype):
    key = (columns, powers, n_features, rows, dc, group, n_obs, n_data, tile, real, xt, ot)
    if key not in _kernels:
        import cupy  # lazy: optional, CUDA machines only

        code = _SOURCE
        for name, value in (("COLLIST", ", ".join(map(str, columns))), ("POWLIST", ", ".join(map(str, powers))),
                            ("STRIDELIST", ", ".join(map(str, _strides(powers)))), ("AVAL", len(columns)),
                            ("FVAL", n_features), ("RVAL", rows), ("DCVAL", dc), ("GVAL", group), ("NOVAL", n_obs),
                            ("NDVAL", n_data), ("TMVAL", tile), ("NTVAL", _THREADS), ("REAL", _TYPES[real]),
                            ("XT", _TYPES[xt]), ("OT", _TYPES[ot])):
            code = code.replace(name, str(value))
        module = cupy.RawModule(code=code, options=("--std=c++17",))
        _kernels[key] = module.get_function("features_expval")
    return _kernels[key]


def features_expval(columns: tuple[int, ...], powers: tuple[int, ...], x: torch.Tensor, W: torch.Tensor,
                    z: torch.Tensor, group: int, out_dtype: torch.dtype) -> torch.Tensor | None:
    """``<Z>`` ``(S, G, M, n_obs)`` of ``psi = W phi(x)``: ``x`` ``(S, M, n_data)`` data angles, ``columns``
    the data column of each distinct angle and ``powers`` the rotations it drives (the feature plan's),
    ``W`` ``(S, G * Dc, F)``, ``z`` ``(Dc, n_obs)``. None where a tile of one sample does not fit the shared
    memory or a dtype has no kernel (the caller runs the torch code)."""
    S, M, n_data = x.shape
    rows, F = W.shape[-2:]
    dc, n_obs = z.shape
    if x.dtype not in _TYPES or W.dtype not in _TYPES or out_dtype not in _TYPES or rows != group * dc:
        return None
    tile = _tile(M, len(columns), F, rows, W.element_size())
    if tile < 1:
        return None
    kernel = _compiled(tuple(columns), tuple(powers), F, rows, dc, group, n_obs, n_data, tile, W.dtype, x.dtype,
                       out_dtype)
    out = torch.empty(S, group, M, n_obs, dtype=out_dtype, device=x.device)
    _launch_grid(kernel, ((M + tile - 1) // tile, S), _THREADS, 0, x.contiguous(), W.contiguous(),
                 z.to(W.dtype).contiguous(), out, np.int32(M))
    return out
