"""Stored secrets and parameters: write-only secrets on the page, in the admin and in
records; permissions; the encrypt helper."""

from __future__ import annotations

import pytest
from django.urls import reverse

from fastflow_site.roles import Role
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from secrets_app import crypto
from secrets_app.models import Variable
from tests.conftest import person

pytestmark = pytest.mark.django_db

SECRET = "pa55-w0rd-xyz"


@pytest.fixture
def pipeline(make_pipeline) -> Pipeline:
    make_pipeline("etl")
    discover()
    return Pipeline.objects.get(name="etl")


@pytest.fixture
def operator(django_user_model):
    """Manages stored secrets: an admin (operators manage parameters only)."""
    return person(django_user_model, "ola", Role.ADMIN)


def make_secret(name="DB_PASSWORD", value=SECRET, pipeline=None) -> Variable:
    variable = Variable(name=name, kind=Variable.Kind.SECRET, pipeline=pipeline)
    variable.set_value(value)
    variable.save()
    return variable


def test_a_secret_is_stored_encrypted_and_a_parameter_plain(pipeline):
    secret = make_secret()
    parameter = Variable(name="REGION", kind=Variable.Kind.PARAMETER, pipeline=pipeline)
    parameter.set_value("eu-west")
    parameter.save()
    stored = Variable.objects.values("name", "value", "encrypted_value")
    by_name = {row["name"]: row for row in stored}
    assert by_name["DB_PASSWORD"]["value"] == ""
    assert SECRET not in by_name["DB_PASSWORD"]["encrypted_value"]
    assert crypto.decrypt(by_name["DB_PASSWORD"]["encrypted_value"]) == SECRET
    assert by_name["REGION"] == {"name": "REGION", "value": "eu-west", "encrypted_value": ""}
    assert SECRET not in str(secret) and SECRET not in repr(secret)


def test_global_variables_come_before_the_pipelines_own(pipeline):
    own = make_secret("TOKEN", "own-value", pipeline)
    shared = make_secret("TOKEN", "global-value")
    assert Variable.for_pipeline(pipeline) == [shared, own]


def test_the_secrets_page_never_shows_a_secret(client, operator, pipeline):
    make_secret()
    client.force_login(operator)
    page = client.get(reverse("secrets_app:list"))
    assert page.status_code == 200
    assert b"DB_PASSWORD" in page.content
    assert SECRET.encode() not in page.content
    edit = client.get(reverse("secrets_app:edit_global", args=["DB_PASSWORD"]))
    assert edit.status_code == 200 and SECRET.encode() not in edit.content
    assert b'type="password"' in edit.content


def test_add_replace_and_delete_from_the_page(client, operator, pipeline):
    client.force_login(operator)
    response = client.post(
        reverse("secrets_app:list"),
        {"name": "API_KEY", "kind": "secret", "pipeline": pipeline.pk, "new_value": "k-12345"},
    )
    assert response.status_code == 302, response.content.decode()
    variable = Variable.objects.get(name="API_KEY")
    assert variable.plain_value() == "k-12345" and variable.updated_by == operator
    edit_url = reverse("secrets_app:edit", args=["etl", "API_KEY"])
    # Empty: keep the stored value.
    client.post(edit_url, {"name": "API_KEY", "kind": "secret", "pipeline": pipeline.pk})
    assert Variable.objects.get(name="API_KEY").plain_value() == "k-12345"
    client.post(
        edit_url,
        {"name": "API_KEY", "kind": "secret", "pipeline": pipeline.pk, "new_value": "k-67890"},
    )
    assert Variable.objects.get(name="API_KEY").plain_value() == "k-67890"
    client.post(reverse("secrets_app:delete", args=["etl", "API_KEY"]))
    assert not Variable.objects.exists()


@pytest.mark.parametrize(
    ("name", "why"),
    [("PATH", "reserved"), ("UV_INDEX_URL", "reserved"), ("1BAD", "not a variable name")],
)
def test_names_that_would_change_how_runs_are_built_are_refused(client, operator, name, why):
    client.force_login(operator)
    response = client.post(
        reverse("secrets_app:list"), {"name": name, "kind": "parameter", "new_value": "x"}
    )
    assert response.status_code == 200
    assert why in response.content.decode()
    assert not Variable.objects.exists()


def test_a_name_is_unique_per_scope(client, operator, pipeline):
    make_secret("TOKEN")
    client.force_login(operator)
    response = client.post(
        reverse("secrets_app:list"), {"name": "TOKEN", "kind": "secret", "new_value": "again"}
    )
    assert "already is a global variable" in response.content.decode()
    make_secret("TOKEN", pipeline=pipeline)  # the same name for one pipeline is fine


def test_people_without_the_permission_get_403(client, stranger, viewer):
    client.force_login(stranger)
    assert client.get(reverse("secrets_app:list")).status_code == 403
    client.force_login(viewer)  # reads the names, never encrypts or stores
    assert client.get(reverse("secrets_app:list")).status_code == 200
    assert client.post(reverse("secrets_app:encrypt"), {"value": "x"}).status_code == 403
    assert (
        client.post(
            reverse("secrets_app:list"), {"name": "A", "kind": "parameter", "new_value": "1"}
        ).status_code
        == 403
    )


def test_the_admin_shows_names_never_secret_values(admin_client, pipeline):
    variable = make_secret()
    changelist = admin_client.get(reverse("admin:secrets_app_variable_changelist"))
    change = admin_client.get(reverse("admin:secrets_app_variable_change", args=[variable.pk]))
    for page in (changelist, change):
        assert page.status_code == 200
        assert SECRET.encode() not in page.content
        assert variable.encrypted_value.encode() not in page.content
    add = admin_client.post(
        reverse("admin:secrets_app_variable_add"),
        {"name": "NEW_ONE", "kind": "secret", "new_value": "admin-made-1"},
    )
    assert add.status_code == 302
    assert Variable.objects.get(name="NEW_ONE").plain_value() == "admin-made-1"


def test_encrypt_a_value_for_pipeline_json(client, operator):
    client.force_login(operator)
    response = client.post(
        reverse("secrets_app:encrypt"), {"name": "DB_PASSWORD", "value": "to-encrypt"}
    )
    text = response.content.decode()
    assert "encrypted_env" in text and "DB_PASSWORD" in text
    token = text.split("&quot;DB_PASSWORD&quot;: &quot;")[1].split("&quot;")[0]
    assert crypto.decrypt(token) == "to-encrypt"
    assert "to-encrypt" not in text
    assert not Variable.objects.exists()  # nothing stored


def test_typed_values_are_hidden_from_error_reports(client, operator, admin_user):
    client.force_login(operator)
    response = client.post(reverse("secrets_app:list"), {"name": "X_KEY", "new_value": "v-1"})
    assert response.wsgi_request.sensitive_post_parameters == ("new_value",)
    response = client.post(reverse("secrets_app:encrypt"), {"value": "v-2"})
    assert response.wsgi_request.sensitive_post_parameters == ("value",)
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:secrets_app_variable_add"), {"name": "Y_KEY", "new_value": "v-3"}
    )
    assert response.wsgi_request.sensitive_post_parameters == ("new_value",)
