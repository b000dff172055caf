"""ae: the autoencoder workbench for the shell.

The package root stays free of heavy imports so that `ae --help` starts fast; import
`aecli.runtime`, `aecli.train` or `aecli.models` for the library itself.
"""

__version__ = "0.1.0"
