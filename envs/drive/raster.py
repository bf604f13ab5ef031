"""Ego-centred bird's-eye raster: uint8 [3, H, W] = (road, lane marks, cars).

Speed comes from doing the expensive part once. The road and its lane marks never move, so
they are drawn once, per road, into a world-aligned map at half the image's pixel size; each
step then only rotates the image's pixel grid into the world and reads the map at those cells
(one gather). Cars are drawn by "splatting": a fixed set of sample points covering a car's
footprint is moved to each car's pose and written into the image (one scatter for all cars).
No per-pixel or per-car Python loop runs in a step.

Image layout: the ego faces up (row 0 is ahead), sits at column W / 2 and at 3/4 of the
height, so the view shows three times as much road ahead as behind. Car pixels are 255 for
NPCs and EGO_VALUE for the ego.
"""

from __future__ import annotations

import cmath
import functools
import math

import numpy as np

from envs.drive.road import Road
from envs.drive.vehicle import CAR_LENGTH, CAR_WIDTH

EGO_VALUE = 128
DASH_LENGTH = 3.0  # m of paint, then as much gap, on the marks between lanes
EGO_ROW_FRACTION = 0.75
_COLOURS = {  # RGB of render(): grass, road, lane marks, NPCs, ego
    "grass": (70, 110, 60),
    "road": (90, 90, 95),
    "mark": (235, 235, 235),
    "npc": (215, 60, 50),
    "ego": (40, 120, 235),
}


@functools.lru_cache(maxsize=8)
def _static_map(
    length: float, n_bends: int, bend_amplitude: float, n_lanes: int, lane_width: float, cell: float, margin: float
) -> tuple[np.ndarray, float, float]:
    """World map (2, rows, cols) uint8 of road and lane marks, and its origin (x0, y0) in metres.

    Built by splatting road-coordinate samples spaced half a cell apart, so no cell on the road
    is missed; lane marks are one image pixel (two cells) wide. Cached: every env on the same
    road shares one read-only map.
    """
    road = Road(length, n_bends, bend_amplitude, n_lanes, lane_width)
    x0, y0 = road.table_x.min() - margin, road.table_y.min() - margin
    cols = int(math.ceil((road.table_x.max() + margin - x0) / cell)) + 1
    rows = int(math.ceil((road.table_y.max() + margin - y0) / cell)) + 1
    world = np.zeros((2, rows, cols), dtype=np.uint8)

    def splat(channel: int, s: np.ndarray, d: np.ndarray) -> None:
        x, y, _ = road.to_world(s, d)
        world[channel, ((y - y0) / cell).astype(np.intp), ((x - x0) / cell).astype(np.intp)] = 255

    s = np.arange(0.0, length, cell / 2)
    across = np.arange(-road.half_width, road.half_width + cell / 4, cell / 2)
    grid_s, grid_d = np.meshgrid(s, across)
    splat(0, grid_s.ravel(), grid_d.ravel())

    paint = np.arange(-cell, cell + cell / 4, cell / 2)  # a mark two cells (one pixel) wide
    for i, centre in enumerate(np.arange(n_lanes + 1) * lane_width - road.half_width):
        along = s if i in (0, n_lanes) else s[s % (2 * DASH_LENGTH) < DASH_LENGTH]  # edges solid, rest dashed
        grid_s, grid_d = np.meshgrid(along, centre + paint)
        splat(1, grid_s.ravel(), grid_d.ravel())
    world.flags.writeable = False
    return world, float(x0), float(y0)


