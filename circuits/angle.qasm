OPENQASM 2.0;
include "qelib1.inc";
// qelm circuit 'angle': n_qubits=2, n_layers=2
// PennyLane wire i is q[i]; PennyLane's wire 0 is the most significant bit, so in qiskit use
// QuantumCircuit.reverse_bits() to compare amplitudes with PennyLane
// symbolic: the angle vector entry theta[i] is set to i radians (OpenQASM 2 has no free parameters)
qreg q[2];
creg c[2];
ry(0.0) q[0];
ry(1.0) q[1];
rz(2.0) q[0];
ry(3.0) q[0];
rz(4.0) q[0];
rz(5.0) q[1];
ry(6.0) q[1];
rz(7.0) q[1];
cx q[0],q[1];
cx q[1],q[0];
rz(8.0) q[0];
ry(9.0) q[0];
rz(10.0) q[0];
rz(11.0) q[1];
ry(12.0) q[1];
rz(13.0) q[1];
cx q[0],q[1];
cx q[1],q[0];
measure q[0] -> c[0];
measure q[1] -> c[1];
