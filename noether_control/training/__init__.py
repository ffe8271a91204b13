"""Training of the world model: ``noether-control train`` (single process or ``torchrun``)."""
