"""How rows reach the API: the backend seam, the online backend and Batch Mode."""
