"""People: sign-in, sessions, passwords, invitations, roles and the audit trail."""
