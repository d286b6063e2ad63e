-- The date of a register extract, given with the load (the file's contract has no column for it):
-- a register extract delivered late, older than the one a person's row comes from, must not undo
-- it. input_files.extracted_on is the extract date of a register load (empty for other kinds);
-- persons.register_extracted_on the extract date of the row the person's data comes from, the one
-- the merge compares with (sql/queries/register_merge.sql). Rows loaded before this change have
-- neither: an unknown date is older than any extract, so the next extract applies as it did.
ALTER TABLE input_files ADD COLUMN extracted_on {DATE};
ALTER TABLE persons ADD COLUMN register_extracted_on {DATE}
