"""Pixel pendulum environments."""
