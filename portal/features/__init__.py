"""The capabilities, one package each, in the order they build on each other:
tenancy < identity < catalogue < licences < billing < payments."""
