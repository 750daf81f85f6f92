from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

# Unhandled errors: 503 with Retry-After when the database or the broker is down, the API's JSON shape on /api/.
handler500 = "webapp.errors.server_error"

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),  # POST only (Django 5)
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico whatever the page says: the same icon, not a 404 in every log.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("", include("webapp.experiments.urls")),
    path("", include("webapp.datasets.urls")),
    path("", include("webapp.ratings.urls")),
    path("", include("webapp.compare.urls")),
    path("", include("webapp.reports.urls")),
    path("", include("webapp.api.urls")),
]
