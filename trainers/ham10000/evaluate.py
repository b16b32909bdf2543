"""What is measured on the validation split after each architecture.

Temperature scaling (Guo et al., 2017): one scalar T > 0 divides the logits, fitted by
minimising the validation NLL; argmax is unchanged, so accuracy is too. The metrics come from
torchmetrics (the field's definitions, not re-implementations): ECE with 15 equal-width bins
(L1), accuracy, balanced accuracy (macro recall), macro-F1, one-vs-rest ROC AUC per class and
macro, sensitivity at 95% specificity per class, the confusion matrix. Grad-CAM maps come from
the ``grad-cam`` package.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trainers.common import distributed
from trainers.ham10000.data import CLASSES
from trainers.ham10000.model import cam_target

ECE_BINS = 15
MIN_SPECIFICITY = 0.95


def _tm():
    """torchmetrics' functional classification metrics, imported on first use (importing
    torchmetrics takes seconds, which a run that fails on its data should not wait for)."""
    from torchmetrics.functional import classification

    return classification


@torch.no_grad()
def collect_logits(model, loader, device, autocast, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits and labels of every one of the ``n`` validation images, in dataset order
    (eval mode). Under torchrun the loader holds this rank's share (``eval_batches``): each rank
    evaluates it with rank 0's batch-norm statistics and every rank gets all ``n`` rows."""
    distributed.sync_buffers(model)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        with autocast():
            out = model(x.to(device, non_blocking=True))
        logits.append(out.float())
        labels.append(y.to(out.device))
    model.train(was_training)
    logits, labels = torch.cat(logits), torch.cat(labels)
    return distributed.gather_in_order(logits, n).cpu(), distributed.gather_in_order(labels, n).cpu()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> float:
    """The T minimising NLL(softmax(logits / T)), by L-BFGS on log T in float64 (T > 0, a
    smooth 1-D problem). If the optimum were worse than T = 1 (it cannot be, short of a failed
    fit), T = 1 is kept: scaling never raises the validation NLL."""
    z, y = logits.double(), labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or nll(logits, labels, t) > nll(logits, labels, 1.0):
        return 1.0
    return t


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels.long()))


def probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return torch.softmax(logits.double() / temperature, dim=1).float()


def ece(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """torchmetrics' multiclass calibration error: 15 equal-width bins, L1 norm."""
    M = _tm()
    return float(M.multiclass_calibration_error(probs, labels, num_classes=len(CLASSES),
                                                n_bins=ECE_BINS, norm="l1"))


def _per_class(values: torch.Tensor, present: Sequence[bool]) -> dict[str, float | None]:
    """``{class: value}``, None for a class without validation images (its AUC is undefined)."""
    return {c: (float(v) if ok and math.isfinite(float(v)) else None)
            for c, v, ok in zip(CLASSES, values.tolist(), present)}


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Every metric of the comparison from validation probabilities (torchmetrics)."""
    M = _tm()
    k = len(CLASSES)
    present = [bool((labels == c).any()) and bool((labels != c).any()) for c in range(k)]
    auroc = M.multiclass_auroc(probs, labels, num_classes=k, average=None)
    sens, _thr = M.multiclass_sensitivity_at_specificity(probs, labels, num_classes=k,
                                                         min_specificity=MIN_SPECIFICITY)
    aucs = _per_class(auroc, present)
    defined = [v for v in aucs.values() if v is not None]
    return {
        "accuracy": float(M.multiclass_accuracy(probs, labels, num_classes=k, average="micro")),
        "balanced_accuracy": float(M.multiclass_recall(probs, labels, num_classes=k,
                                                       average="macro")),
        "macro_f1": float(M.multiclass_f1_score(probs, labels, num_classes=k, average="macro")),
        "roc_auc": aucs,
        # Macro over the classes the split holds (torchmetrics' own macro counts an absent
        # class as 0).
        "roc_auc_macro": sum(defined) / len(defined) if defined else None,
        "sensitivity_at_95_specificity": _per_class(sens, present),  # CLASSES: mel first
        "confusion_matrix": M.multiclass_confusion_matrix(probs, labels, num_classes=k).tolist(),
    }


def analyse(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Calibration before and after temperature scaling, and the metrics (on the calibrated
    probabilities; every one of them but ECE and NLL is the same before and after)."""
    t = fit_temperature(logits, labels)
    before, after = probabilities(logits), probabilities(logits, t)
    out = {"temperature": t,
           "nll_before": nll(logits, labels), "nll_after": nll(logits, labels, t),
           "ece_before": ece(before, labels), "ece_after": ece(after, labels),
           "accuracy_before": float((before.argmax(1) == labels).float().mean())}
    return out | classification_metrics(after, labels)


def roc_curves(probs: torch.Tensor, labels: torch.Tensor) -> list[tuple[list, list]]:
    """One-vs-rest ``(fpr, tpr)`` per class (torchmetrics' MulticlassROC)."""
    M = _tm()
    fpr, tpr, _ = M.multiclass_roc(probs, labels, num_classes=len(CLASSES))
    return [(f.tolist(), t.tolist()) for f, t in zip(fpr, tpr)]


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, list[float]]:
    """Per-bin accuracy, confidence and share of the 15 equal-width bins that ECE sums over
    (torchmetrics' own binning, so the diagram and the number agree; torchmetrics counts a
    confidence of exactly 1 in a 16th bin of its own, shown here within the last one)."""
    from torchmetrics.functional.classification.calibration_error import _binning_bucketize

    conf, pred = probs.double().max(1)
    boundaries = torch.linspace(0, 1, ECE_BINS + 1, dtype=conf.dtype)
    acc, cnf, prop = _binning_bucketize(conf, (pred == labels).to(conf.dtype), boundaries)
    if len(prop) > ECE_BINS:
        tail = slice(ECE_BINS - 1, None)
        share = prop[tail].sum()
        if share > 0:
            acc[ECE_BINS - 1] = (acc[tail] * prop[tail]).sum() / share
            cnf[ECE_BINS - 1] = (cnf[tail] * prop[tail]).sum() / share
        prop[ECE_BINS - 1] = share
        acc, cnf, prop = acc[:ECE_BINS], cnf[:ECE_BINS], prop[:ECE_BINS]
    return {"accuracy": acc.tolist(), "confidence": cnf.tolist(), "proportion": prop.tolist()}


def gradcam_maps(model, arch: str, images: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of each image for its predicted class, as ``uint8`` maps ``(N, H, W)``."""
    from pytorch_grad_cam import GradCAM

    layers, reshape = cam_target(model, arch)
    was_training = model.training
    model.eval()
    try:
        with GradCAM(model=model, target_layers=layers, reshape_transform=reshape) as cam:
            maps = cam(input_tensor=images, targets=None)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return torch.from_numpy(np.clip(np.nan_to_num(maps) * 255, 0, 255).round().astype(np.uint8))
