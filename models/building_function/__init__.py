"""Building-function classifier (XGBoost on footprint features, OSM labels): training command and shipped model."""
