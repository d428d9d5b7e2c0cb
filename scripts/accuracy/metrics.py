"""fp32-vs-int8 agreement metrics of the accuracy suite, one definition for the ORT
baseline (ort_baseline.py) and qcc's per-sample fallback (qcc_outputs.py).

Definitions (the same as `qcc compare --json` reports, as fractions 0..1):
  top1_agreement  fraction of samples whose int8 arg-max class equals the fp32 one
  top5_agreement  fraction whose fp32 arg-max is among the int8 top 5 (None below 5 classes)
  cosine          mean over samples of the cosine of the fp32 and int8 output vectors
  mean_abs_error  mean |int8 - fp32| over all output elements
"""

from __future__ import annotations

import numpy as np


def _rows(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)


def agreement(ref: np.ndarray, test: np.ndarray, labels: np.ndarray | None = None) -> dict:
    if ref.shape != test.shape:
        raise ValueError(f"output shapes differ: fp32 {ref.shape}, int8 {test.shape}")
    r, t = _rows(ref), _rows(test)
    classes = r.shape[1]
    ref_top1 = r.argmax(axis=1)
    out = {
        "samples": int(r.shape[0]),
        "classes": int(classes),
        "top1_agreement": float((ref_top1 == t.argmax(axis=1)).mean()),
        "top5_agreement": None,
    }
    if classes >= 5:
        top5 = np.argsort(-t, axis=1)[:, :5]
        out["top5_agreement"] = float((top5 == ref_top1[:, None]).any(axis=1).mean())
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(t, axis=1)
    cos = np.where(norms > 0, (r * t).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    out["cosine"] = float(cos.mean())
    out["min_cosine"] = float(cos.min())
    out["mean_abs_error"] = float(np.abs(r - t).mean())
    if labels is not None:
        out["label_accuracy_fp32"] = float((ref_top1 == labels).mean())
        out["label_accuracy_int8"] = float((t.argmax(axis=1) == labels).mean())
    return out
