"""Second-order information, usable on its own for analysis (imports nothing else of hessopt)."""
