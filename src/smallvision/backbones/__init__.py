"""Pretrained conv bases. So far: :mod:`.torchfile`, the restricted reader for the PyTorch
weight files that the offline ImageNet weights ship as (the registry builds on it)."""
