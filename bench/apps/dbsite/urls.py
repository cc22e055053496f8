from django.urls import path

from . import views

urlpatterns = [
    path("", views.newest),
    path("report", views.report),
]
