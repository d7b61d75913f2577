"""Imagery in: acquisition from STAC or XYZ sources, scene choice, radiometric calibration,
the tiling grid, the settlement mask, land cover and street-level views."""
