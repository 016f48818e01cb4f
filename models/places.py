"""Sub-district → community → grid → building."""

from tortoise import fields
from tortoise.models import Model


class SubDistrict(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)

    class Meta:
        table = "sub_district"


class Community(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64)
    sub_district: fields.ForeignKeyRelation[SubDistrict] = fields.ForeignKeyField(
        "linli.SubDistrict", related_name="communities", on_delete=fields.RESTRICT
    )

    class Meta:
        table = "community"
        unique_together = (("sub_district", "name"),)


class Grid(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="grids", on_delete=fields.RESTRICT
    )

    class Meta:
        table = "grid"
        unique_together = (("community", "name"),)


class Building(Model):
    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="buildings", on_delete=fields.RESTRICT
    )
    grid: fields.ForeignKeyRelation[Grid] = fields.ForeignKeyField(
        "linli.Grid", related_name="buildings", on_delete=fields.RESTRICT
    )
    # the permanent parametric QR code of its stairwell poster (created once, reused)
    qr_ticket = fields.CharField(max_length=200, default="", db_default="")
    qr_url = fields.CharField(max_length=200, default="", db_default="")
    # where it stands (WGS-84, as WeChat's location messages give it): "within 300 m" needs it
    lat = fields.FloatField(null=True)
    lon = fields.FloatField(null=True)

    class Meta:
        table = "building"
        unique_together = (("community", "name"),)
        ordering = ["id"]


class Canteen(Model):
    """A community canteen (menus, capacity and prices come with the canteen issue)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="canteens", on_delete=fields.RESTRICT
    )

    class Meta:
        table = "canteen"


class Shop(Model):
    """A partner shop of a community (redemption partners of the love bank)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "linli.Community", related_name="shops", on_delete=fields.RESTRICT
    )

    class Meta:
        table = "shop"


class Department(Model):
    """A government department that handles errands (civil affairs, medical insurance...)."""

    _no_comments = True  # see models/__init__.py

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64)
    sub_district: fields.ForeignKeyRelation[SubDistrict] = fields.ForeignKeyField(
        "linli.SubDistrict", related_name="departments", on_delete=fields.RESTRICT
    )

    class Meta:
        table = "department"
        unique_together = (("sub_district", "name"),)
