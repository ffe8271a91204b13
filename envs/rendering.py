"""Fast anti-aliased renderer for pendulum scenes, batched over environments.

Every frame shows links as capsules (a rod of width ``rod_width`` with round ends, as Gymnasium's
``Pendulum-v1`` draws it) hanging from a black axle in the image centre, on a white background.
Links are drawn at a fixed *visual* length of one world unit whatever their physical length, so a
frame depends on the angles only.

Anti-aliasing comes from the signed distance ``d`` (in pixels) of each pixel centre to a shape's
outline: the shape covers ``clip(0.5 − d, 0, 1)`` of the pixel, a one-pixel-wide linear ramp,
which is the exact coverage of a straight edge crossing the pixel perpendicular to an axis and a
close approximation otherwise. Shapes are alpha-composited back to front in float32 and rounded
once to ``uint8``.

Three paths produce pixels:

- :func:`draw_links` evaluates the distance fields for a whole batch at once, ``(N, S, S)``
  arrays, at any size; used for ``render()``.
- :class:`PendulumFrameTable` precomputes one link (and the axle) for finely quantised angles
  (the rod tip moves less than 1/8 pixel between neighbouring bins) so that rendering a batch of
  single pendulums is one ``np.take`` into a preallocated buffer. Tables are built lazily per
  image size and style and cached (:func:`pendulum_frame_table`) up to
  :data:`MAX_TABLE_BYTES`.
- :func:`draw_links_on_table` gathers the first link from such a table and draws the further
  links directly on top: the double pendulum's observations.

:func:`draw_scene` picks the fastest of these for observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

Colour = tuple[int, int, int]

TIP_STEP_PIXELS = 1.0 / 8.0
"""Largest distance in pixels the rod tip moves between two neighbouring frame-table bins."""

MAX_TABLE_BYTES = 256 * 2**20
"""Largest frame table built (256 MiB: single pendulum up to 128×128 px); larger sizes are
drawn directly, which is slower but needs no memory beyond the frames."""

_TABLE_BUILD_CHUNK = 256


@dataclass(frozen=True)
class SceneStyle:
    """Geometry and colours of a pendulum scene, in world units (one unit = one link's length).

    ``half_extent`` is the distance from the image centre (the axle) to the image border; links
    are chained from the axle, link ``k`` drawn in ``link_colours[k]``.
    """

    half_extent: float
    num_links: int = 1
    rod_width: float = 0.2
    axle_radius: float = 0.05
    background: Colour = (255, 255, 255)
    link_colours: tuple[Colour, ...] = ((204, 77, 77), (77, 128, 204))
    axle_colour: Colour = (0, 0, 0)

    def pixels_per_unit(self, size: int) -> float:
        """Scale of an image ``size`` pixels wide."""
        return size / (2.0 * self.half_extent)


PENDULUM_STYLE = SceneStyle(half_extent=1.25, num_links=1)
"""The single pendulum: the rod (with its round tip) fills 88 % of the half-width."""
DOUBLE_PENDULUM_STYLE = SceneStyle(half_extent=2.25, num_links=2)
"""The double pendulum: two unit links, the first red, the second blue."""


def _coverage_from_distance(distance: NDArray[np.float32]) -> NDArray[np.float32]:
    """Pixel coverage of a shape whose outline is ``distance`` px away (computed in place)."""
    np.subtract(np.float32(0.5), distance, out=distance)
    return np.clip(distance, 0.0, 1.0, out=distance)


def _composite(canvas: NDArray[np.float32], alpha: NDArray[np.float32], colour: Colour) -> None:
    """Blend ``colour`` with per-pixel ``alpha`` ``(N, S, S)`` over ``canvas`` ``(N, S, S, 3)``."""
    for channel in range(3):
        layer = canvas[..., channel]
        layer += (np.float32(colour[channel]) - layer) * alpha


def _draw_link(
    canvas: NDArray[np.float32],
    start: tuple[NDArray[np.float64], NDArray[np.float64]],
    angle: NDArray[np.float64],
    scale: float,
    radius: float,
    colour: Colour,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Composite one unit-length capsule per frame over ``canvas``; return its end points.

    ``start`` is ``(column, row)`` in pixels, each ``(N,)``; ``angle`` ``(N,)`` is absolute.
    """
    size = canvas.shape[1]
    coordinates = np.arange(size, dtype=np.float32) + np.float32(0.5)
    # Image rows grow downwards, so "up" (θ = 0) is −row and counter-clockwise is −column.
    delta_col = -np.sin(angle) * scale
    delta_row = -np.cos(angle) * scale
    rel_col = coordinates[None, None, :] - start[0].astype(np.float32)[:, None, None]
    rel_row = coordinates[None, :, None] - start[1].astype(np.float32)[:, None, None]
    seg_col = delta_col.astype(np.float32)[:, None, None]
    seg_row = delta_row.astype(np.float32)[:, None, None]
    # Position of the nearest point of the segment, as a fraction of its length.
    along = (rel_col * seg_col + rel_row * seg_row) / np.float32(scale * scale)
    np.clip(along, 0.0, 1.0, out=along)
    distance = np.hypot(rel_col - along * seg_col, rel_row - along * seg_row)
    distance -= np.float32(radius)
    _composite(canvas, _coverage_from_distance(distance), colour)
    return start[0] + delta_col, start[1] + delta_row


def _draw_axle(canvas: NDArray[np.float32], style: SceneStyle, scale: float) -> None:
    size = canvas.shape[1]
    coordinates = np.arange(size, dtype=np.float32) + np.float32(0.5) - np.float32(size / 2.0)
    distance = np.hypot(coordinates[None, :], coordinates[:, None])
    distance -= np.float32(style.axle_radius * scale)
    alpha = np.broadcast_to(_coverage_from_distance(distance), canvas.shape[:3])
    _composite(canvas, alpha, style.axle_colour)


def _to_uint8(canvas: NDArray[np.float32], out: NDArray[np.uint8] | None) -> NDArray[np.uint8]:
    if out is None:
        out = np.empty(canvas.shape, dtype=np.uint8)
    np.add(canvas, np.float32(0.5), out=canvas)
    np.copyto(out, canvas, casting="unsafe")
    return out


def _check_angles(angles: NDArray[np.floating], style: SceneStyle) -> NDArray[np.float64]:
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim != 2 or angles.shape[1] != style.num_links:
        raise ValueError(f"angles: expected shape (N, {style.num_links}), got {angles.shape}")
    return angles


def draw_links(angles: NDArray[np.floating], size: int, style: SceneStyle,
               out: NDArray[np.uint8] | None = None) -> NDArray[np.uint8]:
    """Render ``N`` scenes of chained links with absolute ``angles``, all pixels at once.

    Drawing order, back to front: background, first link, axle, further links (the axle
    belongs to the base link; later links pass over it).

    Args:
        angles: ``(N, L)`` absolute link angles in radians (0 = up, counter-clockwise positive),
            ``L = style.num_links``.
        size: image height and width in pixels.
        style: scene geometry and colours.
        out: optional ``(N, size, size, 3)`` uint8 buffer to write into.

    Returns:
        ``(N, size, size, 3)`` uint8 RGB frames (``out`` when given).
    """
    angles = _check_angles(angles, style)
    scale = style.pixels_per_unit(size)
    radius = style.rod_width / 2.0 * scale
    canvas = np.empty((angles.shape[0], size, size, 3), dtype=np.float32)
    canvas[...] = np.asarray(style.background, dtype=np.float32)
    start = (np.full(angles.shape[0], size / 2.0), np.full(angles.shape[0], size / 2.0))
    for link in range(style.num_links):
        start = _draw_link(canvas, start, angles[:, link], scale, radius, style.link_colours[link])
        if link == 0:
            _draw_axle(canvas, style, scale)
    return _to_uint8(canvas, out)


def draw_links_on_table(
    table: PendulumFrameTable,
    angles: NDArray[np.floating],
    style: SceneStyle,
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Like :func:`draw_links`, but the first link and the axle come from ``table``.

    ``table`` must be built for ``first_link_style(style)`` at the target size; the further
    links are drawn directly on the gathered frames and start at the *exact* tip of the first
    link (the table's pose is at most 1/16 px away from it). This halves the double pendulum's
    drawing work.
    """
    angles = _check_angles(angles, style)
    if table.style != first_link_style(style):
        raise ValueError("table: expected a frame table of first_link_style(style)")
    size = table.size
    scale = style.pixels_per_unit(size)
    radius = style.rod_width / 2.0 * scale
    canvas = table.gather(angles[:, 0]).astype(np.float32)
    start = (
        size / 2.0 - np.sin(angles[:, 0]) * scale,
        size / 2.0 - np.cos(angles[:, 0]) * scale,
    )
    for link in range(1, style.num_links):
        start = _draw_link(canvas, start, angles[:, link], scale, radius, style.link_colours[link])
    return _to_uint8(canvas, out)


def first_link_style(style: SceneStyle) -> SceneStyle:
    """The one-link scene (first link and axle) of a multi-link ``style``."""
    return replace(style, num_links=1)


def frame_table_bins(size: int, style: SceneStyle = PENDULUM_STYLE) -> int:
    """Number of angle bins so that the rod's outermost point moves < 1/8 px between bins.

    The outermost point sits ``(1 + rod_width/2)`` units from the axle; the count is rounded up
    to a multiple of 8 so that the upright, horizontal and hanging poses are exact bins.
    """
    tip_radius_pixels = (1.0 + style.rod_width / 2.0) * style.pixels_per_unit(size)
    minimum = math.ceil(2.0 * math.pi * tip_radius_pixels / TIP_STEP_PIXELS)
    return 8 * math.ceil(minimum / 8)


class PendulumFrameTable:
    """Precomputed anti-aliased frames of the single pendulum over quantised angles.

    Bin ``k`` holds the frame of angle ``2πk/K``; an angle maps to its nearest bin, so the drawn
    rod is at most half a bin (the tip less than 1/16 px) away from the true pose. ``K`` grows
    linearly with the size (1,416 bins, 17 MB, for the single pendulum at 64×64).
    """

    def __init__(self, size: int, style: SceneStyle = PENDULUM_STYLE) -> None:
        if style.num_links != 1:
            raise ValueError(f"style: expected a one-link scene, got {style.num_links} links")
        self.size = size
        self.style = style
        self.num_bins = frame_table_bins(size, style)
        self.bins_per_radian = self.num_bins / (2.0 * math.pi)
        self.frames = np.empty((self.num_bins, size, size, 3), dtype=np.uint8)
        bin_angles = np.arange(self.num_bins, dtype=np.float64) / self.bins_per_radian
        # Chunked so the float32 distance fields stay small whatever the size.
        for start in range(0, self.num_bins, _TABLE_BUILD_CHUNK):
            stop = min(start + _TABLE_BUILD_CHUNK, self.num_bins)
            draw_links(bin_angles[start:stop, None], size, style, out=self.frames[start:stop])
        self.frames.setflags(write=False)

    def bin_indices(self, angles: NDArray[np.floating]) -> NDArray[np.int64]:
        """Nearest bin of each angle, ``(N,)`` int64, not wrapped (gathers wrap modulo ``K``)."""
        return np.rint(np.asarray(angles) * self.bins_per_radian).astype(np.int64)

    def gather(
        self, angles: NDArray[np.floating], out: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """Frames of ``angles`` ``(N,)``: ``(N, size, size, 3)`` uint8, written into ``out``."""
        indices = self.bin_indices(angles)
        if out is None:
            out = np.empty((indices.shape[0], self.size, self.size, 3), dtype=np.uint8)
        # mode="wrap" both reduces the angle modulo 2π and avoids np.take's buffered "raise" path.
        return np.take(self.frames, indices, axis=0, out=out, mode="wrap")


@lru_cache(maxsize=8)
def pendulum_frame_table(size: int, style: SceneStyle = PENDULUM_STYLE) -> PendulumFrameTable:
    """The shared, read-only frame table of ``size`` (built on first use, then cached)."""
    return PendulumFrameTable(size, style)


def frame_table_bytes(size: int, style: SceneStyle = PENDULUM_STYLE) -> int:
    """Memory of the frame table of ``size`` and one-link ``style``, in bytes."""
    return frame_table_bins(size, style) * size * size * 3


def scene_frame_table(size: int, style: SceneStyle) -> PendulumFrameTable | None:
    """The cached table of ``style``'s first link at ``size``, or None beyond the memory budget."""
    base = first_link_style(style)
    if frame_table_bytes(size, base) > MAX_TABLE_BYTES:
        return None
    return pendulum_frame_table(size, base)


def draw_scene(
    angles: NDArray[np.floating],
    size: int,
    style: SceneStyle,
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Observation frames ``(N, size, size, 3)`` uint8 of link ``angles`` ``(N, L)``, fastest path.

    The first link (and axle) comes from the cached frame table when it fits in
    :data:`MAX_TABLE_BYTES` (one gather for the single pendulum, :func:`draw_links_on_table` for
    more links); otherwise everything is drawn directly with :func:`draw_links`.
    """
    table = scene_frame_table(size, style)
    if table is None:
        return draw_links(angles, size, style, out=out)
    if style.num_links == 1:
        return table.gather(_check_angles(angles, style)[:, 0], out=out)
    return draw_links_on_table(table, angles, style, out=out)


class HumanWindow:
    """A pygame window showing frames scaled up to ``window_size`` at ``fps`` frames per second.

    pygame is imported on first use; the window opens on the first :meth:`show`.
    """

    def __init__(self, window_size: int, fps: float, caption: str) -> None:
        self.window_size = window_size
        self.fps = fps
        self.caption = caption
        self._pygame: Any = None
        self._screen: Any = None
        self._clock: Any = None

    def show(self, frame: NDArray[np.uint8]) -> None:
        """Display one ``(H, W, 3)`` uint8 frame (nearest-neighbour scaled to the window)."""
        if self._pygame is None:
            try:
                import pygame
            except ImportError as error:
                raise ImportError(
                    "render_mode='human' needs pygame: pip install 'gymnasium[classic-control]'"
                ) from error
            self._pygame = pygame
            pygame.display.init()
            pygame.display.set_caption(self.caption)
            self._screen = pygame.display.set_mode((self.window_size, self.window_size))
            self._clock = pygame.time.Clock()
        pygame = self._pygame
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
        self._screen.blit(
            pygame.transform.scale(surface, (self.window_size, self.window_size)), (0, 0)
        )
        pygame.event.pump()
        self._clock.tick(self.fps)
        pygame.display.flip()

    def close(self) -> None:
        """Close the window if it was opened."""
        if self._pygame is not None:
            self._pygame.display.quit()
            self._pygame = None
            self._screen = None
            self._clock = None
