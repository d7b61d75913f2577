"""The ``fine-tune`` flow: a job's model fine-tuned on its corrections, registered and served when
better (issue 21, item 3), from Prefect.

The same step as ``urbanfabric learn JOB --attribute A --corrections FILE``
(:func:`urbanfabric.runtime.learning.learn_and_serve`): the corrections (``corrections.parquet``
from ``urbanfabric corrections check``, or a filled review package, in the object store or on
the flow runner's disk) are split into whole cells, the served parent fine-tuned on one part and
compared with it on the other; a better version is registered in the model store with its card
and loaded by the model server, a worse one is reported and registered nowhere. Served as
deployment ``fine-tune/fine-tune`` by ``flows.serve --training`` (torch and the training code).
"""

from __future__ import annotations

import json
from typing import Literal

from prefect import flow, get_run_logger

#: The log line that carries the result as JSON (read by ``bench.learning_loop``).
RESULT_LINE = "fine-tune result: "

Attribute = Literal["roof_material", "roof_shape", "height", "year_built"]


@flow(name="fine-tune")
def fine_tune(job_id: str, corrections: str, attribute: Attribute = "roof_material", seed: int = 0) -> dict:
    """Fine-tune ``attribute``'s model of job ``job_id`` on ``corrections`` (``s3://…`` or a path);
    register and serve the new version only if it beats the served one on held-out cells."""
    from urbanfabric.runtime.learning import learn_and_serve
    from urbanfabric.settings import Settings

    command = f"fine-tune flow: job_id={job_id} attribute={attribute} corrections={corrections} seed={seed}"
    result, served = learn_and_serve(Settings.load(), job_id, attribute, corrections, seed=seed, command=command)
    log = get_run_logger()
    log.info("%s", result.summary())
    if served:
        log.info("%s", served)
    out = result.as_dict()
    # One machine-readable line (the deployment's results are not persisted): the verdict, the
    # version and the step's own timings, for whoever reads the run's logs through the API.
    log.info("%s%s", RESULT_LINE, json.dumps({k: v for k, v in out.items() if k != "keys"}, default=str))
    return out
