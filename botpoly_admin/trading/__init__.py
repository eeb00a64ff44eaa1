"""The trading engine: market data, strategies, risk, brokers and the per-tenant bot."""
