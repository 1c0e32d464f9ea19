"""The distillation loss, kept apart so it can be checked against a hand computation."""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    import torch

IGNORE_INDEX = -100


class LossParts(NamedTuple):
    total: "torch.Tensor"
    ce: "torch.Tensor" | None   # None without labels
    kd: "torch.Tensor"


def distillation_loss(
    student_logits: "torch.Tensor",
    teacher_logits: "torch.Tensor",
    labels: "torch.Tensor" | None,
    *,
    alpha: float,
    temperature: float,
) -> LossParts:
    """L = α·CE(s, y) + (1−α)·T²·KL(softmax(t/T) ‖ softmax(s/T)); pure T²·KL when labels is None.

    Logits may carry extra dims (e.g. tokens): the class dim is the last one and
    every position counts as one sample; labels equal to -100 are ignored by CE.
    The T² factor keeps the soft-target gradients on the same scale as CE (Hinton et al.).
    """
    import torch.nn.functional as F

    c = student_logits.shape[-1]
    s = student_logits.reshape(-1, c).float()
    t = teacher_logits.reshape(-1, c).float()
    T = float(temperature)
    kd = F.kl_div(F.log_softmax(s / T, dim=-1), F.log_softmax(t / T, dim=-1),
                  reduction="batchmean", log_target=True) * (T * T)
    if labels is None:
        return LossParts(kd, None, kd)
    ce = F.cross_entropy(s, labels.reshape(-1).long(), ignore_index=IGNORE_INDEX)
    total = float(alpha) * ce + (1.0 - float(alpha)) * kd
    return LossParts(total, ce, kd)
