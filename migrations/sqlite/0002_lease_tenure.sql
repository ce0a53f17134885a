-- Each lease tenure belongs to one tenure id of its holder: a process draws a
-- new one at every start and after any commit whose outcome it could not
-- learn, and another tenure of the same node takes the lease over at a new
-- epoch (see minoots_core::lease). A u64 kept as the i64 with the same bits;
-- 0 for rows written before this column existed and for a standalone Open.
ALTER TABLE leases ADD COLUMN tenure INTEGER NOT NULL DEFAULT 0;
