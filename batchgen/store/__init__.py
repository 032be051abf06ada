"""The output directory: layout and done rule, lock, records, journal, writer."""
