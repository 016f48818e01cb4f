from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('linli', '0006_subscribe_consents')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Notice',
            name='prompt',
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='Notice',
            name='fanned_upto',
            field=fields.IntField(null=True),
        ),
    ]
