from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('linli', '0004_jobs_notices')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ServiceDay',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('community', fields.ForeignKeyField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name='service_days', on_delete=OnDelete.RESTRICT)),
                ('date', fields.DateField()),
                ('place', fields.CharField(max_length=40)),
                ('starts', fields.CharField(max_length=5)),
                ('ends', fields.CharField(max_length=5)),
                ('staff', fields.CharField(max_length=60)),
                ('items', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_by', fields.ForeignKeyField('linli.Resident', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name='service_days_planned', on_delete=OnDelete.SET_NULL)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'service_day', 'app': 'linli', 'unique_together': (('community', 'date'),), 'pk_attr': 'id', 'table_description': 'One planned Friday of a community: where, when, who is on duty, which items are offered.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ServiceDayIntent',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('resident', fields.ForeignKeyField('linli.Resident', source_field='resident_id', db_constraint=True, to_field='id', related_name='service_day_intents', on_delete=OnDelete.CASCADE)),
                ('day', fields.ForeignKeyField('linli.ServiceDay', source_field='day_id', db_constraint=True, to_field='id', related_name='intents', on_delete=OnDelete.CASCADE)),
                ('item', fields.CharField(max_length=20)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'service_day_intent', 'app': 'linli', 'unique_together': (('resident', 'day'),), 'pk_attr': 'id', 'table_description': 'The item a resident says they will come for (one per resident and day, the latest answer wins).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ServiceDayNoticeRun',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('community', fields.ForeignKeyField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name='service_day_runs', on_delete=OnDelete.CASCADE)),
                ('date', fields.DateField()),
                ('slot', fields.CharField(max_length=8)),
                ('notice_id', fields.IntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'service_day_notice_run', 'app': 'linli', 'unique_together': (('community', 'date', 'slot'),), 'pk_attr': 'id', 'table_description': 'The claim of one notice per (community, Friday, slot): inserting it is the claim.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ServiceDaySettings',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('community', fields.OneToOneField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name='service_day_settings', on_delete=OnDelete.CASCADE)),
                ('eve_at', fields.CharField(default='18:00', max_length=5)),
                ('day_at', fields.CharField(default='08:00', max_length=5)),
            ],
            options={'table': 'service_day_settings', 'app': 'linli', 'pk_attr': 'id', 'table_description': "When a community's notices go out (community time, HH:MM): the evening before and the morning of."},
            bases=['Model'],
        ),
    ]
