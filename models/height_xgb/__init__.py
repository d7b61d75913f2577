"""Bootstrap-aggregated XGBoost building-height model: training command and shipped weights."""
