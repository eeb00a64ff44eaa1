"""The versioned schema: each entry of ``MIGRATIONS`` is one migration, applied in order.

A migration is a DDL script without semicolons inside literals; ``migrations.migrate``
runs it statement by statement in one transaction and bumps ``PRAGMA user_version``.
"""

from __future__ import annotations

# PRAGMA application_id of every botpoly-admin database: "BPLY" in ASCII. SQLite keeps
# it in the file header (offset 68), so a file can be recognised before it is opened.
APPLICATION_ID = 0x42504C59

SCHEMA_V1 = """
CREATE TABLE tenants (
    tenant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL CHECK (length(trim(name)) BETWEEN 1 AND 200),
    email TEXT NOT NULL,
    -- casefold(email): unique in any case, non-ASCII included (NOCASE is ASCII only)
    email_key TEXT NOT NULL UNIQUE,
    tier TEXT NOT NULL CHECK (tier IN ('free', 'basic', 'pro', 'enterprise')),
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'trial', 'expired')),
    trading_mode TEXT NOT NULL DEFAULT 'paper' CHECK (trading_mode IN ('paper', 'live')),
    capital_micros INTEGER NOT NULL CHECK (capital_micros >= 0),
    max_position_micros INTEGER NOT NULL CHECK (max_position_micros > 0),
    max_daily_trades INTEGER NOT NULL CHECK (max_daily_trades >= 0),
    enabled_strategies TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(enabled_strategies)),
    strategy_params TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(strategy_params)),
    markets TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(markets)),
    rate_limits TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(rate_limits)),
    monthly_trades_quota INTEGER CHECK (monthly_trades_quota IS NULL OR monthly_trades_quota >= 0),
    quota_unlimited INTEGER NOT NULL DEFAULT 0 CHECK (quota_unlimited IN (0, 1)),
    settings TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
    trial_ends_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_active TEXT,
    CHECK (NOT (tier = 'free' AND trading_mode = 'live'))
);
CREATE INDEX idx_tenants_status ON tenants(status);

CREATE TABLE credentials (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    name TEXT NOT NULL CHECK (name IN ('polymarket_private_key', 'polymarket_wallet',
        'polymarket_api_key', 'polymarket_api_secret', 'polymarket_api_passphrase',
        'binance_api_key', 'binance_secret')),
    ciphertext TEXT NOT NULL,
    key_id TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE usage (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    period TEXT NOT NULL CHECK (period GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]'),
    trades_used INTEGER NOT NULL DEFAULT 0 CHECK (trades_used >= 0),
    trades_reserved INTEGER NOT NULL DEFAULT 0 CHECK (trades_reserved >= 0),
    -- trades_used = counted trades + trades_adjustment (quotas reset --tenant, increment_usage)
    trades_adjustment INTEGER NOT NULL DEFAULT 0,
    api_calls INTEGER NOT NULL DEFAULT 0 CHECK (api_calls >= 0),
    compute_seconds REAL NOT NULL DEFAULT 0 CHECK (compute_seconds >= 0),
    PRIMARY KEY (tenant_id, period)
);

CREATE TABLE daily_usage (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    trades_used INTEGER NOT NULL DEFAULT 0 CHECK (trades_used >= 0),
    realized_pnl_micros INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);

CREATE TABLE trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    ts TEXT NOT NULL,
    period TEXT NOT NULL,
    day TEXT NOT NULL,
    market TEXT,
    token_id TEXT,
    outcome TEXT,
    side TEXT NOT NULL CHECK (side IN ('BUY', 'SELL', 'SETTLE')),
    shares_micros INTEGER NOT NULL CHECK (shares_micros >= 0),
    price_micros INTEGER NOT NULL CHECK (price_micros >= 0 AND price_micros <= 1000000),
    notional_micros INTEGER NOT NULL,
    fee_micros INTEGER NOT NULL DEFAULT 0 CHECK (fee_micros >= 0),
    realized_pnl_micros INTEGER NOT NULL DEFAULT 0,
    closes_position INTEGER NOT NULL DEFAULT 0 CHECK (closes_position IN (0, 1)),
    status TEXT NOT NULL CHECK (status IN
        ('pending', 'filled', 'partial', 'failed', 'cancelled', 'settled')),
    mode TEXT NOT NULL DEFAULT 'paper' CHECK (mode IN ('paper', 'live')),
    strategy TEXT,
    counted INTEGER NOT NULL DEFAULT 1 CHECK (counted IN (0, 1)),
    client_order_id TEXT NOT NULL,
    exchange_order_id TEXT,
    UNIQUE (tenant_id, client_order_id)
);
CREATE INDEX idx_trades_tenant_ts ON trades(tenant_id, ts);
CREATE INDEX idx_trades_tenant_period ON trades(tenant_id, period);

CREATE TABLE positions (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    token_id TEXT NOT NULL,
    market TEXT,
    outcome TEXT,
    shares_micros INTEGER NOT NULL DEFAULT 0 CHECK (shares_micros >= 0),
    cost_micros INTEGER NOT NULL DEFAULT 0,
    realized_pnl_micros INTEGER NOT NULL DEFAULT 0,
    mark_micros INTEGER,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'settled')),
    opened_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, token_id)
);

CREATE TABLE equity_snapshots (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    ts TEXT NOT NULL,
    equity_micros INTEGER NOT NULL,
    cash_micros INTEGER NOT NULL,
    realized_pnl_micros INTEGER NOT NULL,
    unrealized_pnl_micros INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day)
);

CREATE TABLE bots (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    desired_state TEXT NOT NULL DEFAULT 'stopped' CHECK (desired_state IN ('running', 'stopped')),
    state TEXT NOT NULL DEFAULT 'stopped',
    owner TEXT,
    lease_expires_at TEXT,
    heartbeat_at TEXT,
    started_at TEXT,
    cycles INTEGER NOT NULL DEFAULT 0,
    last_cycle_ms REAL,
    restarts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE orchestrators (
    owner TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);

CREATE TABLE quota_periods (
    period TEXT PRIMARY KEY,
    closed_at TEXT NOT NULL,
    closed_by TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    tenant_id TEXT,
    details TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);
CREATE INDEX idx_audit_tenant_ts ON audit_log(tenant_id, ts);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Each migration is a DDL script run once, in order, in one transaction; PRAGMA
# user_version records how many have run. Append new ones; never edit a released one.
# Their PostgreSQL form is derived (schema_pg.to_postgresql): write each one only here.
SCHEMA_V2 = """
CREATE TABLE reservations (
    reservation_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    period TEXT NOT NULL,
    day TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- resting orders: worked every bot cycle, and their buys reserve cash
CREATE INDEX idx_trades_pending ON trades(tenant_id) WHERE status = 'pending';
CREATE INDEX idx_trades_without_token ON trades(tenant_id) WHERE token_id IS NULL
"""

# Positions belong to the strategy that opened them (docs/architecture.md, positions per
# strategy): the table is rebuilt keyed by (tenant, token, strategy). A position whose
# fills all came from one strategy goes to it; one built by several (before this
# migration) stays unattributed (''). Trade rows get the order group (a complement
# pair) they were sent in.
SCHEMA_STRATEGY_POSITIONS = """
CREATE TABLE positions_by_strategy (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    token_id TEXT NOT NULL,
    strategy TEXT NOT NULL DEFAULT '',
    market TEXT,
    outcome TEXT,
    shares_micros INTEGER NOT NULL DEFAULT 0 CHECK (shares_micros >= 0),
    cost_micros INTEGER NOT NULL DEFAULT 0,
    realized_pnl_micros INTEGER NOT NULL DEFAULT 0,
    mark_micros INTEGER,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'settled')),
    opened_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, token_id, strategy)
);
INSERT INTO positions_by_strategy (tenant_id, token_id, strategy, market, outcome,
    shares_micros, cost_micros, realized_pnl_micros, mark_micros, state, opened_at, updated_at)
