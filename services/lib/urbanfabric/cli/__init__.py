"""The ``urbanfabric`` command: map an area, export, explain, the demo and the local stack."""
