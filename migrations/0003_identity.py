from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('linli', '0002_outbox')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AuditLog',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('actor', fields.ForeignKeyField('linli.Resident', source_field='actor_id', null=True, db_constraint=True, to_field='id', related_name='audit_made', on_delete=OnDelete.SET_NULL)),
                ('actor_label', fields.CharField(default='', max_length=64)),
                ('subject', fields.ForeignKeyField('linli.Resident', source_field='subject_id', null=True, db_constraint=True, to_field='id', related_name='audit_about', on_delete=OnDelete.SET_NULL)),
                ('action', fields.CharField(max_length=32)),
                ('purpose', fields.CharField(default='', max_length=100)),
                ('detail', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'audit_log', 'app': 'linli', 'indexes': [Index(fields=['subject_id', 'at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='DataRequest',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('resident', fields.ForeignKeyField('linli.Resident', source_field='resident_id', null=True, db_constraint=True, to_field='id', related_name='data_requests', on_delete=OnDelete.SET_NULL)),
                ('kind', fields.CharField(default='deletion', max_length=16)),
                ('status', fields.CharField(default='open', max_length=12)),
                ('requested_by', fields.ForeignKeyField('linli.Resident', source_field='requested_by_id', null=True, db_constraint=True, to_field='id', related_name='data_requests_made', on_delete=OnDelete.SET_NULL)),
                ('requested_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('handled_by', fields.ForeignKeyField('linli.Resident', source_field='handled_by_id', null=True, db_constraint=True, to_field='id', related_name='data_requests_handled', on_delete=OnDelete.SET_NULL)),
                ('handled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('outcome', fields.CharField(default='', max_length=300)),
            ],
            options={'table': 'data_request', 'app': 'linli', 'pk_attr': 'id', 'table_description': "A resident's request about their data (deletion), and how staff carried it out."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Department',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=64)),
                ('sub_district', fields.ForeignKeyField('linli.SubDistrict', source_field='sub_district_id', db_constraint=True, to_field='id', related_name='departments', on_delete=OnDelete.RESTRICT)),
            ],
            options={'table': 'department', 'app': 'linli', 'unique_together': (('sub_district', 'name'),), 'pk_attr': 'id', 'table_description': 'A government department that handles errands (civil affairs, medical insurance...).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ProxyLink',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('proxy', fields.ForeignKeyField('linli.Resident', source_field='proxy_id', db_constraint=True, to_field='id', related_name='proxy_for', on_delete=OnDelete.CASCADE)),
                ('elder', fields.ForeignKeyField('linli.Resident', source_field='elder_id', db_constraint=True, to_field='id', related_name='proxies', on_delete=OnDelete.CASCADE)),
                ('relation', fields.CharField(default='', max_length=10)),
                ('status', fields.CharField(default='pending', max_length=12)),
                ('requested_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('decided_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('decided_by', fields.ForeignKeyField('linli.Resident', source_field='decided_by_id', null=True, db_constraint=True, to_field='id', related_name='proxy_decisions', on_delete=OnDelete.SET_NULL)),
                ('confirmed_how', fields.CharField(default='', max_length=8)),
                ('ended_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('ended_by', fields.ForeignKeyField('linli.Resident', source_field='ended_by_id', null=True, db_constraint=True, to_field='id', related_name='proxy_endings', on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'proxy_link', 'app': 'linli', 'indexes': [Index(fields=['proxy_id', 'status']), Index(fields=['elder_id', 'status'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Action',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('actor', fields.ForeignKeyField('linli.Resident', source_field='actor_id', null=True, db_constraint=True, to_field='id', related_name='actions_taken', on_delete=OnDelete.SET_NULL)),
                ('subject', fields.ForeignKeyField('linli.Resident', source_field='subject_id', null=True, db_constraint=True, to_field='id', related_name='actions_about', on_delete=OnDelete.SET_NULL)),
                ('proxy_link', fields.ForeignKeyField('linli.ProxyLink', source_field='proxy_link_id', null=True, db_constraint=True, to_field='id', related_name='actions', on_delete=OnDelete.SET_NULL)),
                ('action', fields.CharField(max_length=48)),
                ('channel', fields.CharField(max_length=8)),
                ('detail', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'action', 'app': 'linli', 'indexes': [Index(fields=['subject_id', 'at']), Index(fields=['actor_id', 'at'])], 'pk_attr': 'id', 'table_description': 'Who did what for whom: every write a flow makes is recorded here (actor = subject when a'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ResidentFact',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('resident', fields.ForeignKeyField('linli.Resident', source_field='resident_id', db_constraint=True, to_field='id', related_name='facts', on_delete=OnDelete.CASCADE)),
                ('code', fields.CharField(max_length=24)),
                ('value', fields.CharField(default='', max_length=32)),
                ('state', fields.CharField(default='pending', max_length=12)),
                ('source', fields.CharField(default='self', max_length=12)),
                ('declared_by', fields.ForeignKeyField('linli.Resident', source_field='declared_by_id', null=True, db_constraint=True, to_field='id', related_name='facts_declared', on_delete=OnDelete.SET_NULL)),
                ('declared_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('decided_by', fields.ForeignKeyField('linli.Resident', source_field='decided_by_id', null=True, db_constraint=True, to_field='id', related_name='facts_decided', on_delete=OnDelete.SET_NULL)),
                ('decided_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('reason', fields.CharField(default='', max_length=100)),
            ],
            options={'table': 'resident_fact', 'app': 'linli', 'indexes': [Index(fields=['resident_id', 'code', 'state'])], 'pk_attr': 'id', 'table_description': 'One declared fact: the date of birth, or one status. Decisions stamp the row.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Shop',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=64)),
                ('community', fields.ForeignKeyField('linli.Community', source_field='community_id', db_constraint=True, to_field='id', related_name='shops', on_delete=OnDelete.RESTRICT)),
            ],
            options={'table': 'shop', 'app': 'linli', 'pk_attr': 'id', 'table_description': 'A partner shop of a community (redemption partners of the love bank).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WechatTag',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=30)),
                ('tag_id', fields.IntField()),
            ],
            options={'table': 'wechat_tag', 'app': 'linli', 'pk_attr': 'id', 'table_description': 'A user tag created on the official account (one per role), for the conditional menus.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Building',
            name='qr_ticket',
            field=fields.CharField(default='', db_default='', max_length=200),
        ),
        ops.AddField(
            model_name='Building',
            name='qr_url',
            field=fields.CharField(default='', db_default='', max_length=200),
        ),
        ops.AddField(
            model_name='Resident',
            name='erased_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Resident',
            name='health_note',
            field=fields.CharField(default='', db_default='', max_length=200),
        ),
        ops.AddField(
            model_name='Resident',
            name='mobility',
            field=fields.CharField(default='', db_default='', max_length=16),
        ),
        ops.AlterModelOptions(
            name='StaffRole',
            options={'table': 'staff_role', 'app': 'linli', 'indexes': [Index(fields=['resident_id', 'revoked_at']), Index(fields=['role', 'grid_id']), Index(fields=['role', 'community_id'])], 'pk_attr': 'id', 'table_description': 'One grant of a role to a resident, in a scope. Revoked grants stay, stamped.'},
        ),
        ops.AlterField(
            model_name='StaffRole',
            name='community',
            field=fields.ForeignKeyField('linli.Community', source_field='community_id', null=True, db_constraint=True, to_field='id', related_name='staff', on_delete=OnDelete.CASCADE),
        ),
        ops.AddField(
            model_name='StaffRole',
            name='granted_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='StaffRole',
            name='granted_by',
            field=fields.ForeignKeyField('linli.Resident', source_field='granted_by_id', null=True, db_constraint=True, to_field='id', related_name='grants_made', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='StaffRole',
            name='granted_by_label',
            field=fields.CharField(default='', db_default='', max_length=64),
        ),
        ops.AddField(
            model_name='StaffRole',
            name='revoked_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='StaffRole',
            name='revoked_by',
            field=fields.ForeignKeyField('linli.Resident', source_field='revoked_by_id', null=True, db_constraint=True, to_field='id', related_name='grants_revoked', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='StaffRole',
            name='revoked_by_label',
            field=fields.CharField(default='', db_default='', max_length=64),
        ),
        ops.AddField(
            model_name='StaffRole',
            name='scope_id',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='StaffRole',
            name='scope_kind',
            field=fields.CharField(default='community', db_default='community', max_length=16),
        ),
        ops.AddField(
            model_name='StaffRole',
            name='sub_district',
            field=fields.ForeignKeyField('linli.SubDistrict', source_field='sub_district_id', null=True, db_constraint=True, to_field='id', related_name='staff', on_delete=OnDelete.CASCADE),
        ),
        ops.AddIndex(
            model_name='StaffRole',
            index=Index(fields=['resident_id', 'revoked_at']),
        ),
        ops.AddIndex(
            model_name='StaffRole',
            index=Index(fields=['role', 'grid_id']),
        ),
        ops.AddIndex(
            model_name='StaffRole',
            index=Index(fields=['role', 'community_id']),
        ),
        ops.AddField(
            model_name='WechatAccount',
            name='last_seen_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='WechatAccount',
            name='unionid',
            field=fields.CharField(null=True, db_index=True, max_length=64),
        ),
        ops.AddField(
            model_name='WechatAccount',
            name='verified_mobile',
            field=fields.CharField(null=True, max_length=11),
        ),
            # Grants made before scopes were recorded: grid workers by grid, the others by community.
        ops.RunSQL([
            "UPDATE staff_role SET scope_kind = 'grid', scope_id = grid_id WHERE grid_id IS NOT NULL",
            "UPDATE staff_role SET scope_kind = 'community', scope_id = community_id WHERE grid_id IS NULL",
            "UPDATE staff_role SET sub_district_id = (SELECT c.sub_district_id FROM community c "
            "WHERE c.id = staff_role.community_id) WHERE community_id IS NOT NULL",
        ]),
    ]
