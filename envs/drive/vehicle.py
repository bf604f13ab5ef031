"""The ego car: a kinematic bicycle model written in road coordinates.

With s the arc length along the centre line, d the offset to its left, psi the heading error
(car yaw minus road heading), v the speed, delta the wheel angle and kappa(s) the road
curvature, the rear-axle kinematic bicycle is

    ds/dt   = v cos(psi) / (1 - kappa d)
    dd/dt   = v sin(psi)
    dpsi/dt = v tan(delta) / WHEELBASE - kappa ds/dt
    dv/dt   = MAX_ACCEL throttle - MAX_BRAKE brake - DRAG v

integrated with semi-implicit Euler (speed first). Working in road coordinates means the lane
offset, heading error and progress the reward needs are the state itself: no projection onto
the road each step, and the whole step is a few float operations.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from envs.driving import wrap_angle

CAR_LENGTH = 4.5  # m, ego and NPCs
CAR_WIDTH = 1.8  # m
WHEELBASE = 2.7  # m
MAX_STEER = 0.5  # rad of wheel angle at steer command 1
MAX_ACCEL = 3.0  # m/s^2 at full throttle
MAX_BRAKE = 8.0  # m/s^2 at full brake
DRAG = 0.05  # 1/s, so a coasting car slows down
MAX_SPEED = 30.0  # m/s


class EgoState(NamedTuple):
    s: float  # m along the centre line, in [0, road length)
    d: float  # m to the left of the centre line
    psi: float  # rad, heading error in [-pi, pi)
    v: float  # m/s, >= 0



def bicycle_step(
    state: EgoState, steer: float, throttle: float, brake: float, kappa: float, dt: float, road_length: float
) -> tuple[EgoState, float, float]:
    """One step of the model: (next state, longitudinal acceleration m/s^2, progress m along s)."""
    v = min(max(state.v + (MAX_ACCEL * throttle - MAX_BRAKE * brake - DRAG * state.v) * dt, 0.0), MAX_SPEED)
    accel = (v - state.v) / dt
    s_dot = v * math.cos(state.psi) / (1.0 - kappa * state.d)
    d_dot = v * math.sin(state.psi)
    psi_dot = v * math.tan(steer * MAX_STEER) / WHEELBASE - kappa * s_dot
    progress = s_dot * dt
    next_state = EgoState(
        s=(state.s + progress) % road_length,
        d=state.d + d_dot * dt,
        psi=wrap_angle(state.psi + psi_dot * dt),
        v=v,
    )
    return next_state, accel, progress
