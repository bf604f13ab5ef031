"""NPC traffic: cars that keep their lane and follow the car ahead with the intelligent driver model.

IDM (Treiber, Hennecke, Helbing 2000), for a car at speed v wanting v0, a gap g to its leader
and closing speed dv = v - v_leader:

    s*(v, dv) = s0 + max(0, v T + v dv / (2 sqrt(a b)))
    dv/dt     = a (1 - (v / v0)^4 - (s* / g)^2),   floored at -MAX_BRAKE

All NPCs are arrays and one step is a handful of numpy operations. The ego is a leader for
every lane it overlaps, so NPCs brake for it, and hit it only if it cuts in too close.
"""

from __future__ import annotations

import math

import numpy as np

from envs.drive.vehicle import CAR_LENGTH, CAR_WIDTH, MAX_BRAKE

IDM_ACCEL = 1.5  # a, m/s^2
IDM_COMFORT_DECEL = 2.0  # b, m/s^2
IDM_HEADWAY = 1.5  # T, s
IDM_MIN_GAP = 2.0  # s0, m
IDM_EXPONENT = 4.0  # delta
SPAWN_SPACING = 25.0  # m between spawn slots along a lane
SPAWN_JITTER = 5.0  # m, random shift of each NPC within its slot
EGO_CLEARANCE = 25.0  # m around the ego's start kept free of NPCs in every lane


def idm_acceleration(v: np.ndarray, v0: np.ndarray, gap: np.ndarray, closing_speed: np.ndarray) -> np.ndarray:
    """IDM acceleration (m/s^2) of each car; gap inf means a free road."""
    desired_gap = IDM_MIN_GAP + np.maximum(
        0.0, v * IDM_HEADWAY + v * closing_speed / (2 * math.sqrt(IDM_ACCEL * IDM_COMFORT_DECEL))
    )
    accel = IDM_ACCEL * (1 - (v / v0) ** IDM_EXPONENT - (desired_gap / np.maximum(gap, 0.1)) ** 2)
    return np.asarray(np.maximum(accel, -MAX_BRAKE))


def ego_lanes(ego_d: float, lane_centres: np.ndarray, lane_width: float) -> np.ndarray:
    """Which lanes the ego's footprint overlaps (bool per lane)."""
    return np.abs(lane_centres - ego_d) < (lane_width + CAR_WIDTH) / 2


def npc_leaders(
    ahead: np.ndarray, same_lane: np.ndarray, in_ego_lane: np.ndarray, road_length: float
) -> tuple[np.ndarray, np.ndarray]:
    """Bumper-to-bumper gap of each NPC to its leader, and the leader's index (n = the ego).

    `ahead` (n, n + 1) holds s_car - s_npc for every NPC and car, the ego last (wrapped here
    onto the loop, so it becomes the arc length forward from the NPC to that car);
    `same_lane` (n, n) is False on its diagonal so no car leads itself; `in_ego_lane` (n,) says
    whether the ego overlaps that NPC's lane.
    """
    candidates = np.where(np.column_stack([same_lane, in_ego_lane]), ahead % road_length, np.inf)
    leader = candidates.argmin(axis=1)
    gap = candidates[np.arange(len(leader)), leader] - CAR_LENGTH
    return gap, leader


def npc_capacity(road_length: float, n_lanes: int) -> int:
    """Most NPCs `spawn_npcs` can place: spawn slots left after the ego's clearance."""
    slots_per_lane = int(road_length // SPAWN_SPACING)
    blocked = 2 * math.ceil(EGO_CLEARANCE / SPAWN_SPACING) + 1
    return n_lanes * max(slots_per_lane - blocked, 0)


def spawn_npcs(
    rng: np.random.Generator, n: int, road_length: float, n_lanes: int, ego_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Arc lengths and lane indices of n NPCs on distinct slots, none near the ego's start."""
    slots_per_lane = int(road_length // SPAWN_SPACING)
    slot_s = np.arange(slots_per_lane) * SPAWN_SPACING
    near_ego = np.abs((slot_s - ego_s + road_length / 2) % road_length - road_length / 2) <= EGO_CLEARANCE
    free = np.flatnonzero(np.tile(~near_ego, n_lanes))
    chosen = rng.choice(free, size=n, replace=False)
    jitter = rng.uniform(-SPAWN_JITTER, SPAWN_JITTER, size=n)
    s = (slot_s[chosen % slots_per_lane] + jitter) % road_length
    return s, chosen // slots_per_lane
