"""What a job hands its users: the buildings-table schema and assembly, aggregate grids,
the map and the report."""
