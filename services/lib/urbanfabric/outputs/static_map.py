"""The static job map (``map.png``): footprints by height and by roof material over the imagery.

Drawn in Web Mercator (the tiles' CRS) with lon/lat ticks, a scale bar, a north arrow, the
imagery attribution and the legends outside the data (:mod:`urbanfabric.outputs.map_figure`).
"""

from __future__ import annotations

import io

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")  # headless: services and CI have no display
import matplotlib.pyplot as plt
import numpy as np

from urbanfabric.io.rasters import Raster
from urbanfabric.outputs.map_figure import attribution as draw_attribution
from urbanfabric.outputs.map_figure import decorate, outside_legend


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


def figure_size(aspect: float) -> tuple[float, float]:
    """Inches for two map panels of height / width ``aspect`` side by side, with room for the
    title, ticks and the legends (so a wide area leaves no blank band above and below)."""
    return 14.0, float(np.clip(5.4 * aspect + 1.8, 3.5, 9.0))


def _save(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _finish(fig, axes, title: str, credit: str) -> None:
    axes[0].set_title("Building height (bootstrap XGBoost mean)")
    axes[1].set_title("Roof material")
    for ax in axes:
        ax.set_aspect("equal", adjustable="box")
        decorate(ax)
    draw_attribution(fig, credit)
    fig.suptitle(title)


def map_figure(buildings: gpd.GeoDataFrame, title: str, basemap: list[Raster] | None = None,
               attribution: str = ""):
    """Two panels over the imagery: footprints coloured by predicted height, and by roof material
    (a figure; :func:`map_png` saves it)."""
    from matplotlib.patches import Patch

    frame = buildings.to_crs("EPSG:3857") if len(buildings) else buildings
    x0, y0, x1, y1 = frame.total_bounds if len(frame) else (0.0, 0.0, 1.0, 1.0)
    fig, axes = plt.subplots(1, 2, figsize=figure_size((y1 - y0) / max(x1 - x0, 1e-9)), constrained_layout=True)
    for ax in axes:
        _show_basemap(ax, basemap or [])
    if len(frame):
        frame.plot(ax=axes[0], column="height_m", cmap="viridis", legend=True,
                   legend_kwds={"label": "height (m)", "shrink": 0.6}, linewidth=0, alpha=0.85)
        if "roof_material" in frame:
            roof = frame["roof_material"].fillna("no imagery")
            names = sorted(roof.unique())
            cmap = plt.get_cmap("tab10")
            colors = {n: cmap(i % 10) for i, n in enumerate(names)}
            frame.plot(ax=axes[1], color=[colors[v] for v in roof], linewidth=0, alpha=0.85)
            outside_legend(axes[1], [Patch(color=colors[n], label=n) for n in names])
    _finish(fig, axes, title, attribution)
    return fig


def map_png(buildings: gpd.GeoDataFrame, title: str, basemap: list[Raster] | None = None,
            attribution: str = "") -> bytes:
    """:func:`map_figure` as PNG bytes."""
    return _save(map_figure(buildings, title, basemap, attribution))


class MapCanvas:
    """The job map drawn partition by partition on a fixed canvas (issue 22, item 4).

    Footprints are burnt into two fixed-size rasters in Web Mercator (height, roof-material
    class) and imagery is resampled into a third, so memory is the canvas, never the job: each
    partition (and each tile's preview) is added once and dropped. Over a district the canvas
    pixel is well under a building; over a country it shows where the buildings are.
    """

    #: Polygons burnt per rasterize call.
    SHAPES_PER_CALL = 2_000

    def __init__(self, bounds: tuple[float, float, float, float], px: int = 1024) -> None:
        from pyproj import Transformer
        from rasterio.transform import from_origin

        w, s, e, n = bounds
        to_merc = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
        x0, y0 = to_merc.transform(w, max(s, -85.0))
        x1, y1 = to_merc.transform(e, min(n, 85.0))
        pad = 0.02 * max(x1 - x0, y1 - y0, 1.0)
        x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
        self.scale = max(x1 - x0, y1 - y0) / px
        self.width = max(1, int(np.ceil((x1 - x0) / self.scale)))
        self.height_px = max(1, int(np.ceil((y1 - y0) / self.scale)))
        self.extent = (x0, x0 + self.width * self.scale, y1 - self.height_px * self.scale, y1)
        self.transform = from_origin(x0, y1, self.scale, self.scale)
        self.heights = np.full((self.height_px, self.width), np.nan, dtype=np.float32)
        self.roofs = np.full((self.height_px, self.width), -1, dtype=np.int16)
        self.rgb = np.full((3, self.height_px, self.width), np.nan, dtype=np.float32)
        self.classes: dict[str, int] = {}
        self.buildings = 0

    def add_buildings(self, frame: gpd.GeoDataFrame) -> None:
        """Burn one partition's footprints (height and roof material) into the canvas."""
        from rasterio.features import rasterize

        if not len(frame):
            return
        self.buildings += len(frame)
        geoms = frame.geometry.to_crs("EPSG:3857").to_numpy()
        shape = (self.height_px, self.width)
        h = frame["height_m"].to_numpy(dtype=np.float64) if "height_m" in frame else None
        codes = None
        if "roof_material" in frame:
            names = frame["roof_material"].fillna("no imagery").astype(str).to_numpy()
            codes = np.array([self.classes.setdefault(v, len(self.classes)) for v in names], dtype=np.int16)
        # rasterio turns each polygon into GeoJSON-like Python objects first: a few thousand at
        # a time keeps that transient small (20,000 segmented footprints at once cost ≈ 250 MiB).
        for start in range(0, len(geoms), self.SHAPES_PER_CALL):
            part = slice(start, start + self.SHAPES_PER_CALL)
            if h is not None:
                ok = np.isfinite(h[part])
                if ok.any():
                    burnt = rasterize(zip(geoms[part][ok], h[part][ok]), out_shape=shape, transform=self.transform,
                                      fill=np.nan, all_touched=True, dtype="float32")
                    self.heights = np.where(np.isfinite(burnt), burnt, self.heights)
            if codes is not None:
                burnt = rasterize(zip(geoms[part], codes[part]), out_shape=shape, transform=self.transform,
                                  fill=-1, all_touched=True, dtype="int16")
                self.roofs = np.where(burnt >= 0, burnt, self.roofs).astype(np.int16)

    def add_basemap(self, raster: Raster) -> None:
        """Resample one tile's calibrated imagery (first three bands) into the canvas."""
        from rasterio.warp import Resampling, reproject

        bands = raster.data[:3].astype(np.float32)
        out = np.full((bands.shape[0], self.height_px, self.width), np.nan, dtype=np.float32)
        reproject(bands, out, src_transform=raster.transform, src_crs=raster.crs, src_nodata=raster.nodata,
                  dst_transform=self.transform, dst_crs="EPSG:3857", dst_nodata=np.nan,
                  resampling=Resampling.average)
        k = out.shape[0]
        self.rgb[:k] = np.where(np.isfinite(out), out, self.rgb[:k])
        if k < 3:
            self.rgb[k:] = self.rgb[:1]

    def png(self, title: str, attribution: str = "") -> bytes:
        """:meth:`figure` as PNG bytes."""
        return _save(self.figure(title, attribution))

    def figure(self, title: str, attribution: str = ""):
        """Two panels over the imagery: height and roof material, with lon/lat ticks, scale bar,
        north arrow, ``attribution`` and the legends outside the data."""
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import ListedColormap, Normalize
        from matplotlib.patches import Patch

        # Every layer is turned into 8-bit RGBA here: matplotlib then draws three small images
        # instead of resampling float canvases (hundreds of MiB at 2048 px).
        fig, axes = plt.subplots(1, 2, figsize=figure_size(self.height_px / self.width), constrained_layout=True)
        finite = self.rgb[np.isfinite(self.rgb)]
        white = max(float(np.percentile(finite, 99)), 1e-6) if finite.size else 1.0
        del finite
        base = np.zeros((self.height_px, self.width, 4), dtype=np.uint8)
        for i in range(3):
            base[..., i] = (np.clip(np.nan_to_num(self.rgb[i]) / white, 0, 1) * 255).astype(np.uint8)
        base[..., 3] = np.where(np.isfinite(self.rgb).all(axis=0), 255, 0).astype(np.uint8)
        for ax in axes:
            ax.imshow(base, extent=self.extent, interpolation="nearest")
        del base
        ok = np.isfinite(self.heights)
        if ok.any():
            norm = Normalize(float(np.nanmin(self.heights)), float(np.nanmax(self.heights)))
            layer = plt.get_cmap("viridis")(norm(np.nan_to_num(self.heights)), bytes=True)
            layer[..., 3] = np.where(ok, 217, 0)
            axes[0].imshow(layer, extent=self.extent, interpolation="nearest")
            fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=axes[0], label="height (m)",
                         shrink=float(np.clip(self.height_px / self.width, 0.4, 0.9)))
            del layer
        if self.classes:
            cmap = plt.get_cmap("tab10")
            colors = [cmap(i % 10) for i in range(len(self.classes))]
            layer = ListedColormap(colors)(np.clip(self.roofs, 0, None).astype(np.int64), bytes=True)
            layer[..., 3] = np.where(self.roofs >= 0, 217, 0)
            axes[1].imshow(layer, extent=self.extent, interpolation="nearest")
            outside_legend(axes[1], [Patch(color=colors[i], label=name) for name, i in self.classes.items()])
            del layer
        for ax in axes:
            ax.set_xlim(self.extent[0], self.extent[1])
            ax.set_ylim(self.extent[2], self.extent[3])
        _finish(fig, axes, title, attribution)
        return fig
