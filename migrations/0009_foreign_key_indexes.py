from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    """Indexes for notices: the foreign keys they look residents, accounts and deliveries up by,
    and the subject of their questions.

    PostgreSQL does not index a foreign key by itself; without these, fanning a notice out read
    the whole wechat_account table once per batch. Plain SQL rather than db_index on the models:
    an AlterField of a foreign key makes tortoise-orm rebuild the table on SQLite, and rebuilding
    `resident` would cascade-delete the rows that point at it.
    """

    dependencies = [('linli', '0008_outbox_due_index')]

    initial = False

    operations = [
        ops.RunSQL(
            ["CREATE INDEX IF NOT EXISTS resident_community_id ON resident (community_id)",
             "CREATE INDEX IF NOT EXISTS wechat_account_resident_id ON wechat_account (resident_id)",
             # the retention sweep deletes old outbox rows: ON DELETE SET NULL looks deliveries up by it
             "CREATE INDEX IF NOT EXISTS notice_delivery_outbox_id ON notice_delivery (outbox_id)",
             # a notice's questions are withdrawn (and marked delivered) by subject
             "CREATE INDEX IF NOT EXISTS pending_prompt_subject ON pending_prompt (subject)"],
            reverse_sql=["DROP INDEX IF EXISTS resident_community_id",
                         "DROP INDEX IF EXISTS wechat_account_resident_id",
                         "DROP INDEX IF EXISTS notice_delivery_outbox_id",
                         "DROP INDEX IF EXISTS pending_prompt_subject"],
        ),
    ]
