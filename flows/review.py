"""The ``review`` flow: a review package of a job's least certain buildings (issue 21), from Prefect.

The same step as ``urbanfabric review JOB --attribute A --n N``
(:func:`urbanfabric.outputs.review_package.review_job`): the job's table and ARD tiles are read
from the object store, and the package is uploaded to ``jobs/<job>/review/<attribute>/``
(the flow runner's local copy is a temporary folder). Served as deployment ``review/review``
by ``flows.serve``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger

Attribute = Literal["roof_material", "roof_shape", "facade_material", "height", "year_built", "footprint"]
Selection = Literal["uncertainty", "random"]


@flow(name="review")
def review(job_id: str, attribute: Attribute = "roof_material", n: int = 200, select: Selection = "uncertainty",
           seed: int = 0) -> dict:
    """Choose ``n`` buildings of job ``job_id``, spread over the area — those whose ``attribute``
    the models are least sure of (``select`` uncertainty), or a seeded random sample (``random``:
    no worse for fine-tuning in the learning curves, and an unbiased check of the model's accuracy
    on the area) — and upload their package (GeoPackage with a QGIS style, CSV, chips)."""
    from urbanfabric.io.model_repository import model_config
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.outputs.review import review_attribute
    from urbanfabric.outputs.review_package import review_job
    from urbanfabric.settings import Settings

    with tempfile.TemporaryDirectory(prefix="urbanfabric-review-") as tmp:
        selection, files, keys = review_job(ObjectStore(Settings.load()), job_id, review_attribute(attribute), n,
                                            Path(tmp), model_config, select, seed)
    get_run_logger().info("%d of %d buildings to review for %s: %d files uploaded", len(selection.buildings),
                          selection.job_buildings, attribute, len(keys))
    return {"job_id": job_id, "attribute": attribute, "select": select, "buildings": len(selection.buildings),
            "keys": keys}
