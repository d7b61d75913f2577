"""Building attributes: footprint features, height and floors, function, age, measured
heights, and the one-batch entry point the attributes service calls."""
