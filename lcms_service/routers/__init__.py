"""The service's routers, one per concern: the OGC API (tipg), the operator application's page, health."""
