"""The test-function suite: its runner and its report section."""
