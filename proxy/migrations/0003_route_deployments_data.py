"""Each route's provider and upstream model become its first deployment."""

from typing import Any

from django.db import migrations


def routes_to_deployments(apps: Any, schema_editor: Any) -> None:
    Route = apps.get_model("proxy", "Route")
    Deployment = apps.get_model("proxy", "Deployment")
    Deployment.objects.bulk_create(
        Deployment(route_id=route.pk, provider_id=route.provider_id, upstream_model=route.upstream_model)
        for route in Route.objects.exclude(provider_id=None).exclude(deployments__isnull=False)
    )


def deployments_to_routes(apps: Any, schema_editor: Any) -> None:
    """Back to one provider per route: the preferred deployment (best
    priority, then the oldest) wins; the others are lost. A route without
    any deployment cannot be written in the old schema and is deleted."""
    Route = apps.get_model("proxy", "Route")
    Deployment = apps.get_model("proxy", "Deployment")
    chosen: dict[int, Any] = {}
    for deployment in Deployment.objects.order_by("route_id", "-is_active", "priority", "id"):
        chosen.setdefault(deployment.route_id, deployment)
    for route in Route.objects.all():
        deployment = chosen.get(route.pk)
        if deployment is None:
            route.delete()
            continue
        route.provider_id, route.upstream_model = deployment.provider_id, deployment.upstream_model
        route.save(update_fields=["provider", "upstream_model"])


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0002_deployments"),
    ]

    operations = [
        migrations.RunPython(routes_to_deployments, deployments_to_routes),
    ]
