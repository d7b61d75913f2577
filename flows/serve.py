"""Serve the flows as Prefect deployments: they show in the Prefect UI and run from there.

* ``map-area`` — map the buildings of an area (the main job); always served.
* ``review`` — a package of a job's least certain buildings to label (issue 21); always served.
* ``fine-tune`` — fine-tune a job's model on its corrections, register and serve it when better
  (issue 21); served with ``--training`` only, like ``train-classifiers`` (it needs torch and
  the training code).
* ``train-classifiers`` — train the roof/façade classifiers with the same code as
  ``python -m models.classifiers.train``; served with ``--training`` only, where torch and the
  sample data are at hand (the local stack). The cluster's flows image carries neither, and
  the chart starts ``flows.serve`` without the flag.
"""

from __future__ import annotations

import argparse

from prefect import serve

from urbanfabric.runtime import logs

from flows.map_area import map_area
from flows.review import review

DEPLOYMENT = "map-area"
TRAIN_DEPLOYMENT = "train-classifiers"
REVIEW_DEPLOYMENT = "review"
FINE_TUNE_DEPLOYMENT = "fine-tune"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--training", action="store_true",
                   help="also serve the train-classifiers and fine-tune deployments")
    args = p.parse_args(argv)
    logs.configure("flow-runner")
    deployments = [map_area.to_deployment(
        name=DEPLOYMENT,
        description="Map the buildings of an area: footprints, roof material, height, material stock.",
        tags=["urbanfabric"],
    ), review.to_deployment(
        name=REVIEW_DEPLOYMENT,
        description="Package the buildings the models are least sure of, spread over the area, for labelling.",
        tags=["urbanfabric"],
    )]
    if args.training:
        from flows.train_classifiers import train_classifiers

        deployments.append(train_classifiers.to_deployment(
            name=TRAIN_DEPLOYMENT,
            description="Train, calibrate and score the roof-material, roof-shape and façade classifiers.",
            tags=["urbanfabric", "training"],
        ))
        from flows.fine_tune import fine_tune

        deployments.append(fine_tune.to_deployment(
            name=FINE_TUNE_DEPLOYMENT,
            description="Fine-tune a job's model on its corrections; register and serve it only if it is better "
                        "on held-out cells.",
            tags=["urbanfabric", "training"],
        ))
    serve(*deployments, limit=2)


if __name__ == "__main__":
    main()
