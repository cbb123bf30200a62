-- Configuration history (issue 16, the seeds' `config_snapshots`): every
-- workspace version the engine applied to an instance's agent service,
-- with the rendered files, so `winston status --history` can list them and
-- `winston workspace diff` can compare two. Bounded per instance: the
-- engine prunes older rows in the transaction that inserts (see
-- src/ledger/snapshots.rs); rows go when the instance is torn down.

CREATE TABLE config_snapshots (
    id             BIGSERIAL PRIMARY KEY,
    -- The TenantInstance's uid: a re-created instance of the same name
    -- starts a history of its own.
    instance_uid   TEXT        NOT NULL,
    namespace      TEXT        NOT NULL,
    instance       TEXT        NOT NULL,
    tenant         TEXT        NOT NULL,
    ordinal        INTEGER     NOT NULL,
    -- metadata.generation of the instance whose spec rendered this version.
    generation     BIGINT      NOT NULL,
    workspace_hash TEXT        NOT NULL,
    -- The files as one JSON object {path: content}, kept as text: serde_json
    -- escapes every control character, NUL included, which jsonb refuses.
    files          TEXT        NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX config_snapshots_instance ON config_snapshots (instance_uid, id);
CREATE INDEX config_snapshots_tenant ON config_snapshots (namespace, tenant, ordinal, id);
