"""Providers' webhooks: each module checks a provider's signature and reads its bodies."""
