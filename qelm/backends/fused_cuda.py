"""One CUDA kernel per circuit for :mod:`.fused_evolve` on the GPU: every gate of a circuit applied to one
sample's state inside one thread, forward, and the adjoint backward (Jones & Gacon 2020) in a second kernel.

Why by hand: a Quixer step applies ~300 gates to 32,768 states of 64 amplitudes; as torch operations that is
thousands of tiny kernels (launch-bound: 190 ms a step on an H200), and no library applies a per-sample
circuit to per-sample states in one pass. Here a thread holds its sample's real and imaginary parts in
registers (``2 * 2**n`` numbers, n <= 8), the gate list is unrolled at compile time (each gate a template call
with its wire masks as constants), and only the input state, the angles and the output state touch memory.

Backward keeps nothing from the forward pass but its output: it walks the gates in reverse, undoing each on the
state (``G(-theta)``: the real form of a unitary gate is orthogonal), taking ``<g, dG/dtheta x>`` for the angle
and moving the cotangent back by the same transpose. Compiled at run time by NVRTC through CuPy (the GPU
extra); without CuPy, or past 8 qubits, :mod:`.fused_evolve`'s torch code runs instead.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import torch

__all__ = ["cuda_kernels_available", "evolve_cuda", "KERNEL_GATES", "MAX_KERNEL_WIRES"]

#: gates the kernel applies (rotations and controlled rotations)
KERNEL_GATES = frozenset({"RX", "RY", "RZ", "CRX", "CRY", "CRZ"})
#: widest state a thread holds (2 * 256 numbers, plus as many for the cotangent in backward)
MAX_KERNEL_WIRES = 8

_SOURCE = r"""
typedef REAL real;
#define D DIM
__device__ __forceinline__ void sc(float a, float* s, float* c) { sincosf(a, s, c); }
__device__ __forceinline__ void sc(double a, double* s, double* c) { sincos(a, s, c); }

// x' = G x on the (re, im) pair arrays; C: control mask (0: none), M: target mask. K: 0 RY, 1 RX, 2 RZ.
template <int K, int C, int M>
__device__ __forceinline__ void gate(real* r, real* m, real c, real s) {
#pragma unroll
  for (int i = 0; i < D; i++) {
    if ((C && !(i & C)) || (i & M)) continue;
    int j = i | M;
    real ri = r[i], mi = m[i], rj = r[j], mj = m[j];
    if (K == 0) { r[i] = c * ri - s * rj; r[j] = s * ri + c * rj; m[i] = c * mi - s * mj; m[j] = s * mi + c * mj; }
    else if (K == 1) { r[i] = c * ri + s * mj; m[i] = c * mi - s * rj; r[j] = c * rj + s * mi; m[j] = c * mj - s * ri; }
    else { r[i] = c * ri + s * mi; m[i] = c * mi - s * ri; r[j] = c * rj - s * mj; m[j] = c * mj + s * rj; }
  }
}

// <g, dG/dtheta x>: dG/dtheta is G with (c, s) -> (-s/2, c/2) (the derivative of cos, sin of theta/2)
template <int K, int C, int M>
__device__ __forceinline__ real dgate(const real* r, const real* m, const real* gr, const real* gm, real c, real s) {
  real dc = -0.5f * s, ds = 0.5f * c, acc = 0;
#pragma unroll
  for (int i = 0; i < D; i++) {
    if ((C && !(i & C)) || (i & M)) continue;
    int j = i | M;
    real ri = r[i], mi = m[i], rj = r[j], mj = m[j];
    if (K == 0) acc += gr[i] * (dc * ri - ds * rj) + gr[j] * (ds * ri + dc * rj) + gm[i] * (dc * mi - ds * mj) + gm[j] * (ds * mi + dc * mj);
    else if (K == 1) acc += gr[i] * (dc * ri + ds * mj) + gm[i] * (dc * mi - ds * rj) + gr[j] * (dc * rj + ds * mi) + gm[j] * (dc * mj - ds * ri);
    else acc += gr[i] * (dc * ri + ds * mi) + gm[i] * (dc * mi - ds * ri) + gr[j] * (dc * rj - ds * mj) + gm[j] * (dc * mj + ds * rj);
  }
  return acc;
}

extern "C" __global__ void forward_kernel(const real* __restrict__ angles, const real* __restrict__ rin,
    const real* __restrict__ iin, real* __restrict__ rout, real* __restrict__ iout, int N, int P) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  real r[D], m[D], c, s;
#pragma unroll
  for (int i = 0; i < D; i++) { r[i] = rin[(long)n * D + i]; m[i] = iin[(long)n * D + i]; }
  const real* a = angles + (long)n * P;
FORWARD
#pragma unroll
  for (int i = 0; i < D; i++) { rout[(long)n * D + i] = r[i]; iout[(long)n * D + i] = m[i]; }
}

extern "C" __global__ void backward_kernel(const real* __restrict__ angles, const real* __restrict__ rout,
    const real* __restrict__ iout, const real* __restrict__ gro, const real* __restrict__ gio,
    real* __restrict__ ga, real* __restrict__ grin, real* __restrict__ giin, int N, int P) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  real r[D], m[D], gr[D], gm[D], c, s;
#pragma unroll
  for (int i = 0; i < D; i++) {
    r[i] = rout[(long)n * D + i]; m[i] = iout[(long)n * D + i]; gr[i] = gro[(long)n * D + i]; gm[i] = gio[(long)n * D + i];
  }
  const real* a = angles + (long)n * P;
  real* g = ga + (long)n * P;
