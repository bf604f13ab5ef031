"""A closed multi-lane road with bends, and its road (Frenet) coordinates.

The centre line is defined by its heading as a function of arc length s on a loop of length L:

    theta(s) = w * s + b * sin(k * w * s),     w = 2 pi / L,  k >= 2 bends,  b = bend amplitude
    kappa(s) = dtheta/ds = w * (1 + b * k * cos(k * w * s))

and (x, y)(s) = integral of (cos theta, sin theta) ds. The loop closes exactly for every k >= 2:
expanding exp(i b sin(k x)) = sum_n J_n(b) exp(i n k x), the integral of exp(i theta) over a
period keeps only terms with 1 + n k = 0, and there are none. So the road can be as long as the
episode needs, with no ends to handle, and its bends are a two-number setting.

Cars live in road coordinates (s along the centre line, d to the left of it); world
coordinates are only needed to draw them. Lane i of n has its centre at
d = (i - (n - 1) / 2) * lane_width.
"""

from __future__ import annotations

import math

import numpy as np

TABLE_STEP = 0.25  # m between precomputed centre-line samples


def max_curvature(length: float, n_bends: int, bend_amplitude: float) -> float:
    """Largest |kappa| on the loop, w (1 + b k), reached at the apex of each bend."""
    return 2 * math.pi / length * (1 + bend_amplitude * n_bends)


class Road:
    """Centre-line geometry of the loop, precomputed once and then looked up."""

    def __init__(self, length: float, n_bends: int, bend_amplitude: float, n_lanes: int, lane_width: float):
        self.length = length
        self.n_bends = n_bends
        self.bend_amplitude = bend_amplitude
        self.n_lanes = n_lanes
        self.lane_width = lane_width
        self.half_width = n_lanes * lane_width / 2
        self.omega = 2 * math.pi / length
        self.lane_centres = (np.arange(n_lanes) - (n_lanes - 1) / 2) * lane_width

        # Trapezoid rule on a periodic integrand is spectrally accurate: the loop closes to ~1e-9 m.
        n = int(round(length / TABLE_STEP))
        self.table_s = np.linspace(0.0, length, n + 1)
        theta = self.heading(self.table_s)
        step = self.table_s[1] - self.table_s[0]
        self.table_x = np.concatenate([[0.0], np.cumsum((np.cos(theta[1:]) + np.cos(theta[:-1])) * step / 2)])
        self.table_y = np.concatenate([[0.0], np.cumsum((np.sin(theta[1:]) + np.sin(theta[:-1])) * step / 2)])

    def heading(self, s: np.ndarray) -> np.ndarray:
        """theta(s), the direction of the road at arc length s (rad, unwrapped)."""
        return self.omega * s + self.bend_amplitude * np.sin(self.n_bends * self.omega * s)

    def curvature(self, s: float) -> float:
        """kappa(s) for one s, in plain floats (the ego's per-step physics)."""
        return self.omega * (1 + self.bend_amplitude * self.n_bends * math.cos(self.n_bends * self.omega * s))

    def lane_index(self, d: float) -> int:
        """Index of the lane whose centre is nearest to lateral position d."""
        index = math.floor(d / self.lane_width + self.n_lanes / 2)
        return min(max(index, 0), self.n_lanes - 1)

    def to_world(self, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (x, y, heading) of points at road coordinates (s, d), d to the left."""
        theta = self.heading(s)
        on_loop = s % self.length  # np.interp(period=...) would re-sort the table on every call
        x = np.interp(on_loop, self.table_s, self.table_x) - d * np.sin(theta)
        y = np.interp(on_loop, self.table_s, self.table_y) + d * np.cos(theta)
        return x, y, theta

    def signed_gap(self, s_to: np.ndarray, s_from: float | np.ndarray) -> np.ndarray:
        """Arc length from s_from forward to s_to, wrapped into [-L/2, L/2)."""
        return (np.asarray(s_to) - s_from + self.length / 2) % self.length - self.length / 2
