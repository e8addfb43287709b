"""``python -m devstack``: what ``make dev`` runs (``devstack.stack``)."""

from devstack.stack import main

main()
