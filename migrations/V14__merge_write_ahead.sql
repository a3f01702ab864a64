-- Written (and committed) before selfheal asks GitHub to merge its PR. A worker that dies
-- between GitHub making the merge and the worker recording it leaves this set and merged_at
-- empty: the next attempt reads the pull request first and records the merge it finds, instead
-- of asking again (GitHub would refuse with 405, and the merge would go unrecorded).
ALTER TABLE deliveries ADD COLUMN merge_requested_at timestamptz;
COMMENT ON COLUMN deliveries.merge_requested_at IS
  'when selfheal last asked GitHub to merge the PR (written before the request)';
