"""docs/screenshots.py: each target taken, or skipped with a message when its page is absent."""

from __future__ import annotations

import importlib.util
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
def test_a_map_whose_popup_never_opens_fails_by_name(tmp_path, monkeypatch, capsys) -> None:
    """A table whose buildings.parquet does not match its map: the click finds no building."""
    monkeypatch.setattr(screenshots, "POPUP_TIMEOUT_MS", 1500)
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
