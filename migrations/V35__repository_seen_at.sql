-- Issue 14 (left over): a failed run is admitted after it was received, possibly after a
-- newer delivery already recorded the repository under a new name or installation. When the
-- repository's record was last taken from a delivery, by that delivery's receipt: an older
-- delivery admitted late does not undo a newer one. Records made before are stamped with the
-- migration's time: deliveries already waiting are older.
ALTER TABLE repositories ADD COLUMN seen_at TIMESTAMPTZ;
UPDATE repositories SET seen_at = now();
