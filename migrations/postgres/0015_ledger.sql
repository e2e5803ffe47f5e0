-- The ledger read model: every entry of every account's balance ledger with the running
-- balance after it, and each account's current balances. Rebuilt from the `ledger-*`
-- streams by replay. Amounts are integer minor units of `currency` (ISO 4217).
CREATE TABLE ledger_entries (
    account_id          TEXT   NOT NULL,
    entry               BIGINT NOT NULL,  -- the entry's number in its ledger, from 1
    position            BIGINT NOT NULL,  -- the event's position in the log
    at                  TEXT   NOT NULL,  -- when the money moved (the command's business time)
    kind                TEXT   NOT NULL,  -- payment, refund, package_charge, usage_charge, adjustment
    amount_minor        BIGINT NOT NULL,  -- signed: credits positive, debits negative
    balance_after_minor BIGINT NOT NULL,
    currency            TEXT   NOT NULL,
    description         TEXT   NOT NULL,
    payment_id          TEXT,
    package_id          TEXT,
    period              TEXT,
    PRIMARY KEY (account_id, entry)
);
CREATE INDEX ledger_entries_by_kind ON ledger_entries (account_id, kind, entry);

CREATE TABLE account_balances (
    account_id        TEXT   PRIMARY KEY,
    currency          TEXT   NOT NULL,
    balance_minor     BIGINT NOT NULL DEFAULT 0,
    debit_limit_minor BIGINT NOT NULL DEFAULT 0,
    threshold_minor   BIGINT             -- the low-balance alert's threshold; NULL: none
);
