from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    """A partial index of the rows waiting to be sent, in sending order (priority, id).

    The sender's claim (models/outbox.claim_due) picks the first due rows by (priority, id); without
    this index every claim sorts all waiting rows (30-50 ms with 100,000 waiting). SQLite and
    PostgreSQL both have partial indexes; the model does not declare it (tortoise-orm has no
    partial index), so makemigrations leaves it alone.
    """

    dependencies = [('linli', '0007_notice_prompts')]

    initial = False

    operations = [
        ops.RunSQL(
            ["CREATE INDEX IF NOT EXISTS outbox_waiting_order ON outbox (priority, id) "
             "WHERE state IN ('pending', 'sending')"],
            reverse_sql=["DROP INDEX IF EXISTS outbox_waiting_order"],
        ),
    ]
