from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('linli', '0005_service_days')]

    initial = False

    operations = [
        ops.CreateModel(
            name='SubscribeConsent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('linli.WechatAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='subscribe_consents', on_delete=OnDelete.CASCADE)),
                ('template_id', fields.CharField(max_length=64)),
                ('granted_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('refused_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'subscribe_consent', 'app': 'linli', 'indexes': [Index(fields=['account_id', 'used_at'])], 'pk_attr': 'id', 'table_description': 'One subscribe-message consent the mini-program reported (wx.requestSubscribeMessage said'},
            bases=['Model'],
        ),
    ]
