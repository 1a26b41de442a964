"""``qelm.fused``: qelm's own exact state-vector simulator, in plain torch, built around fusion.

Why qelm writes a simulator: the general-purpose ones (PennyLane's default.qubit, Lightning, qiskit-aer)
simulate every sample gate by gate, although most gates of a qelm circuit have angles shared by the whole
batch (the variational weights, per call or per head). No library fuses by that split, so this module does.
It runs (:mod:`.fused_executor`) a plan from :mod:`.fused_plan`:

* the prefix of data rotations on ``|0...0>`` is a product state: per-wire 2-vectors and ``n - 1`` Kronecker
  products, no ``2**n`` simulation;
* each block of batch-invariant gates is one unitary per weight set, built in torch once per call (so
  autograd differentiates it), and applied to all states of its set by one matrix product, states laid out
  weight-set-major with the samples last: ``(S, D', D) @ (S, D, M)`` (:mod:`.fused_kernels`);
* data gates act per sample as ``c * psi + s * (G psi)``, ``G = -iP`` a signed permutation.

States are real tensors: ``(..., D)`` while every amplitude is real (a product of RY rotations is), then
interleaved ``(..., 2D)`` real and imaginary parts. A complex matrix product becomes one real GEMM
(``(N, 2D) @ (2D, 2D)``, or ``(N, D) @ (D, 2D)`` from a real state, half the work of a complex GEMM) and
every per-sample kernel is real arithmetic.

A narrow circuit whose data gates are all RYs (the re-uploading circuits, the angle embedding) takes a shorter
road (:mod:`.fused_features`): its final state is one matrix per weight set times the monomials of the data
angles' half-angle cosines and sines, so a call is one GEMM per sample batch instead of a pass per stage.

That is right while a ``2**n x 2**n`` unitary is cheap. From :data:`BLOCKS_FROM_WIRES` wires a circuit runs
as a :class:`~qelm.backends.fused_blocks.BlockPlan` instead: after the same product-state prefix, its gates
fused into blocks of a few wires (``k`` chosen per device by a measured cost model), each one real GEMM on
the state's last axes, and differentiated by the adjoint method (:mod:`.fused_adjoint`), which keeps the
output states and not one state per gate. Its plan is built from the gate list alone, with no
``2**n``-sized object, in milliseconds.

Precision: ``dtype="complex128"`` (default; float64 arithmetic, agrees with default.qubit to ~1e-15) or
``"complex64"`` (float32, ~1e-7; about half the memory traffic). Exact only: shots are refused (use
qiskit.aer or default.qubit for sampling).
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..circuits import z_signs
from ..errors import BackendError, ConfigError
from ..memory import format_bytes, free_memory_bytes
from .base import Backend, check_angles
from .cpu_threads import check, limited
from .cuda_graph import GraphPool, capturing, fixed_store
from .fused_adjoint import CHUNK_STATES, STATES_KEPT, BlockExecutor, chunk_size
from .fused_blocks import BlockPlan, block_bytes, build_block_plan
from .fused_cuda import evolve_cuda, kernel_applies
from .fused_evolve import evolve_pairs, evolve_plan
from .fused_executor import Executor
from . import fused_features_cuda as features_cuda
from .fused_features import FeaturePlan, feature_plan, run_features
from .fused_joint import Call, Held, build, structure
from .fused_kernels import Tensors
from .fused_plan import Plan, UnsupportedGate, build_plan, state_passes
from .gates import CONTROLLED_ROTATIONS, FIXED, ROTATIONS, check_gates, gate_list, refusal

#: circuits on at least this many wires run as k-qubit blocks with adjoint differentiation
#: (:mod:`.fused_blocks`, :mod:`.fused_adjoint`); narrower ones as whole-register unitaries with autograd.
#: Per device, from measurement: on the 2-core CPU blocks lost to whole-register unitaries at 8 wires and tied
#: at 9-10 (``benchmarks/gpu_backends.py --device cpu``); the backend option ``blocks_from`` overrides it
BLOCKS_FROM_WIRES = {"cpu": 11, "cuda": 11}

#: where narrow re-uploading circuits run in the feature form (:mod:`.fused_features`) when ``features`` is on:
#: measured faster on the 2-core CPU (``benchmarks/cpu_step.py``); on an H200 whole 4-qubit models trained
#: no faster with it (10.6 against 9.6 ms a step at T = 128, even at 512; ``benchmarks/width_models.py``).
#: On CUDA a call without a gradient takes it anyway, as one kernel (:mod:`.fused_features_cuda`;
#: ``FusedBackend._feature_form``): a decode step 57 kernels instead of ~150 (``benchmarks/launch.py``)
FEATURES_ON = {"cpu": True, "cuda": False}

#: a call that needs less than this is not checked: reading the machine's free memory takes ~0.1 ms, a
#: tenth of a small training call, and so little memory is there or the process is failing anyway
_UNCHECKED_BYTES = 32 * 2**20

__all__ = ["FusedBackend", "DTYPES"]

DTYPES = {"complex128": (torch.complex128, torch.float64), "complex64": (torch.complex64, torch.float32)}
_ALTERNATIVES = "'lightning.qubit' (one state at a time, no unitaries) or 'qiskit.aer' with method='matrix_product_state'"


class FusedBackend(Backend):
    """``qelm.fused``: exact, autograd-differentiable, CPU or CUDA (follows the tensors); see the module."""

    name = "qelm.fused"
    supports_state = True
    traceable = True
    options = ("dtype", "cuda_graph", "cpu_threads", "blocks_from")
    cpu_threads: int | None = 1  # also what a backend pickled before the option had
    features: bool = True  # likewise (see __init__)

    def __init__(self, shots: int | None = None, seed: int | None = None, dtype: str = "complex128",
                 cuda_graph: bool = True, cpu_threads: int | None = 1, blocks_from: int | None = None) -> None:
        if shots is not None:
            raise BackendError(f"backend 'qelm.fused' computes exact expectations and takes no shots (got shots={shots!r}): "
                             "for sampled estimates use backend 'qiskit.aer' or 'default.qubit' with shots")
        super().__init__(shots=None, seed=seed)
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).replace("torch.", "")
        if dtype not in DTYPES:
            raise BackendError(f"dtype={dtype!r} is invalid for backend 'qelm.fused': choose one of {', '.join(DTYPES)}")
        self.dtype = dtype
        if not isinstance(cuda_graph, bool):
            raise BackendError(f"cuda_graph={cuda_graph!r} is invalid: use True or False")
        # CUDA graphs replay a training call's kernels with one launch (qelm.backends.cuda_graph): on a GPU a
        # batch up to ~1M circuits is bound by launching a few hundred small kernels, not by the arithmetic
        # (H200: 5.2 ms eager, 0.67 ms replayed at N = 4,096). On by default; only CUDA calls that will be
        # differentiated are recorded, so CPU runs and evaluation are untouched
        self._graphs = GraphPool() if cuda_graph else None
        try:
            check(cpu_threads)
        except ConfigError as e:
            raise BackendError(str(e)) from None
        #: most intra-op threads of a CPU call, forward and backward (qelm.backends.cpu_threads); None: torch's
        self.cpu_threads = cpu_threads
        if blocks_from is not None and (isinstance(blocks_from, bool) or not isinstance(blocks_from, int)
                                        or blocks_from < 1):
            raise BackendError(f"blocks_from={blocks_from!r} is invalid: use a positive number of wires, or None for "
                               f"the measured default per device ({BLOCKS_FROM_WIRES})")
        #: circuits on at least this many wires run as k-qubit blocks (None: :data:`BLOCKS_FROM_WIRES` per device)
        self.blocks_from = blocks_from
        self._plans: dict = {}
        #: evolve on CUDA through one generated kernel per circuit (qelm.backends.fused_cuda) where it applies;
        #: False runs fused_evolve's torch operations everywhere (the GPU tests compare the two)
        self.evolve_kernel = True
        #: narrow re-uploading circuits as one feature map and one matrix per weight set
        #: (qelm.backends.fused_features) where they qualify; False runs them stage by stage (the tests compare)
        self.features = True
        self._passes: dict = {}  # circuit -> passes over the state per call (memory check)
        self._tensors: dict = {}
        self._reuse: dict = {}  # block matrices of the last no-grad call per (plan, weight shape), by weight value
        self._checked: set = set()  # circuits check_circuit accepted

    def describe(self) -> str:
        return f"{self.name} (exact, {self.dtype})"

    # --- evolve: a circuit on given states (qelm.backends.fused_evolve) -------------------------------
    def evolve(self, circuit, angles: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        real = DTYPES[self.dtype][1]
        re, im = self.evolve_pairs(circuit, angles, states.real.to(real), states.imag.to(real))
        return torch.complex(re, im)

    def evolve_pairs(self, circuit, angles: torch.Tensor, re: torch.Tensor, im: torch.Tensor):
        check_angles(circuit, angles)
        key = (type(circuit), circuit.key, "evolve")
        if key not in self._plans:
            self._plans[key] = evolve_plan(circuit)
        plan = self._plans[key]
        if self.evolve_kernel and kernel_applies(plan, re):
            return evolve_cuda(plan, angles, re, im)
        return evolve_pairs(plan, angles, re, im)

    # device tensors, ids and plans: rebuilt on demand
    _transient = Backend._transient + ("_plans", "_tensors", "_reuse", "_passes", "_checked", "_held", "_warmed")

    # --- plans -------------------------------------------------------------------------------------
    def _blocks(self, circuit, device: torch.device | None) -> bool:
        """Whether ``circuit`` runs as k-qubit blocks on ``device`` (else as whole-register unitaries)."""
        start = getattr(self, "blocks_from", None)  # a backend pickled before the option has none
        if start is None:
            start = BLOCKS_FROM_WIRES.get(device.type if device is not None else "cpu", BLOCKS_FROM_WIRES["cpu"])
        return circuit.n_wires >= start

    def _plan(self, circuit, split: bool, device: torch.device | None = None) -> Plan | BlockPlan:
        blocks = self._blocks(circuit, device)
        device_type = device.type if device is not None else "cpu"
        kind = device_type if blocks else None
        key = (type(circuit), circuit.key, split, kind)
        if key not in self._plans:
            layout = circuit.angle_layout() if split else tuple((False, j) for j in range(circuit.n_angles))
            if split:
                _check_layout(circuit, layout)
            try:
                self._plans[key] = build_block_plan(circuit, layout, device=device_type) if blocks else build_plan(circuit, layout)
            except UnsupportedGate as e:
                raise _unsupported(circuit, e) from None
        return self._plans[key]

    def check_circuit(self, circuit) -> None:
        """Its gates are in this simulator's vocabulary (``FIXED`` and ``ROTATIONS`` of
        :mod:`qelm.backends.gates`, after PennyLane's decomposition, each angle one entry of the angle vector),
        and its ``angles`` are its ``data_angles`` and weights as ``angle_layout`` places them."""
        key, checked = (type(circuit), circuit.key), self.__dict__.setdefault("_checked", set())
        if key in checked:
            return
        _check_layout(circuit, circuit.angle_layout())
        unknown = sorted({g.name for g in check_gates(self.name, circuit)} - FIXED - ROTATIONS)
        if unknown:
            raise _unsupported(circuit, UnsupportedGate(unknown[0]))
        checked.add(key)

    def _cache(self, device: torch.device) -> Tensors:
        key = (device, self.dtype)
        if key not in self._tensors:
            cplx, real = DTYPES[self.dtype]
            self._tensors[key] = Tensors(device, real, cplx)
        return self._tensors[key]

    def _executor(self, plan, device: torch.device):
        if isinstance(plan, Plan):
            return Executor(plan, self._cache(device))
        cplx, real = DTYPES[self.dtype]
        key = (id(plan), device, self.dtype)
        if key not in self._tensors:
            self._tensors[key] = BlockExecutor.constants(plan, device, real, cplx)
        return BlockExecutor(plan, self._tensors[key], cplx)

    def _check_memory(self, circuit, n_states: int, n_sets: int, device: torch.device, split: bool = True) -> None:
        """Refuse, before any allocation, a call whose states and unitaries cannot fit, naming the largest
        batch that does. Narrow circuits (whole-register unitaries, autograd): interleaved states, about two
        kept per layer of the circuit for backward or two per pass over the state
        (:func:`~qelm.backends.fused_plan.state_passes`), whichever is more, and the unitaries. Block plans
        (adjoint): :data:`~qelm.backends.fused_adjoint.STATES_KEPT` states per sample held through the call,
        the working states of one chunk of samples, and each weight block's unitary with its construction per
        weight set."""
        if torch.compiler.is_compiling() or (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
            return  # checked when the model ran eagerly; neither the compiler nor a graph capture can ask
        item = torch.empty(0, dtype=DTYPES[self.dtype][1]).element_size()
        n = circuit.n_wires
        if self._blocks(circuit, device):
            try:
                plan = self._plan(circuit, split, device)  # no 2**n table: milliseconds
            except UnsupportedGate:
                return  # refused with its fix when the call builds it
            assert isinstance(plan, BlockPlan)
            cplx = DTYPES[self.dtype][0]
            state = 2 * item * 2**n
            per_state = state * STATES_KEPT
            chunk = chunk_size(n, n_sets, max(1, n_states // max(1, n_sets)), cplx, device)
            fixed = n_sets * block_bytes(plan, 2 * item) + CHUNK_STATES * state * n_sets * chunk
        else:
            key = (type(circuit), circuit.key)
            if key not in self._passes:
                try:
                    self._passes[key] = state_passes(circuit, circuit.angle_layout())
                except Exception:  # a circuit the plan refuses: the plan says why, with the fix
                    self._passes[key] = 0
            kept = max(4 * circuit.n_layers + 6, 2 * self._passes[key] + 6)
            per_state = 2 * 2**n * item * kept
            fixed = n_sets * 2 * 4**n * item * 8 + 24 * 2**n * (4 * circuit.n_layers + 4)
        need = n_states * per_state + fixed
        if need < _UNCHECKED_BYTES:
            return
        have = free_memory_bytes(device)
        if need > have:
            fit = max(0, (have - fixed) // per_state)
            raise MemoryError(
                f"circuit {circuit.name!r} on {n} wires (n_qubits={circuit.n_qubits}) needs about "
                f"{format_bytes(need)} for {n_states} states and {n_sets} weight set(s) on backend 'qelm.fused', "
                f"more than the {format_bytes(have)} free on {device}: at most {fit} states fit; use a batch of "
                f"at most {fit} samples, fewer qubits, or backend {_ALTERNATIVES}")

    def _evolves(self, circuit) -> bool:
        """Whether ``circuit`` has controlled rotations, which the plan does not fuse: it then runs through
        :meth:`evolve_pairs` from ``|0...0>`` (every angle per sample)."""
        key = (type(circuit), circuit.key, "controlled")
        if key not in self._plans:
            try:
                gates = gate_list(circuit, controlled=True)
            except ValueError:
                gates = []  # the plan reports what is wrong with this circuit
            self._plans[key] = any(g.name in CONTROLLED_ROTATIONS for g in gates)
        return self._plans[key]

    def _from_zero(self, circuit, angles: torch.Tensor, kind: str) -> torch.Tensor:
        cplx, real = DTYPES[self.dtype]
        re = torch.zeros(angles.shape[0], 2**circuit.n_wires, dtype=real, device=angles.device)
        re[:, 0] = 1
        re, im = self.evolve_pairs(circuit, angles.to(real), re, torch.zeros_like(re))
        if kind == "state":
            return torch.complex(re, im).to(cplx)
        probs = re * re + im * im
        return (probs @ z_signs(circuit.n_wires, circuit.z_strings, probs)).to(angles.dtype)

    # --- the interface -----------------------------------------------------------------------------
    def _execute(self, circuit, inputs, weights, kind, sets, batch) -> torch.Tensor:
        if self._evolves(circuit):
            return Backend._execute(self, circuit, inputs, weights, kind, sets, batch)
        self._check_memory(circuit, math.prod(batch), math.prod(sets), inputs.device)
        if self._graphs is not None and GraphPool.applies(inputs, weights):
            # built before recording: the recorder must not see the host work
            if FEATURES_ON.get(inputs.device.type, False):
                self._features(circuit, self._plan(circuit, split=True, device=inputs.device))
            return self._graphs((circuit.key, kind), lambda i, w: self._simulate(circuit, i, w, kind, sets, batch),
                                inputs, weights)
        with limited(self.cpu_threads, inputs.device) as mark:
            return mark(self._simulate(circuit, inputs, weights, kind, sets, batch))

    def _simulate(self, circuit, inputs, weights, kind, sets, batch) -> torch.Tensor:
        plan = self._plan(circuit, split=True, device=inputs.device)
        real = DTYPES[self.dtype][1]
        fp = self._features(circuit, plan) if self._feature_form(inputs, weights, kind) else None
        if fp is not None:
            return self._run_features(fp, plan, circuit, inputs, weights, kind, sets, batch)
        x = circuit.data_angles(inputs).to(real)  # (*batch, n_data), computed in the caller's dtype
        x = x.reshape(sets + (math.prod(batch[len(sets):]), x.shape[-1])).mT  # (*S, n_data, M): samples last
        w = weights.to(inputs.dtype).to(real).reshape(sets + (-1,))  # (*S, n_weights)
        executor = self._executor(plan, inputs.device)
        if isinstance(plan, BlockPlan):
            out = executor.run(x, w, sets, kind)
        else:
            out = executor.run(x, w, sets, kind, self._reusable(plan, w))
        out = out.reshape(batch + out.shape[-1:])
        return out if kind == "state" else out.to(inputs.dtype)

    @staticmethod
    def _feature_form(inputs: torch.Tensor, weights: torch.Tensor, kind: str) -> bool:
        """Whether a narrow circuit's call runs in the feature form: where :data:`FEATURES_ON` says so, and on
        CUDA for a call without a gradient that reads expectations (inference, a decode step), which one kernel
        then computes (:mod:`.fused_features_cuda`: ~15 launches fewer than the torch code)."""
        if FEATURES_ON.get(inputs.device.type, False):
            return True
        return kind == "expval" and features_cuda.kernel_applies(inputs, weights)

    def _features(self, circuit, plan) -> FeaturePlan | None:
        """The feature form of a narrow plan (:mod:`.fused_features`), or None: stage by stage."""
        if not isinstance(plan, Plan) or not self.features:
            return None
        key = (type(circuit), circuit.key, "features")
        if key not in self._plans:
            self._plans[key] = feature_plan(plan, _same_columns(circuit))
        return self._plans[key]

    def _run_features(self, fp, plan, circuit, inputs, weights, kind, sets, batch) -> torch.Tensor:
        real = DTYPES[self.dtype][1]
        # trailing weight-set axes along which the inputs are one tensor expanded (the q, k and v circuits of a
        # head): their sets share one feature map
        shared = 0
        while shared < len(sets) and inputs.stride(len(sets) - 1 - shared) == 0:
            shared += 1
        own = inputs[(slice(None),) * (len(sets) - shared) + (slice(0, 1),) * shared] if shared else inputs
        outer = sets[:len(sets) - shared]
        x = circuit.data_angles(own)  # (*S', 1.., *batch, n_data), computed in the caller's dtype
        x = x.reshape(outer + (math.prod(batch[len(sets):]), x.shape[-1]))  # (*S', M, n_data)
        matrices = self._fixed_matrices(plan, weights, sets)
        held = self.__dict__.get("_held")
        if held is not None and matrices is None and inputs.dtype == weights.dtype and not torch.compiler.is_compiling():
            found = held.get(self._structure(circuit), weights)  # W built ahead (prepare)
            matrices = None if found is None else {"features": found}
        w = None
        if matrices is None or "features" not in matrices:  # W to build: from the weights, in float64
            w = weights.to(inputs.dtype).to(real).reshape(sets + (-1,))  # (*S, n_weights)
            matrices = matrices if matrices is not None else self._reusable(plan, w)
        out = run_features(fp, self._executor(plan, inputs.device), x, w, sets, shared, kind, matrices)
        out = out.reshape(batch + out.shape[-1:])
        return out if kind == "state" else out.to(inputs.dtype)

    @contextlib.contextmanager
    def prepare(self, runs):
        """For the block (one forward pass with gradients, on a device where the feature form runs): the
        feature-form matrices ``W`` of every call in ``runs`` whose circuit shares its structure with another's,
        built in one call per structure (:mod:`.fused_joint`); each call then takes its own from them. Nothing
        is held past the block (an optimizer step changes the weights), nor built without a gradient, under
        ``torch.compile``, or where a call could not use it."""
        outer = self.__dict__.get("_held")
        self._held = self._joint(runs)
        try:
            yield
        finally:
            self._held = outer

    def _joint(self, runs) -> Held | None:
        if not torch.is_grad_enabled() or torch.compiler.is_compiling() or not self.features:
            return None
        calls = []
        for circuit, weights in runs:
            device = weights.device
            if not weights.requires_grad or not FEATURES_ON.get(device.type, False) or self._evolves(circuit):
                continue
            if self._graphs is not None and device.type == "cuda":
                continue  # a recorded call reads its weights itself
            plan = self._plan(circuit, split=True, device=device)
            fp = self._features(circuit, plan)
            if fp is not None and isinstance(plan, Plan):
                sets = tuple(weights.shape[:weights.dim() - len(circuit.weight_shape)])
                calls.append(Call(self._structure(circuit), plan, fp, weights, sets))
        if len(calls) < 2:
            return None
        warmed = self.__dict__.setdefault("_warmed", {})
        held = build(calls, lambda plan, device: self._executor(plan, device), DTYPES[self.dtype][1], warmed)
        return held if len(held) else None

    def _structure(self, circuit) -> tuple:
        """What the feature-form matrix of ``circuit`` depends on besides the weights (:func:`.fused_joint.structure`)."""
        key = (type(circuit), circuit.key, "structure")
        if key not in self._plans:
            self._plans[key] = structure(circuit, circuit.angle_layout(), _same_columns(circuit))
        return self._plans[key]

    def _fixed_matrices(self, plan: Plan, weights: torch.Tensor, sets: tuple[int, ...]) -> dict | None:
        """What a call keeps of its matrices inside :func:`~qelm.backends.cuda_graph.fixed_weights` (the
        weights are promised fixed: a recorded decode step), without a gradient; None elsewhere. Found before
        the weights are cast, so that a step whose matrices are kept does not cast them every token."""
        store = fixed_store()
        if store is None or torch.is_grad_enabled() and weights.requires_grad or torch.compiler.is_compiling():
            return None
        shape = sets + (weights.numel() // max(1, math.prod(sets)),)
        return store.setdefault((id(self), id(plan), shape, DTYPES[self.dtype][1], weights.device), {})

    def _reusable(self, plan: Plan, w: torch.Tensor) -> dict | None:
        """The block matrices of the last call with these weight values, when no gradient is wanted
        (evaluation, generation: the weights do not change between calls, so neither do the unitaries);
        None (build them) when training. Keyed by value, not identity: an optimizer step changes them. None
        too while a CUDA graph records (comparing values reads them on the host; a replay then builds the
        unitaries from the weights it reads, so a changed weight is never served stale), except inside
        :func:`~qelm.backends.cuda_graph.fixed_weights`, whose caller promises the weights stay fixed."""
        if torch.is_grad_enabled() and w.requires_grad or torch.compiler.is_compiling():
            return None
        fixed = self._fixed_matrices(plan, w, tuple(w.shape[:-1]))
        if fixed is not None:  # the weights are promised fixed (a recorded decode step): no value check
            return fixed
        key = (id(plan), tuple(w.shape), w.dtype, w.device)
        if capturing(w.device):
            return None
        held = self._reuse.get(key)
        if held is None or not torch.equal(held[0], w):
            held = (w.detach().clone(), {})
            self._reuse[key] = held
        return held[1]

    def _angles(self, circuit, angles: torch.Tensor, kind: str) -> torch.Tensor:
        check_angles(circuit, angles)
        if self._evolves(circuit):
            return self._from_zero(circuit, angles, kind)
        self._check_memory(circuit, angles.shape[0], 1, angles.device, split=False)
        plan = self._plan(circuit, split=False, device=angles.device)  # every angle per sample
        x = angles.to(DTYPES[self.dtype][1]).mT  # (n_angles, N)
        with limited(self.cpu_threads, angles.device) as mark:
            return mark(self._executor(plan, angles.device).run(x, None, (), kind))

    def expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        return self._angles(circuit, angles, "expval").to(angles.dtype)

    def state(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        return self._angles(circuit, angles, "state")


def _unsupported(circuit, error: UnsupportedGate) -> BackendError:
    """qelm.fused refusing ``circuit``: a gate outside its vocabulary (``error`` is the gate's name) or a
    contract the gate list cannot follow (``error`` says what)."""
    reason = str(error)
    if " " not in reason:
        reason = f"it uses gate {reason}, which this simulator has no kernel for"
    return refusal("qelm.fused", circuit, reason)


def _same_columns(circuit) -> list[int]:
    """For each data column of ``circuit``, the first column that equals it for any input (re-uploading
    repeats its inputs), found once per circuit from two random inputs."""
    g = torch.Generator().manual_seed(1)
    rows = [circuit.data_angles(torch.rand(circuit.input_shape, generator=g, dtype=torch.float64)).reshape(-1).tolist()
            for _ in range(2)]
    first: dict[tuple[float, float], int] = {}
    return [first.setdefault(pair, j) for j, pair in enumerate(zip(*rows))]


def _check_layout(circuit, layout) -> None:
    """``circuit.angles`` must be ``data_angles`` and the weights placed as ``angle_layout`` says (checked
    once per circuit with random values: a custom circuit that overrides ``angles`` alone would be run wrong)."""
    g = torch.Generator().manual_seed(0)
    inputs = torch.rand(circuit.input_shape, generator=g, dtype=torch.float64)
    weights = torch.rand(circuit.weight_shape, generator=g, dtype=torch.float64)
    angles = circuit.angles(inputs, weights)
    data, flat = circuit.data_angles(inputs), weights.reshape(-1)
    if len(layout) != circuit.n_angles or angles.shape[-1] != circuit.n_angles:
        raise BackendError(f"circuit {circuit.name!r}: angle_layout() has {len(layout)} columns, n_angles is {circuit.n_angles}")
    built = torch.stack([flat[j] if is_w else data[j] for is_w, j in layout])
    if not torch.allclose(built, angles, atol=1e-12, rtol=0):
        raise BackendError(f"circuit {circuit.name!r}: angles() does not equal data_angles() and the weights placed by "
                         "angle_layout(); override angle_layout (and data_angles) to match, or use backend 'default.qubit'")
