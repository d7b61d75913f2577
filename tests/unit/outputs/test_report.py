"""The job report (issue 23, item 4): a parameter table a person can read, report.md and the
self-contained report.html with every section and chart, and a static map in degrees with a
scale bar, north arrow, attribution and the legend outside the data."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box
from urbanfabric.io.geoparquet import geoparquet_bytes
from urbanfabric.io.job_layout import JobLayout
from urbanfabric.job_spec import JobSpec
from urbanfabric.outputs import histograms
from urbanfabric.outputs.charts import CHARTS
from urbanfabric.outputs.job_outputs import write_job_outputs
from urbanfabric.outputs.map_figure import lat_of_y, lon_of_x, nice_step
from urbanfabric.outputs.parameters import (
    format_value,
    label,
    parameter_rows,
    spec_descriptions,
)
from urbanfabric.outputs.report_content import SECTIONS
from urbanfabric.outputs.static_map import MapCanvas, map_figure
from urbanfabric.outputs.summary import Summary, summarize

from tests.fakes import MemoryStore

JOB = "20261205T000000Z-report01"
WEST, SOUTH, EAST, NORTH = 118.09, 24.47, 118.16, 24.50
PNG = b"\x89PNG\r\n\x1a\n"


def buildings(n: int = 400, seed: int = 1) -> gpd.GeoDataFrame:
    """A plausible table: heights, years, Monte-Carlo ranges, fallbacks, unknown roofs."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(WEST, EAST, n), rng.uniform(SOUTH, NORTH, n)
    h = rng.gamma(3, 6, n)
    h[::50] = np.nan
    gfa = rng.uniform(50, 2000, n)
    roof = rng.choice(["unknown", "concrete_cement", "metal"], n)
    frame = gpd.GeoDataFrame({
        "building_id": [f"b{i:05d}" for i in range(n)], "tile_id": "t", "job_id": JOB,
        "footprint_area_m2": gfa / 3, "height_m": h, "gfa_m2": gfa,
        "year_built": rng.normal(1990, 15, n).round(),
        "roof_material": roof,
        "roof_material_unknown_reason": np.where(roof == "unknown", "out_of_domain: imagery of 0.54 m", None),
        "structure": rng.choice(["C", "M"], n),
        "mass_concrete_kg": gfa * 800, "mass_concrete_kg_p05": gfa * 500, "mass_concrete_kg_p95": gfa * 1200,
        "mass_steel_kg": gfa * 50, "mass_steel_kg_p05": gfa * 30, "mass_steel_kg_p95": gfa * 90,
        "mass_total_kg": gfa * 850, "mass_total_kg_p05": gfa * 530, "mass_total_kg_p95": gfa * 1290,
        "embodied_co2e_kg": gfa * 300, "embodied_co2e_kg_p05": gfa * 200, "embodied_co2e_kg_p95": gfa * 450,
        "solar_kwh_per_year": gfa * 10, "solar_source": "clear_sky_climate",
        "fallback": rng.choice(["", "structure_default", "height_missing;structure_default",
                                "pvout_clear_sky_climate"], n),
    }, geometry=[box(a, b, a + 2e-4, b + 2e-4) for a, b in zip(x, y)], crs="EPSG:4326")
    return frame.iloc[np.argsort(frame.geometry.hilbert_distance().to_numpy(), kind="stable")].reset_index(drop=True)


def spec_parameters() -> dict:
    spec = JobSpec.parse({"area": {"west": WEST, "south": SOUTH, "east": EAST, "north": NORTH},
                          "imagery": "sample:xiamen-z18",
                          "segmentation": {"ensemble": ["footprint-unet:v4", "footprint-unet:v6"]}})
    params = spec.model_dump(mode="json", exclude={"job_id"})
    params["area"] = spec.area.bbox() if spec.area else None
    return params


@pytest.fixture(scope="module")
def job():
    store = MemoryStore("urbanfabric")
    table = buildings()
    uris = [store.put_bytes(JobLayout(JOB).batch_buildings(f"{i:05d}"), geoparquet_bytes(table.iloc[i:i + 100]))
            for i in range(0, len(table), 100)]
    summary = write_job_outputs(store, JOB, uris, [], {"tiles (wall)": 12.5, "segment": 30.0}, spec_parameters(),
                                area=(WEST, SOUTH, EAST, NORTH))
    return store, summary, table


# --- Parameters --------------------------------------------------------------------------


