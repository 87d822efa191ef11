"""wds: the deployment server's own package.

Owns everything that is not a wire protocol: the typed configuration (:mod:`wds.config`), the error
hierarchy shared by every package (:mod:`wds.errors`), the WIM reader (:mod:`wds.wim`), the image
store that keeps boot and install images (:mod:`wds.store`), the wrapper around wimlib's
command-line tools (:mod:`wds.wimlib`) and the ``wds`` command line (:mod:`wds.cli`).

The wire protocols live beside it: :mod:`pxe` (ProxyDHCP and TFTP) and :mod:`multicast` (the image
transfer protocol). See docs/ARCHITECTURE.md for how a boot and a deployment flow through them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wds")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
