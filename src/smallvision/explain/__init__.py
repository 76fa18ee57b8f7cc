"""Explain: the first third of the chapter — convolution, padding, strides, pooling, receptive
fields, feature maps and class-activation heatmaps — as things you can compute and look at."""
