"""Pretrained conv bases. So far: :mod:`.torchfile` (the restricted reader for the PyTorch
weight files that the offline ImageNet weights ship as) and :mod:`.efficientnet_lite` (the
network in plain Keras, with those weights). The registry and the pretrained strategies
build on them."""
