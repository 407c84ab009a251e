"""The billing admin: prices, the usage ledger and its rollups, budgets,
prepaid credit, the books' checks, and webhooks (billing.webhook_admin).

Built for a ledger of millions of rows (billing.admin.large_tables and
billing.admin.csv_export): no full counts, joins chosen up front, filters that
do not scan the ledger to list their choices, exact searches that use indexes,
and CSV exports that stream rather than load. Money is shown and exported as
exact USD strings with nine decimals.

Django's autodiscovery imports this package; importing each module here
registers its ModelAdmins.
"""

from billing import webhook_admin  # noqa: F401
from billing.admin import books, budgets, credit, prices, usage  # noqa: F401
