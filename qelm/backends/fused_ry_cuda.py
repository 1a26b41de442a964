"""One CUDA kernel for a layer of per-sample RY data rotations (forward), and one for its backward pass.

Why by hand: in a re-uploading circuit every layer after the first begins with RY rotations whose angles are
the sample's own data, so they cannot be fused into the weight unitaries. As torch operations
(:class:`~qelm.backends.fused_kernels.RYLayer`) each wire is four strided kernels over half the state, and
the backward pass reads the state again per wire: on an H200, in a QELM step at 8 qubits and T = 512, these
were ~450 kernels and half of the step's GPU time (``benchmarks/width_models.py --profile``). Here a thread
block loads a tile of samples' states into shared memory once, applies every wire's rotation there, and
writes the result once; the backward kernel reads the output and its cotangent once, takes every angle's
gradient ``<g, G_w psi_out>`` (the rotations of distinct wires commute, see ``RYLayer``) and rotates the
cotangent back. No library applies per-sample one-qubit rotations to a batch of states this way.

Layout as the torch code: states ``(B, Dc, M)`` with the samples ``M`` last and ``Dc = 2**n`` real
amplitudes or ``2 * 2**n`` interleaved (re, im) ones; half-angles ``(B, k, M)``. Compiled at run time by
NVRTC through CuPy (the GPU extra), like :mod:`.fused_cuda`; without CuPy, on the CPU, while torch.compile
traces, or for states too large for a tile of shared memory, the torch code runs instead.
"""

from __future__ import annotations

import numpy as np
import torch

from .fused_cuda import _launch_grid, cuda_kernels_available
from .fused_kernels import RYLayer

__all__ = ["ry_layer_apply", "kernel_applies"]

#: the kernel is used where this is True (the GPU tests compare it with the torch code)
ENABLED = True
_THREADS = 256
_SHARED_BYTES = 48 * 1024  # what a block may use without opting in to more
_MIN_TILE = 4  # samples per block: fewer reads too little of each row at once to be worth it

_SOURCE = r"""
typedef REAL real;
#define DC DCVAL
#define TM TMVAL
#define K KVAL
#define NT NTVAL
#define TY (NT / TM)
__device__ const int STRIDES[K] = {STRIDELIST};

extern "C" __global__ void ry_forward(const real* __restrict__ t, const real* __restrict__ cs,
                                      const real* __restrict__ sn, real* __restrict__ out, int M) {
  extern __shared__ unsigned char raw[];
  real* sm = reinterpret_cast<real*>(raw);  // [DC][TM]
  const int b = blockIdx.y, tx = threadIdx.x % TM, ty = threadIdx.x / TM, m = blockIdx.x * TM + tx;
  const bool ok = m < M;
  const size_t base = (size_t)b * DC * M;
  for (int r = ty; r < DC; r += TY) sm[r * TM + tx] = ok ? t[base + (size_t)r * M + m] : real(0);
  __syncthreads();
#pragma unroll
  for (int j = 0; j < K; j++) {
    const real c = ok ? cs[((size_t)b * K + j) * M + m] : real(1);
    const real s = ok ? sn[((size_t)b * K + j) * M + m] : real(0);
    const int st = STRIDES[j];
    for (int q = ty; q < DC / 2; q += TY) {
      const int r0 = (q / st) * 2 * st + q % st, r1 = r0 + st;
      const real x0 = sm[r0 * TM + tx], x1 = sm[r1 * TM + tx];
      sm[r0 * TM + tx] = c * x0 - s * x1;
      sm[r1 * TM + tx] = s * x0 + c * x1;
    }
    __syncthreads();
  }
  if (ok) for (int r = ty; r < DC; r += TY) out[base + (size_t)r * M + m] = sm[r * TM + tx];
}

extern "C" __global__ void ry_backward(const real* __restrict__ g, const real* __restrict__ out,
                                       const real* __restrict__ cs, const real* __restrict__ sn,
                                       real* __restrict__ gt, real* __restrict__ gh, int M) {
  extern __shared__ unsigned char raw[];
  real* gs = reinterpret_cast<real*>(raw);  // [DC][TM]: the cotangent
  real* ps = gs + DC * TM;                  // [DC][TM]: the layer's output
  __shared__ real red[NT];
  const int b = blockIdx.y, tx = threadIdx.x % TM, ty = threadIdx.x / TM, m = blockIdx.x * TM + tx;
  const bool ok = m < M;
  const size_t base = (size_t)b * DC * M;
  for (int r = ty; r < DC; r += TY) {
    gs[r * TM + tx] = ok ? g[base + (size_t)r * M + m] : real(0);
    ps[r * TM + tx] = ok ? out[base + (size_t)r * M + m] : real(0);
  }
  __syncthreads();
  // every angle from the output: d/dhalf_j = <g, G_j psi_out>, G = [[0, -1], [1, 0]] on wire j
#pragma unroll
  for (int j = 0; j < K; j++) {
    const int st = STRIDES[j];
    real acc = 0;
    for (int q = ty; q < DC / 2; q += TY) {
      const int r0 = (q / st) * 2 * st + q % st, r1 = r0 + st;
      acc += gs[r1 * TM + tx] * ps[r0 * TM + tx] - gs[r0 * TM + tx] * ps[r1 * TM + tx];
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    if (ty == 0) {
      real sum = 0;
      for (int y = 0; y < TY; y++) sum += red[y * TM + tx];
      if (ok) gh[((size_t)b * K + j) * M + m] = sum;
    }
    __syncthreads();
  }
  // the cotangent back through the layer: RY(-theta) per wire, in reverse order
#pragma unroll
  for (int j = K - 1; j >= 0; j--) {
    const real c = ok ? cs[((size_t)b * K + j) * M + m] : real(1);
    const real s = ok ? -sn[((size_t)b * K + j) * M + m] : real(0);
    const int st = STRIDES[j];
    for (int q = ty; q < DC / 2; q += TY) {
      const int r0 = (q / st) * 2 * st + q % st, r1 = r0 + st;
      const real x0 = gs[r0 * TM + tx], x1 = gs[r1 * TM + tx];
      gs[r0 * TM + tx] = c * x0 - s * x1;
      gs[r1 * TM + tx] = s * x0 + c * x1;
    }
    __syncthreads();
  }
  if (ok) for (int r = ty; r < DC; r += TY) gt[base + (size_t)r * M + m] = gs[r * TM + tx];
}
"""

