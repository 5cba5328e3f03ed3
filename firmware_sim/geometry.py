"""Plane geometry for the floor plan: points in metres, polygons, wall crossings.

Pure and small on purpose: the simulator asks three questions of a floor plan (which zone is
this point in, which walls does this line cross, where along a straight walk does it cross a
zone's edge) and each is answered here exactly, without sampling.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

__all__ = [
    "Point",
    "Polygon",
    "crossings",
    "inside",
    "polygon_area",
    "polygons_overlap",
    "random_point_in",
    "segments_cross",
]

Point = tuple[float, float]
Polygon = tuple[Point, ...]

_EPS = 1e-12


def inside(p: Point, polygon: Polygon) -> bool:
    """Even-odd rule (points exactly on an edge may go either way, which a walk never notices)."""
    x, y = p
    hit = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            hit = not hit
        j = i
    return hit


def polygon_area(polygon: Polygon) -> float:
    """Signed shoelace area (positive when counter-clockwise)."""
    total = 0.0
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        total += x0 * y1 - x1 * y0
    return total / 2.0


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def segments_cross(a0: Point, a1: Point, b0: Point, b1: Point) -> bool:
    """Whether two segments properly cross (touching at an end point does not count)."""
    d1 = _cross(b0, b1, a0)
    d2 = _cross(b0, b1, a1)
    d3 = _cross(a0, a1, b0)
    d4 = _cross(a0, a1, b1)
    return ((d1 > _EPS and d2 < -_EPS) or (d1 < -_EPS and d2 > _EPS)) and (
        (d3 > _EPS and d4 < -_EPS) or (d3 < -_EPS and d4 > _EPS)
    )


def crossings(a: Point, b: Point, polygon: Polygon) -> list[float]:
    """Fractions in (0, 1) along the segment a→b where it crosses the polygon's edges."""
    out: list[float] = []
    dx, dy = b[0] - a[0], b[1] - a[1]
    for p, q in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        ex, ey = q[0] - p[0], q[1] - p[1]
        denom = dx * ey - dy * ex
        if abs(denom) < _EPS:
            continue  # parallel: a walk along an edge crosses nothing
        t = ((p[0] - a[0]) * ey - (p[1] - a[1]) * ex) / denom
        u = ((p[0] - a[0]) * dy - (p[1] - a[1]) * dx) / denom
        if 0.0 < t < 1.0 and 0.0 <= u <= 1.0:
            out.append(t)
    return out


def polygons_overlap(p: Polygon, q: Polygon) -> bool:
    """Whether two simple polygons share any area (shared edges and corners do not count)."""
    for a0, a1 in zip(p, p[1:] + p[:1], strict=True):
        for b0, b1 in zip(q, q[1:] + q[:1], strict=True):
            if segments_cross(a0, a1, b0, b1):
                return True
    # No edges cross properly. Then any shared area has a corner of one polygon on or inside
    # the other: look just beside every corner (which also catches edges that lie along each
    # other), and at a point inside each (one holding the other whole).
    for corner in (*p, *q):
        for dx, dy in _BESIDE:
            probe = (corner[0] + dx, corner[1] + dy)
            if inside(probe, p) and inside(probe, q):
                return True
    return inside(_centroid_inside(p), q) or inside(_centroid_inside(q), p)


_NUDGE = 1e-6
_BESIDE = ((_NUDGE, _NUDGE), (_NUDGE, -_NUDGE), (-_NUDGE, _NUDGE), (-_NUDGE, -_NUDGE))


def _centroid_inside(polygon: Polygon) -> Point:
    """A point strictly inside a simple polygon (the centroid when it is inside, else the
    middle of a horizontal chord through it)."""
    cx = sum(x for x, _ in polygon) / len(polygon)
    cy = sum(y for _, y in polygon) / len(polygon)
    if inside((cx, cy), polygon):
        return (cx, cy)
    xs = sorted(
        x0 + (cy - y0) * (x1 - x0) / (y1 - y0)
        for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1], strict=True)
        if (y0 > cy) != (y1 > cy)
    )
    return ((xs[0] + xs[1]) / 2.0, cy) if len(xs) >= 2 else (cx, cy)


def random_point_in(
    polygon: Polygon, rng: random.Random, *, margin: float = 0.0, tries: int = 1000
) -> Point:
    """A uniform random point inside the polygon, at least ``margin`` from its edges when it
    can find one (rejection sampling in the bounding box)."""
    xs = [x for x, _ in polygon]
    ys = [y for _, y in polygon]
    for _ in range(tries):
        p = (rng.uniform(min(xs), max(xs)), rng.uniform(min(ys), max(ys)))
        if inside(p, polygon) and (margin <= 0.0 or _edge_distance(p, polygon) >= margin):
            return p
    return _centroid_inside(polygon)


def _edge_distance(p: Point, polygon: Sequence[Point]) -> float:
    best = math.inf
    for a, b in zip(polygon, [*polygon[1:], polygon[0]], strict=True):
        ax, ay = a
        bx, by = b
        ex, ey = bx - ax, by - ay
        length2 = ex * ex + ey * ey
        f = (
            0.0
            if length2 == 0
            else max(0.0, min(1.0, ((p[0] - ax) * ex + (p[1] - ay) * ey) / length2))
        )
        best = min(best, math.dist(p, (ax + f * ex, ay + f * ey)))
    return best
