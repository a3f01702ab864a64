-- The merge policy's decision on selfheal's pull request, and who (which policy) made it.
ALTER TABLE deliveries ADD COLUMN merge_decision TEXT;     -- allowed | denied
ALTER TABLE deliveries ADD COLUMN merge_reasons JSONB;     -- the policy's deny messages
ALTER TABLE deliveries ADD COLUMN decided_by TEXT;         -- the policy file
