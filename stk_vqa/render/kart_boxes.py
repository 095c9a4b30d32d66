"""Kart boxes from geometry: a model of SuperTuxKart's chase camera + a depth test against the rendered depth map.

pystk2 0.7.4 gives neither instance labels nor camera matrices, so each view's camera is rebuilt from the state
of the kart it follows, step by step, the way STK's normal (smoothed) chase camera moves:

* the camera sits at ``kart_transform(offset)`` and aims at ``kart_transform((0, 0.5, 0))``, where the offset
  (kart frame: x right, y up, z forward) eases towards ``(0, 0.85 + r / 2.5, min(-1.25 - 2.5 r, -2))`` with
  ``r = speed / max_speed`` by ``5 dt`` per update, and the kart rotation it uses eases towards the kart's by
  ``8 dt`` (the position uses the rotation from before the update: one update of lag);
* its up vector is a running blend (4 % per update) of the kart's up vector;
* projection: vertical field of view 80 degrees, aspect = width / height, Irrlicht's left-handed convention
  (x right, y up, z forward), depth-buffer value ``d = f/(f-n) (1 - n/z)``.

pystk2 reports the kart rotation as a quaternion ``(x, y, z, w)`` whose matrix times ``diag(1, -1, -1)`` is the
kart's basis (columns right, up, forward); the kart location is the centre of its box of size ``kart.size``.

Each kart's 3D box is projected into the view; a pixel counts as that kart when its ray crosses the box and the
depth map puts the visible surface inside that crossing, so hidden parts are excluded; the box written is the
tight box of those pixels. A view whose own kart (always in front of its camera) fails that test, or where a
kart crosses the near plane, gets no boxes rather than doubtful ones (``box_check`` says why).
Effective near plane 0.5 and field of view 80 were measured on rendered frames (docs/notes/issue-7.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BOX_METHOD = "chase-camera-model+depth-test"
FOVY_DEGREES = 80.0
DEPTH_NEAR = 0.5
DEPTH_FAR = 1000.0
LABEL_SIZE = (600, 400)
# The followed kart, seen from a matching camera, fills 0.51-0.78 of the pixels whose ray crosses its box
# (96 views measured); after a rescue, when STK's camera leaves the model, it fell to 0.23.
OWN_KART_MIN_FRACTION = 0.4
_KART_BASIS_FIX = np.diag([1.0, -1.0, -1.0])


def quaternion_matrix(q) -> np.ndarray:
    x, y, z, w = (float(v) for v in q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_quaternion(m: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (x, y, z, w)."""
    trace = np.trace(m)
    if trace > 0:
        s = 2 * np.sqrt(trace + 1)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2 * np.sqrt(1 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2 * np.sqrt(1 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2 * np.sqrt(1 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q, dtype=float)
    return q / np.linalg.norm(q)


def slerp(q1: np.ndarray, q2: np.ndarray, t: float) -> np.ndarray:
    dot = float(np.dot(q1, q2))
    if dot < 0:
        q2, dot = -q2, -dot
    if dot > 0.9995:
        q = q1 + t * (q2 - q1)
        return q / np.linalg.norm(q)
    angle = np.arccos(dot)
    return (np.sin((1 - t) * angle) * q1 + np.sin(t * angle) * q2) / np.sin(angle)


def kart_basis(rotation) -> np.ndarray:
    """3x3 matrix whose columns are the kart's right, up and forward axes (world coordinates)."""
    return quaternion_matrix(rotation) @ _KART_BASIS_FIX


@dataclass
class ChaseCamera:
    """STK's smoothed normal camera following one kart; call :meth:`update` once per simulation step."""

    max_speed: float = 23.0
    dt: float = 0.1
    rotation: np.ndarray | None = None
    offset: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, -15.0]))
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    position: np.ndarray | None = None
    target: np.ndarray | None = None

    def update(self, location, rotation, speed: float) -> None:
        location = np.asarray(location, dtype=float)
        basis = kart_basis(rotation)
        kart_q = matrix_quaternion(basis)
        if self.rotation is None:
            self.rotation = kart_q
        ratio = max(float(speed) / self.max_speed, -0.12)
        wanted = np.array([0.0, 0.85 + ratio / 2.5, min(-1.25 - 2.5 * ratio, -2.0)])
        used = quaternion_matrix(self.rotation)
        self.rotation = slerp(self.rotation, kart_q, min(max(self.dt * 8, 0.0), 1.0))
        self.position = location + used @ self.offset
        self.target = location + used @ np.array([0.0, 0.5, 0.0])
        self.offset = self.offset + (wanted - self.offset) * min(max(self.dt * 5, 0.0), 1.0)
        self.up = 0.04 * basis[:, 1] + 0.96 * self.up

    def view_matrix(self) -> np.ndarray:
        """4x4 world -> camera matrix (left-handed look-at: x right, y up, z forward)."""
        forward = self.target - self.position
        forward /= np.linalg.norm(forward)
        right = np.cross(self.up, forward)
        right /= np.linalg.norm(right)
        view = np.eye(4)
        view[0, :3], view[1, :3], view[2, :3] = right, np.cross(forward, right), forward
        view[:3, 3] = -view[:3, :3] @ self.position
        return view


