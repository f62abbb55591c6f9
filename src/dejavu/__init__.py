"""dejavu: measure deja vu memorization in self-supervised vision models.

The package tree follows the pipeline::

    data -> partition -> ssl -> attack -> analysis -> report
                       (rcdm and launch beside)

Every stage is a function from files to files with a typed result; the CLI
(:mod:`dejavu.cli`) is a thin layer over those functions.
"""

__version__ = "0.1.0"


class DejavuError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with 2.

    Messages name the file and the problem ("<path>: <what is wrong>").
    """


__all__ = ["DejavuError", "__version__"]
