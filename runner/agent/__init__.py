"""The agent: one warm process per user that every `runner` command is forked from (client, wire, server)."""
