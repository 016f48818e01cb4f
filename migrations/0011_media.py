from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('linli', '0010_cases')]

    initial = False

    operations = [
        ops.CreateModel(
            name='StoredMedia',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('sha256', fields.CharField(unique=True, max_length=64)),
                ('size', fields.IntField()),
                ('content_type', fields.CharField(max_length=16)),
                ('data', fields.BinaryField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('wechat_media_id', fields.CharField(default='', max_length=128)),
                ('wechat_media_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'stored_media', 'app': 'linli', 'pk_attr': 'id', 'table_description': 'The bytes of one photo, kept once however many cases or notes show it.'},
            bases=['Model'],
        ),
    ]