SELECT p.tenant_id, p.token_id,
    COALESCE((SELECT min(COALESCE(t.strategy, '')) FROM trades t
              WHERE t.tenant_id = p.tenant_id AND t.token_id = p.token_id
              AND t.status IN ('filled', 'partial')
              HAVING count(DISTINCT COALESCE(t.strategy, '')) = 1), ''),
    p.market, p.outcome, p.shares_micros, p.cost_micros, p.realized_pnl_micros,
    p.mark_micros, p.state, p.opened_at, p.updated_at
FROM positions p;
DROP TABLE positions;
ALTER TABLE positions_by_strategy RENAME TO positions;
ALTER TABLE trades ADD COLUMN group_id TEXT
"""

# Marks the file as a botpoly-admin database (store.APPLICATION_ID, checked before
# every open); databases from before it get the mark here, on their next open.
SCHEMA_APPLICATION_ID = f"PRAGMA application_id = {APPLICATION_ID}"

# Live orders written ahead of sending (botpoly_admin.ledger.intents), and the last
# reconciliation of each live tenant's ledger with its exchange account.
SCHEMA_ORDER_INTENTS = """
CREATE TABLE order_intents (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    client_order_id TEXT NOT NULL,
    order_hash TEXT NOT NULL,
    token_id TEXT NOT NULL,
    market TEXT,
    outcome TEXT,
    side TEXT NOT NULL CHECK (side IN ('BUY', 'SELL')),
    shares_micros INTEGER NOT NULL CHECK (shares_micros > 0),
    price_micros INTEGER NOT NULL CHECK (price_micros > 0 AND price_micros < 1000000),
    time_in_force TEXT NOT NULL CHECK (time_in_force IN ('GTC', 'IOC')),
    strategy TEXT,
    reservation_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('submitting', 'resolved', 'not_placed')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    checks INTEGER NOT NULL DEFAULT 0 CHECK (checks >= 0),
    note TEXT,
    PRIMARY KEY (tenant_id, client_order_id)
);
CREATE UNIQUE INDEX idx_order_intents_hash ON order_intents(order_hash);
CREATE INDEX idx_order_intents_open ON order_intents(tenant_id, token_id)
    WHERE state = 'submitting';

