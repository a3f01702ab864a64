-- Dashboard sessions as Postgres knows them (docs/access.md): each sign-in opens one, each
-- request with a session cookie checks it is still open, and signing out or an admin ends it,
-- so a copied cookie is worth nothing once its session has ended.
CREATE TABLE dashboard_sessions (
    id          UUID PRIMARY KEY,
    actor       TEXT NOT NULL,                 -- oidc:<sub> or dashboard-token
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    via         TEXT NOT NULL CHECK (via IN ('oidc', 'token')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    ended_at    TIMESTAMPTZ,
    ended_by    TEXT,                          -- the person who signed out, or the admin
    CHECK ((ended_at IS NULL) = (ended_by IS NULL))
);
CREATE INDEX dashboard_sessions_open ON dashboard_sessions (expires_at) WHERE ended_at IS NULL;
