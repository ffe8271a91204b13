"""Experiments: studies built from the library's commands, which nothing else imports.

- :mod:`~noether_control.experiments.compare`: ``noether-control compare`` (baseline, more-steps
  control and Noether side by side: paired statistics, the inner-step sweep, the energy probe,
  the targets) and the demo's Noether stage;
- :mod:`~noether_control.experiments.demo`: ``noether-control demo``, the main job end to end.
"""
