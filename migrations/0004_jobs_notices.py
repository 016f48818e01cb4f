from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('linli', '0003_identity')]

    initial = False

    operations = [
        ops.CreateModel(
            name='DueAction',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('action', fields.CharField(max_length=48)),
                ('target', fields.CharField(max_length=64)),
                ('due_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('key', fields.CharField(unique=True, max_length=160)),
                ('status', fields.CharField(default='pending', max_length=12)),
                ('attempts', fields.IntField(default=0)),
                ('lease_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.CharField(default='', max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('done_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'due_action', 'app': 'linli', 'indexes': [Index(fields=['status', 'due_at']), Index(fields=['action', 'target'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='JobRun',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('job', fields.CharField(max_length=64)),
                ('fire_time', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('status', fields.CharField(default='running', max_length=12)),
                ('claimed_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('error', fields.CharField(default='', max_length=200)),
            ],
            options={'table': 'job_run', 'app': 'linli', 'unique_together': (('job', 'fire_time'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Notice',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('kind', fields.CharField(default='announcement', max_length=16)),
                ('community', fields.ForeignKeyField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name='notices', on_delete=OnDelete.RESTRICT)),
                ('grid', fields.ForeignKeyField('linli.Grid', source_field='grid_id', null=True, db_constraint=True, to_field='id', related_name='notices', on_delete=OnDelete.RESTRICT)),
                ('building', fields.ForeignKeyField('linli.Building', source_field='building_id', null=True, db_constraint=True, to_field='id', related_name='notices', on_delete=OnDelete.RESTRICT)),
                ('urgency', fields.CharField(default='normal', max_length=8)),
                ('title', fields.CharField(max_length=30)),
                ('text', fields.CharField(max_length=500)),
                ('created_by', fields.ForeignKeyField('linli.Resident', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name='notices_sent', on_delete=OnDelete.SET_NULL)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('send_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('fanned_out_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'notice', 'app': 'linli', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='NoticeDelivery',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('notice', fields.ForeignKeyField('linli.Notice', source_field='notice_id', db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.CASCADE)),
                ('resident', fields.ForeignKeyField('linli.Resident', source_field='resident_id', db_constraint=True, to_field='id', related_name='notice_deliveries', on_delete=OnDelete.CASCADE)),
                ('status', fields.CharField(max_length=12)),
                ('outbox', fields.ForeignKeyField('linli.OutboxMessage', source_field='outbox_id', null=True, db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'notice_delivery', 'app': 'linli', 'unique_together': (('notice', 'resident'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Resident',
            name='notices_off_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
