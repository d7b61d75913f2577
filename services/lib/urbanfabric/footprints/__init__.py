"""Footprints: tiled segmentation, test-time augmentation, model ensembles, polygons,
seams between tiles, and footprints that users bring."""
