"""The version of gsc: the package's ``__version__``, which the master also prints when it starts."""

__version__ = '0.1.0'
