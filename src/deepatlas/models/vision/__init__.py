"""Image classification: from LeNet to ConvNeXt and ViT, and group-equivariant CNNs."""
