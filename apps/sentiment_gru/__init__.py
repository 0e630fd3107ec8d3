"""IMDB review polarity from raw text with a GRU (issue 5)."""
