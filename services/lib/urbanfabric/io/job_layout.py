"""Object-store layout of a job (see docs/architecture.md, "Object-store layout").

Keys are deterministic, so a re-delivered task overwrites the same objects instead of adding
new ones, and a commit marker written last tells complete outputs from partial ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from urbanfabric.errors import InvalidInput

#: What a job, tile or batch id may look like: one path segment, never ``..`` or a slash, so a
#: message cannot make a worker write outside its job's folder.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def checked_id(value: str, field: str) -> str:
    """``value`` if it is a safe key segment (:data:`ID_PATTERN`), else :class:`InvalidInput`."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidInput(field, f"{value!r} is not an id (letters, digits, '.', '_', '-'; at most 128)")
    return value


@dataclass(frozen=True)
class JobLayout:
    """Keys (within the bucket) of everything a job writes.

    Raises:
        InvalidInput: the job id, or a tile or batch id given to a method, is not a safe key
            segment (field ``job.job_id``, ``tile.tile_id``, ``batch_id``).
    """

    job_id: str

    def __post_init__(self) -> None:
        checked_id(self.job_id, "job.job_id")

    @property
    def root(self) -> str:
        return f"jobs/{self.job_id}"

    @property
    def job_json(self) -> str:
        return f"{self.root}/job.json"

    def input(self, name: str) -> str:
        """A user input the flow runner uploaded for the services (e.g. a land-cover raster)."""
        return f"{self.root}/inputs/{name}"

    def raw(self, tile_id: str) -> str:
        checked_id(tile_id, "tile.tile_id")
        return f"{self.root}/tiles/{tile_id}/raw.tif"

    def ard(self, tile_id: str) -> str:
        checked_id(tile_id, "tile.tile_id")
        return f"{self.root}/tiles/{tile_id}/ard.tif"

    def mask(self, tile_id: str) -> str:
        checked_id(tile_id, "tile.tile_id")
        return f"{self.root}/tiles/{tile_id}/mask.tif"

    def tile_footprints(self, tile_id: str) -> str:
        checked_id(tile_id, "tile.tile_id")
        return f"{self.root}/footprints/tile={tile_id}/part-0.parquet"

    def tile_owned(self, tile_id: str) -> str:
        """The buildings a tile owns once its seams are resolved (per-tile seams)."""
        checked_id(tile_id, "tile.tile_id")
        return f"{self.root}/footprints/owned/tile={tile_id}/part-0.parquet"

    def tile_done(self, tile_id: str) -> str:
        checked_id(tile_id, "tile.tile_id")
        return f"{self.root}/tiles/{tile_id}/_SUCCESS"

    def input_partition(self, cell: str, chunk: int) -> str:
        """One chunk's share of a user footprint file in one spatial cell (streamed staging)."""
        checked_id(cell, "cell")
        return f"{self.root}/inputs/footprints/cell={cell}/chunk-{chunk:06d}.parquet"

    def input_partitions_prefix(self, cell: str) -> str:
        checked_id(cell, "cell")
        return f"{self.root}/inputs/footprints/cell={cell}/"

    @property
    def input_partitions_done(self) -> str:
        """Written last by the staging of a user footprint file: its cells and counts (JSON)."""
        return f"{self.root}/inputs/footprints/_SUCCESS"

    def batch_footprints(self, batch_id: str) -> str:
        checked_id(batch_id, "batch_id")
        return f"{self.root}/batches/batch={batch_id}/footprints.parquet"

    def batch_context(self, batch_id: str) -> str:
        """The job's footprints around a batch (neighbours for its features, no rows)."""
        checked_id(batch_id, "batch_id")
        return f"{self.root}/batches/batch={batch_id}/context.parquet"

    def batch_buildings(self, batch_id: str) -> str:
        checked_id(batch_id, "batch_id")
        return f"{self.root}/buildings/batch={batch_id}/part-0.parquet"

    def batch_done(self, batch_id: str) -> str:
        checked_id(batch_id, "batch_id")
        return f"{self.root}/buildings/batch={batch_id}/_SUCCESS"

    @property
    def outputs(self) -> str:
        return f"{self.root}/outputs"

    @property
    def buildings(self) -> str:
        return f"{self.outputs}/buildings.parquet"

    @property
    def report(self) -> str:
        return f"{self.outputs}/report.md"

    @property
    def map_png(self) -> str:
        return f"{self.outputs}/map.png"

    @property
    def success(self) -> str:
        """Written last: the outputs are complete."""
        return f"{self.outputs}/_SUCCESS"
