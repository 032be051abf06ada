"""The job file: its declaration, loading, and the response-schema dialects."""
