"""Identity use cases: signing in and password reset (auth), people and invitations."""
