"""billing's tables, a module for each part of the books. Django finds an
app's models in its `models` module, so each one is imported here."""

from billing.models.books import PriceSyncRun, ReconciliationReport
from billing.models.budgets import Budget, BudgetSpend
from billing.models.credit import CreditEntry
from billing.models.prices import Price
from billing.models.usage import UsageRecord, UsageRollup
from billing.models.webhooks import Webhook, WebhookDelivery

__all__ = [
    "Budget",
    "BudgetSpend",
    "CreditEntry",
    "Price",
    "PriceSyncRun",
    "ReconciliationReport",
    "UsageRecord",
    "UsageRollup",
    "Webhook",
    "WebhookDelivery",
]
