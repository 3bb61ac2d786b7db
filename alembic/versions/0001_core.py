"""Core tables: assets, ticks, predictions, model registry, retrain requests, API auth.

Works on plain PostgreSQL; the storage revision (0002) turns ticks and predictions into
hypertables and adds the bar relations when TimescaleDB is available.
"""

from __future__ import annotations

from alembic import op

revision = "0001_core"
down_revision = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pricecast_meta (
            key        text PRIMARY KEY,
            value      text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE assets (
            symbol      text PRIMARY KEY,
            name        text NOT NULL DEFAULT '',
            asset_class text NOT NULL DEFAULT 'crypto',
            currency    text NOT NULL DEFAULT 'USD',
            active      boolean NOT NULL DEFAULT true,
            first_seen  timestamptz,
            created_at  timestamptz NOT NULL DEFAULT now()
        );

        -- One validated tick. Natural key (symbol, ts, source): the same tick delivered
        -- twice is stored once (writers insert with ON CONFLICT DO NOTHING).
        CREATE TABLE price_ticks (
            symbol      text NOT NULL,
            ts          timestamptz NOT NULL,
            price       double precision NOT NULL CHECK (price > 0),
            volume      double precision NOT NULL CHECK (volume >= 0),
            source      text NOT NULL DEFAULT 'unknown',
            ingested_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (symbol, ts, source)
        );
        CREATE INDEX ix_price_ticks_symbol_ts ON price_ticks (symbol, ts DESC);

        -- One forecast: provenance as docs/architecture.md lists it. Idempotent on
        -- (symbol, interval, horizon, as_of): re-forecasting the same bar overwrites.
        CREATE TABLE predictions (
            symbol          text NOT NULL,
            interval        text NOT NULL CHECK (interval IN ('1h', '1d')),
            horizon         integer NOT NULL CHECK (horizon >= 1),
            as_of           timestamptz NOT NULL,
            target_time     timestamptz NOT NULL,
            predicted_price double precision NOT NULL,
            lower_bound     double precision NOT NULL,
            upper_bound     double precision NOT NULL,
            model           text NOT NULL CHECK (model IN ('lstm', 'arima', 'naive')),
            model_version   text NOT NULL DEFAULT '',
            fallback_reason text,
            generated_at    timestamptz NOT NULL DEFAULT now(),
            actual_price    double precision,
            abs_error       double precision,
            naive_abs_error double precision,
            PRIMARY KEY (symbol, interval, horizon, as_of)
        );
        CREATE INDEX ix_predictions_latest ON predictions (symbol, interval, horizon, as_of DESC);
        CREATE INDEX ix_predictions_target_open ON predictions (target_time)
            WHERE actual_price IS NULL;

        -- Why a symbol has no forecast (ERR_PRED_001 state), so the API can answer
        -- without loading models.
        CREATE TABLE prediction_status (
            symbol         text NOT NULL,
            interval       text NOT NULL,
            status         text NOT NULL CHECK (status IN ('ok', 'insufficient_history', 'error')),
            required_days  integer,
            available_days integer,
            detail         text,
            updated_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (symbol, interval)
        );

        -- Model registry: artifacts live in the database (no shared volume in k8s).
        CREATE TABLE model_versions (
            id            bigserial PRIMARY KEY,
            model         text NOT NULL,              -- 'lstm' | 'arima' | ...
            scope         text NOT NULL,              -- a symbol, or '*' for a global model
            interval      text NOT NULL DEFAULT '1d',
            version       integer NOT NULL,
            status        text NOT NULL DEFAULT 'candidate'
                          CHECK (status IN ('candidate', 'champion', 'retired', 'rejected')),
            data_start    timestamptz,
            data_end      timestamptz,
            metrics       jsonb NOT NULL DEFAULT '{}'::jsonb,
            params        jsonb NOT NULL DEFAULT '{}'::jsonb,
            artifact      bytea,
            checksum      text,
            created_at    timestamptz NOT NULL DEFAULT now(),
            promoted_at   timestamptz,
            retired_at    timestamptz,
            UNIQUE (model, scope, interval, version)
        );
        CREATE UNIQUE INDEX ux_model_versions_one_champion
            ON model_versions (model, scope, interval) WHERE status = 'champion';

        CREATE TABLE retrain_requests (
            id           bigserial PRIMARY KEY,
            symbol       text,                        -- NULL: every eligible asset
            interval     text NOT NULL DEFAULT '1d',
            reason       text NOT NULL,
            status       text NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'running', 'done', 'failed')),
            requested_by text NOT NULL DEFAULT 'system',
            requested_at timestamptz NOT NULL DEFAULT now(),
            started_at   timestamptz,
            finished_at  timestamptz,
            details      jsonb NOT NULL DEFAULT '{}'::jsonb
        );
        -- At most one open request per symbol and interval.
        CREATE UNIQUE INDEX ux_retrain_requests_open
            ON retrain_requests (coalesce(symbol, '*'), interval)
            WHERE status IN ('queued', 'running');

        CREATE TABLE api_clients (
            client_id   text PRIMARY KEY,
            secret_hash text NOT NULL,
            scopes      text[] NOT NULL DEFAULT '{}',
            name        text NOT NULL DEFAULT '',
            disabled    boolean NOT NULL DEFAULT false,
            created_at  timestamptz NOT NULL DEFAULT now()
        );

        -- Opaque refresh tokens, stored hashed, rotated on every use; reuse of a rotated
        -- token revokes the whole family.
        CREATE TABLE refresh_tokens (
            token_hash  text PRIMARY KEY,
            family_id   uuid NOT NULL,
            client_id   text NOT NULL REFERENCES api_clients (client_id) ON DELETE CASCADE,
            subject     text NOT NULL,
            scopes      text[] NOT NULL DEFAULT '{}',
            issued_at   timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL,
            rotated_at  timestamptz,
            revoked_at  timestamptz
        );
        CREATE INDEX ix_refresh_tokens_family ON refresh_tokens (family_id);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE IF EXISTS refresh_tokens, api_clients, retrain_requests, model_versions,
            prediction_status, predictions, price_ticks, assets, pricecast_meta CASCADE;
        """
    )
