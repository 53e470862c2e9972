"""Every capability's tables, imported so that Alembic, the app factory and scripts see them all.

Only entry points import this module (an import-linter contract says so): a capability imports
the models it uses, never this list.
"""

from portal.features.billing import models as billing
from portal.features.catalogue import models as catalogue
from portal.features.identity import models as identity
from portal.features.licences import models as licences
from portal.features.payments import models as payments
from portal.features.tenancy import models as tenancy
from portal.outbox import models as outbox

MODULES = (tenancy, identity, catalogue, licences, billing, payments, outbox)
