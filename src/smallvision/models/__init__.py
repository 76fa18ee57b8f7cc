"""Keras model builders: the chapter's convnet, its augmentation block, classifier heads."""
