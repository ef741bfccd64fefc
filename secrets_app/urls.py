from __future__ import annotations

from django.urls import path

from secrets_app import views

app_name = "secrets_app"
urlpatterns = [
    path("", views.variable_list, name="list"),
    path("encrypt/", views.encrypt_value, name="encrypt"),
    path("global/<str:name>/", views.variable_edit, name="edit_global"),
    path("global/<str:name>/delete/", views.variable_delete, name="delete_global"),
    path("<str:pipeline>/<str:name>/", views.variable_edit, name="edit"),
    path("<str:pipeline>/<str:name>/delete/", views.variable_delete, name="delete"),
]
