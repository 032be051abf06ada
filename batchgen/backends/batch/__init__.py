"""The Batch Mode backend: request chunks, their steps, and the backend that drives them."""
