"""The multicast sessions of ``wds serve``: preparing images, running senders, progress.

* :mod:`wds.sessions.manager` -- :class:`SessionManager` (implements
  :class:`wds.context.SessionControl`): config and runtime sessions, auto and scheduled modes,
  start/stop, reload, the stop grace.
* :mod:`wds.sessions.prepare` -- image lookup and export, manifest hashing (cached), signing with
  the persistent key, the sending address.
* :mod:`wds.sessions.pool` -- group and port allocation from the configured pools.
* :mod:`wds.sessions.tracking` -- per-receiver progress as the sender sees it.
"""

from wds.sessions.manager import SessionManager

__all__ = ["SessionManager"]