_kernels: dict = {}


def _tile(dc: int, item: int) -> int:
    """Samples per block: the most (a power of two, at most 32) whose two state tiles fit the shared memory."""
    tile = 32
    while tile >= 1 and 2 * dc * tile * item + _THREADS * item > _SHARED_BYTES:
        tile //= 2
    return tile


def kernel_applies(t: torch.Tensor) -> bool:
    """Whether :func:`ry_layer_apply` takes the kernel for states ``t`` ``(B, Dc, M)``."""
    return (ENABLED and t.is_cuda and t.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling()
            and _tile(t.shape[-2], t.element_size()) >= _MIN_TILE and cuda_kernels_available())


def _compiled(dc: int, strides: tuple[int, ...], dtype: torch.dtype):
    key = (dc, strides, dtype)
    if key not in _kernels:
        import cupy  # lazy: optional, CUDA machines only

        item = 4 if dtype == torch.float32 else 8
        tile = _tile(dc, item)
        code = _SOURCE
        for name, value in (("REAL", "float" if dtype == torch.float32 else "double"), ("DCVAL", dc),
                            ("TMVAL", tile), ("KVAL", len(strides)), ("NTVAL", _THREADS),
                            ("STRIDELIST", ", ".join(map(str, strides)))):
            code = code.replace(name, str(value))
        module = cupy.RawModule(code=code, options=("--std=c++17",))
        _kernels[key] = (module.get_function("ry_forward"), module.get_function("ry_backward"), tile, item)
    return _kernels[key]


class _RYLayerKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, half, strides):
        c, s = torch.cos(half).contiguous(), torch.sin(half).contiguous()
        fwd, _, tile, item = _compiled(t.shape[1], strides, t.dtype)
        B, dc, M = t.shape
        out = torch.empty_like(t)
        _launch_grid(fwd, ((M + tile - 1) // tile, B), _THREADS, dc * tile * item, t, c, s, out, np.int32(M))
        ctx.save_for_backward(out, c, s)
        ctx.strides = strides
        return out

    @staticmethod
    def backward(ctx, g):
        out, c, s = ctx.saved_tensors
        _, bwd, tile, item = _compiled(out.shape[1], ctx.strides, out.dtype)
        B, dc, M = out.shape
        gt, gh = torch.empty_like(out), torch.empty_like(c)
        _launch_grid(bwd, ((M + tile - 1) // tile, B), _THREADS, 2 * dc * tile * item, g.contiguous(), out, c, s, gt,
                     gh, np.int32(M))
        return gt, gh, None


def ry_layer_apply(t: torch.Tensor, half: torch.Tensor, wires: tuple[int, ...], n: int) -> torch.Tensor:
    """RY(2 * half) on each wire of ``wires`` for every state of ``t`` ``(B, Dc, M)``, ``half`` ``(B or 1, k, M)``;
    differentiable in both. The kernel where :func:`kernel_applies`, else :class:`RYLayer`'s torch code."""
    if not kernel_applies(t):
        return RYLayer.apply(t, half, wires, n)
    B, dc, _ = t.shape
    strides = tuple(dc >> (w + 1) for w in wires)  # rows between the two halves of wire w (wire 0 the highest bit)
    return _RYLayerKernel.apply(t.contiguous(), half.to(t.dtype).expand(B, -1, -1), strides)
