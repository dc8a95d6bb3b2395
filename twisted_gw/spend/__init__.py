"""Spend (issue 17): what a request costs, and API keys' budgets."""
