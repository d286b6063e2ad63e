-- dialect: postgresql
-- persons.input_file_id (the extract a person's row comes from) stops being a foreign key on
-- PostgreSQL: its check is a lookup per row, which cost about 5 s of every million rows of a
-- register load. The intake writes it in the transaction that creates the input_files row, and
-- input_files rows are never deleted; tests check that every person's file exists. SQLite keeps
-- the constraint (its check is an in-process index lookup).
ALTER TABLE persons DROP CONSTRAINT IF EXISTS persons_input_file_id_fkey
