"""TorchServe packaging of the project's models (the chart's ``modelServing.runtime: torchserve``).

* :mod:`.handler` — the TorchServe handler packed into every archive; it runs the model's own
  ``load_model`` / ``predict_proba`` (the functions the KServe predictor runs) and speaks the
  project's V2 tensor contract (``input`` → ``probability``).
* :mod:`.package` — ``python -m services.torchserve.package --model footprint-unet --version v1
  --out DIR`` builds ``DIR/model-store/footprint-unet-v1.mar`` with ``torch-model-archiver``
  and ``DIR/config/config.properties`` (the layout KServe's TorchServe runtime reads from
  ``storageUri``).

This package module imports nothing heavy (TorchServe and torch are only needed at package
and serve time).
"""
