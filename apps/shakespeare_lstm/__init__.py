"""Character-level LSTM language model of tiny-shakespeare, and a text generator served as one call."""
