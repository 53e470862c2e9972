"""Billing: contracts, billing runs, invoices and credit notes, their PDFs, deferred revenue."""
