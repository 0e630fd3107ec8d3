"""Skip-gram word vectors with negative sampling (word2vec), compared with gensim."""
