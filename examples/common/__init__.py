"""Helpers shared by the demos: data sets made on the spot (nothing is downloaded)."""
