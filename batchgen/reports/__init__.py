"""Reading outputs and prices into numbers: report, estimate, status, price list."""
