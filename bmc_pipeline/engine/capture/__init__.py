"""Continuous capture: the server's change log sealed into segments, replayed to any second.

``changes`` (one change, its record), ``segments`` (the capture store: segments, position,
covered ranges, gaps), ``sources`` (the oplog and change streams, and which one a server has),
``runner`` (the long-running capture), ``coverage`` (incrementals and restores from segments).
"""
