"""Customer onboarding (staff): a new customer with its default billing contract, and its
existing subscriptions imported from the provider, each on a contract.

It sits above billing in the capability order: onboarding uses tenancy (the customer),
licences (the imported subscriptions) and billing (the contracts) and nothing uses it.
"""
