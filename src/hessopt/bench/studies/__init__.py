"""Studies: one module per study."""
