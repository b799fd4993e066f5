"""Tests of the dataprep example pipeline."""
