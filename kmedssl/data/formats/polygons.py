"""Polygon masks: filling a polygon on the pixel grid, and tracing a mask's outline as polygons (NumPy only).

Coordinates: ``(x, y)`` = (column, row) on the pixel **corner** grid: pixel ``(row r, column c)`` is the
square ``[c, c + 1] x [r, r + 1]`` with its centre at ``(c + 0.5, r + 0.5)``; an image of ``height x
width`` pixels spans ``0 <= x <= width``, ``0 <= y <= height``.

Fill rule (``fill_polygon``): **even-odd**, sampled at pixel centres. A pixel is inside when a ray from its
centre towards ``-x`` crosses the polygon's outline an odd number of times, counting an edge whose crossing
is exactly at the centre as crossed (so a centre on a left edge is inside, on a right edge outside) and
counting an edge by the half-open rule ``min(y0, y1) <= y < max(y0, y1)`` (horizontal edges never count).
A self-intersecting outline alternates inside and outside.

Tracing (``trace_polygons``): the outline of a mask along pixel edges, one closed ring per 4-connected
region (two pixels touching only at a corner are two regions), collinear vertices removed. Filling the
rings of a mask with no holes gives the mask back **exactly**; a hole inside a region is not traced (the
region is filled): the rings are the mask with its holes filled.
"""

import numpy as np

# Outline directions in (dx, dy), y down; the outline runs clockwise on screen (inside on the right).
_RIGHT_TURN = {(1, 0): (0, 1), (0, 1): (-1, 0), (-1, 0): (0, -1), (0, -1): (1, 0)}


def fill_polygon(points, height, width):
    """Fill one polygon (even-odd, pixel centres) -> ``(height, width)`` bool.

    Input: points ``[[x, y], ...]`` (closed implicitly; any number of vertices). Vertices may lie outside
    the image: only pixels of the image are returned.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mask_shape = (int(height), int(width))
    if len(points) < 3:
        return np.zeros(mask_shape, dtype=bool)
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    centres = (np.arange(mask_shape[0]) + 0.5)[:, None]  # (H, 1) against (E,) edges
    crossed = ((y0 <= centres) & (centres < y1)) | ((y1 <= centres) & (centres < y0))  # (H, E)
    rows, edges = np.nonzero(crossed)
    t = (centres[rows, 0] - y0[edges]) / (y1[edges] - y0[edges])  # never 0/0: crossed edges are not horizontal
    x = x0[edges] + t * (x1[edges] - x0[edges])
    first = np.clip(np.ceil(x - 0.5), 0, mask_shape[1]).astype(np.int64)  # first centre at or right of x
    toggles = np.zeros((mask_shape[0], mask_shape[1] + 1), dtype=np.int32)
    np.add.at(toggles, (rows, first), 1)
    return (np.cumsum(toggles[:, :-1], axis=1) % 2).astype(bool)


def trace_polygons(mask):
    """The outline of a boolean ``(H, W)`` mask as rings ``[[x, y], ...]`` of integer corner coordinates.

    One ring per 4-connected region, clockwise on screen, starting at its top-left corner; holes are not
    returned (see the module docstring). Rings are ordered by their first vertex (row, then column).
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    outgoing = {}  # vertex (x, y) -> [direction (dx, dy), ...] of the outline edges starting there
    sides = (  # (neighbour offset (dr, dc), start corner offset (dx, dy), direction)
        ((-1, 0), (0, 0), (1, 0)),   # top side, left to right
        ((0, 1), (1, 0), (0, 1)),    # right side, downwards
        ((1, 0), (1, 1), (-1, 0)),   # bottom side, right to left
        ((0, -1), (0, 1), (0, -1)),  # left side, upwards
    )
    height, width = mask.shape
    for (dr, dc), (ox, oy), direction in sides:
        neighbour = padded[1 + dr:1 + dr + height, 1 + dc:1 + dc + width]
        for r, c in zip(*np.nonzero(inside & ~neighbour)):
            outgoing.setdefault((int(c) + ox, int(r) + oy), []).append(direction)
    rings = []
    while outgoing:
        start = min(outgoing, key=lambda v: (v[1], v[0]))
        ring = _follow(start, outgoing)
        if _area2(ring) > 0:  # clockwise on screen: an outer outline (a hole runs the other way)
            rings.append(ring)
    return sorted(rings, key=lambda ring: (ring[0][1], ring[0][0]))


def _follow(start, outgoing):
    """Walk the outline from ``start`` until back there, removing the edges used; prefer a right turn,
    then straight on (keeps 4-connected regions apart)."""
    vertex, direction, ring = start, None, []
    while True:
        choices = outgoing[vertex]
        if direction is None:
            step = choices[0]
        else:
            right = _RIGHT_TURN[direction]
            left = (-right[0], -right[1])
            step = next(d for d in (right, direction, left) if d in choices)
        choices.remove(step)
        if not choices:
            del outgoing[vertex]
        if step != direction:  # a corner: keep the vertex (collinear ones are dropped)
            ring.append([vertex[0], vertex[1]])
        direction = step
        vertex = (vertex[0] + step[0], vertex[1] + step[1])
        if vertex == start:  # the top-left corner it started at (always a corner)
            return ring


def _area2(ring):
    """Twice the signed (shoelace) area, positive for a clockwise ring on screen (y down)."""
    points = np.asarray(ring, dtype=np.int64)
    x, y = points[:, 0], points[:, 1]
    return int(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
