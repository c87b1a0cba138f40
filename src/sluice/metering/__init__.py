"""Token counting, prices and budget accounting."""
