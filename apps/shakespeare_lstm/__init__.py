"""Character-level LSTM language model of tiny-shakespeare, and its text generator served as a
single call."""
