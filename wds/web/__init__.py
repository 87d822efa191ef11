"""The HTTP side of ``wds serve``: content and boot endpoints, the admin API, metrics.

This package owns two aiohttp applications run by one :class:`WebService`:

* the **content app** on ``[http] address:port`` -- read-only endpoints a booting or deploying
  machine uses: the session manifests and images (the same paths ``wds send`` serves, so
  ``wds receive`` works unchanged), the manifest public key, the deploy environment's result
  report, and the boot routes of :mod:`wds.web.boot` (HTTP boot files, iPXE scripts);
* the **admin app** on ``[http] admin_address:admin_port`` -- the JSON API under ``/api/v1/``
  (token required when exposed), its OpenAPI document, and ``/metrics`` for Prometheus.

:mod:`wds.web.client` is the small synchronous client the ``wds status|session|device``
commands use. docs/API.md documents every endpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wds.web.service import WebService

__all__ = ["WebService"]


def __getattr__(name: str) -> Any:
    # imported on first use: the CLI's client must not pull in aiohttp and prometheus_client
    if name == "WebService":
        from wds.web.service import WebService

        return WebService
    raise AttributeError(name)
