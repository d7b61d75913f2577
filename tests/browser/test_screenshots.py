"""docs/screenshots.py: targets taken or skipped with a message, and its byte-range server."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from urbanfabric.outputs import webmap

from tests.browser.chromium import missing_reason

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("screenshots", ROOT / "docs" / "screenshots.py")
assert _spec and _spec.loader
screenshots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(screenshots)


def _get(url: str, byte_range: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Range": byte_range} if byte_range else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


def test_server_answers_byte_ranges_as_pmtiles_js_asks(tmp_path) -> None:
    (tmp_path / "buildings.pmtiles").write_bytes(bytes(range(100)))
    with screenshots.serve(tmp_path) as base:
        url = f"{base}/buildings.pmtiles"
        status, headers, body = _get(url, "bytes=10-19")
        assert (status, body, headers["Content-Range"]) == (206, bytes(range(10, 20)), "bytes 10-19/100")
        assert _get(url, "bytes=95-")[2] == bytes(range(95, 100))
        assert _get(url, "bytes=-3")[2] == bytes([97, 98, 99])
        assert _get(url, "bytes=90-500")[2] == bytes(range(90, 100))  # clipped to the file
        assert _get(url)[:1] == (200,) and len(_get(url)[2]) == 100
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(url, "bytes=200-300")
        assert err.value.code == 416


@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_map_taken_with_popup_and_missing_pages_skipped(tmp_path, monkeypatch, capsys) -> None:
    from tests.browser.test_webmap_chromium import TABLE

    job = tmp_path / "job"
    job.mkdir()
    TABLE.to_parquet(job / "buildings.parquet")
    (job / "map.html").write_bytes(webmap.job_map_html(TABLE, "job-shots", {}))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens there
    rc = screenshots.main(["--job", str(job), "--out", str(tmp_path / "img")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"map: wrote {tmp_path / 'img' / 'webmap_demo.png'}" in out
    assert Image.open(tmp_path / "img" / "webmap_demo.png").size == (1280, 900)
    assert "prefect: skipped: Prefect is not answering at http://127.0.0.1:9/api" in out
    assert f"viewer: skipped: {job / 'viewer.html'} not found" in out
    assert f"report: skipped: {job / 'report.html'} not found" in out


@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_a_map_whose_popup_never_opens_fails_by_name(tmp_path, capsys) -> None:
    """A table whose buildings.parquet does not match its map: the click finds no building."""
    from tests.browser.test_webmap_chromium import TABLE

    job = tmp_path / "job"
    job.mkdir()
    TABLE.to_parquet(job / "buildings.parquet")
    (job / "map.html").write_bytes(webmap.job_map_html(TABLE.iloc[:0], "job-empty", {}))
    assert screenshots.main(["--job", str(job), "--out", str(tmp_path / "img"), "map"]) == 1
    assert "map: FAILED: clicking building" in capsys.readouterr().err
    assert not (tmp_path / "img" / "webmap_demo.png").exists()


def test_unknown_target_is_named(capsys) -> None:
    with pytest.raises(SystemExit):
        screenshots.main(["maps"])
    assert "targets: maps not among map, prefect, viewer, report" in capsys.readouterr().err
