"""The neural-network suites: their definitions, runner and report section."""
