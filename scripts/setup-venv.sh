#!/usr/bin/env bash
# Prepares the Python side of qcc's tests:
#   .venv/                        numpy, onnx, onnxruntime pinned by scripts/requirements.txt
#   third_party/onnx-backend-data/{node,light,pytorch-converted,pytorch-operator}
#                                 the ONNX backend test data, taken from an onnx wheel
# Idempotent: stamp files record what is done, so a second run only checks them.
# Needs only python3.11 with venv/pip (override with PYTHON=...); no unzip, no network
# beyond the Python package registry.
set -euo pipefail

# Work from the repo root whatever the caller's cwd.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3.11}
REQ=scripts/requirements.txt
VENV=.venv
VPY=$VENV/bin/python
# Test data comes from this onnx release's wheel (independent of the onnx in the venv).
DATA_ONNX_VERSION=1.15.0
DATA=third_party/onnx-backend-data
CACHE=third_party/.cache
DATA_DIRS=(node light pytorch-converted pytorch-operator)

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# --- venv -------------------------------------------------------------------
# Recreate it if missing or broken (e.g. the interpreter it points at is gone).
if ! "$VPY" -c '' 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when requirements.txt changed: its hash is the stamp.
req_hash=$(sha256sum "$REQ" | cut -d' ' -f1)
req_stamp=$VENV/.qcc-requirements.sha256
if [[ "$(cat "$req_stamp" 2>/dev/null || true)" != "$req_hash" ]]; then
    # Wheels only: a source build would need compilers and take minutes.
    "$VPY" -m pip install -q --only-binary=:all: -r "$REQ"
    echo "$req_hash" >"$req_stamp"
fi

# --- ONNX backend test data -------------------------------------------------
data_stamp=$DATA/.stamp
want_stamp="onnx==$DATA_ONNX_VERSION ${DATA_DIRS[*]}"
if [[ "$(cat "$data_stamp" 2>/dev/null || true)" != "$want_stamp" ]]; then
    mkdir -p "$CACHE"
    # The data files are the same in every platform's wheel; fixing the target
    # tags makes the download identical on any host (also non-x86 dev machines).
    "$VPY" -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux2014_x86_64 -d "$CACHE" "onnx==$DATA_ONNX_VERSION"
    # Extract with Python's zipfile (unzip may be missing) into a temp dir, then
    # swap it in, so an interrupted run never leaves a half-filled data dir.
    "$VPY" - "$CACHE" "$DATA_ONNX_VERSION" "$DATA.tmp" "${DATA_DIRS[@]}" <<'PY'
import glob, os, shutil, sys, zipfile
cache, version, dest, *dirs = sys.argv[1:]
wheels = glob.glob(os.path.join(cache, f"onnx-{version}-*.whl"))
if not wheels:
    sys.exit(f"setup-venv: no onnx {version} wheel in {cache}")
prefix = "onnx/backend/test/data/"
wanted = tuple(prefix + d + "/" for d in dirs)
shutil.rmtree(dest, ignore_errors=True)
with zipfile.ZipFile(wheels[0]) as z:
    for info in z.infolist():
        if info.filename.startswith(wanted) and not info.is_dir():
            out = os.path.join(dest, info.filename[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
    rm -rf "$DATA"
    mv "$DATA.tmp" "$DATA"
    echo "$want_stamp" >"$data_stamp"
fi

# --- summary ----------------------------------------------------------------
versions=$("$VPY" -c 'from importlib.metadata import version as v
print(" ".join(f"{p}=={v(p)}" for p in ("numpy", "onnx", "onnxruntime")))')
counts=""
for d in "${DATA_DIRS[@]}"; do
    if [[ $d == light ]]; then n=$(find "$DATA/$d" -maxdepth 1 -name '*.onnx' | wc -l)
    else n=$(find "$DATA/$d" -mindepth 1 -maxdepth 1 -type d | wc -l); fi
    counts+=" $d=$n"
done
echo "setup-venv: $VENV ready ($versions)"
echo "setup-venv: $DATA from onnx==$DATA_ONNX_VERSION:$counts"
