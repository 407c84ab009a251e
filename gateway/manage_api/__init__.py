"""The management API at /api/: tenants, keys, budgets, providers, routes,
prices and usage for staff and their automation. Every write is audited."""

from gateway.manage_api.api import api

__all__ = ("api",)
