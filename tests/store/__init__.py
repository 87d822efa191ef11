"""Tests of the image store (wds.store) and its commands (wds image add/list/...)."""
