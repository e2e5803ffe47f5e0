-- The gateways read model: each account's payment gateways (the API section), without their
-- secrets. Rebuilt from the `gateways-*` streams by replay.
CREATE TABLE gateways (
    gateway_id TEXT   PRIMARY KEY,
    account_id TEXT   NOT NULL,
    provider   TEXT   NOT NULL,  -- stripe, paypal
    mode       TEXT   NOT NULL,  -- test, live
    version    BIGINT NOT NULL,  -- the stream version that last changed it (its ETag)
    data       TEXT   NOT NULL   -- the gateway as readers see it (JSON, no secrets)
);
CREATE INDEX gateways_by_account ON gateways (account_id, gateway_id);
