"""Payments: pay now, autopay, saved cards, and the gateways' payment events."""
