"""What makes the static map readable: lon/lat ticks, a scale bar, a north arrow, the imagery
attribution and a legend outside the data.

The map is drawn in Web Mercator (EPSG:3857), the CRS of the tiles and of the canvas, so the
imagery needs no second warp; only the ticks are placed at round degrees and labelled as
such (``118.100°E``). Web Mercator stretches distances by 1 / cos(latitude): the scale bar is
sized for the map's middle latitude and says so when the map spans enough latitude for that
to matter.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

EARTH_RADIUS_M = 6378137.0  # EPSG:3857 sphere
#: Scale-bar lengths tried (metres on the ground), the longest under a fifth of the map width.
SCALE_STEPS_M = [s * 10.0 ** e for e in range(7) for s in (1, 2, 5)]
#: Above this spread of 1 / cos(lat) over the map, the scale bar names its latitude.
SCALE_SPREAD = 0.02


def lon_of_x(x: float | np.ndarray) -> Any:
    return np.degrees(np.asarray(x) / EARTH_RADIUS_M)


def lat_of_y(y: float | np.ndarray) -> Any:
    return np.degrees(2 * np.arctan(np.exp(np.asarray(y) / EARTH_RADIUS_M)) - np.pi / 2)


def x_of_lon(lon: float | np.ndarray) -> Any:
    return np.radians(np.asarray(lon)) * EARTH_RADIUS_M


def y_of_lat(lat: float | np.ndarray) -> Any:
    return EARTH_RADIUS_M * np.log(np.tan(np.pi / 4 + np.radians(np.asarray(lat)) / 2))


def nice_step(span: float, ticks: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 × 10^k) giving about ``ticks`` ticks over ``span``."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def decimals(step: float) -> int:
    """Decimals that write every multiple of ``step`` exactly (0.0025 → 4, 0.01 → 2, 5 → 0)."""
    for d in range(7):
        if abs(round(step, d) - step) < 1e-9 * max(1.0, step):
            return d
    return 6


def degree_label(value: float, positive: str, negative: str, decimals: int) -> str:
    """``118.100°E`` / ``24.480°N``; west and south without a minus sign."""
    hemi = positive if value >= 0 else negative
    return f"{abs(value):.{decimals}f}°{hemi}"


def degree_ticks(ax: Any) -> None:
    """Ticks of a Web Mercator axes at round longitudes and latitudes, labelled in degrees."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    w, e = float(lon_of_x(x0)), float(lon_of_x(x1))
    s, n = float(lat_of_y(y0)), float(lat_of_y(y1))
    for lo, hi, to_axis, set_ticks, pos, neg in ((w, e, x_of_lon, ax.set_xticks, "E", "W"),
                                                 (s, n, y_of_lat, ax.set_yticks, "N", "S")):
        step = nice_step(hi - lo, 5)
        values = np.arange(math.ceil(lo / step) * step, hi + step * 1e-9, step)
        set_ticks(to_axis(values), [degree_label(float(v), pos, neg, decimals(step)) for v in values])
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.tick_params(labelsize=7)


def scale_bar(ax: Any) -> str:
    """A scale bar in the lower left, sized in ground metres at the map's middle latitude;
    returns its label."""
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    lat_mid = float(lat_of_y((y0 + y1) / 2))
    k = math.cos(math.radians(lat_mid))  # ground metres per Web Mercator metre
    ground_width = (x1 - x0) * k
    length = max([s for s in SCALE_STEPS_M if s <= ground_width / 5] or [SCALE_STEPS_M[0]])
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    spread = abs(1 / math.cos(math.radians(float(lat_of_y(y1)))) - 1 / math.cos(math.radians(float(lat_of_y(y0)))))
    if spread * math.cos(math.radians(lat_mid)) > SCALE_SPREAD:
        label += f" at {degree_label(lat_mid, 'N', 'S', 1)}"
    bar = AnchoredSizeBar(ax.transData, length / k, label, "lower left", pad=0.4, borderpad=0.6, sep=3,
                          color="black", frameon=True, size_vertical=(y1 - y0) / 150,
                          fontproperties=FontProperties(size=7))
    bar.patch.set_alpha(0.75)
    ax.add_artist(bar)
    return label


def north_arrow(ax: Any) -> None:
    """An arrow and "N" in the upper right (north is up in Web Mercator), a fixed size in points
    whatever the panel's shape."""
    ax.annotate("", xy=(0.95, 0.97), xytext=(0, -28), xycoords="axes fraction", textcoords="offset points",
                arrowprops={"facecolor": "black", "edgecolor": "white", "width": 4, "headwidth": 11,
                            "headlength": 10})
    ax.annotate("N", xy=(0.95, 0.97), xytext=(0, -36), xycoords="axes fraction", textcoords="offset points",
                ha="center", va="center", fontsize=10, fontweight="bold",
                bbox={"boxstyle": "circle,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75})


def attribution_text(parameters: dict[str, Any] | None) -> str:
    """Where the imagery (and footprints) came from, for the map's corner."""
    params = parameters or {}
    bits = []
    imagery = params.get("imagery")
    bits.append(f"Imagery: {imagery}" if imagery else "No imagery")
    if params.get("footprints"):
        bits.append(f"footprints: {params['footprints']}")
    bits.append("buildings: urbanfabric")
    return " · ".join(bits)


def attribution(fig: Any, text: str) -> None:
    """The attribution under the panels, in the space the layout keeps for it (inside a narrow
    panel it would run into the scale bar)."""
    if text:
        fig.supxlabel(text, fontsize=7, color="#333333")


def outside_legend(ax: Any, handles: list) -> None:
    """The legend right of the axes, never over the buildings."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8,
              title="roof material", title_fontsize=8, frameon=False)


def decorate(ax: Any) -> None:
    """Degree ticks, scale bar and north arrow on one map panel."""
    degree_ticks(ax)
    scale_bar(ax)
    north_arrow(ax)
