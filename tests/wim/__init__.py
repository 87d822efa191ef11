"""Tests of the pure-Python WIM reader and `wds image info|verify|dir`."""
