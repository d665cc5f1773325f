"""Commands registered on inboxcrm.cli.main (being written)."""
