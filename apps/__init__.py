"""The suite's seven applications; each folder is data.py -> model.py -> train.py."""

APPS = {
    "mnist_mlp": "digit classification with a multilayer perceptron (MNIST)",
    "cifar_cnn": "CIFAR-10: CNN with data augmentation; transfer learning from VGG16",
    "word2vec": "skip-gram word embeddings with negative sampling",
    "shakespeare_lstm": "character-level LSTM language model and text generator",
    "sentiment_gru": "IMDB review polarity from raw text with a GRU",
    "dcgan": "deep convolutional GAN (MNIST, Fashion-MNIST, CIFAR-10)",
    "dqn": "deep Q-network with experience replay (Atari, CartPole)",
}
