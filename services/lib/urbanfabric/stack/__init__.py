"""The local stack: ``urbanfabric stack up | status | down``.

Starts the project's own processes (object store, Kafka broker, Prefect server, model
server, services, workers, flow runner) on 127.0.0.1 with free ports, checks their health,
records endpoints and pids in ``.stack/stack.json`` and stops them again. The component
list is data (:data:`COMPONENTS`); :class:`Stack` runs it; :func:`main` is the CLI.
"""

from urbanfabric.stack.component import Component, NotReady, ProcInfo, StackContext
from urbanfabric.stack.definition import COMPONENTS, TOPICS
from urbanfabric.stack.runner import ComponentStatus, Stack, StackError

__all__ = [
    "COMPONENTS",
    "TOPICS",
    "Component",
    "ComponentStatus",
    "NotReady",
    "ProcInfo",
    "Stack",
    "StackContext",
    "StackError",
]
