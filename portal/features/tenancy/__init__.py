"""Tenancy: partners and their brands, customer accounts, mail in the partner's name."""
