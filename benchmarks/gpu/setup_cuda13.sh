#!/usr/bin/env bash
# Make lightning.gpu and qiskit-aer's GPU build run on a machine that has a CUDA 13 toolkit and driver but no
# CUDA 12 runtime and no package index: how qelm's GPU figures (benchmarks/results/*-h200*) were measured.
#
# A user's machine does not need this: `pip install "qelm-lab[gpu]"` brings the CUDA 12 libraries that the
# index's wheels link (see the README). The verification machine cannot download them, and the CUDA 12 cuBLAS
# alone is 580 MB, so there:
#   * lightning.gpu: the same release (0.45.0) is built from its source against the machine's CUDA 13 toolkit
#     and cuStateVec for CUDA 13 (custatevec-cu13), and its compiled module replaces the wheel's; the wheel
#     keeps providing the Python package and the PennyLane device entry point;
#   * qiskit-aer-gpu (the index's wheel, CUDA 12): its own kernels need libcudart.so.12 (carried: the 3 MB
#     nvidia-cuda-runtime-cu12 wheel). It also links cuSOLVER 11 and cuTensorNet 2, which only its tensor-
#     network method calls; they are replaced by stub libraries whose functions abort with a message, so a
#     call to one cannot pass unnoticed. cuStateVec comes from custatevec-cu13 (qelm does not enable Aer's
#     cuStateVec option) and cuSPARSE from the machine's CUDA 13 libraries.
#
# The wheels installed into SITE (pip install --no-deps --target SITE) for the H200 runs: qelm's dependencies
# with qiskit-aer-gpu==0.18.2 in place of qiskit-aer, pennylane_lightning_gpu==0.45.0, custatevec-cu13==1.15.0,
# nvidia-cuda-runtime-cu12==12.9.79.
# Usage (from the project's root):
#   bash benchmarks/gpu/setup_cuda13.sh SITE LIGHTNING_SRC.tar.gz [BUILT_lightning_gpu_ops.so]
# (LIGHTNING_SRC.tar.gz: `git archive v0.45.0 CMakeLists.txt pyproject.toml cmake pennylane_lightning/core`
# of PennyLaneAI/pennylane-lightning; a module built by an earlier run, given third, skips the build)
# then, in the same shell: source SITE/qelm-gpu-env.sh
set -euo pipefail
site=$(realpath "$1"); src_tar=$(realpath "$2"); built=${3:+$(realpath "$3")}
py=$(command -v python3)
jobs=$(nproc)

# CUDA 13 libraries of this machine: the toolkit's, else the nvidia-* wheels next to torch
cuda_libs=$("$py" - <<'PY'
import glob, os, site
dirs = ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
for sp in site.getsitepackages():
    dirs += glob.glob(os.path.join(sp, "nvidia", "cu13", "lib")) + glob.glob(os.path.join(sp, "nvidia", "*", "lib"))
print(":".join(d for d in dirs if glob.glob(os.path.join(d, "libcublas.so*"))
               or glob.glob(os.path.join(d, "libcusparse.so*")) or glob.glob(os.path.join(d, "libcudart.so*"))))
PY
)
echo "CUDA libraries: $cuda_libs"

# --- lightning.gpu 0.45.0 against CUDA 13 -------------------------------------------------------------
build=${TMPDIR:-/tmp}/lightning-build
if [ -n "$built" ]; then
  mkdir -p "$build/out" && cp "$built" "$build/out/"
else
rm -rf "$build"; mkdir -p "$build/src"
tar xzf "$src_tar" -C "$build/src"
cd "$build/src"
printf 'version = "0.45.0"\n' > pyproject.toml  # the only line CMake reads (the release's is generated)
# no network: nanobind from the machine's Python package (3.1.0 on the H200 image; the release pins 2.11.0)
# instead of a git fetch, and
# the Catalyst plugin (whose headers CMake downloads) left out; neither changes the Python module
"$py" - <<'PY'
import re
p = "CMakeLists.txt"
s = open(p).read()
s = re.sub(r"FetchContent_Declare\(nanobind.*?FetchContent_MakeAvailable\(nanobind\)",
           "find_package(nanobind CONFIG REQUIRED)", s, flags=re.S)
open(p, "w").write(s)
p = "pennylane_lightning/core/simulators/lightning_gpu/CMakeLists.txt"
s = open(p).read()
open(p, "w").write(re.sub(r"\n\s*catalyst\n", "\n", s, count=1))
PY
cmake -S . -B build -G Ninja -DPL_BACKEND=lightning_gpu -DCMAKE_BUILD_TYPE=Release -DENABLE_WARNINGS=OFF \
  -DPY_INSTALL=ON -DPython_EXECUTABLE="$py" -Dnanobind_DIR="$("$py" -m nanobind --cmake_dir)" \
  -DCUQUANTUM_SDK="$site/cuquantum" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$build/out" >"$build/configure.log" 2>&1 \
  || { tail -40 "$build/configure.log"; exit 1; }
cmake --build build -j "$jobs" --target lightning_gpu_ops >"$build/build.log" 2>&1 || { tail -60 "$build/build.log"; exit 1; }
fi
cp "$build"/out/lightning_gpu_ops*.so "$site/pennylane_lightning/"
echo "built $(ls "$build"/out/lightning_gpu_ops*.so)"

# --- qiskit-aer-gpu: stubs for the two CUDA 12 libraries it links but does not call here ----------------
aer=$(ls "$site"/qiskit_aer/backends/controller_wrappers*.so)
stubs=${TMPDIR:-/tmp}/aer-stubs; rm -rf "$stubs"; mkdir -p "$stubs"
cd "$stubs"
make_stub() {  # make_stub SONAME VERSION_NODE SYMBOL_PREFIX
  local soname=$1 node=$2 prefix=$3
  {
    echo '#include <stdio.h>'; echo '#include <stdlib.h>'
    for sym in $(nm -D --undefined-only "$aer" | awk '{print $2}' | sed 's/@.*//' | grep "^$prefix" | sort -u); do
      echo "void $sym(void) { fprintf(stderr, \"stub $soname: $sym called\\n\"); abort(); }"
    done
  } > "$soname.c"
  if [ -n "$node" ]; then echo "$node { global: *; };" > "$soname.map"; else echo "{ global: *; };" > "$soname.map"; fi
  gcc -shared -fPIC -o "$soname" -Wl,-soname,"$soname" -Wl,--version-script="$soname.map" "$soname.c"
}
make_stub libcusolver.so.11 "" cusolver
make_stub libcutensornet.so.2 libcutensornet.so.0 cutensornet
echo "stubs: $(ls "$stubs"/*.so*)"

# cuStateVec (CUDA 13 build) and cuTensorNet stub beside each other, where both modules' RPATHs look
cat > "$site/qelm-gpu-env.sh" <<EOF
export LD_LIBRARY_PATH=$site/cuquantum/lib:$site/nvidia/cuda_runtime/lib:$stubs:$cuda_libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export PYTHONPATH=$site\${PYTHONPATH:+:\$PYTHONPATH}
EOF
echo "environment: $site/qelm-gpu-env.sh"
