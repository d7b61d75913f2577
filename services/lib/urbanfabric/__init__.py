"""urbanfabric: decode the built environment from imagery.

The package is the shared core library. Each pipeline stage is a plain, typed module
(``acquisition``, ``calibration``, ``segmentation``, ``materials``, ``attributes``,
``intensity``) that knows nothing about Kafka or gRPC; the services under ``services/``
are thin gRPC adapters over these modules.
"""

__version__ = "0.1.0"
