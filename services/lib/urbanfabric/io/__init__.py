"""Storage: the object store, COG rasters, GeoParquet tables, the job layout, STAC catalogs
and the model repository. No stage logic and no messaging here."""
