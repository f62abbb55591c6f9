"""One module per SSL method; see :mod:`dejavu.ssl.registry`."""
