"""Materials: roof chips, class taxonomies and calls (roof and façade), and explanations
of why a classifier chose a class."""
