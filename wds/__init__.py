"""wds: the deployment server's own package.

Owns everything that is not a wire protocol: the typed configuration (:mod:`wds.config`), the error
hierarchy shared by every package (:mod:`wds.errors`), the WIM reader (:mod:`wds.wim`), the image
store that keeps boot and install images (:mod:`wds.store`), the wrapper around wimlib's
command-line tools (:mod:`wds.wimlib`) and the ``wds`` command line (:mod:`wds.cli`).

The wire protocols live beside it: :mod:`pxe` (ProxyDHCP and TFTP) and :mod:`multicast` (the image
transfer protocol). See docs/ARCHITECTURE.md for how a boot and a deployment flow through them.
"""

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    """``wds.__version__``, read from the installed package's metadata on first use (importing
    importlib.metadata costs every ``wds`` process about 10 ms it mostly does not need)."""
    if name != "__version__":
        raise AttributeError(f"module 'wds' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("wds")
    except PackageNotFoundError:  # running from a source tree that was not installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
