"""``urbanfabric review JOB`` against a real SeaweedFS: the job's partitions and ARD tile in, the
package (with chips) out, locally and under ``jobs/<job>/review/<attribute>/``."""

from __future__ import annotations

import io
import os
import sqlite3

import numpy as np
import pytest

from urbanfabric.cli.main import main
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import ObjectStore
from urbanfabric.io.rasters import cog_bytes
from urbanfabric.stack import Stack
from urbanfabric.stack.definition import weed_binary

from tests.unit.outputs.review_table import table
from tests.unit.outputs.test_review import _ard

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="SeaweedFS 'weed' binary not installed")


def test_review_of_a_job_in_the_store(tmp_path, monkeypatch, capsys):
    stack_dir = tmp_path / "stack"
    stack = Stack(stack_dir=stack_dir, out=open(os.devnull, "w"))
    stack.up(only=["objectstore"])
    try:
        monkeypatch.setenv("URBANFABRIC_STACK_FILE", str(stack_dir / "stack.json"))
        monkeypatch.delenv("URBANFABRIC_MODEL_STORE", raising=False)
        monkeypatch.chdir(tmp_path)
        store = ObjectStore(stack.settings())
        store.ensure_bucket()
        t = table()
        layout = JobLayout("job-review-1")
        for i, part in enumerate(np.array_split(np.arange(len(t)), 2)):
            buf = io.BytesIO()
            t.iloc[part].to_parquet(buf)
            store.put_bytes(f"{layout.outputs}/buildings/quadkey=1202022131/part-{i:05d}.parquet", buf.getvalue())
        store.put_bytes(layout.ard(str(t["tile_id"].iloc[0])), cog_bytes(_ard(t)))

        assert main(["review", "job-review-1", "--attribute", "roof_shape", "--n", "8"]) == 0
        assert "8 of 100 buildings to review for roof_shape (8 chips)" in capsys.readouterr().out
        local = tmp_path / "out" / "job-review-1" / "review" / "roof_shape"
        keys = store.list("jobs/job-review-1/review/roof_shape/")
        names = {k.rsplit("/", 1)[1] for k in keys}
        assert names >= {"review.gpkg", "review.qml", "review.parquet", "review.csv", "package.json"}
        assert sum(k.endswith(".png") for k in keys) == 8 == len(list((local / "chips").glob("*.png")))
        gpkg = tmp_path / "from-store.gpkg"
        gpkg.write_bytes(store.get_bytes("jobs/job-review-1/review/roof_shape/review.gpkg"))
        with sqlite3.connect(gpkg) as con:
            assert con.execute("SELECT count(*) FROM layer_styles WHERE useAsDefault").fetchone() == (1,)
        # A job that is not there: one line naming it.
        assert main(["review", "no-such-job", "--attribute", "height"]) == 2
        assert "job: job no-such-job has no buildings table" in capsys.readouterr().err
    finally:
        stack.down()
