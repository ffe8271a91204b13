"""Test-wide settings: one torch thread and headless pygame.

On shared 2-core machines two torch threads were seen to run 50x slower than one.
"""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import torch

torch.set_num_threads(1)
