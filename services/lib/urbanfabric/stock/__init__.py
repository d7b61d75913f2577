"""The building stock: material intensity, material mass and embodied carbon with ranges,
and rooftop solar potential."""
