"""The catalogue: the partner's products and their prices."""
