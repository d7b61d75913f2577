"""The imagery source policy refuses what a hostile job could make a service read."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from urbanfabric.errors import InvalidInput
from urbanfabric.io.source_policy import SourcePolicy

STRICT = SourcePolicy()


@pytest.mark.parametrize("uri,why", [
    ("http://169.254.169.254/latest/meta-data/", "link-local address"),  # cloud metadata
    ("http://127.0.0.1:8333/urbanfabric/catalog.json", "internal address"),
    ("http://localhost/stac", "internal address"),
    ("https://10.0.0.5/cogs/a.tif", "internal address"),
    ("http://[::1]/x.json", "internal address"),
    ("/etc/passwd", "local paths are not accepted"),
    ("file:///etc/passwd", "local paths are not accepted"),
    ("/vsicurl/http://169.254.169.254/x.tif", "virtual file system"),
    ("ftp://example.org/a.tif", "scheme 'ftp' is not allowed"),
    ("gopher://example.org/", "scheme 'gopher' is not allowed"),
])
def test_the_strict_policy_refuses_internal_hosts_local_files_and_odd_schemes(uri, why):
    with pytest.raises(InvalidInput, match=why) as err:
        STRICT.check(uri, "source.catalog_uri")
    assert err.value.field == "source.catalog_uri"


def test_public_web_and_the_object_store_pass():
    assert STRICT.check("s3://urbanfabric/sources/x/catalog.json", "f")
    assert STRICT.check("https://93.184.215.14/catalog.json", "f")  # a public address, no lookup
    hosts = SourcePolicy(hosts=("earth-search.aws.element84.com",))
    with pytest.raises(InvalidInput, match="not in the allowed imagery hosts"):
        hosts.check("https://93.184.215.14/catalog.json", "f")


def test_the_local_stack_policy_allows_loopback_and_its_folders(tmp_path: Path):
    local = SourcePolicy.from_env({"URBANFABRIC_SOURCE_ALLOW_PRIVATE": "1",
                                   "URBANFABRIC_SOURCE_LOCAL_ROOTS": str(tmp_path)})
    assert local.check("http://127.0.0.1:8333/x.json", "f")
    assert local.check_local(tmp_path / "tiles", "path") == (tmp_path / "tiles").resolve()
    with pytest.raises(InvalidInput, match="outside the allowed local folders"):
        local.check_local(tmp_path / ".." / "elsewhere", "path")
    # Allowing private addresses never opens the cloud metadata service.
    for uri in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x.json"):
        with pytest.raises(InvalidInput, match="link-local address"):
            local.check(uri, "source.cog_uris")


def test_asset_hrefs_inside_a_catalog_are_checked_too():
    asset = SimpleNamespace(href="http://169.254.169.254/x.tif", get_absolute_href=lambda: "http://169.254.169.254/x.tif")
    item = SimpleNamespace(id="scene-1", assets={"visual": asset})
    with pytest.raises(InvalidInput, match="asset of scene-1"):
        STRICT.check_items([item], "source.catalog_uri")
