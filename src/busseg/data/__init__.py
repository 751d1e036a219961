"""Datasets: importers of the public layouts, the prepared folder, its index and the splits."""
