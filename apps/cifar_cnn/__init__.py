"""CIFAR-10: a CNN from scratch with data augmentation, and transfer learning from VGG16."""
