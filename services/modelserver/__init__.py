"""KServe model server: the project's torch models over the Open Inference Protocol (V2).

Run ``python -m services.modelserver --http-port 8080 --grpc-port 8081`` (see
:mod:`services.modelserver.__main__`). :mod:`.models` holds the ``kserve.Model`` classes (also
used in-process by ``urbanfabric.runtime.model_client`` in EMBEDDED mode); :mod:`.server` the
loopback-bound ``kserve.ModelServer``.

This package module deliberately imports nothing: importing ``kserve`` parses ``sys.argv``
(kserve.model_server does so at import time), so the entry point parses its own arguments
first.
"""
