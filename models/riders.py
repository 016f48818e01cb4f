"""先锋骑士 (seed 004): meal delivery routes, welfare alerts and the riders' points.

- After each meal's cut-off its delivery bookings become ``RouteStop`` rows grouped into
  ``Route`` rows by building (neighbouring buildings of one grid share a route while it is short),
  each with a target departure time and its stops in walking order (building, unit, floor, room).
- A pioneer rider (Role.RIDER) claims an open route (first claim wins, a conditional update);
  a route still unclaimed 30 minutes before departure alerts the canteen staff.
- Each stop is marked delivered (optionally with a photo) or not home. Not home for an elder who
  lives alone raises a ``WelfareAlert`` to the grid worker and the family proxy, urgent, that
  stays open until someone records that the elder is safe.
- A completed route credits the rider love-bank points (per route or per stop, per community).
- The meal's end settles what is left: a claimed route is done (its pending stops unmarked), an
  open one missed.

The functions live in models/rider_core.py and models/rider_figures.py.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class RouteState:
    OPEN = "open"  # waiting for a rider
    CLAIMED = "claimed"  # a rider has it
    DONE = "done"  # every stop marked
    CANCELLED = "cancelled"  # every booking on it was cancelled
    MISSED = "missed"  # the meal ended with nobody having claimed it


ROUTE_STATE_LABELS = {RouteState.OPEN: "待认领", RouteState.CLAIMED: "配送中", RouteState.DONE: "已完成",
                      RouteState.CANCELLED: "已取消", RouteState.MISSED: "未送出"}


class StopState:
    PENDING = "pending"
    DELIVERED = "delivered"
    NOT_HOME = "not_home"
    CANCELLED = "cancelled"  # the booking was cancelled after the route was built
    UNMARKED = "unmarked"  # still pending when the meal ended


STOP_STATE_LABELS = {StopState.PENDING: "待送达", StopState.DELIVERED: "已送达", StopState.NOT_HOME: "不在家",
                     StopState.CANCELLED: "已取消", StopState.UNMARKED: "未标记"}


class PointsBy:
    ROUTE = "route"
    STOP = "stop"


class RiderSettings(Model):
    """A community pioneer rider settings, which its staff edit."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    community: fields.OneToOneRelation = fields.OneToOneField(
        "linli.Community", related_name=False, on_delete=fields.CASCADE)
    points_by = fields.CharField(max_length=8, default=PointsBy.ROUTE)
    points = fields.IntField(default=10)  # per route, or per delivered stop
    max_stops = fields.IntField(default=8)  # neighbouring buildings share a route up to this many stops
    depart_minutes = fields.IntField(default=0)  # target departure: this many minutes after serving starts
    updated_at = fields.DatetimeField()
    updated_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)

    community_id: int

    class Meta:
        table = "rider_settings"


class Route(Model):
    """One delivery round of one meal, for one rider."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    menu: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Menu", related_name=False, on_delete=fields.RESTRICT, db_index=True)
    community: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Community", related_name=False, on_delete=fields.RESTRICT)
    name = fields.CharField(max_length=64)  # the buildings it serves, e.g. 4号楼、5号楼
    position = fields.IntField(default=0)  # its order among the meal routes
    depart_at = fields.DatetimeField()
    state = fields.CharField(max_length=12, default=RouteState.OPEN)
    rider: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    claimed_at = fields.DatetimeField(null=True)
    completed_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()
    version = fields.IntField(default=0)

    menu_id: int
    community_id: int
    rider_id: int | None

    class Meta:
        table = "rider_route"
        unique_together = (("menu", "name"),)
        indexes = (("state", "depart_at"),)


class RouteStop(Model):
    """One delivery booking on a route."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    route: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Route", related_name=False, on_delete=fields.CASCADE, db_index=True)
    booking: fields.OneToOneRelation = fields.OneToOneField(
        "linli.Booking", related_name=False, on_delete=fields.RESTRICT)
    resident: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    position = fields.IntField()  # walking order on the route, from 1
    building = fields.CharField(max_length=64)
    unit = fields.CharField(max_length=16, default="")
    floor = fields.IntField(default=0)
    room = fields.CharField(max_length=16, default="")
    diet = fields.CharField(max_length=120, default="")  # what the rider must respect, as text
    state = fields.CharField(max_length=12, default=StopState.PENDING)
    marked_at = fields.DatetimeField(null=True)
    marked_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    note = fields.CharField(max_length=100, default="")
    photo: dict = fields.JSONField(null=True)  # models.media photo dict (media_id, stored...)

    route_id: int
    booking_id: int
    resident_id: int

    class Meta:
        table = "rider_stop"
        ordering = ["position", "id"]


class WelfareAlert(Model):
    """An elder living alone was not home when the meal came: open until someone records them safe."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    stop: fields.OneToOneRelation = fields.OneToOneField(
        "linli.RouteStop", related_name=False, on_delete=fields.CASCADE)
    resident: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, on_delete=fields.RESTRICT)
    community: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "linli.Community", related_name=False, on_delete=fields.RESTRICT)
    grid: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Grid", related_name=False, null=True, on_delete=fields.SET_NULL)
    raised_at = fields.DatetimeField()
    rider: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    note = fields.CharField(max_length=100, default="")
    closed_at = fields.DatetimeField(null=True)
    closed_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "linli.Resident", related_name=False, null=True, on_delete=fields.SET_NULL)
    outcome = fields.CharField(max_length=100, default="")  # what the person who closed it found

    stop_id: int
    resident_id: int
    community_id: int
    grid_id: int | None

    class Meta:
        table = "rider_welfare_alert"
        indexes = (("community_id", "closed_at"),)
