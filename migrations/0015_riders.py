from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('linli', '0014_errands')]

    initial = False

    operations = [
        ops.CreateModel(
            name='RiderSettings',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('community', fields.OneToOneField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('points_by', fields.CharField(default='route', max_length=8)),
                ('points', fields.IntField(default=10)),
                ('max_stops', fields.IntField(default=8)),
                ('depart_minutes', fields.IntField(default=0)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_by', fields.ForeignKeyField('linli.Resident', source_field='updated_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'rider_settings', 'app': 'linli', 'pk_attr': 'id', 'table_description': 'A community pioneer rider settings, which its staff edit.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Route',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('menu', fields.ForeignKeyField('linli.Menu', source_field='menu_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('community', fields.ForeignKeyField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('name', fields.CharField(max_length=64)),
                ('position', fields.IntField(default=0)),
                ('depart_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('state', fields.CharField(default='open', max_length=12)),
                ('rider', fields.ForeignKeyField('linli.Resident', source_field='rider_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('claimed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('completed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('version', fields.IntField(default=0)),
            ],
            options={'table': 'rider_route', 'app': 'linli', 'unique_together': (('menu', 'name'),), 'indexes': [Index(fields=['state', 'depart_at'])], 'pk_attr': 'id', 'table_description': 'One delivery round of one meal, for one rider.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RouteStop',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('route', fields.ForeignKeyField('linli.Route', source_field='route_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('booking', fields.OneToOneField('linli.Booking', source_field='booking_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('resident', fields.ForeignKeyField('linli.Resident', source_field='resident_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('position', fields.IntField()),
                ('building', fields.CharField(max_length=64)),
                ('unit', fields.CharField(default='', max_length=16)),
                ('floor', fields.IntField(default=0)),
                ('room', fields.CharField(default='', max_length=16)),
                ('diet', fields.CharField(default='', max_length=120)),
                ('state', fields.CharField(default='pending', max_length=12)),
                ('marked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('marked_by', fields.ForeignKeyField('linli.Resident', source_field='marked_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('note', fields.CharField(default='', max_length=100)),
                ('photo', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
            ],
            options={'table': 'rider_stop', 'app': 'linli', 'pk_attr': 'id', 'table_description': 'One delivery booking on a route.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WelfareAlert',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('stop', fields.OneToOneField('linli.RouteStop', source_field='stop_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('resident', fields.ForeignKeyField('linli.Resident', source_field='resident_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('community', fields.ForeignKeyField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('grid', fields.ForeignKeyField('linli.Grid', source_field='grid_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('raised_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('rider', fields.ForeignKeyField('linli.Resident', source_field='rider_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('note', fields.CharField(default='', max_length=100)),
                ('closed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('closed_by', fields.ForeignKeyField('linli.Resident', source_field='closed_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('outcome', fields.CharField(default='', max_length=100)),
            ],
            options={'table': 'rider_welfare_alert', 'app': 'linli', 'indexes': [Index(fields=['community_id', 'closed_at'])], 'pk_attr': 'id', 'table_description': 'An elder living alone was not home when the meal came: open until someone records them safe.'},
            bases=['Model'],
        ),
    ]
