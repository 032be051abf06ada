"""Money: the dated price table, price files, and the run's budget."""
