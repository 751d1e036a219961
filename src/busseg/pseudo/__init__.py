"""Pseudo labels: the labeling backends, their two-pass run, selection and refinement."""
