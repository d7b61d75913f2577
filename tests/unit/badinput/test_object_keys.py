"""Object keys built from ids and URIs that arrive in messages and specs.

An id that is not one safe key segment, or a URI that is not ``s3://bucket/key``, is
``InvalidInput`` naming the field before any key is formed.
"""

from __future__ import annotations

import pytest

from urbanfabric.errors import InvalidInput
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.io.object_store import parse_s3_uri

BAD_IDS = ["", "..", "../x", "a/b", "/a", "a\\b", ".a", "-a", "a b", "a\x00", "ü", "x" * 129, "a\n", "a?b", "a#b",
           "a%2fb"]


@pytest.mark.parametrize("bad", BAD_IDS, ids=[repr(b)[:20] for b in BAD_IDS])
@pytest.mark.parametrize(("where", "field"), [("job", "job.job_id"), ("tile", "tile.tile_id"), ("batch", "batch_id")])
def test_an_unsafe_id_never_becomes_a_key(bad, where, field):
    with pytest.raises(InvalidInput) as err:
        if where == "job":
            JobLayout(bad)
        elif where == "tile":
            JobLayout("j1").tile_footprints(bad)
        else:
            JobLayout("j1").batch_buildings(bad)
    assert err.value.field == field
    assert JobLayout("j1").tile_done("16-1-2").startswith("jobs/j1/")


BAD_URIS = ["", "s3://", "s3:///key", "http://bucket/key", "/local/path", "S3:bucket/key", "bucket/key"]


@pytest.mark.parametrize("uri", BAD_URIS, ids=[repr(u) for u in BAD_URIS])
def test_a_uri_that_is_not_s3_bucket_key_is_refused(uri):
    with pytest.raises(InvalidInput) as err:
        parse_s3_uri(uri)
    assert err.value.field == "uri"
    assert parse_s3_uri("s3://b/k/x.parquet") == ("b", "k/x.parquet")
