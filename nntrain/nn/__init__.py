"""Layers, losses, initializers and the Model that strings them together."""
