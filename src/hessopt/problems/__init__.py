"""What gets optimized: test functions (and later data sets, models and the problem registry)."""
