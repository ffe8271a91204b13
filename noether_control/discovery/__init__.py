"""Discovering conservation laws, with physical units, in measured trajectories.

See docs/discovery.md: units and typed formulas (`units`, `expressions`), batched fitting
(`fitting`), data generators and file loader (`data`), usefulness scoring by tailoring (`scoring`)
and the `noether-control discover` command (`discover`).
"""
