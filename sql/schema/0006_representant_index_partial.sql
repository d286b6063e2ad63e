-- persons.nir_representant is empty for four people in five (adults): its index keeps only the
-- people who have a representative. The lookups it serves ("whose representative is X") never
-- look for an empty one, and a register's first load, which builds it after the rows are in,
-- sorts a fifth of the rows.
DROP INDEX ix_persons_representant;
CREATE INDEX ix_persons_representant ON persons (nir_representant) WHERE nir_representant IS NOT NULL
