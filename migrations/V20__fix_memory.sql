-- Issue 15, fix memory: a failure whose fingerprint was healed before (validated and merged,
-- in any repository of the installation) is tried first the way it was healed. Each patch
-- records the fix it was offered and what became of it.

ALTER TABLE patches
    ADD COLUMN remembered_from UUID REFERENCES runs(id),
    ADD COLUMN memory_use TEXT CHECK (memory_use IN ('replayed', 'example', 'agreed', 'not_used')),
    ADD CONSTRAINT patches_memory_whole CHECK ((remembered_from IS NULL) = (memory_use IS NULL));

-- The memory's hit rate per installation per week: runs that reached the patch stage, how many
-- found a remembered fix, and what it did for them (replayed as it was, shown to the model, or
-- agreeing with the strategy chosen anyway), with how many of those were validated.
CREATE VIEW fix_memory AS
SELECT r.installation_id,
       date_trunc('week', p.created_at AT TIME ZONE 'UTC') AS week,
       count(*) AS runs,
       count(p.remembered_from) AS hits,
       round(count(p.remembered_from)::numeric / count(*), 4) AS hit_rate,
       count(*) FILTER (WHERE p.memory_use = 'replayed') AS replayed,
       count(*) FILTER (WHERE p.memory_use = 'replayed' AND p.verdict = 'fixed') AS replayed_fixed,
       count(*) FILTER (WHERE p.memory_use = 'example') AS examples,
       count(*) FILTER (WHERE p.memory_use = 'example' AND p.verdict = 'fixed') AS examples_fixed,
       count(*) FILTER (WHERE p.memory_use = 'agreed') AS agreed
FROM patches p JOIN runs r ON r.id = p.run_id
GROUP BY r.installation_id, date_trunc('week', p.created_at AT TIME ZONE 'UTC');
