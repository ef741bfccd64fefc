"""The three roles as groups, and a role for every person who exists already.

Permissions are given to the groups after migrating (fastflow_site.roles.ensure_role_groups,
on post_migrate), when Django has made them."""

from django.db import migrations

ROLES = ("viewer", "operator", "admin")


def make_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    User = apps.get_model("auth", "User")
    groups = {name: Group.objects.get_or_create(name=name)[0] for name in ROLES}
    for user in User.objects.all():
        if user.groups.filter(name__in=ROLES).exists():
            continue
        could_run = user.user_permissions.filter(codename="add_pipelinerun").exists() or (
            user.groups.filter(permissions__codename="add_pipelinerun").exists()
        )
        if user.is_superuser:
            role = "admin"
        elif user.is_staff or could_run:
            role = "operator"
        else:
            role = "viewer"
        user.is_staff = role != "viewer"
        user.save(update_fields=["is_staff"])
        user.groups.add(groups[role])


class Migration(migrations.Migration):
    dependencies = [
        ("fastflow_site", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(make_roles, migrations.RunPython.noop)]