class BirdsEye:
    """Draws the ego-centred raster for one road, image size and resolution.

    Points are complex numbers x + iy, so turning a point by an angle a is a product with
    exp(ia), and moving from the world into the ego frame is (p - ego) * exp(-i yaw).
    """

    def __init__(self, road: Road, image_size: int, metres_per_pixel: float):
        self.size = image_size
        self.metres_per_pixel = metres_per_pixel
        self.ego_row = int(EGO_ROW_FRACTION * image_size)
        self.ego_col = image_size // 2
        # Pixel centres in the ego frame (x forward, y left), in metres, row-major.
        forward = (self.ego_row - np.arange(image_size)) * metres_per_pixel
        left = (self.ego_col - np.arange(image_size)) * metres_per_pixel
        grid = (forward[:, None] + 1j * left[None, :]).ravel()
        self.view_radius = float(np.abs(grid).max())

        self.cell = metres_per_pixel / 2
        margin = self.view_radius + road.half_width + 2 * CAR_LENGTH
        world, x0, y0 = _static_map(
            road.length, road.n_bends, road.bend_amplitude, road.n_lanes, road.lane_width, self.cell, margin
        )
        self.world_origin = complex(x0, y0)
        self.world_cols = world.shape[2]
        self.world_flat = world.reshape(2, -1)
        self.grid_cells = (grid / self.cell).astype(np.complex64)  # pixel centres in map cells

        # Sample points covering a car's footprint (car frame, metres), at most half a pixel apart.
        along = np.linspace(-CAR_LENGTH / 2, CAR_LENGTH / 2, int(np.ceil(2 * CAR_LENGTH / metres_per_pixel)) + 1)
        across = np.linspace(-CAR_WIDTH / 2, CAR_WIDTH / 2, int(np.ceil(2 * CAR_WIDTH / metres_per_pixel)) + 1)
        self.footprint = (along[:, None] + 1j * across[None, :]).ravel()
        # Ego-frame point p lands on pixel (row, col) = (ego_row - x / mpp, ego_col - y / mpp), rounded.
        self.ego_pixel = complex(self.ego_row + 0.5, self.ego_col + 0.5)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def draw(
        self, ego_x: float, ego_y: float, ego_yaw: float, car_x: np.ndarray, car_y: np.ndarray, car_yaw: np.ndarray
    ) -> np.ndarray:
        """The raster around the ego at (ego_x, ego_y, ego_yaw); cars are NPCs then the ego, last."""
        image = np.empty(self.shape, dtype=np.uint8)
        ego, heading = complex(ego_x, ego_y), cmath.exp(1j * ego_yaw)

        # Road and marks: turn the pixel grid into the world and read the static map there.
        cells = self.grid_cells * heading + (ego - self.world_origin) / self.cell
        index = cells.imag.astype(np.intp) * self.world_cols + cells.real.astype(np.intp)
        image[:2] = np.take(self.world_flat, index, axis=1, mode="clip").reshape(2, self.size, self.size)

        # Cars near enough to show: footprint samples at each car's pose, in the ego frame, then in pixels.
        relative = (car_x + 1j * car_y - ego) * heading.conjugate()
        near = np.abs(relative) < self.view_radius + CAR_LENGTH
        turn = np.exp(1j * (car_yaw[near] - ego_yaw))
        pixels = self.ego_pixel - (relative[near, None] + turn[:, None] * self.footprint) / self.metres_per_pixel
        row, col = pixels.real, pixels.imag
        inside = (row >= 0) & (row < self.size) & (col >= 0) & (col < self.size)
        value = np.full(len(turn), 255, dtype=np.uint8)
        value[-1] = EGO_VALUE  # the ego is always near itself, so it stays last
        image[2] = 0
        image[2, row[inside].astype(np.intp), col[inside].astype(np.intp)] = np.broadcast_to(value[:, None], row.shape)[inside]
        return image


def to_rgb(image: np.ndarray, scale: int) -> np.ndarray:
    """An RGB frame (H * scale, W * scale, 3) of a raster, for humans."""
    road, marks, cars = image
    rgb = np.empty(road.shape + (3,), dtype=np.uint8)
    rgb[:] = _COLOURS["grass"]
    rgb[road > 0] = _COLOURS["road"]
    rgb[marks > 0] = _COLOURS["mark"]
    rgb[cars == 255] = _COLOURS["npc"]
    rgb[cars == EGO_VALUE] = _COLOURS["ego"]
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1)