def test_labels_and_values_read_as_words():
    assert label("tile_timeout_s") == "Tile timeout (s)"
    assert label("max_area_km2") == "Max area (km²)"
    assert label("tta") == "TTA"
    assert format_value(None) == "—" and format_value("") == "—" and format_value([]) == "—"
    assert format_value(True) == "yes" and format_value(False) == "no"
    assert format_value(["a", "b"]) == "a, b"
    assert format_value({"red": "B04", "green": "B03"}) == "red = B04, green = B03"
    assert format_value(1_000_000.0) == "1,000,000" and format_value(0.1) == "0.1"
    # What an empty value means comes from the spec field's own description.
    assert format_value(None, "preferred acquisition year (empty = any date, most recent first)") \
        == "default (any date, most recent first)"
    assert format_value("", "roof-material model ('' = none)") == "default (none)"
    assert format_value(0, "vote: members that must agree (0 = a majority; GBM: 2 of 4)") \
        == "default (a majority; GBM: 2 of 4)"
    assert format_value(0.0, "polygons smaller than this are dropped (0 = 10 m²)") == "default (10 m²)"
    assert format_value(2, "vote: members that must agree (0 = a majority; GBM: 2 of 4)") == "2"


def test_parameter_rows_flatten_groups_with_no_raw_python_left():
    rows = parameter_rows(spec_parameters(), spec_descriptions())
    text = " ".join(r.value for r in rows)
    for raw in ("None", "{", "[", "True", "False"):
        assert raw not in text, raw
    by_key = {r.key: r for r in rows}
    assert by_key["area"].value.startswith("W 118.09000°, S 24.47000°") and by_key["area"].group == "Job"
    assert by_key["segmentation.ensemble"].value == "footprint-unet:v4, footprint-unet:v6"
    assert by_key["segmentation.ensemble"].group == "Segmentation"
    assert by_key["imagery_options.year"].value == "default (any date, most recent first)"
    assert by_key["imagery_options.max_cloud_cover"].group == "Imagery"
    assert by_key["tile_timeout_s"].label == "Tile timeout (s)"
    assert by_key["footprints"].value == "—"
    # Every scalar of every group is a row: nothing nested is dropped.
    assert {"models.height", "outputs.single_file", "landcover.raster"} <= set(by_key)
    groups = [r.group for r in rows]
    assert groups[0] == "Job" and groups == sorted(groups, key=lambda g: groups.index(g))  # contiguous


# --- Summary merged from partitions ----------------------------------------------------------


def test_histograms_merge_and_read_quantiles():
    a = histograms.histogram([1.5, 2.5, np.nan, 500], 0, 1, 10)
    b = histograms.histogram([2.2, -3], 0, 1, 10)
    m = histograms.merge_histograms([a, None, b])
    assert m["counts"][1] == 1 and m["counts"][2] == 2 and m["above"] == 1 and m["below"] == 1
    assert m["missing"] == 1 and histograms.total(m) == 5
    assert histograms.quantile(histograms.histogram(np.arange(100) + 0.5, 0, 1, 100), 0.5) == pytest.approx(50, abs=1)
    with pytest.raises(ValueError):
        histograms.merge_histograms([a, histograms.histogram([1], 0, 2, 10)])


def test_the_merged_summary_equals_the_whole_tables(job):
    _, summary, table = job
    whole = summarize(JOB, table, {}, {})
    assert summary.height_histogram == whole.height_histogram
    assert summary.year_histogram == whole.year_histogram
    assert summary.fallbacks == whole.fallbacks == {
        k: int(table["fallback"].str.contains(k).sum())
        for k in ("structure_default", "pvout_clear_sky_climate", "height_missing")}
    assert summary.fallback_buildings == int((table["fallback"] != "").sum())
    assert summary.mass_kg_p05["concrete"] == pytest.approx(table["mass_concrete_kg_p05"].sum())
    assert summary.mass_total_kg_range[1] == pytest.approx(table["mass_total_kg_p95"].sum())
    assert summary.embodied_co2e_kg_range[0] == pytest.approx(table["embodied_co2e_kg_p05"].sum())
    q95 = histograms.quantile(summary.height_histogram, 0.95)
    assert q95 == pytest.approx(np.nanpercentile(table["height_m"], 95), abs=1.0)
    assert "aggregate (wall)" in summary.stage_seconds and summary.stage_seconds["segment"] == 30.0
    # job.json round trip (a dict back into the dataclass), and an old summary without the fields.
    assert "p05–p95" in Summary(**summary.__dict__).text()
    assert Summary("j", 0, None, {}, {}, 0.0).text().startswith("job j: 0 buildings")


# --- report.md and report.html ---------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "a":
            self.links.append(a.get("href", ""))
        for key in ("src", "href"):
            if re.match(r"^(https?:)?//", a.get(key) or ""):
                self.external.append(a[key])


def test_report_html_is_self_contained_with_every_section_and_chart(job):
    store, _, _ = job
    html = store.get_bytes(f"{JobLayout(JOB).outputs}/report.html").decode()
    page = _Page()
    page.feed(html)
    assert list(SECTIONS) == [i for i in page.ids if i in SECTIONS]  # every section, in order, stable ids
    assert not page.external, page.external  # no network
    assert "map.html" in page.links
    # The map and every chart inline as PNG data URIs.
    assert len(page.images) == 1 + len(CHARTS)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    for title in CHARTS.values():
        assert f'alt="{title}"' in html
    assert "p05–p95" in html and "t CO2e" in html and "GWh/year" in html
    assert "structure_default" in html and "StockOptions.default_structure" in html  # fallback + meaning
    assert "out_of_domain: imagery of 0.54 m" in html  # abstention reasons
    assert "default (any date, most recent first)" in html and "None" not in html


