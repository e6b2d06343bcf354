"""One module per operation family; each holds its family's configuration and rules."""
