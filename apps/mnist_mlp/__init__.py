"""MNIST digit classification with a multilayer perceptron."""