def test_report_md_links_its_charts_map_and_interactive_map(job):
    store, _, _ = job
    outputs = JobLayout(JOB).outputs
    md = store.get_bytes(JobLayout(JOB).report).decode()
    for title in SECTIONS.values():
        if title != "Warnings":  # no warnings in this job
            assert f"## {title}" in md, title
    for name in CHARTS:
        assert f"(report_files/{name}.png)" in md
        assert store.get_bytes(f"{outputs}/report_files/{name}.png")[:8] == PNG
    assert "[map.html](map.html)" in md and "![map: footprints by height and roof material](map.png)" in md
    assert "| Segmentation |" not in md and "| **Segmentation** |" in md and "`None`" not in md


def test_an_empty_job_still_has_a_report():
    store = MemoryStore("urbanfabric")
    summary = write_job_outputs(store, JOB, [], [], {}, {})
    html = store.get_bytes(f"{JobLayout(JOB).outputs}/report.html").decode()
    assert summary.buildings == 0 and 'id="summary"' in html and "No parameters recorded" in html


# --- The static map ------------------------------------------------------------------------


def _degrees(labels: list[str], suffixes: str) -> list[float]:
    out = []
    for text in labels:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)°([" + suffixes + "])", text)
        assert m, f"tick label {text!r} is not in degrees"
        out.append(float(m.group(1)) * (-1 if m.group(2) in "WS" else 1))
    return out


@pytest.mark.parametrize("use_canvas", [True, False])
def test_the_map_has_degree_ticks_scale_bar_north_arrow_attribution_and_an_outside_legend(use_canvas):
    from matplotlib.legend import Legend
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    table = buildings(200)
    if use_canvas:
        canvas = MapCanvas((WEST, SOUTH, EAST, NORTH), 256)
        canvas.add_buildings(table)
        fig = canvas.figure("t", "Imagery: sample:xiamen-z18 · buildings: urbanfabric")
    else:
        fig = map_figure(table, "t", [], "Imagery: sample:xiamen-z18 · buildings: urbanfabric")
    fig.canvas.draw()
    for ax in fig.axes[:2]:
        xs = _degrees([t.get_text() for t in ax.get_xticklabels()], "EW")
        ys = _degrees([t.get_text() for t in ax.get_yticklabels()], "NS")
        assert len(xs) >= 2 and len(ys) >= 2
        # The labels name the place of their tick (Web Mercator axes, degree labels).
        assert np.allclose(lon_of_x(np.array(ax.get_xticks())), xs, atol=1e-6)
        assert np.allclose(lat_of_y(np.array(ax.get_yticks())), ys, atol=1e-6)
        assert WEST - 0.01 <= min(xs) and max(xs) <= EAST + 0.01 and SOUTH - 0.01 <= min(ys) <= NORTH + 0.01
        assert ax.get_xlabel() == "longitude" and ax.get_ylabel() == "latitude"
        assert any(isinstance(a, AnchoredSizeBar) for a in ax.artists)
        assert "N" in [t.get_text() for t in ax.texts]
    assert fig.get_supxlabel().startswith("Imagery: sample:xiamen-z18")
    legend = fig.axes[1].get_legend()
    assert isinstance(legend, Legend) and {t.get_text() for t in legend.get_texts()} >= {"unknown", "metal"}
    # The legend lies right of the data area, not over the buildings.
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= fig.axes[1].get_window_extent(renderer).x1
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_scale_bar_length_is_round_and_in_ground_metres():
    assert nice_step(0.07, 4) == 0.02 and nice_step(7, 5) == 2
    canvas = MapCanvas((WEST, SOUTH, EAST, NORTH), 128)
    fig = canvas.figure("t")
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    bar = next(a for a in fig.axes[0].artists if isinstance(a, AnchoredSizeBar))
    label = bar.txt_label.get_text() if hasattr(bar, "txt_label") else ""
    # ≈ 7 km wide at 24.5° N: the longest round length under a fifth of it is 1 km.
    assert label == "1 km"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_job_without_map_html_says_so_instead_of_a_dead_link():
    from urbanfabric.outputs.report import report_md
    from urbanfabric.outputs.report_html import report_html

    big = Summary("j", 200_000, 10.0, {}, {}, 0.0, outputs={"buildings": "s3://b/jobs/j/outputs/buildings/"})
    assert "No interactive map for this job" in report_md(big, {}) and "(map.html)" not in report_md(big, {})
    assert 'href="map.html"' not in report_html(big, {}, {}, None).decode()
    small = Summary("j", 10, 10.0, {}, {}, 0.0, outputs={"map_html": "s3://b/jobs/j/outputs/map.html"})
    assert 'href="map.html"' in report_html(small, {}, {}, None).decode()