CREATE TABLE live_reconciliations (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    checked_at TEXT NOT NULL,
    exchange_cash_micros INTEGER NOT NULL,
    ledger_cash_micros INTEGER NOT NULL,
    cash_shortfall_micros INTEGER NOT NULL CHECK (cash_shortfall_micros >= 0),
    positions TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(positions)),
    unknown_open_orders INTEGER NOT NULL DEFAULT 0 CHECK (unknown_open_orders >= 0),
    unredeemed TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(unredeemed)),
    drift TEXT
)
"""

# Redemptions of winning live positions the broker asked the SDK for
# (botpoly_admin.ledger.reconciliation): one row per tenant and token until the payout is
# credited, so a redemption in flight is looked up, never sent again blind.
SCHEMA_LIVE_REDEMPTIONS = """
CREATE TABLE live_redemptions (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    token_id TEXT NOT NULL,
    condition_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'confirmed', 'failed')),
    transaction_id TEXT,
    transaction_hash TEXT,
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error TEXT,
    next_try_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, token_id)
)
"""

# What a masked view of a credential shows (botpoly_admin.vault): ``secrets.mask`` of
# the value, written when it is set, so showing a tenant decrypts nothing. Rows from
# before it have none until the vault next decrypts them.
SCHEMA_CREDENTIAL_HINTS = "ALTER TABLE credentials ADD COLUMN hint TEXT"

# API keys of the REST API (botpoly_admin.apikeys): only a SHA-256 of each key's secret
# is kept (the key is shown once); an admin key has no tenant, a tenant key exactly one.
# Revoked keys stay (revoked_at) for the audit trail; a purged tenant's keys go with it.
SCHEMA_API_KEYS = """
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT,
    scope TEXT NOT NULL CHECK (scope IN ('admin', 'tenant')),
    tenant_id TEXT REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT,
    CHECK ((scope = 'admin') = (tenant_id IS NULL))
);
CREATE INDEX idx_api_keys_tenant ON api_keys(tenant_id)
"""

# Fencing and fair sharing (botpoly_admin.bots): a bot's lease carries an epoch that
# grows each time another runner takes it over; an orchestrator says whether it shares
# every bot with the others (1) or runs only the tenants it was given (0).
SCHEMA_LEASE_EPOCHS = """
ALTER TABLE bots ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orchestrators ADD COLUMN shares INTEGER NOT NULL DEFAULT 1
"""

# Secrets of the installation itself (botpoly_admin.vault.installation_secret), kept
# like tenant credentials: a Fernet token under the installation's keys, never the
# plaintext. Today one: the secret that signs the REST API's tokens, so every `serve`
# of one database, on any machine, accepts the others' tokens.
SCHEMA_INSTALLATION_SECRETS = """
CREATE TABLE installation_secrets (
    name TEXT PRIMARY KEY CHECK (name IN ('api_token_secret')),
    ciphertext TEXT NOT NULL,
    key_id TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""

# Settling a position asks whether its token was bought in order groups
# (ledger/settle.py, ``_settle_in``): a look-up of the tenant's trades of that token,
# not a scan of all the tenant's trades, which grows with every cycle that trades.
SCHEMA_TRADES_BY_TOKEN = "CREATE INDEX idx_trades_tenant_token ON trades(tenant_id, token_id)"

MIGRATIONS: list[str] = [SCHEMA_V1, SCHEMA_V2, SCHEMA_STRATEGY_POSITIONS, SCHEMA_APPLICATION_ID,
                         SCHEMA_ORDER_INTENTS, SCHEMA_LIVE_REDEMPTIONS,
                         SCHEMA_CREDENTIAL_HINTS, SCHEMA_API_KEYS, SCHEMA_LEASE_EPOCHS,
                         SCHEMA_INSTALLATION_SECRETS, SCHEMA_TRADES_BY_TOKEN]


