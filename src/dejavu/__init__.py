"""dejavu: measure deja vu memorization in self-supervised vision models.

The package tree follows the pipeline::

    data -> partition -> ssl -> attack -> analysis -> report
                       (rcdm and launch beside)

Every stage is a function from files to files with a typed result; the CLI
(:mod:`dejavu.cli`) is a thin layer over those functions.
"""

__version__ = "0.1.0"


class DejavuError(Exception):
    """A user-facing error found at run time (a missing or bad file, a mismatch between
    artifacts, an existing result without ``--force``): the CLI prints its message on one
    line and exits with status 1.

    Messages name the file and the problem ("<path>: <what is wrong>").
    """


class UsageError(DejavuError):
    """The command line itself is wrong (an unknown ``--set`` key, a value of the wrong
    type, flags that exclude each other): the CLI prints one line and exits with status 2,
    as argparse does for its own usage errors."""


__all__ = ["DejavuError", "UsageError", "__version__"]