BACKWARD
#pragma unroll
  for (int i = 0; i < D; i++) { grin[(long)n * D + i] = gr[i]; giin[(long)n * D + i] = gm[i]; }
}
"""

_KIND = {"RY": 0, "RX": 1, "RZ": 2}
_kernels: dict = {}


def cuda_kernels_available() -> bool:
    """Whether CuPy (which compiles the kernels with NVRTC) is installed; a GPU is checked by the caller."""
    return importlib.util.find_spec("cupy") is not None


def _template(name: str, wires: tuple[int, ...], n: int) -> str:
    kind = _KIND[name[-2:]]
    control = 1 << (n - 1 - wires[0]) if name.startswith("C") else 0
    return f"<{kind}, {control}, {1 << (n - 1 - wires[-1])}>"


def _source(plan, real: str) -> str:
    n = plan.n_wires
    fwd, bwd = [], []
    for name, wires, col in plan.gates:
        t = _template(name, wires, n)
        fwd.append(f"  sc((real)0.5 * a[{col}], &s, &c); gate{t}(r, m, c, s);")
    for name, wires, col in reversed(plan.gates):
        t = _template(name, wires, n)
        bwd.append(f"  sc((real)0.5 * a[{col}], &s, &c); gate{t}(r, m, c, -s); "
                   f"g[{col}] = dgate{t}(r, m, gr, gm, c, s); gate{t}(gr, gm, c, -s);")
    return (_SOURCE.replace("REAL", real).replace("DIM", str(2**n))
            .replace("FORWARD", "\n".join(fwd)).replace("BACKWARD", "\n".join(bwd)))


def _compiled(plan, dtype: torch.dtype):
    key = (plan, dtype)
    if key not in _kernels:
        import cupy  # lazy: optional, CUDA machines only

        real = "float" if dtype == torch.float32 else "double"
        module = cupy.RawModule(code=_source(plan, real), options=("--std=c++17",))
        _kernels[key] = (module.get_function("forward_kernel"), module.get_function("backward_kernel"))
    return _kernels[key]


def _launch(kernel, n: int, *tensors_and_ints) -> None:
    import cupy  # lazy: optional, CUDA machines only

    args = [cupy.asarray(t.detach()) if isinstance(t, torch.Tensor) else np.int32(t) for t in tensors_and_ints]
    block = 128
    with _torch_stream(cupy):
        kernel(((n + block - 1) // block,), (block,), tuple(args))


def _launch_grid(kernel, grid: tuple[int, ...], block: int, shared: int, *args) -> None:
    """Launch ``kernel`` on torch's current stream with ``shared`` bytes of dynamic shared memory; tensors are
    passed as device arrays, anything else as given (a NumPy scalar of the parameter's type)."""
    import cupy  # lazy: optional, CUDA machines only

    cargs = tuple(cupy.asarray(a.detach()) if isinstance(a, torch.Tensor) else a for a in args)
    with _torch_stream(cupy):
        kernel(grid, (block,), cargs, shared_mem=shared)


class _StreamHandle:
    """torch's current CUDA stream in the CUDA stream protocol (``__cuda_stream__``: version 0, handle)."""

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __cuda_stream__(self) -> tuple[int, int]:
        return 0, self.handle


def _torch_stream(cupy):
    """CuPy's view of torch's current stream, so a kernel runs in order with torch's work: through
    ``Stream.from_external`` where CuPy has it (``ExternalStream`` is deprecated there), else ``ExternalStream``."""
    handle = torch.cuda.current_stream().cuda_stream
    if hasattr(cupy.cuda.Stream, "from_external"):
        try:
            return cupy.cuda.Stream.from_external(_StreamHandle(handle))
        except (TypeError, ValueError):  # a CuPy that reads the protocol otherwise: the old way, quietly
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy.cuda.ExternalStream(handle)


class _Evolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, angles, re, im):
        forward_kernel, _ = _compiled(plan, re.dtype)
        N, P = re.shape[0], angles.shape[-1]
        rout, iout = torch.empty_like(re), torch.empty_like(im)
        _launch(forward_kernel, N, angles, re, im, rout, iout, N, P)
        ctx.plan = plan
        ctx.save_for_backward(angles, rout, iout)
        return rout, iout

    @staticmethod
    def backward(ctx, g_re, g_im):
        angles, rout, iout = ctx.saved_tensors
        _, backward_kernel = _compiled(ctx.plan, rout.dtype)
        N, P = rout.shape[0], angles.shape[-1]
        g_re = torch.zeros_like(rout) if g_re is None else g_re.contiguous()
        g_im = torch.zeros_like(iout) if g_im is None else g_im.contiguous()
        ga, grin, giin = torch.empty_like(angles), torch.empty_like(rout), torch.empty_like(iout)
        _launch(backward_kernel, N, angles, rout, iout, g_re, g_im, ga, grin, giin, N, P)
        return None, ga, grin, giin


def kernel_applies(plan, re: torch.Tensor) -> bool:
    """The kernel path is taken for CUDA states of at most 8 qubits whose gates are all rotations."""
    return (re.is_cuda and plan.n_wires <= MAX_KERNEL_WIRES and cuda_kernels_available()
            and all(name in KERNEL_GATES for name, _, _ in plan.gates))


def evolve_cuda(plan, angles: torch.Tensor, re: torch.Tensor, im: torch.Tensor):
    """:func:`qelm.backends.fused_evolve.evolve_pairs` as one CUDA kernel per call (and one in backward)."""
    N = re.shape[0]
    angles = angles.to(re.dtype).expand(N, -1).contiguous()
    return _Evolve.apply(plan, angles, re.contiguous(), im.contiguous())