def projection_matrix(width: int, height: int, fovy_degrees: float = FOVY_DEGREES,
                      near: float = DEPTH_NEAR, far: float = DEPTH_FAR) -> np.ndarray:
    """4x4 camera -> clip matrix (left-handed, depth to [0, 1] after the divide)."""
    f = 1.0 / np.tan(np.radians(fovy_degrees) / 2)
    proj = np.zeros((4, 4))
    proj[0, 0], proj[1, 1] = f * height / width, f
    proj[2, 2], proj[2, 3] = far / (far - near), -far * near / (far - near)
    proj[3, 2] = 1.0
    return proj


def depth_to_distance(depth: np.ndarray, near: float = DEPTH_NEAR, far: float = DEPTH_FAR) -> np.ndarray:
    """Depth-buffer values in [0, 1] -> camera-space z (1.0, the sky, -> inf)."""
    depth = np.asarray(depth, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(depth >= 1.0, np.inf, near / (1.0 - depth * (far - near) / far))


def box_corners(location, rotation, size) -> np.ndarray:
    basis = kart_basis(rotation)
    half = np.asarray(size, dtype=float) / 2
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    return np.asarray(location, dtype=float) + (signs * half) @ basis.T


@dataclass
class KartBox:
    kart: int
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in render pixels (x2, y2 exclusive)
    visible_pixels: int
    projected_pixels: int


class KartAtNearPlane(Exception):
    """A kart's box crosses the camera's near plane: its visible part cannot be told from the road beside it."""


_BOX_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]


def _in_front_of_near_plane(camera: np.ndarray, near: float = DEPTH_NEAR) -> np.ndarray:
    """The box's corners (camera space) in front of the near plane plus its edges' crossings of that plane."""
    z = camera[:, 2]
    points = [camera[i] for i in range(8) if z[i] >= near]
    for a, b in _BOX_EDGES:
        if (z[a] < near) != (z[b] < near):
            points.append(camera[a] + (near - z[a]) / (z[b] - z[a]) * (camera[b] - camera[a]))
    return np.array(points).reshape(-1, 3)


def _kart_pixels(distance, view, proj, location, rotation, size, x1, y1, x2, y2, grow: float = 1.1,
                 tolerance: float = 0.15, ground_clearance: float = 0.1):
    """Per pixel of the region: does its ray cross the kart's box (``hits``), and does the depth map put the
    visible surface inside that crossing (``mask``)? Rays are parametrised by camera-space z."""
    height, width = distance.shape
    xs = (2 * (np.arange(x1, x2) + 0.5) / width - 1) / proj[0, 0]
    ys = (1 - 2 * (np.arange(y1, y2) + 0.5) / height) / proj[1, 1]
    rays = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], np.ones((1, 1))), axis=-1)  # camera space
    basis = kart_basis(rotation)
    to_kart = basis.T @ view[:3, :3].T  # camera -> kart-local directions
    camera_position = -view[:3, :3].T @ view[:3, 3]
    origin = basis.T @ (camera_position - np.asarray(location, dtype=float))
    directions = rays @ to_kart.T
    half = np.asarray(size, dtype=float) / 2 * grow + 0.05
    low = -half.copy()
    low[1] = -float(size[1]) / 2 + ground_clearance  # the road under the kart is not the kart
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (low - origin) / directions
        t2 = (half - origin) / directions
    t_enter = np.nanmax(np.minimum(t1, t2), axis=-1)
    t_exit = np.nanmin(np.maximum(t1, t2), axis=-1)
    hits = (t_enter <= t_exit) & (t_exit > DEPTH_NEAR)
    seen = distance[y1:y2, x1:x2]
    slack = tolerance + 0.02 * np.maximum(t_enter, 0)
    mask = hits & (seen >= t_enter - slack) & (seen <= t_exit + slack)
    return mask, hits


