"""The command line: the top floor of the house; nothing imports it."""
