from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('linli', '0009_foreign_key_indexes')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Case',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('community', fields.ForeignKeyField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name='cases', on_delete=OnDelete.RESTRICT)),
                ('grid', fields.ForeignKeyField('linli.Grid', source_field='grid_id', db_constraint=True, to_field='id', related_name='cases', on_delete=OnDelete.RESTRICT)),
                ('building', fields.ForeignKeyField('linli.Building', source_field='building_id', null=True, db_constraint=True, to_field='id', related_name='cases', on_delete=OnDelete.RESTRICT)),
                ('location', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('category', fields.CharField(max_length=16)),
                ('klass', fields.CharField(max_length=8)),
                ('status', fields.CharField(default='open', max_length=12)),
                ('level', fields.CharField(max_length=12)),
                ('source', fields.CharField(default='chat', max_length=12)),
                ('reporter', fields.ForeignKeyField('linli.Resident', source_field='reporter_id', null=True, db_constraint=True, to_field='id', related_name='cases', on_delete=OnDelete.SET_NULL)),
                ('entered_by', fields.ForeignKeyField('linli.Resident', source_field='entered_by_id', null=True, db_constraint=True, to_field='id', related_name='cases_entered', on_delete=OnDelete.SET_NULL)),
                ('contact', fields.CharField(default='', max_length=32)),
                ('description', fields.CharField(max_length=300)),
                ('photos', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('in_person', fields.BooleanField(default=False)),
                ('joins', fields.IntField(default=0)),
                ('assignment', fields.IntField(default=0)),
                ('due_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('accepted_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('resolved_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('resolved_in_time', fields.BooleanField(default=False)),
                ('summary', fields.CharField(default='', max_length=100)),
                ('missed_deadlines', fields.IntField(default=0)),
                ('escalations', fields.IntField(default=0)),
                ('reopened', fields.IntField(default=0)),
                ('rating', fields.IntField(null=True)),
                ('closed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('closed_reason', fields.CharField(default='', max_length=12)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'case_report', 'app': 'linli', 'indexes': [Index(fields=['community_id', 'status']), Index(fields=['grid_id', 'status']), Index(fields=['status', 'level']), Index(fields=['created_at'])], 'pk_attr': 'id', 'table_description': 'A problem a resident reported (or staff entered for them).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CaseEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('case', fields.ForeignKeyField('linli.Case', source_field='case_id', db_constraint=True, to_field='id', related_name='events', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=16)),
                ('actor', fields.ForeignKeyField('linli.Resident', source_field='actor_id', null=True, db_constraint=True, to_field='id', related_name='case_events', on_delete=OnDelete.SET_NULL)),
                ('actor_label', fields.CharField(default='', max_length=32)),
                ('level', fields.CharField(default='', max_length=12)),
                ('note', fields.CharField(default='', max_length=300)),
                ('data', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('public', fields.BooleanField(default=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'case_event', 'app': 'linli', 'indexes': [Index(fields=['case_id', 'id'])], 'pk_attr': 'id', 'table_description': "One step in a case's life: append-only, who, when and what."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CaseFeedback',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('case', fields.ForeignKeyField('linli.Case', source_field='case_id', db_constraint=True, to_field='id', related_name='feedback', on_delete=OnDelete.CASCADE)),
                ('resident', fields.ForeignKeyField('linli.Resident', source_field='resident_id', db_constraint=True, to_field='id', related_name='case_feedback', on_delete=OnDelete.CASCADE)),
                ('round', fields.IntField()),
                ('fixed', fields.CharField(max_length=12)),
                ('rating', fields.IntField(null=True)),
                ('comment', fields.CharField(default='', max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'case_feedback', 'app': 'linli', 'unique_together': (('case', 'resident', 'round'),), 'pk_attr': 'id', 'table_description': "A follower's answer after a resolution (one per follower and resolution round)."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CaseFollower',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('case', fields.ForeignKeyField('linli.Case', source_field='case_id', db_constraint=True, to_field='id', related_name='followers', on_delete=OnDelete.CASCADE)),
                ('resident', fields.ForeignKeyField('linli.Resident', source_field='resident_id', db_constraint=True, to_field='id', related_name='followed_cases', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=8)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'case_follower', 'app': 'linli', 'unique_together': (('case', 'resident'),), 'indexes': [Index(fields=['resident_id'])], 'pk_attr': 'id', 'table_description': 'Who follows a case: its reporter and everyone who joined it.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CaseSettings',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('community', fields.OneToOneField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name='case_settings', on_delete=OnDelete.CASCADE)),
                ('data', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_by', fields.ForeignKeyField('linli.Resident', source_field='updated_by_id', null=True, db_constraint=True, to_field='id', related_name='case_settings_edits', on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'case_settings', 'app': 'linli', 'pk_attr': 'id', 'table_description': "A community's chains, deadlines and default classes (``CaseRules``), as staff edited them."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='DeliberationSession',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('community', fields.ForeignKeyField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name='sessions', on_delete=OnDelete.CASCADE)),
                ('day', fields.DateField()),
                ('reminded_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('held_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'deliberation_session', 'app': 'linli', 'unique_together': (('community', 'day'),), 'pk_attr': 'id', 'table_description': 'A deliberation session (逢六说事) of a community on the 6th, 16th or 26th.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AgendaItem',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('session', fields.ForeignKeyField('linli.DeliberationSession', source_field='session_id', db_constraint=True, to_field='id', related_name='items', on_delete=OnDelete.CASCADE)),
                ('case', fields.ForeignKeyField('linli.Case', source_field='case_id', db_constraint=True, to_field='id', related_name='agenda_items', on_delete=OnDelete.CASCADE)),
                ('reason', fields.CharField(max_length=12)),
                ('added_by', fields.ForeignKeyField('linli.Resident', source_field='added_by_id', null=True, db_constraint=True, to_field='id', related_name='agenda_added', on_delete=OnDelete.SET_NULL)),
                ('added_note', fields.CharField(default='', max_length=100)),
                ('added_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('dropped_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('dropped_by', fields.ForeignKeyField('linli.Resident', source_field='dropped_by_id', null=True, db_constraint=True, to_field='id', related_name='agenda_dropped', on_delete=OnDelete.SET_NULL)),
                ('dropped_reason', fields.CharField(default='', max_length=100)),
                ('outcome', fields.CharField(default='', max_length=200)),
                ('outcome_owner', fields.CharField(default='', max_length=32)),
                ('outcome_due', fields.DateField(null=True)),
                ('outcome_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('outcome_by', fields.ForeignKeyField('linli.Resident', source_field='outcome_by_id', null=True, db_constraint=True, to_field='id', related_name='outcomes_recorded', on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'agenda_item', 'app': 'linli', 'unique_together': (('session', 'case'),), 'pk_attr': 'id', 'table_description': "A case on a session's agenda (dropped items stay, stamped with who and why)."},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Building',
            name='lat',
            field=fields.FloatField(null=True),
        ),
        ops.AddField(
            model_name='Building',
            name='lon',
            field=fields.FloatField(null=True),
        ),
    ]