def view_kart_boxes(distance: np.ndarray, view: np.ndarray, proj: np.ndarray, karts: list[tuple],
                    min_visible_fraction: float = 0.15) -> list[KartBox]:
    """Boxes of the karts visible in one view.

    ``distance``: HxW camera-space z from :func:`depth_to_distance`; ``karts``: ``(location, rotation, size)`` per
    kart id. A kart is kept when the pixels of its projected box whose z lies in its depth range (plus a
    tolerance) number at least ``min_visible_fraction`` of the projected box (less: hidden or out of view).
    """
    height, width = distance.shape
    boxes = []
    for kart_id, (location, rotation, size) in enumerate(karts):
        corners = box_corners(location, rotation, size)
        camera = corners @ view[:3, :3].T + view[:3, 3]
        points = _in_front_of_near_plane(camera)
        if len(points) == 0:
            continue  # wholly behind the camera
        zc = points[:, 2]
        px = (proj[0, 0] * points[:, 0] / zc + 1) / 2 * width
        py = (1 - proj[1, 1] * points[:, 1] / zc) / 2 * height
        x1, x2 = int(np.floor(max(px.min(), 0))), int(np.ceil(min(px.max(), width)))
        y1, y2 = int(np.floor(max(py.min(), 0))), int(np.ceil(min(py.max(), height)))
        if x2 <= x1 or y2 <= y1:
            continue
        if camera[:, 2].min() < DEPTH_NEAR:
            raise KartAtNearPlane(kart_id)
        mask, hits = _kart_pixels(distance, view, proj, location, rotation, size, x1, y1, x2, y2)
        visible = int(mask.sum())
        area = int(hits.sum())
        if visible == 0 or visible < min_visible_fraction * area:
            continue
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        boxes.append(KartBox(kart_id, (x1 + int(cols[0]), y1 + int(rows[0]), x1 + int(cols[-1]) + 1,
                                       y1 + int(rows[-1]) + 1), visible, area))
    return boxes


def to_label_space(box: tuple[int, int, int, int], width: int, height: int) -> list[float]:
    """Render-pixel box -> the course's 600x400 label space."""
    sx, sy = LABEL_SIZE[0] / width, LABEL_SIZE[1] / height
    x1, y1, x2, y2 = box
    return [round(x1 * sx, 2), round(y1 * sy, 2), round(x2 * sx, 2), round(y2 * sy, 2)]


def frame_detections(depths: list[np.ndarray], cameras: list[ChaseCamera], karts: list[tuple]) -> dict:
    """Detections (course format, 600x400 space) of every view of one frame, plus what was checked.

    ``depths[v]``: view ``v``'s depth map; ``cameras[v]``: the model of the camera following kart ``v``;
    ``karts``: ``(location, rotation, size)`` per kart id. A view's boxes are written only when its own kart
    passes the depth test (the camera model matches the image) and no kart crosses its near plane;
    otherwise the view gets no boxes and ``box_check`` says why.
    """
    detections, checks, views, projections = [], [], [], []
    for index, (depth, camera) in enumerate(zip(depths, cameras)):
        height, width = depth.shape
        view, proj = camera.view_matrix(), projection_matrix(width, height)
        views.append(np.round(view, 5).tolist())
        projections.append(np.round(proj, 5).tolist())
        try:
            boxes = view_kart_boxes(depth_to_distance(depth), view, proj, karts)
        except KartAtNearPlane as error:
            detections.append([])
            checks.append(f"no boxes: kart {error.args[0]} crosses the near plane")
            continue
        own = [box for box in boxes if box.kart == index]
        if not own or own[0].visible_pixels < OWN_KART_MIN_FRACTION * own[0].projected_pixels:
            detections.append([])
            checks.append("no boxes: own kart does not match the depth map (camera model off)")
            continue
        detections.append([[1, box.kart, *to_label_space(box.box, width, height)] for box in boxes])
        checks.append("ok")
    return {"detections": detections, "box_check": checks, "camera_view": views, "camera_projection": projections}
