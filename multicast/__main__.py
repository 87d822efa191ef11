"""``python -m multicast``: see :mod:`multicast.tool`."""

import sys

from multicast.tool import main

sys.exit(main())
