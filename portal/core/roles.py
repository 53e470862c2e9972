"""Who may do what. Customer users hold one role per account; partner staff hold one staff role."""

from __future__ import annotations

from enum import StrEnum


class CustomerRole(StrEnum):
    ADMINISTRATOR = "administrator"
    SUBSCRIPTION_MANAGER = "subscription_manager"
    FINANCE_MANAGER = "finance_manager"


class StaffRole(StrEnum):
    ADMIN = "admin"
    SERVICE = "service"
    FINANCE = "finance"
    SALES = "sales"


class Permission(StrEnum):
    # customer portal
    VIEW_DASHBOARD = "view_dashboard"
    MANAGE_USERS = "manage_users"
    VIEW_SUBSCRIPTIONS = "view_subscriptions"
    VIEW_USAGE = "view_usage"
    VIEW_INVOICES = "view_invoices"
    CHANGE_LICENCES = "change_licences"  # buy subscriptions, add or reduce seats
    ACCEPT_AGREEMENT = "accept_agreement"  # sign the Microsoft Customer Agreement
    # staff area
    VIEW_CUSTOMERS = "view_customers"
    MANAGE_CUSTOMERS = "manage_customers"  # onboard customers, import their subscriptions
    MANAGE_SETTINGS = "manage_settings"  # the partner's brand, hosts and invoice details
    SET_CREDIT_HOLD = "set_credit_hold"
    INVITE_CUSTOMER_USERS = "invite_customer_users"
    VIEW_SYSTEM = "view_system"
    VIEW_CATALOGUE = "view_catalogue"
    MANAGE_CATALOGUE = "manage_catalogue"
    VIEW_LICENCE_QUEUE = "view_licence_queue"
    MANAGE_LICENCE_QUEUE = "manage_licence_queue"  # retry a failed change, mark it resolved
    VIEW_BILLING = "view_billing"  # billing runs, every customer's invoices, revenue reports
    MANAGE_BILLING = "manage_billing"  # run billing, issue drafts, void invoices


CUSTOMER_PERMISSIONS: dict[CustomerRole, frozenset[Permission]] = {
    CustomerRole.ADMINISTRATOR: frozenset(
        {
            Permission.VIEW_DASHBOARD,
            Permission.MANAGE_USERS,
            Permission.VIEW_SUBSCRIPTIONS,
            Permission.VIEW_USAGE,
            Permission.VIEW_INVOICES,
            Permission.CHANGE_LICENCES,
            Permission.ACCEPT_AGREEMENT,
        }
    ),
    CustomerRole.SUBSCRIPTION_MANAGER: frozenset(
        {
            Permission.VIEW_DASHBOARD,
            Permission.VIEW_SUBSCRIPTIONS,
            Permission.VIEW_USAGE,
            Permission.CHANGE_LICENCES,
            Permission.ACCEPT_AGREEMENT,
        }
    ),
    CustomerRole.FINANCE_MANAGER: frozenset({Permission.VIEW_DASHBOARD, Permission.VIEW_INVOICES}),
}

STAFF_PERMISSIONS: dict[StaffRole, frozenset[Permission]] = {
    StaffRole.ADMIN: frozenset(
        {
            Permission.VIEW_CUSTOMERS,
            Permission.MANAGE_CUSTOMERS,
            Permission.MANAGE_SETTINGS,
            Permission.SET_CREDIT_HOLD,
            Permission.INVITE_CUSTOMER_USERS,
            Permission.VIEW_SYSTEM,
            Permission.VIEW_CATALOGUE,
            Permission.MANAGE_CATALOGUE,
            Permission.VIEW_LICENCE_QUEUE,
            Permission.MANAGE_LICENCE_QUEUE,
            Permission.VIEW_BILLING,
            Permission.MANAGE_BILLING,
        }
    ),
    StaffRole.SERVICE: frozenset(
        {
            Permission.VIEW_CUSTOMERS,
            Permission.MANAGE_CUSTOMERS,
            Permission.INVITE_CUSTOMER_USERS,
            Permission.VIEW_SYSTEM,
            Permission.VIEW_CATALOGUE,
            Permission.VIEW_LICENCE_QUEUE,
            Permission.MANAGE_LICENCE_QUEUE,
        }
    ),
    StaffRole.FINANCE: frozenset(
        {
            Permission.VIEW_CUSTOMERS,
            Permission.SET_CREDIT_HOLD,
            Permission.VIEW_CATALOGUE,
            Permission.VIEW_LICENCE_QUEUE,
            Permission.VIEW_BILLING,
            Permission.MANAGE_BILLING,
        }
    ),
    StaffRole.SALES: frozenset(
        {Permission.VIEW_CUSTOMERS, Permission.VIEW_CATALOGUE, Permission.MANAGE_CATALOGUE}
    ),
}


def customer_may(role: CustomerRole, permission: Permission) -> bool:
    return permission in CUSTOMER_PERMISSIONS[role]


def staff_may(role: StaffRole, permission: Permission) -> bool:
    return permission in STAFF_PERMISSIONS[role]
