from django.db import migrations, models


def refuse(apps, schema_editor):
    raise RuntimeError("0003_refuses: this migration always fails")


class Migration(migrations.Migration):

    dependencies = [
        ('notes', '0002_note_pinned'),
    ]

    operations = [
        migrations.AddField(
            model_name='note',
            name='refused',
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(refuse, migrations.RunPython.noop),
    ]
