"""Reading the input: CSV/Parquet readers, locating bad values, prompt templates."""
