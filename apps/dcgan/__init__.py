"""DCGAN: a deep convolutional GAN (Radford et al. 2015) on MNIST, Fashion-MNIST or CIFAR-10,
with its sample quality measured by a classifier-based Inception Score and Fréchet distance."""
