"""The interface every simulator backend implements (:class:`Backend`), and the input checks they share.

What layers call, and what each backend provides, is described in :mod:`qelm.backends`.
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..errors import BackendError, QelmError
from .cuda_graph import GraphPool

__all__ = ["Backend", "BackendUnavailable", "MAX_SHOTS", "check_run_shapes", "check_angles"]

#: the most shots per circuit: every simulator and numpy's samplers count them in a C long, and 2**31 already
#: estimates an expectation to 2e-5 (a larger number overflowed in the sampler, after the model had loaded)
MAX_SHOTS = 2**31 - 1


class BackendUnavailable(QelmError, RuntimeError):
    """The chosen backend cannot run here (missing package or hardware); the message says how to fix it.

    A :class:`~qelm.errors.QelmError` (the command line prints it as one line) and a ``RuntimeError``.
    :func:`qelm.available_backends` reports the same messages without raising.

    Examples:
        >>> from qelm import BackendUnavailable, get_backend
        >>> try:
        ...     get_backend("lightning.gpu")
        ... except BackendUnavailable as e:
        ...     print("pip install" in str(e))
        True
    """


class Backend:
    """Interface every engine implements. Options are keyword arguments; unknown ones are an error.

    A layer calls :meth:`run` with a circuit, data inputs and weight sets; a backend implements
    :meth:`expval` (and :meth:`state` where it can return state vectors) on flat angle vectors, and may
    override ``_execute`` to keep inputs and weights apart (``qelm.fused`` does). Build one by name with
    :func:`qelm.get_backend`.

    Args:
        shots: None for exact expectations, or an integer from 1 to ``MAX_SHOTS`` for sampled estimates.
        seed: the seed of the sampler (with shots).

    Raises:
        BackendError: ``shots`` is not None or an integer in range.
    """

    name: str = "backend"
    supports_state: bool = False
    #: pure torch operations that ``torch.compile`` can trace (qelm.fused); other backends are a boundary
    traceable: bool = False
    #: option names this backend accepts (beyond ``shots`` and ``seed``)
    options: tuple[str, ...] = ()

    def __init__(self, shots: int | None = None, seed: int | None = None) -> None:
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= MAX_SHOTS):
            raise BackendError(f"shots={shots!r} is invalid: use None for exact expectations or an integer from 1 to "
                               f"{MAX_SHOTS} (2**31 - 1)")
        self.shots = shots
        self.seed = seed

    def run(self, circuit, inputs: torch.Tensor, weights: torch.Tensor, kind: str = "expval") -> torch.Tensor:
        """Run ``circuit`` for data ``inputs`` ``(*S, *batch, *input_shape)`` and weight sets ``weights``
        ``(*S, *weight_shape)``; ``kind`` "expval" or "state" (see the module docstring). Observers added by
        :meth:`observe` see every call. Under ``torch.compile`` the call is traced when the backend is
        (``traceable``: pure torch) and is a compile boundary otherwise, so the rest of a model compiles.

        Args:
            circuit: the :class:`~qelm.Circuit` to run.
            inputs: data inputs ``(*S, *batch, *circuit.input_shape)``.
            weights: weight sets ``(*S, *circuit.weight_shape)``; each of the ``S`` sets is used for its own
                batch of inputs (heads, or q/k/v circuits, in one execution).
            kind: ``"expval"`` for the Pauli-Z expectations of ``circuit.z_strings``, ``"state"`` for state
                vectors (backends with ``supports_state``).

        Returns:
            ``(*S, *batch, len(circuit.z_strings))`` real expectations, or ``(*S, *batch, 2**n_wires)``
            complex states; differentiable with respect to inputs and weights.

        Raises:
            BackendError: the shapes do not match the circuit, or ``kind`` is unknown.

        Examples:
            >>> import torch
            >>> from qelm import build_circuit, get_backend
            >>> circuit = build_circuit("attention", n_qubits=2, n_layers=1)
            >>> weights = torch.zeros(3, *circuit.weight_shape)  # three weight sets (q, k and v, say)
            >>> inputs = torch.zeros(3, 5, circuit.n_inputs)     # five samples for each
            >>> tuple(get_backend("qelm.fused").run(circuit, inputs, weights).shape)
            (3, 5, 2)
        """
        if torch.compiler.is_compiling() and not self.traceable:
            return _opaque_run(self, circuit, inputs, weights, kind)
        sets, batch = check_run_shapes(circuit, inputs, weights, kind)
        observers = self.__dict__.get("_observers")
        if not observers:
            return self._execute(circuit, inputs, weights, kind, sets, batch)
        for o in observers:
            o.before(circuit, kind)
        out = self._execute(circuit, inputs, weights, kind, sets, batch)
        executions = math.prod(batch)
        for o in reversed(observers):
            o.after(circuit, kind, executions, out)
        return out

    @contextlib.contextmanager
    def observe(self, observer):
        """Within the block, call ``observer.before(circuit, kind)`` before and ``observer.after(circuit,
        kind, executions, output)`` after every :meth:`run` (how ``qelm bench`` times the circuits and
        ``qelm compare`` counts executions and shots, without patching any method)."""
        observers = self.__dict__.setdefault("_observers", [])
        observers.append(observer)
        try:
            yield observer
        finally:
            observers.remove(observer)

    def prepare(self, runs):
        """A context for one forward pass of a model whose layers will call :meth:`run` with the
        ``(circuit, weights)`` pairs ``runs``: a backend may compute ahead what those calls share, and lets it
        go when the block ends (``qelm.fused`` builds the feature-form matrices of all circuits of one
        structure at once). The default computes nothing."""
        return contextlib.nullcontext()

    def _execute(self, circuit, inputs, weights, kind, sets, batch) -> torch.Tensor:
        """The work of :meth:`run`, shapes checked: by default weights broadcast into angle vectors."""
        w = weights.reshape(sets + (1,) * (len(batch) - len(sets)) + tuple(circuit.weight_shape))
        angles = circuit.angles(inputs, w).reshape(-1, circuit.n_angles)  # (N, n_angles): weights broadcast here
        out = self.expval(circuit, angles) if kind == "expval" else self.state(circuit, angles)
        return out.reshape(batch + out.shape[-1:])

    def check_circuit(self, circuit) -> None:
        """Refuse, before any run, a circuit this backend cannot run: one line naming what is wrong and a backend
        that can run it. Layers call it when they are built and when their backend changes. The default accepts
        every circuit (a PennyLane device runs whatever PennyLane can decompose for it); backends that translate
        circuits into gates of their own (``qelm.fused``, ``qiskit.aer``, Lightning's kernels) check them here.

        Args:
            circuit: the :class:`~qelm.Circuit`.

        Raises:
            BackendError: the circuit uses a gate this backend does not run, or computes a gate angle from the
                angle vector (the circuit contract of :mod:`qelm.circuits`), which only PennyLane's own devices
                follow.
        """

    def expval(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        """Pauli-Z expectations of flat angle vectors: the primitive every backend implements.

        Args:
            circuit: the :class:`~qelm.Circuit`.
            angles: ``(N, circuit.n_angles)`` angle vectors (data angles and weights, as
                :meth:`~qelm.Circuit.angles` builds them).

        Returns:
            ``(N, len(circuit.z_strings))`` expectations (exact, or estimated from ``shots`` samples).

        Examples:
            >>> import torch
            >>> from qelm import build_circuit, get_backend
            >>> circuit = build_circuit("angle", n_qubits=2, n_layers=1)
            >>> angles = torch.zeros(4, circuit.n_angles)  # every rotation 0: the state stays |00>
            >>> get_backend("default.qubit").expval(circuit, angles).tolist()[0]
            [1.0, 1.0]
        """
        raise NotImplementedError

    def state(self, circuit, angles: torch.Tensor) -> torch.Tensor:
        """State vectors of flat angle vectors, for backends with ``supports_state`` (exact simulators).

        Args:
            circuit: the :class:`~qelm.Circuit` (usually one whose ``returns`` is ``"state"``).
            angles: ``(N, circuit.n_angles)`` angle vectors.

        Returns:
            ``(N, 2**circuit.n_wires)`` complex amplitudes; wire 0 is the most significant bit.

        Raises:
            NotImplementedError: the backend returns no states (use ``fidelity_method="swap_test"`` with it).

        Examples:
            >>> import torch
            >>> from qelm import build_circuit, get_backend
            >>> circuit = build_circuit("fidelity", n_qubits=2, n_layers=1)
            >>> state = get_backend("qelm.fused").state(circuit, torch.zeros(1, circuit.n_angles))
            >>> tuple(state.shape), round(state.abs().square().sum().item(), 6)
            ((1, 4), 1.0)
        """
        raise NotImplementedError(
            f"backend {self.name!r} does not return state vectors; use fidelity_method='swap_test' with it"
        )

    def evolve(self, circuit, angles: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """``U(angles_n) states_n`` for every n: ``angles`` ``(N, n_angles)`` (every column, weights included),
        ``states`` ``(N, 2**n_wires)`` complex, not necessarily normalised (the map is linear). Differentiable
        with respect to both. For layers that combine circuits on states of their own (Quixer's linear
        combination of unitaries); exact simulators only."""
        raise NotImplementedError(f"backend {self.name!r} cannot apply a circuit to given states: use backend "
                                  "'qelm.fused' or 'default.qubit'")

    def evolve_pairs(self, circuit, angles: torch.Tensor, re: torch.Tensor, im: torch.Tensor):
        """:meth:`evolve` on states given as real and imaginary parts ``(N, 2**n_wires)`` each; returns the
        pair. Backends that work in real arithmetic (qelm.fused) override it to skip the complex round trip."""
        out = self.evolve(circuit, angles, torch.complex(re, im))
        return out.real.to(re.dtype), out.imag.to(re.dtype)

    #: attributes that are caches (compiled circuits, device tensors, recorded graphs): not pickled, so
    #: ``torch.save(model)`` and ``copy.deepcopy(model)`` work; they are rebuilt on first use
    _transient: tuple[str, ...] = ("_observers",)

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in self._transient:
            if name in state:
                value = state[name]
                state[name] = type(value)() if isinstance(value, (dict, list, set)) else None
        if state.get("_graphs") is not None:  # recorded CUDA graphs stay behind: a fresh pool, same setting
            state["_graphs"] = GraphPool()
        return state

    def describe(self) -> str:
        """The backend in words, as reports print it: its name and exact or its shots."""
        shots = "exact" if self.shots is None else f"{self.shots} shots"
        return f"{self.name} ({shots})"

    def __repr__(self) -> str:
        return f"<qelm backend {self.describe()}>"


def _opaque_run(backend: Backend, circuit, inputs, weights, kind):
    """A backend call the compiler does not trace (PennyLane, Lightning, qiskit-aer). Called only while
    compiling, so ``torch.compiler.disable`` is applied here: at import it would load ``torch._dynamo`` (over
    a second) into every process, compiled or not."""
    return torch.compiler.disable(Backend.run)(backend, circuit, inputs, weights, kind)


def check_angles(circuit, angles: torch.Tensor) -> None:
    """The angle-vector interface's one input check: ``angles`` must be ``(N, circuit.n_angles)``."""
    if angles.dim() != 2 or angles.shape[-1] != circuit.n_angles:
        raise BackendError(f"angles must be (N, {circuit.n_angles}) for circuit {circuit.name!r}, got {tuple(angles.shape)}")


def check_run_shapes(circuit, inputs: torch.Tensor, weights: torch.Tensor, kind: str):
    """Validate a :meth:`Backend.run` call; returns ``(S, batch)``: the weight-set dims and all leading
    dims of ``inputs`` (``S`` first). The one input check every backend shares."""
    if kind not in ("expval", "state"):
        raise BackendError(f"kind={kind!r} is invalid: use 'expval' or 'state'")
    wshape, ishape = tuple(circuit.weight_shape), tuple(circuit.input_shape)
    if weights.dim() < len(wshape) or tuple(weights.shape[weights.dim() - len(wshape):]) != wshape:
        raise BackendError(f"weights of circuit {circuit.name!r} must end in {wshape}, got {tuple(weights.shape)}")
    if inputs.dim() < len(ishape) or tuple(inputs.shape[inputs.dim() - len(ishape):]) != ishape:
        raise BackendError(f"inputs of circuit {circuit.name!r} must end in {ishape} (one instance's data), "
                         f"got {tuple(inputs.shape)}")
    sets = tuple(weights.shape[: weights.dim() - len(wshape)])
    batch = tuple(inputs.shape[: inputs.dim() - len(ishape)])
    if batch[: len(sets)] != sets:
        raise BackendError(f"inputs {tuple(inputs.shape)} must start with the weight-set dims {sets} of weights "
                         f"{tuple(weights.shape)}: lay the samples out as (*sets, *batch, *input_shape)")
    return sets, batch
