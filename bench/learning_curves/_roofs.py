"""What the two roof experiments share: the served parent, its chips, and the review's columns.

Not an attribute module (the runner imports ``bench.learning_curves.<attribute>``; this one's
name starts with an underscore so it is never taken for one).
"""

from __future__ import annotations

from types import ModuleType
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.learning_curves import core
from urbanfabric.outputs.learning import LabelledRows


def served_parent(attribute: str) -> tuple[str, ModuleType, Any]:
    """The job spec's default version of ``roof_shape`` / ``roof_material`` (``name:version``),
    its fine-tune code (``FINE_TUNE_MODULES``) and the version loaded from the repository tree
    as the model server loads it (config, temperature, ``tta`` and out-of-domain statistics)."""
    from urbanfabric.io.model_repository import fine_tune_module, model_dir, split_model_ref
    from urbanfabric.job_spec import ModelVersions

    ref = str(getattr(ModelVersions(), attribute))
    name, version = split_model_ref(ref)
    code = fine_tune_module(name)
    return ref, code, code.load(model_dir(name, version))


def task_images(task: str, parent: Any) -> Any:
    """The training task's images with the split the parent was trained on (its own training
    config: seed, chip size, chip mode), so "not trained on" can be read off ``split``."""
    from models.classifiers.tta import train_config
    from models.classifiers.train import prepared_task

    ds, _ = prepared_task(task, train_config(parent.config))
    return ds


def chips(images: np.ndarray, size: int) -> np.ndarray:
    """Whole padded images resized to the model's chip size: what inference sees."""
    import torch

    from models.classifiers.train import eval_view

    return eval_view(torch.from_numpy(np.asarray(images, dtype=np.float32)), size).numpy()


def review_table(attribute: str):  # noqa: ANN201 - a callable for core.Experiment
    """``review_table(model, rows)`` for a roof attribute: the top class's calibrated
    probability, every class's probability and the out-of-domain score, as the model server
    answers them (:func:`models.classifiers.serving.predict_proba_ood`: one pass over the
    version's ``tta`` views, the score from the version's own feature statistics)."""

    def table(model: Any, rows: LabelledRows) -> pd.DataFrame:
        from models.classifiers.serving import predict_proba_ood

        proba, ood = predict_proba_ood(model, rows.inputs)
        classes = list(model.config["classes"])
        out = pd.DataFrame({f"p_{attribute}_{c}": proba[:, j] for j, c in enumerate(classes)})
        out[attribute] = [classes[j] for j in proba.argmax(1)]
        out[f"{attribute}_probability"] = proba.max(1)
        out[f"{attribute}_ood_score"] = ood
        return out

    return table



def budgets(ks: Sequence[int], pool: int) -> tuple[int, ...]:
    """The label budgets the pool can serve: a user holds ``POOL_SHARE`` of it, so budgets
    above that stop the curve — except one within 5 % of it, which core clamps to all held."""
    held = int(round(core.POOL_SHARE * pool))
    return tuple(k for k in ks if k <= held or k <= held / 0.95)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Labels per class (for the set-up the docs quote)."""
    values, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}
