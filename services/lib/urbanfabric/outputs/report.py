"""Human-readable job outputs: a PNG map and a short Markdown report."""

from __future__ import annotations

import io

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")  # headless: services and CI have no display
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402

from urbanfabric.outputs.abstention import Abstention, abstention_md  # noqa: E402
from urbanfabric.outputs.summary import Summary  # noqa: E402
from urbanfabric.io.rasters import Raster  # noqa: E402


def _show_basemap(ax, rasters: list[Raster]) -> None:
    """Draw calibrated tiles (EPSG:3857) under the footprints, decimated for a small PNG."""
    if not rasters:
        return
    steps = [max(1, r.data.shape[-1] // 512) for r in rasters]
    # One stretch for all tiles, so the basemap shows no tile-by-tile brightness steps.
    sample = np.concatenate([r.data[:3, ::s * 4, ::s * 4].ravel() for r, s in zip(rasters, steps)])
    sample = sample[np.isfinite(sample)]
    white = max(float(np.percentile(sample, 99)), 1e-6) if sample.size else 1.0
    for r, step in zip(rasters, steps):
        data = r.data[:3, ::step, ::step]
        rgb = np.nan_to_num(data).transpose(1, 2, 0)
        rgb = np.clip(rgb / white, 0, 1)
        # Pixels without imagery stay transparent instead of black.
        alpha = np.isfinite(data).all(axis=0).astype(rgb.dtype)[..., None]
        rgb = np.concatenate([rgb, alpha], axis=2)
        left, bottom, right, top = r.bounds
        ax.imshow(rgb, extent=(left, right, bottom, top), interpolation="bilinear")


def map_png(buildings: gpd.GeoDataFrame, title: str, basemap: list[Raster] | None = None) -> bytes:
    """Two panels over the imagery: footprints coloured by predicted height, and by roof material."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 7), constrained_layout=True)
    for ax in axes:
        _show_basemap(ax, basemap or [])
    frame = buildings.to_crs("EPSG:3857") if len(buildings) else buildings
    if len(frame):
        frame.plot(ax=axes[0], column="height_m", cmap="viridis", legend=True,
                   legend_kwds={"label": "height (m)", "shrink": 0.6}, linewidth=0, alpha=0.85)
        if "roof_material" in frame:
            frame.assign(roof=frame["roof_material"].fillna("no imagery")).plot(
                ax=axes[1], column="roof", categorical=True, legend=True, cmap="tab10", linewidth=0, alpha=0.85,
                legend_kwds={"loc": "lower left", "fontsize": 8})
    axes[0].set_title("Building height (bootstrap XGBoost mean)")
    axes[1].set_title("Roof material")
    for ax in axes:
        ax.set_xlabel("Web Mercator x (m)")
        ax.set_ylabel("Web Mercator y (m)")
        ax.ticklabel_format(style="plain", useOffset=False)
        ax.tick_params(labelsize=7)
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _warnings_md(summary: Summary) -> str:
    """A "Warnings" section: bad input that did not stop the job, each naming its tile."""
    warnings = getattr(summary, "warnings", None) or []
    if not warnings:
        return ""
    return "## Warnings\n\n" + "\n".join(f"- {w}" for w in warnings) + "\n\n"


def _sanity_md(summary: Summary) -> str:
    """A "Sanity checks" section: implausible combinations (urbanfabric.outputs.sanity)."""
    checks = getattr(summary, "sanity", None) or []
    if not checks:
        return "## Sanity checks\n\nNo implausible combination found by the checks of " \
               "`urbanfabric.outputs.sanity`.\n\n"
    rows = "\n".join(f"| `{w['code']}` | {w['count']} | {w['message']} | "
                     f"{', '.join(f'`{e}`' for e in w.get('examples', [])) or '–'} |" for w in checks)
    return ("## Sanity checks\n\nImplausible combinations in the table (warnings: nothing was "
            "changed; rules and sources in `urbanfabric.outputs.sanity`).\n\n"
            "| check | buildings | what | e.g. |\n|---|---:|---|---|\n" + rows + "\n\n")


def _abstention_md(summary: Summary) -> str:
    """An "Abstentions" section: kept vs unknown per class attribute, and why."""
    rows = [Abstention(**a) for a in (getattr(summary, "abstention", None) or [])]
    if not rows:
        return ""
    return ("## Abstentions\n\nPer class attribute: buildings with a value, buildings left "
            "`unknown` grouped by `*_unknown_reason`, and where the value came from.\n\n"
            + abstention_md(rows) + "\n")


def report_md(summary: Summary, parameters: dict) -> str:
    """The job report: parameters, the summary, and how to read the outputs."""
    params = "\n".join(f"| {k} | `{v}` |" for k, v in parameters.items())
    return f"""# urbanfabric job {summary.job_id}

![map](map.png)

## Summary

```
{summary.text()}
```

{_warnings_md(summary)}{_sanity_md(summary)}{_abstention_md(summary)}## Parameters

| parameter | value |
|---|---|
{params}

## Reading the outputs

```python
import geopandas as gpd
buildings = gpd.read_parquet("buildings.parquet")   # GeoParquet 1.1, EPSG:4326
```

```sql
-- DuckDB (spatial extension)
SELECT roof_material, count(*), sum(mass_total_kg) / 1000 AS tonnes
FROM 'buildings.parquet' GROUP BY ALL;
```
"""
