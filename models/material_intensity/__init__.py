"""Builds the shipped material-intensity and carbon-factor tables from reference data."""
